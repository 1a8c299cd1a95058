//! The exact scalar path: values as sign, integer magnitude and binary exponent; every
//! assignment quantizes (rounding mode) and then handles overflow (overflow mode), with
//! integer arithmetic only.

use crate::format::{pow2, FxFormat, Overflow, Rounding};
use crate::magnitude::{Dropped, Mag, Magnitude, WideUint};
use crate::stats::{Clip, QuantStats};
use crate::stochastic::StochasticSource;

/// Why a double could not be converted.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum QuantError {
    /// NaN and infinities have no fixed-point value: the exact path refuses them rather
    /// than inventing one (HLS leaves the result undefined).
    #[error("cannot convert {0} to fixed point: NaN and infinities have no fixed-point value")]
    NotFinite(f64),
}

/// Whether to add one to a truncated magnitude, given the rounding mode, the sign, the
/// parity of the truncated magnitude and the discarded fraction. `random` is the
/// stochastic word; without one, STOCHASTIC rounds to nearest, ties to even.
#[inline]
pub(crate) fn round_up(
    rounding: Rounding,
    neg: bool,
    odd: bool,
    d: Dropped,
    random: Option<u64>,
) -> bool {
    if d.is_zero() {
        return false;
    }
    match rounding {
        Rounding::Trn => neg,
        Rounding::TrnZero => false,
        Rounding::Rnd => d.above_half() || (d.is_half() && !neg),
        Rounding::RndZero => d.above_half(),
        Rounding::RndMinInf => d.above_half() || (d.is_half() && neg),
        Rounding::RndInf => d.above_half() || d.is_half(),
        Rounding::RndConv => d.above_half() || (d.is_half() && odd),
        Rounding::Stochastic => match random {
            Some(u) => d.exceeds(u),
            None => d.above_half() || (d.is_half() && odd),
        },
    }
}

/// Sign-extends (signed) or zero-extends (unsigned) the low `width` bits of `v`.
#[inline]
pub(crate) fn wrap_to_width(v: u64, fmt: &FxFormat) -> i64 {
    let shift = 64 - fmt.width;
    if fmt.signed {
        ((v << shift) as i64) >> shift
    } else {
        ((v << shift) >> shift) as i64
    }
}

/// The overflow step: assigns the integer `±Q` (Q given by its bit length and low 128
/// bits) to `fmt`'s codes.
pub(crate) fn assign(neg: bool, bits: u64, low: u128, fmt: &FxFormat) -> (i64, Clip) {
    let w = fmt.width as u64;
    let neg = neg && bits > 0;
    let fits = match (fmt.signed, neg) {
        (true, false) => bits < w,
        // SAT_SYM treats the most negative code as overflow (HLS does, too).
        (true, true) => {
            bits < w || (bits == w && low == 1u128 << (w - 1) && fmt.overflow != Overflow::SatSym)
        }
        (false, false) => bits <= w,
        (false, true) => false,
    };
    if fits {
        let m = low as u64;
        return (if neg { m.wrapping_neg() } else { m } as i64, Clip::None);
    }
    match fmt.overflow {
        Overflow::Wrap => {
            let m = low as u64;
            let v = if neg { m.wrapping_neg() } else { m };
            (wrap_to_width(v, fmt), Clip::Wrapped)
        }
        Overflow::Sat => (
            if neg { fmt.raw_min() } else { fmt.raw_max() },
            Clip::Saturated,
        ),
        Overflow::SatZero => (0, Clip::Saturated),
        Overflow::SatSym => {
            let raw = match (neg, fmt.signed) {
                (false, _) => fmt.raw_max(),
                (true, true) => -fmt.raw_max(),
                (true, false) => 0,
            };
            (raw, Clip::Saturated)
        }
    }
}

/// Assigns the exact value `±mag * 2^exp` to `fmt`.
pub(crate) fn quantize<M: Magnitude>(
    neg: bool,
    mag: &M,
    exp: i64,
    fmt: &FxFormat,
    random: Option<u64>,
) -> (i64, Clip) {
    if mag.is_zero() {
        return (0, Clip::None);
    }
    let s = exp + fmt.frac_bits() as i64;
    if s >= 0 {
        let s = s as u64;
        let low = if s >= 128 { 0 } else { mag.low_u128() << s };
        assign(neg, mag.bit_len() + s, low, fmt)
    } else {
        let (q, d) = mag.shr_dropped(s.unsigned_abs());
        let odd = q.low_u128() & 1 == 1;
        let q = if round_up(fmt.rounding, neg, odd, d, random) {
            q.plus_one()
        } else {
            q
        };
        assign(neg, q.bit_len(), q.low_u128(), fmt)
    }
}

