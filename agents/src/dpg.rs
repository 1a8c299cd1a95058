//! What DDPG and TD3 share: the agent interface, the critic's regression step, the
//! deterministic policy-gradient step for the actor, and the TD target.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use tch::{Kind, Tensor};

use crate::mlp::{Activation, Mlp, NonFinite};
use crate::optim::OptimizerConfig;
use crate::precision::{PrecisionSpec, TensorClass};
use crate::replay::Batch;

/// Scalars one gradient update reports (losses as float values of the quantized
/// quantities; `actor_loss` only on updates that trained the actor).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UpdateStats {
    /// The sum of the critics' losses (TD3: `qf1_loss + qf2_loss`).
    pub critic_loss: f64,
    /// Each critic's loss (TD3's second only for TD3).
    pub qf1_loss: f64,
    pub qf2_loss: Option<f64>,
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
            .find_map(|n| n.find_non_finite().map(|f| (n.name().to_string(), f)))
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
        Mlp::new("actor", &sizes, out, precision, rng, seed).with_optimizer(self.actor_optimizer)
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
        Mlp::new(name, &sizes, Activation::Identity, precision, rng, seed)
            .with_optimizer(self.critic_optimizer)
    }
}

/// The critic's input: observations and actions side by side, in `kind`.
pub fn critic_input(obs: &Tensor, actions: &Tensor, kind: Kind) -> Tensor {
    let fast = match kind {
        Kind::Float => small::side_by_side::<f32>(obs, actions, None),
        Kind::Double => small::side_by_side::<f64>(obs, actions, None),
        _ => None,
    };
    fast.unwrap_or_else(|| Tensor::cat(&[obs.to_kind(kind), actions.to_kind(kind)], 1))
}

/// y = r + gamma (1 - terminated) min(q_next), cast into `critic`'s output pre-activation
/// format unless that format is learned (`crate::learned_point`; then y stays as is): `q_next` holds one target critic's values (DDPG) or two (TD3's clipped
/// double-Q: their elementwise minimum, NaN propagating, in the first one's kind).
pub fn td_target(critic: &mut Mlp, batch: &Batch, gamma: f64, q_next: &[&Tensor]) -> Tensor {
    let q = q_next[0];
    let fast = match q.kind() {
        Kind::Float => small::td_values::<f32>(batch, gamma, q_next),
        Kind::Double => small::td_values::<f64>(batch, gamma, q_next),
        _ => None,
    };
    let y = fast.unwrap_or_else(|| {
        let kind = q.kind();
        let q = q_next[1..]
            .iter()
            .fold(q.shallow_clone(), |m, o| m.minimum(&o.to_kind(kind)));
        let not_done = batch.terminated.to_kind(kind).neg().g_add_scalar_(1.0);
        batch.rewards.to_kind(kind) + q * not_done * gamma
    });
    let last = critic.layers().len() - 1;
    // A learned output format is not imposed on the target: once Q saturated at a
    // learned bound, a target cast to the same bound would make the TD error 0 there
    // and the collapse self-consistent (no gradient to widen the range again).
    let learned = critic
        .learned_points()
        .is_some_and(|lp| lp.index(last, TensorClass::Preact).is_some());
    if learned {
        return y;
    }
    critic.cast_at(last, TensorClass::Preact, y)
}

/// One regression step of `critic` toward `y` on the mean squared error: forward,
/// dL/dq = 2 (q - y) / B cast into the output error format, explicit backward, optimizer
/// step. Returns (loss, mean q).
pub fn critic_step(critic: &mut Mlp, input: &Tensor, y: &Tensor) -> (f64, f64) {
    let q = critic.forward(input);
    let b = q.size()[0] as f64;
    let fast = match q.kind() {
        Kind::Float => small::regression::<f32>(&q, y, 2.0 / b),
        Kind::Double => small::regression::<f64>(&q, y, 2.0 / b),
        _ => None,
    };
    let (loss, q_mean, grad) = fast.unwrap_or_else(|| {
        let diff = &q - y.to_kind(q.kind());
        let loss = f64::try_from(diff.square().mean(Kind::Double)).unwrap_or(f64::NAN);
        let q_mean = f64::try_from(q.mean(Kind::Double)).unwrap_or(f64::NAN);
        (loss, q_mean, diff * (2.0 / b))
    });
    let last = critic.layers().len() - 1;
    let delta = critic.cast_at(last, TensorClass::Error, grad);
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
    let loss =
        -small::mean(&q).unwrap_or_else(|| f64::try_from(q.mean(Kind::Double)).unwrap_or(f64::NAN));
    let last = critic.layers().len() - 1;
    let dq = critic.cast_at(last, TensorClass::Error, q.full_like(-1.0 / b as f64));
    let d_in = critic
        .backward(&dq, false, true)
        .expect("input gradient requested");
    let obs_dim = obs.size()[1];
    let d_a = d_in.narrow(1, obs_dim, d_in.size()[1] - obs_dim);
    let last = actor.layers().len() - 1;
    let d_a = actor.cast_at(last, TensorClass::Error, d_a);
    actor.backward(&d_a, true, false);
    actor.step();
    loss
}

