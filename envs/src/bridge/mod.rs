//! The Python Gymnasium bridge: environments without a native port (the MuJoCo tasks
//! `HalfCheetah-v5`, `Hopper-v5`, `Walker2d-v5`, `InvertedPendulum-v5`, `Reacher-v5`,
//! ...) run in a Python worker process with the real `gymnasium[mujoco]`.
//!
//! - One worker process per env copy (so a [`crate::VecEnv`] of bridged copies steps
//!   them concurrently), started with the project's Python ([`python_executable`]).
//! - The worker script (`worker.py`, embedded) talks over stdin/stdout pipes in binary
//!   frames: a request is `u8 op, u32 length, payload` (the action as little-endian
//!   float32, a seed, or a state as float64); a response is `u32 length, u8 status, ...`
//!   (reward f64, flags, float32 observation). JSON only in the start-up handshake.
//! - Observations are converted to float32 in the worker (MuJoCo computes in float64).
//!   Actions are passed unclipped: Gymnasium's env clips (or MuJoCo clamps controls)
//!   exactly as it does in Python.
//! - `gym.make` adds the registered `TimeLimit`, so `truncated` comes from Gymnasium.
//! - Failures never hang: every answer is awaited with a timeout ([`BridgeConfig`]); a
//!   worker that dies or does not answer yields an error naming the env id and the tail
//!   of the worker's stderr, and a timed-out worker is killed. An unknown id yields
//!   [`EnvError::UnknownId`] with Gymnasium's own message.
//! - Co-location: a synchronous call (`reset`, `step`, ...) waits for the worker while
//!   the calling thread sleeps, so the worker runs on the caller's CPU: before each such
//!   call the worker's main thread is pinned to the CPU the caller is on (one
//!   `sched_setaffinity` when that CPU changes), and the calling thread is held on that
//!   CPU until the answer is in (its own mask restored afterwards; else the scheduler
//!   wakes it on the idle CPU). Waking a process on another, idle
//!   CPU costs tens of microseconds on virtual machines (an inter-processor interrupt
//!   and a halted vCPU), more than a MuJoCo step; on the same CPU the hand-over is a
//!   context switch. Split steps (`step_start`/`step_wait`, used by
//!   [`crate::VecEnv`] so copies run concurrently) release the pin. Turned off with
//!   [`BridgeConfig::co_locate`].
//! - Spin waits ([`Wait`], `FIXAR_BRIDGE_WAIT=auto|spin|block`): in a tight loop of
//!   synchronous calls (each request sent within [`SHORT_GAP`] of the last answer, as
//!   when stepping an env with a cheap policy) caller and worker spin instead of
//!   sleeping: the worker, asked by a flag on the request, polls stdin for up to
//!   [`WORKER_SPIN`] after answering, and the caller, once the worker is known to be
//!   polling, retries its non-blocking pipe end for up to [`CALLER_SPIN`] before it
//!   sleeps in `poll`. Request and answer are then picked up by running processes on
//!   two CPUs, and nobody is woken. With `auto` (the default) an env spins only while
//!   every env of the process in such a loop can have two CPUs (else spinning
//!   processes keep the woken ones waiting: several seeds evaluating at once on two
//!   CPUs). A loop with long gaps (a gradient update per step) does not spin, nor do
//!   split steps; those sleep, co-located as above.
//! - Clean-up: dropping a [`BridgedEnv`] kills and reaps its worker. If the Rust process
//!   dies (SIGINT, SIGTERM, a panic that aborts), the worker sees its stdin close or its
//!   parent change and exits within half a second. (`PR_SET_PDEATHSIG` is not used: it
//!   fires when the spawning *thread* exits, which would kill workers created from
//!   short-lived threads.)

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::{BoxSpace, Env, EnvError, StepOutcome};

/// The worker script, run with `python -c`.
pub const WORKER_SCRIPT: &str = include_str!("worker.py");

/// Bytes asked for per `read` of the worker's answers.
const READ_CHUNK: usize = 4096;

