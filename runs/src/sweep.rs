//! Sweeps that outgrow one machine: a grid (algos x envs x precisions x seeds) expanded
//! into independent trials with stable ids, deterministic shards, a Slurm array script,
//! and `collect`, which merges trial results from any number of directories into the same
//! tables and plots a one-process run writes.
//!
//! Layout of a sweep output directory:
//! ```text
//! <out>/sweep.json            the expanded grid (every process writes the same file)
//! <out>/trials/<id>/          one training run per trial (the `fixar train` layout)
//! <out>/trials/<id>/trial.json  written last, atomically: the trial is finished
//! <out>/results.csv, results.md, curves_<algo>_<env>.png/.svg   written by collect
//! ```
//! A trial's id is derived from its parameters only (`td3-Pendulum-v1-fxp32-s0`), so the
//! same grid gives the same ids in every process and on every machine; shard `i/n` takes
//! the trials whose position in the id-sorted grid is `i` modulo `n`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use agents::layout;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::failure::config_error;
use crate::plot;
use crate::report::{heading, Table};

/// A sweep file (`SWEEP.toml`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Name of the sweep, used in titles and the default output directory.
    pub name: String,
    /// The training config every trial starts from (relative to the sweep file).
    pub base: PathBuf,
    pub algos: Vec<String>,
    pub envs: Vec<String>,
    pub precisions: Vec<String>,
    pub seeds: Vec<u64>,
    /// `key = value` overrides applied to every trial (as `fixar train --set`).
    #[serde(default)]
    pub set: BTreeMap<String, toml::Value>,
    /// Output directory (relative to the working directory); default `runs-out/sweeps/<name>`.
    #[serde(default)]
    pub out: Option<PathBuf>,
}

/// One point of the grid.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Trial {
    pub id: String,
    pub algo: String,
    pub env: String,
    pub precision: String,
    pub seed: u64,
}

/// What a finished trial reports (`trial.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrialResult {
    pub trial: Trial,
    pub final_eval_return: f64,
    pub env_steps: u64,
    /// (env step, eval return) at each evaluation.
    pub eval_curve: Vec<(u64, f64)>,
    /// Wall time of the trial; kept out of results.csv so results compare across machines.
    pub wall_s: f64,
}

/// Which slice of the grid a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| config_error(format!("--shard `{s}`: expected i/n, e.g. 0/4")))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| config_error(format!("--shard `{s}`: `{i}` is not a shard index")))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| config_error(format!("--shard `{s}`: `{n}` is not a shard count")))?;
        if count == 0 || index >= count {
            return Err(config_error(format!(
                "--shard `{s}`: the index must be below the count (0/{count} .. {}/{count})",
                count.saturating_sub(1)
            )));
        }
        Ok(Shard { index, count })
    }
}

impl SweepSpec {
    /// Reads and checks a sweep file; errors name the file and the key.
    pub fn load(path: &Path) -> Result<(Self, PathBuf)> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| config_error(format!("cannot read sweep file {}: {e}", path.display())))?;
        let spec: SweepSpec = toml::from_str(&text)
            .map_err(|e| config_error(format!("sweep file {}: {e}", path.display())))?;
        for (key, list) in [
            ("algos", &spec.algos),
            ("envs", &spec.envs),
            ("precisions", &spec.precisions),
        ] {
            if list.is_empty() {
                return Err(config_error(format!(
                    "sweep file {}: key `{key}` is empty",
                    path.display()
                )));
            }
            let unique: BTreeSet<_> = list.iter().collect();
            if unique.len() != list.len() {
                return Err(config_error(format!(
                    "sweep file {}: key `{key}` lists a value twice",
                    path.display()
                )));
            }
        }
        if spec.seeds.is_empty() {
            return Err(config_error(format!(
                "sweep file {}: key `seeds` is empty",
                path.display()
            )));
        }
        if spec.seeds.iter().collect::<BTreeSet<_>>().len() != spec.seeds.len() {
            return Err(config_error(format!(
                "sweep file {}: key `seeds` lists a seed twice",
                path.display()
            )));
        }
        let base = path.parent().unwrap_or(Path::new(".")).join(&spec.base);
        if !base.is_file() {
            return Err(config_error(format!(
                "sweep file {}: key `base`: training config {} not found",
                path.display(),
                base.display()
            )));
        }
        Ok((spec, base))
    }

    pub fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs-out/sweeps").join(&self.name))
    }

    /// Every trial of the grid, sorted by id.
    pub fn expand(&self) -> Vec<Trial> {
        let mut trials = Vec::new();
        for algo in &self.algos {
            for env in &self.envs {
                for precision in &self.precisions {
                    for &seed in &self.seeds {
                        trials.push(Trial {
                            id: format!("{algo}-{env}-{precision}-s{seed}"),
                            algo: algo.clone(),
                            env: env.clone(),
                            precision: precision.clone(),
                            seed,
                        });
                    }
                }
            }
        }
        trials.sort();
        trials
    }
}

