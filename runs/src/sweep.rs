//! `fixar sweep` and `fixar collect`: flags, the Slurm script, running trials through
//! `fixar train`'s own runner, and writing results.csv, results.md and the curves. The
//! grid, its trial ids and shards, each trial's config and merging shard directories
//! are [`agents::sweep`]'s (layout of a sweep directory there).

use std::path::{Path, PathBuf};

use agents::layout;
use agents::sweep::{
    collect, shard, summarize, trial_dir, write_grid, write_json_atomic, Collected, GroupSummary,
    Shard, SweepError, SweepSpec, Trial, TrialResult,
};
use anyhow::{bail, Context, Result};

use crate::failure::config_error;
use crate::plot;
use crate::report::{heading, Table};

/// A sweep library error as a command error: wrong input exits 2.
fn lift(e: SweepError) -> anyhow::Error {
    if e.is_usage() {
        config_error(e.to_string())
    } else {
        e.into()
    }
}

/// A Slurm array-job script that runs every shard of the sweep, one array task each
/// (at most `throttle` at once: `--array=0-N%K`). Each task runs `fixar sweep` without
/// `--shard`, so fixar takes its shard from `SLURM_ARRAY_TASK_ID`. The task is
/// requeueable: Slurm sends the batch shell SIGUSR1 60 s before a time limit or when it
/// preempts (`--signal=B:USR1@60`), the trap passes it to fixar, which checkpoints every
/// trial at its next episode boundary and exits, and the shell requeues the task; the
/// rerun resumes every partial trial from its checkpoint.
pub fn slurm_script(
    spec_path: &Path,
    spec: &SweepSpec,
    shards: usize,
    throttle: Option<usize>,
) -> String {
    let out = spec.out_dir();
    let last = shards.saturating_sub(1);
    let array = match throttle {
        Some(k) => format!("0-{last}%{k}"),
        None => format!("0-{last}"),
    };
    format!(
        r#"#!/bin/bash
# Slurm array job for sweep `{name}`: {shards} shards, one per array task.
# Submit from the fixar checkout: sbatch {script}
#SBATCH --job-name=fixar-{name}
#SBATCH --array={array}
#SBATCH --cpus-per-task=2
#SBATCH --output={out}/slurm-%A_%a.log
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@60
set -uo pipefail
fixar="${{FIXAR:-target/release/fixar}}"
requeue() {{
  echo "task ${{SLURM_ARRAY_TASK_ID}}: SIGUSR1 (preemption or time limit): checkpointing, then requeueing"
  kill -USR1 "$pid" 2>/dev/null
  wait "$pid"
  scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
  exit 0
}}
trap requeue USR1
# No --shard: fixar takes shard $SLURM_ARRAY_TASK_ID of --shards.
"$fixar" sweep --config {cfg} --out {out} --shards {shards} &
pid=$!
wait "$pid"
exit $?
# When every task is done: target/release/fixar collect {out}
"#,
        name = spec.name,
        script = out.join("sweep.slurm").display(),
        out = out.display(),
        cfg = spec_path.display(),
    )
}

/// The shard this process runs: `--shard`, else Slurm's `SLURM_ARRAY_TASK_ID` of
/// `--shards` inside an array task, else the whole grid.
fn own_shard(args: &SweepArgs) -> Result<Option<Shard>> {
    if args.shard.is_some() {
        return Ok(args.shard);
    }
    match std::env::var("SLURM_ARRAY_TASK_ID") {
        Ok(id) => {
            let spec = format!("{}/{}", id.trim(), args.shards);
            spec.parse::<Shard>().map(Some).map_err(|e| {
                config_error(format!(
                    "SLURM_ARRAY_TASK_ID={id} with --shards {}: {e}",
                    args.shards
                ))
            })
        }
        Err(_) => Ok(None),
    }
}

