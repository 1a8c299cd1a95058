//! Branching a run from another run's checkpoint: the new run takes the source's whole
//! state at a checkpoint (networks, optimizer, replay buffer, RNGs, observers, CSV rows
//! and TensorBoard events so far) and goes on with a config that differs only where the source's past could
//! not have been different.
//!
//! What may differ is the `[schedule]` table, provided neither run's schedule has
//! switched by the checkpoint's step, and `total_timesteps`. When the latter changes
//! the replay buffer's capacity (`min(buffer_size, total_timesteps)`), the source's
//! buffer must not have overwritten a transition yet; it then takes the branch's
//! capacity and holds what a buffer of that capacity would (`ReplayBuffer::recapacity`),
//! so an FXP32 run stopped early (`--set total_timesteps=475000`) can still be the
//! source of a 1M-step branch. Before its
//! delay a scheduled run computes exactly what the same run without a schedule
//! computes (the switch reads the range observers every run keeps), so the branch is
//! the run the new config would have made from step 0, bit for bit; the test
//! `branch_equals_a_run_from_scratch` holds it to that, and `fixar train
//! --branch-from` is how FIXAR's schedule variants start from the FXP32 run at the
//! delay instead of training the first half again.
//!
//! The branch's wall-time counters start at the source's: its `summary.json` reports
//! the time the whole trajectory took.

use std::fs;
use std::path::Path;

use super::{
    config_difference, io_err, replay_capacity, EventsMark, LoopState, Recorder, TrainError,
    Trainer,
};
use crate::checkpoint::CheckpointReader;
use crate::config::TrainConfig;
use crate::layout;

/// Why a run cannot be branched from a checkpoint (a usage error: nothing was written).
#[derive(Debug, thiserror::Error)]
#[error("cannot branch from {path}: {why}")]
pub struct BranchError {
    pub path: std::path::PathBuf,
    pub why: String,
}

impl Trainer {
    /// Starts the run `cfg` in the seed directory `dir` from the checkpoint in the seed
    /// directory `src` (see the module doc for what may differ), writes its first
    /// checkpoint there and returns it ready to [`Trainer::run`]. `src` is only read.
    pub fn branch(src: &Path, cfg: TrainConfig, dir: &Path) -> Result<Self, TrainError> {
        let (r, src_cfg) = check_branch(src, &cfg)?;
        let marks: Vec<u64> = r.meta("csv_marks")?;
        let crcs: Option<Vec<u32>> = r.meta("csv_crcs").ok();
        let seed: u64 = r.meta("seed")?;
        let (was_on, is_on) = (src_cfg.schedule.is_on(), cfg.schedule.is_on());
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let capacity = replay_capacity(&cfg);
        let mut t = Self::assemble(cfg, seed, dir)?;
        t.restore(&r)?;
        if t.buffer.capacity() != capacity {
            let step = t.step();
            // check_branch made sure the source's buffer never overwrote a transition.
            t.buffer.recapacity(capacity, step).ok_or_else(|| {
                TrainError::Branch(BranchError {
                    path: src.join(layout::CHECKPOINT),
                    why: format!(
                        "its replay buffer ({} of {} transitions at step {step}) cannot take \
                         the capacity {capacity}",
                        t.buffer.len(),
                        t.buffer.capacity()
                    ),
                })
            })?;
        }
        t.st.finished = false;
        t.st.fast_gemm_mismatch = None;
        // `metrics.csv` has a last `schedule` column exactly when a schedule is on; the
        // rows before the switch leave it empty.
        let metrics_line = move |line: &str| match (was_on, is_on) {
            (false, true) if line.starts_with("step,") => format!("{line},schedule"),
            (false, true) => format!("{line},"),
            (true, false) => line
                .strip_suffix(",schedule")
                .or_else(|| line.strip_suffix(','))
                .unwrap_or(line)
                .to_string(),
            _ => line.to_string(),
        };
        let events = EventsMark::of(&r)?;
        t.rec = Recorder::branch(src, &marks, crcs.as_deref(), events, dir, &metrics_line)?;
        t.checkpoint()?;
        tracing::info!(
            "seed {seed}: branched at step {} from {}",
            t.step(),
            src.display()
        );
        Ok(t)
    }

    /// The env step a branch of `cfg` from the seed directory `src` would start at, or
    /// why it cannot be made; reads the checkpoint and writes nothing.
    pub fn branch_point(src: &Path, cfg: &TrainConfig) -> Result<u64, TrainError> {
        let (r, _) = check_branch(src, cfg)?;
        Ok(r.meta::<LoopState>("loop")?.step)
    }
}

/// Reads `src`'s checkpoint and checks that `cfg` may branch from it (module doc).
fn check_branch(
    src: &Path,
    cfg: &TrainConfig,
) -> Result<(CheckpointReader, TrainConfig), TrainError> {
    cfg.validate()?;
    let path = src.join(layout::CHECKPOINT);
    let r = CheckpointReader::read(&path)?;
    let src_cfg: TrainConfig = r.meta("config")?;
    let st: LoopState = r.meta("loop")?;
    let refuse = |why: String| {
        TrainError::Branch(BranchError {
            path: path.clone(),
            why,
        })
    };
    let mut same = src_cfg.clone();
    same.schedule = cfg.schedule.clone();
    same.total_timesteps = cfg.total_timesteps;
    if same != *cfg {
        return Err(refuse(format!(
            "the configs may differ only in [schedule] and `total_timesteps`, but {}",
            config_difference(&same, cfg)
        )));
    }
    let step = st.step;
    let held: usize = r.meta("replay.len")?;
    let (from, to) = (replay_capacity(&src_cfg), replay_capacity(cfg));
    // A buffer that has overwritten transitions holds what a larger one would not; one
    // that has not holds the same under any capacity of at least its length.
    if from != to && (held as u64 != step || to < held) {
        return Err(refuse(format!(
            "the replay buffer would hold {to} transitions instead of {from} \
             (min(buffer_size, total_timesteps)), and the source's, with {held} transitions \
             after {step} steps, cannot change capacity; set `buffer_size` to keep it"
        )));
    }
    for (whose, c) in [("the source's", &src_cfg), ("the branch's", cfg)] {
        if let Some(d) = c.schedule.switch_step().filter(|&d| d <= step) {
            return Err(refuse(format!(
                "{whose} schedule switches at step {d}, not after the checkpoint's step \
                 {step}: branch from an earlier checkpoint"
            )));
        }
    }
    if !st.need_reset {
        return Err(refuse(format!(
            "its checkpoint at step {step} falls inside an episode (a run that ended \
             there), and checkpoints hold no env state"
        )));
    }
    // A finished run evaluated and logged at its last step whatever the period: only
    // where the branch would do the same is its past the branch's.
    if st.finished && (!step.is_multiple_of(cfg.eval_every) || !step.is_multiple_of(cfg.log_every))
    {
        return Err(refuse(format!(
            "the source ended at step {step}, which is not a multiple of `eval_every` ({}) \
             and `log_every` ({}): it evaluated or logged there where the branch would not",
            cfg.eval_every, cfg.log_every
        )));
    }
    if step >= cfg.total_timesteps {
        return Err(refuse(format!(
            "its checkpoint is at step {step}, and `total_timesteps` is {}: nothing is left \
             to train",
            cfg.total_timesteps
        )));
    }
    Ok((r, src_cfg))
}