/// The trials of one shard: positions `index`, `index + count`, ... of the sorted grid.
pub fn shard(trials: &[Trial], s: Shard) -> Vec<Trial> {
    trials
        .iter()
        .skip(s.index)
        .step_by(s.count)
        .cloned()
        .collect()
}

/// A Slurm array-job script that runs every shard of the sweep, one array task each.
pub fn slurm_script(spec_path: &Path, spec: &SweepSpec, shards: usize) -> String {
    let out = spec.out_dir();
    format!(
        "#!/bin/bash\n# Slurm array job for sweep `{name}`: {shards} shards, one per array task.\n# Submit from the fixar checkout: sbatch {script}\n#SBATCH --job-name=fixar-{name}\n#SBATCH --array=0-{last}\n#SBATCH --cpus-per-task=2\n#SBATCH --output={out}/slurm-%A_%a.log\nset -euo pipefail\ntarget/release/fixar sweep --config {cfg} --shard \"$SLURM_ARRAY_TASK_ID/{shards}\"\n# When every task is done: target/release/fixar collect {out}\n",
        name = spec.name,
        script = out.join("sweep.slurm").display(),
        last = shards.saturating_sub(1),
        out = out.display(),
        cfg = spec_path.display(),
    )
}

/// The expanded grid as written to `sweep.json`, so `collect` knows what to expect.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GridRecord {
    pub name: String,
    pub trials: Vec<Trial>,
}

/// Writes `sweep.json` (identical in every process of the same sweep).
pub fn write_grid(out: &Path, spec: &SweepSpec) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let rec = GridRecord {
        name: spec.name.clone(),
        trials: spec.expand(),
    };
    write_json_atomic(&out.join(layout::SWEEP), &rec)
}

pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
}

/// Directory of a trial inside a sweep output directory.
pub fn trial_dir(out: &Path, trial: &Trial) -> PathBuf {
    out.join("trials").join(&trial.id)
}

/// Trials found by `collect`, and what is wrong with the set.
#[derive(Debug, Default)]
pub struct Collected {
    pub grid: Option<GridRecord>,
    pub results: Vec<TrialResult>,
    pub missing: Vec<String>,
    pub partial: Vec<String>,
    pub duplicated: Vec<String>,
}

impl Collected {
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.partial.is_empty() && self.duplicated.is_empty()
    }
}

