//! `fixar train`: trains DDPG/TD3 from a TOML config for one or more seeds in parallel
//! (rayon, one libtorch thread per worker), with progress bars, a run directory (see
//! [`crate::rundir`]), a learning-curve plot and `summary.json`.
//!
//! The library entry for sweeps and pipelines is [`train_run`] (one seed, no CLI) and
//! [`train_seeds`] (several seeds, summary and plot, no argument parsing).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use agents::config::TrainConfig;
pub use agents::trainer::{AcrossSeeds, Summary};
use agents::trainer::{Progress, SeedResult, Trainer};
use anyhow::{anyhow, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::failure::config_error;
use crate::plot::{line_chart, LineChart, Series};
use crate::rundir::{self, RunInfo};

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// The TOML config (examples in runs/configs/). Not with --resume.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. --set precision=fxp32 --set formats.weight=ap_fixed<16,3>.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Seeds: `0..5` (0 to 4), `0,3,7` or `2`.
    #[arg(long, default_value = "0")]
    pub seeds: String,
    /// The run directory (default: runs-out/<config stem>-<precision>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory (unfinished seeds resume from their checkpoints).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Replace a run already in --out.
    #[arg(long)]
    pub force: bool,
    /// Start every seed from the checkpoint of the same seed in this run directory, with
    /// a config that may differ from that run's only in [schedule] and total_timesteps
    /// (e.g. FIXAR's schedule from the FXP32 run before the delay). The branch equals
    /// the run from step 0, bit for bit.
    #[arg(long, value_name = "RUN_DIR")]
    pub branch_from: Option<PathBuf>,
    /// Seeds trained at once (default: min(seeds, CPUs)); each uses one libtorch thread.
    #[arg(long)]
    pub jobs: Option<usize>,
}

/// Keeps freed heap memory in the process instead of returning it to the kernel.
/// Training allocates and frees the same tensor sizes (hundreds of KB) thousands of
/// times per second; by default glibc serves each from a fresh mmap or trims the heap,
/// and the page faults that follow cost about a fifth of an fxp32 update (measured
/// with `fixar bench td3`). Process-wide; the train and bench commands call it.
pub fn keep_freed_memory() {
    // SAFETY: mallopt only adjusts glibc's allocator parameters; called before the
    // workers start allocating.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// An `env_id` that neither a native port nor Python Gymnasium knows is a config error
/// naming the key, found before the run directory is created.
fn check_env_id(config: &Path, id: &str) -> Result<()> {
    match envs::make(id) {
        Err(e @ envs::EnvError::UnknownId { .. }) => Err(config_error(format!(
            "config {}: key `env_id`: {e}",
            config.display()
        ))),
        _ => Ok(()),
    }
}

/// `0..5`, `0,3,7` or `2`; a bad list is a usage error naming `--seeds`.
pub fn parse_seeds(s: &str) -> Result<Vec<u64>> {
    agents::trainer::parse_seeds(s).map_err(|e| config_error(format!("--seeds {e}")))
}

/// Trains one seed in `seed_dir`: resumes from its checkpoint when there is one (a
/// finished seed returns its stored result at once), else starts fresh.
pub fn train_run(
    cfg: &TrainConfig,
    seed: u64,
    seed_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<SeedResult> {
    train_run_until(cfg, seed, seed_dir, progress, None)
}

/// [`train_run`] that stops at the next episode boundary with a checkpoint once `stop`
/// is set (a preemption signal); the error then says where it stopped.
pub fn train_run_until(
    cfg: &TrainConfig,
    seed: u64,
    seed_dir: &Path,
    progress: &mut dyn FnMut(Progress),
    stop: Option<&'static std::sync::atomic::AtomicBool>,
) -> Result<SeedResult> {
    let mut t = if seed_dir.join(agents::layout::CHECKPOINT).is_file() {
        Trainer::resume_expecting(seed_dir, Some(cfg))
            .map_err(|e| anyhow!("seed {seed}: resuming {}: {e}", seed_dir.display()))?
    } else {
        Trainer::new(cfg.clone(), seed, seed_dir).map_err(|e| anyhow!("seed {seed}: {e}"))?
    };
    if t.is_finished() {
        return Ok(t.result());
    }
    if let Some(flag) = stop {
        t.stop_when(flag);
    }
    t.run(None, progress)
        .map_err(|e| anyhow!("seed {seed}: {e}"))?
        .ok_or_else(|| {
            anyhow!(
                "seed {seed}: stopped on request at env step {} (checkpoint written; rerun to resume)",
                t.step()
            )
        })
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>8} [{bar:28}] {pos}/{len} steps {per_sec} eval {msg} ETA {eta}",
    )
    .expect("valid template")
    .progress_chars("=> ")
}

