//! The golden integer GEMM: `y = cast(x W + b)` with exact products and an exact
//! accumulator, the reference that the tensor emulation and the accelerator simulation
//! are tested against.

use std::ops::{AddAssign, Mul};

use rayon::prelude::*;

use crate::exact::{add_exact, quantize_mag, signed_parts, Acc256};
use crate::format::FxFormat;
use crate::magnitude::Mag;
use crate::stats::{Clip, QuantStats};

/// `ceil(log2(k))` (0 for k <= 1).
pub(crate) fn ceil_log2(k: usize) -> u32 {
    if k <= 1 {
        0
    } else {
        usize::BITS - (k - 1).leading_zeros()
    }
}

/// Bits that bound `|sum of k products|` of codes of these formats (|code| <= 2^W).
pub(crate) fn accumulator_bits(xf: &FxFormat, wf: &FxFormat, k: usize) -> u32 {
    xf.width + wf.width + ceil_log2(k)
}

/// Magnitude bits of a code of `f`: |code| <= 2^(width - 1) when signed, < 2^width when not.
fn code_mag_bits(f: &FxFormat) -> u32 {
    f.width - f.signed as u32
}

/// Whether `cast(x W + b)` over values on these formats' grids (`x` m×k, `w` k×n, `b` n)
/// is computed exactly by an f64 GEMM in any order of summation, with or without fused
/// multiply-adds: every product and partial sum (the bias aligned to the finer of the two
/// grids) is an integer multiple of one grid step with magnitude at most 2^53, which
/// f64 represents exactly, and the step stays a normal f64. Then one f64 GEMM followed
/// by the exact cast of each f64 result equals [`golden_gemm`] bit for bit. For example
/// 16-bit operands satisfy it up to k = 2^21; FXP32 weights with 16-bit activations
/// (48 bits of product) up to k = 32.
pub fn f64_gemm_is_exact(xf: &FxFormat, wf: &FxFormat, k: usize, bias: Option<&FxFormat>) -> bool {
    let acc_frac = xf.frac_bits() as i64 + wf.frac_bits() as i64;
    let frac = bias.map_or(acc_frac, |b| acc_frac.max(b.frac_bits() as i64));
    let acc_bits = (code_mag_bits(xf) + code_mag_bits(wf) + ceil_log2(k)) as i64 + frac - acc_frac;
    let bits = match bias {
        None => acc_bits,
        // |acc| + |b| <= 2 * max(|acc|, |b|).
        Some(b) => acc_bits.max(code_mag_bits(b) as i64 + frac - b.frac_bits() as i64) + 1,
    };
    // The step 2^-frac and the largest magnitude 2^(bits - frac) are normal f64 numbers.
    bits <= 53 && frac <= 1000 && bits - frac <= 1000
}

/// A bias term per output column: sign, magnitude and exponent of `b[j]`.
pub(crate) struct Bias {
    parts: Vec<(bool, u128)>,
    exp: i64,
}

impl Bias {
    pub fn new(b: &[i64], bf: &FxFormat) -> Self {
        Bias {
            parts: b.iter().map(|&r| signed_parts(r, bf)).collect(),
            exp: -(bf.frac_bits() as i64),
        }
    }
}

/// Assigns `acc * 2^acc_exp (+ b[j])` to `out`.
pub(crate) fn finish_output(
    (neg, mag): (bool, Mag),
    acc_exp: i64,
    bias: Option<(&Bias, usize)>,
    out: &FxFormat,
) -> (i64, Clip) {
    match bias {
        None => quantize_mag(neg, &mag, acc_exp, out, None),
        Some((b, j)) => {
            let (bn, bm) = b.parts[j];
            let (n, m, e) = add_exact((neg, &mag, acc_exp), (bn, &Mag::Small(bm), b.exp));
            quantize_mag(n, &m, e, out, None)
        }
    }
}

/// The final step of [`golden_gemm`] for callers that sum the products themselves: an
/// exact integer accumulator `acc` of `x_frac + w_frac` fraction bits, plus output
/// column `j`'s bias, assigned to `out` (one rounding, one overflow step).
pub struct AccumulatorCast {
    bias: Option<Bias>,
    acc_exp: i64,
    out: FxFormat,
}

