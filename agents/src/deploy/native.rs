//! Native C integer widths for the `c` target, and the proof that a layer's sums fit them.
//!
//! Codes live in the narrowest of `int8_t`/`int16_t`/`int32_t`/`int64_t` that holds their
//! format ([`CInt::holding`]). A layer's K products are summed in `int32_t` when the
//! formats and K prove the sum cannot overflow; when one input limb split (x = hi * 2^L +
//! lo, lo unsigned L bits) makes each limb's sum provably fit `int32_t`, in two `int32_t`
//! sums combined in `int64_t`; else in `int64_t` when that provably fits; and only where
//! even `int64_t` cannot be proven, in the two-limb 128-bit emulation of [`super::c`]'s
//! runtime. The bound ([`LayerPlan::of`]) uses the formats only: |x| and |w| at most the
//! largest code magnitude of their format, K terms, plus the aligned bias.

use quant::FxFormat;

use super::{AccSpec, DeployedLayer};

/// A C99 `<stdint.h>` signed integer type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CInt {
    I8,
    I16,
    I32,
    I64,
}

impl CInt {
    /// The narrowest type holding every code of `f` (an unsigned format needs one more bit).
    pub fn holding(f: &FxFormat) -> CInt {
        match f.width + (!f.signed) as u32 {
            0..=8 => CInt::I8,
            9..=16 => CInt::I16,
            17..=32 => CInt::I32,
            _ => CInt::I64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CInt::I8 => "int8_t",
            CInt::I16 => "int16_t",
            CInt::I32 => "int32_t",
            CInt::I64 => "int64_t",
        }
    }
}

/// How a layer sums its K products `x[i] * w[i][j]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accumulation {
    /// One `int32_t` sum.
    Int32,
    /// The input split into a high limb and a low limb of `low_bits` unsigned bits, each
    /// limb's products summed in `int32_t`, the two sums combined in `int64_t`.
    Int32Limbs { low_bits: u32 },
    /// `int64_t` products and sum.
    Int64,
    /// The two-limb 128-bit emulation (products in 64 bits, exact for widths <= 32).
    Wide,
}

/// Largest magnitude an `int64_t` value may reach where the plan shifts or adds to it.
const NATIVE_LIMIT: i128 = 1 << 62;

/// A layer's integer plan: how it sums, and whether its casts run on `int64_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerPlan {
    pub accumulation: Accumulation,
    /// Left shifts aligning the sum of products and the bias to the accumulator's
    /// fraction bits (one of them is 0).
    pub product_shift: i32,
    pub bias_shift: i32,
    /// Largest |sum of products| the formats allow.
    pub sum_bound: i128,
    /// Largest |aligned sum + aligned bias|; `None` past i128.
    pub acc_bound: Option<i128>,
    /// The pre-activation cast runs on `int64_t` (else on the 128-bit emulation).
    pub native_preact_cast: bool,
    /// The activation cast (ReLU, identity) runs on `int64_t`.
    pub native_act_cast: bool,
}

/// Largest |code| of `f`.
pub fn max_code(f: &FxFormat) -> i128 {
    (f.raw_min() as i128).abs().max(f.raw_max() as i128)
}

/// Whether a value of magnitude at most `bound` can be cast with `shift` (fraction bits
/// dropped; negative: added) on `int64_t`: shifts stay below 63 bits and the shifted value
/// within [`NATIVE_LIMIT`].
fn native_cast(bound: Option<i128>, shift: i32) -> bool {
    let Some(bound) = bound else { return false };
    if bound > NATIVE_LIMIT || !(-62..=62).contains(&shift) {
        return false;
    }
    shift >= 0
        || bound
            .checked_shl((-shift) as u32)
            .is_some_and(|v| v <= NATIVE_LIMIT)
}

