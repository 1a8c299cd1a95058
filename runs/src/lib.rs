//! The experiment runner behind the `fixar` binary: command implementations, configs,
//! run directories, plots and reports. `main.rs` only parses arguments and dispatches.

pub mod failure;
pub mod info;
pub mod logging;
pub mod plot;
pub mod qat;
pub mod report;
pub mod sweep;
