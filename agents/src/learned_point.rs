//! QFX's learned binary point: the integer bits of every fixed-point cast of a network
//! are parameters of that network, trained by its own optimizer step on its own loss,
//! together with the weights, on every update of QAT retraining.
//!
//! # The parametrization and the estimator
//! Each learned cast (per layer and tensor class: input, weight, bias, pre-activation,
//! activation) holds a continuous `s`; its format is the class's format (width,
//! signedness, rounding, overflow) with `I = round(s)` integer bits, so the LSB is
//! `Δ = 2^(I - W)` and the range `[-2^(I-1), 2^(I-1))`. `s` is the base-2 logarithm of
//! the clipping threshold (`s = log2 t + 1` for a signed format): this is the log2
//! domain of TQT (Jain et al., *Trained Quantization Thresholds for Accurate and
//! Efficient Fixed-Point Inference of Deep Neural Networks*, MLSys 2020), which QFX
//! (Dai et al., *QFX: Trainable Fixed-Point Quantization for Deep Learning Hardware*,
//! 2024) builds its trainable binary points on. With `v = x / Δ` and the code range
//! `[n, p]`, the cast is `Q(x) = Δ · clamp(round(v), n, p)` and TQT's estimator is
//!
//! ```text
//! ∂Q/∂s = Δ · ln 2 · (round(v) − v)   where n ≤ v ≤ p  (the rounding error in LSBs)
//!       = Δ · ln 2 · n  or  Δ · ln 2 · p   where the value saturates
//! ```
//!
//! (straight through the rounding of `s` and of `v`), and `∂L/∂s = Σ_i e_i · ∂Q/∂s(x_i)`
//! with `e_i = ∂L/∂Q(x_i)`, the error libtorch's autograd delivers at that cast. The
//! network's QAT forward (`mlp/qat.rs`) adds `(∂Q/∂s) · (s − s.detach())` to each
//! learned cast: zero in value, so the forward is exactly the fake-quantized one, and
//! the backward of the critic's TD loss or the actor's `−Q(s, π(s))` reaches `s`.
//!
//! The gradient scales with `Δ`, which halves with every bit of width; TQT therefore
//! steps `log2 t` with Adam, whose step `lr · m̂ / (√v̂ + ε)` does not depend on the
//! gradient's scale, and so do we ([`LearnedPoints::step`]): a bit of integer range
//! costs the same number of updates at 4 bits as at 16. Saturated elements push `s` up
//! in proportion to how much the loss wants them larger; rounding errors inside push
//! it down (a finer LSB) when they correlate with the error.
//!
//! # Lifetime
//! The points live in the network (`Mlp`), are saved in its checkpoint, and survive
//! every format change: `Mlp::update_formats` keeps `round(s)` integer bits on a
//! learned class whatever the new format says, so a ladder's next rung narrows the
//! width and keeps the learned binary point. Only [`LearnedPoints::of`] (the start of a
//! ladder) sets `s` from a format.
//!
//! A critic's TD target is not cast into the critic's learned output format
//! (`crate::dpg::td_target`): with the target clipped at the same learned bound as Q, a
//! saturated Q has a saturated target, the TD error there is 0, and the range never
//! widens again (measured: Q pinned at the bound for every seed of a Pendulum ladder).

use quant::FxFormat;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::precision::{LayerFormats, TensorClass};

/// The casts whose binary point is learned: the network input (first layer only), and
/// every layer's weight, bias, pre-activation and activation.
pub const LEARNED_CLASSES: [TensorClass; 5] = [
    TensorClass::Input,
    TensorClass::Weight,
    TensorClass::Bias,
    TensorClass::Preact,
    TensorClass::Activation,
];

/// Bounds of `s`, beyond any useful binary point of the widths the ladder uses.
pub const S_RANGE: (f64, f64) = (-24.0, 32.0);

/// Adam's constants for the points (Kingma and Ba's defaults).
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// One learned cast: where it is, its continuous integer bits and Adam's moments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub layer: usize,
    pub class: TensorClass,
    /// Continuous integer bits (`log2` of the range); the format uses `round(s)`.
    pub s: f64,
    m: f64,
    v: f64,
}

impl Point {
    /// The integer bits in use.
    pub fn int_bits(&self) -> i32 {
        self.s.round() as i32
    }
}

/// A network's learned binary points and their optimizer state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LearnedPoints {
    pub points: Vec<Point>,
    /// Adam's step size on `s` (integer bits per update, at most).
    pub lr: f64,
    /// Adam steps taken.
    pub t: u64,
    /// The gradient of the last backward, one per point (not saved: a step consumes it).
    #[serde(skip)]
    grad: Option<Vec<f64>>,
}