impl LayerPlan {
    /// The plan of `l` fed with inputs in format `x`.
    pub fn of(x: &FxFormat, l: &DeployedLayer) -> LayerPlan {
        let acc = AccSpec::of(x, l);
        let product_shift = acc.frac - (x.frac_bits() + l.weight_fmt.frac_bits());
        let bias_shift = acc.frac - l.bias_fmt.frac_bits();
        let k = l.in_dim as i128;
        let w_max = max_code(&l.weight_fmt);
        let sum_bound = k * max_code(x) * w_max;
        let shifted = |v: i128, s: i32| {
            u32::try_from(s)
                .ok()
                .and_then(|s| v.checked_mul(1i128.checked_shl(s)?))
        };
        let acc_bound = shifted(sum_bound, product_shift).and_then(|p| {
            shifted(max_code(&l.bias_fmt), bias_shift).and_then(|b| p.checked_add(b))
        });
        let fits_i32 = |b: i128| b <= i32::MAX as i128;
        let native = acc_bound.is_some_and(|b| b <= NATIVE_LIMIT);
        let accumulation = if !native {
            Accumulation::Wide
        } else if fits_i32(sum_bound) {
            Accumulation::Int32
        } else if let Some(low_bits) = (1..x.width).rev().find(|&low| {
            let (lo, hi) = limb_max(x, low);
            fits_i32(k * lo * w_max) && fits_i32(k * hi * w_max)
        }) {
            Accumulation::Int32Limbs { low_bits }
        } else {
            Accumulation::Int64
        };
        let preact_shift = acc.frac - l.preact_fmt.frac_bits();
        let act_shift = l.preact_fmt.frac_bits() - l.act_fmt.frac_bits();
        LayerPlan {
            accumulation,
            product_shift,
            bias_shift,
            sum_bound,
            acc_bound,
            native_preact_cast: native && native_cast(acc_bound, preact_shift),
            native_act_cast: native_cast(Some(max_code(&l.preact_fmt)), act_shift),
        }
    }

    /// Whether anything in the layer needs the 128-bit emulation.
    pub fn needs_wide(&self) -> bool {
        self.accumulation == Accumulation::Wide || !self.native_preact_cast || !self.native_act_cast
    }
}

/// The largest input magnitude for which layer `l`'s sums provably fit `int32_t` given its
/// actual weights: every partial sum of output j's products is at most
/// `max|x| * sum_i |W[i][j]|`, so `max|x| <= i32::MAX / max_j sum_i |W[i][j]|` keeps
/// every one of them (and every product) within `int32_t`. `None` when not even
/// `max|x| = 1` is covered. The C target checks `max|x|` of each call against it and sums
/// an [`Accumulation::Int32Limbs`] layer in one `int32_t` pass when it holds.
pub fn int32_input_limit(l: &DeployedLayer) -> Option<i128> {
    let row_abs = (0..l.out_dim)
        .map(|j| {
            (0..l.in_dim)
                .map(|i| (l.weight[i * l.out_dim + j] as i128).abs())
                .sum::<i128>()
        })
        .max()
        .unwrap_or(0);
    match row_abs {
        0 => Some(i32::MAX as i128),
        r => Some(i32::MAX as i128 / r).filter(|&m| m >= 1),
    }
}

/// Largest |low limb| and |high limb| of a code of `x` split at `low_bits`
/// (x = hi * 2^low_bits + lo, 0 <= lo < 2^low_bits).
pub fn limb_max(x: &FxFormat, low_bits: u32) -> (i128, i128) {
    let hi = |v: i64| (v as i128).div_euclid(1i128 << low_bits).abs();
    (
        (1i128 << low_bits) - 1,
        hi(x.raw_min()).max(hi(x.raw_max())),
    )
}

#[cfg(test)]
mod tests {
    use super::super::synthetic::fmt;
    use super::*;
    use crate::mlp::Activation;

