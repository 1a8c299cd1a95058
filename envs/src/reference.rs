//! Recorded Gymnasium trajectories and replaying them against our environments.
//!
//! The file format is the one of `../shared/testdata/gymnasium/classic_control.json`:
//! `{"generator": ..., "episodes": [{"env", "initial_state", "actions", "obs",
//! "rewards", "terminated", "truncated"}, ...]}` where `obs[0]` is what `reset`
//! returned and `obs[t+1]` what `step(actions[t])` returned. `fixar env rollout
//! --format json` writes the same format.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{make, Env, EnvError};

/// Gymnasium's tolerance for a match: every observation and reward within 1e-5.
pub const DEFAULT_TOLERANCE: f64 = 1e-5;

/// Why an episode could not be replayed or compared.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// `obs` must hold one observation more than there are actions (`obs[0]` is `reset`'s).
    #[error("{actions} actions need {} observations, found {found}", .actions + 1)]
    ObservationCount { actions: usize, found: usize },
    /// `rewards`, `terminated` or `truncated` does not hold one entry per action.
    #[error("{actions} actions but {found} {array}")]
    ArrayLength {
        actions: usize,
        array: &'static str,
        found: usize,
    },
    /// A recorded observation does not have the env's observation dimension.
    #[error("recorded observation has {recorded} elements, the env's has {ours}")]
    ObservationWidth { recorded: usize, ours: usize },
    /// A NaN in the env's output or in the recording: NaN equals nothing, so the
    /// episode cannot match whatever the tolerance.
    #[error("{at}: {quantity} is NaN (ours {ours}, recorded {recorded})")]
    NotANumber {
        at: ReplayPoint,
        quantity: Quantity,
        ours: f64,
        recorded: f64,
    },
    /// Making the env or stepping it failed.
    #[error(transparent)]
    Env(#[from] EnvError),
}

/// Where in a replayed episode something was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayPoint {
    /// The observation `reset_to_state` returned (`obs[0]`).
    Reset,
    /// The answer to `actions[t]` (`obs[t + 1]`, `rewards[t]`).
    Step(usize),
}

impl fmt::Display for ReplayPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayPoint::Reset => write!(f, "after reset"),
            ReplayPoint::Step(t) => write!(f, "at step {t}"),
        }
    }
}

/// Which compared value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantity {
    ObservationElement(usize),
    Reward,
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quantity::ObservationElement(i) => write!(f, "observation element {i}"),
            Quantity::Reward => write!(f, "the reward"),
        }
    }
}

/// |ours − recorded|, 0 for equal values (infinities included), NaN if either is NaN.
fn deviation(ours: f64, recorded: f64) -> f64 {
    if ours == recorded {
        0.0
    } else {
        (ours - recorded).abs()
    }
}

/// A file of recorded episodes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReferenceFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
    pub episodes: Vec<ReferenceEpisode>,
}

/// One recorded episode.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReferenceEpisode {
    pub env: String,
    /// The env's physical state right after `reset` (see [`Env::reset_to_state`]).
    pub initial_state: Vec<f64>,
    pub actions: Vec<Vec<f32>>,
    pub obs: Vec<Vec<f64>>,
    pub rewards: Vec<f64>,
    pub terminated: Vec<bool>,
    pub truncated: Vec<bool>,
}

impl ReferenceEpisode {
    /// Checks that the arrays have consistent lengths.
    pub fn validate(&self) -> Result<(), ReplayError> {
        let t = self.actions.len();
        if self.obs.len() != t + 1 {
            return Err(ReplayError::ObservationCount {
                actions: t,
                found: self.obs.len(),
            });
        }
        for (name, len) in [
            ("rewards", self.rewards.len()),
            ("terminated", self.terminated.len()),
            ("truncated", self.truncated.len()),
        ] {
            if len != t {
                return Err(ReplayError::ArrayLength {
                    actions: t,
                    array: name,
                    found: len,
                });
            }
        }
        Ok(())
    }
}

