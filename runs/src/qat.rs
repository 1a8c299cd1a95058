//! `fixar qat`: narrow a trained run's precision down a ladder of bit widths, retrain,
//! and report reward against bit width.
//!
//! # What a run does
//! Input: a finished `fixar train` run (`--from DIR`, which must hold `summary.json`)
//! trained at `fxp32` (or `float32`); every seed directory with a `checkpoint.bin` is
//! one parent. Per seed:
//!
//! 1. **Profile** the parent: a throwaway copy trains `--profile-steps` more steps with
//!    fresh range observers on every update (`quant`'s max |x|, EMA and 99.9th
//!    percentile per layer and tensor class; `--observer` picks which one sizes formats).
//! 2. **Reference**: the parent evaluated over `--episodes` deterministic episodes (the
//!    same seeded episodes its own final eval used), and the parent's weights evaluated
//!    with every cast removed (float32 forward) — or, with `--float-ref RUN`, that run's
//!    final evals.
//! 3. **Rungs** (`--widths`, default 32, 24, 16, 12, 10, 8, 6, 4; weights, activations and
//!    errors may have their own ladders), per strategy:
//!    - `ptq`: the parent's weights at formats derived from the parent's ranges; no
//!      retraining. All rungs are independent and run in parallel.
//!    - `delay` (QuaRL/FIXAR quantization delay): the parent *is* the 32-bit phase that
//!      ran until step D (its last step); each rung takes the formats derived at D and
//!      trains on `--steps` steps. Rungs branch from one parent: parallel.
//!    - `range` (FIXAR's dynamic fixed point down the ladder): each rung re-derives the
//!      formats from the ranges observed over the previous rung's training (the parent's
//!      profile for the first), starts from the previous rung's checkpoint (the last
//!      good one if a rung failed), trains `--steps` steps and evaluates. Seeds run in
//!      parallel; rungs in order.
//!    - `learned` (QFX): like `range`, but every `--learn-every` steps of the retraining
//!      the actor's binary points (integer bits of its input, weights, biases,
//!      pre-activations and activations) take `--learn-iters` gradient steps on the
//!      actor's task loss with the LSQ estimator of `agents::learned_point`.
//! 4. **Evaluate** every rung and seed over `--episodes` episodes, as the deployable
//!    network: a retrained rung ends in fixed-point mode (master weights rounded onto
//!    their formats), and that is what its checkpoint holds.
//!
//! Formats are derived per layer and tensor class by `derive` (range + headroom,
//! `quant::int_bits_for_range`); a class already at or below the rung's width keeps its
//! format, so the rung at the parent's own width is the parent. Retraining uses the
//! agent's `qat` mode by default (float master weights, `fake_quant_ste` on the forward;
//! only the forward classes input, weight, bias, pre-activation and activation are
//! narrowed), or with `--train-mode fixed` pure fixed-point training with every class
//! narrowed (errors, gradients, optimizer state and updates on `--error-widths`). PTQ
//! narrows the forward classes only: an evaluation runs nothing else.
//!
//! With `--pow2-terms K` every actor weight is projected onto the nearest value of its
//! format that is a sum of at most K signed powers of two (`agents::pow2`) before each
//! evaluation (and after every retraining chunk), and the table reports the shifts, adds
//! and remaining multiplications of one actor inference.
//!
//! # The verdict
//! Reference = the parent's mean final eval over seeds. A rung holds when its mean over
//! seeds is within `--tolerance` (default 5%) of the reference on the scale `--scale`:
//! `reference` (default) reads `ref − mean ≤ tol · |ref|` — a rung may lose at most 5% of
//! the reference's magnitude, and doing better always holds; Pendulum's returns are
//! negative, so at ref = −150 a rung holds down to −157.5. `random` reads
//! `ref − mean ≤ tol · (ref − random)`, the fraction of what training gained over a
//! uniformly random policy (measured on the same env) that a rung may lose. The chosen
//! rung is the narrowest width that holds over all strategies (ties: the higher mean); a
//! rung where any seed failed is never chosen. A seed that diverges (NaN/Inf anywhere,
//! found by the trainer's checks) is recorded with its reason; the rung is marked failed
//! and the ladder goes on.
//!
//! # Outputs (`<run>/qat/`)
//! `qat.csv` (strategy, width, mean_return, std_return, seeds, status), `qat.md`,
//! `formats.json` (strategy → width → seed → layer → class → format), `chosen.json`
//! ([`table::Chosen`]: strategy, width, the best seed's checkpoint and actor formats —
//! what `fixar export --run DIR` loads), `reward_vs_bits.png/.svg`, and one directory per
//! strategy and rung (`range_w16/seed0/checkpoint.bin`, with the trainer's CSVs).