pub(crate) fn quantize_mag(
    neg: bool,
    mag: &Mag,
    exp: i64,
    fmt: &FxFormat,
    random: Option<u64>,
) -> (i64, Clip) {
    match mag {
        Mag::Small(m) => quantize(neg, m, exp, fmt, random),
        Mag::Wide(w) => quantize(neg, w, exp, fmt, random),
    }
}

/// The exact sum `±a * 2^ea ± b * 2^eb` as sign, magnitude and exponent.
pub(crate) fn add_exact(
    (na, a, ea): (bool, &Mag, i64),
    (nb, b, eb): (bool, &Mag, i64),
) -> (bool, Mag, i64) {
    let ((nh, h, eh), (nl, l, el)) = if ea >= eb {
        ((na, a, ea), (nb, b, eb))
    } else {
        ((nb, b, eb), (na, a, ea))
    };
    let gap = (eh - el) as u64;
    if let (Mag::Small(h), Mag::Small(l)) = (h, l) {
        if h.bit_len() + gap <= 126 && l.bit_len() <= 126 {
            let x = ((*h << gap) as i128) * if nh { -1 } else { 1 };
            let y = (*l as i128) * if nl { -1 } else { 1 };
            let s = x + y;
            return (s < 0, Mag::Small(s.unsigned_abs()), el);
        }
    }
    let wh = h.to_wide().shl(gap);
    let wl = l.to_wide();
    let (neg, mag) = if nh == nl {
        (nh, wh.add(&wl))
    } else if wh.cmp_mag(&wl).is_ge() {
        (nh, wh.sub(&wl))
    } else {
        (nl, wl.sub(&wh))
    };
    (neg, Mag::Wide(mag), el)
}

/// A raw code as sign and magnitude.
#[inline]
pub(crate) fn signed_parts(raw: i64, fmt: &FxFormat) -> (bool, u128) {
    let v = fmt.raw_value(raw);
    (v < 0, v.unsigned_abs())
}

/// The double `x` decomposed exactly as sign, integer mantissa and binary exponent.
#[inline]
pub(crate) fn decompose(x: f64) -> (bool, u64, i64) {
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i64;
    let frac = bits & ((1u64 << 52) - 1);
    if e == 0 {
        (x.is_sign_negative(), frac, -1074)
    } else {
        (x.is_sign_negative(), frac | (1u64 << 52), e - 1075)
    }
}

/// `from_f64` through integer arithmetic only, with the clipping outcome.
#[inline]
pub(crate) fn from_f64_exact_clip(
    x: f64,
    fmt: &FxFormat,
    random: Option<u64>,
) -> Result<(i64, Clip), QuantError> {
    if !x.is_finite() {
        return Err(QuantError::NotFinite(x));
    }
    let (neg, m, e) = decompose(x);
    Ok(quantize(neg, &(m as u128), e, fmt, random))
}

/// Converts the exact value of `x` to `fmt` with integer arithmetic only (the reference
/// for [`from_f64`](crate::from_f64), which takes a faster float route where that is
/// provably identical). STOCHASTIC rounds to nearest, ties to even here.
///
/// # Errors
/// [`QuantError::NotFinite`] for NaN and infinities.
pub fn from_f64_exact(x: f64, fmt: &FxFormat) -> Result<i64, QuantError> {
    from_f64_exact_clip(x, fmt, None).map(|(r, _)| r)
}

/// Converts `x` to `fmt`; a STOCHASTIC format draws its rounding from `rng` (other modes
/// ignore it and leave it untouched).
///
/// # Errors
/// [`QuantError::NotFinite`] for NaN and infinities.
pub fn from_f64_stochastic(
    x: f64,
    fmt: &FxFormat,
    rng: &mut StochasticSource,
) -> Result<i64, QuantError> {
    let random = (fmt.rounding == Rounding::Stochastic).then(|| rng.next_word());
    from_f64_exact_clip(x, fmt, random).map(|(r, _)| r)
}

/// `v * 2^e` with the power applied in steps that stay inside f64's range, so the one
/// rounding happens at the end (except in the subnormal range).
pub(crate) fn scale_pow2(mut v: f64, mut e: i64) -> f64 {
    while e > 1000 {
        v *= pow2(1000);
        e -= 1000;
    }
    while e < -1000 {
        v *= pow2(-1000);
        e += 1000;
    }
    v * pow2(e)
}

