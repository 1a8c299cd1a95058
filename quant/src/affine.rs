//! FIXAR's asymmetric (affine, zero-point) activation quantizer (Yang et al., DAC 2021,
//! Algorithm 1): on a range `[Amin, Amax]` frozen from observations, with `n` bits,
//!
//! ```text
//! delta = (|Amin| + |Amax|) / 2^n,   z = floor(-Amin / delta),
//! Q(A)  = floor(A / delta) + z,      saturated to the codes [0, 2^n - 1],
//! value = (Q - z) * delta.
//! ```
//!
//! Rounding is the paper's floor (toward minus infinity), computed exactly: `floor` of the
//! real quotient of the two doubles, not of their rounded f64 quotient. A code outside
//! `[0, 2^n - 1]` is clamped and counted as saturated in [`QuantStats`], like every other
//! cast. `delta` is the double nearest `|Amin| + |Amax|`, divided by `2^n` (exact); the
//! dequantized value is `(Q - z) * delta` rounded once to a double.
//!
//! Cases the formula leaves open, and what this module does:
//! - **Degenerate range** (`delta = 0`: `Amin = Amax = 0`, or a range so small that
//!   `delta` underflows): every input maps to code 0 with `z = 0`, i.e. to the value 0;
//!   inputs other than zero are counted as saturated (the limit of a range shrinking to
//!   zero: everything above it saturates onto it). `Amin = Amax = c != 0` is not
//!   degenerate: `delta = 2|c| / 2^n` and `c` maps to code 0.
//! - **The range's own ends**: with floor on both `Q` and `z`, `Q(Amin) = -1` (saturated
//!   to 0) unless `Amin / delta` is an integer, and `Q(Amax) = 2^n` (saturated to
//!   `2^n - 1`) when `Amax / delta + z` reaches it: the formula as written saturates its
//!   extremes by one code, and those saturations are counted like any other.
//! - **Ranges on one side of zero** (`Amin > 0` or `Amax < 0`): the formula applies as
//!   written; `z` is then negative or at least `2^(n-1)`, and only part of the codes is
//!   used (the paper's quantizer is meant for ranges around zero).
//! - **Non-finite inputs** are counted in `nan` / `inf` and passed through unchanged (as
//!   [`fake_quant_slice`](crate::fake_quant_slice) does); the range itself must be finite
//!   with `Amin <= Amax` ([`AffineError`]).
//! - **Onto a grid**: [`AffineQuantizer::fake_quant_slice`] can represent the dequantized
//!   value in a fixed-point format (rounded with that format's mode): the value as a
//!   fixed-point datapath after the quantizer holds it. A saturation there counts too
//!   (at most once per element).

use crate::exact::QuantError;
use crate::fake::FakeQuantElem;
use crate::format::FxFormat;
use crate::quantizer::Quantizer;
use crate::stats::{Clip, QuantStats};

/// Code widths an [`AffineQuantizer`] accepts (codes and `Q - z` stay exact in f64).
pub const AFFINE_MAX_BITS: u32 = 32;

/// A range or width an affine quantizer cannot be built on.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AffineError {
    #[error("affine quantizer: {bits} bits is outside 1..={AFFINE_MAX_BITS}")]
    Bits { bits: u32 },
    #[error("affine quantizer: range [{min}, {max}] is not finite")]
    NotFinite { min: f64, max: f64 },
    #[error("affine quantizer: range minimum {min} is above its maximum {max}")]
    Inverted { min: f64, max: f64 },
}

/// The parameters as stored (bits and the frozen range); `delta` and `z` are derived
/// again on reading, so a stored quantizer cannot disagree with its range.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    bits: u32,
    min: f64,
    max: f64,
}

/// An `n`-bit asymmetric quantizer on a frozen range; see the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(into = "Stored", try_from = "Stored")]
pub struct AffineQuantizer {
    bits: u32,
    min: f64,
    max: f64,
    delta: f64,
    zero: i64,
}

impl From<AffineQuantizer> for Stored {
    fn from(q: AffineQuantizer) -> Self {
        Stored {
            bits: q.bits,
            min: q.min,
            max: q.max,
        }
    }
}

impl TryFrom<Stored> for AffineQuantizer {
    type Error = AffineError;
    fn try_from(s: Stored) -> Result<Self, AffineError> {
        AffineQuantizer::from_range(s.bits, s.min, s.max)
    }
}