pub mod derive;
pub mod figure;
pub mod ladder;
pub mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use agents::learned_point::{calibrate_actor, NetworkPoints};
use agents::optim::OptimizerConfig;
use agents::pow2::{MultiplierCount, Pow2Codebook};
use agents::precision::{TensorClass, TrainMode};
use agents::trainer::Trainer;
use anyhow::{anyhow, bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use tch::Tensor;

use crate::failure::config_error;
use derive::{derive_formats, FormatTable, RangeTable};
use ladder::{parse_widths, Ladder, Rung, DEFAULT_WIDTHS};
use table::{
    choose, mean_std, Chosen, MdContext, QatPaths, Reference, RungResult, Scale, SeedOutcome,
    Strategy, Tolerance,
};

/// The forward classes: what an evaluation computes, and what QAT mode casts.
pub const FORWARD_CLASSES: [TensorClass; 5] = [
    TensorClass::Input,
    TensorClass::Weight,
    TensorClass::Bias,
    TensorClass::Preact,
    TensorClass::Activation,
];

/// Files a trainer keeps in a seed directory; a branch copies them.
const SEED_FILES: [&str; 5] = [
    "checkpoint.bin",
    "metrics.csv",
    "quant.csv",
    "eval.csv",
    "episodes.csv",
];

/// Which range observer sizes the formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum ObserverKind {
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
    #[arg(long, value_enum, default_value_t = ObserverKind::Max)]
    pub observer: ObserverKind,
    /// qat: float master weights, fake-quantized forward; fixed: pure fixed point.
    #[arg(long, value_enum, default_value_t = TrainModeArg::Qat)]
    pub train_mode: TrainModeArg,
    /// Learning rate of the retraining (default: the parent's).
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// learned: calibrate the actor's binary points every this many retraining steps.
    #[arg(long, default_value_t = 1_000)]
    pub learn_every: u64,
    /// learned: gradient steps per calibration.
    #[arg(long, default_value_t = 50)]
    pub learn_iters: usize,
    /// learned: SGD step size on the integer bits.
    #[arg(long, default_value_t = 0.5)]
    pub learn_lr: f64,
    /// Multiplier-free actor weights: at most this many signed powers of two each.
    #[arg(long)]
    pub pow2_terms: Option<u32>,
    /// A float32 run whose final evals give the float32 reference band.
    #[arg(long)]
    pub float_ref: Option<PathBuf>,
}

