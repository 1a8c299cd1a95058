//! The training configuration: one flat struct with CleanRL's names and defaults (TOML
//! keys are the field names; unknown keys are errors).

use serde::{Deserialize, Serialize};

mod file;
pub use file::{load, parse_set, ConfigFileError};

use crate::noise::ExplorationNoise;
use crate::optim::OptimizerConfig;
use crate::precision::{FormatsConfig, Gemm, PrecisionSpec, Preset, TrainMode};
use crate::schedule::ScheduleConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algo {
    Ddpg,
    Td3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Adam,
    Sgd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseKind {
    Gaussian,
    Ou,
}

/// The values of a config that serde accepts but training cannot use, one message per
/// key (each names the key and the limit).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Widest hidden layer a config may ask for (64x CleanRL's 256).
pub const MAX_HIDDEN_UNITS: usize = 1 << 14;
/// Most weights in one hidden-to-hidden layer (2^26: half a GB of f64 with its
/// optimizer state), so a typo cannot ask libtorch for terabytes.
pub const MAX_LAYER_WEIGHTS: usize = 1 << 26;
/// Largest replay buffer (2^27 transitions; MuJoCo runs use 10^6).
pub const MAX_BUFFER_SIZE: usize = 1 << 27;
/// Largest minibatch.
pub const MAX_BATCH_SIZE: usize = 1 << 20;
/// Most evaluation episodes per evaluation.
pub const MAX_EVAL_EPISODES: u32 = 100_000;

/// Everything one training run needs besides the seed. Defaults: CleanRL's
/// `td3_continuous_action.py` (see `../shared/design/agents.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub algo: Algo,
    /// A Gymnasium id: native (`Pendulum-v1`) or through envs' Python bridge.
    pub env_id: String,
    pub total_timesteps: u64,
    /// Uniformly random actions and no updates before this many env steps.
    pub learning_starts: u64,
    pub buffer_size: usize,
    pub batch_size: usize,
    pub gamma: f64,
    pub tau: f64,
    /// Hidden layer widths of actor and critics.
    pub hidden: Vec<usize>,
    pub optimizer: OptimizerKind,
    pub learning_rate: f64,
    /// Overrides `learning_rate` for the actor / the critics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_learning_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critic_learning_rate: Option<f64>,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// SGD momentum (0 = plain SGD).
    pub momentum: f64,
    pub exploration: NoiseKind,
    /// Gaussian exploration std, x action scale.
    pub exploration_noise: f64,
    pub ou_theta: f64,
    pub ou_sigma: f64,
    pub ou_dt: f64,
    /// TD3 target policy smoothing std and clip, x action scale.
    pub policy_noise: f64,
    pub noise_clip: f64,
    pub policy_frequency: u64,
    /// Evaluate every this many env steps (and always at the end).
    pub eval_every: u64,
    pub eval_episodes: u32,
    /// One row of metrics.csv / quant.csv every this many env steps.
    pub log_every: u64,
    /// Checkpoint at the first episode end after every this many env steps (and at the end).
    pub checkpoint_every: u64,
    /// Feed the range observers on every this-many-th gradient update (0 = never).
    pub range_every: u64,
    /// `float32`, `fxp32` or `fxp16`.
    pub precision: Preset,
    pub gemm: Gemm,
    pub mode: TrainMode,
    /// Per-class, per-network and per-layer format overrides on top of the preset.
    pub formats: FormatsConfig,
    /// FIXAR's in-training QAT schedule (`crate::schedule`): off unless a quantizer is set.
    #[serde(skip_serializing_if = "ScheduleConfig::is_default")]
    pub schedule: ScheduleConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            algo: Algo::Td3,
            env_id: "Pendulum-v1".into(),
            total_timesteps: 1_000_000,
            learning_starts: 25_000,
            buffer_size: 1_000_000,
            batch_size: 256,
            gamma: 0.99,
            tau: 0.005,
            hidden: vec![256, 256],
            optimizer: OptimizerKind::Adam,
            learning_rate: 3e-4,
            actor_learning_rate: None,
            critic_learning_rate: None,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            momentum: 0.9,
            exploration: NoiseKind::Gaussian,
            exploration_noise: 0.1,
            ou_theta: 0.15,
            ou_sigma: 0.2,
            ou_dt: 1e-2,
            policy_noise: 0.2,
            noise_clip: 0.5,
            policy_frequency: 2,
            eval_every: 5_000,
            eval_episodes: 10,
            log_every: 1_000,
            checkpoint_every: 10_000,
            range_every: 50,
            precision: Preset::Float32,
            gemm: Gemm::Auto,
            mode: TrainMode::Fixed,
            formats: FormatsConfig::default(),
            schedule: ScheduleConfig::default(),
        }
    }
}

