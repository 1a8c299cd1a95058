//! The worker process: starting Python on the embedded `worker.py`, its pipes, the tail
//! of its stderr, and its lifetime.
//!
//! One worker process per env copy (so a [`crate::VecEnv`] of bridged copies steps them
//! concurrently), started with the project's Python ([`super::python_executable`]) in
//! the temporary directory (MuJoCo writes `MUJOCO_LOG.TXT` into the working directory
//! on warnings). Our end of its stdout is non-blocking: waiting is the `waiting`
//! module's job. A thread keeps the last bytes of its stderr for error messages (and
//! logs every line at debug level).
//!
//! Clean-up: dropping a [`Worker`] (with its env) kills and reaps the process. If the
//! Rust process dies (SIGINT, SIGTERM, a panic that aborts), the worker sees its stdin
//! close or its parent change and exits within half a second. (`PR_SET_PDEATHSIG` is
//! not used: it fires when the spawning *thread* exits, which would kill workers
//! created from short-lived threads.)

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{python_executable, BridgeConfig, WORKER_SPIN};
use crate::EnvError;

/// The worker script, run with `python -c`.
pub const WORKER_SCRIPT: &str = include_str!("worker.py");

/// How much of the worker's stderr is kept for error messages.
const STDERR_TAIL_BYTES: usize = 4096;

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

/// A running worker process and our ends of its pipes.
pub(super) struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: Arc<StderrTail>,
}

impl Worker {
    /// Starts the worker for env `id` (it makes the env and answers with the handshake).
    pub(super) fn spawn(id: &str, cfg: &BridgeConfig) -> Result<Self, EnvError> {
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
            .map_err(|source| EnvError::BridgeIo {
                id: id.to_string(),
                what: format!("cannot start Python `{}`", python.display()),
                source,
            })?;
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
            return Err(EnvError::BridgeIo {
                id: id.to_string(),
                what: "cannot make the worker's pipe non-blocking".into(),
                source: std::io::Error::last_os_error(),
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
                .map_err(|source| EnvError::BridgeIo {
                    id: id.to_string(),
                    what: "cannot start the stderr reader thread".into(),
                    source,
                })?;
        }
        Ok(Self {
            child,
            stdin,
            stdout,
            stderr,
        })
    }

    /// The process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes a whole request to the worker's stdin.
    pub(super) fn send(&mut self, request: &[u8]) -> std::io::Result<()> {
        self.stdin.write_all(request)
    }

    /// Reads what the worker's stdout holds now (non-blocking: `WouldBlock` when empty).
    pub(super) fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stdout.read(buf)
    }

    /// Our end of the worker's stdout, to wait on.
    pub(super) fn stdout_fd(&self) -> RawFd {
        self.stdout.as_raw_fd()
    }

    /// The exit status of a worker that closed its pipe, waiting up to two seconds for
    /// it to exit (then killing it).
    pub(super) fn exit_status(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
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
        }
    }

    /// Kills and reaps the process.
    pub(super) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The tail of the worker's stderr once it has stopped: waits a moment for the
    /// reader thread to collect the last lines (a traceback).
    pub(super) fn last_words(&self) -> String {
        std::thread::sleep(Duration::from_millis(50));
        self.stderr.get()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}
