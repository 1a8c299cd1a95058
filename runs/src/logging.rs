//! Logging through `tracing`: `-v` raises the level, `-q` lowers it, and `RUST_LOG`
//! (when set) wins over both.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber writing to stderr. `verbosity` is the number of `-v`
/// minus the number of `-q`; 0 shows warnings and info from fixar.
pub fn init(verbosity: i8) {
    let level = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "warn,fixar={level},runs={level},agents={level},envs={level},quant={level},accel_model={level}"
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