/// How much of the worker's stderr is kept for error messages.
const STDERR_TAIL_BYTES: usize = 4096;

/// How long the caller spins on the worker's pipe before it sleeps in `poll` (module
/// docs). Covers the step time of the MuJoCo tasks (tens of microseconds); longer steps
/// fall back to sleeping.
pub const CALLER_SPIN: Duration = Duration::from_millis(2);

/// How long a worker spins on its stdin after answering a synchronous request.
pub const WORKER_SPIN: Duration = Duration::from_micros(200);

/// A request sent within this time of the last answer counts as a tight loop (half of
/// [`WORKER_SPIN`], so a worker asked to spin is still spinning when it arrives).
pub const SHORT_GAP: Duration = Duration::from_micros(100);

/// How a synchronous call waits for its answer (module docs: "Spin waits").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wait {
    /// Spin in a tight loop of calls while every bridged env of the process that is in
    /// one can have two CPUs to itself (caller and worker); else sleep.
    #[default]
    Auto,
    /// Spin in a tight loop of calls regardless of the CPUs.
    Spin,
    /// Always sleep in `poll`/`read` (co-located if [`BridgeConfig::co_locate`]).
    Block,
}

/// How bridged envs are started and how long answers may take.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    /// The Python interpreter; None: [`python_executable`].
    pub python: Option<PathBuf>,
    /// Keyword arguments for `gymnasium.make`, as a JSON object.
    pub make_kwargs: serde_json::Value,
    /// Limit for starting Python, importing Gymnasium and making the env.
    pub startup_timeout: Duration,
    /// Limit for one `reset` or `step` answer.
    pub step_timeout: Duration,
    /// Pin the worker to the caller's CPU during synchronous calls that block (module
    /// docs); not used while spinning.
    pub co_locate: bool,
    /// How synchronous calls wait (module docs).
    pub wait: Wait,
}

impl Wait {
    /// `FIXAR_BRIDGE_WAIT` (`auto`, `spin` or `block`); unset or empty: `auto`.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("FIXAR_BRIDGE_WAIT").as_deref() {
            Err(_) | Ok("") | Ok("auto") => Ok(Wait::Auto),
            Ok("spin") => Ok(Wait::Spin),
            Ok("block") => Ok(Wait::Block),
            Ok(other) => Err(format!(
                "FIXAR_BRIDGE_WAIT={other:?}: expected `auto`, `spin` or `block`"
            )),
        }
    }
}

impl Default for BridgeConfig {
    /// Defaults; `wait` from [`Wait::from_env`] (a bad value is logged as a warning and
    /// `auto` used).
    fn default() -> Self {
        let wait = Wait::from_env().unwrap_or_else(|e| {
            tracing::warn!("{e}; using `auto`");
            Wait::Auto
        });
        Self {
            python: None,
            make_kwargs: serde_json::Value::Object(Default::default()),
            startup_timeout: Duration::from_secs(120),
            step_timeout: Duration::from_secs(30),
            co_locate: true,
            wait,
        }
    }
}

/// The project's Python: `$FIXAR_PYTHON` if set, else the workspace's `.venv/bin/python`
/// (found from this crate's source directory at compile time) if it exists, else
/// `python3` from `PATH`.
pub fn python_executable() -> PathBuf {
    if let Some(p) = std::env::var_os("FIXAR_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python"));
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Bound {
    Num(f64),
    Text(String),
}

impl Bound {
    fn value(&self) -> Result<f32, String> {
        match self {
            Bound::Num(v) => Ok(*v as f32),
            Bound::Text(t) if t == "inf" => Ok(f32::INFINITY),
            Bound::Text(t) if t == "-inf" => Ok(f32::NEG_INFINITY),
            Bound::Text(t) => Err(format!("bad bound {t:?}")),
        }
    }
}

