//! How a command failed decides the process exit code: 2 for usage and configuration
//! errors, 1 for everything that went wrong at run time.

use std::fmt;

/// A usage or configuration error: bad flags, an unreadable or invalid config, an unknown
/// preset. Wrap it in an `anyhow::Error`; `exit_code` finds it anywhere in the chain.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Shorthand for returning a configuration error from a command.
pub fn config_error(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(ConfigError(msg.into()))
}

/// 2 when a `ConfigError` is anywhere in the error's chain, else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err
        .chain()
        .any(|e| e.downcast_ref::<ConfigError>().is_some())
    {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_exit_2_even_when_wrapped_and_others_exit_1() {
        let e = config_error("bad key").context("while reading x.toml");
        assert_eq!(exit_code(&e), 2);
        let e = anyhow::anyhow!("disk full").context("while writing");
        assert_eq!(exit_code(&e), 1);
    }
}