impl LearnedPoints {
    /// One point per fixed-point cast in [`LEARNED_CLASSES`] of `layers` (the input only
    /// at the first), starting at the formats' integer bits.
    pub fn of(layers: &[LayerFormats], lr: f64) -> Self {
        let mut points = Vec::new();
        for (i, f) in layers.iter().enumerate() {
            for class in LEARNED_CLASSES {
                if class == TensorClass::Input && i > 0 {
                    continue;
                }
                if let Some(fmt) = f.get(class) {
                    points.push(Point {
                        layer: i,
                        class,
                        s: fmt.int_bits as f64,
                        m: 0.0,
                        v: 0.0,
                    });
                }
            }
        }
        LearnedPoints {
            points,
            lr,
            t: 0,
            grad: None,
        }
    }

    /// The index of the point at (`layer`, `class`).
    pub fn index(&self, layer: usize, class: TensorClass) -> Option<usize> {
        self.points
            .iter()
            .position(|p| p.layer == layer && p.class == class)
    }

    /// Writes `round(s)` into each learned class of `layers` that has a fixed-point
    /// format (its width, signedness, rounding and overflow stay); returns whether any
    /// format changed.
    pub fn impose(&self, layers: &mut [LayerFormats]) -> bool {
        let mut changed = false;
        for p in &self.points {
            let Some(f) = layers.get_mut(p.layer) else {
                continue;
            };
            if let Some(fmt) = f.get(p.class) {
                let i = p.int_bits();
                if fmt.int_bits != i {
                    f.set(p.class, Some(FxFormat { int_bits: i, ..fmt }));
                    changed = true;
                }
            }
        }
        changed
    }

    /// `s` of every point as a tensor that records gradients (f64), for one QAT forward.
    pub fn leaf(&self) -> Tensor {
        let s: Vec<f64> = self.points.iter().map(|p| p.s).collect();
        Tensor::from_slice(&s).set_requires_grad(true)
    }

    /// Keeps the gradient of the last backward (one element per point) for [`Self::step`].
    pub fn set_grad(&mut self, g: &Tensor) {
        let g: Vec<f64> = Vec::try_from(g.to_kind(Kind::Double).view(-1)).unwrap_or_default();
        self.grad = (g.len() == self.points.len()).then_some(g);
    }

    /// One Adam step on every `s` from the last gradient (none: nothing happens); a
    /// non-finite gradient leaves its point alone. Returns whether any `round(s)` moved.
    pub fn step(&mut self) -> bool {
        let Some(g) = self.grad.take() else {
            return false;
        };
        self.t += 1;
        let (c1, c2) = (
            1.0 - BETA1.powi(self.t.min(1 << 20) as i32),
            1.0 - BETA2.powi(self.t.min(1 << 20) as i32),
        );
        let mut moved = false;
        for (p, g) in self.points.iter_mut().zip(g) {
            if !g.is_finite() {
                continue;
            }
            p.m = BETA1 * p.m + (1.0 - BETA1) * g;
            p.v = BETA2 * p.v + (1.0 - BETA2) * g * g;
            let before = p.int_bits();
            let step = self.lr * (p.m / c1) / ((p.v / c2).sqrt() + EPS);
            p.s = (p.s - step).clamp(S_RANGE.0, S_RANGE.1);
            moved |= p.int_bits() != before;
        }
        moved
    }
}

/// `∂Q/∂Δ` per element of `x` cast at `fmt` into `q` (same shape, detached): the
/// rounding error in LSBs inside the range, the clip bound `n` or `p` where the value
/// saturates, 0 at non-finite elements.
fn dq_ddelta(x: &Tensor, q: &Tensor, fmt: &FxFormat) -> Tensor {
    let delta = fmt.lsb();
    let half = 0.5 * delta;
    let below = x.lt(fmt.min_value() - half);
    let above = x.gt(fmt.max_value() + half);
    let inside = (q - x) / delta;
    let n = Tensor::from(fmt.raw_min() as f64).to_kind(x.kind());
    let p = Tensor::from(fmt.raw_max() as f64).to_kind(x.kind());
    inside
        .where_self(&below.logical_not(), &n)
        .where_self(&above.logical_not(), &p)
        .nan_to_num(0.0, 0.0, 0.0)
}