impl TrainConfig {
    pub fn precision_spec(&self) -> PrecisionSpec {
        PrecisionSpec {
            preset: self.precision,
            formats: self.formats.clone(),
            gemm: self.gemm,
            mode: self.mode,
        }
    }

    fn optimizer_config(&self, lr: f64) -> OptimizerConfig {
        match self.optimizer {
            OptimizerKind::Adam => OptimizerConfig::Adam {
                lr,
                beta1: self.adam_beta1,
                beta2: self.adam_beta2,
                eps: self.adam_eps,
            },
            OptimizerKind::Sgd => OptimizerConfig::Sgd {
                lr,
                momentum: self.momentum,
            },
        }
    }

    pub fn actor_optimizer(&self) -> OptimizerConfig {
        self.optimizer_config(self.actor_learning_rate.unwrap_or(self.learning_rate))
    }

    pub fn critic_optimizer(&self) -> OptimizerConfig {
        self.optimizer_config(self.critic_learning_rate.unwrap_or(self.learning_rate))
    }

    pub fn exploration_noise(&self, act_dim: usize) -> ExplorationNoise {
        match self.exploration {
            NoiseKind::Gaussian => ExplorationNoise::Gaussian {
                std: self.exploration_noise,
            },
            NoiseKind::Ou => ExplorationNoise::OrnsteinUhlenbeck {
                theta: self.ou_theta,
                sigma: self.ou_sigma,
                dt: self.ou_dt,
                state: vec![0.0; act_dim],
            },
        }
    }

