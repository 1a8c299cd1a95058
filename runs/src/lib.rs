//! The experiment runner behind the `fixar` binary: command implementations, configs,
//! run directories, plots and reports. `main.rs` only parses arguments and dispatches.

pub mod accel;
pub mod bench;
pub mod compare;
pub mod env_cmd;
pub mod export;
pub mod failure;
pub mod fx;
pub mod info;
pub mod logging;
pub mod pipeline;
pub mod plot;
pub mod qat;
pub mod report;
pub mod rundir;
pub mod stop;
pub mod sweep;
pub mod train;
