//! TD3 (Fujimoto et al. 2018, "Addressing Function Approximation Error in Actor-Critic
//! Methods"): DDPG plus clipped double-Q learning, target policy smoothing and delayed
//! policy updates. Follows CleanRL's `td3_continuous_action.py`.

use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use crate::dpg::{
    actor_step, critic_input, critic_step, standard_normal, td_target, Agent, NetSpec, UpdateStats,
};
use crate::mlp::Mlp;
use crate::precision::PrecisionSpec;
use crate::replay::Batch;

/// TD3's own hyperparameters (CleanRL defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Td3Params {
    pub gamma: f64,
    pub tau: f64,
    /// Std of the target policy smoothing noise, x action scale.
    pub policy_noise: f64,
    /// Clip of that noise, x action scale.
    pub noise_clip: f64,
    /// Actor and targets update once every this many critic updates.
    pub policy_frequency: u64,
}

impl Default for Td3Params {
    fn default() -> Self {
        Td3Params {
            gamma: 0.99,
            tau: 0.005,
            policy_noise: 0.2,
            noise_clip: 0.5,
            policy_frequency: 2,
        }
    }
}

pub struct Td3 {
    pub params: Td3Params,
    pub actor: Mlp,
    pub actor_target: Mlp,
    pub critic1: Mlp,
    pub critic2: Mlp,
    pub critic1_target: Mlp,
    pub critic2_target: Mlp,
    action_scale: Tensor,
    low: Tensor,
    high: Tensor,
    updates: u64,
}

impl Td3 {
    pub fn new(
        spec: &NetSpec,
        params: Td3Params,
        precision: &PrecisionSpec,
        rng: &mut ChaCha8Rng,
        seed: u64,
    ) -> Self {
        let actor = spec.actor(precision, rng, seed ^ 0x11);
        let critic1 = spec.critic("critic1", precision, rng, seed ^ 0x21);
        let critic2 = spec.critic("critic2", precision, rng, seed ^ 0x31);
        let (low, high) = spec.low_high();
        Td3 {
            params,
            actor_target: actor.target_copy("actor_target", precision, seed ^ 0x12),
            critic1_target: critic1.target_copy("critic1_target", precision, seed ^ 0x22),
            critic2_target: critic2.target_copy("critic2_target", precision, seed ^ 0x32),
            actor,
            critic1,
            critic2,
            action_scale: Tensor::from_slice(&spec.action_scale()).view([1, spec.act_dim as i64]),
            low,
            high,
            updates: 0,
        }
    }
}

impl Agent for Td3 {
    fn algo(&self) -> &'static str {
        "td3"
    }

    fn update(&mut self, b: &Batch, rng: &mut ChaCha8Rng) -> UpdateStats {
        let p = self.params;
        let (rows, act_dim) = (b.actions.size()[0], b.actions.size()[1]);
        // Target policy smoothing: clipped Gaussian noise on the target actor's action.
        let clip = &self.action_scale * p.noise_clip;
        let noise = (standard_normal(rng, rows, act_dim) * &self.action_scale * p.policy_noise)
            .clamp_tensor(Some(-&clip), Some(clip));
        let next_a = self.actor_target.predict(&b.next_obs);
        let kind = next_a.kind();
        let next_a = (next_a + noise.to_kind(kind))
            .clamp_tensor(Some(self.low.to_kind(kind)), Some(self.high.to_kind(kind)));
        // Clipped double-Q: the smaller of the two target critics.
        let x_next = critic_input(&b.next_obs, &next_a, self.critic1_target.kind());
        let q1_next = self.critic1_target.predict(&x_next);
        let q2_next = self
            .critic2_target
            .predict(&x_next.to_kind(self.critic2_target.kind()));
        let q_next = q1_next.minimum(&q2_next.to_kind(q1_next.kind()));
        let y = td_target(&mut self.critic1, b, p.gamma, &q_next);

        let x = critic_input(&b.obs, &b.actions, self.critic1.kind());
        let (l1, q1) = critic_step(&mut self.critic1, &x, &y);
        let x2 = x.to_kind(self.critic2.kind());
        let (l2, q2) = critic_step(&mut self.critic2, &x2, &y);
        self.updates += 1;

        // Delayed policy updates: the actor and all targets every policy_frequency steps.
        let mut actor_loss = None;
        if self.updates.is_multiple_of(p.policy_frequency) {
            actor_loss = Some(actor_step(&mut self.actor, &mut self.critic1, &b.obs));
            self.actor_target.soft_update_from(&self.actor, p.tau);
            self.critic1_target.soft_update_from(&self.critic1, p.tau);
            self.critic2_target.soft_update_from(&self.critic2, p.tau);
        }
        UpdateStats {
            critic_loss: l1 + l2,
            actor_loss,
            q1_mean: q1,
            q2_mean: Some(q2),
        }
    }

    fn updates(&self) -> u64 {
        self.updates
    }

    fn set_updates(&mut self, n: u64) {
        self.updates = n;
    }

    fn networks(&self) -> Vec<&Mlp> {
        vec![
            &self.actor,
            &self.critic1,
            &self.critic2,
            &self.actor_target,
            &self.critic1_target,
            &self.critic2_target,
        ]
    }

    fn networks_mut(&mut self) -> Vec<&mut Mlp> {
        vec![
            &mut self.actor,
            &mut self.critic1,
            &mut self.critic2,
            &mut self.actor_target,
            &mut self.critic1_target,
            &mut self.critic2_target,
        ]
    }

    fn actor(&self) -> &Mlp {
        &self.actor
    }

    fn actor_mut(&mut self) -> &mut Mlp {
        &mut self.actor
    }
}
