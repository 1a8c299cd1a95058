//! The Python Gymnasium bridge: environments without a native port (the MuJoCo tasks
//! `HalfCheetah-v5`, `Hopper-v5`, `Walker2d-v5`, `InvertedPendulum-v5`, `Reacher-v5`,
//! ...) run in a Python worker process with the real `gymnasium[mujoco]`.
//!
//! [`BridgedEnv`] is the env; this module holds its calls and failure handling, and
//! one module per concern holds the rest:
//!
//! - `config`: [`BridgeConfig`], [`Wait`] (`FIXAR_BRIDGE_WAIT`), [`python_executable`]
//!   (`FIXAR_PYTHON`).
//! - `process`: one worker process per env copy (so a [`crate::VecEnv`] of bridged
//!   copies steps them concurrently) running the embedded [`WORKER_SCRIPT`], its pipes,
//!   its stderr tail, killing and reaping it.
//! - `wire`: binary frames over the pipes (the action as little-endian float32, a
//!   seed, or a state as float64; reward f64, flags, float32 observation back), JSON
//!   only in the start-up handshake.
//! - `waiting`: spinning in a tight loop of calls, sleeping in `poll` otherwise.
//! - `affinity`: co-locating the worker with the caller while the caller sleeps.
//!
//! `gym.make` adds the registered `TimeLimit`, so `truncated` comes from Gymnasium.
//! Failures never hang: every answer is awaited with a timeout ([`BridgeConfig`]); a
//! worker that dies or does not answer yields an error naming the env id and the tail
//! of the worker's stderr, and a timed-out worker is killed; after a failure every call
//! errors. An unknown id yields [`EnvError::UnknownId`] with Gymnasium's own message.

mod affinity;
mod config;
mod process;
mod waiting;
mod wire;

use std::time::{Duration, Instant};

pub use config::{python_executable, step_timeout_from_env, BridgeConfig, ConfigError, Wait};
pub use process::WORKER_SCRIPT;
pub use waiting::{CALLER_SPIN, SHORT_GAP, WORKER_SPIN};
pub use wire::HandshakeError;

use affinity::{Affinity, CallerPin};
use process::Worker;
use waiting::{Awaited, Pace};
use wire::READ_CHUNK;

use crate::{BoxSpace, Env, EnvError, StepOutcome};

