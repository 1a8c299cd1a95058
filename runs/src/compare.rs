//! `fixar compare`: several training runs (variants of one experiment, e.g. FIXAR's
//! Figure 7: float32, FXP32, FIXAR's schedule, FXP16 from scratch) side by side, from
//! their run directories' CSVs alone, finished or still under way.
//!
//! Writes `<stem>.png/.svg` (training-episode return against env steps, the form of
//! FIXAR's Figure 7: per seed the mean of the episodes that end in each bin, then the
//! mean over seeds with a min-max band), `<stem>_eval.png/.svg` (the same for the
//! deterministic evaluations), and `<stem>.md` / `<stem>.json`: per run the seeds, the
//! steps reached, the last evaluation per seed, mean and std (ddof 0) over seeds, the
//! ratio to the reference run at the last step both reached (per seed and of the means),
//! for a scheduled run the dip after its delay and the steps until the curve is back at
//! its level before the delay, and the activation saturation rates from `quant.csv`
//! before and after the delay. Every schedule's delay is marked on the plots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agents::config::TrainConfig;
use agents::stats::{mean_std, min_max};
use anyhow::{anyhow, Context, Result};
use serde::Serialize;

use crate::failure::config_error;
use crate::plot::{line_chart, LineChart, Series};
use crate::rundir::{self, RunInfo};

#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// A run to compare, `LABEL=RUN_DIR` (repeat; the first is the reference unless
    /// --reference names another).
    #[arg(long = "run", value_name = "LABEL=RUN_DIR", required = true)]
    pub runs: Vec<String>,
    /// The label of the run the others are divided by.
    #[arg(long)]
    pub reference: Option<String>,
    /// Where the figures and tables go.
    #[arg(long, default_value = "runs-out/compare")]
    pub out: PathBuf,
    /// File stem of the outputs (`<stem>.png`, `<stem>_eval.png`, `<stem>.md`, `<stem>.json`).
    #[arg(long, default_value = "compare")]
    pub stem: String,
    /// Title of the figures (default: algorithm and env of the first run).
    #[arg(long)]
    pub title: Option<String>,
    /// Width of the bins training-episode returns are averaged over, in env steps
    /// (default: the first run's `eval_every`).
    #[arg(long, value_name = "STEPS")]
    pub bin: Option<u64>,
    /// How many evaluations before a schedule's delay set the level its dip and recovery
    /// are measured against.
    #[arg(long, default_value_t = 3)]
    pub pre_evals: usize,
}

/// One seed's curves.
#[derive(Clone, Debug, Default)]
struct SeedData {
    seed: u64,
    /// (step, mean return of the evaluation)
    evals: Vec<(u64, f64)>,
    /// (step at the episode's end, return)
    episodes: Vec<(u64, f64)>,
    /// (step, class, elements, saturated) of `quant.csv`'s rows
    quant: Vec<(u64, String, u64, u64)>,
}

struct RunData {
    label: String,
    dir: PathBuf,
    cfg: TrainConfig,
    seeds: Vec<SeedData>,
}

/// The last evaluation of one seed.
#[derive(Debug, Serialize)]
pub struct SeedFinal {
    pub seed: u64,
    pub step: u64,
    pub eval_return: f64,
}

/// A scheduled run's dip after its delay, measured on the mean-over-seeds eval curve.
#[derive(Debug, Serialize)]
pub struct Dip {
    pub delay: u64,
    /// Mean of the curve over the `pre_evals` evaluations before the delay.
    pub level_before: f64,
    /// The curve's lowest value from the delay until it is back at `level_before`
    /// (or the end), minus `level_before`.
    pub dip: f64,
    pub dip_step: u64,
    /// Env steps from the delay until the curve is at `level_before` again (0 when it
    /// never fell below it); `None`: not back by the last step.
    pub steps_to_recover: Option<u64>,
}

