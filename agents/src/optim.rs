//! Optimizers computed in fixed point: SGD with momentum and Adam, with every state and
//! the update cast into its format (classes `OptState` and `Update`) and the new
//! parameter cast into the weight or bias format. See the crate docs for how Adam's
//! square root and division are done.
//!
//! An optimizer steps a [`ParamView`] the network lends it (its flat tensors and per
//! layer the segments' formats and counters), never the network itself.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::fused::{self, Store};
use crate::params::{segments, ParamView};
use crate::precision::{TensorClass, TrainMode};

/// An optimizer and its hyperparameters (CleanRL: Adam, lr 3e-4, betas 0.9/0.999, eps 1e-8).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    Adam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
    /// momentum 0 is plain SGD.
    Sgd { lr: f64, momentum: f64 },
}

impl OptimizerConfig {
    pub fn adam(lr: f64) -> Self {
        OptimizerConfig::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// The optimizer state of one network: Adam's m and s = sqrt(v) (or SGD's momentum
/// buffer in `m`), flat like the network's parameters.
pub struct Optimizer {
    pub config: OptimizerConfig,
    /// Steps taken (Adam's bias-correction counter).
    pub t: u64,
    pub(crate) m: Tensor,
    pub(crate) s: Tensor,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig, numel: usize, kind: Kind) -> Self {
        let z = Tensor::zeros([numel as i64], (kind, tch::Device::Cpu));
        Optimizer {
            config,
            t: 0,
            m: z.copy(),
            s: z,
        }
    }

    pub(crate) fn convert(&mut self, kind: Kind) {
        if self.m.kind() != kind {
            self.m = self.m.to_kind(kind);
            self.s = self.s.to_kind(kind);
        }
    }

    /// First moment (Adam) or momentum buffer (SGD).
    pub fn first_moment(&self) -> &Tensor {
        &self.m
    }

    /// Adam's root second moment s = sqrt(v) (zeros for SGD).
    pub fn root_second_moment(&self) -> &Tensor {
        &self.s
    }

    pub(crate) fn load(&mut self, t: u64, m: &Tensor, s: &Tensor) {
        let _g = tch::no_grad_guard();
        self.t = t;
        self.m.copy_(m);
        self.s.copy_(s);
    }

    /// One step on the current gradients of the network that lent `net`.
    pub(crate) fn step(&mut self, mut net: ParamView<'_>) {
        let _g = tch::no_grad_guard();
        self.t += 1;
        if net.float || net.mode == TrainMode::Qat {
            self.step_float(&mut net);
        } else if self.fusable(&net) {
            match net.kind {
                Kind::Double => self.step_fused::<f64, f32>(&mut net),
                _ => self.step_fused::<f32, f64>(&mut net),
            }
            // The fused step wrote the shadow itself.
            return;
        } else {
            self.step_fixed(&mut net);
        }
        net.refresh_shadow();
    }

    /// Whether `step_fused` computes this step: Adam with lerp weights below 0.5, the
    /// network fusable, and no stochastic rounding in the optimizer-state or update
    /// formats (the parameter casts are then the only ones drawing words, in the same
    /// order as the unfused step).
    fn fusable(&self, net: &ParamView<'_>) -> bool {
        let OptimizerConfig::Adam { beta1, beta2, .. } = self.config else {
            return false;
        };
        let det = |f: Option<quant::FxFormat>| {
            f.is_some_and(|f| f.rounding != quant::Rounding::Stochastic)
        };
        net.fusable
            && (1.0 - beta1).abs() < 0.5
            && (1.0 - beta2).abs() < 0.5
            && self.m.kind() == net.kind
            && self.s.kind() == net.kind
            && net.layers.iter().all(|l| {
                det(l.formats.get(TensorClass::OptState)) && det(l.formats.get(TensorClass::Update))
            })
    }

    /// `step_fixed` for Adam with the fused kernels (`crate::fused`): the same values,
    /// counts and stochastic draws, in one pass over the flat tensors (moments, the
    /// correctly rounded root of v, state casts, update and parameters per L1 chunk).
    /// `S` is the shadow's type (unused without one).
    fn step_fused<T: Store, S: Store>(&mut self, net: &mut ParamView<'_>) {
        let OptimizerConfig::Adam {
            lr,
            beta1,
            beta2,
            eps,
        } = self.config
        else {
            unreachable!("fusable checks Adam");
        };
        let (bc1, bc2) = self.bias_corrections(beta1, beta2);
        let params = net.params.shallow_clone();
        let grads = net.grads.shallow_clone();
        let p32 = net.shadow.as_deref().map(Tensor::shallow_clone);
        let source = &mut *net.source;
        let mut segs = segments(&mut net.layers);
        // SAFETY: params, grads, m, s and the shadow are distinct contiguous tensors (flat,
        // owned by the network or the optimizer); each slice is the only one of its
        // memory while it lives.
        unsafe {
            fused::adam_step(
                &mut segs,
                fused::slice::<T>(&grads),
                fused::slice_mut::<T>(&self.m),
                fused::slice_mut::<T>(&self.s),
                fused::slice_mut::<T>(&params),
                p32.as_ref().map(|t| fused::slice_mut::<S>(t)),
                (1.0 - beta1, 1.0 - beta2),
                (lr / bc1, 1.0 / bc2.sqrt()),
                &|opt| adam_eps(eps, Some(opt)),
                source,
                (TensorClass::OptState.index(), TensorClass::Update.index()),
            );
        }
    }

    /// All-float path: Adam in three passes over the flat tensors (`fused::adam_moments_float`,
    /// libtorch's `sqrt_`, `fused::adam_apply_float`: the tch sequence below element by
    /// element) where they are contiguous CPU tensors of one float kind, else a few tch
    /// calls.
    fn step_float(&mut self, net: &mut ParamView<'_>) {
        self.step_float_with(net, true);
    }

    fn step_float_with(&mut self, net: &mut ParamView<'_>, fused: bool) {
        // Not under QAT: its master weights feed autograd graphs, whose version
        // counters only tch's in-place ops advance.
        let plain = fused && net.mode == TrainMode::Fixed;
        let g = net.grads.shallow_clone();
        let p = &mut *net.params;
        if let (
            true,
            OptimizerConfig::Adam {
                lr,
                beta1,
                beta2,
                eps,
            },
        ) = (plain, self.config)
        {
            let flat = [&g, &*p, &self.m, &self.s];
            let kind = p.kind();
            let fits = flat
                .iter()
                .all(|t| t.kind() == kind && t.device() == tch::Device::Cpu && t.is_contiguous());
            if fits && matches!(kind, Kind::Float | Kind::Double) {
                let (bc1, bc2) = self.bias_corrections(beta1, beta2);
                let c = -bc1 / lr;
                let weights = (1.0 - beta1, 1.0 - beta2);
                let denom = (c / bc2.sqrt(), c * eps);
                let p = p.shallow_clone();
                // SAFETY: g, p, m and s are distinct contiguous CPU tensors of `kind`
                // (the network's flat gradients and parameters, the optimizer's state).
                unsafe {
                    match kind {
                        Kind::Float => {
                            adam_float_passes::<f32>(&g, &self.m, &self.s, &p, weights, denom)
                        }
                        _ => adam_float_passes::<f64>(&g, &self.m, &self.s, &p, weights, denom),
                    }
                }
                return;
            }
        }
        match self.config {
            OptimizerConfig::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let (bc1, bc2) = self.bias_corrections(beta1, beta2);
                let _ = self.m.lerp_(&g, 1.0 - beta1);
                let g2 = g.square();
                let _ = self.s.square_();
                let _ = self.s.lerp_(&g2, 1.0 - beta2);
                let _ = self.s.sqrt_();
                // p -= (lr / bc1) m / (s / sqrt(bc2) + eps), as one addcdiv with a
                // negated denominator.
                let c = -bc1 / lr;
                let denom = (&self.s * (c / bc2.sqrt())).g_add_scalar_(c * eps);
                let _ = p.addcdiv_(&self.m, &denom);
            }
            OptimizerConfig::Sgd { lr, momentum } => {
                let _ = self.m.g_mul_scalar_(momentum).g_add_(&g);
                let _ = p.g_sub_(&(&self.m * lr));
            }
        }
    }