#[derive(Deserialize)]
struct Handshake {
    ok: bool,
    #[serde(default)]
    unknown_id: bool,
    #[serde(default)]
    error: String,
    #[serde(default)]
    obs_low: Vec<Bound>,
    #[serde(default)]
    obs_high: Vec<Bound>,
    #[serde(default)]
    act_low: Vec<Bound>,
    #[serde(default)]
    act_high: Vec<Bound>,
    #[serde(default)]
    max_episode_steps: Option<u32>,
}

fn space(low: &[Bound], high: &[Bound]) -> Result<BoxSpace, String> {
    let low = low
        .iter()
        .map(Bound::value)
        .collect::<Result<Vec<_>, _>>()?;
    let high = high
        .iter()
        .map(Bound::value)
        .collect::<Result<Vec<_>, _>>()?;
    if low.len() != high.len() || low.iter().zip(&high).any(|(l, h)| l > h) {
        return Err("inconsistent Box bounds".into());
    }
    Ok(BoxSpace { low, high })
}

/// Keeps the last bytes a worker wrote to stderr (also logged at debug level).
#[derive(Default)]
struct StderrTail(Mutex<String>);

impl StderrTail {
    fn push_line(&self, line: &str) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        t.push_str(line);
        t.push('\n');
        if t.len() > 2 * STDERR_TAIL_BYTES {
            let mut cut = t.len() - STDERR_TAIL_BYTES;
            while !t.is_char_boundary(cut) {
                cut += 1;
            }
            t.drain(..cut);
        }
    }

    fn get(&self) -> String {
        let t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let start = t.len().saturating_sub(STDERR_TAIL_BYTES);
        let mut s = start;
        while !t.is_char_boundary(s) {
            s += 1;
        }
        t[s..].to_string()
    }
}

/// A Gymnasium env running in a Python worker process.
pub struct BridgedEnv {
    id: String,
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: Arc<StderrTail>,
    obs_space: BoxSpace,
    act_space: BoxSpace,
    max_episode_steps: Option<u32>,
    step_timeout: Duration,
    /// Outgoing request, reused.
    wbuf: Vec<u8>,
    /// Incoming frame (without its length prefix), reused.
    rbuf: Vec<u8>,
    /// Bytes read from the worker's stdout and not yet handed out as a frame.
    inbuf: Vec<u8>,
    /// Bytes of `inbuf` that hold data (the rest is room for the next read, zeroed
    /// once, so a spinning caller's empty reads do not clear it again).
    inlen: usize,
    /// Pinning of the worker to the caller's CPU (see the module docs).
    affinity: Affinity,
    /// How synchronous calls wait.
    wait: Wait,
    /// When the last answer was read.
    last_answer: Option<Instant>,
    /// The next request asks the worker to spin after answering (flag 0x80).
    ask_spin: bool,
    /// The previous request asked it: the worker is spinning if the gap was short.
    asked_spin: bool,
    /// The answer to the request in flight is spun for.
    spinning: bool,
    /// Counted among the envs in a tight loop (spinning is allowed while they fit).
    tight: TightLoop,
    /// A step request was sent and its answer not yet read.
    pending: bool,
    /// The worker failed; every call errors.
    broken: Option<String>,
}

/// A worker whose process is running but whose handshake has not been read yet.
pub struct PendingWorker {
    env: BridgedEnv,
    startup_timeout: Duration,
}