/// `floor(x / d)` of the exact quotient, for finite `x` and `d > 0`, clamped to
/// `±2^60` (far outside every code range, so clamping changes no code).
fn floor_div(x: f64, d: f64) -> f64 {
    const LIMIT: f64 = (1u64 << 60) as f64;
    let q = (x / d).floor();
    if !q.is_finite() || q.abs() >= LIMIT {
        // Overflowed or huge quotients only decide the sign of the saturation.
        return if x >= 0.0 { LIMIT } else { -LIMIT };
    }
    // The rounded quotient can reach the next integer when the exact one lies just
    // below it; then q * d exceeds x. The fused multiply-add gives the sign of the exact
    // x - q * d (a non-zero difference of doubles is never below the smallest
    // subnormal, so it cannot round to zero). Rounding is monotone, so fl(x / d) never
    // falls below floor(x / d): one correction suffices.
    if (-q).mul_add(d, x) < 0.0 {
        q - 1.0
    } else {
        q
    }
}

impl AffineQuantizer {
    /// The quantizer of `bits` bits on `[min, max]`.
    ///
    /// # Errors
    /// A width outside `1..=32`, a non-finite bound, or `min > max`.
    pub fn from_range(bits: u32, min: f64, max: f64) -> Result<Self, AffineError> {
        if !(1..=AFFINE_MAX_BITS).contains(&bits) {
            return Err(AffineError::Bits { bits });
        }
        if !min.is_finite() || !max.is_finite() {
            return Err(AffineError::NotFinite { min, max });
        }
        if min > max {
            return Err(AffineError::Inverted { min, max });
        }
        let delta = (min.abs() + max.abs()) / (1u64 << bits) as f64;
        let zero = if delta > 0.0 {
            floor_div(-min, delta) as i64
        } else {
            0
        };
        Ok(AffineQuantizer {
            bits,
            min,
            max,
            delta,
            zero,
        })
    }

    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The frozen range `(Amin, Amax)`.
    pub fn range(&self) -> (f64, f64) {
        (self.min, self.max)
    }

    /// `delta = (|Amin| + |Amax|) / 2^n` (0 for a degenerate range).
    pub fn delta(&self) -> f64 {
        self.delta
    }

    /// The zero point `z = floor(-Amin / delta)` (0 for a degenerate range).
    pub fn zero_point(&self) -> i64 {
        self.zero
    }

    /// The largest code, `2^n - 1`.
    pub fn code_max(&self) -> i64 {
        (1i64 << self.bits) - 1
    }

    /// Whether `delta = 0` (see the module docs).
    pub fn is_degenerate(&self) -> bool {
        self.delta == 0.0
    }

    /// The code of `x`: `floor(x / delta) + z` saturated to `[0, 2^n - 1]`, and whether
    /// it saturated.
    ///
    /// # Errors
    /// [`QuantError::NotFinite`] for NaN and infinities.
    pub fn code(&self, x: f64) -> Result<(i64, Clip), QuantError> {
        if !x.is_finite() {
            return Err(QuantError::NotFinite(x));
        }
        if self.is_degenerate() {
            let clip = if x == 0.0 {
                Clip::None
            } else {
                Clip::Saturated
            };
            return Ok((0, clip));
        }
        // |floor| <= 2^60 and |z| <= 2^32: the sum is exact in i64.
        let q = floor_div(x, self.delta) as i64 + self.zero;
        let max = self.code_max();
        Ok(if q < 0 {
            (0, Clip::Saturated)
        } else if q > max {
            (max, Clip::Saturated)
        } else {
            (q, Clip::None)
        })
    }

    /// The value of `code`: `(code - z) * delta`, rounded once to a double.
    pub fn dequantize(&self, code: i64) -> f64 {
        (code - self.zero) as f64 * self.delta
    }

    /// `dequantize(code(x))`, counting the element (and a saturation, or the NaN/Inf)
    /// in `stats`.
    ///
    /// # Errors
    /// [`QuantError::NotFinite`] for NaN and infinities (still counted).
    pub fn quantize_counted(&self, x: f64, stats: &mut QuantStats) -> Result<f64, QuantError> {
        match self.code(x) {
            Ok((c, clip)) => {
                stats.record(clip);
                Ok(self.dequantize(c))
            }
            Err(e) => {
                stats.record_non_finite(x);
                Err(e)
            }
        }
    }