/// Writes results.csv (one row per trial), results.md (mean ± std and the IQM with its
/// 95% bootstrap interval per algo/env/precision) and one learning-curve plot per algo x
/// env (IQM over seeds, the interval as the band).
pub fn write_tables(out: &Path, name: &str, results: &[TrialResult]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    let mut csv = String::from("id,algo,env,precision,seed,final_eval_return,env_steps\n");
    for r in results {
        let t = &r.trial;
        csv += &format!(
            "{},{},{},{},{},{:.6},{}\n",
            t.id, t.algo, t.env, t.precision, t.seed, r.final_eval_return, r.env_steps
        );
    }
    let p = out.join(layout::SWEEP_RESULTS_CSV);
    crate::rundir::write_atomic(&p, csv)?;
    written.push(p);

    let groups = summarize(results);
    let mut table = Table::new(&[
        "algo",
        "env",
        "precision",
        "seeds",
        "final eval return (mean ± std)",
        "IQM [95% CI]",
    ]);
    for g in &groups {
        let finals: Vec<f64> = members(results, g).map(|r| r.final_eval_return).collect();
        table.row(vec![
            g.algo.clone(),
            g.env.clone(),
            g.precision.clone(),
            g.seeds.to_string(),
            format!("{:.1} ± {:.1}", g.mean, g.std),
            agents::stats::iqm_ci(&finals).map_or("–".into(), |e| {
                format!("{:.1} [{:.1}, {:.1}]", e.estimate, e.ci_low, e.ci_high)
            }),
        ]);
    }
    let md = format!(
        "{}\nFinal eval return: mean over the evaluation episodes at the last evaluation of each seed; across seeds mean ± sample std, and the interquartile mean with its 95% stratified-bootstrap interval ({} replicates, rliable's statistics). The plots show the IQM over seeds at every evaluation with that interval as the band.\n\n{}",
        heading(1, &format!("Sweep `{name}`")),
        agents::stats::BOOTSTRAP_REPS,
        table.to_markdown()
    );
    let p = out.join(layout::SWEEP_RESULTS_MD);
    crate::rundir::write_atomic(&p, md)?;
    written.push(p);

    // One plot per algo x env, one series per precision (groups are sorted, so each
    // task's groups are adjacent).
    for task in groups.chunk_by(|a, b| (&a.algo, &a.env) == (&b.algo, &b.env)) {
        let (algo, env) = (&task[0].algo, &task[0].env);
        let seeds = task.iter().map(|g| g.seeds).max().unwrap_or(0);
        let series = task
            .iter()
            .map(|g| {
                let at = |step: u64| -> Vec<f64> {
                    members(results, g)
                        .filter_map(|r| r.eval_curve.iter().find(|e| e.0 == step).map(|e| e.1))
                        .collect()
                };
                let samples = g.curve.iter().map(|p| (p.step as f64, at(p.step)));
                plot::Series::iqm_ci(g.precision.clone(), samples)
            })
            .collect();
        let stem = out.join(format!("curves_{algo}_{env}"));
        plot::line_chart(
            &plot::LineChart {
                title: format!(
                    "{} {env}: eval return, IQM over {seeds} seed(s) (band: 95% bootstrap CI)",
                    algo.to_uppercase()
                ),
                x_label: "environment steps".into(),
                y_label: "eval return (mean over episodes)".into(),
                series,
                ..Default::default()
            },
            &stem,
        )?;
        written.push(stem.with_extension("png"));
    }
    Ok(written)
}

/// The trials of one summary group.
fn members<'a>(
    results: &'a [TrialResult],
    g: &'a GroupSummary,
) -> impl Iterator<Item = &'a TrialResult> {
    results.iter().filter(move |r| {
        let t = &r.trial;
        (&t.algo, &t.env, &t.precision) == (&g.algo, &g.env, &g.precision)
    })
}

/// Prints what `collect` found wrong; fails unless partial results are allowed.
pub fn check_complete(c: &Collected, allow_partial: bool) -> Result<()> {
    let Some(msg) = c.problems() else {
        return Ok(());
    };
    if allow_partial {
        tracing::warn!("collecting anyway (--allow-partial):\n{msg}");
        eprint!("{msg}");
        Ok(())
    } else {
        bail!("{msg}the sweep is incomplete; rerun the missing shards or pass --allow-partial")
    }
}

/// Trains one trial into its directory (resuming a partial one, through `fixar
/// train`'s own [`crate::train::train_run`]) and writes `trial.json`.
pub fn run_trial(
    cfg: agents::config::TrainConfig,
    trial: &Trial,
    dir: &Path,
) -> Result<TrialResult> {
    tch::set_num_threads(1);
    if dir.join(agents::layout::CHECKPOINT).is_file() {
        tracing::info!("{}: resuming from its checkpoint", trial.id);
    }
    let res =
        crate::train::train_run_until(&cfg, trial.seed, dir, &mut |_| {}, Some(&crate::stop::STOP))
            .with_context(|| format!("trial {}", trial.id))?;
    let result = TrialResult {
        trial: trial.clone(),
        final_eval_return: res.final_eval_return,
        env_steps: res.steps,
        eval_curve: res.eval_curve.iter().map(|e| (e.step, e.mean)).collect(),
        wall_s: res.wall_time_s,
    };
    write_json_atomic(&dir.join(layout::TRIAL), &result).map_err(lift)?;
    Ok(result)
}

/// `fixar sweep` arguments.
#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    /// The sweep file (TOML: name, base, algos, envs, precisions, seeds, [set], out).
    #[arg(long)]
    pub config: PathBuf,
    /// Run only slice i of n (0-based), e.g. `--shard 0/4`.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Write a cluster script instead of running: `slurm` (one array task per shard).
    #[arg(long, value_parser = ["slurm"])]
    pub emit: Option<String>,
    /// Number of shards for `--emit slurm`, and of the array inside a Slurm array task
    /// (where the shard index is `SLURM_ARRAY_TASK_ID` when `--shard` is omitted).
    #[arg(long, default_value_t = 4)]
    pub shards: usize,
    /// With `--emit slurm`: at most K array tasks run at once (`--array=0-N%K`).
    #[arg(long)]
    pub throttle: Option<usize>,
    /// Output directory (overrides the sweep file's `out`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `fixar collect` arguments.