/// A ratio of final eval returns to the reference run's.
#[derive(Debug, Serialize)]
pub struct Ratio {
    /// The last step both runs evaluated at, for the seeds they share.
    pub step: u64,
    pub seeds: Vec<u64>,
    /// Mean over the shared seeds divided by the reference's mean over them.
    pub of_means: f64,
    /// Per shared seed, this run's return over the reference's.
    pub per_seed: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct RunRow {
    pub label: String,
    pub dir: String,
    pub precision: String,
    pub schedule: String,
    pub total_timesteps: u64,
    pub finals: Vec<SeedFinal>,
    /// The last step every seed evaluated at; `mean` and `std` (ddof 0) are over the
    /// seeds' evaluations there.
    pub common_step: u64,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub ratio_to_reference: Option<Ratio>,
    pub dip: Option<Dip>,
    /// Saturated / elements of the `activation` casts in `quant.csv`, before and after
    /// the delay (all rows are "before" for a run without a schedule).
    pub activation_saturation_before: Option<f64>,
    pub activation_saturation_after: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Comparison {
    pub reference: String,
    pub bin_steps: u64,
    pub runs: Vec<RunRow>,
}

fn read_rows(path: &Path) -> Result<Vec<Vec<String>>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.with_context(|| format!("reading {}", path.display()))?;
        rows.push(rec.iter().map(str::to_string).collect());
    }
    Ok(rows)
}

fn num<T: std::str::FromStr>(path: &Path, row: &[String], i: usize) -> Result<T> {
    row.get(i).and_then(|v| v.parse().ok()).ok_or_else(|| {
        anyhow!(
            "{}: row {row:?}: column {i} is not a number",
            path.display()
        )
    })
}

fn load_seed(dir: &Path, seed: u64) -> Result<SeedData> {
    let p = dir.join(agents::layout::EVAL);
    let mut evals = Vec::new();
    for row in read_rows(&p)? {
        evals.push((num(&p, &row, 0)?, num(&p, &row, 1)?));
    }
    let p = dir.join(agents::layout::EPISODES);
    let mut episodes = Vec::new();
    for row in read_rows(&p)? {
        episodes.push((num(&p, &row, 0)?, num(&p, &row, 2)?));
    }
    let p = dir.join(agents::layout::QUANT);
    let mut quant = Vec::new();
    for row in read_rows(&p)? {
        quant.push((
            num(&p, &row, 0)?,
            row[3].clone(),
            num(&p, &row, 5)?,
            num(&p, &row, 6)?,
        ));
    }
    Ok(SeedData {
        seed,
        evals,
        episodes,
        quant,
    })
}

fn load_run(spec: &str) -> Result<RunData> {
    let (label, dir) = spec
        .split_once('=')
        .filter(|(l, d)| !l.is_empty() && !d.is_empty())
        .ok_or_else(|| config_error(format!("--run {spec}: expected LABEL=RUN_DIR")))?;
    let dir = PathBuf::from(dir);
    let cfg_path = dir.join(rundir::CONFIG);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
        config_error(format!(
            "--run {spec}: no run here ({}: {e})",
            cfg_path.display()
        ))
    })?;
    let cfg: TrainConfig = toml::from_str(&text).map_err(|e| {
        config_error(format!(
            "--run {spec}: {}: {}",
            cfg_path.display(),
            e.message()
        ))
    })?;
    let info_path = dir.join(rundir::RUN_INFO);
    let info: RunInfo = serde_json::from_str(
        &std::fs::read_to_string(&info_path)
            .map_err(|e| config_error(format!("--run {spec}: {}: {e}", info_path.display())))?,
    )
    .map_err(|e| config_error(format!("--run {spec}: {}: {e}", info_path.display())))?;
    let mut seeds = Vec::new();
    for &s in &info.seeds {
        let sd = rundir::seed_dir(&dir, s);
        if !sd.join(agents::layout::EVAL).is_file() {
            tracing::warn!(
                "{label}: seed {s} has not started ({} missing)",
                sd.display()
            );
            continue;
        }
        seeds.push(load_seed(&sd, s).with_context(|| format!("run `{label}`"))?);
    }
    if seeds.iter().all(|s| s.evals.is_empty()) {
        return Err(config_error(format!(
            "--run {spec}: no seed has an evaluation yet"
        )));
    }
    Ok(RunData {
        label: label.to_string(),
        dir,
        cfg,
        seeds,
    })
}

/// The mean over seeds with its min-max band at every step any seed has, from per-seed
/// (step, value) points.
fn across_seeds(label: String, per_seed: &[Vec<(u64, f64)>]) -> Series {
    let mut at: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for pts in per_seed {
        for &(s, v) in pts {
            at.entry(s).or_default().push(v);
        }
    }
    let mut points = Vec::new();
    let mut band = Vec::new();
    for (s, vs) in at {
        let (m, _) = mean_std(&vs).expect("at least one value");
        let (lo, hi) = min_max(&vs);
        points.push((s as f64, m));
        band.push((s as f64, lo, hi));
    }
    Series {
        label,
        points,
        band,
        error_bars: vec![],
    }
}