/// A (rows x cols) tensor of standard normal samples from `rng`, f32.
pub fn standard_normal(rng: &mut ChaCha8Rng, rows: i64, cols: i64) -> Tensor {
    Tensor::from_slice(&standard_normals(rng, (rows * cols) as usize)).view([rows, cols])
}

/// `n` standard normal samples from `rng`, f32 (the draws of [`standard_normal`]).
pub fn standard_normals(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

/// Slice paths for the per-update glue on (batch x few) tensors. libtorch spends 1-5 us
/// per call on them (a few dozen calls per update); these run the same IEEE operations
/// in the same types and order as the tensor expressions they replace (kept as the
/// fallback for other kinds, devices and autograd inputs, and checked against them bit
/// for bit in `td3::tests`).
/// Statistics (losses, means) are summed in order in f64: they are reported, not
/// trained on, and may differ from libtorch's reduction in the last bits.
pub(crate) mod small {
    use tch::{Device, Kind, Tensor};

    use crate::fused::Store;
    use crate::replay::Batch;

    /// The elements of a CPU f32/f64 tensor, converted into `T` as `to_kind` does.
    pub fn read<T: Store>(t: &Tensor) -> Option<Vec<T>> {
        if t.device() != Device::Cpu {
            return None;
        }
        let t = t.contiguous();
        // SAFETY: t is a contiguous CPU tensor of the kind read; the slice is dropped
        // before t.
        unsafe {
            match t.kind() {
                Kind::Float => Some(
                    crate::fused::slice::<f32>(&t)
                        .iter()
                        .map(|&v| T::from_f64(v as f64))
                        .collect(),
                ),
                Kind::Double => Some(
                    crate::fused::slice::<f64>(&t)
                        .iter()
                        .map(|&v| T::from_f64(v))
                        .collect(),
                ),
                _ => None,
            }
        }
    }

    /// A (rows x cols) tensor of `T` holding `v`.
    pub fn tensor<T: Store>(v: &[T], rows: usize, cols: usize) -> Tensor {
        assert_eq!(v.len(), rows * cols);
        let t = Tensor::empty([rows as i64, cols as i64], (T::KIND, Device::Cpu));
        if !v.is_empty() {
            // SAFETY: t is a fresh contiguous CPU tensor of T's kind.
            unsafe { crate::fused::slice_mut::<T>(&t).copy_from_slice(v) };
        }
        t
    }

    fn dims(t: &Tensor) -> Option<(usize, usize)> {
        match t.size()[..] {
            [r, c] => Some((r as usize, c as usize)),
            _ => None,
        }
    }

    /// `cat([left, right], 1)` in `T`, with `right` optionally replaced by values
    /// already in `T` (same shape).
    pub fn side_by_side<T: Store>(
        left: &Tensor,
        right: &Tensor,
        right_values: Option<&[T]>,
    ) -> Option<Tensor> {
        let ((rows, lc), (rows2, rc)) = (dims(left)?, dims(right)?);
        if rows != rows2 || left.requires_grad() || right.requires_grad() {
            return None;
        }
        let l = read::<T>(left)?;
        let owned;
        let r = match right_values {
            Some(v) => v,
            None => {
                owned = read::<T>(right)?;
                &owned
            }
        };
        let mut out = Vec::with_capacity(rows * (lc + rc));
        for i in 0..rows {
            out.extend_from_slice(&l[i * lc..(i + 1) * lc]);
            out.extend_from_slice(&r[i * rc..(i + 1) * rc]);
        }
        Some(tensor(&out, rows, lc + rc))
    }

    #[inline]
    fn is_nan<T: Store>(x: T) -> bool {
        x.to_f64().is_nan()
    }

    /// libtorch's `minimum`: NaN if either is NaN.
    #[inline]
    pub fn minimum<T: Store>(a: T, b: T) -> T {
        if is_nan(a) {
            a
        } else if is_nan(b) || b < a {
            b
        } else {
            a
        }
    }

    /// libtorch's `clamp(x, lo, hi)` = `min(max(x, lo), hi)`, NaN propagating.
    #[inline]
    pub fn clamp<T: Store>(x: T, lo: T, hi: T) -> T {
        if is_nan(x) {
            return x;
        }
        let m = if x < lo { lo } else { x };
        if hi < m {
            hi
        } else {
            m
        }
    }

    /// `rewards + (min(q_next) * (1 - terminated)) * gamma` in `T` (q_next's kind).
    pub fn td_values<T: Store>(batch: &Batch, gamma: f64, q_next: &[&Tensor]) -> Option<Tensor> {
        let (rows, cols) = dims(q_next[0])?;
        let mut q = read::<T>(q_next[0])?;
        for o in &q_next[1..] {
            if dims(o)? != (rows, cols) {
                return None;
            }
            for (m, v) in q.iter_mut().zip(read::<T>(o)?) {
                *m = minimum(*m, v);
            }
        }
        let (r, term) = (read::<T>(&batch.rewards)?, read::<T>(&batch.terminated)?);
        if r.len() != q.len() || term.len() != q.len() {
            return None;
        }
        let (one, g) = (T::of_scalar(1.0), T::of_scalar(gamma));
        let y: Vec<T> = q
            .iter()
            .zip(r.iter().zip(&term))
            .map(|(&q, (&r, &t))| r + q * (T::ZERO - t + one) * g)
            .collect();
        Some(tensor(&y, rows, cols))
    }

    /// The critic's regression on q (`T`) toward y: (mean (q - y)^2, mean q, (q - y) * scale),
    /// the squares in `T`, the means in f64.
    pub fn regression<T: Store>(q: &Tensor, y: &Tensor, scale: f64) -> Option<(f64, f64, Tensor)> {
        if q.requires_grad() {
            return None;
        }
        let (rows, cols) = dims(q)?;
        let (qv, yv) = (read::<T>(q)?, read::<T>(y)?);
        if yv.len() != qv.len() || qv.is_empty() {
            return None;
        }
        let s = T::of_scalar(scale);
        let n = qv.len() as f64;
        let (mut sq, mut sum) = (0f64, 0f64);
        let grad: Vec<T> = qv
            .iter()
            .zip(&yv)
            .map(|(&q, &y)| {
                let d = q - y;
                sq += (d * d).to_f64();
                sum += q.to_f64();
                d * s
            })
            .collect();
        Some((sq / n, sum / n, tensor(&grad, rows, cols)))
    }

    /// The mean of a CPU f32/f64 tensor in f64 (in order).
    pub fn mean(t: &Tensor) -> Option<f64> {
        let v = read::<f64>(t)?;
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::mlp::Activation;
    use crate::precision::{PrecisionSpec, Preset};

    /// A critic whose output pre-activation is `ap_fixed<6,5>`: [-16, 16).
    fn critic() -> Mlp {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let spec = PrecisionSpec::preset(Preset::Fxp16);
        let mut net = Mlp::new(
            "critic",
            &[4, 8, 1],
            Activation::Identity,
            &spec,
            &mut rng,
            1,
        );
        net.update_formats(|_, f| {
            f.set(
                TensorClass::Preact,
                Some(quant::FxFormat {
                    overflow: quant::Overflow::Sat,
                    ..quant::FxFormat::signed(6, 5).unwrap()
                }),
            )
        });
        net
    }

    #[test]
    fn a_learned_output_format_does_not_clip_the_td_target() {
        let batch = Batch {
            obs: Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu)),
            actions: Tensor::zeros([2, 1], (Kind::Float, tch::Device::Cpu)),
            rewards: Tensor::from_slice(&[-5.0f32, -1.0]),
            next_obs: Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu)),
            terminated: Tensor::from_slice(&[0.0f32, 0.0]),
        };
        let q_next = Tensor::from_slice(&[-16.0f32, -15.0]);
        // Range-derived (not learned): the target is cast, and saturates at -16.
        let mut c = critic();
        let y: Vec<f32> = Vec::try_from(td_target(&mut c, &batch, 0.99, &[&q_next])).unwrap();
        assert_eq!(y[0], -16.0);
        // Learned: the target keeps its value, so a Q saturated at -16 still has an error.
        assert!(c.learn_binary_points(0.01));
        let y: Vec<f32> = Vec::try_from(td_target(&mut c, &batch, 0.99, &[&q_next])).unwrap();
        assert!((y[0] - (-5.0 - 0.99 * 16.0)).abs() < 1e-4, "{y:?}");
        assert!((y[1] - (-1.0 - 0.99 * 15.0)).abs() < 1e-4, "{y:?}");
    }
}
