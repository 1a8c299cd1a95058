//! How the caller waits for a worker's answer: spinning in a tight loop of calls,
//! sleeping in `poll` otherwise, always bounded by a timeout.
//!
//! Spin waits ([`Wait`], `FIXAR_BRIDGE_WAIT=auto|spin|block`): in a tight loop of
//! synchronous calls (each request sent within [`SHORT_GAP`] of the last answer, as
//! when stepping an env with a cheap policy) caller and worker spin instead of
//! sleeping: the worker, asked by a flag on the request, polls stdin for up to
//! [`WORKER_SPIN`] after answering, and the caller, once the worker is known to be
//! polling, retries its non-blocking pipe end for up to [`CALLER_SPIN`] before it
//! sleeps in `poll`. Request and answer are then picked up by running processes on two
//! CPUs, and nobody is woken. With `auto` (the default) an env spins only while every
//! env of the process in such a loop can have two CPUs ([`TightLoop`]; else spinning
//! processes keep the woken ones waiting: several seeds evaluating at once on two
//! CPUs). A loop with long gaps (a gradient update per step) does not spin, nor do
//! split steps; those sleep, co-located with the worker (the `affinity` module).
//!
//! Whether spinning pays also depends on what else the machine runs: with another
//! busy process per CPU (another training run, say), a spinning caller holds a CPU the
//! woken worker needs, and a step costs several times what it costs asleep and
//! co-located. So `auto` measures both: each [`PROBE_EVERY`] tight calls, [`PROBE`] of them
//! wait the other way, and the way with the shorter mean round trip is kept ([`Chooser`]).
//!
//! How a call waits changes nothing in its results, only when they arrive.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::Wait;

/// How long the caller spins on the worker's pipe before it sleeps in `poll` (module
/// docs). Covers the step time of the MuJoCo tasks (tens of microseconds); longer steps
/// fall back to sleeping.
pub const CALLER_SPIN: Duration = Duration::from_millis(2);

/// How long a worker spins on its stdin after answering a synchronous request.
pub const WORKER_SPIN: Duration = Duration::from_micros(200);

/// A request sent within this time of the last answer counts as a tight loop (half of
/// [`WORKER_SPIN`], so a worker asked to spin is still spinning when it arrives).
pub const SHORT_GAP: Duration = Duration::from_micros(100);

/// Tight calls per measuring cycle of [`Chooser`].
pub const PROBE_EVERY: u32 = 1024;

/// Calls of each cycle that wait the way not chosen (the first two of them, and of the
/// chosen way at the cycle's start, are not timed: the worker is still in the previous
/// way).
pub const PROBE: u32 = 32;

/// Picks spinning or sleeping for an env's tight loop from measured round trips (module
/// docs): within each cycle of [`PROBE_EVERY`] calls, the last [`PROBE`] wait the way
/// not chosen, the rest the chosen way (so a loop starts the chosen way); at the
/// cycle's end the way with the lower mean round trip is chosen (the other one only when
/// it is at least 10% faster).
#[derive(Debug)]
pub(super) struct Chooser {
    spin: bool,
    pos: u32,
    /// (sum of round trips, count): the way not chosen, then the chosen way.
    other: (Duration, u32),
    chosen: (Duration, u32),
}

impl Default for Chooser {
    fn default() -> Self {
        Self {
            spin: true,
            pos: 0,
            other: (Duration::ZERO, 0),
            chosen: (Duration::ZERO, 0),
        }
    }
}

impl Chooser {
    /// Whether the next tight call spins.
    fn spin_next(&self) -> bool {
        if self.pos >= PROBE_EVERY - PROBE {
            !self.spin
        } else {
            self.spin
        }
    }

    /// Records a tight call's round trip (the call [`Self::spin_next`] was asked for)
    /// and moves on.
    fn record(&mut self, rtt: Duration) {
        let warm = |start: u32, pos: u32| pos >= start + 2;
        if self.pos >= PROBE_EVERY - PROBE {
            if warm(PROBE_EVERY - PROBE, self.pos) {
                self.other.0 += rtt;
                self.other.1 += 1;
            }
        } else if warm(0, self.pos) {
            self.chosen.0 += rtt;
            self.chosen.1 += 1;
        }
        self.pos += 1;
        if self.pos == PROBE_EVERY {
            let mean = |(sum, n): (Duration, u32)| sum.as_secs_f64() / n.max(1) as f64;
            if self.other.1 > 0 && self.chosen.1 > 0 && mean(self.other) < 0.9 * mean(self.chosen) {
                self.spin = !self.spin;
            }
            *self = Self {
                spin: self.spin,
                ..Self::default()
            };
        }
    }

