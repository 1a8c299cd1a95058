//! `fixar qat`: parses the flags into an [`agents::qat::QatPlan`], runs the ladder
//! (`agents::qat`, where the engine and its documentation live) under a progress bar,
//! and writes `<run>/qat/`: `qat.csv` (strategy, width, mean_return, std_return, seeds,
//! status), `qat.md`, `formats.json` (strategy -> width -> seed -> layer -> class ->
//! format), `chosen.json` (what `fixar export --run DIR` loads) and
//! `reward_vs_bits.png/.svg`. The rung directories are the engine's.

pub mod figure;
pub mod learned;
pub mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agents::layout;
use agents::precision::TrainMode;
use agents::qat::{
    parse_widths, Ladder, LadderOutcome, QatError, QatPlan, QatProgress, Reference, ScaleKind,
    Strategy, DEFAULT_WIDTHS,
};
use anyhow::{Context, Result};

use crate::failure::{config_error, usage};
use table::{MdContext, QatPaths};

/// Which range observer sizes the formats (`agents::qat::ObserverKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ObserverArg {
    /// Max |x| over the window: never saturates on what was seen.
    Max,
    /// EMA of the per-observation max |x|.
    Ema,
    /// 99.9th percentile of |x|: clips outliers for resolution.
    P999,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScaleArg {
    Reference,
    Random,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TrainModeArg {
    Qat,
    Fixed,
}

/// `fixar qat` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct QatArgs {
    /// A finished `fixar train` run directory (with summary.json).
    #[arg(long)]
    pub from: PathBuf,
    /// The ladder, strictly decreasing, e.g. 32,24,16,12,10,8,6,4.
    #[arg(long, default_value = "32,24,16,12,10,8,6,4")]
    pub widths: String,
    /// Widths of weights and biases per rung (default: --widths).
    #[arg(long)]
    pub weight_widths: Option<String>,
    /// Widths of inputs, pre-activations and activations per rung (default: --widths).
    #[arg(long)]
    pub activation_widths: Option<String>,
    /// Widths of errors, gradients, optimizer state and updates per rung (default:
    /// --widths; used by --train-mode fixed).
    #[arg(long)]
    pub error_widths: Option<String>,
    /// Strategies: all, or a comma list of ptq, range, delay, learned.
    #[arg(long, default_value = "all")]
    pub strategy: String,
    /// Allowed gap to the reference, as a fraction of the scale.
    #[arg(long, default_value_t = 0.05)]
    pub tolerance: f64,
    /// What the tolerance is a fraction of: |reference|, or reference − random policy.
    #[arg(long, value_enum, default_value_t = ScaleArg::Reference)]
    pub scale: ScaleArg,
    /// Retraining budget per rung (env steps, one gradient update each).
    #[arg(long, default_value_t = 5_000)]
    pub steps: u64,
    /// Steps of the throwaway profiling run on the parent.
    #[arg(long, default_value_t = 1_000)]
    pub profile_steps: u64,
    /// Evaluation episodes per seed (default: the parent's eval_episodes).
    #[arg(long)]
    pub episodes: Option<u32>,
    /// Extra integer bits on every derived format.
    #[arg(long, default_value_t = 0)]
    pub headroom: i32,
    #[arg(long, value_enum, default_value_t = ObserverArg::Max)]
    pub observer: ObserverArg,
    /// qat: float master weights, fake-quantized forward; fixed: pure fixed point.
    #[arg(long, value_enum, default_value_t = TrainModeArg::Qat)]
    pub train_mode: TrainModeArg,
    /// Learning rate of the retraining (default: the parent's).
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// learned: Adam's step size on the binary points (integer bits per update).
    #[arg(long, default_value_t = 5e-3, allow_negative_numbers = true)]
    pub learn_lr: f64,
    /// Multiplier-free actor weights: at most this many signed powers of two each.
    #[arg(long, allow_negative_numbers = true)]
    pub pow2_terms: Option<i64>,
    /// With --pow2-terms: project the actor's weights every this many retraining steps.
    #[arg(long, default_value_t = 1_000)]
    pub pow2_every: u64,
    /// A float32 run whose final evals give the float32 reference band.
    #[arg(long)]
    pub float_ref: Option<PathBuf>,
    /// Continue a ladder that was interrupted (killed): rungs that finished are read
    /// back from their `rung.json`, the rest run again; the flags must be the same.
    #[arg(long)]
    pub resume: bool,
}

