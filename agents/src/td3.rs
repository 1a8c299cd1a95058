//! TD3 (Fujimoto et al. 2018, "Addressing Function Approximation Error in Actor-Critic
//! Methods"): DDPG plus clipped double-Q learning, target policy smoothing and delayed
//! policy updates. Follows CleanRL's `td3_continuous_action.py`.

use std::collections::BTreeMap;

use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::dpg::{
    actor_step, critic_input, critic_step, small, standard_normals, td_target, Agent, NetSpec,
    UpdateStats,
};
use crate::fused::Store;
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
    /// Per action dimension: (high - low) / 2, low, high.
    bounds: [Vec<f32>; 3],
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
        Td3 {
            params,
            actor_target: actor.target_copy("actor_target", precision, seed ^ 0x12),
            critic1_target: critic1.target_copy("critic1_target", precision, seed ^ 0x22),
            critic2_target: critic2.target_copy("critic2_target", precision, seed ^ 0x32),
            actor,
            critic1,
            critic2,
            bounds: [
                spec.action_scale(),
                spec.action_low.clone(),
                spec.action_high.clone(),
            ],
            updates: 0,
        }
    }
}

impl Td3 {
    /// The target critics' input: next observations beside the target policy's action
    /// with clipped Gaussian smoothing noise (`normals`, one per action value),
    /// `clamp(a + clamp(n * scale * policy_noise, -clip, clip), low, high)` with
    /// `clip = scale * noise_clip`: the noise in f32, the sum and clamp in the target
    /// actor's storage type. `fast` takes the slice path where it applies (same values:
    /// tested against the tensor path).
    fn target_input(
        &self,
        next_obs: &Tensor,
        next_a: &Tensor,
        normals: &[f32],
        fast: bool,
    ) -> Tensor {
        let kind = next_a.kind();
        if fast && kind == self.critic1_target.kind() {
            let t = match kind {
                Kind::Float => self.target_input_slices::<f32>(next_obs, next_a, normals),
                Kind::Double => self.target_input_slices::<f64>(next_obs, next_a, normals),
                _ => None,
            };
            if let Some(t) = t {
                return t;
            }
        }
        let p = self.params;
        let (rows, act_dim) = (next_a.size()[0], next_a.size()[1]);
        let [scale, low, high] = self
            .bounds
            .each_ref()
            .map(|v| Tensor::from_slice(v).view([1, act_dim]));
        let clip = &scale * p.noise_clip;
        let noise = (Tensor::from_slice(normals).view([rows, act_dim]) * &scale * p.policy_noise)
            .clamp_tensor(Some(-&clip), Some(clip));
        let next_a = (next_a + noise.to_kind(kind))
            .clamp_tensor(Some(low.to_kind(kind)), Some(high.to_kind(kind)));
        critic_input(next_obs, &next_a, self.critic1_target.kind())
    }

    fn target_input_slices<T: Store>(
        &self,
        next_obs: &Tensor,
        next_a: &Tensor,
        normals: &[f32],
    ) -> Option<Tensor> {
        let a = small::read::<T>(next_a)?;
        let [scale, low, high] = &self.bounds;
        let ad = scale.len();
        if a.len() != normals.len() || next_a.size().get(1) != Some(&(ad as i64)) {
            return None;
        }
        // The scalars as libtorch applies them to an f32 tensor.
        let (pn, nc) = (
            self.params.policy_noise as f32,
            self.params.noise_clip as f32,
        );
        let smoothed: Vec<T> = a
            .iter()
            .zip(normals)
            .enumerate()
            .map(|(i, (&a, &n))| {
                let j = i % ad;
                let (s, lo, hi) = (scale[j], low[j], high[j]);
                let clip = s * nc;
                let noise = small::clamp(n * s * pn, -clip, clip);
                let of = |v: f32| T::from_f64(v as f64);
                small::clamp(a + of(noise), of(lo), of(hi))
            })
            .collect();
        small::side_by_side::<T>(next_obs, next_a, Some(&smoothed))
    }
}