impl PendingWorker {
    /// Starts the worker process for `id` without waiting for it.
    pub fn spawn(id: &str, cfg: &BridgeConfig) -> Result<Self, EnvError> {
        let python = cfg.python.clone().unwrap_or_else(python_executable);
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(WORKER_SCRIPT)
            .arg(id)
            .arg(cfg.make_kwargs.to_string())
            .arg(std::process::id().to_string())
            .arg(WORKER_SPIN.as_micros().to_string())
            // MuJoCo writes MUJOCO_LOG.TXT into the working directory on warnings.
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| EnvError::Bridge {
                id: id.to_string(),
                message: format!("cannot start Python `{}`: {e}", python.display()),
            })?;
        let child_pid = child.id();
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        // Our end of the answer pipe never blocks: waiting is done in `read_frame`.
        // SAFETY: fcntl on a descriptor we own.
        let nonblocking = unsafe {
            let fd = stdout.as_raw_fd();
            let fl = libc::fcntl(fd, libc::F_GETFL);
            fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) == 0
        };
        if !nonblocking {
            let _ = child.kill();
            let _ = child.wait();
            return Err(EnvError::Bridge {
                id: id.to_string(),
                message: format!(
                    "cannot make the worker's pipe non-blocking: {}",
                    std::io::Error::last_os_error()
                ),
            });
        }
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(StderrTail::default());
        {
            let tail = Arc::clone(&stderr);
            let env_id = id.to_string();
            std::thread::Builder::new()
                .name(format!("bridge-stderr-{id}"))
                .spawn(move || {
                    use std::io::BufRead;
                    for line in std::io::BufReader::new(stderr_pipe)
                        .lines()
                        .map_while(Result::ok)
                    {
                        tracing::debug!(env = %env_id, "worker: {line}");
                        tail.push_line(&line);
                    }
                })
                .map_err(|e| EnvError::Bridge {
                    id: id.to_string(),
                    message: format!("cannot start the stderr reader thread: {e}"),
                })?;
        }
        Ok(Self {
            env: BridgedEnv {
                id: id.to_string(),
                child,
                stdin,
                stdout,
                stderr,
                obs_space: BoxSpace::default(),
                act_space: BoxSpace::default(),
                max_episode_steps: None,
                step_timeout: cfg.step_timeout,
                wbuf: Vec::with_capacity(256),
                rbuf: Vec::with_capacity(1024),
                inbuf: vec![0; READ_CHUNK],
                inlen: 0,
                affinity: Affinity::new(child_pid, cfg.co_locate),
                wait: cfg.wait,
                last_answer: None,
                ask_spin: false,
                asked_spin: false,
                spinning: false,
                tight: TightLoop::default(),
                pending: false,
                broken: None,
            },
            startup_timeout: cfg.startup_timeout,
        })
    }

    /// Reads the handshake: the env's spaces and time limit, or Gymnasium's error.
    pub fn finish(mut self) -> Result<BridgedEnv, EnvError> {
        let timeout = self.startup_timeout;
        let env = &mut self.env;
        env.read_frame("start-up", timeout)?;
        let hs: Handshake = serde_json::from_slice(&env.rbuf).map_err(|e| EnvError::Bridge {
            id: env.id.clone(),
            message: format!(
                "bad handshake from the worker ({e}): {}",
                String::from_utf8_lossy(&env.rbuf)
            ),
        })?;
        if !hs.ok {
            env.broken = Some(hs.error.clone());
            return Err(if hs.unknown_id {
                EnvError::UnknownId {
                    id: env.id.clone(),
                    registered: crate::registered_ids()
                        .into_iter()
                        .map(String::from)
                        .collect(),
                    gymnasium_message: Some(hs.error),
                }
            } else {
                EnvError::Bridge {
                    id: env.id.clone(),
                    message: format!("gymnasium.make failed: {}", hs.error),
                }
            });
        }
        let spaces = space(&hs.obs_low, &hs.obs_high)
            .and_then(|o| Ok((o, space(&hs.act_low, &hs.act_high)?)));
        (env.obs_space, env.act_space) = spaces.map_err(|message| EnvError::Bridge {
            id: env.id.clone(),
            message: format!("bad spaces in the handshake: {message}"),
        })?;
        env.max_episode_steps = hs.max_episode_steps;
        tracing::debug!(env = %env.id, pid = env.child.id(), "bridge worker ready");
        Ok(self.env)
    }
}

