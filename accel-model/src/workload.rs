//! What the accelerator runs: an actor-critic agent's networks, batch, algorithm and
//! precision. Independent of the `agents` crate on purpose: `runs` builds a `Workload`
//! from an agent config, tests and presets build one directly.

use serde::{Deserialize, Serialize};

use crate::error::{positive_usize, ModelError};

/// The off-policy actor-critic algorithm; decides the number of critics and how often the
/// actor and the targets are updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    /// One critic; actor and targets updated every iteration.
    Ddpg,
    /// Two critics (clipped double-Q); actor and targets updated every `policy_delay`
    /// iterations.
    Td3,
}

/// The PE datapath mode: one FXP32 MAC or two FXP16 MACs per PE per cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fxp16,
    Fxp32,
}

impl Precision {
    /// Bits of one weight, activation or error word.
    pub fn bits(self) -> u32 {
        match self {
            Precision::Fxp16 => 16,
            Precision::Fxp32 => 32,
        }
    }

    /// Independent MACs one PE performs per cycle in this mode.
    pub fn lanes(self) -> usize {
        match self {
            Precision::Fxp16 => 2,
            Precision::Fxp32 => 1,
        }
    }

    /// `fxp16` / `fxp32`, or the bit width alone.
    pub fn parse(s: &str) -> Option<Precision> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fxp16" | "16" => Some(Precision::Fxp16),
            "fxp32" | "32" => Some(Precision::Fxp32),
            _ => None,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FXP{}", self.bits())
    }
}

/// The optimizer decides how many weight-memory accesses an update makes per parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// w -= lr * g: the weight read and written back.
    Sgd,
    /// The weight read and written back; both moments live in their own on-chip memory
    /// (`optimizer_memory`), beside the weight memory's port.
    #[default]
    Adam,
}

impl Optimizer {
    /// Words of optimizer state per parameter (first and second moment for Adam).
    pub fn state_words_per_param(self) -> u64 {
        match self {
            Optimizer::Sgd => 0,
            Optimizer::Adam => 2,
        }
    }
}

/// Which backward work one training iteration counts; decides the MACs per sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacAccounting {
    /// Only what the update needs: the actor loss's backward through the critic computes
    /// input errors only (the critic's weights are not updated by it).
    #[default]
    Minimal,
    /// What a framework's backward computes: the actor loss's backward through the critic
    /// also produces the critic's weight gradients (then discarded), as
    /// `actor_loss.backward()` does when the critic's parameters require gradients.
    Autograd,
}

impl MacAccounting {
    pub fn name(self) -> &'static str {
        match self {
            MacAccounting::Minimal => "minimal",
            MacAccounting::Autograd => "autograd",
        }
    }
}

fn one() -> usize {
    1
}

/// One agent's training workload.
///
/// Actor: `obs_dim -> actor_hidden... -> act_dim`; each critic:
/// `obs_dim + act_dim -> critic_hidden... -> 1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Where it came from (preset name or agent config path), for reports.
    pub name: String,
    pub algo: Algo,
    /// Iterations per actor and target update; TD3 default 2 (Fujimoto et al. 2018),
    /// DDPG always 1.
    #[serde(default)]
    pub policy_delay: Option<usize>,
    pub obs_dim: usize,
    pub act_dim: usize,
    pub actor_hidden: Vec<usize>,
    pub critic_hidden: Vec<usize>,
    /// Samples drawn from the replay buffer per training iteration.
    pub batch: usize,
    /// States whose actions are computed at once (environments stepped together); 1 for
    /// one environment, as in CleanRL and FIXAR's training loop.
    #[serde(default = "one")]
    pub inference_batch: usize,
    pub precision: Precision,
    #[serde(default)]
    pub optimizer: Optimizer,
    /// Which backward work is counted (and run) per iteration.
    #[serde(default)]
    pub accounting: MacAccounting,
}

impl Workload {
    /// CleanRL's TD3 defaults (256-256, batch 256, policy delay 2, Adam) for the given
    /// observation and action sizes.
    pub fn cleanrl_td3(name: &str, obs_dim: usize, act_dim: usize, precision: Precision) -> Self {
        Workload {
            name: name.to_string(),
            algo: Algo::Td3,
            policy_delay: Some(2),
            obs_dim,
            act_dim,
            actor_hidden: vec![256, 256],
            critic_hidden: vec![256, 256],
            batch: 256,
            inference_batch: 1,
            precision,
            optimizer: Optimizer::Adam,
            accounting: MacAccounting::Minimal,
        }
    }

    /// Rejects zero sizes, naming the field (`workload.actor_hidden[1]`, ...).
    pub fn validate(&self) -> Result<(), ModelError> {
        positive_usize("workload.obs_dim", self.obs_dim)?;
        positive_usize("workload.act_dim", self.act_dim)?;
        positive_usize("workload.batch", self.batch)?;
        positive_usize("workload.inference_batch", self.inference_batch)?;
        for (i, &h) in self.actor_hidden.iter().enumerate() {
            positive_usize(&format!("workload.actor_hidden[{i}]"), h)?;
        }
        for (i, &h) in self.critic_hidden.iter().enumerate() {
            positive_usize(&format!("workload.critic_hidden[{i}]"), h)?;
        }
        if let Some(d) = self.policy_delay {
            positive_usize("workload.policy_delay", d)?;
            if self.algo == Algo::Ddpg && d != 1 {
                return Err(ModelError::invalid(
                    "workload.policy_delay",
                    d,
                    "DDPG updates the actor every iteration; use algo = \"td3\" for a delay",
                ));
            }
        }
        Ok(())
    }

    /// Iterations per actor/target update.
    pub fn policy_delay(&self) -> usize {
        match self.algo {
            Algo::Ddpg => 1,
            Algo::Td3 => self.policy_delay.unwrap_or(2),
        }
    }

    pub fn critics(&self) -> usize {
        match self.algo {
            Algo::Ddpg => 1,
            Algo::Td3 => 2,
        }
    }

    /// Layer widths of the actor, input to output.
    pub fn actor_widths(&self) -> Vec<usize> {
        let mut w = vec![self.obs_dim];
        w.extend(&self.actor_hidden);
        w.push(self.act_dim);
        w
    }

    /// Layer widths of one critic, input to output.
    pub fn critic_widths(&self) -> Vec<usize> {
        let mut w = vec![self.obs_dim + self.act_dim];
        w.extend(&self.critic_hidden);
        w.push(1);
        w
    }

    /// Weights and biases of one actor.
    pub fn actor_params(&self) -> u64 {
        params(&self.actor_widths())
    }

    /// Weights and biases of one critic.
    pub fn critic_params(&self) -> u64 {
        params(&self.critic_widths())
    }

    /// A short description for reports: `TD3 17-256-256-6 / 23-256-256-1 x2, batch 256, FXP16`.
    pub fn describe(&self) -> String {
        let join = |w: Vec<usize>| {
            w.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("-")
        };
        format!(
            "{} actor {} / critic {} x{}, batch {}, policy delay {}, {:?}, {}, {} accounting",
            format!("{:?}", self.algo).to_uppercase(),
            join(self.actor_widths()),
            join(self.critic_widths()),
            self.critics(),
            self.batch,
            self.policy_delay(),
            self.optimizer,
            self.precision,
            self.accounting.name()
        )
    }
}

fn params(widths: &[usize]) -> u64 {
    widths.windows(2).map(|p| (p[0] * p[1] + p[1]) as u64).sum()
}
