//! Multiplier-free layers for the C and HLS targets: every weight × input product written
//! as the shifts and adds of the weight's signed power-of-two digits (its non-adjacent
//! form, `crate::pow2::signed_digits`), so the generated code multiplies no weight.
//!
//! Shifting a negative number left is undefined in C, so the inputs are offset to be
//! non-negative first: with `u_i = x_i − x_min ≥ 0` (`x_min` the input format's smallest
//! code), `Σ_i x_i w_i = Σ_i u_i w_i + x_min Σ_i w_i`, and each `u_i w_i` is
//! `Σ_d ±(u_i << p_d)`. The constant `x_min Σ_i w_i`, aligned like the products, and the
//! aligned bias fold into one literal per output, and the products' alignment shift
//! into each term's shift, so an output's accumulator is one literal plus shifted
//! inputs: the very integer the multiplying code forms (`LayerPlan`), bit for bit. A
//! layer is emitted this way only when every term and partial sum is proven below
//! 2^62 in magnitude ([`ShiftAddLayer::of`]), so `int64_t` holds them.

use quant::FxFormat;

use super::native::LayerPlan;
use super::{DeployError, DeployedActor, DeployedLayer};
use crate::pow2::signed_digits;

/// Largest magnitude a term or partial sum may reach.
const LIMIT: i128 = 1 << 62;

/// One output's accumulator: `constant + Σ ±(u[input] << shift)`.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputSum {
    pub constant: i64,
    /// (input index, left shift, subtract).
    pub terms: Vec<(usize, u32, bool)>,
}

/// A layer's outputs as shift-add sums over the offset inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct ShiftAddLayer {
    /// `x_min`: the offset subtracted from each input code.
    pub input_offset: i64,
    pub outputs: Vec<OutputSum>,
    /// Bits (sign included) that hold every term and partial sum.
    pub bits: u32,
}

impl ShiftAddLayer {
    /// `l` fed with codes of `x` as shift-add sums; an error naming the layer when a term
    /// or partial sum could reach 2^62 (then the multiplying code is the one to use).
    pub fn of(x: &FxFormat, l: &DeployedLayer) -> Result<Self, DeployError> {
        let plan = LayerPlan::of(x, l);
        let (ps, bs) = (plan.product_shift, plan.bias_shift);
        let too_wide = |what: String| DeployError::ShiftAdd {
            layer: l.name.clone(),
            what,
        };
        if !(0..=62).contains(&ps) || !(0..=62).contains(&bs) {
            return Err(too_wide(format!(
                "alignment shifts {ps} and {bs} outside 0..62"
            )));
        }
        let x_min = x.raw_min();
        let u_max = (x.raw_max() as i128) - (x_min as i128);
        let mut outputs = Vec::with_capacity(l.out_dim);
        let mut bound: i128 = 0;
        for j in 0..l.out_dim {
            let mut weight_sum: i128 = 0;
            let mut terms = Vec::new();
            let mut reach: i128 = 0;
            for i in 0..l.in_dim {
                let w = l.weight[i * l.out_dim + j];
                weight_sum += w as i128;
                for (p, neg) in signed_digits(w) {
                    let shift = p + ps as u32;
                    if shift > 62 {
                        return Err(too_wide(format!("a term shifts by {shift}")));
                    }
                    reach += u_max << shift;
                    terms.push((i, shift, neg));
                }
            }
            let constant = ((x_min as i128) * weight_sum) << ps;
            let constant = constant + ((l.bias[j] as i128) << bs);
            let total = constant.abs() + reach;
            if total >= LIMIT {
                return Err(too_wide(format!(
                    "output {j}'s terms may reach {total}, beyond int64_t"
                )));
            }
            bound = bound.max(total);
            outputs.push(OutputSum {
                constant: constant as i64,
                terms,
            });
        }
        let bits = (128 - bound.leading_zeros()) + 1;
        Ok(ShiftAddLayer {
            input_offset: x_min,
            outputs,
            bits,
        })
    }

    /// The accumulator of output `j` for input codes `x` (what the generated code
    /// computes; equal to the multiplying accumulator, see the module doc).
    pub fn accumulate(&self, j: usize, x: &[i64]) -> i64 {
        let o = &self.outputs[j];
        o.terms.iter().fold(o.constant, |acc, &(i, s, neg)| {
            let t = (x[i] - self.input_offset) << s;
            if neg {
                acc - t
            } else {
                acc + t
            }
        })
    }
}

/// What one inference of the actor costs in its layers' sums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct OpCounts {
    /// Weight × input multiplications.
    pub multiplications: u64,
    /// Shifts of an input by a weight digit.
    pub shifts: u64,
    /// Additions and subtractions into the outputs' sums (one per product or shifted
    /// term; the bias starts each sum).
    pub adds: u64,
}