/// Makes `n` bridged copies of `id`, starting all workers before waiting for any, so
/// Python's start-up runs concurrently.
pub fn make_many(id: &str, n: usize, cfg: &BridgeConfig) -> Result<Vec<BridgedEnv>, EnvError> {
    let pending = (0..n)
        .map(|_| PendingWorker::spawn(id, cfg))
        .collect::<Result<Vec<_>, _>>()?;
    pending.into_iter().map(PendingWorker::finish).collect()
}

impl BridgedEnv {
    /// Starts a worker for `id` and waits for its handshake.
    pub fn new(id: &str, cfg: &BridgeConfig) -> Result<Self, EnvError> {
        PendingWorker::spawn(id, cfg)?.finish()
    }

    /// The worker's process id.
    pub fn worker_pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the caller spun for the last answer instead of sleeping (see [`Wait`]).
    pub fn spun_for_last_answer(&self) -> bool {
        self.spinning
    }

    fn fail(&mut self, err: EnvError) -> EnvError {
        // The worker may be reaped already: never touch its pid again.
        self.affinity.disable();
        self.tight.mark(false);
        self.broken = Some(err.to_string());
        self.pending = false;
        err
    }

    fn check_usable(&self) -> Result<(), EnvError> {
        match &self.broken {
            Some(why) => Err(EnvError::Bridge {
                id: self.id.clone(),
                message: format!("the worker is unusable after an earlier failure: {why}"),
            }),
            None => Ok(()),
        }
    }

