//! CPU affinity: co-locating a worker with the thread that waits for it.
//!
//! A synchronous call (`reset`, `step`, ...) that does not spin waits for the worker
//! while the calling thread sleeps, so the worker runs on the caller's CPU: before each
//! such call the worker's main thread is pinned to the CPU the caller is on (one
//! `sched_setaffinity` when that CPU changes), and the calling thread is held on that
//! CPU until the answer is in ([`CallerPin`]; its own mask restored afterwards; else
//! the scheduler wakes it on the idle CPU). Waking a process on another, idle CPU costs
//! tens of microseconds on virtual machines (an inter-processor interrupt and a halted
//! vCPU), more than a MuJoCo step; on the same CPU the hand-over is a context switch.
//! Split steps (`step_start`/`step_wait`, used by [`crate::VecEnv`] so copies run
//! concurrently) and spinning calls release the pin. Turned off with
//! [`super::BridgeConfig::co_locate`]; any failure to pin turns it off for that worker,
//! since it is only a speed-up.

/// The affinity mask of thread `tid` (0: the calling thread).
fn mask_of(tid: libc::pid_t) -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain bits; the kernel writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let r =
        unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    (r == 0).then_some(set)
}

/// Sets the affinity mask of thread `tid` (0: the calling thread); false on failure.
fn set_mask(tid: libc::pid_t, set: &libc::cpu_set_t) -> bool {
    // SAFETY: the kernel reads at most the set's size.
    unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set) == 0 }
}

/// The CPUs thread `tid` may run on (0: the calling thread).
pub(super) fn cpus_of(tid: libc::pid_t) -> Option<Vec<usize>> {
    let set = mask_of(tid)?;
    Some(
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: c < CPU_SETSIZE, inside the set.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect(),
    )
}

/// Keeps the calling thread on its CPU while it waits for the worker (else the
/// scheduler wakes it on the other, idle CPU); restores its mask when dropped.
pub(super) struct CallerPin {
    saved: libc::cpu_set_t,
}

impl CallerPin {
    fn new(one: &libc::cpu_set_t) -> Option<Self> {
        let saved = mask_of(0)?;
        set_mask(0, one).then_some(Self { saved })
    }
}

impl Drop for CallerPin {
    fn drop(&mut self) {
        set_mask(0, &self.saved);
    }
}

/// Pins a worker's main thread to the CPU of the thread that waits for it.
pub(super) struct Affinity {
    pid: libc::pid_t,
    enabled: bool,
    /// The CPU the worker is pinned to, if it is.
    pinned: Option<usize>,
    /// The worker's mask at start (inherited from the spawning thread), restored on
    /// release.
    initial: Option<libc::cpu_set_t>,
}

impl Affinity {
    pub(super) fn new(pid: u32, enabled: bool) -> Self {
        let pid = pid as libc::pid_t;
        let initial = mask_of(pid);
        Self {
            pid,
            enabled: enabled && initial.is_some(),
            pinned: None,
            initial,
        }
    }

    /// Pins the worker to the calling thread's current CPU (a syscall only when that
    /// CPU changed) and holds the caller there. Failure (a CPU outside the worker's
    /// allowed set, a sandbox that forbids it) turns co-location off for this worker;
    /// it is only a speed-up.
    pub(super) fn follow_caller(&mut self) -> Option<CallerPin> {
        if !self.enabled {
            return None;
        }
        // SAFETY: no arguments; returns -1 on failure.
        let cpu = unsafe { libc::sched_getcpu() };
        if cpu < 0 || cpu as usize >= libc::CPU_SETSIZE as usize {
            return None;
        }
        let cpu = cpu as usize;
        // SAFETY: cpu_set_t is plain bits; CPU_SET stays inside it for cpu < CPU_SETSIZE.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(cpu, &mut set) };
        if self.pinned != Some(cpu) {
            if !set_mask(self.pid, &set) {
                tracing::debug!(
                    pid = self.pid,
                    cpu,
                    "cannot pin the bridge worker; co-location off"
                );
                self.disable();
                return None;
            }
            self.pinned = Some(cpu);
        }
        CallerPin::new(&set)
    }

    /// Gives the worker back the CPUs it started with.
    pub(super) fn release(&mut self) {
        if self.pinned.take().is_some() {
            if let Some(set) = &self.initial {
                set_mask(self.pid, set);
            }
        }
    }

    /// No more pinning, and no more calls on the pid: after a failure, when the worker
    /// may be reaped already (its pid could then belong to another process).
    pub(super) fn disable(&mut self) {
        self.enabled = false;
        self.pinned = None;
    }
}