    /// Whether spinning is the chosen way now.
    #[cfg(test)]
    fn spins(&self) -> bool {
        self.spin
    }
}

/// The rhythm of one env's calls: whether the next request asks the worker to spin and
/// whether the caller spins for the answer.
pub(super) struct Pace {
    /// How synchronous calls wait.
    wait: Wait,
    /// When the last answer was read.
    last_answer: Option<Instant>,
    /// The next request asks the worker to spin after answering.
    ask_spin: bool,
    /// The previous request asked it: the worker is spinning if the gap was short.
    asked_spin: bool,
    /// The answer to the request in flight is spun for.
    spinning: bool,
    /// Counted among the envs in a tight loop (spinning is allowed while they fit).
    tight: TightLoop,
    /// Spinning or sleeping in tight loops, from measured round trips (`auto`).
    chooser: Chooser,
    /// When the call in flight began, if it is a timed tight call.
    timing: Option<Instant>,
}

impl Pace {
    pub(super) fn new(wait: Wait) -> Self {
        Self {
            wait,
            last_answer: None,
            ask_spin: false,
            asked_spin: false,
            spinning: false,
            tight: TightLoop::default(),
            chooser: Chooser::default(),
            timing: None,
        }
    }

    /// Prepares a synchronous call; true when the worker is to be asked to spin (it
    /// must then not share the caller's CPU).
    ///
    /// Spinning pays only in a tight loop of calls, and hurts when the CPUs are busy
    /// with other work (a spinning process keeps a woken one waiting), so it follows
    /// the caller's rhythm: the worker is asked to spin after answering only when this
    /// request came within [`SHORT_GAP`] of the last answer, and the caller spins for
    /// an answer only when the worker was asked to spin and this is such a request (so
    /// the worker is awake and polling). Otherwise both sleep.
    pub(super) fn begin_sync(&mut self) -> bool {
        let short = self.last_answer.is_some_and(|t| t.elapsed() < SHORT_GAP);
        let fits = self.tight.mark(short && self.wait != Wait::Block);
        let timed = short && self.wait == Wait::Auto && fits;
        let ask = short
            && match self.wait {
                Wait::Auto => fits && self.chooser.spin_next(),
                Wait::Spin => true,
                Wait::Block => false,
            };
        self.timing = timed.then(Instant::now);
        self.ask_spin = ask;
        self.spinning = ask && self.asked_spin;
        self.ask_spin
    }

    /// A request goes out (`sync`: prepared by [`Self::begin_sync`], else a split step
    /// that neither side spins for); true when it asks the worker to spin.
    pub(super) fn on_send(&mut self, sync: bool) -> bool {
        if !sync {
            self.ask_spin = false;
            self.spinning = false;
            self.timing = None;
            self.tight.mark(false);
        }
        self.asked_spin = self.ask_spin;
        self.ask_spin
    }

    /// How long the caller retries an empty pipe before it sleeps.
    pub(super) fn spin_budget(&self) -> Duration {
        if self.spinning {
            CALLER_SPIN
        } else {
            Duration::ZERO
        }
    }

    /// An answer was read now.
    pub(super) fn answered(&mut self) {
        let now = Instant::now();
        if let Some(start) = self.timing.take() {
            self.chooser.record(now - start);
        }
        self.last_answer = Some(now);
    }

    /// Whether the caller spun for the last answer instead of sleeping.
    pub(super) fn spun(&self) -> bool {
        self.spinning
    }

    /// Leaves the tight loop (the worker failed).
    pub(super) fn stop(&mut self) {
        self.tight.mark(false);
    }
}

/// What to do after a read found the pipe empty.
pub(super) enum Awaited {
    /// Read again: still spinning, or `poll` saw data (or was interrupted).
    Retry,
    /// Nothing arrived before the deadline.
    TimedOut,
    /// `poll` failed.
    Failed(std::io::Error),
}

