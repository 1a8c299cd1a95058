//! What DDPG and TD3 share: the agent interface, the critic's regression step, the
//! deterministic policy-gradient step for the actor, and the TD target.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use tch::{Kind, Tensor};

use crate::mlp::{Activation, Mlp, NonFinite};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::precision::{PrecisionSpec, TensorClass};
use crate::replay::Batch;

/// Scalars one gradient update reports (losses as float values of the quantized
/// quantities; `actor_loss` only on updates that trained the actor).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UpdateStats {
    pub critic_loss: f64,
    pub actor_loss: Option<f64>,
    pub q1_mean: f64,
    pub q2_mean: Option<f64>,
}

/// A deterministic actor-critic agent trained from replayed minibatches.
pub trait Agent: Send {
    /// `ddpg` or `td3`.
    fn algo(&self) -> &'static str;
    /// One gradient update (critic every call; actor and targets every
    /// `policy_frequency`-th call).
    fn update(&mut self, batch: &Batch, rng: &mut ChaCha8Rng) -> UpdateStats;
    /// Gradient updates done so far.
    fn updates(&self) -> u64;
    fn set_updates(&mut self, n: u64);
    /// Every network, online ones first (`actor`, `critic1`, ...), then targets.
    fn networks(&self) -> Vec<&Mlp>;
    fn networks_mut(&mut self) -> Vec<&mut Mlp>;
    /// The online actor.
    fn actor(&self) -> &Mlp;
    fn actor_mut(&mut self) -> &mut Mlp;

    /// The deterministic action for one observation (no exploration noise).
    fn act(&mut self, obs: &[f32], action: &mut [f32]) {
        let x = Tensor::from_slice(obs).view([1, obs.len() as i64]);
        let y = self.actor_mut().infer(&x).to_kind(Kind::Float).view([-1]);
        y.copy_data(action, action.len());
    }

    /// The first network, layer and tensor class holding a NaN or Inf, if any.
    fn find_non_finite(&self) -> Option<(String, NonFinite)> {
        self.networks()
            .into_iter()
            .find_map(|n| n.find_non_finite().map(|f| (n.name.clone(), f)))
    }
}

/// The shapes and hyperparameters both algorithms build their networks from.
#[derive(Clone, Debug)]
pub struct NetSpec {
    pub obs_dim: usize,
    pub act_dim: usize,
    pub hidden: Vec<usize>,
    pub action_low: Vec<f32>,
    pub action_high: Vec<f32>,
    pub actor_optimizer: OptimizerConfig,
    pub critic_optimizer: OptimizerConfig,
}

impl NetSpec {
    /// (high - low) / 2 per action dimension.
    pub fn action_scale(&self) -> Vec<f32> {
        self.action_low
            .iter()
            .zip(&self.action_high)
            .map(|(l, h)| (h - l) / 2.0)
            .collect()
    }

    fn action_offset(&self) -> Vec<f32> {
        self.action_low
            .iter()
            .zip(&self.action_high)
            .map(|(l, h)| (h + l) / 2.0)
            .collect()
    }

    /// The actor obs -> hidden -> action with a tanh output scaled to the action bounds,
    /// and its Adam/SGD optimizer.
    pub fn actor(&self, precision: &PrecisionSpec, rng: &mut ChaCha8Rng, seed: u64) -> Mlp {
        let mut sizes = vec![self.obs_dim];
        sizes.extend(&self.hidden);
        sizes.push(self.act_dim);
        let out = Activation::Tanh {
            scale: self.action_scale(),
            offset: self.action_offset(),
        };
        let mut net = Mlp::new("actor", &sizes, out, precision, rng, seed);
        net.optimizer = Some(Optimizer::new(
            self.actor_optimizer,
            net.params().numel(),
            net.kind(),
        ));
        net
    }