    /// Quantizes `xs` into `out` (same length): each finite element becomes its
    /// dequantized value, represented in `onto` when given (rounded with its mode; a
    /// saturation there is counted, at most one per element), then rounded once to the
    /// element type. NaN and infinities are counted and passed through.
    ///
    /// # Panics
    /// If the lengths differ.
    ///
    /// Slices of at least [`AFFINE_TABLE_MIN_LEN`] elements with at most
    /// [`AFFINE_TABLE_MAX_BITS`] bits read each code's output from a table built once per
    /// thread for the quantizer, grid and element type (by the element path below, so the
    /// values and counts are the same).
    pub fn fake_quant_slice<T: FakeQuantElem>(
        &self,
        xs: &[T],
        out: &mut [T],
        onto: Option<&FxFormat>,
    ) -> QuantStats {
        assert_eq!(
            xs.len(),
            out.len(),
            "affine fake_quant: input and output lengths differ"
        );
        if xs.len() >= AFFINE_TABLE_MIN_LEN
            && self.bits <= AFFINE_TABLE_MAX_BITS
            && !self.is_degenerate()
        {
            return table::with_table(self, onto, |t: &table::Table<T>| t.apply(self, xs, out));
        }
        self.fake_quant_elements(xs, out, onto)
    }

    /// [`fake_quant_slice`](Self::fake_quant_slice) element by element (the reference the
    /// table path is built from and tested against).
    pub(crate) fn fake_quant_elements<T: FakeQuantElem>(
        &self,
        xs: &[T],
        out: &mut [T],
        onto: Option<&FxFormat>,
    ) -> QuantStats {
        let grid = onto.map(Quantizer::new);
        let mut stats = QuantStats::default();
        for (o, &x) in out.iter_mut().zip(xs) {
            let x64 = x.to_f64();
            let Ok((code, clip)) = self.code(x64) else {
                stats.record_non_finite(x64);
                *o = x;
                continue;
            };
            let v = self.dequantize(code);
            *o = match &grid {
                None => {
                    stats.record(clip);
                    T::from_f64(v)
                }
                Some(g) => {
                    let (raw, grid_clip) =
                        g.code_clip(v, None).expect("a finite dequantized value");
                    stats.record(if clip == Clip::None { grid_clip } else { clip });
                    T::from_raw(raw, g.format())
                }
            };
        }
        stats
    }
}

/// Slices shorter than this take the element path (a table costs `2^n` element casts).
pub const AFFINE_TABLE_MIN_LEN: usize = 256;
/// Widths up to this read their outputs from a per-code table (`2^n` entries).
pub const AFFINE_TABLE_MAX_BITS: u32 = 16;

/// Per-thread tables of every code's output: `floor_div` and the clamp stay per element,
/// the dequantization and the cast onto the grid are read from the table.
mod table {
    use std::any::Any;
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::{AffineQuantizer, Clip, FakeQuantElem, FxFormat, QuantStats};

    /// The output of every code `0..=2^n - 1` and whether the grid saturated or wrapped
    /// it (never without a grid): exactly what the element path computes after the code.
    pub(super) struct Table<T> {
        out: Vec<T>,
        saturated: Vec<u8>,
        wrapped: Vec<u8>,
    }

    impl<T: FakeQuantElem> Table<T> {
        fn build(q: &AffineQuantizer, onto: Option<&FxFormat>) -> Self {
            let n = q.code_max() as usize + 1;
            let grid = onto.map(crate::quantizer::Quantizer::new);
            let mut out = Vec::with_capacity(n);
            let (mut saturated, mut wrapped) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for code in 0..n as i64 {
                let v = q.dequantize(code);
                let clip = match &grid {
                    None => {
                        out.push(T::from_f64(v));
                        Clip::None
                    }
                    Some(g) => {
                        let (raw, c) = g.code_clip(v, None).expect("a finite dequantized value");
                        out.push(T::from_raw(raw, g.format()));
                        c
                    }
                };
                saturated.push((clip == Clip::Saturated) as u8);
                wrapped.push((clip == Clip::Wrapped) as u8);
            }
            Table {
                out,
                saturated,
                wrapped,
            }
        }

        /// The grid's clip of code `i`'s output.
        fn clip(&self, i: usize) -> Clip {
            if self.saturated[i] != 0 {
                Clip::Saturated
            } else if self.wrapped[i] != 0 {
                Clip::Wrapped
            } else {
                Clip::None
            }
        }