    fn layer(k: usize, w: &str, b: &str, z: &str) -> DeployedLayer {
        DeployedLayer {
            name: "fc".into(),
            in_dim: k,
            out_dim: 1,
            weight: vec![0; k],
            weight_fmt: fmt(w),
            bias: vec![0],
            bias_fmt: fmt(b),
            preact_fmt: fmt(z),
            activation: Activation::Relu,
            act_fmt: fmt(z),
        }
    }

    #[test]
    fn codes_take_the_narrowest_type_holding_the_format() {
        assert_eq!(CInt::holding(&fmt("ap_fixed<8,3>")), CInt::I8);
        assert_eq!(CInt::holding(&fmt("ap_ufixed<8,3>")), CInt::I16);
        assert_eq!(CInt::holding(&fmt("ap_fixed<10,3>")), CInt::I16);
        assert_eq!(CInt::holding(&fmt("ap_fixed<17,3>")), CInt::I32);
        assert_eq!(CInt::holding(&fmt("ap_ufixed<31,3>")), CInt::I32);
        assert_eq!(CInt::holding(&fmt("ap_fixed<32,3>")), CInt::I32);
    }

    #[test]
    fn ten_bit_layers_of_64_sum_in_int32_and_sixteen_bit_layers_of_256_in_two_int32_limbs() {
        let x = fmt("ap_fixed<10,4>");
        let p = LayerPlan::of(
            &x,
            &layer(64, "ap_fixed<10,2>", "ap_fixed<10,2>", "ap_fixed<10,4>"),
        );
        assert_eq!(p.accumulation, Accumulation::Int32);
        assert_eq!(p.sum_bound, 64 * 512 * 512);
        let x = fmt("ap_fixed<16,6>");
        let l = layer(256, "ap_fixed<16,2>", "ap_fixed<16,4>", "ap_fixed<16,8>");
        let p = LayerPlan::of(&x, &l);
        assert_eq!(p.accumulation, Accumulation::Int32Limbs { low_bits: 8 });
        assert_eq!((p.product_shift, p.bias_shift), (0, 12));
        assert!(p.native_preact_cast && p.native_act_cast && !p.needs_wide());
    }

    #[test]
    fn wide_weights_sum_in_int64_and_32_by_32_bit_products_in_the_emulation() {
        let x = fmt("ap_ufixed<9,3>");
        let p = LayerPlan::of(
            &x,
            &layer(9, "ap_fixed<32,3>", "ap_fixed<24,6>", "ap_fixed<16,4>"),
        );
        assert_eq!(p.accumulation, Accumulation::Int64);
        let x = fmt("ap_fixed<32,16>");
        let p = LayerPlan::of(
            &x,
            &layer(256, "ap_fixed<32,8>", "ap_fixed<32,8>", "ap_fixed<32,16>"),
        );
        assert_eq!(p.accumulation, Accumulation::Wide);
        assert!(p.needs_wide());
    }

    #[test]
    fn every_limb_split_reassembles_every_code_of_the_format() {
        for f in ["ap_fixed<6,2>", "ap_ufixed<5,1>", "ap_fixed<16,6>"] {
            let f = fmt(f);
            for low in 1..f.width {
                let (lo_max, hi_max) = limb_max(&f, low);
                for x in f.raw_min()..=f.raw_max() {
                    let x = x as i128;
                    let lo = x.rem_euclid(1 << low);
                    let hi = (x - lo) / (1 << low);
                    assert_eq!(hi * (1 << low) + lo, x);
                    assert!(
                        lo <= lo_max && hi.abs() <= hi_max,
                        "{f} split at {low}: {x}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_cast_shifting_past_62_bits_or_beyond_the_native_range_is_not_native() {
        assert!(native_cast(Some(1 << 40), 20));
        assert!(native_cast(Some(1 << 40), -22));
        assert!(!native_cast(Some(1 << 40), -23));
        assert!(!native_cast(Some(1), 63));
        assert!(!native_cast(None, 0));
    }
}