/// Everything validated from the flags.
#[derive(Clone, Debug)]
pub struct QatPlan {
    pub from: PathBuf,
    pub ladder: Ladder,
    pub strategies: Vec<Strategy>,
    pub tolerance: f64,
    pub scale: ScaleArg,
    pub steps: u64,
    pub profile_steps: u64,
    pub episodes: Option<u32>,
    pub headroom: i32,
    pub observer: ObserverKind,
    pub mode: TrainMode,
    pub learning_rate: Option<f64>,
    pub learn_every: u64,
    pub learn_iters: usize,
    pub learn_lr: f64,
    pub pow2_terms: Option<u32>,
    pub float_ref: Option<PathBuf>,
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
    /// Checks every flag; bad input is a configuration error (exit 2).
    pub fn plan(&self) -> Result<QatPlan> {
        let parse = |flag: &str, v: &Option<String>| -> Result<Option<Vec<u32>>> {
            v.as_deref().map(|s| parse_widths(flag, s)).transpose()
        };
        let widths = parse_widths("--widths", &self.widths)?;
        let w = parse("--weight-widths", &self.weight_widths)?;
        let a = parse("--activation-widths", &self.activation_widths)?;
        let e = parse("--error-widths", &self.error_widths)?;
        let ladder = Ladder::new(&widths, w.as_deref(), a.as_deref(), e.as_deref())?;
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
        if self.pow2_terms == Some(0) {
            return Err(config_error("--pow2-terms must be at least 1"));
        }
        if self.learn_every == 0 || self.learn_iters == 0 {
            return Err(config_error(
                "--learn-every and --learn-iters must be positive",
            ));
        }
        if let Some(lr) = self.learning_rate {
            if !(lr.is_finite() && lr > 0.0) {
                return Err(config_error(format!(
                    "--learning-rate must be positive, got {lr}"
                )));
            }
        }
        check_finished_run("--from", &self.from)?;
        if let Some(f) = &self.float_ref {
            check_finished_run("--float-ref", f)?;
        }
        Ok(QatPlan {
            from: self.from.clone(),
            ladder,
            strategies,
            tolerance: self.tolerance,
            scale: self.scale,
            steps: self.steps,
            profile_steps: self.profile_steps,
            episodes: self.episodes,
            headroom: self.headroom,
            observer: self.observer,
            mode: match self.train_mode {
                TrainModeArg::Qat => TrainMode::Qat,
                TrainModeArg::Fixed => TrainMode::Fixed,
            },
            learning_rate: self.learning_rate,
            learn_every: self.learn_every,
            learn_iters: self.learn_iters,
            learn_lr: self.learn_lr,
            pow2_terms: self.pow2_terms,
            float_ref: self.float_ref.clone(),
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
    if !dir.join("summary.json").is_file() {
        return Err(config_error(format!(
            "{flag} {}: no finished run here (summary.json is missing; did `fixar train` \
             complete?)",
            dir.display()
        )));
    }
    Ok(())
}

/// The seed directories of a run: every direct subdirectory with a `checkpoint.bin`,
/// with the seed its checkpoint records, sorted by seed.
pub fn seed_dirs(run: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(run).with_context(|| format!("reading {}", run.display()))?;
    for e in entries {
        let p = e?.path();
        let ck = p.join("checkpoint.bin");
        if p.is_dir() && ck.is_file() {
            let r = agents::checkpoint::CheckpointReader::read(&ck).map_err(|e| anyhow!(e))?;
            let seed: u64 = r
                .meta("seed")
                .map_err(|e| anyhow!("{}: {e}", ck.display()))?;
            out.push((seed, p));
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(config_error(format!(
            "{}: summary.json is there but no seed directory holds a checkpoint.bin",
            run.display()
        )));
    }
    Ok(out)
}

/// A finished run's `summary.json`.
pub fn read_summary(run: &Path) -> Result<crate::train::Summary> {
    let p = run.join(crate::rundir::SUMMARY);
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
    })
}

/// Copies a seed directory's trainer files to a fresh temporary directory (resuming in
/// place would truncate the originals' CSVs to the checkpoint's marks, which is harmless
/// for a finished run but not ours to touch).
fn scratch_copy(src: &Path) -> Result<PathBuf> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dst = std::env::temp_dir().join(format!("fixar-qat-{}-{n}", std::process::id()));
    copy_seed_files(src, &dst)?;
    Ok(dst)
}

fn copy_seed_files(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    for f in SEED_FILES {
        let s = src.join(f);
        if s.is_file() {
            std::fs::copy(&s, dst.join(f))
                .with_context(|| format!("copying {} to {}", s.display(), dst.display()))?;
        }
    }
    Ok(())
}

/// A trainer continuing from `src`'s checkpoint, writing into `dst`.
fn branch(src: &Path, dst: &Path) -> Result<Trainer> {
    copy_seed_files(src, dst)?;
    Trainer::resume(dst).map_err(|e| anyhow!("resuming {}: {e}", dst.display()))
}

/// Every layer's formats, over all networks (online and target).
pub fn formats_of(t: &Trainer) -> FormatTable {
    t.agent
        .networks()
        .iter()
        .flat_map(|n| n.layers.iter().map(|l| (l.name.clone(), l.formats)))
        .collect()
}

/// Sets the formats of every layer named in `table`.
pub fn apply_formats(t: &mut Trainer, table: &FormatTable) {
    for net in t.agent.networks_mut() {
        net.update_formats(|name, f| {
            if let Some(new) = table.get(name) {
                *f = *new;
            }
        });
    }
}

/// The observed range of every layer and class (0 = never observed).
pub fn ranges_of(t: &Trainer, kind: ObserverKind) -> RangeTable {
    let mut out = RangeTable::new();
    for net in t.agent.networks() {
        for l in &net.layers {
            let m = out.entry(l.name.clone()).or_default();
            for c in TensorClass::ALL {
                let r = &l.ranges[c.index()];
                let v = match kind {
                    ObserverKind::Max => r.max_abs.range(),
                    ObserverKind::Ema => r.ema.range(),
                    ObserverKind::P999 => r.percentile.range(),
                };
                m.insert(c, v);
            }
        }
    }
    // A target network sees only the forward of `predict`; where it observed nothing,
    // its online twin's range stands in (their weights track each other).
    let names: Vec<String> = out.keys().cloned().collect();
    for name in names {
        if let Some((net, layer)) = name.split_once('.') {
            if let Some(online) = net.strip_suffix("_target") {
                let twin = format!("{online}.{layer}");
                if let Some(src) = out.get(&twin).cloned() {
                    let dst = out.get_mut(&name).expect("present");
                    for (c, v) in dst.iter_mut() {
                        if *v == 0.0 {
                            *v = src.get(c).copied().unwrap_or(0.0);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Fresh observers on every layer, fed on every update from now on.
fn reset_observers(t: &mut Trainer) {
    for net in t.agent.networks_mut() {
        for l in &mut net.layers {
            l.ranges = Default::default();
        }
    }
    t.cfg.range_every = 1;
}

/// Trains `steps` more env steps (no intermediate evaluations).
fn train_more(t: &mut Trainer, steps: u64) -> Result<()> {
    t.cfg.total_timesteps = t.step() + steps;
    t.cfg.eval_every = u64::MAX;
    t.cfg.checkpoint_every = u64::MAX / 2;
    t.run(None, &mut |_| {})
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| anyhow!("training stopped early"))?;
    Ok(())
}

/// Switches every network's training mode (and the config, so checkpoints carry it).
fn set_mode(t: &mut Trainer, mode: TrainMode) {
    if t.cfg.mode == mode {
        return;
    }
    t.cfg.mode = mode;
    for net in t.agent.networks_mut() {
        let g = net.gemm();
        net.set_numerics(g, mode);
    }
}

/// Projects the actor's weights onto at most `k` signed powers of two in their format;
/// returns the actor's multiplier count (layers without a fixed-point weight format keep
/// their multiplications).
fn project_pow2(t: &mut Trainer, k: u32) -> Result<MultiplierCount> {
    let actor = t.agent.actor_mut();
    let mut total = MultiplierCount::default();
    let _g = tch::no_grad_guard();
    for l in &actor.layers {
        let n = (l.in_dim * l.out_dim) as u64;
        match l.formats.get(TensorClass::Weight) {
            Some(f) => {
                let book = Pow2Codebook::new(&f, k).map_err(|e| anyhow!("{}: {e}", l.name))?;
                let (p, c) = book.project_tensor(l.weight());
                l.weight().shallow_clone().copy_(&p);
                total.merge(&c);
            }
            None => total.merge(&MultiplierCount::dense(n)),
        }
    }
    let flat = actor.params().copy();
    actor.load_params(&flat);
    Ok(total)
}

/// Observations visited by the current deterministic policy (for calibrating the
/// actor's binary points), `episodes` episodes from seeded resets.
fn policy_states(t: &mut Trainer, episodes: u32, seed: u64) -> Result<Tensor> {
    let mut env = envs::make(&t.cfg.env_id).map_err(|e| anyhow!("{e}"))?;
    let obs_dim = env.observation_space().low.len();
    let act_dim = env.action_space().low.len();
    let (mut obs, mut next) = (vec![0f32; obs_dim], vec![0f32; obs_dim]);
    let mut action = vec![0f32; act_dim];
    let mut all = Vec::new();
    for i in 0..episodes {
        env.reset(
            Some(seed.wrapping_mul(1_000_003).wrapping_add(i as u64)),
            &mut obs,
        )
        .map_err(|e| anyhow!("{e}"))?;
        loop {
            all.extend_from_slice(&obs);
            t.agent.act(&obs, &mut action);
            let out = env.step(&action, &mut next).map_err(|e| anyhow!("{e}"))?;
            obs.copy_from_slice(&next);
            if out.terminated || out.truncated {
                break;
            }
        }
    }
    Ok(Tensor::from_slice(&all).view([-1, obs_dim as i64]))
}

/// The learned-binary-point step: calibrates the actor's (and its target's) integer
/// bits on its task loss.
fn calibrate(t: &mut Trainer, plan: &QatPlan, seed: u64) -> Result<()> {
    let states = policy_states(t, 4, seed)?;
    let mut nets = t.agent.networks_mut();
    // Online networks come first: actor, then its critic(s).
    let (head, rest) = nets.split_at_mut(1);
    let actor = &mut *head[0];
    let critic = &mut *rest[0];
    let mut points = NetworkPoints::of(actor, plan.learn_lr);
    let loss = calibrate_actor(
        actor,
        critic,
        &mut points,
        &states,
        256,
        plan.learn_iters,
        seed,
    );
    if !loss.is_finite() {
        bail!("learned binary point: actor loss is {loss}");
    }
    points.apply(actor);
    if let Some(target) = rest.iter_mut().find(|n| n.name == "actor_target") {
        points.apply(target);
    }
    Ok(())
}

/// The mean return of a uniformly random policy on the parent's env.
fn random_policy_return(env_id: &str, episodes: u32, seed: u64) -> Result<f64> {
    let mut env = envs::make(env_id).map_err(|e| anyhow!("{e}"))?;
    let (low, high) = (
        env.action_space().low.clone(),
        env.action_space().high.clone(),
    );
    let mut obs = vec![0f32; env.observation_space().low.len()];
    let mut next = obs.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut total = 0.0;
    for i in 0..episodes {
        env.reset(Some(seed.wrapping_add(7919 * i as u64)), &mut obs)
            .map_err(|e| anyhow!("{e}"))?;
        loop {
            let a: Vec<f32> = low
                .iter()
                .zip(&high)
                .map(|(l, h)| rng.gen_range(*l..=*h))
                .collect();
            let out = env.step(&a, &mut next).map_err(|e| anyhow!("{e}"))?;
            total += out.reward;
            obs.copy_from_slice(&next);
            if out.terminated || out.truncated {
                break;
            }
        }
    }
    Ok(total / episodes as f64)
}

/// One parent seed after profiling.
struct Parent {
    seed: u64,
    dir: PathBuf,
    ranges: RangeTable,
    eval: f64,
    float_eval: f64,
    env_id: String,
    algo: String,
    episodes: u32,
}

fn profile_parent(plan: &QatPlan, seed: u64, dir: &Path) -> Result<Parent> {
    // libtorch's thread count is per calling thread (this runs on a rayon worker).
    tch::set_num_threads(1);
    let scratch = scratch_copy(dir)?;
    let mut t =
        Trainer::resume(&scratch).map_err(|e| anyhow!("resuming {}: {e}", dir.display()))?;
    let episodes = plan.episodes.unwrap_or(t.cfg.eval_episodes);
    let formats = formats_of(&t);
    let eval = t.evaluate(episodes).map_err(|e| anyhow!("{e}"))?.mean;
    // The same weights with no casts: the float32 forward.
    let float: FormatTable = formats
        .keys()
        .map(|k| (k.clone(), agents::precision::LayerFormats::float()))
        .collect();
    let mut tf = Trainer::resume(&scratch_copy(dir)?).map_err(|e| anyhow!("{e}"))?;
    apply_formats(&mut tf, &float);
    let float_eval = tf.evaluate(episodes).map_err(|e| anyhow!("{e}"))?.mean;
    let _ = std::fs::remove_dir_all(tf.dir());
    drop(tf);
    reset_observers(&mut t);
    train_more(&mut t, plan.profile_steps)
        .with_context(|| format!("profiling seed {seed} for {} steps", plan.profile_steps))?;
    let ranges = ranges_of(&t, plan.observer);
    let env_id = t.cfg.env_id.clone();
    let algo = t.agent.algo().to_string();
    drop(t);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(Parent {
        seed,
        dir: dir.to_path_buf(),
        ranges,
        eval,
        float_eval,
        env_id,
        algo,
        episodes,
    })
}

/// Which classes a strategy narrows.
fn narrowed_classes(strategy: Strategy, mode: TrainMode) -> Vec<TensorClass> {
    if strategy == Strategy::Ptq || mode == TrainMode::Qat {
        FORWARD_CLASSES.to_vec()
    } else {
        TensorClass::ALL.to_vec()
    }
}

/// The outcome of one seed at one rung, and the ranges its training observed.
struct RungRun {
    outcome: SeedOutcome,
    ranges: Option<RangeTable>,
}

fn failed(seed: u64, formats: FormatTable, err: &anyhow::Error) -> RungRun {
    RungRun {
        outcome: SeedOutcome {
            seed,
            eval_mean: None,
            error: Some(format!("{err:#}")),
            checkpoint: None,
            formats,
            multipliers: None,
        },
        ranges: None,
    }
}

/// Runs one strategy at one rung for one seed, starting from `start` (a seed directory)
/// with `ranges` observed before it; writes into `out`.
fn run_rung(
    plan: &QatPlan,
    strategy: Strategy,
    rung: &Rung,
    parent: &Parent,
    start: &Path,
    ranges: &RangeTable,
    out: &Path,
) -> RungRun {
    // libtorch's thread count is per calling thread (this runs on a rayon worker).
    tch::set_num_threads(1);
    let mut formats = FormatTable::new();
    let result = (|| -> Result<RungRun> {
        let mut t = branch(start, out)?;
        let classes = narrowed_classes(strategy, plan.mode);
        formats = derive_formats(&formats_of(&t), ranges, rung, plan.headroom, &classes)?;
        let mut multipliers = None;
        if strategy.retrains() {
            if plan.mode == TrainMode::Qat {
                // QAT casts only the forward; the other classes become float so that the
                // storage type follows the forward widths (f32 master weights up to 24
                // bits), as they are never cast in this mode.
                for f in formats.values_mut() {
                    for c in TensorClass::ALL {
                        if !FORWARD_CLASSES.contains(&c) {
                            f.set(c, None);
                        }
                    }
                }
            }
            set_mode(&mut t, plan.mode);
            if let Some(lr) = plan.learning_rate {
                set_learning_rate(&mut t, lr);
            }
            apply_formats(&mut t, &formats);
            reset_observers(&mut t);
            // Odd on purpose: TD3/DDPG train the actor on every second update, and an
            // even period would observe the critics only.
            t.cfg.range_every = 5;
            let chunk = match (strategy, plan.pow2_terms) {
                (Strategy::Learned, _) => plan.learn_every,
                (_, Some(_)) => plan.learn_every,
                _ => plan.steps,
            };
            let mut done = 0;
            while done < plan.steps {
                if strategy == Strategy::Learned {
                    calibrate(&mut t, plan, parent.seed ^ done)?;
                }
                if let Some(k) = plan.pow2_terms {
                    project_pow2(&mut t, k)?;
                }
                let n = chunk.min(plan.steps - done);
                train_more(&mut t, n)?;
                done += n;
            }
            if strategy == Strategy::Learned {
                calibrate(&mut t, plan, parent.seed ^ done)?;
            }
            // The rung's result is the deployable network: the master weights rounded
            // onto their formats (what the QAT forward computed with), stored in fixed
            // point, so the evaluation, the checkpoint and `fixar export` see integers.
            set_mode(&mut t, TrainMode::Fixed);
            formats = formats_of(&t);
        } else {
            apply_formats(&mut t, &formats);
        }
        if let Some(k) = plan.pow2_terms {
            multipliers = Some(project_pow2(&mut t, k)?);
        }
        let ranges = strategy.retrains().then(|| ranges_of(&t, plan.observer));
        let eval = t.evaluate(parent.episodes).map_err(|e| anyhow!("{e}"))?;
        if !eval.mean.is_finite() {
            bail!("evaluation return is {}", eval.mean);
        }
        // The budget may end mid-episode, and checkpoints hold no env state.
        t.end_episode();
        t.checkpoint().map_err(|e| anyhow!("{e}"))?;
        Ok(RungRun {
            outcome: SeedOutcome {
                seed: parent.seed,
                eval_mean: Some(eval.mean),
                error: None,
                checkpoint: Some(out.join("checkpoint.bin")),
                formats: formats.clone(),
                multipliers,
            },
            ranges,
        })
    })();
    result.unwrap_or_else(|e| failed(parent.seed, formats, &e))
}

fn set_learning_rate(t: &mut Trainer, lr: f64) {
    t.cfg.learning_rate = lr;
    t.cfg.actor_learning_rate = None;
    t.cfg.critic_learning_rate = None;
    for net in t.agent.networks_mut() {
        if let Some(opt) = &mut net.optimizer {
            match &mut opt.config {
                OptimizerConfig::Adam { lr: l, .. } | OptimizerConfig::Sgd { lr: l, .. } => *l = lr,
            }
        }
    }
}

/// The whole ladder; returns the results in strategy then ladder order.
fn run_ladder(
    plan: &QatPlan,
    parents: &[Parent],
    paths: &QatPaths,
    bar: &indicatif::ProgressBar,
) -> Vec<RungResult> {
    let slots: Mutex<BTreeMap<(Strategy, usize, u64), SeedOutcome>> = Mutex::new(BTreeMap::new());
    let record = |st: Strategy, i: usize, o: SeedOutcome| {
        bar.inc(1);
        slots
            .lock()
            .expect("no panics while holding")
            .insert((st, i, o.seed), o);
    };
    let rungs = &plan.ladder.rungs;
    // Independent jobs: PTQ and delay rungs branch from the parent; range and learned
    // chains run per seed.
    enum Job<'a> {
        Branch(Strategy, usize, &'a Parent),
        Chain(Strategy, &'a Parent),
    }
    let mut jobs = Vec::new();
    for st in &plan.strategies {
        for p in parents {
            match st {
                Strategy::Ptq | Strategy::Delay => {
                    jobs.extend((0..rungs.len()).map(|i| Job::Branch(*st, i, p)))
                }
                Strategy::Range | Strategy::Learned => jobs.push(Job::Chain(*st, p)),
            }
        }
    }
    jobs.par_iter().for_each(|job| match job {
        Job::Branch(st, i, p) => {
            let out = crate::rundir::seed_dir(&paths.rung_dir(*st, rungs[*i].width), p.seed);
            let r = run_rung(plan, *st, &rungs[*i], p, &p.dir, &p.ranges, &out);
            record(*st, *i, r.outcome);
        }
        Job::Chain(st, p) => {
            let mut start = p.dir.clone();
            let mut ranges = p.ranges.clone();
            for (i, rung) in rungs.iter().enumerate() {
                let out = crate::rundir::seed_dir(&paths.rung_dir(*st, rung.width), p.seed);
                let r = run_rung(plan, *st, rung, p, &start, &ranges, &out);
                if r.outcome.error.is_none() {
                    start = out;
                    if let Some(rg) = r.ranges {
                        // A class this rung did not observe keeps its last range.
                        for (layer, classes) in rg {
                            let old = ranges.entry(layer).or_default();
                            for (c, v) in classes {
                                if v > 0.0 {
                                    old.insert(c, v);
                                }
                            }
                        }
                    }
                } else {
                    tracing::warn!(
                        "{st} w{} seed {}: {}; the next rung starts from the last good checkpoint",
                        rung.width,
                        p.seed,
                        r.outcome.error.as_deref().unwrap_or("")
                    );
                }
                record(*st, i, r.outcome);
            }
        }
    });
    let slots = slots.into_inner().expect("no panics while holding");
    let mut results = Vec::new();
    for st in &plan.strategies {
        for (i, rung) in rungs.iter().enumerate() {
            let seeds: Vec<SeedOutcome> = slots
                .iter()
                .filter(|((s, j, _), _)| s == st && *j == i)
                .map(|(_, o)| o.clone())
                .collect();
            results.push(RungResult {
                strategy: *st,
                rung: *rung,
                seeds,
            });
        }
    }
    results
}

/// `fixar qat`.
pub fn run(args: &QatArgs) -> Result<ExitCode> {
    let plan = args.plan()?;
    let report = execute(&plan)?;
    println!("{}", report.summary);
    Ok(ExitCode::SUCCESS)
}

/// What a finished ladder produced.
pub struct QatReport {
    pub results: Vec<RungResult>,
    pub reference: Reference,
    pub chosen: Option<Chosen>,
    pub paths: QatPaths,
    pub summary: String,
}

/// Runs a validated plan and writes every output.
pub fn execute(plan: &QatPlan) -> Result<QatReport> {
    // One libtorch thread per task: rayon provides the parallelism.
    tch::set_num_threads(1);
    let seeds = seed_dirs(&plan.from)?;
    let paths = QatPaths::new(&plan.from);
    std::fs::create_dir_all(&paths.dir)
        .with_context(|| format!("creating {}", paths.dir.display()))?;
    tracing::info!(
        "qat: {} seeds from {}, ladder {:?}, strategies {:?}",
        seeds.len(),
        plan.from.display(),
        plan.ladder
            .rungs
            .iter()
            .map(|r| r.width)
            .collect::<Vec<_>>(),
        plan.strategies.iter().map(|s| s.name()).collect::<Vec<_>>()
    );
    let units = plan.strategies.len() * plan.ladder.rungs.len() * seeds.len() + seeds.len();
    let bar = crate_progress(units as u64);
    bar.set_message("profiling parents");
    let parents: Vec<Parent> = seeds
        .par_iter()
        .map(|(seed, dir)| {
            let p = profile_parent(plan, *seed, dir);
            bar.inc(1);
            p
        })
        .collect::<Result<_>>()?;
    bar.set_message("ladder");
    let results = run_ladder(plan, &parents, &paths, &bar);
    bar.finish_and_clear();

    let p0 = &parents[0];
    let parent_label = read_summary(&plan.from)?.precision;
    let evals: Vec<f64> = parents.iter().map(|p| p.eval).collect();
    let (mean, std) = mean_std(&evals).expect("at least one seed");
    let reference = Reference {
        label: parent_label.clone(),
        mean,
        std,
        seeds: evals.len(),
    };
    let float_reference = match &plan.float_ref {
        Some(dir) => Some(run_reference(dir)?),
        None if parent_label != "float32" => {
            let f: Vec<f64> = parents.iter().map(|p| p.float_eval).collect();
            let (m, s) = mean_std(&f).expect("at least one seed");
            Some(Reference {
                label: "float32 forward (parent weights)".into(),
                mean: m,
                std: s,
                seeds: f.len(),
            })
        }
        None => None,
    };
    let random_mean = random_policy_return(&p0.env_id, p0.episodes.max(10), 12345)?;
    let tolerance = Tolerance {
        fraction: plan.tolerance,
        scale: match plan.scale {
            ScaleArg::Reference => Scale::Reference,
            ScaleArg::Random => Scale::Random { random_mean },
        },
    };
    let chosen_result = choose(&results, reference.mean, &tolerance);
    let chosen = chosen_result
        .and_then(|r| Chosen::from_result(r, &reference, &tolerance, plan.pow2_terms))
        .map(|mut c| {
            // Paths relative to the run directory, so the run can move.
            let rel = |p: &PathBuf| {
                p.strip_prefix(&plan.from)
                    .map(Path::to_path_buf)
                    .unwrap_or(p.clone())
            };
            c.checkpoint = rel(&c.checkpoint);
            for (_, p) in &mut c.checkpoints {
                *p = rel(p);
            }
            c
        });

    table::write_csv(&paths.csv(), &results)?;
    table::write_formats_json(&paths.formats(), &results)?;
    let title = format!(
        "QAT ladder: {} on {}, seeds {}",
        p0.algo.to_uppercase(),
        p0.env_id,
        figure::seeds_label(&parents.iter().map(|p| p.seed).collect::<Vec<_>>())
    );
    let notes = plan_notes(plan, p0.episodes);
    let md = table::render_md(
        &MdContext {
            title: &title,
            reference: &reference,
            float_reference: float_reference.as_ref(),
            random_mean: Some(random_mean),
            tolerance: &tolerance,
            chosen: chosen_result,
            notes: &notes,
        },
        &results,
    );
    std::fs::write(paths.md(), &md).with_context(|| format!("writing {}", paths.md().display()))?;
    let seeds_list: Vec<u64> = parents.iter().map(|p| p.seed).collect();
    figure::write(
        &figure::FigureContext {
            env: &p0.env_id,
            algorithm: &p0.algo,
            seeds: &seeds_list,
            episodes: p0.episodes as usize,
            reference: &reference,
            float_reference: float_reference.as_ref(),
            tolerance: &tolerance,
            chosen: chosen_result,
        },
        &results,
        &paths.plot_stem(),
    )?;
    match &chosen {
        Some(c) => std::fs::write(paths.chosen(), serde_json::to_string_pretty(c)?)
            .with_context(|| format!("writing {}", paths.chosen().display()))?,
        None => {
            let _ = std::fs::remove_file(paths.chosen());
        }
    }
    let summary = format!(
        "{md}\nwrote {} {} {} {} {}.png/.svg{}",
        paths.csv().display(),
        paths.md().display(),
        paths.formats().display(),
        if chosen.is_some() {
            paths.chosen().display().to_string()
        } else {
            "(no chosen.json: no rung within tolerance)".into()
        },
        paths.plot_stem().display(),
        ""
    );
    Ok(QatReport {
        results,
        reference,
        chosen,
        paths,
        summary,
    })
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
            "learned: every {} steps the actor's binary points take {} LSQ steps (lr {}) on \
             the actor loss −mean Q.",
            plan.learn_every, plan.learn_iters, plan.learn_lr
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