/// The cast `q = Q(x)` (already computed at `fmt`, e.g. by `fake_quant_ste`) with TQT's
/// gradient towards `s_i` (a 0-dim element of [`LearnedPoints::leaf`]) added: the
/// result equals `q` in value.
pub fn with_point_gradient(x: &Tensor, q: Tensor, fmt: &FxFormat, s_i: &Tensor) -> Tensor {
    let dq = {
        let _g = tch::no_grad_guard();
        dq_ddelta(&x.detach(), &q.detach(), fmt) * (fmt.lsb() * std::f64::consts::LN_2)
    };
    // Zero in value, slope 1 in s_i.
    let u = (s_i - s_i.detach()).to_kind(q.kind());
    q + dq * u
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adam descent on ½‖Q(x) − x‖² through the autograd path the network uses.
    fn descend(x: &Tensor, start: &FxFormat, steps: usize, lr: f64) -> LearnedPoints {
        let mut f = LayerFormats::float();
        f.set(TensorClass::Weight, Some(*start));
        let mut lp = LearnedPoints::of(&[f], lr);
        assert_eq!(lp.points.len(), 1);
        for _ in 0..steps {
            let mut f = [f];
            lp.impose(&mut f);
            let fmt = f[0].get(TensorClass::Weight).unwrap();
            let leaf = lp.leaf();
            let xr = x.detach().set_requires_grad(true);
            let (q, _) = quant::tensor::fake_quant_ste(&xr, &fmt);
            let q = with_point_gradient(&xr, q, &fmt, &leaf.get(0));
            let loss = (&q - x).square().sum(Kind::Double) * 0.5;
            let g = Tensor::run_backward(&[&loss], &[&leaf], false, false);
            lp.set_grad(&g[0]);
            lp.step();
        }
        lp
    }

    fn data() -> Tensor {
        // max |x| about 5: the range rule gives I = 4 at 8 bits.
        Tensor::from_slice(&[
            0.3f64, -1.2, 2.2, -0.4, 4.9, 0.05, -3.1, 1.0, -0.7, 2.8, -4.6, 0.9,
        ])
    }

    #[test]
    fn the_added_gradient_term_changes_no_value() {
        let x = data().set_requires_grad(true);
        let fmt = FxFormat::signed(6, 2).unwrap();
        let s = Tensor::from_slice(&[2.0f64]).set_requires_grad(true);
        let (q, _) = quant::tensor::fake_quant_ste(&x, &fmt);
        let y = with_point_gradient(&x, q.shallow_clone(), &fmt, &s.get(0));
        assert!(y.detach().equal(&q.detach()));
        // Saturated values (4.9, -3.1, 2.2, ...) dominate: more integer bits wanted.
        let e = (&y - &x).detach();
        let g = Tensor::run_backward(&[&(&y * &e).sum(Kind::Double)], &[&s], false, false);
        assert!(g[0].double_value(&[0]) < 0.0);
    }

    #[test]
    fn descent_finds_the_range_binary_point_from_below_and_above_at_every_width() {
        for width in [4u32, 8, 16] {
            for start in [-2, 1, 9] {
                let fmt = FxFormat::signed(width, start).unwrap();
                let lp = descend(&data(), &fmt, 600, 0.05);
                let i = lp.points[0].int_bits();
                assert!(
                    (3..=5).contains(&i),
                    "W = {width}: from I = {start} learned I = {i} (s = {})",
                    lp.points[0].s
                );
            }
        }
    }

    #[test]
    fn impose_keeps_width_and_modes_and_reports_changes() {
        let mut f = LayerFormats::float();
        f.set(TensorClass::Preact, Some(FxFormat::signed(8, 3).unwrap()));
        let mut lp = LearnedPoints::of(&[f], 0.1);
        assert!(!lp.impose(&mut [f]));
        lp.points[0].s = 5.4;
        let mut fs = [f];
        assert!(lp.impose(&mut fs));
        let got = fs[0].get(TensorClass::Preact).unwrap();
        assert_eq!((got.width, got.int_bits), (8, 5));
        // Float classes stay float.
        assert_eq!(fs[0].get(TensorClass::Weight), None);
    }

    #[test]
    fn step_without_gradient_or_with_nan_leaves_points_alone() {
        let mut f = LayerFormats::float();
        f.set(TensorClass::Weight, Some(FxFormat::signed(8, 3).unwrap()));
        f.set(TensorClass::Bias, Some(FxFormat::signed(8, 3).unwrap()));
        let mut lp = LearnedPoints::of(&[f], 0.1);
        assert!(!lp.step());
        lp.set_grad(&Tensor::from_slice(&[f64::NAN, 1.0]));
        lp.step();
        assert_eq!(lp.points[0].s, 3.0);
        assert!(lp.points[1].s < 3.0);
    }
}