/// Parses a strategy list: `all` or `ptq,range,...`.
pub fn parse_strategies(s: &str) -> Result<Vec<Strategy>> {
    if s.trim() == "all" {
        return Ok(Strategy::ALL.to_vec());
    }
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim) {
        let st = Strategy::ALL
            .into_iter()
            .find(|st| st.name() == item)
            .ok_or_else(|| {
                config_error(format!(
                    "--strategy: unknown strategy `{item}` (expected all, or a comma list of \
                     ptq, range, delay, learned)"
                ))
            })?;
        if !out.contains(&st) {
            out.push(st);
        }
    }
    Ok(out)
}

impl QatArgs {
    /// `--pow2-terms K`: at least 1 and at most the narrowest weight width of the ladder
    /// (a weight of W bits has at most W non-zero signed digits that matter).
    fn pow2_terms_checked(&self, ladder: &Ladder) -> Result<Option<u32>> {
        let Some(k) = self.pow2_terms else {
            return Ok(None);
        };
        let narrowest = ladder.rungs.iter().map(|r| r.weights).min().unwrap_or(32);
        if k < 1 || k > narrowest as i64 {
            return Err(config_error(format!(
                "--pow2-terms must be between 1 and the narrowest weight width of the ladder \
                 ({narrowest}), got {k}"
            )));
        }
        Ok(Some(k as u32))
    }

    /// Checks every flag; bad input is a configuration error (exit 2).
    pub fn plan(&self) -> Result<QatPlan> {
        let parse = |flag: &str, v: &Option<String>| -> Result<Option<Vec<u32>>> {
            v.as_deref()
                .map(|s| parse_widths(flag, s).map_err(usage))
                .transpose()
        };
        let widths = parse_widths("--widths", &self.widths).map_err(usage)?;
        let w = parse("--weight-widths", &self.weight_widths)?;
        let a = parse("--activation-widths", &self.activation_widths)?;
        let e = parse("--error-widths", &self.error_widths)?;
        let ladder =
            Ladder::new(&widths, w.as_deref(), a.as_deref(), e.as_deref()).map_err(usage)?;
        let strategies = parse_strategies(&self.strategy)?;
        if !(self.tolerance.is_finite() && self.tolerance > 0.0) {
            return Err(config_error(format!(
                "--tolerance must be a positive fraction (0.05 = 5%), got {}",
                self.tolerance
            )));
        }
        if strategies.iter().any(|s| s.retrains()) && self.steps == 0 {
            return Err(config_error(
                "--steps must be positive for retraining strategies",
            ));
        }
        if self.profile_steps == 0 {
            return Err(config_error(
                "--profile-steps must be positive: ranges need observations",
            ));
        }
        if self.episodes == Some(0) {
            return Err(config_error("--episodes must be positive"));
        }
        let pow2_terms = self.pow2_terms_checked(&ladder)?;
        if !(self.learn_lr.is_finite() && self.learn_lr > 0.0 && self.learn_lr <= 1.0) {
            return Err(config_error(format!(
                "--learn-lr must be in (0, 1] (Adam's step on the integer bits per update), \
                 got {}",
                self.learn_lr
            )));
        }
        if strategies.contains(&Strategy::Learned) && self.train_mode == TrainModeArg::Fixed {
            return Err(config_error(
                "--strategy learned trains binary points through the QAT forward's autograd: \
                 it needs --train-mode qat, not fixed",
            ));
        }
        if self.pow2_every == 0 {
            return Err(config_error("--pow2-every must be positive"));
        }
        if let Some(lr) = self.learning_rate {
            if !(lr.is_finite() && lr > 0.0) {
                return Err(config_error(format!(
                    "--learning-rate must be positive, got {lr}"
                )));
            }
        }
        check_finished_run("--from", &self.from)?;
        let float_reference = match &self.float_ref {
            Some(f) => {
                check_finished_run("--float-ref", f)?;
                Some(run_reference(f)?)
            }
            None => None,
        };
        Ok(QatPlan {
            from: self.from.clone(),
            parent_label: read_summary(&self.from)?.precision,
            ladder,
            strategies,
            tolerance: self.tolerance,
            scale: match self.scale {
                ScaleArg::Reference => ScaleKind::Reference,
                ScaleArg::Random => ScaleKind::Random,
            },
            steps: self.steps,
            profile_steps: self.profile_steps,
            episodes: self.episodes,
            headroom: self.headroom,
            observer: match self.observer {
                ObserverArg::Max => agents::qat::ObserverKind::Max,
                ObserverArg::Ema => agents::qat::ObserverKind::Ema,
                ObserverArg::P999 => agents::qat::ObserverKind::P999,
            },
            mode: match self.train_mode {
                TrainModeArg::Qat => TrainMode::Qat,
                TrainModeArg::Fixed => TrainMode::Fixed,
            },
            learning_rate: self.learning_rate,
            learn_lr: self.learn_lr,
            pow2_every: self.pow2_every,
            pow2_terms,
            float_reference,
        })
    }
}