        /// The outputs and counts of `q` on `xs` (`q` is the quantizer the table was
        /// built for): the element path's code through the same floor, correction and
        /// clamp, compiled with AVX-512 or AVX2 and FMA where the CPU has them (`floor`
        /// and the fused multiply-add are exact, so the codes do not depend on it).
        pub(super) fn apply(&self, q: &AffineQuantizer, xs: &[T], out: &mut [T]) -> QuantStats {
            #[cfg(target_arch = "x86_64")]
            {
                use std::is_x86_feature_detected as has;
                if has!("avx512f") && has!("avx512dq") && has!("avx512vl") && has!("fma") {
                    // SAFETY: the CPU has these features.
                    return unsafe { self.apply_avx512(q, xs, out) };
                }
                if has!("avx2") && has!("fma") {
                    // SAFETY: the CPU has these features.
                    return unsafe { self.apply_avx2(q, xs, out) };
                }
            }
            self.apply_body(q, xs, out)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
        unsafe fn apply_avx512(&self, q: &AffineQuantizer, xs: &[T], out: &mut [T]) -> QuantStats {
            self.apply_body(q, xs, out)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn apply_avx2(&self, q: &AffineQuantizer, xs: &[T], out: &mut [T]) -> QuantStats {
            self.apply_body(q, xs, out)
        }

        /// Two passes per block: the codes without branches (so they vectorize), then
        /// the clamp, the table reads and the counts, also without branches where the
        /// block holds no NaN or infinity (else element by element).
        #[inline(always)]
        fn apply_body(&self, q: &AffineQuantizer, xs: &[T], out: &mut [T]) -> QuantStats {
            const BLOCK: usize = 256;
            let mut stats = QuantStats::default();
            let (delta, zero, max) = (q.delta, q.zero as f64, q.code_max() as f64);
            let top = self.out.len() - 1;
            debug_assert_eq!(max, top as f64);
            let mut codes = [0f64; BLOCK];
            for (xb, ob) in xs.chunks(BLOCK).zip(out.chunks_mut(BLOCK)) {
                // `floor_div` without its clamp to 2^60: a quotient that large (or
                // infinite) saturates the same way, and `z` (|z| <= 2^32) added in f64
                // is exact wherever the code can land in [0, 2^n - 1] (n <= 16).
                for (c, &x) in codes.iter_mut().zip(xb) {
                    let v = x.to_f64();
                    let f = (v / delta).floor();
                    let f = if (-f).mul_add(delta, v) < 0.0 {
                        f - 1.0
                    } else {
                        f
                    };
                    *c = f + zero;
                }
                let non_finite = xb.iter().filter(|x| !x.to_f64().is_finite()).count();
                if non_finite == 0 {
                    // A finite x gives a code that is finite or +-infinity (never NaN:
                    // delta > 0 is finite), so the clamp lands in [0, 2^n - 1].
                    let (mut saturated, mut wrapped) = (0u64, 0u64);
                    for (o, &c) in ob.iter_mut().zip(&codes) {
                        let outside = (c < 0.0) | (c > max);
                        // SAFETY: the clamped code is an integer in [0, max] and
                        // max = top < 2^16, so it converts exactly and indexes the table.
                        let i = unsafe { c.clamp(0.0, max).to_int_unchecked::<usize>() };
                        let (v, s, w) = unsafe {
                            (
                                *self.out.get_unchecked(i),
                                *self.saturated.get_unchecked(i),
                                *self.wrapped.get_unchecked(i),
                            )
                        };
                        *o = v;
                        saturated += if outside { 1 } else { s as u64 };
                        wrapped += if outside { 0 } else { w as u64 };
                    }
                    stats.elements += xb.len() as u64;
                    stats.saturated += saturated;
                    stats.wrapped += wrapped;
                    continue;
                }
                for ((o, &x), &c) in ob.iter_mut().zip(xb).zip(&codes) {
                    let v = x.to_f64();
                    if !v.is_finite() {
                        stats.record_non_finite(v);
                        *o = x;
                    } else if c < 0.0 {
                        stats.record(Clip::Saturated);
                        *o = self.out[0];
                    } else if c > max {
                        stats.record(Clip::Saturated);
                        *o = self.out[top];
                    } else {
                        let i = c as usize;
                        stats.record(self.clip(i));
                        *o = self.out[i];
                    }
                }
            }
            stats
        }
    }

    type Key = (u32, u64, u64, Option<FxFormat>, bool);

    /// Tables kept per thread (a training run uses one per scheduled layer and network);
    /// dropped all at once beyond this many.
    const KEEP: usize = 64;

    thread_local! {
        static TABLES: RefCell<Vec<(Key, Rc<dyn Any>)>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn with_table<T: FakeQuantElem, R>(
        q: &AffineQuantizer,
        onto: Option<&FxFormat>,
        f: impl FnOnce(&Table<T>) -> R,
    ) -> R {
        let key: Key = (
            q.bits,
            q.min.to_bits(),
            q.max.to_bits(),
            onto.copied(),
            T::IS_F32,
        );
        let found = TABLES.with(|t| {
            t.borrow()
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| Rc::clone(v))
        });
        let table = found.unwrap_or_else(|| {
            let v: Rc<dyn Any> = Rc::new(Table::<T>::build(q, onto));
            TABLES.with(|t| {
                let mut t = t.borrow_mut();
                if t.len() >= KEEP {
                    t.clear();
                }
                t.push((key, Rc::clone(&v)));
            });
            v
        });
        f(table
            .downcast_ref::<Table<T>>()
            .expect("keyed by element type"))
    }
}

impl std::fmt::Display for AffineQuantizer {
    /// `affine<16,delta=0.0001220703125,z=16384>` (delta as the shortest decimal that
    /// reads back to the same double).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "affine<{},delta={:e},z={}>",
            self.bits, self.delta, self.zero
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formula on exact rationals: `x = mx 2^ex`, `delta = md 2^ed` as integers,
    /// `floor(x / delta) = floor(mx 2^(ex-ed) / md)` in i128 (inputs chosen so that the
    /// shifts fit).
    fn reference_floor(x: f64, d: f64) -> i128 {
        fn parts(v: f64) -> (i128, i32) {
            if v == 0.0 {
                return (0, 0);
            }
            let bits = v.to_bits();
            let exp = ((bits >> 52) & 0x7ff) as i32;
            let frac = (bits & ((1u64 << 52) - 1)) as i128;
            let (m, e) = if exp == 0 {
                (frac, -1074)
            } else {
                (frac | 1 << 52, exp - 1075)
            };
            (if v < 0.0 { -m } else { m }, e)
        }
        let ((mx, ex), (md, ed)) = (parts(x), parts(d));
        let s = ex - ed;
        // |mx|, |md| < 2^53: beyond these shifts the quotient is below 1 in magnitude,
        // or far past every code (only its sign matters).
        if mx == 0 || s < -70 {
            return if mx < 0 { -1 } else { 0 };
        }
        if s > 70 {
            return mx.signum() << 100;
        }
        let (num, den) = if s >= 0 {
            (mx << s, md)
        } else {
            (mx, md << -s)
        };
        num.div_euclid(den)
    }