/// How one replayed episode compares with its recording.
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodeReport {
    /// Position of the episode in the file.
    pub index: usize,
    pub env: String,
    /// Steps replayed (fewer than recorded when replay stopped on an error).
    pub steps: usize,
    /// Largest |ours − recorded| over every observation element (including `obs[0]`);
    /// NaN if any element, ours or recorded, is NaN.
    pub max_obs_dev: f64,
    /// Largest |ours − recorded| over rewards; NaN if any reward is NaN.
    pub max_reward_dev: f64,
    /// First step whose terminated/truncated flags differ.
    pub first_flag_mismatch: Option<usize>,
    /// Why the episode could not be replayed (unknown env, bad file, env error) or
    /// compared (the first NaN, with where it was): a [`ReplayError`]'s message.
    pub error: Option<String>,
    pub passed: bool,
}

/// Runs one episode (at most `max_steps` steps) from `reset(Some(seed))`, choosing
/// actions with `policy(obs, action)`, and records it in the reference format. The
/// initial state is what [`Env::state`] reports (empty if the env cannot report it;
/// such an episode cannot be replayed).
pub fn record(
    env: &mut dyn Env,
    seed: u64,
    max_steps: u32,
    mut policy: impl FnMut(&[f32], &mut [f32]),
) -> Result<ReferenceEpisode, EnvError> {
    let mut obs = vec![0.0f32; env.observation_space().dim()];
    let mut action = vec![0.0f32; env.action_space().dim()];
    env.reset(Some(seed), &mut obs)?;
    let widen = |o: &[f32]| o.iter().map(|v| f64::from(*v)).collect::<Vec<f64>>();
    let mut ep = ReferenceEpisode {
        env: env.id().to_string(),
        initial_state: env.state().unwrap_or_default(),
        obs: vec![widen(&obs)],
        ..ReferenceEpisode::default()
    };
    for _ in 0..max_steps {
        policy(&obs, &mut action);
        let out = env.step(&action, &mut obs)?;
        ep.actions.push(action.clone());
        ep.obs.push(widen(&obs));
        ep.rewards.push(out.reward);
        ep.terminated.push(out.terminated);
        ep.truncated.push(out.truncated);
        if out.done() {
            break;
        }
    }
    Ok(ep)
}

/// Parses a reference file.
pub fn parse(text: &str) -> Result<ReferenceFile, serde_json::Error> {
    serde_json::from_str(text)
}

/// Replays one episode on `env` from its initial state and actions.
pub fn replay_on(
    env: &mut dyn Env,
    ep: &ReferenceEpisode,
    index: usize,
    tolerance: f64,
) -> EpisodeReport {
    let mut rep = EpisodeReport {
        index,
        env: ep.env.clone(),
        steps: 0,
        max_obs_dev: 0.0,
        max_reward_dev: 0.0,
        first_flag_mismatch: None,
        error: None,
        passed: false,
    };
    if let Err(e) = ep.validate() {
        rep.error = Some(e.to_string());
        return rep;
    }
    let dim = env.observation_space().dim();
    let mut obs = vec![0.0f32; dim];
    // The largest deviation. A NaN (ours or recorded) ends the replay with where it
    // was: folding it with `f64::max` would drop it and pass the episode.
    let obs_dev = |at: ReplayPoint, ours: &[f32], theirs: &[f64]| -> Result<f64, ReplayError> {
        if theirs.len() != ours.len() {
            return Err(ReplayError::ObservationWidth {
                recorded: theirs.len(),
                ours: ours.len(),
            });
        }
        let mut max = 0.0;
        for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
            let (a, b) = (f64::from(*a), *b);
            let dev = deviation(a, b);
            if dev.is_nan() {
                return Err(ReplayError::NotANumber {
                    at,
                    quantity: Quantity::ObservationElement(i),
                    ours: a,
                    recorded: b,
                });
            }
            max = f64::max(max, dev);
        }
        Ok(max)
    };
    let mut run = |rep: &mut EpisodeReport, obs: &mut [f32]| -> Result<(), ReplayError> {
        env.reset_to_state(&ep.initial_state, obs)?;
        rep.max_obs_dev = obs_dev(ReplayPoint::Reset, obs, &ep.obs[0])?;
        for (t, action) in ep.actions.iter().enumerate() {
            let out = env.step(action, obs)?;
            rep.steps = t + 1;
            let at = ReplayPoint::Step(t);
            rep.max_obs_dev = rep.max_obs_dev.max(obs_dev(at, obs, &ep.obs[t + 1])?);
            let dev = deviation(out.reward, ep.rewards[t]);
            if dev.is_nan() {
                return Err(ReplayError::NotANumber {
                    at,
                    quantity: Quantity::Reward,
                    ours: out.reward,
                    recorded: ep.rewards[t],
                });
            }
            rep.max_reward_dev = rep.max_reward_dev.max(dev);
            if rep.first_flag_mismatch.is_none()
                && (out.terminated != ep.terminated[t] || out.truncated != ep.truncated[t])
            {
                rep.first_flag_mismatch = Some(t);
            }
        }
        Ok(())
    };
    if let Err(e) = run(&mut rep, &mut obs) {
        if let ReplayError::NotANumber { quantity, .. } = &e {
            match quantity {
                Quantity::ObservationElement(_) => rep.max_obs_dev = f64::NAN,
                Quantity::Reward => rep.max_reward_dev = f64::NAN,
            }
        }
        rep.error = Some(e.to_string());
    }
    // NaN deviations fail too (comparisons with NaN are false).
    rep.passed = rep.error.is_none()
        && rep.first_flag_mismatch.is_none()
        && rep.max_obs_dev <= tolerance
        && rep.max_reward_dev <= tolerance;
    rep
}