impl AccumulatorCast {
    /// For products of codes of `xf` and `wf`, with an optional bias per output column.
    pub fn new(
        xf: &FxFormat,
        wf: &FxFormat,
        bias: Option<(&[i64], &FxFormat)>,
        out: &FxFormat,
    ) -> Self {
        AccumulatorCast {
            bias: bias.map(|(b, bf)| Bias::new(b, bf)),
            acc_exp: -(xf.frac_bits() as i64 + wf.frac_bits() as i64),
            out: *out,
        }
    }

    /// The output code of column `j` for accumulator `acc`.
    pub fn cast(&self, acc: i128, j: usize) -> i64 {
        let mag = (acc < 0, Mag::Small(acc.unsigned_abs()));
        finish_output(
            mag,
            self.acc_exp,
            self.bias.as_ref().map(|b| (b, j)),
            &self.out,
        )
        .0
    }
}

/// Integer accumulators for the row kernel.
trait AccInt: Copy + Default + AddAssign + Mul<Output = Self> + PartialEq + Send + Sync {
    fn from_i128(v: i128) -> Self;
    fn to_i128(self) -> i128;
}

impl AccInt for i64 {
    fn from_i128(v: i128) -> Self {
        v as i64
    }
    fn to_i128(self) -> i128 {
        self as i128
    }
}

impl AccInt for i128 {
    fn from_i128(v: i128) -> Self {
        v
    }
    fn to_i128(self) -> i128 {
        self
    }
}

struct Problem<'a> {
    x: &'a [i64],
    xf: &'a FxFormat,
    w: &'a [i64],
    wf: &'a FxFormat,
    bias: Option<Bias>,
    k: usize,
    n: usize,
    out: &'a FxFormat,
}

impl Problem<'_> {
    fn acc_exp(&self) -> i64 {
        -(self.xf.frac_bits() as i64 + self.wf.frac_bits() as i64)
    }

    /// Rows in parallel; `row` fills one output row from the row index.
    fn run(
        &self,
        m: usize,
        row: impl Fn(usize, &mut [i64]) -> QuantStats + Sync,
    ) -> (Vec<i64>, QuantStats) {
        let mut y = vec![0i64; m * self.n];
        let mut stats = QuantStats::default();
        if self.n == 0 {
            return (y, stats);
        }
        let parts: Vec<QuantStats> = y
            .par_chunks_mut(self.n)
            .enumerate()
            .map(|(i, yr)| row(i, yr))
            .collect();
        for p in &parts {
            stats.merge(p);
        }
        (y, stats)
    }

    fn finish_row(&self, yr: &mut [i64], acc: impl Fn(usize) -> (bool, Mag)) -> QuantStats {
        let mut stats = QuantStats::default();
        for (j, yj) in yr.iter_mut().enumerate() {
            let (r, clip) = finish_output(
                acc(j),
                self.acc_exp(),
                self.bias.as_ref().map(|b| (b, j)),
                self.out,
            );
            stats.record(clip);
            *yj = r;
        }
        stats
    }

    fn gemm_int<T: AccInt>(&self, m: usize) -> (Vec<i64>, QuantStats) {
        let xv: Vec<T> = self
            .x
            .iter()
            .map(|&r| T::from_i128(self.xf.raw_value(r)))
            .collect();
        let wv: Vec<T> = self
            .w
            .iter()
            .map(|&r| T::from_i128(self.wf.raw_value(r)))
            .collect();
        let (k, n) = (self.k, self.n);
        self.run(m, |i, yr| {
            let mut acc = vec![T::default(); n];
            for (kk, &a) in xv[i * k..(i + 1) * k].iter().enumerate() {
                if a == T::default() {
                    continue;
                }
                for (s, &b) in acc.iter_mut().zip(&wv[kk * n..(kk + 1) * n]) {
                    *s += a * b;
                }
            }
            self.finish_row(yr, |j| {
                let v = acc[j].to_i128();
                (v < 0, Mag::Small(v.unsigned_abs()))
            })
        })
    }

    fn gemm_wide(&self, m: usize) -> (Vec<i64>, QuantStats) {
        let xv: Vec<(bool, u128)> = self.x.iter().map(|&r| signed_parts(r, self.xf)).collect();
        let wv: Vec<(bool, u128)> = self.w.iter().map(|&r| signed_parts(r, self.wf)).collect();
        let (k, n) = (self.k, self.n);
        self.run(m, |i, yr| {
            let mut acc = vec![Acc256::default(); n];
            for (kk, &(an, am)) in xv[i * k..(i + 1) * k].iter().enumerate() {
                for (s, &(bn, bm)) in acc.iter_mut().zip(&wv[kk * n..(kk + 1) * n]) {
                    // |a|, |b| < 2^64: the product fits in u128.
                    s.add_signed(an != bn, am * bm);
                }
            }
            self.finish_row(yr, |j| acc[j].to_sign_mag())
        })
    }
}

