//! QFX-style learned binary point: the integer bits of a tensor's format trained by
//! gradient descent on the task loss, as an alternative to deriving them from ranges.
//!
//! # The estimator
//! Each quantization point holds a continuous parameter `s` (integer bits); the format in
//! use has `I = round(s)` integer bits and LSB `Δ = 2^(I - W)`. With `v = x / Δ` and the
//! signed code range `[n, p] = [-2^(W-1), 2^(W-1) - 1]`, the quantizer is
//! `Q(x) = Δ · clamp(round(v), n, p)`. Its true derivative with respect to `Δ` is zero
//! almost everywhere, so we use the LSQ estimator (Esser et al., 2020):
//!
//! ```text
//! ∂Q/∂Δ = round(v) - v   if n <= v <= p   (inside: the rounding error in LSBs)
//!       = n or p         if v < n or v > p (saturated: the clip bound)
//! ∂Δ/∂s = Δ · ln 2       (straight through the rounding of s)
//! ∂L/∂s = ln 2 · Δ · Σ_i e_i · ∂Q/∂Δ(x_i) / sqrt(N · p)
//! ```
//!
//! where `e_i = ∂L/∂Q(x_i)` is the error at that cast — the quantity a backward pass
//! computes at each point (`delta_z` at a pre-activation, `delta_a` at an activation,
//! the weight gradient at a weight). [`calibrate_actor`] gets it for the actor's task
//! loss `L = −mean Q(s, π(s))`: the critic's explicit backward gives `∂L/∂a` at the
//! action, and the straight-through backward of the actor's forward carries it to every
//! cast (a zero "probe" added after each cast receives exactly `e_i`). `1/sqrt(N · p)`
//! is LSQ's gradient scale, which keeps the step of `s` independent of the tensor size `N`
//! and the width. Saturated elements push `s` up (more integer bits) in proportion to how
//! much the loss wants them larger; rounding errors inside push `s` down (finer LSB) when
//! they correlate with the error. The rounding error and the saturation test come from
//! `quant::fake_quant` with the current format, so no grid arithmetic happens here.
//!
//! ```no_run
//! use agents::learned_point::LearnedPoint;
//! use quant::FxFormat;
//! let fmt = FxFormat::signed(8, 1).unwrap();          // range [-1, 1): too small for x
//! let x = tch::Tensor::from_slice(&[3.0f32, -2.5, 0.1]);
//! let mut lp = LearnedPoint::new(&fmt, 0.5);
//! // Loss = ½‖Q(x) − x‖²: the error at the cast is Q(x) − x.
//! for _ in 0..200 {
//!     let (q, _) = quant::tensor::fake_quant(&x, &lp.format(), None);
//!     let g = lp.grad(&x, &(&q - &x));
//!     lp.step(g);
//! }
//! assert!(lp.format().int_bits >= 3); // now holds 3.0
//! ```

use quant::FxFormat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::dpg::critic_input;
use crate::mlp::{Activation, Mlp};
use crate::precision::TensorClass;

/// Bounds of `s` beyond any useful binary point of 32-bit-or-narrower formats.
const S_RANGE: (f64, f64) = (-24.0, 32.0);

/// One tensor's learned binary point: the continuous integer bits and its learning rate.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LearnedPoint {
    /// The format whose width, signedness, rounding and overflow are kept.
    pub template: FxFormat,
    /// Continuous integer bits; the format uses `round(s)`.
    pub s: f64,
    /// Plain SGD step on `s`.
    pub lr: f64,
}

impl LearnedPoint {
    /// Starts at `fmt`'s integer bits.
    pub fn new(fmt: &FxFormat, lr: f64) -> Self {
        LearnedPoint {
            template: *fmt,
            s: fmt.int_bits as f64,
            lr,
        }
    }

    /// The format in use: the template with `round(s)` integer bits.
    pub fn format(&self) -> FxFormat {
        FxFormat {
            int_bits: self.s.round() as i32,
            ..self.template
        }
    }

