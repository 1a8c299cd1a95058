//! The QAT ladder: narrow a trained run's precision down a ladder of bit widths,
//! retrain, evaluate, and choose the narrowest width whose reward holds.
//!
//! # What a ladder does
//! Input: a finished training run (its directory, [`QatPlan::from`]); every seed
//! directory with a checkpoint is one parent. Per seed:
//!
//! 1. **Profile** the parent: a throwaway copy trains [`QatPlan::profile_steps`] more
//!    steps with fresh range observers on every update (`quant`'s max |x|, EMA and
//!    99.9th percentile per layer and tensor class; [`QatPlan::observer`] picks which one
//!    sizes formats).
//! 2. **Reference**: the parent evaluated over the plan's episodes (the same seeded
//!    episodes its own final eval used), and the parent's weights evaluated with every
//!    cast removed (float32 forward), unless the caller gives a float reference.
//! 3. **Rungs**, per strategy ([`Strategy`]):
//!    - `ptq`: the parent's weights at formats derived from the parent's ranges; no
//!      retraining. All rungs are independent and run in parallel.
//!    - `delay` (QuaRL/FIXAR quantization delay): the parent *is* the 32-bit phase that
//!      ran until step D (its last step); each rung takes the formats derived at D and
//!      trains on. Rungs branch from one parent: parallel.
//!    - `range` (FIXAR's dynamic fixed point down the ladder): each rung re-derives the
//!      formats from the ranges observed over the previous rung's training (the parent's
//!      profile for the first), starts from the previous rung's checkpoint (the last
//!      good one if a rung failed), trains and evaluates. Seeds run in parallel; rungs
//!      in order.
//!    - `learned` (QFX): like `range`, but the binary point of every forward cast of
//!      every online network (actor and critics) is a trainable parameter, stepped by
//!      Adam on the network's own loss on every update of the retraining
//!      ([`crate::learned_point`]; QAT train mode only). The points start at the first
//!      rung's range-derived formats and are never reset afterwards: a later rung
//!      narrows the width and keeps the learned integer bits, and they travel in the
//!      rung checkpoints.
//! 4. **Evaluate** every rung and seed as the deployable network: a retrained rung ends
//!    in fixed-point mode (master weights rounded onto their formats), and that is what
//!    its checkpoint holds.
//!
//! Formats are derived per layer and tensor class by [`derive`](mod@derive) (range + headroom,
//! `quant::int_bits_for_range`); a class already at or below the rung's width keeps its
//! format, so the rung at the parent's own width is the parent. Retraining uses the
//! agent's `qat` mode by default (float master weights, `fake_quant_ste` on the forward;
//! only the forward classes are narrowed), or pure fixed-point training with every class
//! narrowed. PTQ narrows the forward classes only: an evaluation runs nothing else.
//!
//! With [`QatPlan::pow2_terms`] = K every actor weight is projected onto the nearest
//! value of its format that is a sum of at most K signed powers of two
//! ([`crate::pow2`]) before each evaluation (and every [`QatPlan::pow2_every`] retraining
//! steps).
//!
//! # The verdict ([`verdict`])
//! Reference = the parent's mean final eval over seeds. A rung holds when its mean over
//! seeds is within the tolerance of the reference ([`Tolerance`]); the chosen rung is
//! the narrowest width that holds over all strategies (ties: the higher mean); a rung
//! where any seed failed is never chosen. A seed that diverges (NaN/Inf anywhere, found
//! by the trainer's checks) is recorded with its reason; the rung is marked failed and
//! the ladder goes on.
//!
//! # Where it writes
//! One directory per strategy, rung and seed under `<run>/qat/`
//! ([`crate::layout::rung_dir`]), each a trainer's seed directory. The ladder's tables,
//! report and plot are the caller's to write (`fixar qat`), from [`LadderOutcome`].
//!
//! Not for: flags, progress bars, plots or markdown (`runs`).

pub mod derive;
mod engine;
pub mod ladder;
pub mod verdict;

use std::path::PathBuf;

use serde::Serialize;

pub use derive::{derive_formats, FormatTable, RangeTable};
pub use engine::{progress_units, run_ladder, run_ladder_resuming, seed_dirs};
pub use ladder::{parse_widths, Ladder, Rung, DEFAULT_WIDTHS};
pub use verdict::{
    choose, mean_std, narrowest_within, ptq_verdict, Chosen, Reference, RungResult, Scale,
    SeedOutcome, Strategy, Tolerance,
};

use crate::precision::{TensorClass, TrainMode};
use crate::trainer::TrainError;