/// `y = cast(x W + b)`: `x` is m×k codes of `xf`, `w` k×n codes of `wf` (both row-major),
/// `b` n codes of its format; products and sums are exact (i64, i128 or 256-bit
/// accumulators as the widths need), then each output is assigned to `out` once (its
/// rounding and overflow). Rows run in parallel with rayon.
///
/// # Panics
/// If the slice lengths do not match `m`, `k`, `n`.
#[allow(clippy::too_many_arguments)]
pub fn golden_gemm(
    x: &[i64],
    xf: &FxFormat,
    w: &[i64],
    wf: &FxFormat,
    b: Option<(&[i64], &FxFormat)>,
    m: usize,
    k: usize,
    n: usize,
    out: &FxFormat,
) -> Vec<i64> {
    golden_gemm_with_stats(x, xf, w, wf, b, m, k, n, out).0
}

/// [`golden_gemm`] with the counts of saturated and wrapped outputs.
#[allow(clippy::too_many_arguments)]
pub fn golden_gemm_with_stats(
    x: &[i64],
    xf: &FxFormat,
    w: &[i64],
    wf: &FxFormat,
    b: Option<(&[i64], &FxFormat)>,
    m: usize,
    k: usize,
    n: usize,
    out: &FxFormat,
) -> (Vec<i64>, QuantStats) {
    assert_eq!(
        x.len(),
        m * k,
        "golden_gemm: x has {} codes, m*k = {}",
        x.len(),
        m * k
    );
    assert_eq!(
        w.len(),
        k * n,
        "golden_gemm: w has {} codes, k*n = {}",
        w.len(),
        k * n
    );
    if let Some((bv, _)) = b {
        assert_eq!(
            bv.len(),
            n,
            "golden_gemm: b has {} codes, n = {n}",
            bv.len()
        );
    }
    let p = Problem {
        x,
        xf,
        w,
        wf,
        bias: b.map(|(bv, bf)| Bias::new(bv, bf)),
        k,
        n,
        out,
    };
    match accumulator_bits(xf, wf, k) {
        0..=63 => p.gemm_int::<i64>(m),
        64..=127 => p.gemm_int::<i128>(m),
        _ => p.gemm_wide(m),
    }
}