impl Agent for Td3 {
    fn algo(&self) -> &'static str {
        "td3"
    }

    fn update(&mut self, b: &Batch, rng: &mut ChaCha8Rng) -> UpdateStats {
        let p = self.params;
        let (rows, act_dim) = (b.actions.size()[0], b.actions.size()[1]);
        let normals = standard_normals(rng, (rows * act_dim) as usize);
        let next_a = self.actor_target.predict(&b.next_obs);
        let x_next = self.target_input(&b.next_obs, &next_a, &normals, true);
        // Clipped double-Q: the smaller of the two target critics.
        let q1_next = self.critic1_target.predict(&x_next);
        let q2_next = self
            .critic2_target
            .predict(&x_next.to_kind(self.critic2_target.kind()));
        let y = td_target(&mut self.critic1, b, p.gamma, &[&q1_next, &q2_next]);

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
            qf1_loss: l1,
            qf2_loss: Some(l2),
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

/// Where a GEMM sits in a layer: forward `b + x W`, weight gradient `x^T dz`, input
/// error `dz W^T`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GemmRole {
    Forward,
    WeightGrad,
    InputError,
}

/// The GEMMs of one TD3 update with their average count per update, keyed by (role,
/// batch, fan-in, fan-out) of the layer.
pub fn update_gemms(
    obs: usize,
    act: usize,
    hidden: &[usize],
    batch: usize,
    policy_frequency: u64,
) -> BTreeMap<(GemmRole, usize, usize, usize), f64> {
    let layers = |input: usize, output: usize| -> Vec<(usize, usize)> {
        let mut s = vec![input];
        s.extend(hidden);
        s.push(output);
        s.windows(2).map(|w| (w[0], w[1])).collect()
    };
    let actor = layers(obs, act);
    let critic = layers(obs + act, 1);
    let mut g: BTreeMap<(GemmRole, usize, usize, usize), f64> = BTreeMap::new();
    let mut add = |role, net: &[(usize, usize)], weight: f64, skip_first: bool| {
        for (i, &(k, n)) in net.iter().enumerate() {
            if !(skip_first && i == 0) {
                *g.entry((role, batch, k, n)).or_default() += weight;
            }
        }
    };
    let a = 1.0 / policy_frequency as f64;
    // Critic step: target actor, two target critics, two critics forward and backward.
    add(GemmRole::Forward, &actor, 1.0, false);
    add(GemmRole::Forward, &critic, 4.0, false);
    add(GemmRole::WeightGrad, &critic, 2.0, false);
    add(GemmRole::InputError, &critic, 2.0, true);
    // Actor step: actor and critic 1 forward, critic 1 input errors down to the action,
    // actor weight gradients and input errors.
    add(GemmRole::Forward, &actor, a, false);
    add(GemmRole::Forward, &critic, a, false);
    add(GemmRole::InputError, &critic, a, false);
    add(GemmRole::WeightGrad, &actor, a, false);
    add(GemmRole::InputError, &actor, a, true);
    g
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use tch::{Kind, Tensor};

    use super::*;
    use crate::optim::OptimizerConfig;
    use crate::precision::Preset;
    use crate::replay::Batch;

    fn agent(preset: Preset) -> Td3 {
        let spec = NetSpec {
            obs_dim: 3,
            act_dim: 2,
            hidden: vec![8],
            action_low: vec![-2.0, -0.7],
            action_high: vec![2.0, 1.6],
            actor_optimizer: OptimizerConfig::adam(3e-4),
            critic_optimizer: OptimizerConfig::adam(3e-4),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        Td3::new(
            &spec,
            Td3Params::default(),
            &crate::precision::PrecisionSpec::preset(preset),
            &mut rng,
            5,
        )
    }

    /// Bit patterns, every NaN as one (libtorch's vector `minimum` makes an all-ones NaN,
    /// its scalar tail passes the input's: the payload carries no meaning here).
    fn bits(t: &Tensor) -> Vec<u64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).view([-1]))
            .unwrap()
            .iter()
            .map(|v| if v.is_nan() { u64::MAX } else { v.to_bits() })
            .collect()
    }

    /// The slice paths of the update's glue give the tensor expressions' values bit for
    /// bit: smoothing noise beyond the clip, actions beyond the bounds, NaN, f32 and f64
    /// storage; TD targets with terminations; the critic's regression gradient.
    #[test]
    fn slice_glue_equals_the_tensor_expressions() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for preset in [Preset::Float32, Preset::Fxp32] {
            let ag = agent(preset);
            let kind = ag.critic1_target.kind();
            let rows = 64;
            let mut normals: Vec<f32> = (0..rows * 2).map(|_| rng.gen_range(-6.0..6.0)).collect();
            normals[5] = f32::NAN;
            let mut a: Vec<f64> = (0..rows * 2).map(|_| rng.gen_range(-3.0..3.0)).collect();
            a[7] = f64::NAN;
            a[8] = 1.0 / 3.0;
            let next_a = Tensor::from_slice(&a).view([rows as i64, 2]).to_kind(kind);
            let obs: Vec<f32> = (0..rows * 3).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let next_obs = Tensor::from_slice(&obs).view([rows as i64, 3]);
            let fast = ag.target_input(&next_obs, &next_a, &normals, true);
            let slow = ag.target_input(&next_obs, &next_a, &normals, false);
            assert_eq!(fast.kind(), slow.kind());
            assert_eq!(fast.size(), slow.size());
            assert_eq!(bits(&fast), bits(&slow), "{preset:?} target input");

            let col = |v: Vec<f32>| Tensor::from_slice(&v).view([rows as i64, 1]);
            let batch = Batch {
                obs: next_obs.shallow_clone(),
                actions: next_a.to_kind(Kind::Float),
                rewards: col((0..rows).map(|_| rng.gen_range(-16.0..0.0)).collect()),
                next_obs: next_obs.shallow_clone(),
                terminated: col((0..rows).map(|i| (i % 5 == 0) as u8 as f32).collect()),
            };
            let mut q1: Vec<f64> = (0..rows).map(|_| rng.gen_range(-90.0..0.0)).collect();
            q1[3] = f64::NAN;
            let q2: Vec<f64> = (0..rows).map(|_| rng.gen_range(-90.0..0.0)).collect();
            let (q1, q2) = (col_of(&q1, kind), col_of(&q2, kind));
            let fast = match kind {
                Kind::Float => small::td_values::<f32>(&batch, 0.99, &[&q1, &q2]),
                _ => small::td_values::<f64>(&batch, 0.99, &[&q1, &q2]),
            }
            .unwrap();
            let not_done = batch.terminated.to_kind(kind).neg().g_add_scalar_(1.0);
            let slow = batch.rewards.to_kind(kind) + q1.minimum(&q2) * not_done * 0.99;
            assert_eq!(bits(&fast), bits(&slow), "{preset:?} td target");

            let y = slow;
            let q = q2.shallow_clone();
            let (loss, mean, grad) = match kind {
                Kind::Float => small::regression::<f32>(&q, &y, 2.0 / rows as f64),
                _ => small::regression::<f64>(&q, &y, 2.0 / rows as f64),
            }
            .unwrap();
            let diff = &q - &y;
            assert_eq!(bits(&grad), bits(&(&diff * (2.0 / rows as f64))));
            let torch_loss = f64::try_from(diff.square().mean(Kind::Double)).unwrap();
            let torch_mean = f64::try_from(q.mean(Kind::Double)).unwrap();
            // y holds a NaN (from q1): the loss is NaN both ways.
            assert!(loss.is_nan() && torch_loss.is_nan(), "{loss} {torch_loss}");
            assert!((mean - torch_mean).abs() <= 1e-12 * torch_mean.abs().max(1.0));
            let y_finite = y.nan_to_num(0.0, None, None);
            let (loss, _, _) = match kind {
                Kind::Float => small::regression::<f32>(&q, &y_finite, 1.0),
                _ => small::regression::<f64>(&q, &y_finite, 1.0),
            }
            .unwrap();
            let torch_loss = f64::try_from((&q - &y_finite).square().mean(Kind::Double)).unwrap();
            assert!((loss - torch_loss).abs() <= 1e-12 * torch_loss.abs().max(1.0));

            let fast = critic_input(&batch.obs, &batch.actions, kind);
            let slow = Tensor::cat(&[batch.obs.to_kind(kind), batch.actions.to_kind(kind)], 1);
            assert_eq!(bits(&fast), bits(&slow));
        }
    }

    fn col_of(v: &[f64], kind: Kind) -> Tensor {
        Tensor::from_slice(v)
            .view([v.len() as i64, 1])
            .to_kind(kind)
    }
}