    fn reference_code(q: &AffineQuantizer, x: f64) -> (i64, bool) {
        let raw = reference_floor(x, q.delta()) + q.zero_point() as i128;
        let c = raw.clamp(0, q.code_max() as i128) as i64;
        (c, c as i128 != raw)
    }

    #[test]
    fn parameters_follow_the_paper() {
        let q = AffineQuantizer::from_range(16, -3.0, 5.0).unwrap();
        assert_eq!(q.delta(), 8.0 / 65536.0);
        assert_eq!(q.zero_point(), 24576); // floor(3 / (8 / 2^16)) = 3 * 2^13
        assert_eq!(q.code(-3.0).unwrap(), (0, Clip::None));
        assert_eq!(q.code(0.0).unwrap(), (24576, Clip::None));
        // Amax / delta = 2^16 - z: Amax itself is one code past the top, and saturates.
        assert_eq!(q.code(5.0).unwrap(), (65535, Clip::Saturated));
        assert_eq!(q.dequantize(24576 + 8), 8.0 * 8.0 / 65536.0);
        assert_eq!(q.to_string(), "affine<16,delta=1.220703125e-4,z=24576>");
        // A one-sided negative range: z beyond the middle, the codes from 0 up.
        let n = AffineQuantizer::from_range(8, -5.0, -2.0).unwrap();
        assert_eq!(n.delta(), 7.0 / 256.0);
        assert_eq!(n.zero_point(), reference_floor(5.0, 7.0 / 256.0) as i64);
        // floor(Amin / delta) + floor(-Amin / delta) = -1 unless Amin / delta is an
        // integer: the formula saturates its own minimum by one code.
        assert_eq!(n.code(-5.0).unwrap(), (0, Clip::Saturated));
        assert_eq!(reference_code(&n, -5.0), (0, true));
        assert_eq!(n.code(-2.0).unwrap().0, reference_code(&n, -2.0).0);
        assert_eq!(n.code(0.0).unwrap().0, reference_code(&n, 0.0).0);
        assert!(AffineQuantizer::from_range(0, -1.0, 1.0).is_err());
        assert!(AffineQuantizer::from_range(33, -1.0, 1.0).is_err());
        assert!(AffineQuantizer::from_range(8, 1.0, -1.0).is_err());
        assert!(AffineQuantizer::from_range(8, f64::NAN, 1.0).is_err());
        assert!(AffineQuantizer::from_range(8, -1.0, f64::INFINITY).is_err());
    }