impl DeployedActor {
    /// Whether every weight is a sum of at most `k` signed powers of two; else the first
    /// layer and code that is not.
    pub fn check_pow2_terms(&self, k: u32) -> Result<(), DeployError> {
        for l in &self.layers {
            if let Some(&w) = l
                .weight
                .iter()
                .find(|&&w| crate::pow2::signed_digit_count(w) > k)
            {
                return Err(DeployError::ShiftAdd {
                    layer: l.name.clone(),
                    what: format!(
                        "weight code {w} has {} signed powers of two, more than {k} (train \
                         with `fixar qat --pow2-terms {k}`)",
                        crate::pow2::signed_digit_count(w)
                    ),
                });
            }
        }
        Ok(())
    }

    /// Every layer as shift-add sums, in order.
    pub fn shift_add_layers(&self) -> Result<Vec<ShiftAddLayer>, DeployError> {
        let mut x = self.input_fmt;
        let mut out = Vec::new();
        for l in &self.layers {
            out.push(ShiftAddLayer::of(&x, l)?);
            x = l.act_fmt;
        }
        Ok(out)
    }

    /// Multiplications, shifts and adds per inference: as the multiplying code runs it
    /// (`shift_add` false: one multiplication and one add per weight), or as the
    /// shift-add code does (one shift and one add per signed digit of each weight).
    pub fn op_counts(&self, shift_add: bool) -> OpCounts {
        let mut c = OpCounts::default();
        for l in &self.layers {
            let n = (l.in_dim * l.out_dim) as u64;
            if shift_add {
                let digits: u64 = l
                    .weight
                    .iter()
                    .map(|&w| crate::pow2::signed_digit_count(w) as u64)
                    .sum();
                c.shifts += digits;
                c.adds += digits;
            } else {
                c.multiplications += n;
                c.adds += n;
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::super::synthetic::synthetic_actor;
    use super::*;

    /// The multiplying accumulator of output `j` (`LayerPlan`'s alignment).
    fn multiplied(x_fmt: &FxFormat, l: &DeployedLayer, j: usize, x: &[i64]) -> i128 {
        let plan = LayerPlan::of(x_fmt, l);
        let s: i128 = (0..l.in_dim)
            .map(|i| x[i] as i128 * l.weight[i * l.out_dim + j] as i128)
            .sum();
        (s << plan.product_shift) + ((l.bias[j] as i128) << plan.bias_shift)
    }

    #[test]
    fn shift_add_sums_equal_the_multiplying_accumulator() {
        let actor = synthetic_actor(3);
        let layers = actor.shift_add_layers().unwrap();
        let mut x_fmt = actor.input_fmt;
        for (l, sa) in actor.layers.iter().zip(&layers) {
            for trial in 0..20i64 {
                // Extreme and scattered codes of the input format.
                let x: Vec<i64> = (0..l.in_dim as i64)
                    .map(|i| match (trial + i) % 4 {
                        0 => x_fmt.raw_min(),
                        1 => x_fmt.raw_max(),
                        _ => {
                            (x_fmt.raw_min() + (i * 7919 + trial * 104729))
                                .rem_euclid(x_fmt.raw_max() - x_fmt.raw_min() + 1)
                                + x_fmt.raw_min()
                        }
                    })
                    .collect();
                for j in 0..l.out_dim {
                    assert_eq!(
                        sa.accumulate(j, &x) as i128,
                        multiplied(&x_fmt, l, j, &x),
                        "{} output {j}",
                        l.name
                    );
                }
            }
            x_fmt = l.act_fmt;
        }
        let c = actor.op_counts(true);
        assert_eq!(c.multiplications, 0);
        let terms: usize = layers
            .iter()
            .flat_map(|l| &l.outputs)
            .map(|o| o.terms.len())
            .sum();
        assert_eq!(c.shifts, terms as u64);
        let m = actor.op_counts(false);
        let weights: usize = actor.layers.iter().map(|l| l.weight.len()).sum();
        assert_eq!((m.multiplications, m.shifts), (weights as u64, 0));
    }

    #[test]
    fn weights_with_too_many_digits_are_named() {
        let mut actor = super::super::synthetic::synthetic_pow2_actor(4, 2);
        actor.check_pow2_terms(2).unwrap();
        actor.layers[1].weight[0] = 0b1010101; // four signed digits
        let e = actor.check_pow2_terms(2).unwrap_err().to_string();
        assert!(e.contains("fc2") && e.contains("code 85"), "{e}");
    }
}