/// Trains `seeds` of `cfg` in the run directory `dir` (which must exist), `jobs` at a
/// time, then writes the learning curve and `summary.json`. A failed seed does not stop
/// the others; the first failure is returned after all have ended (no summary then).
/// Once [`crate::stop::STOP`] is set (`fixar train` installs the signal handler),
/// running seeds checkpoint at their next episode boundary and stop, and seeds not yet
/// started do not start.
pub fn train_seeds(
    cfg: &TrainConfig,
    seeds: &[u64],
    dir: &Path,
    jobs: usize,
    show_progress: bool,
) -> Result<Summary> {
    tch::set_num_threads(1);
    keep_freed_memory();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()
        .context("starting the seed workers")?;
    let mp = MultiProgress::new();
    if !show_progress {
        mp.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let bars: Vec<ProgressBar> = seeds
        .iter()
        .map(|s| {
            let b = mp.add(ProgressBar::new(cfg.total_timesteps));
            b.set_style(bar_style());
            b.set_prefix(format!("seed {s}"));
            b.set_message("-");
            b.enable_steady_tick(Duration::from_millis(500));
            b
        })
        .collect();
    let results: Vec<Result<SeedResult>> = pool.install(|| {
        seeds
            .par_iter()
            .zip(&bars)
            .map(|(&seed, bar)| {
                tch::set_num_threads(1);
                if crate::stop::requested().is_some() {
                    bar.abandon_with_message("not started");
                    return Err(anyhow!("seed {seed}: not started (stopped on request)"));
                }
                let r = train_run_until(
                    cfg,
                    seed,
                    &rundir::seed_dir(dir, seed),
                    &mut |p: Progress| {
                        bar.set_position(p.step);
                        if let Some(e) = p.last_eval {
                            bar.set_message(format!("{e:.1}"));
                        }
                    },
                    Some(&crate::stop::STOP),
                );
                match &r {
                    Ok(res) => {
                        bar.finish_with_message(format!("{:.1} (final)", res.final_eval_return))
                    }
                    Err(_) if crate::stop::requested().is_some() => {
                        bar.abandon_with_message("stopped (checkpoint written)")
                    }
                    Err(_) => bar.abandon_with_message("failed"),
                }
                r
            })
            .collect()
    });
    let failures: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    let ok: Vec<SeedResult> = results.into_iter().filter_map(Result::ok).collect();
    plot_curve(cfg, &ok, dir)?;
    if !failures.is_empty() {
        return Err(anyhow!("{}", failures.join("\n")));
    }
    let summary = Summary::of(cfg, ok, jobs);
    let path = dir.join(rundir::SUMMARY);
    agents::layout::write_atomic(&path, serde_json::to_string_pretty(&summary)?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(summary)
}

/// Eval return against env steps: per eval step the IQM over seeds with its 95%
/// stratified-bootstrap interval as the band (rliable's statistic, `agents::stats`)
/// (PNG + SVG).
fn plot_curve(cfg: &TrainConfig, results: &[SeedResult], dir: &Path) -> Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    let steps: Vec<u64> = results[0].eval_curve.iter().map(|e| e.step).collect();
    let samples = steps.iter().enumerate().filter_map(|(i, &s)| {
        let ys: Vec<f64> = results
            .iter()
            .filter_map(|r| r.eval_curve.get(i).filter(|e| e.step == s).map(|e| e.mean))
            .collect();
        (ys.len() == results.len()).then_some((s as f64, ys))
    });
    let algo = format!("{:?}", cfg.algo).to_uppercase();
    let chart = LineChart {
        title: format!(
            "{algo} on {} ({}), {} seeds",
            cfg.env_id,
            cfg.precision,
            results.len()
        ),
        x_label: "environment steps".into(),
        y_label: format!("eval return (mean of {} episodes)", cfg.eval_episodes),
        series: vec![Series::iqm_ci(
            format!(
                "{algo} {}: IQM over seeds, band = 95% bootstrap CI",
                cfg.precision
            ),
            samples,
        )],
        ..Default::default()
    };
    line_chart(&chart, &dir.join(rundir::CURVE))
}

fn default_out(config: &Path, cfg: &TrainConfig) -> PathBuf {
    let stem = config
        .file_stem()
        .map_or("run".into(), |s| s.to_string_lossy().into_owned());
    PathBuf::from("runs-out").join(format!("{stem}-{}", cfg.precision))
}

/// Checks that every seed of `seeds` can branch from its seed directory in `src`
/// (`Trainer::branch_point`); a refusal is a usage error naming the seed.
fn check_branches(src: &Path, cfg: &TrainConfig, seeds: &[u64]) -> Result<()> {
    let info = std::fs::read_to_string(src.join(rundir::RUN_INFO))
        .ok()
        .and_then(|t| serde_json::from_str::<RunInfo>(&t).ok());
    if let Some(info) = info {
        rundir::warn_if_other_cpu("--branch-from", src, &info);
    }
    for &seed in seeds {
        let from = rundir::seed_dir(src, seed);
        let step = Trainer::branch_point(&from, cfg).map_err(|e| {
            config_error(format!("--branch-from {}: seed {seed}: {e}", src.display()))
        })?;
        tracing::info!(
            "seed {seed}: branches from {} at step {step}",
            from.display()
        );
    }
    Ok(())
}

/// Branches each seed of `seeds` that has no checkpoint in `dir` yet from its seed
/// directory in `src` (all of them for a new run, the rest when a run killed while
/// branching resumes).
fn branch_seeds(
    src: &Path,
    cfg: &TrainConfig,
    seeds: &[u64],
    dir: &Path,
    fresh: bool,
) -> Result<()> {
    if !fresh {
        let missing: Vec<u64> = seeds
            .iter()
            .copied()
            .filter(|&s| {
                !rundir::seed_dir(dir, s)
                    .join(agents::layout::CHECKPOINT)
                    .is_file()
            })
            .collect();
        return match missing.is_empty() {
            true => Ok(()),
            false => branch_seeds(src, cfg, &missing, dir, true),
        };
    }
    check_branches(src, cfg, seeds)?;
    for &seed in seeds {
        Trainer::branch(
            &rundir::seed_dir(src, seed),
            cfg.clone(),
            &rundir::seed_dir(dir, seed),
        )
        .map_err(|e| anyhow!("seed {seed}: branching from {}: {e}", src.display()))?;
    }
    Ok(())
}

/// The `fixar train` command.
pub fn run(args: &TrainArgs) -> Result<ExitCode> {
    let (cfg, seeds, dir) = if let Some(dir) = &args.resume {
        if args.config.is_some()
            || !args.sets.is_empty()
            || args.force
            || args.branch_from.is_some()
        {
            return Err(config_error(
                "--resume continues a run with its own config: drop --config, --set, --force \
                 and --branch-from",
            ));
        }
        let (text, info) = rundir::open(dir)?;
        let cfg: TrainConfig = toml::from_str(&text).map_err(|e| {
            config_error(format!(
                "--resume {}: {}: {}",
                dir.display(),
                rundir::CONFIG,
                e.message()
            ))
        })?;
        // A branched run killed before every seed had branched: branch the rest now.
        if let Some(src) = &info.branched_from {
            branch_seeds(Path::new(src), &cfg, &info.seeds, dir, false)?;
        }
        (cfg, info.seeds, dir.clone())
    } else {
        let path = args
            .config
            .as_deref()
            .ok_or_else(|| config_error("fixar train needs --config FILE (or --resume DIR)"))?;
        let (cfg, resolved) =
            agents::config::load(Some(path), &args.sets).map_err(crate::failure::usage)?;
        let seeds = parse_seeds(&args.seeds)?;
        let dir = args.out.clone().unwrap_or_else(|| default_out(path, &cfg));
        rundir::check_fresh(&dir, args.force)?;
        check_env_id(path, &cfg.env_id)?;
        if let Some(src) = &args.branch_from {
            // Every seed's branch is checked before anything is created.
            check_branches(src, &cfg, &seeds)?;
        }
        if args.force {
            rundir::clear_run(&dir)?;
        }
        let mut info = RunInfo {
            seeds: seeds.clone(),
            config_source: Some(path.display().to_string()),
            sets: args.sets.clone(),
            config_crc32: None,
            cpu: None,
            branched_from: args.branch_from.as_ref().map(|p| p.display().to_string()),
        };
        rundir::create(&dir, &resolved, &mut info)?;
        if let Some(src) = &args.branch_from {
            branch_seeds(src, &cfg, &seeds, &dir, true)?;
        }
        (cfg, seeds, dir)
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = args.jobs.unwrap_or(seeds.len().min(cpus));
    tracing::info!(
        "training {} seeds of {:?} on {} ({}) in {}, {jobs} at a time, 1 libtorch thread each",
        seeds.len(),
        cfg.algo,
        cfg.env_id,
        cfg.precision,
        dir.display()
    );
    crate::stop::on_signals();
    let summary = match train_seeds(&cfg, &seeds, &dir, jobs, true) {
        Ok(s) => s,
        Err(e) => match crate::stop::requested() {
            // Every seed wrote a checkpoint where it stopped (or had finished).
            Some(sig) => {
                eprintln!("{}", crate::failure::describe(&e));
                eprintln!(
                    "stopped by signal {sig}; continue with: fixar train --resume {}",
                    dir.display()
                );
                return Ok(ExitCode::from((128 + sig) as u8));
            }
            None => return Err(e),
        },
    };
    for s in &summary.seeds {
        println!(
            "seed_{}: final_eval_return {:.1} (std {:.1} over {} episodes), steps {}, updates {}, wall {:.1} s, updates_per_s {:.1}",
            s.seed, s.final_eval_return, s.final_eval_std, cfg.eval_episodes, s.steps, s.updates, s.wall_time_s, s.updates_per_s
        );
        if !s.gemm.is_empty() && s.gemm != "float" {
            let mismatch = s.fast_gemm_mismatch.map_or(String::new(), |m| {
                format!(
                    " (fast GEMMs: {:.4}% of cast outputs differ from the exact GEMM's)",
                    m * 100.0
                )
            });
            println!(
                "seed_{}: gemm {}{mismatch}; evaluation arithmetic: {}",
                s.seed, s.gemm, s.eval_arithmetic
            );
        }
    }
    let f = summary.final_eval_return;
    println!("final_eval_return_mean: {:.1}", f.mean);
    println!("final_eval_return_std: {:.1}", f.std);
    if let Some(e) = summary.final_eval_return_iqm {
        println!(
            "final_eval_return_iqm: {:.1} (95% CI {:.1} to {:.1})",
            e.estimate, e.ci_low, e.ci_high
        );
    }
    println!("seeds: {}", f.n);
    println!("run_dir: {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_as_ranges_and_lists_and_reject_nonsense() {
        assert_eq!(parse_seeds("0..5").unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(parse_seeds("3, 7").unwrap(), vec![3, 7]);
        assert_eq!(parse_seeds("2").unwrap(), vec![2]);
        for bad in ["5..5", "a", "1,1", ""] {
            assert_eq!(
                crate::failure::exit_code(&parse_seeds(bad).unwrap_err()),
                2,
                "{bad}"
            );
        }
    }
}