    fn bias_corrections(&self, beta1: f64, beta2: f64) -> (f64, f64) {
        let t = self.t as i32;
        (1.0 - beta1.powi(t), 1.0 - beta2.powi(t))
    }

    /// Fixed-point path: the arithmetic runs over the whole flat tensors (a few tch calls
    /// per network), each result is then cast segment by segment (weights and bias of
    /// every layer) with that layer's formats. Arithmetic between casts is in the
    /// storage float (f64 for formats wider than 24 bits), each result then rounded once
    /// into its format.
    fn step_fixed(&mut self, net: &mut ParamView<'_>) {
        let g = net.grads.shallow_clone();
        let u = match self.config {
            OptimizerConfig::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let (bc1, bc2) = self.bias_corrections(beta1, beta2);
                net.cast_segments(
                    Some(TensorClass::OptState),
                    &self.m.lerp(&g, 1.0 - beta1),
                    &self.m,
                );
                let s_pre = self.s.square().lerp_(&g.square(), 1.0 - beta2).sqrt_();
                net.cast_segments(Some(TensorClass::OptState), &s_pre, &self.s);
                let eps = adam_eps_tensor(net, eps, &self.s);
                (&self.m * (lr / bc1)) / (&self.s * (1.0 / bc2.sqrt())).g_add_(&eps)
            }
            OptimizerConfig::Sgd { lr, momentum } => {
                net.cast_segments(
                    Some(TensorClass::OptState),
                    &(&self.m * momentum).g_add_(&g),
                    &self.m,
                );
                &self.m * lr
            }
        };
        let u_q = u.empty_like();
        net.cast_segments(Some(TensorClass::Update), &u, &u_q);
        let p_pre = &*net.params - u_q;
        let params = net.params.shallow_clone();
        net.cast_segments(None, &p_pre, &params);
    }
}