    /// The error for a worker that closed its pipe: waits briefly for its exit status.
    fn died(&mut self, operation: &'static str) -> EnvError {
        let deadline = Instant::now() + Duration::from_secs(2);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break st.to_string(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    break "pipe closed; killed".to_string();
                }
                Err(e) => break format!("status unknown: {e}"),
            }
        };
        // Give the stderr reader a moment to collect the last lines (a traceback).
        std::thread::sleep(Duration::from_millis(50));
        let err = EnvError::WorkerDied {
            id: self.id.clone(),
            operation,
            status,
            stderr_tail: self.stderr.get(),
        };
        self.fail(err)
    }

    /// Prepares a synchronous call: decides whether to spin (module docs) and, when
    /// not, co-locates the worker with the caller (the returned pin holds the caller on
    /// its CPU until dropped).
    ///
    /// Spinning pays only in a tight loop of calls, and hurts when the CPUs are busy
    /// with other work (a spinning process keeps a woken one waiting), so it follows
    /// the caller's rhythm: the worker is asked to spin after answering only when this
    /// request came within [`SHORT_GAP`] of the last answer, and the caller spins for
    /// an answer only when the worker was asked to spin and this is such a request (so
    /// the worker is awake and polling). Otherwise both sleep, co-located.
    fn begin_sync(&mut self) -> Option<CallerPin> {
        let short = self.last_answer.is_some_and(|t| t.elapsed() < SHORT_GAP);
        let fits = self.tight.mark(short && self.wait != Wait::Block);
        let ask = short
            && match self.wait {
                Wait::Auto => fits,
                Wait::Spin => true,
                Wait::Block => false,
            };
        self.ask_spin = ask;
        self.spinning = ask && self.asked_spin;
        if self.ask_spin {
            // A spinning worker must not share the caller's CPU.
            self.affinity.release();
            None
        } else {
            self.affinity.follow_caller()
        }
    }

    /// Sends the request in `wbuf`; `sync` as prepared by [`Self::begin_sync`], else a
    /// split step that neither side spins for.
    fn send(&mut self, op: u8, operation: &'static str, sync: bool) -> Result<(), EnvError> {
        if !sync {
            self.ask_spin = false;
            self.spinning = false;
            self.tight.mark(false);
        }
        self.asked_spin = self.ask_spin;
        let len = (self.wbuf.len() - 5) as u32;
        self.wbuf[0] = if self.ask_spin { op | 0x80 } else { op };
        self.wbuf[1..5].copy_from_slice(&len.to_le_bytes());
        if self.stdin.write_all(&self.wbuf).is_err() {
            return Err(self.died(operation));
        }
        Ok(())
    }

    /// Reads one response frame (without its length prefix) into `rbuf`. Reads take
    /// whatever the pipe holds (the worker writes a frame with one `write`), so an
    /// answer usually costs one `read`. The pipe is non-blocking: an empty pipe is
    /// retried for up to [`CALLER_SPIN`] when spinning, then waited for in `poll`.
    fn read_frame(&mut self, operation: &'static str, timeout: Duration) -> Result<(), EnvError> {
        let start = Instant::now();
        let deadline = start + timeout;
        let spin_until = start
            + if self.spinning {
                CALLER_SPIN
            } else {
                Duration::ZERO
            };
        loop {
            if take_frame(&mut self.inbuf, &mut self.inlen, &mut self.rbuf) {
                self.last_answer = Some(Instant::now());
                return Ok(());
            }
            match self.stdout.read(&mut self.inbuf[self.inlen..]) {
                Ok(0) => return Err(self.died(operation)),
                Ok(n) => {
                    self.inlen += n;
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Err(self.died(operation)),
            }
            let now = Instant::now();
            if now < spin_until {
                std::hint::spin_loop();
                continue;
            }
            // Sleep until data arrives, bounded by the deadline.
            let left = deadline.saturating_duration_since(now);
            let mut pfd = libc::pollfd {
                fd: self.stdout.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd for the duration of the call.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                let err = EnvError::Bridge {
                    id: self.id.clone(),
                    message: format!("poll on the worker's pipe failed: {e}"),
                };
                return Err(self.fail(err));
            }
            if r == 0 {
                let _ = self.child.kill();
                let _ = self.child.wait();
                std::thread::sleep(Duration::from_millis(50));
                let err = EnvError::WorkerTimeout {
                    id: self.id.clone(),
                    operation,
                    timeout,
                    stderr_tail: self.stderr.get(),
                };
                return Err(self.fail(err));
            }
        }
    }

    /// Reads a response and turns status 1 into [`EnvError::Python`].
    fn read_answer(&mut self, operation: &'static str) -> Result<(), EnvError> {
        self.read_frame(operation, self.step_timeout)?;
        match self.rbuf.first() {
            Some(0) => Ok(()),
            Some(1) => Err(EnvError::Python {
                id: self.id.clone(),
                operation,
                message: String::from_utf8_lossy(&self.rbuf[1..]).into_owned(),
            }),
            _ => {
                let err = EnvError::Bridge {
                    id: self.id.clone(),
                    message: format!("malformed `{operation}` answer from the worker"),
                };
                Err(self.fail(err))
            }
        }
    }

    /// Copies `n` float32 observation elements starting at `at` in the answer.
    fn take_obs(&mut self, at: usize, obs: &mut [f32]) -> Result<(), EnvError> {
        let n = self
            .rbuf
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
        let body = n.and_then(|n| self.rbuf.get(at + 4..at + 4 + 4 * n));
        match body {
            Some(body) if body.len() == 4 * obs.len() => {
                for (o, c) in obs.iter_mut().zip(body.chunks_exact(4)) {
                    *o = f32::from_le_bytes(c.try_into().expect("4 bytes"));
                }
                Ok(())
            }
            _ => {
                let err = EnvError::Bridge {
                    id: self.id.clone(),
                    message: "observation of the wrong size from the worker".into(),
                };
                Err(self.fail(err))
            }
        }
    }

    fn begin_request(&mut self) {
        self.wbuf.clear();
        self.wbuf.extend_from_slice(&[0u8; 5]);
    }
}

