//! `fixar`: the command line of the fixed-point deep-RL platform. Parses arguments and
//! dispatches to the `runs` library; logic lives there and in the other crates.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fixar",
    version,
    about = "Fixed-point deep reinforcement learning: train, quantize, estimate hardware"
)]
struct Cli {
    /// More log detail (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log detail (-q warnings only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    quiet: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Versions (fixar, tch, libtorch), CUDA, libtorch threads and CPU features.
    Info {
        /// Print JSON instead of `name: value` lines.
        #[arg(long)]
        json: bool,
    },
    /// Environments: check against recorded Gymnasium trajectories, print rollouts.
    Env {
        #[command(subcommand)]
        cmd: runs::env_cmd::EnvCommand,
    },
    /// Accelerator model: IPS, power and IPS/W of FIXAR's AAP-core accelerator for an
    /// agent's workload, with phases, resources, a sweep and plots.
    Accel(runs::accel::AccelArgs),
    /// Narrow a trained run down a ladder of bit widths (PTQ, range QAT, quantization
    /// delay, learned binary point); writes qat.csv/md, formats, chosen.json and a plot.
    Qat(runs::qat::QatArgs),
    /// Export the quantized actor as integer-only C99, HLS C++ (with test vectors and a bench), or an hls4ml config with its weights.
    Export(runs::export::ExportArgs),
    /// Train fxp32 -> QAT ladder -> accelerator estimate -> report.md + report.html.
    Pipeline(runs::pipeline::PipelineArgs),
    /// Run a grid of trials (algos x envs x precisions x seeds), or one shard of it.
    Sweep(runs::sweep::SweepArgs),
    /// Merge the trial results of sweep directories into tables and plots.
    Collect(runs::sweep::CollectArgs),
    /// Train DDPG/TD3 from a TOML config (runs/configs/), several seeds in parallel.
    Train(runs::train::TrainArgs),
    /// Several training runs side by side (finished or under way): training-episode and
    /// eval curves with a band over seeds, final returns, ratios, a schedule's dip.
    Compare(runs::compare::CompareArgs),
    /// Fixed-point core: check HLS ap_fixed reference vectors.
    Fx {
        #[command(subcommand)]
        cmd: runs::fx::FxCommand,
    },
    /// Benchmarks: `name: value` lines, ours beside the peer's from the same run.
    Bench {
        #[command(subcommand)]
        what: runs::bench::BenchCommand,
    },
    /// Print a shell completion script for fixar (bash, zsh, fish; also elvish,
    /// powershell), e.g. `fixar completions bash > ~/.local/share/bash-completion/completions/fixar`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "fixar", &mut std::io::stdout());
        return Ok(ExitCode::SUCCESS);
    }
    // Read where bridged envs are made (deep inside commands): checked up front so a
    // typo is a usage error, not a warning halfway through a run.
    envs::bridge::Wait::from_env().map_err(|e| runs::failure::config_error(e.to_string()))?;
    envs::bridge::step_timeout_from_env()
        .map_err(|e| runs::failure::config_error(e.to_string()))?;
    match cli.command {
        Command::Info { json } => {
            let info = runs::info::Info::gather();
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print!("{}", info.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Env { cmd } => runs::env_cmd::run(cmd),
        Command::Accel(args) => runs::accel::run(&args),
        Command::Qat(args) => runs::qat::run(&args),
        Command::Export(args) => runs::export::run(&args),
        Command::Pipeline(args) => runs::pipeline::run(&args),
        Command::Sweep(args) => runs::sweep::run_sweep(&args),
        Command::Collect(args) => runs::sweep::run_collect(&args),
        Command::Train(args) => runs::train::run(&args),
        Command::Compare(args) => runs::compare::run(&args),
        Command::Fx { cmd } => runs::fx::run(&cmd),
        Command::Bench { what } => runs::bench::run(what),
        Command::Completions { .. } => unreachable!("handled above"),
    }
}

fn main() -> ExitCode {
    runs::failure::quiet_on_broken_stdout();
    let cli = Cli::parse();
    runs::logging::init(cli.verbose as i8 - cli.quiet as i8);
    // A panic unwinds to here (destructors run on the way); see `quiet_on_broken_stdout`.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(code)) => code,
        Ok(Err(err)) => {
            eprintln!("error: {}", runs::failure::describe(&err));
            ExitCode::from(runs::failure::exit_code(&err))
        }
        Err(payload) => runs::failure::exit_after_panic(payload),
    }
}
