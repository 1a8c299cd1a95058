//! `fixar bench ...`: every benchmark prints `name: value` lines, ours beside the peer's
//! measured in the same invocation (ratios, medians over rounds, thread counts).
//!
//! - [`td3`]: TD3 gradient updates/s against the GEMM roofline and Stable-Baselines3.
//! - [`env`]: native and bridged env stepping against Python Gymnasium.
//! - [`quant`]: conversion and fake-quantization throughput against apytypes and
//!   libtorch.
//! - [`accel`]: analytic accelerator-model evaluations per second.
//! - [`deploy`]: the exported C actor's batch-1 inference against libtorch's f32 forward.
//! - [`train`]: end-to-end training steps/s against the matching Stable-Baselines3 run.

pub mod accel;
pub mod deploy;
pub mod env;
pub mod quant;
pub mod td3;
pub mod train;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};

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
    /// The exported C actor (cc -O3 -march=native) µs per batch-1 action vs libtorch's
    /// f32 batch-1 forward of the same actor.
    Deploy(deploy::BenchDeployArgs),
    /// End-to-end training steps/s (env, replay, updates; no evaluation) vs the matching
    /// Stable-Baselines3 run, one thread each.
    Train(train::BenchTrainArgs),
}

/// Dispatches `fixar bench ...`.
pub fn run(what: BenchCommand) -> anyhow::Result<std::process::ExitCode> {
    match what {
        BenchCommand::Td3(args) => td3::run(&args),
        BenchCommand::Env(args) => env::bench(&args),
        BenchCommand::Accel(args) => accel::bench(&args),
        BenchCommand::Quant(args) => quant::bench(&args),
        BenchCommand::Deploy(args) => deploy::run(&args),
        BenchCommand::Train(args) => train::run(&args),
    }
}

pub use agents::stats::median;

/// What a benchmark's stdout gets.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `name: value` lines.
    Text,
    /// One JSON object with the same names.
    Json,
}

/// A benchmark's results in the order they print: `name: value` lines or one JSON object.
#[derive(Debug, Default)]
pub struct Figures(Vec<(String, serde_json::Value)>);

impl Figures {
    pub fn put(&mut self, name: &str, value: impl Into<serde_json::Value>) {
        self.0.push((name.to_string(), value.into()));
    }

    /// `value` rounded to `decimals` places (as printed in both formats).
    pub fn num(&mut self, name: &str, value: f64, decimals: i32) {
        let p = 10f64.powi(decimals);
        self.put(name, (value * p).round() / p);
    }

    /// Prints them to stdout in `format`.
    pub fn print(&self, format: Format) -> anyhow::Result<()> {
        match format {
            Format::Text => {
                for (k, v) in &self.0 {
                    match v {
                        serde_json::Value::String(s) => println!("{k}: {s}"),
                        v => println!("{k}: {v}"),
                    }
                }
            }
            Format::Json => {
                let map: serde_json::Map<String, serde_json::Value> =
                    self.0.iter().cloned().collect();
                println!("{}", serde_json::to_string_pretty(&map)?);
            }
        }
        Ok(())
    }
}

/// A fresh directory under the temp dir for one benchmark's files, removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(what: &str) -> anyhow::Result<ScratchDir> {
        let dir = std::env::temp_dir().join(format!("fixar-bench-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        Ok(ScratchDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Rates as `a b c` with one decimal.
pub fn rates(xs: &[f64]) -> String {
    xs.iter()
        .map(|x| format!("{x:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the Stable-Baselines3 peer `script` of `../shared/bench` (FIXAR_SHARED_DIR) with
/// the project's Python and returns its `name: value` lines, or why there are none.
pub fn run_sb3(script: &str, args: &[&str]) -> anyhow::Result<BTreeMap<String, f64>> {
    let python = envs::bridge::python_executable();
    let shared =
        std::env::var("FIXAR_SHARED_DIR").unwrap_or_else(|_| env!("FIXAR_SHARED_DIR").to_string());
    let script = Path::new(&shared).join("bench").join(script);
    if !script.is_file() {
        return Err(anyhow!("{} not found", script.display()));
    }
    let probe = std::process::Command::new(&python)
        .args(["-c", "import stable_baselines3"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return Err(anyhow!(
            "{} lacks stable_baselines3 (run scripts/setup-peers)",
            python.display()
        ));
    }
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args(args)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        return Err(anyhow!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(k, v)| Some((k.trim().to_string(), v.trim().parse().ok()?)))
        .collect())
}