/// One seed's training-episode returns averaged per bin of `bin` steps (the bin's end).
fn binned(episodes: &[(u64, f64)], bin: u64) -> Vec<(u64, f64)> {
    let mut bins: BTreeMap<u64, (f64, u32)> = BTreeMap::new();
    for &(s, r) in episodes {
        let e = bins.entry(s.div_ceil(bin) * bin).or_default();
        e.0 += r;
        e.1 += 1;
    }
    bins.into_iter()
        .map(|(b, (sum, n))| (b, sum / n as f64))
        .collect()
}

fn dip(curve: &[(f64, f64)], delay: u64, pre_evals: usize) -> Option<Dip> {
    let before: Vec<f64> = curve
        .iter()
        .filter(|p| (p.0 as u64) < delay)
        .map(|p| p.1)
        .collect();
    let after: Vec<(u64, f64)> = curve
        .iter()
        .filter(|p| p.0 as u64 >= delay)
        .map(|p| (p.0 as u64, p.1))
        .collect();
    if before.is_empty() || after.is_empty() {
        return None;
    }
    let level = mean_std(&before[before.len().saturating_sub(pre_evals)..])?.0;
    let back = after.iter().position(|p| p.1 >= level);
    let until = back.map_or(after.len(), |i| i.max(1));
    let (dip_step, low) = after[..until]
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("non-empty");
    Some(Dip {
        delay,
        level_before: level,
        dip: (low - level).min(0.0),
        dip_step,
        steps_to_recover: back.map(|i| after[i].0 - delay),
    })
}

fn saturation(seeds: &[SeedData], keep: impl Fn(u64) -> bool) -> Option<f64> {
    let (mut sat, mut el) = (0u64, 0u64);
    for s in seeds {
        for (step, class, e, n) in &s.quant {
            if class == "activation" && keep(*step) {
                el += e;
                sat += n;
            }
        }
    }
    (el > 0).then(|| sat as f64 / el as f64)
}

fn ratio(run: &RunData, reference: &RunData) -> Option<Ratio> {
    let mut pairs = Vec::new();
    for s in &run.seeds {
        if let Some(r) = reference.seeds.iter().find(|r| r.seed == s.seed) {
            pairs.push((s, r));
        }
    }
    // The last step every shared seed of both runs evaluated at.
    let step = pairs
        .iter()
        .flat_map(|(a, b)| [a.evals.last(), b.evals.last()])
        .map(|e| e.map_or(0, |e| e.0))
        .min()?;
    let at = |d: &SeedData| d.evals.iter().find(|e| e.0 == step).map(|e| e.1);
    let (mut ours, mut theirs, mut seeds) = (Vec::new(), Vec::new(), Vec::new());
    for (a, b) in pairs {
        if let (Some(x), Some(y)) = (at(a), at(b)) {
            ours.push(x);
            theirs.push(y);
            seeds.push(a.seed);
        }
    }
    let (ma, _) = mean_std(&ours)?;
    let (mb, _) = mean_std(&theirs)?;
    Some(Ratio {
        step,
        seeds,
        of_means: ma / mb,
        per_seed: ours.iter().zip(&theirs).map(|(x, y)| x / y).collect(),
    })
}

