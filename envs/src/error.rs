//! What can go wrong when making or stepping an environment.

use std::time::Duration;

/// Every failure of this crate. Messages name the environment id so that a caller
/// holding many copies knows which one failed.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// `make` was given an id that neither the native registry nor Python Gymnasium knows.
    #[error("unknown environment id `{id}`{}; native ids: {}; any other id is made by the Python Gymnasium bridge", gymnasium_says(.gymnasium_message), .registered.join(", "))]
    UnknownId {
        id: String,
        /// The ids with a native port (see [`crate::registered_ids`]).
        registered: Vec<String>,
        /// Gymnasium's own error message, when the bridge was asked.
        gymnasium_message: Option<String>,
    },
    /// The action slice does not have the action space's dimension.
    #[error("{id}: action has {got} elements, the action space has {expected}")]
    ActionLength {
        id: String,
        expected: usize,
        got: usize,
    },
    /// An action element is NaN or infinite.
    #[error("{id}: action element {index} is {value} (actions must be finite)")]
    NonFiniteAction {
        id: String,
        index: usize,
        value: f32,
    },
    /// The observation buffer does not have the observation space's dimension.
    #[error("{id}: observation buffer has {got} elements, the observation space has {expected}")]
    ObservationLength {
        id: String,
        expected: usize,
        got: usize,
    },
    /// A state given to `reset_to_state` has the wrong length or a non-finite value.
    #[error("{id}: invalid state: {reason}")]
    InvalidState { id: String, reason: String },
    /// `step` before the first `reset` (Gymnasium's `ResetNeeded`).
    #[error("{id}: cannot step before reset")]
    ResetNeeded { id: String },
    /// The environment does not offer this operation.
    #[error("{id}: {operation} is not supported by this environment")]
    Unsupported { id: String, operation: &'static str },
    /// Invalid construction arguments (vector env with no copies, mismatched spaces, ...).
    #[error("{0}")]
    Config(String),
    /// The Python worker of a bridged env did not answer in time (it was killed).
    #[error("{id}: the Python Gymnasium worker did not answer `{operation}` within {timeout:?}; it was killed{}", tail(.stderr_tail))]
    WorkerTimeout {
        id: String,
        operation: &'static str,
        timeout: Duration,
        stderr_tail: String,
    },
    /// The Python worker of a bridged env exited or broke the pipe.
    #[error("{id}: the Python Gymnasium worker died during `{operation}` ({status}){}", tail(.stderr_tail))]
    WorkerDied {
        id: String,
        operation: &'static str,
        status: String,
        stderr_tail: String,
    },
    /// Python raised an exception inside `reset`/`step` (the message is Python's).
    #[error("{id}: Python Gymnasium raised during `{operation}`: {message}")]
    Python {
        id: String,
        operation: &'static str,
        message: String,
    },
    /// The bridge could not talk to its worker (a malformed answer, a call out of
    /// order, a worker unusable after an earlier failure, `gymnasium.make` failed).
    #[error("{id}: Python Gymnasium bridge: {message}")]
    Bridge { id: String, message: String },
    /// The bridge could not start its worker or wait on its pipe (no Python, ...).
    #[error("{id}: Python Gymnasium bridge: {what}: {source}")]
    BridgeIo {
        id: String,
        /// What failed, e.g. ``cannot start Python `/usr/bin/python3` ``.
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The worker's start-up handshake could not be used.
    #[error("{id}: Python Gymnasium bridge: {source}")]
    Handshake {
        id: String,
        #[source]
        source: crate::bridge::HandshakeError,
    },
}

fn gymnasium_says(msg: &Option<String>) -> String {
    match msg {
        Some(m) => format!(" (Gymnasium says: {m})"),
        None => String::new(),
    }
}

fn tail(stderr_tail: &str) -> String {
    let t = stderr_tail.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!("; worker stderr ends with:\n{t}")
    }
}
