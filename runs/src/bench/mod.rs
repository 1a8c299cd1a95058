//! `fixar bench ...`: every benchmark prints `name: value` lines, ours beside the peer's
//! measured in the same invocation (ratios, medians over rounds, thread counts).
//!
//! - [`td3`]: TD3 gradient updates/s against the GEMM roofline and Stable-Baselines3.
//! - [`env`]: native and bridged env stepping against Python Gymnasium.
//! - [`quant`]: conversion and fake-quantization throughput against apytypes and
//!   libtorch.
//! - [`accel`]: analytic accelerator-model evaluations per second.

pub mod accel;
pub mod env;
pub mod quant;
pub mod td3;

/// `fixar bench` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// TD3 gradient updates/s (Pendulum shapes, 256-256, batch 256) vs GEMM roofline and SB3.
    Td3(td3::BenchTd3Args),
    /// Native Pendulum-v1 and bridged MuJoCo stepping vs Python Gymnasium.
    Env(env::BenchEnvArgs),
    /// Analytic accelerator-model evaluations per second (goal: 100k on one core).
    Accel(accel::BenchAccelArgs),
    /// from_f64 values/s into ap_fixed<16,6,AP_RND_CONV,AP_SAT> vs apytypes; tensor
    /// fake-quant time vs libtorch's plain round/clamp.
    Quant(quant::BenchQuantArgs),
}

/// Dispatches `fixar bench ...`.
pub fn run(what: BenchCommand) -> anyhow::Result<std::process::ExitCode> {
    match what {
        BenchCommand::Td3(args) => td3::run(&args),
        BenchCommand::Env(args) => env::bench(&args),
        BenchCommand::Accel(args) => accel::bench(&args),
        BenchCommand::Quant(args) => quant::bench(&args),
    }
}

pub use agents::stats::median;