/// The value of a raw code as a double: exact when the code has at most 53 significant
/// bits and the value is in f64's normal range, else the nearest double.
pub fn to_f64(raw: i64, fmt: &FxFormat) -> f64 {
    scale_pow2(fmt.raw_value(raw) as f64, -(fmt.frac_bits() as i64))
}

/// Assigns a value of format `from` to format `to` (`to`'s rounding and overflow apply).
pub fn cast(raw: i64, from: &FxFormat, to: &FxFormat) -> i64 {
    cast_counted(raw, from, to, &mut QuantStats::default())
}

/// [`cast`], counting saturation or wrapping in `stats`.
pub fn cast_counted(raw: i64, from: &FxFormat, to: &FxFormat, stats: &mut QuantStats) -> i64 {
    let (neg, mag) = signed_parts(raw, from);
    let (r, clip) = quantize(neg, &mag, -(from.frac_bits() as i64), to, None);
    stats.record(clip);
    r
}

/// A binary operation computed at full precision before the assignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Add,
    Sub,
    Mul,
}

/// `a op b` computed exactly, then assigned to `out`, counting saturation or wrapping in
/// `stats`.
pub fn apply_counted(
    op: Op,
    (a, fa): (i64, &FxFormat),
    (b, fb): (i64, &FxFormat),
    out: &FxFormat,
    stats: &mut QuantStats,
) -> i64 {
    let (na, ma) = signed_parts(a, fa);
    let (nb, mb) = signed_parts(b, fb);
    let (ea, eb) = (-(fa.frac_bits() as i64), -(fb.frac_bits() as i64));
    let (r, clip) = match op {
        // |a|, |b| < 2^64, so the product fits in u128.
        Op::Mul => quantize(na != nb, &(ma * mb), ea + eb, out, None),
        Op::Add | Op::Sub => {
            let (neg, mag, exp) = add_exact(
                (na, &Mag::Small(ma), ea),
                (nb != (op == Op::Sub), &Mag::Small(mb), eb),
            );
            quantize_mag(neg, &mag, exp, out, None)
        }
    };
    stats.record(clip);
    r
}

/// `a + b` computed exactly, then assigned to `out`.
pub fn add(a: i64, fa: &FxFormat, b: i64, fb: &FxFormat, out: &FxFormat) -> i64 {
    apply_counted(Op::Add, (a, fa), (b, fb), out, &mut QuantStats::default())
}

/// `a - b` computed exactly, then assigned to `out`.
pub fn sub(a: i64, fa: &FxFormat, b: i64, fb: &FxFormat, out: &FxFormat) -> i64 {
    apply_counted(Op::Sub, (a, fa), (b, fb), out, &mut QuantStats::default())
}

/// `a * b` computed exactly, then assigned to `out`.
pub fn mul(a: i64, fa: &FxFormat, b: i64, fb: &FxFormat, out: &FxFormat) -> i64 {
    apply_counted(Op::Mul, (a, fa), (b, fb), out, &mut QuantStats::default())
}

/// A 256-bit two's complement accumulator for sums of 128-bit products (the golden GEMM
/// with 64-bit operands).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Acc256 {
    lo: u128,
    hi: u128,
}

impl Acc256 {
    #[inline]
    pub fn add_signed(&mut self, neg: bool, mag: u128) {
        let (add_lo, add_hi) = if neg {
            // -mag in 256-bit two's complement.
            let lo = (!mag).wrapping_add(1);
            (lo, if mag == 0 { 0 } else { u128::MAX })
        } else {
            (mag, 0)
        };
        let (lo, c) = self.lo.overflowing_add(add_lo);
        self.lo = lo;
        self.hi = self.hi.wrapping_add(add_hi).wrapping_add(c as u128);
    }

