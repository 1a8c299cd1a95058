//! DDPG (Lillicrap et al. 2015, "Continuous control with deep reinforcement learning"):
//! a deterministic actor trained through one critic, with target networks and soft
//! updates. Follows CleanRL's `ddpg_continuous_action.py` (which also delays the actor
//! update, `policy_frequency` 2); exploration noise (Gaussian or Ornstein-Uhlenbeck)
//! is added by the training loop.

use rand_chacha::ChaCha8Rng;

use crate::dpg::{actor_step, critic_input, critic_step, td_target, Agent, NetSpec, UpdateStats};
use crate::mlp::Mlp;
use crate::precision::PrecisionSpec;
use crate::replay::Batch;

/// DDPG's own hyperparameters (CleanRL defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdpgParams {
    pub gamma: f64,
    pub tau: f64,
    /// Actor and targets update once every this many critic updates.
    pub policy_frequency: u64,
}

impl Default for DdpgParams {
    fn default() -> Self {
        DdpgParams {
            gamma: 0.99,
            tau: 0.005,
            policy_frequency: 2,
        }
    }
}

pub struct Ddpg {
    pub params: DdpgParams,
    pub actor: Mlp,
    pub actor_target: Mlp,
    pub critic: Mlp,
    pub critic_target: Mlp,
    updates: u64,
}

impl Ddpg {
    pub fn new(
        spec: &NetSpec,
        params: DdpgParams,
        precision: &PrecisionSpec,
        rng: &mut ChaCha8Rng,
        seed: u64,
    ) -> Self {
        let actor = spec.actor(precision, rng, seed ^ 0x11);
        let critic = spec.critic("critic", precision, rng, seed ^ 0x21);
        Ddpg {
            params,
            actor_target: actor.target_copy("actor_target", precision, seed ^ 0x12),
            critic_target: critic.target_copy("critic_target", precision, seed ^ 0x22),
            actor,
            critic,
            updates: 0,
        }
    }
}

impl Agent for Ddpg {
    fn algo(&self) -> &'static str {
        "ddpg"
    }

    fn update(&mut self, b: &Batch, _rng: &mut ChaCha8Rng) -> UpdateStats {
        let p = self.params;
        // TD target from the target actor and target critic.
        let next_a = self.actor_target.predict(&b.next_obs);
        let q_next = self.critic_target.predict(&critic_input(
            &b.next_obs,
            &next_a,
            self.critic_target.kind(),
        ));
        let y = td_target(&mut self.critic, b, p.gamma, &[&q_next]);
        let x = critic_input(&b.obs, &b.actions, self.critic.kind());
        let (critic_loss, q1_mean) = critic_step(&mut self.critic, &x, &y);
        self.updates += 1;

        let mut actor_loss = None;
        if self.updates.is_multiple_of(p.policy_frequency) {
            actor_loss = Some(actor_step(&mut self.actor, &mut self.critic, &b.obs));
            self.actor_target.soft_update_from(&self.actor, p.tau);
            self.critic_target.soft_update_from(&self.critic, p.tau);
        }
        UpdateStats {
            critic_loss,
            qf1_loss: critic_loss,
            qf2_loss: None,
            actor_loss,
            q1_mean,
            q2_mean: None,
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
            &self.critic,
            &self.actor_target,
            &self.critic_target,
        ]
    }

    fn networks_mut(&mut self) -> Vec<&mut Mlp> {
        vec![
            &mut self.actor,
            &mut self.critic,
            &mut self.actor_target,
            &mut self.critic_target,
        ]
    }

    fn actor(&self) -> &Mlp {
        &self.actor
    }

    fn actor_mut(&mut self) -> &mut Mlp {
        &mut self.actor
    }
}