#[derive(clap::Args, Debug)]
pub struct CollectArgs {
    /// Sweep output directories (of shards run anywhere, copied together).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Write tables and plots here (default: the first directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Merge what is there even when trials are missing, partial or duplicated.
    #[arg(long)]
    pub allow_partial: bool,
}

/// `fixar sweep`: runs the grid (or one shard of it) trial by trial, seeds in parallel.
pub fn run_sweep(args: &SweepArgs) -> Result<std::process::ExitCode> {
    let (mut spec, base) = SweepSpec::load(&args.config).map_err(lift)?;
    if let Some(out) = &args.out {
        spec.out = Some(out.clone());
    }
    let out = spec.out_dir();
    let trials = spec.expand();
    // Configs are checked up front: a bad key fails before anything is created.
    let configs = trials
        .iter()
        .map(|t| spec.trial_config(&args.config, &base, t).map_err(lift))
        .collect::<Result<Vec<_>>>()?;
    if let Some(kind) = &args.emit {
        debug_assert_eq!(kind, "slurm");
        if args.shards == 0 {
            return Err(config_error("--shards must be at least 1"));
        }
        std::fs::create_dir_all(&out)?;
        let path = out.join("sweep.slurm");
        if args.throttle == Some(0) {
            return Err(config_error("--throttle must be at least 1"));
        }
        std::fs::write(
            &path,
            slurm_script(&args.config, &spec, args.shards, args.throttle),
        )?;
        println!(
            "wrote {} ({} trials in {} shards)",
            path.display(),
            trials.len(),
            args.shards
        );
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let own = own_shard(args)?;
    let mine = match own {
        Some(s) => shard(&trials, s),
        None => trials.clone(),
    };
    crate::stop::on_signals();
    write_grid(&out, &spec).map_err(lift)?;
    let todo: Vec<(Trial, agents::config::TrainConfig)> = mine
        .into_iter()
        .filter(|t| !trial_dir(&out, t).join(layout::TRIAL).is_file())
        .map(|t| {
            let cfg = configs[trials.iter().position(|x| x.id == t.id).expect("own trial")].clone();
            (t, cfg)
        })
        .collect();
    tracing::info!(
        "sweep {}: {} trials to run into {}",
        spec.name,
        todo.len(),
        out.display()
    );
    let bar = indicatif::ProgressBar::new(todo.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} trials {elapsed_precise} ETA {eta} {msg}",
        )
        .expect("template"),
    );
    use rayon::prelude::*;
    let results: Vec<Result<TrialResult>> = todo
        .par_iter()
        .map(|(t, cfg)| {
            let r = run_trial(cfg.clone(), t, &trial_dir(&out, t));
            if let Ok(r) = &r {
                bar.set_message(format!("{}: {:.1}", t.id, r.final_eval_return));
            }
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    if !failed.is_empty() {
        bail!("{} trial(s) failed:\n{}", failed.len(), failed.join("\n"));
    }
    if own.is_none() {
        let c = collect(std::slice::from_ref(&out)).map_err(lift)?;
        check_complete(&c, false)?;
        for p in write_tables(&out, &spec.name, &c.results)? {
            println!("wrote {}", p.display());
        }
    } else {
        println!(
            "shard done: results in {}; merge with `fixar collect`",
            out.display()
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `fixar collect`.
pub fn run_collect(args: &CollectArgs) -> Result<std::process::ExitCode> {
    let c = collect(&args.dirs).map_err(lift)?;
    check_complete(&c, args.allow_partial)?;
    let out = args.out.clone().unwrap_or_else(|| args.dirs[0].clone());
    let name = c.grid.as_ref().map(|g| g.name.clone()).unwrap_or_default();
    for p in write_tables(&out, &name, &c.results)? {
        println!("wrote {}", p.display());
    }
    println!("{} trials collected", c.results.len());
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_script_runs_every_shard_as_an_array_task() {
        let spec: SweepSpec = toml::from_str(
            "name = \"t\"\nbase = \"b.toml\"\nalgos = [\"td3\"]\nenvs = [\"Pendulum-v1\"]\nprecisions = [\"fxp32\"]\nseeds = [0]\n",
        )
        .unwrap();
        let s = slurm_script(Path::new("sweep.toml"), &spec, 4, None);
        assert!(s.contains("#SBATCH --array=0-3\n"));
        assert!(s.contains("--shards 4 &"));
        assert!(!s.contains("--shard "));
        assert!(s.contains("--output=runs-out/sweeps/t/slurm-%A_%a.log"));
        assert!(s.contains("#SBATCH --requeue") && s.contains("#SBATCH --signal=B:USR1@60"));
        assert!(s.contains("trap requeue USR1") && s.contains("scontrol requeue"));
        let s = slurm_script(Path::new("sweep.toml"), &spec, 4, Some(2));
        assert!(s.contains("#SBATCH --array=0-3%2\n"));
    }

    #[test]
    fn usage_errors_of_the_library_exit_2() {
        let e = lift("4/4".parse::<Shard>().unwrap_err());
        assert_eq!(crate::failure::exit_code(&e), 2);
        assert_eq!(
            e.to_string(),
            "--shard `4/4`: the index must be below the count (0/4 .. 3/4)"
        );
    }
}