fn schedule_text(cfg: &TrainConfig) -> String {
    match cfg.schedule.switch_step() {
        Some(d) => format!(
            "{} from step {d} ({})",
            cfg.schedule.label(),
            cfg.schedule
                .classes
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "none".into(),
    }
}

/// Compares the loaded runs (the first is the reference unless named).
fn compare(runs: &[RunData], reference: &str, bin: u64, pre_evals: usize) -> Comparison {
    let refrun = runs.iter().find(|r| r.label == reference).expect("checked");
    let mut rows = Vec::new();
    for r in runs {
        let finals: Vec<SeedFinal> = r
            .seeds
            .iter()
            .filter_map(|s| {
                s.evals.last().map(|&(step, v)| SeedFinal {
                    seed: s.seed,
                    step,
                    eval_return: v,
                })
            })
            .collect();
        // Mean and std over seeds at the last step every seed reached.
        let common = finals.iter().map(|f| f.step).min().unwrap_or(0);
        let values: Vec<f64> = r
            .seeds
            .iter()
            .filter_map(|s| s.evals.iter().find(|e| e.0 == common).map(|e| e.1))
            .collect();
        let ms = mean_std(&values);
        let delay = r.cfg.schedule.switch_step();
        let evals: Vec<_> = r.seeds.iter().map(|s| s.evals.clone()).collect();
        let curve = across_seeds(String::new(), &evals).points;
        rows.push(RunRow {
            label: r.label.clone(),
            dir: r.dir.display().to_string(),
            precision: r.cfg.precision.to_string(),
            schedule: schedule_text(&r.cfg),
            total_timesteps: r.cfg.total_timesteps,
            finals,
            common_step: common,
            mean: ms.map(|m| m.0),
            std: ms.map(|m| m.1),
            ratio_to_reference: (r.label != refrun.label)
                .then(|| ratio(r, refrun))
                .flatten(),
            dip: delay.and_then(|d| dip(&curve, d, pre_evals)),
            activation_saturation_before: saturation(&r.seeds, |s| delay.is_none_or(|d| s < d)),
            activation_saturation_after: delay.and_then(|d| saturation(&r.seeds, |s| s >= d)),
        });
    }
    Comparison {
        reference: reference.to_string(),
        bin_steps: bin,
        runs: rows,
    }
}

fn markdown(c: &Comparison) -> String {
    let mut s = format!(
        "| run | precision | schedule | seeds: last eval (step) | mean ± std (step) | ratio to {} (per seed) | dip after d (step) | steps to recover | act. saturation before / after d |\n|---|---|---|---|---:|---|---|---:|---|\n",
        c.reference
    );
    let pct = |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.3}%", v * 100.0));
    for r in &c.runs {
        let seeds = r
            .finals
            .iter()
            .map(|f| format!("{}: {:.1} ({})", f.seed, f.eval_return, f.step))
            .collect::<Vec<_>>()
            .join("; ");
        let ms = match (r.mean, r.std) {
            (Some(m), Some(sd)) => format!("{m:.1} ± {sd:.1} ({})", r.common_step),
            _ => "-".into(),
        };
        let ratio = r.ratio_to_reference.as_ref().map_or("-".into(), |q| {
            format!(
                "{:.3} at step {} ({})",
                q.of_means,
                q.step,
                q.per_seed
                    .iter()
                    .map(|x| format!("{x:.3}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        let (dip, rec) = r.dip.as_ref().map_or(("-".into(), "-".into()), |d| {
            (
                format!(
                    "{:.1} ({:.1}% of {:.1}; lowest at {})",
                    d.dip,
                    100.0 * d.dip / d.level_before.abs(),
                    d.level_before,
                    d.dip_step
                ),
                d.steps_to_recover
                    .map_or("not yet".into(), |n| n.to_string()),
            )
        });
        s.push_str(&format!(
            "| {} | {} | {} | {seeds} | {ms} | {ratio} | {dip} | {rec} | {} / {} |\n",
            r.label,
            r.precision,
            r.schedule,
            pct(r.activation_saturation_before),
            pct(r.activation_saturation_after)
        ));
    }
    s
}

/// The `fixar compare` command.
pub fn run(args: &CompareArgs) -> Result<std::process::ExitCode> {
    if args.pre_evals == 0 {
        return Err(config_error("--pre-evals must be at least 1"));
    }
    if args.bin == Some(0) {
        return Err(config_error("--bin must be a positive number of env steps"));
    }
    let runs = args
        .runs
        .iter()
        .map(|s| load_run(s))
        .collect::<Result<Vec<_>>>()?;
    let mut labels = std::collections::HashSet::new();
    if let Some(dup) = runs.iter().find(|r| !labels.insert(r.label.clone())) {
        return Err(config_error(format!(
            "--run: label `{}` given twice",
            dup.label
        )));
    }
    let reference = args
        .reference
        .clone()
        .unwrap_or_else(|| runs[0].label.clone());
    if !runs.iter().any(|r| r.label == reference) {
        return Err(config_error(format!(
            "--reference {reference}: no --run has that label"
        )));
    }
    let bin = args.bin.unwrap_or(runs[0].cfg.eval_every);
    let cmp = compare(&runs, &reference, bin, args.pre_evals);
    let title = args.title.clone().unwrap_or_else(|| {
        format!(
            "{} on {}",
            format!("{:?}", runs[0].cfg.algo).to_uppercase(),
            runs[0].cfg.env_id
        )
    });
    let mut delays: Vec<u64> = runs
        .iter()
        .filter_map(|r| r.cfg.schedule.switch_step())
        .collect();
    delays.sort_unstable();
    delays.dedup();
    let vlines: Vec<(f64, String)> = delays
        .iter()
        .map(|&d| (d as f64, format!("d = {d} (schedule switch)")))
        .collect();
    let label = |r: &RunData| {
        let n = r.seeds.len();
        format!("{} ({n} seed{})", r.label, if n == 1 { "" } else { "s" })
    };
    let train_series = runs
        .iter()
        .map(|r| {
            let per: Vec<_> = r.seeds.iter().map(|s| binned(&s.episodes, bin)).collect();
            across_seeds(label(r), &per)
        })
        .collect();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    line_chart(
        &LineChart {
            title: format!("{title}: training-episode return"),
            x_label: "environment steps".into(),
            y_label: format!("training-episode return (mean per {bin}-step bin)"),
            series: train_series,
            vlines: vlines.clone(),
            ..Default::default()
        },
        &args.out.join(&args.stem),
    )?;
    let eval_series = runs
        .iter()
        .map(|r| {
            let per: Vec<_> = r.seeds.iter().map(|s| s.evals.clone()).collect();
            across_seeds(label(r), &per)
        })
        .collect();
    line_chart(
        &LineChart {
            title: format!("{title}: evaluation return"),
            x_label: "environment steps".into(),
            y_label: format!(
                "eval return (mean of {} deterministic episodes)",
                runs[0].cfg.eval_episodes
            ),
            series: eval_series,
            vlines,
            ..Default::default()
        },
        &args.out.join(format!("{}_eval", args.stem)),
    )?;
    let md = format!(
        "# {title}\n\nMean over seeds with a min-max band; training-episode returns averaged per \
         {bin}-step bin. `mean ± std` (ddof 0) over the seeds' evaluations at the last step all of \
         them reached; the ratio is taken at the last step both runs evaluated for the seeds they share. \
         The dip is the lowest mean-over-seeds evaluation after the delay d minus the mean of the \
         {} evaluations before d; recovery is the first evaluation at or above that level.\n\n{}",
        args.pre_evals,
        markdown(&cmp)
    );
    agents::layout::write_atomic(&args.out.join(format!("{}.md", args.stem)), md.as_bytes())
        .context("writing the table")?;
    agents::layout::write_atomic(
        &args.out.join(format!("{}.json", args.stem)),
        serde_json::to_string_pretty(&cmp)?.as_bytes(),
    )
    .context("writing the table")?;
    println!("{}", markdown(&cmp));
    println!(
        "figures: {}",
        args.out.join(format!("{}.png", args.stem)).display()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dip_and_recovery_are_measured_against_the_level_before_the_delay() {
        let curve: Vec<(f64, f64)> = [
            (10, 90.0),
            (20, 100.0),
            (30, 110.0),
            (40, 60.0),
            (50, 80.0),
            (60, 105.0),
        ]
        .iter()
        .map(|&(s, v)| (s as f64, v))
        .collect();
        let d = dip(&curve, 40, 2).unwrap();
        assert_eq!(d.level_before, 105.0);
        assert_eq!((d.dip, d.dip_step), (-45.0, 40));
        assert_eq!(d.steps_to_recover, Some(20));
        // Never below: no dip, recovered at once; never back: None.
        assert_eq!(dip(&curve, 30, 1).unwrap().steps_to_recover, Some(0));
        let d = dip(&curve[..5], 40, 2).unwrap();
        assert_eq!((d.steps_to_recover, d.dip), (None, -45.0));
    }

    #[test]
    fn episodes_are_averaged_per_bin_ending_at_the_bin_boundary() {
        let eps = [(1000, 1.0), (2000, 3.0), (3000, 10.0), (5000, 20.0)];
        assert_eq!(
            binned(&eps, 2000),
            vec![(2000, 2.0), (4000, 10.0), (6000, 20.0)]
        );
        let s = across_seeds("x".into(), &[vec![(5, 1.0), (10, 2.0)], vec![(5, 3.0)]]);
        assert_eq!(s.points, vec![(5.0, 2.0), (10.0, 2.0)]);
        assert_eq!(s.band, vec![(5.0, 1.0, 3.0), (10.0, 2.0, 2.0)]);
    }
}