/// Reads `sweep.json` and every `trials/*/trial.json` under each directory.
pub fn collect(dirs: &[PathBuf]) -> Result<Collected> {
    let mut c = Collected::default();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut partial = BTreeSet::new();
    for dir in dirs {
        let grid_path = dir.join(layout::SWEEP);
        let text = std::fs::read_to_string(&grid_path).map_err(|e| {
            config_error(format!(
                "{}: not a sweep output directory ({}: {e})",
                dir.display(),
                grid_path.display()
            ))
        })?;
        let grid: GridRecord = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", grid_path.display()))?;
        match &c.grid {
            None => c.grid = Some(grid),
            Some(g) if *g == grid => {}
            Some(g) => {
                return Err(config_error(format!(
                    "{} holds sweep `{}` with a different grid than sweep `{}` collected so far",
                    dir.display(),
                    grid.name,
                    g.name
                )))
            }
        }
        let trials_dir = dir.join("trials");
        let Ok(entries) = std::fs::read_dir(&trials_dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        entries.sort();
        for path in entries.into_iter().filter(|p| p.is_dir()) {
            let id = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let file = path.join(layout::TRIAL);
            if !file.is_file() {
                partial.insert(id);
                continue;
            }
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let r: TrialResult = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", file.display()))?;
            *seen.entry(r.trial.id.clone()).or_default() += 1;
            if seen[&r.trial.id] == 1 {
                c.results.push(r);
            }
        }
    }
    let grid = c.grid.as_ref().expect("at least one directory");
    let done: BTreeSet<String> = c.results.iter().map(|r| r.trial.id.clone()).collect();
    c.duplicated = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id)
        .collect();
    // A trial finished in one directory and left partial in another is not missing.
    c.partial = partial
        .into_iter()
        .filter(|id| !done.contains(id))
        .collect();
    c.missing = grid
        .trials
        .iter()
        .filter(|t| !done.contains(&t.id) && !c.partial.contains(&t.id))
        .map(|t| t.id.clone())
        .collect();
    c.results.sort_by(|a, b| a.trial.cmp(&b.trial));
    Ok(c)
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Writes results.csv (one row per trial), results.md (mean ± std per algo/env/precision)
/// and one learning-curve plot per algo x env (mean over seeds, min-max band).
pub fn write_tables(out: &Path, name: &str, results: &[TrialResult]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    let mut csv = String::from("id,algo,env,precision,seed,final_eval_return,env_steps\n");
    for r in results {
        let t = &r.trial;
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{:.6},{}",
            t.id, t.algo, t.env, t.precision, t.seed, r.final_eval_return, r.env_steps
        );
    }
    let p = out.join(layout::SWEEP_RESULTS_CSV);
    std::fs::write(&p, csv)?;
    written.push(p);

    let mut groups: BTreeMap<(String, String, String), Vec<&TrialResult>> = BTreeMap::new();
    for r in results {
        groups
            .entry((
                r.trial.algo.clone(),
                r.trial.env.clone(),
                r.trial.precision.clone(),
            ))
            .or_default()
            .push(r);
    }
    let mut table = Table::new(&[
        "algo",
        "env",
        "precision",
        "seeds",
        "final eval return (mean ± std)",
    ]);
    for ((algo, env, precision), rs) in &groups {
        let (m, s) = mean_std(&rs.iter().map(|r| r.final_eval_return).collect::<Vec<_>>());
        table.row(vec![
            algo.clone(),
            env.clone(),
            precision.clone(),
            rs.len().to_string(),
            format!("{m:.1} ± {s:.1}"),
        ]);
    }
    let md = format!(
        "{}\nFinal eval return: mean over the evaluation episodes at the last evaluation of each seed; across seeds mean ± sample std.\n\n{}",
        heading(1, &format!("Sweep `{name}`")),
        table.to_markdown()
    );
    let p = out.join(layout::SWEEP_RESULTS_MD);
    std::fs::write(&p, md)?;
    written.push(p);

    let mut by_task: BTreeMap<(String, String), Vec<plot::Series>> = BTreeMap::new();
    for ((algo, env, precision), rs) in &groups {
        let mut steps: BTreeSet<u64> = BTreeSet::new();
        for r in rs {
            steps.extend(r.eval_curve.iter().map(|p| p.0));
        }
        let mut series = plot::Series {
            label: precision.clone(),
            ..Default::default()
        };
        for s in steps {
            let vals: Vec<f64> = rs
                .iter()
                .filter_map(|r| r.eval_curve.iter().find(|p| p.0 == s).map(|p| p.1))
                .collect();
            if vals.len() != rs.len() {
                continue;
            }
            let (m, _) = mean_std(&vals);
            let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            series.points.push((s as f64, m));
            series.band.push((s as f64, lo, hi));
        }
        by_task
            .entry((algo.clone(), env.clone()))
            .or_default()
            .push(series);
    }
    for ((algo, env), series) in by_task {
        let seeds = groups
            .iter()
            .filter(|((a, e, _), _)| *a == algo && *e == env)
            .map(|(_, rs)| rs.len())
            .max()
            .unwrap_or(0);
        let stem = out.join(format!("curves_{algo}_{env}"));
        plot::line_chart(
            &plot::LineChart {
                title: format!(
                    "{} {env}: eval return, mean over {seeds} seed(s) (band: min-max)",
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

/// Prints what `collect` found wrong; fails unless partial results are allowed.
pub fn check_complete(c: &Collected, allow_partial: bool) -> Result<()> {
    let mut msg = String::new();
    for (what, ids) in [
        ("missing", &c.missing),
        ("partial (started, no trial.json)", &c.partial),
        ("duplicated", &c.duplicated),
    ] {
        if !ids.is_empty() {
            let _ = writeln!(msg, "{} {what} trial(s): {}", ids.len(), ids.join(", "));
        }
    }
    if msg.is_empty() {
        return Ok(());
    }
    if allow_partial {
        tracing::warn!("collecting anyway (--allow-partial):\n{msg}");
        eprint!("{msg}");
        Ok(())
    } else {
        bail!("{msg}the sweep is incomplete; rerun the missing shards or pass --allow-partial")
    }
}

/// The training config of one trial: the base config, the sweep's `set` overrides, then
/// the trial's algo, env and precision. Errors name the sweep file and the key.
pub fn trial_config(
    spec_path: &Path,
    base_path: &Path,
    spec: &SweepSpec,
    trial: &Trial,
) -> Result<agents::config::TrainConfig> {
    let text = std::fs::read_to_string(base_path)
        .map_err(|e| config_error(format!("cannot read {}: {e}", base_path.display())))?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| config_error(format!("{}: {e}", base_path.display())))?;
    for (k, v) in &spec.set {
        table.insert(k.clone(), v.clone());
    }
    table.insert("algo".into(), toml::Value::String(trial.algo.clone()));
    table.insert("env_id".into(), toml::Value::String(trial.env.clone()));
    table.insert(
        "precision".into(),
        toml::Value::String(trial.precision.clone()),
    );
    let cfg: agents::config::TrainConfig = table.try_into().map_err(|e: toml::de::Error| {
        config_error(format!(
            "sweep {} (base {}), trial {}: {e}",
            spec_path.display(),
            base_path.display(),
            trial.id
        ))
    })?;
    cfg.validate().map_err(|e| {
        config_error(format!(
            "sweep {}, trial {}: {e}",
            spec_path.display(),
            trial.id
        ))
    })?;
    Ok(cfg)
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
    let res = crate::train::train_run(&cfg, trial.seed, dir, &mut |_| {})
        .with_context(|| format!("trial {}", trial.id))?;
    let result = TrialResult {
        trial: trial.clone(),
        final_eval_return: res.final_eval_return,
        env_steps: res.steps,
        eval_curve: res.eval_curve.iter().map(|e| (e.step, e.mean)).collect(),
        wall_s: res.wall_time_s,
    };
    write_json_atomic(&dir.join(layout::TRIAL), &result)?;
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
    /// Number of shards for `--emit slurm`.
    #[arg(long, default_value_t = 4)]
    pub shards: usize,
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
    let (mut spec, base) = SweepSpec::load(&args.config)?;
    if let Some(out) = &args.out {
        spec.out = Some(out.clone());
    }
    let out = spec.out_dir();
    let trials = spec.expand();
    // Configs are checked up front: a bad key fails before anything is created.
    let configs = trials
        .iter()
        .map(|t| trial_config(&args.config, &base, &spec, t))
        .collect::<Result<Vec<_>>>()?;
    if let Some(kind) = &args.emit {
        debug_assert_eq!(kind, "slurm");
        if args.shards == 0 {
            return Err(config_error("--shards must be at least 1"));
        }
        std::fs::create_dir_all(&out)?;
        let path = out.join("sweep.slurm");
        std::fs::write(&path, slurm_script(&args.config, &spec, args.shards))?;
        println!(
            "wrote {} ({} trials in {} shards)",
            path.display(),
            trials.len(),
            args.shards
        );
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let mine = match args.shard {
        Some(s) => shard(&trials, s),
        None => trials.clone(),
    };
    write_grid(&out, &spec)?;
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
    if args.shard.is_none() {
        let c = collect(std::slice::from_ref(&out))?;
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
    let c = collect(&args.dirs)?;
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

    fn spec() -> SweepSpec {
        SweepSpec {
            name: "t".into(),
            base: "base.toml".into(),
            algos: vec!["td3".into(), "ddpg".into()],
            envs: vec!["Pendulum-v1".into()],
            precisions: vec!["float32".into(), "fxp32".into()],
            seeds: vec![0, 1, 2],
            set: BTreeMap::new(),
            out: None,
        }
    }

    #[test]
    fn grid_ids_are_stable_unique_and_sorted() {
        let trials = spec().expand();
        assert_eq!(trials.len(), 12);
        let ids: BTreeSet<_> = trials.iter().map(|t| t.id.clone()).collect();
        assert_eq!(ids.len(), 12);
        assert!(ids.contains("td3-Pendulum-v1-fxp32-s2"));
        let mut reordered = spec();
        reordered.algos.reverse();
        reordered.seeds.reverse();
        assert_eq!(
            reordered.expand(),
            trials,
            "ids and order do not depend on listing order"
        );
    }

    #[test]
    fn shards_partition_the_grid() {
        let trials = spec().expand();
        for n in 1..=5 {
            let mut all: Vec<Trial> = (0..n)
                .flat_map(|i| shard(&trials, Shard { index: i, count: n }))
                .collect();
            all.sort();
            assert_eq!(all, trials, "{n} shards");
        }
    }

    #[test]
    fn shard_spec_parses_and_rejects_bad_values() {
        assert_eq!(
            "1/4".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 4 }
        );
        for bad in ["4/4", "1", "a/2", "0/0"] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert_eq!(crate::failure::exit_code(&e), 2, "{bad}");
        }
    }

    #[test]
    fn slurm_script_runs_every_shard_as_an_array_task() {
        let s = slurm_script(Path::new("sweep.toml"), &spec(), 4);
        assert!(s.contains("#SBATCH --array=0-3"));
        assert!(s.contains("--shard \"$SLURM_ARRAY_TASK_ID/4\""));
    }

    #[test]
    fn collect_reports_missing_partial_and_duplicated_trials() {
        let root = std::env::temp_dir().join(format!("fixar-collect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (a, b) = (root.join("a"), root.join("b"));
        let sp = spec();
        write_grid(&a, &sp).unwrap();
        write_grid(&b, &sp).unwrap();
        let trials = sp.expand();
        let finish = |dir: &Path, t: &Trial| {
            let d = trial_dir(dir, t);
            std::fs::create_dir_all(&d).unwrap();
            let r = TrialResult {
                trial: t.clone(),
                final_eval_return: -150.0,
                env_steps: 100,
                eval_curve: vec![(100, -150.0)],
                wall_s: 1.0,
            };
            write_json_atomic(&d.join("trial.json"), &r).unwrap();
        };
        for t in &trials[..10] {
            finish(&a, t);
        }
        finish(&b, &trials[0]);
        std::fs::create_dir_all(trial_dir(&b, &trials[10])).unwrap();
        let c = collect(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(c.results.len(), 10);
        assert_eq!(c.duplicated, vec![trials[0].id.clone()]);
        assert_eq!(c.partial, vec![trials[10].id.clone()]);
        assert_eq!(c.missing, vec![trials[11].id.clone()]);
        assert!(check_complete(&c, false).is_err());
        assert!(check_complete(&c, true).is_ok());
        let _ = std::fs::remove_dir_all(&root);
    }
}
