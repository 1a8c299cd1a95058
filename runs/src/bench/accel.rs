//! `fixar bench accel`: analytic accelerator-model evaluations per second on one thread
//! (goal: 100k) and sweep points per second with rayon. No peer: there is no analytical
//! accelerator model among the peers in shared/bench.

use std::process::ExitCode;
use std::time::Instant;

use accel_model::plan::Plan;
use accel_model::presets;
use accel_model::sweep::SweepSpec;
use accel_model::{HwConfig, Parallelism, Precision};

use crate::accel::model_error;
use crate::failure::config_error;

/// `fixar bench accel`
#[derive(clap::Args, Debug)]
pub struct BenchAccelArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Hardware preset whose workload is evaluated.
    #[arg(long, default_value = "fixar-u50")]
    pub hw: String,
}

/// Analytic-model evaluations per second on one thread (plan built once, hardware
/// varied), and sweep points per second with rayon.
pub fn bench(args: &BenchAccelArgs) -> anyhow::Result<ExitCode> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err(config_error(format!(
            "--seconds {}: must be greater than zero",
            args.seconds
        )));
    }
    let preset = presets::load(&args.hw).map_err(model_error)?;
    let w = preset
        .workload
        .clone()
        .ok_or_else(|| config_error(format!("preset `{}` has no [workload]", args.hw)))?;
    let plan = Plan::new(&w);
    let variants: Vec<HwConfig> = (1..=5)
        .flat_map(|cores| {
            Parallelism::ALL.iter().map({
                let hw = &preset.hw;
                move |&parallelism| HwConfig {
                    cores,
                    parallelism,
                    ..hw.clone()
                }
            })
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let (evals, secs, checksum) = pool.install(|| {
        let start = Instant::now();
        let mut evals = 0u64;
        let mut checksum = 0.0;
        while start.elapsed().as_secs_f64() < args.seconds {
            for hw in &variants {
                let e = plan.estimate(hw).map_err(model_error)?;
                checksum += e.performance.map_or(0.0, |p| p.accelerator_training_ips);
                evals += 1;
            }
        }
        anyhow::Ok((evals, start.elapsed().as_secs_f64(), checksum))
    })?;
    let per_s = evals as f64 / secs;
    let spec = SweepSpec {
        cores: (1..=8).collect(),
        arrays: vec![(4, 4), (8, 8), (16, 16), (32, 32)],
        precisions: vec![Precision::Fxp16, Precision::Fxp32],
        batches: vec![32, 64, 128, 256],
        clocks_mhz: vec![150.0, 164.0, 200.0, 300.0],
        modes: Parallelism::ALL.to_vec(),
    };
    let start = Instant::now();
    let pts = spec.run(&w, &preset.hw);
    let sweep_secs = start.elapsed().as_secs_f64();
    println!("workload: {}", w.describe());
    println!("accel_model_evals_per_s_1_thread: {per_s:.0}");
    println!("accel_model_goal_evals_per_s: 100000");
    println!("accel_model_meets_goal: {}", per_s >= 100_000.0);
    println!(
        "sweep_points_per_s_rayon_{}_threads: {:.0} ({} points incl. planning and fit checks)",
        rayon::current_num_threads(),
        pts.len() as f64 / sweep_secs,
        pts.len()
    );
    println!("peer: none (no analytical accelerator model among the peers in shared/bench)");
    tracing::debug!("checksum {checksum}");
    Ok(ExitCode::SUCCESS)
}