impl Env for BridgedEnv {
    fn id(&self) -> &str {
        &self.id
    }
    fn observation_space(&self) -> &BoxSpace {
        &self.obs_space
    }
    fn action_space(&self) -> &BoxSpace {
        &self.act_space
    }
    fn max_episode_steps(&self) -> Option<u32> {
        self.max_episode_steps
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) -> Result<(), EnvError> {
        self.check_usable()?;
        self.obs_space.check_obs_buffer(&self.id, obs)?;
        if self.pending {
            self.step_wait_raw()?;
        }
        let _hold = self.begin_sync();
        self.begin_request();
        self.wbuf.push(u8::from(seed.is_some()));
        self.wbuf
            .extend_from_slice(&seed.unwrap_or(0).to_le_bytes());
        self.send(b'R', "reset", true)?;
        self.read_answer("reset")?;
        self.take_obs(1, obs)
    }

    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Result<StepOutcome, EnvError> {
        let hold = self.begin_sync();
        let r = self
            .send_step(action, true)
            .and_then(|_| self.step_wait(obs));
        drop(hold);
        r
    }

    fn reset_to_state(&mut self, state: &[f64], obs: &mut [f32]) -> Result<(), EnvError> {
        self.check_usable()?;
        self.obs_space.check_obs_buffer(&self.id, obs)?;
        if let Some(v) = state.iter().find(|v| !v.is_finite()) {
            return Err(EnvError::InvalidState {
                id: self.id.clone(),
                reason: format!("non-finite value {v}"),
            });
        }
        if self.pending {
            self.step_wait_raw()?;
        }
        let _hold = self.begin_sync();
        self.begin_request();
        for v in state {
            self.wbuf.extend_from_slice(&v.to_le_bytes());
        }
        self.send(b'T', "reset_to_state", true)?;
        self.read_answer("reset_to_state")?;
        self.take_obs(1, obs)
    }

    fn state(&mut self) -> Result<Vec<f64>, EnvError> {
        self.check_usable()?;
        if self.pending {
            self.step_wait_raw()?;
        }
        let _hold = self.begin_sync();
        self.begin_request();
        self.send(b'G', "state", true)?;
        self.read_answer("state")?;
        let body = &self.rbuf[1..];
        let n = body
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
        match n.and_then(|n| body.get(4..4 + 8 * n)) {
            Some(vals) => Ok(vals
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()),
            None => {
                let err = EnvError::Bridge {
                    id: self.id.clone(),
                    message: "malformed state answer from the worker".into(),
                };
                Err(self.fail(err))
            }
        }
    }

    fn step_start(&mut self, action: &[f32]) -> Result<bool, EnvError> {
        self.send_step(action, false)?;
        // Copies stepped concurrently must be free to run on any CPU.
        self.affinity.release();
        Ok(true)
    }

    fn step_wait(&mut self, obs: &mut [f32]) -> Result<StepOutcome, EnvError> {
        self.check_usable()?;
        self.obs_space.check_obs_buffer(&self.id, obs)?;
        if !self.pending {
            return Err(EnvError::Bridge {
                id: self.id.clone(),
                message: "step_wait without step_start".into(),
            });
        }
        let out = self.step_wait_raw()?;
        self.take_obs(11, obs)?;
        Ok(out)
    }
}

impl BridgedEnv {
    /// Validates the action and sends the step request (`sync`: see [`Self::send`]).
    fn send_step(&mut self, action: &[f32], sync: bool) -> Result<(), EnvError> {
        self.check_usable()?;
        self.act_space.check_action(&self.id, action)?;
        if self.pending {
            return Err(EnvError::Bridge {
                id: self.id.clone(),
                message: "step_start while a step is pending".into(),
            });
        }
        self.begin_request();
        for v in action {
            self.wbuf.extend_from_slice(&v.to_le_bytes());
        }
        self.send(b'S', "step", sync)?;
        self.pending = true;
        Ok(())
    }

    /// The CPUs the worker's main thread may run on now (None: unknown).
    pub fn worker_cpus(&self) -> Option<Vec<usize>> {
        cpus_of(self.child.id() as libc::pid_t)
    }