/// A run directory is finished when it holds `summary.json`.
fn check_finished_run(flag: &str, dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(config_error(format!(
            "{flag} {}: no such directory (give a `fixar train` run directory)",
            dir.display()
        )));
    }
    if !dir.join(layout::SUMMARY).is_file() {
        return Err(config_error(format!(
            "{flag} {}: no finished run here (summary.json is missing; did `fixar train` \
             complete?)",
            dir.display()
        )));
    }
    Ok(())
}

/// A finished run's `summary.json`.
pub fn read_summary(run: &Path) -> Result<crate::train::Summary> {
    let p = run.join(layout::SUMMARY);
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

/// A run's final eval over seeds, as a reference band.
fn run_reference(run: &Path) -> Result<Reference> {
    let s = read_summary(run)?;
    Ok(Reference {
        label: s.precision.clone(),
        mean: s.final_eval_return.mean,
        std: s.final_eval_return.std,
        seeds: s.final_eval_return.n,
        returns: s.seeds.iter().map(|r| r.final_eval_return).collect(),
    })
}

/// `fixar qat`.
pub fn run(args: &QatArgs) -> Result<ExitCode> {
    let plan = args.plan()?;
    let report = execute_resuming(&plan, args.resume)?;
    println!("{}", report.summary);
    Ok(ExitCode::SUCCESS)
}

/// What a finished ladder produced, and where its files are.
pub struct QatReport {
    pub outcome: LadderOutcome,
    pub paths: QatPaths,
    pub summary: String,
}

/// Runs a validated plan under a progress bar and writes every output.
pub fn execute(plan: &QatPlan) -> Result<QatReport> {
    execute_resuming(plan, false)
}

/// [`execute`], continuing an interrupted ladder when `resume` (`fixar qat --resume`).
pub fn execute_resuming(plan: &QatPlan, resume: bool) -> Result<QatReport> {
    let invalid = |e| match e {
        QatError::Invalid(m) => config_error(m),
        e => anyhow::Error::new(e),
    };
    let seeds = agents::qat::seed_dirs(&plan.from).map_err(invalid)?;
    let bar = crate_progress(agents::qat::progress_units(plan, seeds.len()));
    let outcome = agents::qat::run_ladder_resuming(plan, resume, &|p| match p {
        QatProgress::Phase(m) => bar.set_message(m),
        QatProgress::UnitDone => bar.inc(1),
    })
    .map_err(invalid)?;
    bar.finish_and_clear();
    let paths = QatPaths::new(&plan.from);
    write_outputs(plan, &outcome, &paths).map(|summary| QatReport {
        outcome,
        paths,
        summary,
    })
}

/// `qat.csv`, `formats.json`, `qat.md`, the plot and `chosen.json`; returns the summary
/// `fixar qat` prints.
fn write_outputs(plan: &QatPlan, o: &LadderOutcome, paths: &QatPaths) -> Result<String> {
    table::write_csv(&paths.csv(), &o.results, &o.reference)?;
    table::write_formats_json(&paths.formats(), &o.results)?;
    let title = format!(
        "QAT ladder: {} on {}, seeds {}",
        o.algo.to_uppercase(),
        o.env_id,
        figure::seeds_label(&o.seeds)
    );
    let notes = plan_notes(plan, o.episodes);
    let chosen_result = o.chosen_result();
    let mut md = table::render_md(
        &MdContext {
            title: &title,
            reference: &o.reference,
            float_reference: o.float_reference.as_ref(),
            random_mean: Some(o.random_mean),
            tolerance: &o.tolerance,
            chosen: chosen_result,
            notes: &notes,
        },
        &o.results,
    );
    let learned_figures = learned::write_figures(&layout::qat_dir(&plan.from), &o.results)?;
    md.push_str(&learned::section(&o.results, &learned_figures));
    crate::rundir::write_atomic(paths.md(), &md)
        .with_context(|| format!("writing {}", paths.md().display()))?;
    figure::write(
        &figure::FigureContext {
            env: &o.env_id,
            algorithm: &o.algo,
            seeds: &o.seeds,
            episodes: o.episodes as usize,
            reference: &o.reference,
            float_reference: o.float_reference.as_ref(),
            tolerance: &o.tolerance,
            chosen: chosen_result,
        },
        &o.results,
        &paths.plot_stem(),
    )?;
    match &o.chosen {
        Some(c) => crate::rundir::write_atomic(paths.chosen(), serde_json::to_string_pretty(c)?)
            .with_context(|| format!("writing {}", paths.chosen().display()))?,
        None => {
            let _ = std::fs::remove_file(paths.chosen());
        }
    }
    Ok(format!(
        "{md}\nwrote {} {} {} {} {}.png/.svg",
        paths.csv().display(),
        paths.md().display(),
        paths.formats().display(),
        if o.chosen.is_some() {
            paths.chosen().display().to_string()
        } else {
            "(no chosen.json: no rung within tolerance)".into()
        },
        paths.plot_stem().display(),
    ))
}

fn plan_notes(plan: &QatPlan, episodes: u32) -> Vec<String> {
    let mut n = vec![
        format!(
            "Budget: {} retraining steps per rung, {} profiling steps on the parent, {} eval \
             episodes per seed; formats from the `{:?}` observer with {} headroom bits; \
             retraining in `{:?}` mode{}.",
            plan.steps,
            plan.profile_steps,
            episodes,
            plan.observer,
            plan.headroom,
            plan.mode,
            plan.learning_rate
                .map(|lr| format!(" at learning rate {lr:e}"))
                .unwrap_or_default()
        ),
        "Std is over seeds (population, ddof 0) of each seed's mean eval return.".into(),
    ];
    if plan.strategies.contains(&Strategy::Learned) {
        n.push(format!(
            "learned: the binary point of every forward cast of the actor and critics is a \
             trainable parameter (log2 domain, TQT's gradient), stepped by Adam (step {}) \
             with the weights on every update; set from `range` at the first rung only, \
             then kept down the ladder.",
            plan.learn_lr
        ));
    }
    if let Some(k) = plan.pow2_terms {
        n.push(format!(
            "Actor weights are multiplier-free: at most {k} signed powers of two each."
        ));
    }
    n
}

fn crate_progress(n: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(n);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} qat [{bar:30}] {pos}/{len} {msg} {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// The default ladder as the `--widths` string.
pub fn default_widths() -> String {
    DEFAULT_WIDTHS.map(|w| w.to_string()).join(",")
}
