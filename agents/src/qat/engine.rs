//! Running a ladder: profile the parents, run every strategy's rungs (PTQ and delay
//! rungs in parallel, range and learned chains per seed), evaluate, and reach the
//! verdict. One libtorch thread per rayon task.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::derive::derive_formats;
use super::ladder::Rung;
use super::verdict::{choose, mean_std, Chosen, RungResult, SeedOutcome, Strategy};
use super::{
    error_chain, FormatTable, LadderOutcome, QatError, QatPlan, QatProgress, RangeTable, Reference,
    Scale, ScaleKind, Tolerance, FORWARD_CLASSES,
};
use crate::checkpoint::CheckpointReader;
use crate::layout::{self, FileError};
use crate::precision::{LayerFormats, TensorClass, TrainMode};
use crate::trainer::Trainer;

type Result<T> = std::result::Result<T, QatError>;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> QatError {
    let f = FileError::io(what, path);
    move |source| QatError::File(f(source))
}

/// The seed directories of a run: every direct subdirectory with a checkpoint, with the
/// seed its checkpoint records, sorted by seed.
pub fn seed_dirs(run: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(run).map_err(io("reading", run))?;
    for e in entries {
        let p = e.map_err(io("reading", run))?.path();
        let ck = p.join(layout::CHECKPOINT);
        if p.is_dir() && ck.is_file() {
            let r = CheckpointReader::read(&ck)?;
            let seed: u64 = r
                .meta("seed")
                .map_err(|e| QatError::from(e).context(ck.display().to_string()))?;
            out.push((seed, p));
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(QatError::Invalid(format!(
            "{}: summary.json is there but no seed directory holds a {}",
            run.display(),
            layout::CHECKPOINT
        )));
    }
    Ok(out)
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
    std::fs::create_dir_all(dst).map_err(io("creating", dst))?;
    for f in layout::SEED_FILES {
        let s = src.join(f);
        if s.is_file() {
            std::fs::copy(&s, dst.join(f)).map_err(io("copying into", &dst.join(f)))?;
        }
    }
    Ok(())
}

/// A trainer continuing from `src`'s checkpoint, writing into `dst`.
fn branch(src: &Path, dst: &Path) -> Result<Trainer> {
    copy_seed_files(src, dst)?;
    Trainer::resume(dst)
        .map_err(|e| QatError::from(e).context(format!("resuming {}", dst.display())))
}

fn make_env(id: &str) -> Result<Box<dyn envs::Env>> {
    envs::make(id).map_err(|source| QatError::Env {
        id: id.to_string(),
        source,
    })
}

/// The mean return of a uniformly random policy on `env_id`.
fn random_policy_return(env_id: &str, episodes: u32, seed: u64) -> Result<f64> {
    let mut env = make_env(env_id)?;
    let env_err = |source| QatError::Env {
        id: env_id.to_string(),
        source,
    };
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
            .map_err(env_err)?;
        loop {
            let a: Vec<f32> = low
                .iter()
                .zip(&high)
                .map(|(l, h)| rng.gen_range(*l..=*h))
                .collect();
            let out = env.step(&a, &mut next).map_err(env_err)?;
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
    let mut t = Trainer::resume(&scratch)
        .map_err(|e| QatError::from(e).context(format!("resuming {}", dir.display())))?;
    let episodes = plan.episodes.unwrap_or(t.config().eval_episodes);
    let formats = t.formats();
    let eval = t.evaluate(episodes)?.mean;
    // The same weights with no casts: the float32 forward.
    let float: FormatTable = formats
        .keys()
        .map(|k| (k.clone(), LayerFormats::float()))
        .collect();
    let mut tf = Trainer::resume(&scratch_copy(dir)?)?;
    tf.set_formats(&float);
    let float_eval = tf.evaluate(episodes)?.mean;
    let _ = std::fs::remove_dir_all(tf.dir());
    drop(tf);
    t.reset_range_observers();
    t.train_steps(plan.profile_steps).map_err(|e| {
        QatError::from(e).context(format!(
            "profiling seed {seed} for {} steps",
            plan.profile_steps
        ))
    })?;
    let ranges = t.ranges(plan.observer);
    let env_id = t.config().env_id.clone();
    let algo = t.agent().algo().to_string();
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

/// A finished rung's record in its seed directory (`rung.json`): what `--resume` reads
/// instead of running the rung again.
const RUNG_RECORD: &str = "rung.json";

/// What `rung.json` holds: the outcome (with the formats as their spellings, per layer
/// in `TensorClass::ALL` order) and the observed ranges.
#[derive(Serialize, Deserialize)]
struct RungRecord {
    outcome: SeedOutcome,
    formats: BTreeMap<String, Vec<String>>,
    ranges: Option<RangeTable>,
}

fn write_record(out: &Path, run: &RungRun) -> Result<()> {
    let rec = RungRecord {
        outcome: run.outcome.clone(),
        formats: run
            .outcome
            .formats
            .iter()
            .map(|(k, f)| (k.clone(), f.to_strings()))
            .collect(),
        ranges: run.ranges.clone(),
    };
    let path = out.join(RUNG_RECORD);
    let json = serde_json::to_vec_pretty(&rec).expect("a rung record serializes");
    layout::write_atomic(&path, &json).map_err(io("writing", &path))
}

/// The finished rung recorded in `out`, if any (and its checkpoint is there).
fn read_record(out: &Path) -> Result<Option<RungRun>> {
    let path = out.join(RUNG_RECORD);
    if !path.is_file() || !out.join(layout::CHECKPOINT).is_file() {
        return Ok(None);
    }
    let text = std::fs::read(&path).map_err(io("reading", &path))?;
    let rec: RungRecord = serde_json::from_slice(&text)
        .map_err(|e| QatError::Invalid(format!("{}: {e}", path.display())))?;
    let mut outcome = rec.outcome;
    for (layer, v) in rec.formats {
        let f = LayerFormats::from_strings(&v)
            .map_err(|e| QatError::Invalid(format!("{}: layer `{layer}`: {e}", path.display())))?;
        outcome.formats.insert(layer, f);
    }
    Ok(Some(RungRun {
        outcome,
        ranges: rec.ranges,
    }))
}

/// The outcome of one seed at one rung, and the ranges its training observed.
struct RungRun {
    outcome: SeedOutcome,
    ranges: Option<RangeTable>,
}

fn failed(seed: u64, formats: FormatTable, err: &QatError) -> RungRun {
    RungRun {
        outcome: SeedOutcome {
            seed,
            eval_mean: None,
            error: Some(error_chain(err)),
            checkpoint: None,
            formats,
            multipliers: None,
        },
        ranges: None,
    }
}

/// Runs one strategy at one rung for one seed, starting from `start` (a seed directory)
/// with `ranges` observed before it; writes into `out`.
#[allow(clippy::too_many_arguments)]
fn run_rung(
    plan: &QatPlan,
    strategy: Strategy,
    rung: &Rung,
    parent: &Parent,
    start: &Path,
    ranges: &RangeTable,
    out: &Path,
    resume: bool,
) -> RungRun {
    // libtorch's thread count is per calling thread (this runs on a rayon worker).
    tch::set_num_threads(1);
    if resume {
        match read_record(out) {
            Ok(Some(r)) => return r,
            Ok(None) => {}
            Err(e) => tracing::warn!("{}: {e}; the rung runs again", out.display()),
        }
    }
    let mut formats = FormatTable::new();
    let result = (|| -> Result<RungRun> {
        let mut t = branch(start, out)?;
        let classes = narrowed_classes(strategy, plan.mode);
        formats = derive_formats(&t.formats(), ranges, rung, plan.headroom, &classes)?;
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
            t.set_mode(plan.mode);
            if let Some(lr) = plan.learning_rate {
                t.set_learning_rate(lr);
            }
            t.set_formats(&formats);
            if strategy == Strategy::Learned {
                // Fresh points only at the start of the ladder; later rungs keep the
                // learned integer bits (set_formats left them alone) and narrow the width.
                t.learn_binary_points(plan.learn_lr)?;
            }
            t.reset_range_observers();
            // Odd on purpose: TD3/DDPG train the actor on every second update, and an
            // even period would observe the critics only.
            t.set_range_every(5);
            let chunk = match plan.pow2_terms {
                Some(_) => plan.pow2_every,
                None => plan.steps,
            };
            let mut done = 0;
            while done < plan.steps {
                if let Some(k) = plan.pow2_terms {
                    t.project_actor_pow2(k)?;
                }
                let n = chunk.min(plan.steps - done);
                t.train_steps(n)?;
                done += n;
            }
            // The rung's result is the deployable network: the master weights rounded
            // onto their formats (what the QAT forward computed with), stored in fixed
            // point, so the evaluation, the checkpoint and the export see integers.
            t.set_mode(TrainMode::Fixed);
            formats = t.formats();
        } else {
            t.set_formats(&formats);
        }
        if let Some(k) = plan.pow2_terms {
            multipliers = Some(t.project_actor_pow2(k)?);
        }
        let ranges = strategy.retrains().then(|| t.ranges(plan.observer));
        let eval = t.evaluate(parent.episodes)?;
        if !eval.mean.is_finite() {
            return Err(QatError::Diverged(format!(
                "evaluation return is {}",
                eval.mean
            )));
        }
        // The budget may end mid-episode, and checkpoints hold no env state.
        t.end_episode();
        t.checkpoint()?;
        let run = RungRun {
            outcome: SeedOutcome {
                seed: parent.seed,
                eval_mean: Some(eval.mean),
                error: None,
                checkpoint: Some(out.join(layout::CHECKPOINT)),
                formats: formats.clone(),
                multipliers,
            },
            ranges,
        };
        // Last, after the checkpoint: a rung with a record is finished.
        write_record(out, &run)?;
        Ok(run)
    })();
    result.unwrap_or_else(|e| failed(parent.seed, formats, &e))
}

/// Every strategy's rungs; returns the results in strategy then ladder order.
fn run_rungs(
    plan: &QatPlan,
    parents: &[Parent],
    qat_dir: &Path,
    resume: bool,
    progress: &(dyn Fn(QatProgress) + Sync),
) -> Vec<RungResult> {
    let slots: Mutex<BTreeMap<(Strategy, usize, u64), SeedOutcome>> = Mutex::new(BTreeMap::new());
    let record = |st: Strategy, i: usize, o: SeedOutcome| {
        progress(QatProgress::UnitDone);
        slots
            .lock()
            .expect("no panics while holding")
            .insert((st, i, o.seed), o);
    };
    let rungs = &plan.ladder.rungs;
    let seed_dir = |st: Strategy, width: u32, seed: u64| {
        layout::seed_dir(&layout::rung_dir(qat_dir, st.name(), width), seed)
    };
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
            let out = seed_dir(*st, rungs[*i].width, p.seed);
            let r = run_rung(plan, *st, &rungs[*i], p, &p.dir, &p.ranges, &out, resume);
            record(*st, *i, r.outcome);
        }
        Job::Chain(st, p) => {
            let mut start = p.dir.clone();
            let mut ranges = p.ranges.clone();
            for (i, rung) in rungs.iter().enumerate() {
                let out = seed_dir(*st, rung.width, p.seed);
                let r = run_rung(plan, *st, rung, p, &start, &ranges, &out, resume);
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

/// The number of [`QatProgress::UnitDone`] events a ladder over `seeds` parents sends.
pub fn progress_units(plan: &QatPlan, seeds: usize) -> u64 {
    (plan.strategies.len() * plan.ladder.rungs.len() * seeds + seeds) as u64
}

/// The ladder's settings as recorded in `qat/plan.txt`: a resume must find the same.
const PLAN_RECORD: &str = "plan.txt";

/// Starts the ladder's directory: a fresh ladder removes the rung records of an earlier
/// one and records its plan; a resumed one requires the recorded plan to be `plan`.
fn start_ladder(plan: &QatPlan, qat_dir: &Path, resume: bool) -> Result<()> {
    let path = qat_dir.join(PLAN_RECORD);
    let ours = format!("{plan:#?}\n");
    if resume {
        let theirs = std::fs::read_to_string(&path).map_err(|e| {
            QatError::Invalid(format!(
                "--resume: {}: {e}; no ladder to continue (run without --resume)",
                path.display()
            ))
        })?;
        if theirs != ours {
            let diff = theirs
                .lines()
                .zip(ours.lines())
                .find(|(a, b)| a != b)
                .map_or("its length".to_string(), |(a, b)| {
                    format!("`{}` then, `{}` now", a.trim(), b.trim())
                });
            return Err(QatError::Invalid(format!(
                "--resume: the ladder in {} ran with other settings ({diff}); resume with the \
                 same flags, or run without --resume to start it again",
                qat_dir.display()
            )));
        }
        return Ok(());
    }
    std::fs::create_dir_all(qat_dir).map_err(io("creating", qat_dir))?;
    for e in std::fs::read_dir(qat_dir)
        .map_err(io("reading", qat_dir))?
        .flatten()
    {
        if !e.path().is_dir() {
            continue;
        }
        for s in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
            let rec = s.path().join(RUNG_RECORD);
            if rec.is_file() {
                std::fs::remove_file(&rec).map_err(io("removing", &rec))?;
            }
        }
    }
    layout::write_atomic(&path, ours.as_bytes()).map_err(io("writing", &path))
}

/// Runs the whole ladder of `plan` on the seeds of `plan.from`; rungs are written under
/// `<from>/qat/`. Reports progress through `progress` (from several threads).
pub fn run_ladder(
    plan: &QatPlan,
    progress: &(dyn Fn(QatProgress) + Sync),
) -> Result<LadderOutcome> {
    run_ladder_resuming(plan, false, progress)
}

/// [`run_ladder`]; with `resume`, a ladder interrupted (killed) before its end goes on:
/// every rung that finished (its checkpoint and then `rung.json` written) is read back
/// instead of run, the others run again from their start. Rungs are deterministic, so
/// the outcome equals an uninterrupted ladder's. The plan must equal the recorded one.
pub fn run_ladder_resuming(
    plan: &QatPlan,
    resume: bool,
    progress: &(dyn Fn(QatProgress) + Sync),
) -> Result<LadderOutcome> {
    // One libtorch thread per task: rayon provides the parallelism.
    tch::set_num_threads(1);
    let seeds = seed_dirs(&plan.from)?;
    let qat_dir = layout::qat_dir(&plan.from);
    start_ladder(plan, &qat_dir, resume)?;
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
    progress(QatProgress::Phase("profiling parents"));
    let parents: Vec<Parent> = seeds
        .par_iter()
        .map(|(seed, dir)| {
            let p = profile_parent(plan, *seed, dir);
            progress(QatProgress::UnitDone);
            p
        })
        .collect::<Result<_>>()?;
    progress(QatProgress::Phase("ladder"));
    let results = run_rungs(plan, &parents, &qat_dir, resume, progress);

    let p0 = &parents[0];
    let evals: Vec<f64> = parents.iter().map(|p| p.eval).collect();
    let (mean, std) = mean_std(&evals).expect("at least one seed");
    let reference = Reference {
        label: plan.parent_label.clone(),
        mean,
        std,
        seeds: evals.len(),
        returns: evals.clone(),
    };
    let float_reference = match &plan.float_reference {
        Some(r) => Some(r.clone()),
        None if plan.parent_label != "float32" => {
            let f: Vec<f64> = parents.iter().map(|p| p.float_eval).collect();
            let (m, s) = mean_std(&f).expect("at least one seed");
            Some(Reference {
                label: "float32 forward (parent weights)".into(),
                mean: m,
                std: s,
                seeds: f.len(),
                returns: f.clone(),
            })
        }
        None => None,
    };
    let random_mean = random_policy_return(&p0.env_id, p0.episodes.max(10), 12345)?;
    let tolerance = Tolerance {
        fraction: plan.tolerance,
        scale: match plan.scale {
            ScaleKind::Reference => Scale::Reference,
            ScaleKind::Random => Scale::Random { random_mean },
        },
    };
    let chosen = choose(&results, reference.mean, &tolerance)
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
    Ok(LadderOutcome {
        seeds: parents.iter().map(|p| p.seed).collect(),
        env_id: p0.env_id.clone(),
        algo: p0.algo.clone(),
        episodes: p0.episodes,
        results,
        reference,
        float_reference,
        random_mean,
        tolerance,
        chosen,
    })
}