    /// Reads a pending step's answer; the observation stays in `rbuf` at offset 11.
    fn step_wait_raw(&mut self) -> Result<StepOutcome, EnvError> {
        self.pending = false;
        self.read_answer("step")?;
        if self.rbuf.len() < 15 {
            let err = EnvError::Bridge {
                id: self.id.clone(),
                message: "short step answer from the worker".into(),
            };
            return Err(self.fail(err));
        }
        let reward = f64::from_le_bytes(self.rbuf[1..9].try_into().expect("8 bytes"));
        Ok(StepOutcome {
            reward,
            terminated: self.rbuf[9] != 0,
            truncated: self.rbuf[10] != 0,
        })
    }
}

impl Drop for BridgedEnv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Moves the first complete frame of `inbuf[..*inlen]` (`u32 length` + body) into
/// `rbuf` (body only) and true; else false, with room for a read of at least
/// [`READ_CHUNK`] bytes after `*inlen`.
fn take_frame(inbuf: &mut Vec<u8>, inlen: &mut usize, rbuf: &mut Vec<u8>) -> bool {
    if let Some(len) = inbuf[..*inlen].get(..4) {
        let total = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if *inlen >= 4 + total {
            rbuf.clear();
            rbuf.extend_from_slice(&inbuf[4..4 + total]);
            inbuf.copy_within(4 + total..*inlen, 0);
            *inlen -= 4 + total;
            return true;
        }
    }
    if inbuf.len() - *inlen < READ_CHUNK {
        inbuf.resize(*inlen + READ_CHUNK, 0);
    }
    false
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
fn cpus_of(tid: libc::pid_t) -> Option<Vec<usize>> {
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
struct CallerPin {
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
struct Affinity {
    pid: libc::pid_t,
    enabled: bool,
    /// The CPU the worker is pinned to, if it is.
    pinned: Option<usize>,
    /// The worker's mask at start (inherited from the spawning thread), restored on
    /// release.
    initial: Option<libc::cpu_set_t>,
}

impl Affinity {
    fn new(pid: u32, enabled: bool) -> Self {
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
    fn follow_caller(&mut self) -> Option<CallerPin> {
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
    fn release(&mut self) {
        if self.pinned.take().is_some() {
            if let Some(set) = &self.initial {
                set_mask(self.pid, set);
            }
        }
    }

    /// No more pinning, and no more calls on the pid: after a failure, when the worker
    /// may be reaped already (its pid could then belong to another process).
    fn disable(&mut self) {
        self.enabled = false;
        self.pinned = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames arrive split over reads, several in one read, and longer than a read.
    #[test]
    fn frames_are_cut_from_the_byte_stream_whatever_the_reads() {
        let frame = |body: &[u8]| {
            let mut f = (body.len() as u32).to_le_bytes().to_vec();
            f.extend_from_slice(body);
            f
        };
        let big: Vec<u8> = (0..3 * READ_CHUNK + 7).map(|i| (i % 251) as u8).collect();
        let mut stream = frame(b"first");
        stream.extend(frame(&big));
        stream.extend(frame(b""));
        stream.extend(frame(b"last"));
        for read_size in [1, 3, 5, 100, READ_CHUNK, stream.len()] {
            let (mut inbuf, mut inlen, mut rbuf) = (vec![0u8; READ_CHUNK], 0, Vec::new());
            let mut got = Vec::new();
            let mut fed = 0;
            while got.len() < 4 {
                if take_frame(&mut inbuf, &mut inlen, &mut rbuf) {
                    got.push(rbuf.clone());
                    continue;
                }
                assert!(inbuf.len() - inlen >= READ_CHUNK, "room for a read");
                // A read fills at most the room there is.
                let n = read_size.min(stream.len() - fed).min(inbuf.len() - inlen);
                assert!(n > 0, "read size {read_size}: stream ended with {got:?}");
                inbuf[inlen..inlen + n].copy_from_slice(&stream[fed..fed + n]);
                (inlen, fed) = (inlen + n, fed + n);
            }
            assert_eq!(
                got,
                [b"first".to_vec(), big.clone(), vec![], b"last".to_vec()]
            );
            assert_eq!(inlen, 0);
        }
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
