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

/// A library error that means bad input (a flag, a config value) as a usage error.
pub fn usage(e: impl fmt::Display) -> anyhow::Error {
    config_error(e.to_string())
}

/// The error and its causes on one line (`a: b: c`), each cause once: library errors
/// often spell their source into their own message, and `{:#}` would repeat it.
pub fn describe(err: &anyhow::Error) -> String {
    let mut s = String::new();
    for e in err.chain() {
        let m = e.to_string();
        if s.ends_with(&m) {
            continue;
        }
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&m);
    }
    s
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

/// The exit status of a process that wrote into a pipe nobody reads (128 + SIGPIPE, what a
/// shell shows for a C tool killed by the signal).
pub const BROKEN_PIPE_EXIT: u8 = 141;

/// Set by the hook of [`quiet_on_broken_stdout`] when a print met a closed stdout.
static BROKEN_STDOUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes a closed stdout end the process quietly: `fixar bench td3 | head -3` stops
/// the command with status 141 once `head` has its lines, where `println!`'s panic
/// would print its message and a backtrace hint. The panic itself still unwinds, so
/// every destructor on the way runs (a trainer's metric files are flushed, bridged env
/// workers are stopped) and nothing written so far is lost; [`exit_after_panic`] turns
/// it into the exit status. Rust ignores SIGPIPE, and it stays ignored: the env bridge
/// writes to worker pipes and reports a dead worker as an error naming the env. Every
/// other panic goes to the hook that was installed before.
pub fn quiet_on_broken_stdout() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_broken_stdout(msg) {
            BROKEN_STDOUT.store(true, std::sync::atomic::Ordering::SeqCst);
            return;
        }
        previous(info);
    }));
}

/// The exit status for a panic that reached `main`: [`BROKEN_PIPE_EXIT`] when a print
/// met a closed stdout (the hook of [`quiet_on_broken_stdout`] saw it), else the panic
/// goes on as it would have.
pub fn exit_after_panic(payload: Box<dyn std::any::Any + Send>) -> std::process::ExitCode {
    if BROKEN_STDOUT.load(std::sync::atomic::Ordering::SeqCst) {
        return std::process::ExitCode::from(BROKEN_PIPE_EXIT);
    }
    std::panic::resume_unwind(payload)
}

/// Whether a panic message is std's for a print into a closed pipe.
fn is_broken_stdout(msg: &str) -> bool {
    msg.starts_with("failed printing to stdout")
        && (msg.contains("Broken pipe") || msg.contains("os error 32"))
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

    #[test]
    fn a_cause_spelled_into_its_parents_message_is_printed_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading x: {source}")]
        struct Spelled {
            source: std::io::Error,
        }
        let io = std::io::Error::other("disk gone");
        let e = anyhow::Error::new(Spelled { source: io }).context("resuming run");
        assert_eq!(describe(&e), "resuming run: reading x: disk gone");
        let e = anyhow::anyhow!("root").context("middle").context("top");
        assert_eq!(describe(&e), "top: middle: root");
    }

    #[test]
    fn only_a_print_into_a_closed_stdout_counts_as_a_broken_pipe() {
        assert!(is_broken_stdout(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        assert!(!is_broken_stdout(
            "failed printing to stdout: No space left on device (os error 28)"
        ));
        assert!(!is_broken_stdout("worker pipe: Broken pipe (os error 32)"));
    }
}