    /// Value checks serde cannot express; each message names the key and the limit.
    /// Checked before anything is allocated: non-finite numbers, and sizes whose
    /// networks or replay buffer could not be allocated (a hidden layer of 10^11 units
    /// used to abort the process inside libtorch).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut bad = Vec::new();
        let mut need = |ok: bool, msg: &str| {
            if !ok {
                bad.push(msg.to_string());
            }
        };
        need(
            self.total_timesteps > 0,
            "`total_timesteps` must be positive",
        );
        need(self.buffer_size > 0, "`buffer_size` must be positive");
        need(self.batch_size > 0, "`batch_size` must be positive");
        need(
            !self.hidden.is_empty() && self.hidden.iter().all(|&h| h > 0),
            "`hidden` must list positive widths",
        );
        need(
            self.gamma.is_finite() && (0.0..=1.0).contains(&self.gamma),
            "`gamma` must be in [0, 1]",
        );
        need(self.tau > 0.0 && self.tau <= 1.0, "`tau` must be in (0, 1]");
        need(
            self.learning_rate.is_finite() && self.learning_rate > 0.0,
            "`learning_rate` must be a positive finite number",
        );
        for (key, lr) in [
            ("actor_learning_rate", self.actor_learning_rate),
            ("critic_learning_rate", self.critic_learning_rate),
        ] {
            if let Some(lr) = lr {
                need(
                    lr.is_finite() && lr > 0.0,
                    &format!("`{key}` must be a positive finite number, got {lr}"),
                );
            }
        }
        for (key, v) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
            ("momentum", self.momentum),
        ] {
            need(
                (0.0..1.0).contains(&v),
                &format!("`{key}` must be in [0, 1), got {v}"),
            );
        }
        for (key, v) in [
            ("adam_eps", self.adam_eps),
            ("exploration_noise", self.exploration_noise),
            ("ou_theta", self.ou_theta),
            ("ou_sigma", self.ou_sigma),
            ("ou_dt", self.ou_dt),
            ("policy_noise", self.policy_noise),
            ("noise_clip", self.noise_clip),
        ] {
            need(
                v.is_finite() && v >= 0.0,
                &format!("`{key}` must be a finite number >= 0, got {v}"),
            );
        }
        need(
            self.hidden.iter().all(|&h| h <= MAX_HIDDEN_UNITS),
            &format!("`hidden` widths must be at most {MAX_HIDDEN_UNITS} units"),
        );
        need(
            self.hidden
                .windows(2)
                .all(|w| w[0].saturating_mul(w[1]) <= MAX_LAYER_WEIGHTS),
            &format!("`hidden`: a layer may hold at most {MAX_LAYER_WEIGHTS} weights"),
        );
        need(
            self.buffer_size <= MAX_BUFFER_SIZE,
            &format!("`buffer_size` must be at most {MAX_BUFFER_SIZE} transitions"),
        );
        need(
            self.batch_size <= MAX_BATCH_SIZE,
            &format!("`batch_size` must be at most {MAX_BATCH_SIZE}"),
        );
        need(
            self.eval_episodes <= MAX_EVAL_EPISODES,
            &format!("`eval_episodes` must be at most {MAX_EVAL_EPISODES}"),
        );
        need(
            self.policy_frequency > 0,
            "`policy_frequency` must be positive",
        );
        need(self.eval_every > 0, "`eval_every` must be positive");
        need(self.eval_episodes > 0, "`eval_episodes` must be positive");
        need(self.log_every > 0, "`log_every` must be positive");
        need(
            self.checkpoint_every > 0,
            "`checkpoint_every` must be positive",
        );
        bad.extend(self.schedule.problems(
            self.total_timesteps,
            self.learning_starts,
            self.range_every,
            self.mode == TrainMode::Qat,
        ));
        let names: Vec<(&str, usize)> = match self.algo {
            Algo::Td3 => vec![("actor", 3), ("critic1", 3), ("critic2", 3)],
            Algo::Ddpg => vec![("actor", 3), ("critic", 3)],
        };
        let n = self.hidden.len() + 1;
        let names: Vec<(String, usize)> = names
            .iter()
            .flat_map(|(k, _)| [(k.to_string(), n), (format!("{k}_target"), n)])
            .collect();
        let refs: Vec<(&str, usize)> = names.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        for k in self.precision_spec().unknown_names(&refs) {
            bad.push(format!(
                "`{k}` names no network or layer of a {:?} agent",
                self.algo
            ));
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: bad })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(cfg: TrainConfig) -> String {
        cfg.validate().unwrap_err().to_string()
    }

    #[test]
    fn absurd_and_non_finite_values_are_refused_naming_the_key_and_the_limit() {
        let p = problems(TrainConfig {
            hidden: vec![100_000_000_000],
            ..Default::default()
        });
        assert!(p.contains("`hidden`") && p.contains("16384"), "{p}");
        let p = problems(TrainConfig {
            hidden: vec![10_000, 10_000],
            ..Default::default()
        });
        assert!(p.contains("at most 67108864 weights"), "{p}");
        let p = problems(TrainConfig {
            learning_rate: f64::INFINITY,
            ..Default::default()
        });
        assert!(p.contains("`learning_rate`"), "{p}");
        let p = problems(TrainConfig {
            gamma: f64::NAN,
            tau: f64::NAN,
            critic_learning_rate: Some(-1.0),
            exploration_noise: f64::NAN,
            buffer_size: usize::MAX,
            ..Default::default()
        });
        for key in [
            "`gamma`",
            "`tau`",
            "`critic_learning_rate`",
            "`exploration_noise`",
            "`buffer_size`",
        ] {
            assert!(p.contains(key), "{key}: {p}");
        }
        assert!(TrainConfig::default().validate().is_ok());
    }
}
