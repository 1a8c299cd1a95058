//! Stopping long commands cleanly on a signal. SIGUSR1 (what Slurm sends before a time
//! limit or a preemption), SIGTERM and SIGINT (Ctrl-C) set [`STOP`]; every trainer
//! polling it writes a checkpoint at its next episode boundary and returns, so the run
//! continues with `--resume` exactly as if it had not stopped. A second signal ends the
//! process at once (status 128 + signal); the files on disk then still match the last
//! checkpoint, which a resume truncates them to.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Set by the first handled signal.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// The first handled signal's number (0 before any).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn request_stop(sig: libc::c_int) {
    // The signal number is recorded before STOP is set, so whoever sees STOP sees it.
    if SIGNAL
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) };
    }
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGUSR1, SIGTERM and SIGINT.
pub fn on_signals() {
    let handler = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches atomics and calls _exit, both async-signal-safe.
    unsafe {
        for sig in [libc::SIGUSR1, libc::SIGTERM, libc::SIGINT] {
            libc::signal(sig, handler);
        }
    }
}

/// The signal that set [`STOP`], if one did.
pub fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}