    #[test]
    fn codes_equal_the_exact_formula_inside_outside_and_at_rounding_edges() {
        let ranges = [
            (16, -3.0, 5.0),
            (16, 0.0, 12.75),
            (8, -0.3, 0.7),
            (12, -1e-3, 2e-3),
            (16, -100.0, -0.5),
            (4, 2.0, 9.0),
            (32, -7.1, 7.3),
            (2, -1.0, 1.0),
            (16, 3.5, 3.5),
        ];
        // A deterministic spread of inputs: inside, outside, near multiples of delta.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for (bits, lo, hi) in ranges {
            let q = AffineQuantizer::from_range(bits, lo, hi).unwrap();
            let span = (hi - lo).abs().max(1.0);
            let mut xs = vec![lo, hi, 0.0, -0.0, lo - span, hi + span, 1e30, -1e30];
            for _ in 0..2000 {
                xs.push(lo - span + 3.0 * span * next());
            }
            // Exact multiples of delta and their neighbours: where a rounded quotient
            // would floor wrongly.
            for k in [-5i64, -1, 0, 1, 3, 1000, 40_000] {
                let m = k as f64 * q.delta();
                xs.extend([m, m.next_up(), m.next_down()]);
            }
            for &x in &xs {
                let (code, clip) = q.code(x).unwrap();
                let (want, sat) = reference_code(&q, x);
                assert_eq!(code, want, "{q} at {x:e}");
                assert_eq!(clip == Clip::Saturated, sat, "{q} at {x:e}");
                assert_eq!(
                    q.dequantize(code),
                    (code - q.zero_point()) as f64 * q.delta()
                );
            }
        }
    }

    #[test]
    fn degenerate_ranges_map_everything_to_zero_and_count_the_rest_saturated() {
        let q = AffineQuantizer::from_range(16, 0.0, 0.0).unwrap();
        assert!(q.is_degenerate());
        assert_eq!((q.delta(), q.zero_point()), (0.0, 0));
        let xs = [0.0f64, 1.0, -2.5, 1e-300, f64::NAN];
        let mut out = [9.0f64; 5];
        let st = q.fake_quant_slice(&xs, &mut out, None);
        assert_eq!(&out[..4], &[0.0, 0.0, 0.0, 0.0]);
        assert!(out[4].is_nan());
        assert_eq!((st.elements, st.saturated, st.nan), (5, 3, 1));
        // Equal non-zero bounds are a proper quantizer: the bound maps to code 0.
        let c = AffineQuantizer::from_range(8, -1.5, -1.5).unwrap();
        assert_eq!(c.delta(), 3.0 / 256.0);
        assert_eq!(c.code(-1.5).unwrap(), (0, Clip::None));
        assert_eq!(c.dequantize(0), -1.5);
    }

