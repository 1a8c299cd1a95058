//! The training loop of one seed: collect experience, update, evaluate, stream metrics
//! to the seed's directory, checkpoint, resume.
//!
//! Files in the seed directory:
//! - `metrics.csv`: every `log_every` env steps: updates, episodes, mean training return
//!   of the episodes that ended in the window, mean critic/actor loss and Q estimates
//!   over the window's updates, the last eval return, and per online layer the max
//!   |activation| seen and the saturation/wrap counts of all its casts in the window.
//!   With a QAT schedule (`[schedule]`, `crate::schedule`) a last column `schedule`
//!   names the quantizer (`affine16`, `ap_fixed16`) on the row of the switch step,
//!   which is always written, and is empty elsewhere.
//! - `quant.csv`: the same rows in long form per network, layer and tensor class:
//!   format, elements cast, saturated, wrapped, NaN, Inf, and the range observers
//!   (max |x|, EMA of the max, 99.9th percentile). The format is what casts the class
//!   from the row's step on: from the schedule's switch row, the derived `ap_fixed`
//!   format or the affine quantizer (`affine<16,delta=...,z=...>`); the counts of that
//!   row are the window's, cast before the switch.
//! - `eval.csv`: every evaluation: mean, std, min, max return over the episodes.
//! - `episodes.csv`: every training episode: end step, return, length.
//! - `events.out.tfevents.fixar`: the same scalars for TensorBoard (`crate::tfevents`)
//!   under CleanRL's tags: per episode `charts/episodic_return` and
//!   `charts/episodic_length` (episodes.csv); per evaluation `eval/return` (the mean),
//!   `eval/return_std`, `eval/return_min`, `eval/return_max` (eval.csv); per metrics row
//!   `charts/SPS` (env steps per second of training wall time, resumptions summed),
//!   `charts/train_return`, `losses/qf1_loss`, `losses/qf1_values`,
//!   `losses/actor_loss`, with TD3 also `losses/qf2_loss`, `losses/qf2_values` and
//!   `losses/qf_loss` (CleanRL's: the mean of the two critics' losses, i.e. half of
//!   metrics.csv's `critic_loss`), `quant/saturated`, `quant/wrapped`, and per quant.csv
//!   row `quant/<layer>/<class>/{saturations,wraps,max_abs,ema,p999}`. Every value is
//!   the CSV's as f32, at the CSV row's step, except `charts/SPS` and TD3's per-critic
//!   losses, which have no column (their sum is `critic_loss`).
//! - `checkpoint.bin`: the whole state (see [`Trainer::checkpoint`]).
//! - `weights.safetensors`: the online networks' weights as of the checkpoint, written
//!   atomically right after it (`crate::weights`).
//!
//! None of the CSVs holds a wall-clock figure, so the same config and seed give
//! byte-identical CSVs, and so does a resumed run. The event file holds wall times and
//! `charts/SPS`; a resume cuts it back to the checkpoint like the CSVs, so it holds the
//! same scalars at the same steps.

mod branch;
mod control;
mod persist;
mod record;
mod schedule;
mod summary;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use envs::{Env, EnvError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::checkpoint::{CheckpointError, CheckpointReader, CheckpointWriter, RngState};
use crate::config::{Algo, TrainConfig};
use crate::dpg::Agent;
use crate::noise::ExplorationNoise;
use crate::precision::TensorClass;
use crate::replay::ReplayBuffer;
use crate::{layout, tfevents};
pub use branch::BranchError;
pub use persist::{build_agent, load_agent, save_agent};
use record::{EventsMark, Recorder, EPISODES, EVAL, METRICS, QUANT};
pub use summary::{parse_seeds, AcrossSeeds, SeedsError, Summary};

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("environment `{id}`: {source}")]
    Env { id: String, source: EnvError },
    #[error(
        "non-finite value at env step {step} (update {update}): network `{network}`, layer `{layer}`, \
         tensor class `{class}` ({nan} NaN, {inf} Inf); the last good checkpoint is kept"
    )]
    NonFinite {
        step: u64,
        update: u64,
        network: String,
        layer: String,
        class: TensorClass,
        nan: u64,
        inf: u64,
    },
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("config: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Schedule(#[from] crate::schedule::ScheduleError),
    /// `Trainer::branch` refused: the configs or the checkpoint do not allow it.
    #[error("{0}")]
    Branch(#[from] BranchError),
    /// A run-directory file does not hold what the checkpoint recorded; nothing was
    /// changed.
    #[error(
        "{path}: {what}; the run directory was left as it is (restore the file, or start \
         the seed again)"
    )]
    Damaged { path: PathBuf, what: String },
    #[error(
        "{path} was trained with another config than the run's ({keys}); was the run's \
         config edited after it started? A run continues with the config it started with"
    )]
    ConfigChanged { path: PathBuf, keys: String },
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the progress bar shows.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub step: u64,
    pub total: u64,
    pub updates: u64,
    pub last_eval: Option<f64>,
}