    /// `∂L/∂s` by the LSQ estimator above, for the tensor `x` before the cast and the
    /// error `e = ∂L/∂Q(x)` after it (same shape). Non-finite elements are ignored.
    pub fn grad(&self, x: &Tensor, e: &Tensor) -> f64 {
        let fmt = self.format();
        let delta = fmt.lsb();
        let x = x.to_kind(Kind::Double);
        let e = e.to_kind(Kind::Double);
        let (q, _) = quant::tensor::fake_quant(&x, &fmt, None);
        let (lo, hi) = (fmt.min_value(), fmt.max_value());
        let half = 0.5 * delta;
        let below = x.lt(lo - half);
        let above = x.gt(hi + half);
        // Inside: the rounding error in LSBs, (Q(x) - x) / Δ = round(v) - v.
        let inside = (&q - &x) / delta;
        let (n, p) = (fmt.raw_min() as f64, fmt.raw_max() as f64);
        let dq = inside
            .where_self(&below.logical_not(), &Tensor::from(n).to_kind(Kind::Double))
            .where_self(&above.logical_not(), &Tensor::from(p).to_kind(Kind::Double));
        let terms = (&e * &dq).nan_to_num(0.0, 0.0, 0.0);
        let numel = x.numel().max(1) as f64;
        let sum = terms.sum(Kind::Double).double_value(&[]);
        std::f64::consts::LN_2 * delta * sum / (numel * p.max(1.0)).sqrt()
    }

    /// One SGD step on `s`, kept within a range any 32-bit-or-narrower format can use.
    pub fn step(&mut self, grad: f64) {
        if grad.is_finite() {
            self.s = (self.s - self.lr * grad).clamp(S_RANGE.0, S_RANGE.1);
        }
    }
}

/// The actor's cast points whose binary point is learned: the network input, and every
/// layer's weight, bias, pre-activation and activation.
pub const LEARNED_CLASSES: [TensorClass; 5] = [
    TensorClass::Input,
    TensorClass::Weight,
    TensorClass::Bias,
    TensorClass::Preact,
    TensorClass::Activation,
];

/// The learned binary points of one network's fixed-point casts, by layer and class.
#[derive(Clone, Debug, Default)]
pub struct NetworkPoints {
    pub points: Vec<(usize, TensorClass, LearnedPoint)>,
}

impl NetworkPoints {
    /// One learned point per fixed-point cast of `net` in [`LEARNED_CLASSES`] (the input
    /// only at the first layer), starting at the current formats.
    pub fn of(net: &Mlp, lr: f64) -> Self {
        let mut points = Vec::new();
        for (i, l) in net.layers().iter().enumerate() {
            for class in LEARNED_CLASSES {
                if class == TensorClass::Input && i > 0 {
                    continue;
                }
                if let Some(f) = l.formats().get(class) {
                    points.push((i, class, LearnedPoint::new(&f, lr)));
                }
            }
        }
        NetworkPoints { points }
    }

    fn get(&self, layer: usize, class: TensorClass) -> Option<usize> {
        self.points
            .iter()
            .position(|(l, c, _)| *l == layer && *c == class)
    }

    /// Writes the learned formats into `net` (and any other network with the same layer
    /// count, e.g. its target).
    pub fn apply(&self, net: &mut Mlp) {
        let names: Vec<String> = net.layers().iter().map(|l| l.name().to_string()).collect();
        net.update_formats(|name, f| {
            let i = names.iter().position(|n| n == name).expect("own layer");
            for (l, c, p) in &self.points {
                if *l == i {
                    f.set(*c, Some(p.format()));
                }
            }
        });
    }
}

/// Quantizes `x` at a learned point with the straight-through estimator, and returns the
/// output plus a zero "probe" added to it: the probe's gradient is `∂L/∂Q(x)`, the error
/// at this cast.
fn probed_cast(
    x: &Tensor,
    p: Option<&LearnedPoint>,
    probes: &mut Vec<(Tensor, Tensor, usize)>,
    idx: Option<usize>,
) -> Tensor {
    match (p, idx) {
        (Some(p), Some(i)) => {
            let (q, _) = quant::tensor::fake_quant_ste(x, &p.format());
            let probe = q.zeros_like().detach().set_requires_grad(true);
            probes.push((x.detach(), probe.shallow_clone(), i));
            q + probe
        }
        _ => x.shallow_clone(),
    }
}