/// A Gymnasium env running in a Python worker process.
pub struct BridgedEnv {
    id: String,
    worker: Worker,
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
    /// Pinning of the worker to the caller's CPU.
    affinity: Affinity,
    /// Whether requests and answers are spun for.
    pace: Pace,
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
        let worker = Worker::spawn(id, cfg)?;
        let affinity = Affinity::new(worker.pid(), cfg.co_locate);
        Ok(Self {
            env: BridgedEnv {
                id: id.to_string(),
                worker,
                obs_space: BoxSpace::default(),
                act_space: BoxSpace::default(),
                max_episode_steps: None,
                step_timeout: cfg.step_timeout,
                wbuf: Vec::with_capacity(256),
                rbuf: Vec::with_capacity(1024),
                inbuf: vec![0; READ_CHUNK],
                inlen: 0,
                affinity,
                pace: Pace::new(cfg.wait),
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
        let hs = wire::Handshake::parse(&env.rbuf).map_err(|source| EnvError::Handshake {
            id: env.id.clone(),
            source,
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
        (env.obs_space, env.act_space) = hs.spaces().map_err(|source| EnvError::Handshake {
            id: env.id.clone(),
            source,
        })?;
        env.max_episode_steps = hs.max_episode_steps;
        tracing::debug!(env = %env.id, pid = env.worker.pid(), "bridge worker ready");
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
        self.worker.pid()
    }

    /// Whether the caller spun for the last answer instead of sleeping (see [`Wait`]).
    pub fn spun_for_last_answer(&self) -> bool {
        self.pace.spun()
    }

    /// The CPUs the worker's main thread may run on now (None: unknown).
    pub fn worker_cpus(&self) -> Option<Vec<usize>> {
        affinity::cpus_of(self.worker.pid() as libc::pid_t)
    }

    fn fail(&mut self, err: EnvError) -> EnvError {
        // The worker may be reaped already: never touch its pid again.
        self.affinity.disable();
        self.pace.stop();
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
        let status = self.worker.exit_status();
        let err = EnvError::WorkerDied {
            id: self.id.clone(),
            operation,
            status,
            stderr_tail: self.worker.last_words(),
        };
        self.fail(err)
    }

    /// Prepares a synchronous call: decides whether to spin (the `waiting` module) and,
    /// when not, co-locates the worker with the caller (the returned pin holds the
    /// caller on its CPU until dropped).
    fn begin_sync(&mut self) -> Option<CallerPin> {
        if self.pace.begin_sync() {
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
        let spin = self.pace.on_send(sync);
        wire::finish_request(&mut self.wbuf, op, spin);
        if self.worker.send(&self.wbuf).is_err() {
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
        let spin_until = start + self.pace.spin_budget();
        loop {
            if wire::take_frame(&mut self.inbuf, &mut self.inlen, &mut self.rbuf) {
                self.pace.answered();
                return Ok(());
            }
            match self.worker.read(&mut self.inbuf[self.inlen..]) {
                Ok(0) => return Err(self.died(operation)),
                Ok(n) => {
                    self.inlen += n;
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Err(self.died(operation)),
            }
            match waiting::await_readable(self.worker.stdout_fd(), spin_until, deadline) {
                Awaited::Retry => {}
                Awaited::Failed(source) => {
                    let err = EnvError::BridgeIo {
                        id: self.id.clone(),
                        what: "poll on the worker's pipe failed".into(),
                        source,
                    };
                    return Err(self.fail(err));
                }
                Awaited::TimedOut => {
                    self.worker.kill();
                    let err = EnvError::WorkerTimeout {
                        id: self.id.clone(),
                        operation,
                        timeout,
                        stderr_tail: self.worker.last_words(),
                    };
                    return Err(self.fail(err));
                }
            }
        }
    }

    /// Reads a response and turns status 1 into [`EnvError::Python`].
    fn read_answer(&mut self, operation: &'static str) -> Result<(), EnvError> {
        self.read_frame(operation, self.step_timeout)?;
        match self.rbuf.first() {
            Some(&wire::STATUS_OK) => Ok(()),
            Some(&wire::STATUS_PYTHON_ERROR) => Err(EnvError::Python {
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

    /// Copies the float32 observation starting at `at` in the answer.
    fn take_obs(&mut self, at: usize, obs: &mut [f32]) -> Result<(), EnvError> {
        if wire::decode_obs(&self.rbuf, at, obs) {
            return Ok(());
        }
        let err = EnvError::Bridge {
            id: self.id.clone(),
            message: "observation of the wrong size from the worker".into(),
        };
        Err(self.fail(err))
    }

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
        wire::begin_request(&mut self.wbuf);
        wire::push_f32s(&mut self.wbuf, action);
        self.send(wire::OP_STEP, "step", sync)?;
        self.pending = true;
        Ok(())
    }

    /// Reads a pending step's answer; the observation stays in `rbuf` at
    /// [`wire::STEP_OBS_AT`].
    fn step_wait_raw(&mut self) -> Result<StepOutcome, EnvError> {
        self.pending = false;
        self.read_answer("step")?;
        match wire::decode_step(&self.rbuf) {
            Some(out) => Ok(out),
            None => {
                let err = EnvError::Bridge {
                    id: self.id.clone(),
                    message: "short step answer from the worker".into(),
                };
                Err(self.fail(err))
            }
        }
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
        wire::begin_request(&mut self.wbuf);
        wire::push_seed(&mut self.wbuf, seed);
        self.send(wire::OP_RESET, "reset", true)?;
        self.read_answer("reset")?;
        self.take_obs(wire::RESET_OBS_AT, obs)
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
        wire::begin_request(&mut self.wbuf);
        wire::push_f64s(&mut self.wbuf, state);
        self.send(wire::OP_RESET_TO_STATE, "reset_to_state", true)?;
        self.read_answer("reset_to_state")?;
        self.take_obs(wire::RESET_OBS_AT, obs)
    }

    fn state(&mut self) -> Result<Vec<f64>, EnvError> {
        self.check_usable()?;
        if self.pending {
            self.step_wait_raw()?;
        }
        let _hold = self.begin_sync();
        wire::begin_request(&mut self.wbuf);
        self.send(wire::OP_STATE, "state", true)?;
        self.read_answer("state")?;
        match wire::decode_state(&self.rbuf) {
            Some(state) => Ok(state),
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
        self.take_obs(wire::STEP_OBS_AT, obs)?;
        Ok(out)
    }
}