/// After an empty read of `fd`: spins until `spin_until`, then sleeps in `poll` until
/// data arrives, bounded by `deadline`.
pub(super) fn await_readable(fd: RawFd, spin_until: Instant, deadline: Instant) -> Awaited {
    let now = Instant::now();
    if now < spin_until {
        std::hint::spin_loop();
        return Awaited::Retry;
    }
    // Sleep until data arrives, bounded by the deadline.
    let left = deadline.saturating_duration_since(now);
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = left.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Awaited::Retry;
        }
        return Awaited::Failed(e);
    }
    if r == 0 {
        return Awaited::TimedOut;
    }
    Awaited::Retry
}

/// Bridged envs of this process in a tight loop of synchronous calls now.
static TIGHT_ENVS: AtomicUsize = AtomicUsize::new(0);

/// Whether this env counts as being in a tight loop of calls. Spinning is allowed while
/// every env in such a loop can have two CPUs (its caller's and its worker's): with
/// more, spinning processes would keep woken ones waiting (several seeds evaluating at
/// once on two CPUs, say), and everybody sleeps instead.
struct TightLoop {
    /// The process-wide count ([`TIGHT_ENVS`]; tests use their own).
    envs: &'static AtomicUsize,
    cpus: usize,
    counted: bool,
}

impl Default for TightLoop {
    fn default() -> Self {
        static CPUS: OnceLock<usize> = OnceLock::new();
        let cpus =
            *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Self {
            envs: &TIGHT_ENVS,
            cpus,
            counted: false,
        }
    }
}

impl TightLoop {
    /// Marks this env as in a tight loop (or not); true when it may spin.
    fn mark(&mut self, tight: bool) -> bool {
        if !tight {
            if std::mem::take(&mut self.counted) {
                self.envs.fetch_sub(1, Ordering::AcqRel);
            }
            return false;
        }
        let n = if self.counted {
            self.envs.load(Ordering::Acquire)
        } else {
            self.counted = true;
            self.envs.fetch_add(1, Ordering::AcqRel) + 1
        };
        2 * n <= self.cpus
    }
}

impl Drop for TightLoop {
    fn drop(&mut self) {
        self.mark(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one cycle with round trips `spin_us` / `sleep_us`; returns the choice.
    fn cycle(c: &mut Chooser, spin_us: u64, sleep_us: u64) -> bool {
        let mut spun = 0;
        for _ in 0..PROBE_EVERY {
            let spin = c.spin_next();
            spun += spin as u32;
            c.record(Duration::from_micros(if spin { spin_us } else { sleep_us }));
        }
        assert!(
            spun == PROBE || spun == PROBE_EVERY - PROBE,
            "{spun} spun calls"
        );
        c.spins()
    }

    #[test]
    fn the_faster_way_to_wait_is_chosen_and_revisited() {
        let mut c = Chooser::default();
        assert!(c.spins(), "spinning first");
        assert!(cycle(&mut c, 40, 70), "spinning is faster: kept");
        assert!(!cycle(&mut c, 490, 70), "a busy machine: sleeping");
        assert!(!cycle(&mut c, 65, 70), "within 10%: no switch back");
        assert!(
            cycle(&mut c, 40, 70),
            "the machine is quiet again: spinning"
        );
    }

    #[test]
    fn envs_in_tight_loops_spin_only_while_each_has_two_cpus() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let on = |cpus| TightLoop {
            envs: &COUNT,
            cpus,
            counted: false,
        };
        let (mut a, mut b, mut c) = (on(4), on(4), on(4));
        assert!(a.mark(true));
        assert!(a.mark(true), "marking again does not count twice");
        assert!(b.mark(true));
        assert!(!c.mark(true), "three envs need six CPUs");
        assert!(!a.mark(true));
        c.mark(false);
        assert!(a.mark(true) && b.mark(true));
        drop(b);
        assert_eq!(
            COUNT.load(Ordering::Acquire),
            1,
            "a dropped env is uncounted"
        );
        let mut one_cpu = on(1);
        a.mark(false);
        assert!(!one_cpu.mark(true), "one CPU never spins");
        drop(one_cpu);
        assert!(!a.mark(false));
        assert_eq!(COUNT.load(Ordering::Acquire), 0);
    }
}