/// One evaluation: deterministic policy, `episodes` episodes on the eval env.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub step: u64,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    pub episodes: u32,
}

/// The outcome of a finished seed (what `summary.json` reports per seed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedResult {
    pub seed: u64,
    /// Mean return over the episodes of the last evaluation.
    pub final_eval_return: f64,
    pub final_eval_std: f64,
    pub steps: u64,
    pub updates: u64,
    /// Wall time of the whole run (summed over resumptions).
    pub wall_time_s: f64,
    /// Gradient updates per second of wall time (env stepping and evaluation included).
    pub updates_per_s: f64,
    /// Gradient updates per second of time spent inside updates only.
    pub update_only_per_s: f64,
    pub eval_curve: Vec<EvalResult>,
    /// The arithmetic of the evaluation episodes: `exact integer` (the exported actor's
    /// integer inference, `deploy::ExactPolicy`), `float` (a float actor), or
    /// `emulated: <why the actor does not deploy>` (the training forward).
    #[serde(default)]
    pub eval_arithmetic: String,
    /// How the networks' GEMMs ran (`exact`, `fast`, or per network when they differ).
    #[serde(default)]
    pub gemm: String,
    /// With `fast` GEMMs: the fraction of cast GEMM outputs (forward, weight gradient,
    /// back-propagated error; actor and first critic, on one replay batch at the end of
    /// training) whose code differs from the exact GEMM's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_gemm_mismatch: Option<f64>,
}

/// How the evaluation episodes act (see [`SeedResult::eval_arithmetic`]).
enum EvalPolicy {
    /// Not chosen yet (before the first evaluation).
    Unset,
    Float,
    Exact(Box<crate::deploy::ExactPolicy>),
    /// The actor does not deploy (the reason); the training forward acts.
    Emulated(String),
}

impl EvalPolicy {
    fn describe(&self) -> String {
        match self {
            EvalPolicy::Unset => String::new(),
            EvalPolicy::Float => "float".into(),
            EvalPolicy::Exact(_) => "exact integer".into(),
            EvalPolicy::Emulated(why) => format!("emulated: {why}"),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Window {
    episodes: u64,
    return_sum: f64,
    updates: u64,
    critic_loss_sum: f64,
    /// Each critic's loss (the event file's `losses/qf1_loss`, `losses/qf2_loss`).
    #[serde(default)]
    qf1_loss_sum: f64,
    #[serde(default)]
    qf2_loss_sum: f64,
    actor_updates: u64,
    actor_loss_sum: f64,
    q1_sum: f64,
    q2_sum: f64,
}

/// Counters and episode state: everything of the loop besides agent, buffer and RNGs.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LoopState {
    step: u64,
    episode: u64,
    need_reset: bool,
    ep_return: f64,
    ep_len: u64,
    obs: Vec<f32>,
    window: Window,
    evals: Vec<EvalResult>,
    next_checkpoint: u64,
    elapsed_s: f64,
    update_s: f64,
    finished: bool,
    /// See [`SeedResult::eval_arithmetic`] (of the last evaluation).
    #[serde(default)]
    eval_arithmetic: String,
    /// See [`SeedResult::fast_gemm_mismatch`] (measured when the run finishes).
    #[serde(default)]
    fast_gemm_mismatch: Option<f64>,
}

/// The keys whose values differ between two configs, as `key: a vs b`.
fn config_difference(a: &TrainConfig, b: &TrainConfig) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return "they differ".into();
    };
    let diff: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| {
            let other = b.get(k).unwrap_or(&serde_json::Value::Null);
            format!("`{k}`: {v} in the checkpoint, {other} in the config")
        })
        .collect();
    diff.join(", ")
}