/// `step_float`'s Adam on the flat tensors: moments, libtorch's `sqrt_`, the update.
///
/// # Safety
/// `g`, `m`, `s` and `p` must be distinct contiguous CPU tensors of `T`'s kind, of one
/// length, and no other slice of them may live during the call.
unsafe fn adam_float_passes<T: Store>(
    g: &Tensor,
    m: &Tensor,
    s: &Tensor,
    p: &Tensor,
    weights: (f64, f64),
    denom: (f64, f64),
) {
    fused::adam_moments_float::<T>(
        fused::slice(g),
        fused::slice_mut(m),
        fused::slice_mut(s),
        weights,
    );
    let _ = s.shallow_clone().sqrt_();
    fused::adam_apply_float::<T>(fused::slice(m), fused::slice(s), fused::slice_mut(p), denom);
}

/// Adam's epsilon as the hardware divides by it: at least one LSB of the layer's
/// optimizer-state format. An `eps` below that LSB (1e-8 against Q16.16's 1.5e-5) is not
/// representable beside `s`; used as is, a state `s` that rounded to 0 while `m` kept
/// an LSB would give `u = lr m / eps`, thousands of times Adam's usual step of about
/// `lr`, and scatter outlier weights through the network.
fn adam_eps(eps: f64, opt_state: Option<quant::FxFormat>) -> f64 {
    opt_state.map_or(eps, |f| eps.max(f.lsb()))
}

/// [`adam_eps`] of every layer's segments, laid out like the flat tensor `like`.
fn adam_eps_tensor(net: &ParamView<'_>, eps: f64, like: &Tensor) -> Tensor {
    let out = like.empty_like();
    for l in &net.layers {
        let e = adam_eps(eps, l.formats.get(TensorClass::OptState));
        for (off, len) in [l.weight, l.bias] {
            let _ = out.narrow(0, off as i64, len as i64).fill_(e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use quant::tensor::StochasticSource;
    use tch::{Kind, Tensor};

    use super::*;

    /// A view of all-float flat tensors with no layers (the float path reads none).
    fn view<'a>(
        p: &'a mut Tensor,
        g: &'a Tensor,
        source: &'a mut StochasticSource,
    ) -> ParamView<'a> {
        ParamView {
            kind: p.kind(),
            params: p,
            grads: g,
            shadow: None,
            mode: TrainMode::Fixed,
            float: true,
            fusable: false,
            observe: false,
            source,
            layers: Vec::new(),
        }
    }

    /// The sliced float Adam equals the tch sequence bit for bit, step after step
    /// (bias corrections changing, gradients of both signs and zero, f32 and f64).
    #[test]
    fn fused_float_adam_equals_the_tch_sequence() {
        for kind in [Kind::Float, Kind::Double] {
            let n = 5 * 24 + 24 + 24 + 1;
            let opts = (kind, tch::Device::Cpu);
            tch::manual_seed(4);
            let mut pa = (Tensor::rand([n], opts) - 0.5) * 0.4;
            let mut pb = pa.copy();
            let (ga, gb) = (Tensor::zeros([n], opts), Tensor::zeros([n], opts));
            let (mut sa, mut sb) = (StochasticSource::new(1), StochasticSource::new(1));
            let cfg = OptimizerConfig::Adam {
                lr: 3e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            };
            let n = n as usize;
            let (mut oa, mut ob) = (Optimizer::new(cfg, n, kind), Optimizer::new(cfg, n, kind));
            for step in 0..6 {
                tch::manual_seed(step);
                let g = Tensor::randn([n as i64], opts) * 0.1;
                let _ = g.narrow(0, 0, 7).fill_(0.0);
                ga.shallow_clone().copy_(&g);
                gb.shallow_clone().copy_(&g);
                oa.t += 1;
                ob.t += 1;
                oa.step_float_with(&mut view(&mut pa, &ga, &mut sa), true);
                ob.step_float_with(&mut view(&mut pb, &gb, &mut sb), false);
                for (what, x, y) in [("m", &oa.m, &ob.m), ("s", &oa.s, &ob.s), ("p", &pa, &pb)] {
                    let (x, y) = (x.to_kind(Kind::Double), y.to_kind(Kind::Double));
                    let (x, y) = (
                        Vec::<f64>::try_from(x).unwrap(),
                        Vec::<f64>::try_from(y).unwrap(),
                    );
                    let bad: Vec<_> = x
                        .iter()
                        .zip(&y)
                        .enumerate()
                        .filter(|(_, (u, v))| u.to_bits() != v.to_bits())
                        .take(3)
                        .collect();
                    assert!(bad.is_empty(), "{kind:?} step {step} {what}: {bad:?}");
                }
            }
        }
    }
}