    #[test]
    fn slices_equal_the_scalar_path_with_and_without_a_grid_and_round_trip_serde() {
        let q = AffineQuantizer::from_range(16, -2.7, 9.1).unwrap();
        let xs: Vec<f64> = (-400..400).map(|i| i as f64 * 0.031_7).collect();
        let mut out = vec![0.0f64; xs.len()];
        let st = q.fake_quant_slice(&xs, &mut out, None);
        let mut want = QuantStats::default();
        for (&x, &o) in xs.iter().zip(&out) {
            assert_eq!(o, q.quantize_counted(x, &mut want).unwrap());
        }
        assert_eq!(st, want);
        assert!(st.saturated > 0 && st.saturated < st.elements);
        // f32 elements: the double result rounded once.
        let x32: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
        let mut o32 = vec![0f32; xs.len()];
        q.fake_quant_slice(&x32, &mut o32, None);
        for (&x, &o) in x32.iter().zip(&o32) {
            let v = q.dequantize(q.code(x as f64).unwrap().0);
            assert_eq!(o, v as f32);
        }
        // Onto a Q4.4 grid: the dequantized value, then that format's rounding and overflow.
        let g: FxFormat = "ap_fixed<8,4,AP_RND_CONV,AP_SAT>".parse().unwrap();
        let st = q.fake_quant_slice(&xs, &mut out, Some(&g));
        let mut sat = 0;
        for (&x, &o) in xs.iter().zip(&out) {
            let (c, clip) = q.code(x).unwrap();
            let v = q.dequantize(c);
            assert_eq!(o, crate::quantize(v, &g).unwrap(), "{x}");
            let mut on_grid = QuantStats::default();
            Quantizer::new(&g)
                .from_f64_counted(v, &mut on_grid)
                .unwrap();
            sat += (clip == Clip::Saturated || on_grid.saturated > 0) as u64;
        }
        assert_eq!(st.saturated, sat);
        let json = serde_json::to_string(&q).unwrap();
        assert_eq!(serde_json::from_str::<AffineQuantizer>(&json).unwrap(), q);
        assert!(serde_json::from_str::<AffineQuantizer>(r#"{"bits":0,"min":0,"max":1}"#).is_err());
    }
    /// The per-code table path equals the element path bit for bit, with the same counts:
    /// f32 and f64, with and without a grid (saturating and wrapping), codes saturating on
    /// both sides, NaN and infinities, widths up to the table's limit.
    #[test]
    fn table_path_equals_the_element_path() {
        // SplitMix64 draws in [0, 1).
        let mut state = 5u64;
        let mut unit = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let grids: [Option<FxFormat>; 4] = [
            None,
            Some("ap_fixed<32,16>".parse().unwrap()),
            Some("ap_fixed<10,3,AP_RND_CONV,AP_SAT>".parse().unwrap()),
            Some("ap_fixed<8,2,AP_RND,AP_WRAP>".parse().unwrap()),
        ];
        for bits in [1, 3, 8, 12, 16] {
            // The last two: quotients that overflow to infinity, and huge ones.
            let ranges = [
                (-2.7, 9.1),
                (0.0, 16.03),
                (-5.25, 517.19),
                (0.3, 0.9),
                (-1e-300, 2e-300),
                (-3e300, 1e300),
            ];
            for &(lo, hi) in &ranges {
                let q = AffineQuantizer::from_range(bits, lo, hi).unwrap();
                let n = AFFINE_TABLE_MIN_LEN + 300;
                let mut xs: Vec<f64> = (0..n)
                    .map(|_| (lo - 2.0 + (hi - lo + 4.0) * unit()) * (0.5 + unit()))
                    .collect();
                xs[7] = f64::NAN;
                xs[8] = f64::INFINITY;
                xs[9] = f64::NEG_INFINITY;
                xs[10] = lo;
                xs[11] = hi;
                xs[12] = -0.0;
                xs[13] = 1e10;
                xs[14] = -1e308;
                xs[15] = f64::MAX;
                xs[16] = 5e-324;
                for g in &grids {
                    let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
                    let sa = q.fake_quant_slice(&xs, &mut a, g.as_ref());
                    let sb = q.fake_quant_elements(&xs, &mut b, g.as_ref());
                    assert_eq!(sa, sb, "{q} onto {g:?}");
                    assert!(
                        sa.saturated > 0 && sa.nan == 1 && sa.inf == 2,
                        "{q}: {sa:?}"
                    );
                    let bits_of = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits_of(&a), bits_of(&b), "{q} onto {g:?}");
                    let x32: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
                    let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
                    let sa = q.fake_quant_slice(&x32, &mut a, g.as_ref());
                    let sb = q.fake_quant_elements(&x32, &mut b, g.as_ref());
                    assert_eq!(sa, sb, "{q} onto {g:?} (f32)");
                    let bits32 = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits32(&a), bits32(&b), "{q} onto {g:?} (f32)");
                }
            }
        }
    }
}