/// QFX-style calibration of an actor's binary points on its own task loss: `iters`
/// minibatches of `batch` rows drawn from `obs` (seeded by `seed`); each runs the actor forward with the learned
/// formats (straight-through casts over the actor's current weights, in f64), the
/// critic forward on (obs, action), the critic's explicit backward of `L = -mean Q` to
/// its action input, the actor's backward to every cast, and one LSQ step per learned
/// point ([`LearnedPoint::grad`]). The weights do not change. Returns the mean actor loss
/// of the last iteration.
pub fn calibrate_actor(
    actor: &Mlp,
    critic: &mut Mlp,
    points: &mut NetworkPoints,
    obs: &Tensor,
    batch: i64,
    iters: usize,
    seed: u64,
) -> f64 {
    let rows = obs.size()[0].max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut last_loss = f64::NAN;
    for _ in 0..iters {
        let idx: Vec<i64> = (0..batch).map(|_| rng.gen_range(0..rows)).collect();
        let x = obs
            .index_select(0, &Tensor::from_slice(&idx))
            .to_kind(Kind::Double);
        let mut probes = Vec::new();
        let at = |l: usize, c: TensorClass| points.get(l, c);
        let p = |i: Option<usize>| i.map(|i| &points.points[i].2);
        let i0 = at(0, TensorClass::Input);
        let mut h = probed_cast(&x, p(i0), &mut probes, i0);
        for (li, l) in actor.layers().iter().enumerate() {
            let w = l.weight().detach().to_kind(Kind::Double);
            let b = l.bias().detach().to_kind(Kind::Double);
            let iw = at(li, TensorClass::Weight);
            let ib = at(li, TensorClass::Bias);
            let w = probed_cast(&w, p(iw), &mut probes, iw);
            let b = probed_cast(&b, p(ib), &mut probes, ib);
            let iz = at(li, TensorClass::Preact);
            let z = probed_cast(&b.addmm(&h, &w), p(iz), &mut probes, iz);
            let a = match l.activation() {
                Activation::Relu => z.relu(),
                Activation::Identity => z,
                Activation::Tanh { scale, offset } => {
                    let s = Tensor::from_slice(scale).to_kind(Kind::Double);
                    let o = Tensor::from_slice(offset).to_kind(Kind::Double);
                    z.tanh() * s + o
                }
            };
            let ia = at(li, TensorClass::Activation);
            h = probed_cast(&a, p(ia), &mut probes, ia);
        }
        // The critic's explicit backward gives dL/da for L = -mean Q(s, a).
        let q = critic.forward(&critic_input(&x, &h.detach(), critic.kind()));
        last_loss = -f64::try_from(q.mean(Kind::Double)).unwrap_or(f64::NAN);
        let last = critic.layers().len() - 1;
        let dq = critic.cast_at(last, TensorClass::Error, q.full_like(-1.0 / batch as f64));
        let d_in = critic
            .backward(&dq, false, true)
            .expect("input gradient requested");
        let obs_dim = x.size()[1];
        let d_a = d_in
            .narrow(1, obs_dim, d_in.size()[1] - obs_dim)
            .to_kind(Kind::Double);
        if probes.is_empty() {
            break;
        }
        let surrogate = (&h * d_a.detach()).sum(Kind::Double);
        let wrt: Vec<&Tensor> = probes.iter().map(|(_, p, _)| p).collect();
        let grads = Tensor::run_backward(&[&surrogate], &wrt, false, false);
        for ((x_pre, _, i), e) in probes.iter().zip(grads) {
            let lp = &mut points.points[*i].2;
            let g = lp.grad(x_pre, &e);
            lp.step(g);
        }
    }
    last_loss
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mse_descent(x: &Tensor, start: &FxFormat, steps: usize) -> LearnedPoint {
        let mut lp = LearnedPoint::new(start, 0.5);
        for _ in 0..steps {
            let (q, _) = quant::tensor::fake_quant(x, &lp.format(), None);
            let g = lp.grad(x, &(&q - x));
            lp.step(g);
        }
        lp
    }

    #[test]
    fn saturation_pushes_integer_bits_up_and_wasted_range_pulls_them_down() {
        let x = Tensor::from_slice(&[3.0f32, -2.5, 0.7, -0.01, 1.9]);
        let fmt = FxFormat::signed(8, 1).unwrap();
        let lp = LearnedPoint::new(&fmt, 0.5);
        let (q, _) = quant::tensor::fake_quant(&x, &fmt, None);
        assert!(
            lp.grad(&x, &(&q - &x)) < 0.0,
            "clipped values must ask for more bits"
        );

        let small = Tensor::from_slice(&[0.013f32, -0.021, 0.0071, 0.0302]);
        let wide = FxFormat::signed(6, 4).unwrap(); // lsb 0.25: every value rounds to 0
        let lp = LearnedPoint::new(&wide, 0.5);
        let (q, _) = quant::tensor::fake_quant(&small, &wide, None);
        assert!(
            lp.grad(&small, &(&q - &small)) > 0.0,
            "rounding loss must ask for fewer bits"
        );
    }

    #[test]
    fn descent_on_reconstruction_loss_finds_the_range_rule_binary_point() {
        // Gaussian-ish data with max |x| about 5: the range rule gives I = 4 at 8 bits.
        let x = Tensor::from_slice(&[
            0.3f32, -1.2, 2.2, -0.4, 4.9, 0.05, -3.1, 1.0, -0.7, 2.8, -4.6, 0.9,
        ]);
        for start in [-2, 1] {
            let fmt = FxFormat::signed(8, start).unwrap();
            let lp = mse_descent(&x, &fmt, 400);
            let i = lp.format().int_bits;
            assert!((3..=5).contains(&i), "from I = {start}, learned I = {i}");
        }
        // From far too many integer bits only rounding error pulls, and its LSQ gradient
        // shrinks with the LSB: the point moves down, slowly.
        let lp = mse_descent(&x, &FxFormat::signed(8, 8).unwrap(), 400);
        assert!(
            lp.s < 8.0 && lp.format().int_bits >= 4,
            "learned s = {}",
            lp.s
        );
    }

    #[test]
    fn module_example_holds() {
        let x = Tensor::from_slice(&[3.0f32, -2.5, 0.1]);
        let lp = mse_descent(&x, &FxFormat::signed(8, 1).unwrap(), 200);
        assert!(lp.format().int_bits >= 3, "learned s = {}", lp.s);
    }

    #[test]
    fn zero_error_gives_zero_gradient_and_nan_is_ignored() {
        let x = Tensor::from_slice(&[1.0f32, f32::NAN, 2.0]);
        let fmt = FxFormat::signed(8, 2).unwrap();
        let lp = LearnedPoint::new(&fmt, 0.1);
        assert_eq!(lp.grad(&x, &x.zeros_like()), 0.0);
        let g = lp.grad(&x, &x.ones_like());
        assert!(g.is_finite());
    }

    fn tiny_agent(preset: crate::precision::Preset) -> (Mlp, Mlp) {
        use crate::dpg::NetSpec;
        use crate::optim::OptimizerConfig;
        use crate::precision::PrecisionSpec;
        let spec = NetSpec {
            obs_dim: 3,
            act_dim: 1,
            hidden: vec![8, 8],
            action_low: vec![-2.0],
            action_high: vec![2.0],
            actor_optimizer: OptimizerConfig::adam(1e-3),
            critic_optimizer: OptimizerConfig::adam(1e-3),
        };
        let prec = PrecisionSpec::preset(preset);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let actor = spec.actor(&prec, &mut rng, 1);
        let critic = spec.critic("critic1", &prec, &mut rng, 2);
        (actor, critic)
    }

    #[test]
    fn calibration_forward_is_the_actor_forward_and_leaves_weights_alone() {
        let (mut actor, mut critic) = tiny_agent(crate::precision::Preset::Fxp16);
        let row = Tensor::from_slice(&[0.3f32, -0.8, 1.7]).view([1, 3]);
        let obs = row.repeat([6, 1]);
        let weights = actor.params().copy();
        // lr 0: the points stay at the actor's own formats, so the loss of the
        // calibration's forward must be the actor's own -Q(s, actor(s)).
        let mut points = NetworkPoints::of(&actor, 0.0);
        assert_eq!(points.points.len(), 1 + 3 * 4);
        let loss = calibrate_actor(&actor, &mut critic, &mut points, &obs, 4, 2, 9);
        let a = actor.infer(&row);
        let q = critic.infer(&crate::dpg::critic_input(&row, &a, critic.kind()));
        let expect = -f64::try_from(q.mean(Kind::Double)).unwrap();
        assert!(
            (loss - expect).abs() <= 1e-4 * expect.abs().max(1.0),
            "{loss} vs {expect}"
        );
        assert!(actor.params().equal(&weights));

        // With a step size, the same seed gives the same learned points.
        let run = |seed| {
            let (actor, mut critic) = tiny_agent(crate::precision::Preset::Fxp16);
            let mut p = NetworkPoints::of(&actor, 2.0);
            let obs = Tensor::from_slice(
                &(0..300)
                    .map(|i| ((i * 37 % 101) as f32 / 25.0) - 2.0)
                    .collect::<Vec<_>>(),
            )
            .view([100, 3]);
            calibrate_actor(&actor, &mut critic, &mut p, &obs, 16, 20, seed);
            p.points.iter().map(|(_, _, lp)| lp.s).collect::<Vec<_>>()
        };
        let (a, b) = (run(5), run(5));
        assert_eq!(a, b);
        let start: Vec<f64> = NetworkPoints::of(&actor, 2.0)
            .points
            .iter()
            .map(|(_, _, lp)| lp.s)
            .collect();
        assert_ne!(a, start, "twenty LSQ steps moved no binary point");
    }
}