    /// A critic (obs, action) -> hidden -> Q named `name`, with its optimizer.
    pub fn critic(
        &self,
        name: &str,
        precision: &PrecisionSpec,
        rng: &mut ChaCha8Rng,
        seed: u64,
    ) -> Mlp {
        let mut sizes = vec![self.obs_dim + self.act_dim];
        sizes.extend(&self.hidden);
        sizes.push(1);
        let mut net = Mlp::new(name, &sizes, Activation::Identity, precision, rng, seed);
        net.optimizer = Some(Optimizer::new(
            self.critic_optimizer,
            net.params().numel(),
            net.kind(),
        ));
        net
    }

    pub fn low_high(&self) -> (Tensor, Tensor) {
        let n = self.act_dim as i64;
        (
            Tensor::from_slice(&self.action_low).view([1, n]),
            Tensor::from_slice(&self.action_high).view([1, n]),
        )
    }
}

/// The critic's input: observations and actions side by side, in `kind`.
pub fn critic_input(obs: &Tensor, actions: &Tensor, kind: Kind) -> Tensor {
    Tensor::cat(&[obs.to_kind(kind), actions.to_kind(kind)], 1)
}

/// y = r + gamma (1 - terminated) q_next, cast into `critic`'s output pre-activation format.
pub fn td_target(critic: &mut Mlp, batch: &Batch, gamma: f64, q_next: &Tensor) -> Tensor {
    let kind = q_next.kind();
    let not_done = batch.terminated.to_kind(kind).neg().g_add_scalar_(1.0);
    let y = batch.rewards.to_kind(kind) + q_next * not_done * gamma;
    let last = critic.layers.len() - 1;
    critic.cast_at(last, TensorClass::Preact, y)
}

/// One regression step of `critic` toward `y` on the mean squared error: forward,
/// dL/dq = 2 (q - y) / B cast into the output error format, explicit backward, optimizer
/// step. Returns (loss, mean q).
pub fn critic_step(critic: &mut Mlp, input: &Tensor, y: &Tensor) -> (f64, f64) {
    let q = critic.forward(input);
    let diff = &q - y.to_kind(q.kind());
    let b = q.size()[0] as f64;
    let loss = f64::try_from(diff.square().mean(Kind::Double)).unwrap_or(f64::NAN);
    let q_mean = f64::try_from(q.mean(Kind::Double)).unwrap_or(f64::NAN);
    let last = critic.layers.len() - 1;
    let delta = critic.cast_at(last, TensorClass::Error, diff * (2.0 / b));
    critic.backward(&delta, true, false);
    critic.step();
    (loss, q_mean)
}

/// One deterministic policy-gradient step: maximise Q(s, actor(s)) (loss = -mean Q).
/// The critic back-propagates dL/dQ = -1/B to its action inputs without touching its
/// own gradients; the actor back-propagates that and steps. Returns the actor loss.
pub fn actor_step(actor: &mut Mlp, critic: &mut Mlp, obs: &Tensor) -> f64 {
    let a = actor.forward(obs);
    let q = critic.forward(&critic_input(obs, &a, a.kind()));
    let b = q.size()[0];
    let loss = -f64::try_from(q.mean(Kind::Double)).unwrap_or(f64::NAN);
    let last = critic.layers.len() - 1;
    let dq = critic.cast_at(last, TensorClass::Error, q.full_like(-1.0 / b as f64));
    let d_in = critic
        .backward(&dq, false, true)
        .expect("input gradient requested");
    let obs_dim = obs.size()[1];
    let d_a = d_in.narrow(1, obs_dim, d_in.size()[1] - obs_dim);
    let last = actor.layers.len() - 1;
    let d_a = actor.cast_at(last, TensorClass::Error, d_a);
    actor.backward(&d_a, true, false);
    actor.step();
    loss
}

/// A (rows x cols) tensor of standard normal samples from `rng`, f32.
pub fn standard_normal(rng: &mut ChaCha8Rng, rows: i64, cols: i64) -> Tensor {
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    Tensor::from_slice(&v).view([rows, cols])
}