/// Assigns an exact integer accumulator (`acc * 2^acc_exp`) to `out`; for callers that
/// computed the sum themselves.
#[cfg(feature = "torch")]
pub(crate) fn finish_i128(
    acc: i128,
    acc_exp: i64,
    bias: Option<(&Bias, usize)>,
    out: &FxFormat,
) -> (i64, Clip) {
    if bias.is_none() {
        return crate::exact::quantize(acc < 0, &acc.unsigned_abs(), acc_exp, out, None);
    }
    finish_output(
        (acc < 0, Mag::Small(acc.unsigned_abs())),
        acc_exp,
        bias,
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{add, mul};

    /// The same GEMM through the scalar ops: each product exactly in a wide format, the
    /// sum in a wide format, one final cast.
    fn scalar_reference(
        x: &[i64],
        xf: &FxFormat,
        w: &[i64],
        wf: &FxFormat,
        k: usize,
        n: usize,
        out: &FxFormat,
    ) -> Vec<i64> {
        let m = x.len() / k;
        // Wide enough for every product and partial sum of these small tests, exactly.
        let sf = FxFormat::signed(64, xf.int_bits + wf.int_bits + 9).unwrap();
        assert!(sf.frac_bits() >= xf.frac_bits() + wf.frac_bits());
        let mut y = Vec::new();
        for i in 0..m {
            for j in 0..n {
                let mut s = 0i64;
                for kk in 0..k {
                    let p = mul(x[i * k + kk], xf, w[kk * n + j], wf, &sf);
                    s = add(s, &sf, p, &sf, &sf);
                }
                y.push(crate::cast(s, &sf, out));
            }
        }
        y
    }

    #[test]
    fn all_accumulator_widths_agree_with_scalar_ops() {
        let xf: FxFormat = "ap_fixed<8,3>".parse().unwrap();
        let wf: FxFormat = "ap_fixed<8,2>".parse().unwrap();
        let out: FxFormat = "ap_fixed<12,6,AP_RND_CONV,AP_SAT>".parse().unwrap();
        let (m, k, n) = (3, 5, 4);
        let x: Vec<i64> = (0..m * k).map(|i| (i as i64 * 37) % 256 - 128).collect();
        let w: Vec<i64> = (0..k * n).map(|i| (i as i64 * 91) % 256 - 128).collect();
        let want = scalar_reference(&x, &xf, &w, &wf, k, n, &out);
        let p = Problem {
            x: &x,
            xf: &xf,
            w: &w,
            wf: &wf,
            bias: None,
            k,
            n,
            out: &out,
        };
        assert_eq!(p.gemm_int::<i64>(m).0, want);
        assert_eq!(p.gemm_int::<i128>(m).0, want);
        assert_eq!(p.gemm_wide(m).0, want);
        assert_eq!(golden_gemm(&x, &xf, &w, &wf, None, m, k, n, &out), want);
    }

    #[test]
    fn bias_is_added_exactly_before_the_single_cast() {
        let f: FxFormat = "ap_fixed<8,4>".parse().unwrap();
        let bf: FxFormat = "ap_fixed<8,0>".parse().unwrap();
        let out: FxFormat = "ap_fixed<8,4,AP_RND,AP_SAT>".parse().unwrap();
        // x = 1.0, w = 0.5 -> 0.5; b = 7/256: 0.52734 is 8.44 LSBs of 1/16 -> 8.
        let y = golden_gemm(&[16], &f, &[8], &f, Some((&[7], &bf)), 1, 1, 1, &out);
        assert_eq!(y, vec![8]);
        // b = 8/256: exactly 8.5 LSBs, a tie: RND goes up, RND_CONV to even.
        let y = golden_gemm(&[16], &f, &[8], &f, Some((&[8], &bf)), 1, 1, 1, &out);
        assert_eq!(y, vec![9]);
        let conv = out.with_modes(crate::Rounding::RndConv, crate::Overflow::Sat);
        let y = golden_gemm(&[16], &f, &[8], &f, Some((&[8], &bf)), 1, 1, 1, &conv);
        assert_eq!(y, vec![8]);
    }

    #[test]
    fn sixty_four_bit_operands_accumulate_in_256_bits() {
        let f: FxFormat = "ap_ufixed<64,64>".parse().unwrap();
        let out: FxFormat = "ap_ufixed<64,190,AP_TRN,AP_WRAP>".parse().unwrap();
        let big = u64::MAX as i64;
        // 4 * (2^64-1)^2 = 2^130 - 2^67 + 4; in units of 2^126: floor = 15, wrap keeps it.
        let (y, stats) = golden_gemm_with_stats(&[big; 4], &f, &[big; 4], &f, None, 1, 4, 1, &out);
        assert_eq!(y, vec![15]);
        assert_eq!(stats.elements, 1);
    }
}
