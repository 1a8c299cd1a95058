//! How bridged envs are started and how they wait: [`BridgeConfig`] (interpreter,
//! `gymnasium.make` arguments, timeouts, co-location, [`Wait`]), the
//! `FIXAR_BRIDGE_WAIT`, `FIXAR_BRIDGE_TIMEOUT` and `FIXAR_PYTHON` environment
//! variables, and where the project's Python is found.

use std::path::PathBuf;
use std::time::Duration;

/// How a synchronous call waits for its answer (the `waiting` module's docs: spin
/// waits).
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
    /// Pin the worker to the caller's CPU during synchronous calls that block (the
    /// `affinity` module's docs); not used while spinning.
    pub co_locate: bool,
    /// How synchronous calls wait (the `waiting` module's docs).
    pub wait: Wait,
}

/// A bridge setting from the environment that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `FIXAR_BRIDGE_WAIT` holds something else than `auto`, `spin` or `block`.
    #[error("FIXAR_BRIDGE_WAIT={value:?}: expected `auto`, `spin` or `block`")]
    Wait { value: String },
    /// `FIXAR_BRIDGE_TIMEOUT` is not a number of seconds in (0, 86400].
    #[error("FIXAR_BRIDGE_TIMEOUT={value:?}: expected seconds, more than 0 and at most 86400")]
    Timeout { value: String },
}

impl Wait {
    /// `FIXAR_BRIDGE_WAIT` (`auto`, `spin` or `block`); unset or empty: `auto`.
    pub fn from_env() -> Result<Self, ConfigError> {
        match std::env::var("FIXAR_BRIDGE_WAIT").as_deref() {
            Err(_) | Ok("") | Ok("auto") => Ok(Wait::Auto),
            Ok("spin") => Ok(Wait::Spin),
            Ok("block") => Ok(Wait::Block),
            Ok(other) => Err(ConfigError::Wait {
                value: other.to_string(),
            }),
        }
    }
}

/// `FIXAR_BRIDGE_TIMEOUT`: seconds a `reset` or `step` answer may take (how long a hung
/// worker stalls training before it is killed and training stops); unset: 30.
pub fn step_timeout_from_env() -> Result<Duration, ConfigError> {
    const DEFAULT: Duration = Duration::from_secs(30);
    match std::env::var("FIXAR_BRIDGE_TIMEOUT").as_deref() {
        Err(_) | Ok("") => Ok(DEFAULT),
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| ConfigError::Timeout {
                value: v.to_string(),
            }),
    }
}

impl Default for BridgeConfig {
    /// Defaults; `wait` from [`Wait::from_env`] and `step_timeout` from
    /// [`step_timeout_from_env`] (a bad value is logged as a warning and the default
    /// used).
    fn default() -> Self {
        let wait = Wait::from_env().unwrap_or_else(|e| {
            tracing::warn!("{e}; using `auto`");
            Wait::Auto
        });
        let step_timeout = step_timeout_from_env().unwrap_or_else(|e| {
            tracing::warn!("{e}; using 30 s");
            Duration::from_secs(30)
        });
        Self {
            python: None,
            make_kwargs: serde_json::Value::Object(Default::default()),
            startup_timeout: Duration::from_secs(120),
            step_timeout,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_wait_setting_names_the_variable_and_the_value() {
        let err = ConfigError::Wait {
            value: "spinny".into(),
        };
        assert_eq!(
            err.to_string(),
            "FIXAR_BRIDGE_WAIT=\"spinny\": expected `auto`, `spin` or `block`"
        );
    }
}