/// The forward classes: what an evaluation computes, and what QAT mode casts.
pub const FORWARD_CLASSES: [TensorClass; 5] = [
    TensorClass::Input,
    TensorClass::Weight,
    TensorClass::Bias,
    TensorClass::Preact,
    TensorClass::Activation,
];

/// Which range observer sizes the formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ObserverKind {
    /// Max |x| over the window: never saturates on what was seen.
    Max,
    /// EMA of the per-observation max |x|.
    Ema,
    /// 99.9th percentile of |x|: clips outliers for resolution.
    P999,
}

/// What the tolerance is a fraction of (see [`Scale`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleKind {
    /// |reference|.
    Reference,
    /// reference − the return of a uniformly random policy (measured by the ladder).
    Random,
}

/// Everything a ladder needs, validated by the caller.
#[derive(Clone, Debug)]
pub struct QatPlan {
    /// The finished training run (its seed directories are the parents).
    pub from: PathBuf,
    /// The parent's precision, for the reference's label (`fxp32`).
    pub parent_label: String,
    pub ladder: Ladder,
    pub strategies: Vec<Strategy>,
    /// Allowed gap to the reference, as a fraction of the scale.
    pub tolerance: f64,
    pub scale: ScaleKind,
    /// Retraining budget per rung (env steps, one gradient update each).
    pub steps: u64,
    /// Steps of the throwaway profiling run on each parent.
    pub profile_steps: u64,
    /// Evaluation episodes per seed (default: the parent's `eval_episodes`).
    pub episodes: Option<u32>,
    /// Extra integer bits on every derived format.
    pub headroom: i32,
    pub observer: ObserverKind,
    /// `Qat`: float master weights, fake-quantized forward; `Fixed`: pure fixed point.
    pub mode: TrainMode,
    /// Learning rate of the retraining (default: the parent's).
    pub learning_rate: Option<f64>,
    /// `learned`: Adam's step size on the binary points (integer bits per update).
    pub learn_lr: f64,
    /// With `pow2_terms`: project the actor's weights every this many retraining steps.
    pub pow2_every: u64,
    /// Multiplier-free actor weights: at most this many signed powers of two each.
    pub pow2_terms: Option<u32>,
    /// A float32 reference band from elsewhere (another run's final evals); without it
    /// the ladder evaluates the parents' weights with every cast removed.
    pub float_reference: Option<Reference>,
}

/// What a finished ladder produced.
#[derive(Clone, Debug)]
pub struct LadderOutcome {
    /// In strategy, then ladder order.
    pub results: Vec<RungResult>,
    /// The parents' seeds, sorted.
    pub seeds: Vec<u64>,
    pub env_id: String,
    /// `ddpg` or `td3`.
    pub algo: String,
    /// Evaluation episodes per seed.
    pub episodes: u32,
    /// The parents' evaluation: mean and std over seeds.
    pub reference: Reference,
    pub float_reference: Option<Reference>,
    /// The mean return of a uniformly random policy on the parents' env.
    pub random_mean: f64,
    pub tolerance: Tolerance,
    /// The chosen rung's hand-off (paths relative to the run directory), if any rung
    /// holds.
    pub chosen: Option<Chosen>,
}

impl LadderOutcome {
    /// The chosen rung's result (the narrowest within tolerance).
    pub fn chosen_result(&self) -> Option<&RungResult> {
        choose(&self.results, self.reference.mean, &self.tolerance)
    }
}

/// What the ladder reports while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QatProgress {
    /// A new phase starts (`profiling parents`, `ladder`).
    Phase(&'static str),
    /// One unit of work finished: a parent profiled, or one seed at one rung.
    UnitDone,
}

/// Why a ladder (or one of its rungs) could not run.
#[derive(Debug, thiserror::Error)]
pub enum QatError {
    /// A plan value that cannot work; the message names the flag or value.
    #[error("{0}")]
    Invalid(String),
    /// No format can be derived from what was observed.
    #[error("{0}")]
    Derive(String),
    /// A run that diverged where the ladder checks it (an evaluation, a calibration).
    #[error("{0}")]
    Diverged(String),
    #[error(transparent)]
    Format(#[from] quant::FormatError),
    #[error(transparent)]
    Pow2(#[from] crate::pow2::Pow2Error),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error("environment `{id}`: {source}")]
    Env {
        id: String,
        #[source]
        source: envs::EnvError,
    },
    #[error(transparent)]
    File(#[from] crate::layout::FileError),
    /// What the ladder was doing when `source` happened.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<QatError>,
    },
}

impl QatError {
    /// The same error with what the ladder was doing in front of it.
    pub fn context(self, context: impl Into<String>) -> QatError {
        QatError::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }
}

/// The error and its sources in one line (`a: b: c`), each source once: what a failed
/// rung records in `qat.csv`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
