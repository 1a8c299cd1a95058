//! `fixar`: the command line of the fixed-point deep-RL platform. Parses arguments and
//! dispatches to the `runs` library; logic lives there and in the other crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Narrow a trained run down a ladder of bit widths (PTQ, range QAT, quantization
    /// delay, learned binary point); writes qat.csv/md, formats, chosen.json and a plot.
    Qat(runs::qat::QatArgs),
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
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
        Command::Qat(args) => runs::qat::run(&args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    runs::logging::init(cli.verbose as i8 - cli.quiet as i8);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(runs::failure::exit_code(&err))
        }
    }
}