/// An env made for an id, or why it could not be made.
type MadeEnv = Result<Box<dyn Env>, EnvError>;

/// Replays every episode, making each env by id with [`make`] (one env per id, reused).
pub fn replay_file(file: &ReferenceFile, tolerance: f64) -> Vec<EpisodeReport> {
    replay_file_with(file, tolerance, |_| {})
}

/// [`replay_file`], calling `on_episode` after each episode (for progress display).
pub fn replay_file_with(
    file: &ReferenceFile,
    tolerance: f64,
    mut on_episode: impl FnMut(&EpisodeReport),
) -> Vec<EpisodeReport> {
    let mut envs: Vec<(String, MadeEnv)> = Vec::new();
    file.episodes
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            let slot = match envs.iter().position(|(id, _)| *id == ep.env) {
                Some(p) => p,
                None => {
                    envs.push((ep.env.clone(), make(&ep.env)));
                    envs.len() - 1
                }
            };
            let report = match &mut envs[slot].1 {
                Ok(env) => replay_on(env.as_mut(), ep, i, tolerance),
                Err(e) => EpisodeReport {
                    index: i,
                    env: ep.env.clone(),
                    steps: 0,
                    max_obs_dev: f64::NAN,
                    max_reward_dev: f64::NAN,
                    first_flag_mismatch: None,
                    error: Some(e.to_string()),
                    passed: false,
                },
            };
            on_episode(&report);
            report
        })
        .collect()
}

/// Per env id (in order of first appearance): episodes, passed, largest deviations.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvSummary {
    pub env: String,
    pub episodes: usize,
    pub passed: usize,
    pub max_obs_dev: f64,
    pub max_reward_dev: f64,
}

/// Aggregates episode reports per env id.
pub fn summarize(reports: &[EpisodeReport]) -> Vec<EnvSummary> {
    let mut out: Vec<EnvSummary> = Vec::new();
    for r in reports {
        let s = match out.iter_mut().position(|s| s.env == r.env) {
            Some(p) => &mut out[p],
            None => {
                out.push(EnvSummary {
                    env: r.env.clone(),
                    episodes: 0,
                    passed: 0,
                    max_obs_dev: 0.0,
                    max_reward_dev: 0.0,
                });
                out.last_mut().expect("just pushed")
            }
        };
        s.episodes += 1;
        s.passed += usize::from(r.passed);
        // NaN (episode not replayable) propagates so it is visible.
        s.max_obs_dev = nan_max(s.max_obs_dev, r.max_obs_dev);
        s.max_reward_dev = nan_max(s.max_reward_dev, r.max_reward_dev);
    }
    out
}

/// The larger of two deviations, NaN if either is NaN.
fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}