    pub fn to_sign_mag(self) -> (bool, Mag) {
        let limbs = vec![
            self.lo as u64,
            (self.lo >> 64) as u64,
            self.hi as u64,
            (self.hi >> 64) as u64,
        ];
        let (neg, w) = WideUint::from_twos_complement(limbs);
        (neg, Mag::Wide(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> FxFormat {
        s.parse().unwrap()
    }

    #[test]
    fn ties_follow_each_rounding_mode() {
        // 2.5 and -2.5 into an integer format, and 3.5 for ties-to-even.
        let cases = [
            ("AP_TRN", [2, -3, 3]),
            ("AP_TRN_ZERO", [2, -2, 3]),
            ("AP_RND", [3, -2, 4]),
            ("AP_RND_ZERO", [2, -2, 3]),
            ("AP_RND_MIN_INF", [2, -3, 3]),
            ("AP_RND_INF", [3, -3, 4]),
            ("AP_RND_CONV", [2, -2, 4]),
        ];
        for (q, want) in cases {
            let fmt = f(&format!("ap_fixed<8,8,{q},AP_SAT>"));
            let got = [2.5, -2.5, 3.5].map(|x| from_f64_exact(x, &fmt).unwrap());
            assert_eq!(got, want, "{q}");
        }
    }

    #[test]
    fn overflow_modes_clip_as_specified() {
        let x = 200.0;
        assert_eq!(
            from_f64_exact(x, &f("ap_fixed<8,8,AP_TRN,AP_WRAP>")),
            Ok(-56)
        );
        assert_eq!(
            from_f64_exact(x, &f("ap_fixed<8,8,AP_TRN,AP_SAT>")),
            Ok(127)
        );
        assert_eq!(
            from_f64_exact(-x, &f("ap_fixed<8,8,AP_TRN,AP_SAT>")),
            Ok(-128)
        );
        assert_eq!(
            from_f64_exact(-x, &f("ap_fixed<8,8,AP_TRN,AP_SAT_SYM>")),
            Ok(-127)
        );
        assert_eq!(
            from_f64_exact(x, &f("ap_fixed<8,8,AP_TRN,AP_SAT_ZERO>")),
            Ok(0)
        );
        assert_eq!(
            from_f64_exact(-1.0, &f("ap_ufixed<8,8,AP_TRN,AP_SAT>")),
            Ok(0)
        );
        assert_eq!(
            from_f64_exact(-1.0, &f("ap_ufixed<8,8,AP_TRN,AP_WRAP>")),
            Ok(255)
        );
        assert!(matches!(
            from_f64_exact(f64::NAN, &f("ap_fixed<8,8>")),
            Err(QuantError::NotFinite(v)) if v.is_nan()
        ));
        assert!(from_f64_exact(f64::INFINITY, &f("ap_fixed<8,8>")).is_err());
    }

    #[test]
    fn unsigned_64_bit_codes_use_the_bit_pattern() {
        let u = f("ap_ufixed<64,64,AP_TRN,AP_SAT>");
        let r = from_f64_exact(1.8e19, &u).unwrap();
        assert_eq!(r as u64, 18_000_000_000_000_000_000);
        assert_eq!(to_f64(r, &u), 1.8e19);
        let p = mul(r, &u, r, &u, &f("ap_ufixed<64,64,AP_TRN,AP_WRAP>"));
        assert_eq!(p as u64, (18_000_000_000_000_000_000u128.pow(2)) as u64);
    }

    #[test]
    fn far_apart_binary_points_add_exactly() {
        let big = f("ap_fixed<8,200>");
        let tiny = f("ap_fixed<8,-200>");
        let out = f("ap_fixed<64,1,AP_RND_CONV,AP_SAT>");
        // 2^193 + tiny saturates; tiny alone lands on the grid below the output's LSB.
        assert_eq!(add(1, &big, 1, &tiny, &out), out.raw_max());
        let fine = f("ap_fixed<64,-150,AP_TRN,AP_WRAP>");
        // tiny = 2^-207 is 2^6 LSBs of `fine` (LSB 2^-213); big adds a multiple of 2^64 LSBs.
        assert_eq!(add(1, &big, 1, &tiny, &fine), 64);
        assert_eq!(sub(1, &big, 1, &tiny, &fine), -64);
    }

    #[test]
    fn acc256_sums_signed_products() {
        let mut a = Acc256::default();
        a.add_signed(false, u128::MAX);
        a.add_signed(false, u128::MAX);
        a.add_signed(true, 5);
        let (neg, m) = a.to_sign_mag();
        assert!(!neg);
        assert_eq!(
            m.to_wide(),
            WideUint::from_u128(u128::MAX)
                .shl(1)
                .sub(&WideUint::from_u128(5))
        );
        let mut b = Acc256::default();
        b.add_signed(true, 7);
        b.add_signed(false, 2);
        let (neg, m) = b.to_sign_mag();
        assert!(neg);
        assert_eq!(m.to_wide(), WideUint::from_u128(5));
    }
}