/// A well-mixed 64-bit seed for stream `k` of run seed `seed` (SplitMix64 finaliser).
pub fn derive_seed(seed: u64, salt: u64, k: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(k);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const SALT_TRAIN_EPISODE: u64 = 1;
const SALT_EVAL_EPISODE: u64 = 2;
const SALT_INIT: u64 = 3;
const SALT_LOOP: u64 = 4;
const SALT_QUANT: u64 = 5;
const SALT_MISMATCH: u64 = 6;

/// One seed's training run, resumable.
pub struct Trainer {
    cfg: TrainConfig,
    seed: u64,
    agent: Box<dyn Agent>,
    dir: PathBuf,
    env: Box<dyn Env>,
    eval_env: Box<dyn Env>,
    buffer: ReplayBuffer,
    noise: ExplorationNoise,
    rng: ChaCha8Rng,
    low: Vec<f32>,
    high: Vec<f32>,
    scale: Vec<f32>,
    st: LoopState,
    rec: Recorder,
    eval_policy: EvalPolicy,
    /// Set (e.g. by a signal handler) to stop at the next episode boundary with a
    /// checkpoint: [`Trainer::stop_when`].
    stop: Option<&'static std::sync::atomic::AtomicBool>,
}

fn make_env(id: &str) -> Result<Box<dyn Env>, TrainError> {
    envs::make(id).map_err(|source| TrainError::Env {
        id: id.to_string(),
        source,
    })
}

impl Trainer {
    /// A fresh run writing into `dir` (created if missing; its CSVs are overwritten).
    pub fn new(cfg: TrainConfig, seed: u64, dir: &Path) -> Result<Self, TrainError> {
        cfg.validate().map_err(TrainError::Config)?;
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut t = Self::assemble(cfg, seed, dir)?;
        let header = t.metrics_header();
        t.rec = Recorder::create(dir, &header)?;
        Ok(t)
    }

    /// Continues the run in `dir` from its checkpoint (config and seed come from it).
    pub fn resume(dir: &Path) -> Result<Self, TrainError> {
        Self::resume_expecting(dir, None)
    }

    /// [`Trainer::resume`], refusing (before anything is changed) a checkpoint trained
    /// with another config than `expected`: the run's config was edited after it began.
    pub fn resume_expecting(
        dir: &Path,
        expected: Option<&TrainConfig>,
    ) -> Result<Self, TrainError> {
        let path = dir.join(layout::CHECKPOINT);
        let r = CheckpointReader::read(&path)?;
        let cfg: TrainConfig = r.meta("config")?;
        cfg.validate()?;
        if let Some(want) = expected.filter(|&w| *w != cfg) {
            return Err(TrainError::ConfigChanged {
                path,
                keys: config_difference(&cfg, want),
            });
        }
        let seed: u64 = r.meta("seed")?;
        let marks: Vec<u64> = r.meta("csv_marks")?;
        // Checkpoints before CSV checksums (format 2 without them) have no `csv_crcs`.
        let crcs: Option<Vec<u32>> = match r.meta("csv_crcs") {
            Ok(c) => Some(c),
            Err(CheckpointError::MissingField(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let events = EventsMark::of(&r)?;
        let mut t = Self::assemble(cfg, seed, dir)?;
        t.restore(&r)?;
        // Last, once everything else is known to fit: the CSVs and the event file are
        // checked, then cut back to the checkpoint.
        t.rec = Recorder::reopen(dir, &marks, crcs.as_deref(), events)?;
        if t.st.finished {
            // A run's last checkpoint may fall inside an episode, and checkpoints hold no
            // env state: whoever continues a finished run (the QAT ladder) starts a
            // fresh episode. (Every other checkpoint is taken at an episode boundary.)
            t.end_episode();
        }
        Ok(t)
    }

    fn assemble(cfg: TrainConfig, seed: u64, dir: &Path) -> Result<Self, TrainError> {
        let env = make_env(&cfg.env_id)?;
        let eval_env = make_env(&cfg.env_id)?;
        let (obs_space, act_space) = (env.observation_space().clone(), env.action_space().clone());
        let agent = build_agent(&cfg, &obs_space, &act_space, seed);
        let obs_dim = obs_space.low.len();
        let act_dim = act_space.low.len();
        let scale = act_space
            .low
            .iter()
            .zip(&act_space.high)
            .map(|(l, h)| (h - l) / 2.0)
            .collect();
        let st = LoopState {
            step: 0,
            episode: 0,
            need_reset: true,
            ep_return: 0.0,
            ep_len: 0,
            obs: vec![0.0; obs_dim],
            window: Window::default(),
            evals: Vec::new(),
            next_checkpoint: cfg.checkpoint_every,
            elapsed_s: 0.0,
            update_s: 0.0,
            finished: false,
            eval_arithmetic: String::new(),
            fast_gemm_mismatch: None,
        };
        Ok(Trainer {
            buffer: ReplayBuffer::new(replay_capacity(&cfg), obs_dim, act_dim),
            noise: cfg.exploration_noise(act_dim),
            rng: ChaCha8Rng::seed_from_u64(derive_seed(seed, SALT_LOOP, 0)),
            low: act_space.low,
            high: act_space.high,
            scale,
            st,
            eval_policy: EvalPolicy::Unset,
            stop: None,
            rec: Recorder {
                files: Vec::new(),
                events: None,
            },
            dir: dir.to_path_buf(),
            cfg,
            seed,
            agent,
            env,
            eval_env,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Env steps taken so far.
    pub fn step(&self) -> u64 {
        self.st.step
    }

    pub fn is_finished(&self) -> bool {
        self.st.finished
    }

    /// Abandons the episode in progress: the next step starts a new one. Checkpoints hold
    /// no env state, so a run that stopped mid-episode (its `total_timesteps` fell inside
    /// one) calls this before [`Trainer::checkpoint`] to leave a resumable checkpoint
    /// (the QAT ladder branches rungs from such checkpoints).
    pub fn end_episode(&mut self) {
        self.st.need_reset = true;
    }

    pub fn evals(&self) -> &[EvalResult] {
        &self.st.evals
    }

    fn online_layers(&self) -> Vec<String> {
        let n_online = match self.cfg.algo {
            Algo::Td3 => 3,
            Algo::Ddpg => 2,
        };
        self.agent.networks()[..n_online]
            .iter()
            .flat_map(|n| n.layers().iter().map(|l| l.name().to_string()))
            .collect()
    }

    fn metrics_header(&self) -> String {
        let mut h = String::from("step,updates,episodes,train_return,critic_loss,actor_loss,q1,q2,eval_return,saturated,wrapped");
        for l in self.online_layers() {
            h.push_str(&format!(",{l}.act_max,{l}.saturated,{l}.wrapped"));
        }
        if self.cfg.schedule.is_on() {
            h.push_str(",schedule");
        }
        for (layer, class, _) in self.learned_points() {
            h.push_str(&format!(",{layer}.{class}.int_bits"));
        }
        h
    }

    /// Writes the whole state to `checkpoint.bin` atomically: config, seed, loop
    /// counters and episode state, CSV lengths, the training RNG, exploration noise,
    /// the agent (networks, targets, optimizer states, stochastic-rounding sources,
    /// statistics, observers) and the replay buffer. Taken only at episode boundaries
    /// (before the next reset), so the envs need no state of their own: every episode
    /// starts from `reset(seed)` with a seed derived from the run seed.
    pub fn checkpoint(&mut self) -> Result<(), TrainError> {
        let path = self.dir.join(layout::CHECKPOINT);
        let mut w = CheckpointWriter::default();
        w.meta("config", &self.cfg)?;
        w.meta("seed", self.seed)?;
        w.meta("loop", &self.st)?;
        w.meta("csv_marks", self.rec.marks()?)?;
        w.meta("csv_crcs", self.rec.crcs())?;
        w.meta("events_mark", self.rec.events_mark()?)?;
        w.meta("rng", RngState::of(&self.rng))?;
        w.meta("noise", &self.noise)?;
        save_agent(self.agent.as_ref(), &mut w)?;
        let (pos, len, fields) = self.buffer.state();
        w.meta("replay.pos", pos)?;
        // The capacity was sized from the config's total_timesteps when the buffer was
        // made; train_steps moves that total, so a resume must not size it afresh.
        w.meta("replay.capacity", self.buffer.capacity())?;
        w.meta("replay.len", len)?;
        for (name, f) in ["obs", "actions", "rewards", "next_obs", "terminated"]
            .iter()
            .zip(fields)
        {
            w.f32s(&format!("replay.{name}"), f)?;
        }
        w.write_atomic(&path).map_err(io_err(&path))?;
        self.write_weights()
    }

    /// `weights.safetensors` for the current networks (see `crate::weights`), written
    /// atomically. Networks whose stored values have no codes (non-finite; training
    /// stops on those anyway) leave no file rather than a stale one, with a warning.
    fn write_weights(&self) -> Result<(), TrainError> {
        let path = self.dir.join(layout::WEIGHTS);
        let info = [
            (
                "config",
                serde_json::to_string(&self.cfg).unwrap_or_default(),
            ),
            ("seed", self.seed.to_string()),
            ("step", self.st.step.to_string()),
            ("updates", self.agent.updates().to_string()),
        ];
        match crate::weights::safetensors_bytes(self.agent.as_ref(), &info) {
            Ok(bytes) => layout::write_atomic(&path, &bytes).map_err(io_err(&path)),
            Err(e) => {
                tracing::warn!(
                    "{}: not written: {}",
                    path.display(),
                    crate::qat::error_chain(&e)
                );
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&path)(e)),
                    _ => Ok(()),
                }
            }
        }
    }

    fn restore(&mut self, r: &CheckpointReader) -> Result<(), CheckpointError> {
        let st: LoopState = r.meta("loop")?;
        if st.obs.len() != self.st.obs.len() {
            return Err(CheckpointError::Mismatch(format!(
                "checkpoint observation has {} elements, the env {}",
                st.obs.len(),
                self.st.obs.len()
            )));
        }
        self.st = st;
        self.rng = r.meta::<RngState>("rng")?.restore()?;
        let noise: ExplorationNoise = r.meta("noise")?;
        if !noise.fits(&self.noise) {
            return Err(CheckpointError::Mismatch(
                "checkpoint exploration noise does not fit the config's".into(),
            ));
        }
        self.noise = noise;
        load_agent(self.agent.as_mut(), r)?;
        let fields = ["obs", "actions", "rewards", "next_obs", "terminated"]
            .map(|n| r.f32s(&format!("replay.{n}")));
        let [a, b, c, d, e] = fields;
        if r.has_meta("replay.capacity") {
            let cap: usize = r.meta("replay.capacity")?;
            self.buffer.set_capacity(cap.max(1));
        }
        self.buffer.restore(
            r.meta("replay.pos")?,
            r.meta("replay.len")?,
            [a?, b?, c?, d?, e?],
        )
    }

    /// Trains to `total_timesteps` (or stops before env step `stop_at`, leaving the last
    /// checkpoint: how tests emulate a kill), calling `progress` now and then.
    pub fn run(
        &mut self,
        stop_at: Option<u64>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Option<SeedResult>, TrainError> {
        let total = self.cfg.total_timesteps;
        let mut action = vec![0f32; self.low.len()];
        let mut next_obs = vec![0f32; self.st.obs.len()];
        let mut clock = Instant::now();
        while self.st.step < total {
            if stop_at == Some(self.st.step) {
                self.rec.marks()?;
                self.rec.flush_events()?;
                return Ok(None);
            }
            if self.st.need_reset {
                if self
                    .stop
                    .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst))
                {
                    // Asked to stop (preemption): checkpoint here so a resume loses nothing.
                    self.st.elapsed_s += clock.elapsed().as_secs_f64();
                    self.checkpoint()?;
                    return Ok(None);
                }
                if self.st.step >= self.st.next_checkpoint {
                    self.st.elapsed_s += clock.elapsed().as_secs_f64();
                    clock = Instant::now();
                    self.checkpoint()?;
                    let every = self.cfg.checkpoint_every;
                    self.st.next_checkpoint = (self.st.step / every + 1) * every;
                }
                let s = derive_seed(self.seed, SALT_TRAIN_EPISODE, self.st.episode);
                self.env
                    .reset(Some(s), &mut self.st.obs)
                    .map_err(|e| self.env_err(e))?;
                self.noise.reset();
                self.st.need_reset = false;
                self.st.ep_return = 0.0;
                self.st.ep_len = 0;
            }
            if self.st.step < self.cfg.learning_starts {
                for (i, a) in action.iter_mut().enumerate() {
                    *a = self.rng.gen_range(self.low[i]..=self.high[i]);
                }
            } else {
                self.agent.act(&self.st.obs, &mut action);
                self.check_action(&action)?;
                self.noise.perturb(
                    &mut action,
                    &self.scale,
                    &self.low,
                    &self.high,
                    &mut self.rng,
                );
            }
            let out = self
                .env
                .step(&action, &mut next_obs)
                .map_err(|e| self.env_err(e))?;
            self.buffer.push(
                &self.st.obs,
                &action,
                out.reward as f32,
                &next_obs,
                out.terminated,
            );
            self.st.obs.copy_from_slice(&next_obs);
            self.st.ep_return += out.reward;
            self.st.ep_len += 1;
            if out.done() {
                let line = format!(
                    "{},{},{},{}",
                    self.st.step + 1,
                    self.st.episode,
                    self.st.ep_return,
                    self.st.ep_len
                );
                self.rec.line(EPISODES, &line)?;
                self.rec.scalars(
                    self.st.step + 1,
                    &[
                        ("charts/episodic_return".into(), self.st.ep_return),
                        ("charts/episodic_length".into(), self.st.ep_len as f64),
                    ],
                )?;
                self.st.window.episodes += 1;
                self.st.window.return_sum += self.st.ep_return;
                self.st.episode += 1;
                self.st.need_reset = true;
            }
            if self.st.step >= self.cfg.learning_starts {
                let t = Instant::now();
                self.update_once()?;
                self.st.update_s += t.elapsed().as_secs_f64();
            }
            self.st.step += 1;
            let step = self.st.step;
            // The QAT schedule switches here, so step `delay`'s evaluation and its
            // (always written) log row see the new quantizers.
            let switched = self.schedule_switches_at(step);
            if switched {
                self.switch_schedule()?;
            }
            if step.is_multiple_of(self.cfg.eval_every) || step == total {
                let r = self.evaluate(self.cfg.eval_episodes)?;
                let line = format!(
                    "{},{},{},{},{},{}",
                    r.step, r.mean, r.std, r.min, r.max, r.episodes
                );
                self.rec.line(EVAL, &line)?;
                self.rec.scalars(
                    r.step,
                    &[
                        ("eval/return".into(), r.mean),
                        ("eval/return_std".into(), r.std),
                        ("eval/return_min".into(), r.min),
                        ("eval/return_max".into(), r.max),
                    ],
                )?;
                self.st.evals.push(r);
            }
            if step.is_multiple_of(self.cfg.log_every) || step == total || switched {
                self.log_row(self.st.elapsed_s + clock.elapsed().as_secs_f64())?;
            }
            if step.is_multiple_of(50) || step == total {
                progress(Progress {
                    step,
                    total,
                    updates: self.agent.updates(),
                    last_eval: self.st.evals.last().map(|e| e.mean),
                });
            }
        }
        self.st.elapsed_s += clock.elapsed().as_secs_f64();
        self.st.fast_gemm_mismatch = self.fast_gemm_mismatch();
        self.st.finished = true;
        self.checkpoint()?;
        Ok(Some(self.result()))
    }

    /// The result of a finished run (or of the state so far).
    pub fn result(&self) -> SeedResult {
        let last = self.st.evals.last();
        let updates = self.agent.updates();
        let per = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        SeedResult {
            seed: self.seed,
            final_eval_return: last.map_or(f64::NAN, |e| e.mean),
            final_eval_std: last.map_or(f64::NAN, |e| e.std),
            steps: self.st.step,
            updates,
            wall_time_s: self.st.elapsed_s,
            updates_per_s: per(updates, self.st.elapsed_s),
            update_only_per_s: per(updates, self.st.update_s),
            eval_curve: self.st.evals.clone(),
            eval_arithmetic: self.st.eval_arithmetic.clone(),
            gemm: self.gemm_description(),
            fast_gemm_mismatch: self.st.fast_gemm_mismatch,
        }
    }

    /// How the networks' GEMMs run (`auto` decided): `exact`, `fast` or `float` when all
    /// fixed-point networks agree, else per network.
    pub fn gemm_description(&self) -> String {
        let nets = self.agent.networks();
        let fixed: Vec<_> = nets.iter().filter(|n| !n.is_float()).collect();
        let name = |g: crate::precision::Gemm| format!("{g:?}").to_lowercase();
        match fixed.first() {
            None => "float".into(),
            Some(f) if fixed.iter().all(|n| n.gemm() == f.gemm()) => name(f.gemm()),
            Some(_) => fixed
                .iter()
                .map(|n| format!("{} {}", n.name(), name(n.gemm())))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// With some fixed-point network on `fast` GEMMs: how often its cast GEMM outputs
    /// differ from the exact ones (`mlp::fast_exact_mismatch`, actor and first critic) on
    /// one replay batch of up to 256 transitions and small seeded output errors. The
    /// sampling uses its own seeded stream, so training is unaffected.
    fn fast_gemm_mismatch(&mut self) -> Option<f64> {
        use crate::precision::Gemm;
        let nets = self.agent.networks();
        if !nets.iter().any(|n| !n.is_float() && n.gemm() == Gemm::Fast) || self.buffer.is_empty() {
            return None;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(self.seed, SALT_MISMATCH, 0));
        let n = self.buffer.len().min(256);
        let b = self.buffer.sample(n, &mut rng);
        let mut delta = |cols: usize, scale: f64| {
            let v: Vec<f64> = (0..n * cols)
                .map(|_| rng.gen_range(-scale..scale))
                .collect();
            Tensor::from_slice(&v).view([n as i64, cols as i64])
        };
        let nets = self.agent.networks();
        let (actor, critic) = (nets[0], nets[1]);
        let d_actor = delta(actor.out_dim(), 1e-3);
        let d_critic = delta(critic.out_dim(), 1e-2);
        let x_critic = Tensor::cat(&[b.obs.shallow_clone(), b.actions.shallow_clone()], 1);
        let (mut differ, mut total) = (0.0, 0u64);
        for (net, x, d) in [(actor, &b.obs, &d_actor), (critic, &x_critic, &d_critic)] {
            if net.is_float() || net.gemm() != Gemm::Fast {
                continue;
            }
            let Ok(rows) = crate::mlp::fast_exact_mismatch(net, x, d) else {
                continue;
            };
            for r in rows {
                for (rate, n) in [r.preact, r.grad, r.error].iter().zip(r.elements) {
                    if rate.is_finite() {
                        differ += rate * n as f64;
                        total += n;
                    }
                }
            }
        }
        (total > 0).then(|| differ / total as f64)
    }

    /// Chooses (or refreshes) the evaluation policy for the actor's current weights.
    fn refresh_eval_policy(&mut self) {
        let actor = self.agent.actor();
        if actor.is_float() {
            self.eval_policy = EvalPolicy::Float;
            return;
        }
        let result = match &mut self.eval_policy {
            EvalPolicy::Exact(p) => p.update(actor),
            _ => crate::deploy::ExactPolicy::new(actor)
                .map(|p| self.eval_policy = EvalPolicy::Exact(Box::new(p))),
        };
        if let Err(e) = result {
            let why = crate::qat::error_chain(&e);
            if !matches!(&self.eval_policy, EvalPolicy::Emulated(w) if *w == why) {
                tracing::warn!(
                    "evaluation runs the training forward, not exact integer inference: {why}"
                );
            }
            self.eval_policy = EvalPolicy::Emulated(why);
        }
    }

    fn env_err(&self, source: EnvError) -> TrainError {
        TrainError::Env {
            id: self.cfg.env_id.clone(),
            source,
        }
    }

    fn non_finite(&self) -> TrainError {
        let (network, f) = self.agent.find_non_finite().unwrap_or_else(|| {
            let n = crate::mlp::NonFinite {
                layer: "actor.output".into(),
                class: TensorClass::Activation,
                nan: 0,
                inf: 0,
            };
            ("actor".into(), n)
        });
        TrainError::NonFinite {
            step: self.st.step,
            update: self.agent.updates(),
            network,
            layer: f.layer,
            class: f.class,
            nan: f.nan,
            inf: f.inf,
        }
    }

    fn check_action(&self, action: &[f32]) -> Result<(), TrainError> {
        if action.iter().all(|a| a.is_finite()) {
            Ok(())
        } else {
            Err(self.non_finite())
        }
    }

    /// One gradient update on a sampled minibatch, with the NaN/Inf check.
    pub fn update_once(&mut self) -> Result<(), TrainError> {
        // Observe a run of `policy_frequency` consecutive updates every `range_every`:
        // TD3/DDPG train the actor on one update in `policy_frequency`, and a single
        // observed update could fall on the critics-only ones forever.
        let observe = self.cfg.range_every > 0
            && self.agent.updates() % self.cfg.range_every < self.cfg.policy_frequency.max(1);
        for n in self.agent.networks_mut() {
            n.set_observe(observe);
        }
        let batch = self.buffer.sample(self.cfg.batch_size, &mut self.rng);
        let u = self.agent.update(&batch, &mut self.rng);
        let finite = u.critic_loss.is_finite()
            && u.q1_mean.is_finite()
            && u.actor_loss.is_none_or(f64::is_finite);
        if !finite
            || self
                .agent
                .networks()
                .iter()
                .any(|n| n.has_non_finite_casts())
        {
            return Err(self.non_finite());
        }
        let w = &mut self.st.window;
        w.updates += 1;
        w.critic_loss_sum += u.critic_loss;
        w.qf1_loss_sum += u.qf1_loss;
        w.qf2_loss_sum += u.qf2_loss.unwrap_or(0.0);
        w.q1_sum += u.q1_mean;
        w.q2_sum += u.q2_mean.unwrap_or(0.0);
        if let Some(a) = u.actor_loss {
            w.actor_updates += 1;
            w.actor_loss_sum += a;
        }
        Ok(())
    }

    /// `episodes` deterministic episodes on the eval env; episode i always starts from
    /// the same seeded reset, so evaluations differ only by the policy.
    pub fn evaluate(&mut self, episodes: u32) -> Result<EvalResult, TrainError> {
        let mut obs = vec![0f32; self.st.obs.len()];
        let mut next = obs.clone();
        let mut action = vec![0f32; self.low.len()];
        let mut returns = Vec::with_capacity(episodes as usize);
        self.refresh_eval_policy();
        self.st.eval_arithmetic = self.eval_policy.describe();
        for i in 0..episodes {
            let s = derive_seed(self.seed, SALT_EVAL_EPISODE, i as u64);
            self.eval_env
                .reset(Some(s), &mut obs)
                .map_err(|e| self.env_err(e))?;
            let mut ret = 0.0;
            loop {
                match &self.eval_policy {
                    EvalPolicy::Exact(p) => p.act(&obs, &mut action),
                    _ => self.agent.act(&obs, &mut action),
                }
                self.check_action(&action)?;
                let out = self
                    .eval_env
                    .step(&action, &mut next)
                    .map_err(|e| self.env_err(e))?;
                ret += out.reward;
                obs.copy_from_slice(&next);
                if out.done() {
                    break;
                }
            }
            returns.push(ret);
        }
        let (mean, std) = crate::stats::mean_std(&returns).unwrap_or((f64::NAN, f64::NAN));
        let (min, max) = crate::stats::min_max(&returns);
        Ok(EvalResult {
            step: self.st.step,
            mean,
            std,
            min,
            max,
            episodes,
        })
    }

    /// The metrics.csv row and its quant.csv rows for the window that ends now, and the
    /// same scalars as one event (`elapsed_s`: training wall time so far, for
    /// `charts/SPS`).
    fn log_row(&mut self, elapsed_s: f64) -> Result<(), TrainError> {
        let step = self.st.step;
        let w = std::mem::take(&mut self.st.window);
        let td3 = self.cfg.algo == Algo::Td3;
        let avg = |s: f64, n: u64| (n > 0).then(|| s / n as f64);
        let mean = |s: f64, n: u64| avg(s, n).map_or(String::new(), |m| m.to_string());
        let mut scalars: Vec<(String, f64)> = Vec::new();
        if elapsed_s > 0.0 {
            scalars.push((tfevents::SPS_TAG.into(), step as f64 / elapsed_s));
        }
        let critic_n = w.updates;
        let window: [(&str, Option<f64>, bool); 7] = [
            ("charts/train_return", avg(w.return_sum, w.episodes), true),
            ("losses/qf1_loss", avg(w.qf1_loss_sum, critic_n), true),
            ("losses/qf1_values", avg(w.q1_sum, critic_n), true),
            (
                "losses/actor_loss",
                avg(w.actor_loss_sum, w.actor_updates),
                true,
            ),
            ("losses/qf2_loss", avg(w.qf2_loss_sum, critic_n), td3),
            ("losses/qf2_values", avg(w.q2_sum, critic_n), td3),
            // CleanRL's TD3 `qf_loss` is the mean of the two critics' losses.
            (
                "losses/qf_loss",
                avg(w.critic_loss_sum, critic_n).map(|c| c / 2.0),
                td3,
            ),
        ];
        for (tag, v, on) in window {
            if let (true, Some(v)) = (on, v) {
                scalars.push((tag.into(), v));
            }
        }
        let eval = self
            .st
            .evals
            .last()
            .map_or(String::new(), |e| e.mean.to_string());
        let n_online = self.online_layers().len();
        let mut per_layer = String::new();
        let mut quant_lines = Vec::new();
        let (mut sat_all, mut wrap_all) = (0u64, 0u64);
        let mut seen = 0;
        for net in self.agent.networks_mut() {
            let name = net.name().to_string();
            for l in net.layers_mut() {
                let stats = l.take_stats();
                let (sat, wrap) = stats
                    .iter()
                    .fold((0, 0), |(s, w), q| (s + q.saturated, w + q.wrapped));
                sat_all += sat;
                wrap_all += wrap;
                if seen < n_online {
                    let act_max = l.ranges()[TensorClass::Activation.index()].max_abs.range();
                    per_layer.push_str(&format!(",{act_max},{sat},{wrap}"));
                }
                seen += 1;
                for c in TensorClass::ALL {
                    let q = &stats[c.index()];
                    let r = &l.ranges()[c.index()];
                    let max_abs = r.max_abs.range();
                    if q.elements == 0 && max_abs == 0.0 {
                        continue;
                    }
                    let tag = |what: &str| format!("quant/{}/{c}/{what}", l.name());
                    scalars.extend([
                        (tag("saturations"), q.saturated as f64),
                        (tag("wraps"), q.wrapped as f64),
                        (tag("max_abs"), max_abs),
                        (tag("ema"), r.ema.range()),
                        (tag("p999"), r.percentile.range()),
                    ]);
                    quant_lines.push(format!(
                        "{step},{},{},{c},\"{}\",{},{},{},{},{},{max_abs},{},{}",
                        name,
                        l.name(),
                        l.cast_label(c),
                        q.elements,
                        q.saturated,
                        q.wrapped,
                        q.nan,
                        q.inf,
                        r.ema.range(),
                        r.percentile.range()
                    ));
                }
            }
        }
        // The schedule's column: its quantizer and width at the switch row, else empty.
        let schedule = match self.cfg.schedule.is_on() {
            false => String::new(),
            true if self.schedule_switches_at(step) => format!(",{}", self.cfg.schedule.label()),
            true => ",".to_string(),
        };
        let learned: String = self
            .learned_points()
            .iter()
            .map(|(_, _, s)| format!(",{s}"))
            .collect();
        let line = format!(
            "{step},{},{},{},{},{},{},{},{eval},{sat_all},{wrap_all}{per_layer}{schedule}{learned}",
            self.agent.updates(),
            self.st.episode,
            mean(w.return_sum, w.episodes),
            mean(w.critic_loss_sum, w.updates),
            mean(w.actor_loss_sum, w.actor_updates),
            mean(w.q1_sum, w.updates),
            if td3 {
                mean(w.q2_sum, w.updates)
            } else {
                String::new()
            },
        );
        self.rec.line(METRICS, &line)?;
        for l in quant_lines {
            self.rec.line(QUANT, &l)?;
        }
        scalars.push(("quant/saturated".into(), sat_all as f64));
        scalars.push(("quant/wrapped".into(), wrap_all as f64));
        self.rec.scalars(step, &scalars)?;
        self.rec.flush_events()
    }
}

/// The replay buffer's capacity for `cfg`: `min(buffer_size, total_timesteps)`, so a
/// short run does not reserve a million transitions.
fn replay_capacity(cfg: &TrainConfig) -> usize {
    cfg.buffer_size.min(cfg.total_timesteps as usize).max(1)
}
