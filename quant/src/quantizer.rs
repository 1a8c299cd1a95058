//! Fast conversion of doubles: a float route that is exact by construction for the
//! common formats (width <= 50, moderate binary point), falling back to the integer path
//! for everything else. Property tests check it against [`from_f64_exact`] bit for bit.
//!
//! Why the float route is exact: `x * 2^F` only changes the exponent (no rounding while
//! the result stays normal), the codes of a format of width <= 50 are integers below
//! 2^51 that f64 holds exactly, `(y + 1.5*2^52) - 1.5*2^52` rounds to nearest-even
//! exactly for |y| <= 2^51, and `y - round(y)` is exact, so every tie and every
//! discarded fraction is seen exactly.

use crate::exact::{from_f64_exact_clip, wrap_to_width, QuantError};
use crate::format::{pow2, FxFormat, Overflow, Rounding};
use crate::magnitude::Dropped;
use crate::stats::{Clip, QuantStats};

/// Evaluates `$body` with `$m` bound to the rounding mode as a literal in each arm, so an inlined loop is
/// compiled once per mode with the mode's branches folded away.
macro_rules! with_rounding {
    ($r:expr, |$m:ident| $body:expr) => {
        match $r {
            Rounding::Trn => {
                let $m = Rounding::Trn;
                $body
            }
            Rounding::TrnZero => {
                let $m = Rounding::TrnZero;
                $body
            }
            Rounding::Rnd => {
                let $m = Rounding::Rnd;
                $body
            }
            Rounding::RndZero => {
                let $m = Rounding::RndZero;
                $body
            }
            Rounding::RndMinInf => {
                let $m = Rounding::RndMinInf;
                $body
            }
            Rounding::RndInf => {
                let $m = Rounding::RndInf;
                $body
            }
            Rounding::RndConv => {
                let $m = Rounding::RndConv;
                $body
            }
            Rounding::Stochastic => {
                let $m = Rounding::Stochastic;
                $body
            }
        }
    };
}
pub(crate) use with_rounding;

const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
const TWO_POW_51: f64 = 2_251_799_813_685_248.0;
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// Precomputed constants of the float route for one format.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FloatGrid {
    scale: f64,
    inv_scale: f64,
    /// Inputs with 0 < |x| < tiny could lose bits when scaled (subnormal results).
    tiny: f64,
    /// Codes the overflow step lets through (SAT_SYM: from -max).
    lo: f64,
    hi: f64,
    clamp_lo: f64,
    clamp_hi: f64,
    rounding: Rounding,
    overflow: Overflow,
    sat_zero: bool,
    fmt: FxFormat,
}

/// The discarded fraction `f` in [0, 1) of a float, as the integer path reports it.
#[inline(always)]
fn dropped_of(f: f64) -> Dropped {
    let scaled = f * TWO_POW_64;
    let top = scaled as u64;
    Dropped {
        top,
        sticky: top as f64 != scaled,
    }
}

impl FloatGrid {
    #[inline]
    pub fn new(fmt: &FxFormat) -> Option<Self> {
        let f = fmt.frac_bits();
        if fmt.width > 50 || !(-900..=1000).contains(&f) {
            return None;
        }
        let raw_min = fmt.raw_min() as f64;
        let hi = fmt.raw_max() as f64;
        let lo = if fmt.overflow == Overflow::SatSym && fmt.signed {
            -fmt.raw_max() as f64 // not -hi: that is -0.0 for width 1
        } else {
            raw_min
        };
        Some(FloatGrid {
            scale: pow2(f as i64),
            inv_scale: pow2(-(f as i64)),
            tiny: if f < 0 { pow2(-1022 - f as i64) } else { 0.0 },
            lo,
            hi,
            clamp_lo: lo - 1.0,
            clamp_hi: hi + 1.0,
            rounding: fmt.rounding,
            overflow: fmt.overflow,
            sat_zero: fmt.overflow == Overflow::SatZero,
            fmt: *fmt,
        })
    }

    /// `2^-F`: code times this is the value (exact for the formats this route takes).
    #[inline(always)]
    pub fn inv_scale(&self) -> f64 {
        self.inv_scale
    }

    /// The code of finite `x` as an integer-valued f64 and whether the overflow step
    /// changed it (saturated or wrapped, per the format's mode); `None` when this input
    /// needs the integer path. Branch-free for the saturating modes.
    #[inline(always)]
    pub fn code(&self, x: f64, random: Option<u64>) -> Option<(f64, bool)> {
        // tiny is 0 when F >= 0; otherwise zero and tiny inputs take the integer path.
        if x.abs() < self.tiny {
            return None;
        }
        if self.overflow == Overflow::Wrap {
            let y = x * self.scale;
            if y.abs() > TWO_POW_51 {
                return None;
            }
            let r = round(y, self.rounding, random);
            if r >= self.lo && r <= self.hi {
                return Some((r, false));
            }
            let wrapped = wrap_to_width(to_int(r) as u64, &self.fmt);
            return Some((wrapped as f64, true));
        }
        Some(self.code_saturating(x, self.rounding, random))
    }

    /// Whether every finite input takes the float route and the mode saturates (so
    /// [`FloatGrid::code_saturating`] applies to all of them).
    #[inline(always)]
    pub fn saturates_all_finite(&self) -> bool {
        self.tiny == 0.0 && self.overflow != Overflow::Wrap
    }

    /// [`FloatGrid::code`] for saturating modes and inputs the float route takes, with
    /// the rounding mode passed in (a constant where callers dispatch on it).
    #[inline(always)]
    pub fn code_saturating(&self, x: f64, rounding: Rounding, random: Option<u64>) -> (f64, bool) {
        // Rounding is monotone and the bounds are integers, so clamping one step outside
        // the range first keeps both the code and the overflow verdict.
        let y = x * self.scale;
        let r = round(clamp(y, self.clamp_lo, self.clamp_hi), rounding, random);
        let clipped = (r < self.lo) | (r > self.hi);
        let clamped = clamp(r, self.lo, self.hi);
        // SAT_ZERO: clear every bit of a clipped code (a mask, not a branch).
        let zero = ((self.sat_zero & clipped) as u64).wrapping_neg();
        (f64::from_bits(clamped.to_bits() & !zero), clipped)
    }

    /// The outcome of a clipped value under this format's overflow mode.
    #[inline(always)]
    pub fn clip_kind(&self, clipped: bool) -> Clip {
        match (clipped, self.overflow) {
            (false, _) => Clip::None,
            (true, Overflow::Wrap) => Clip::Wrapped,
            (true, _) => Clip::Saturated,
        }
    }
}

/// `v` clamped to [lo, hi] for non-NaN `v` (plain compares: maxsd/minsd, no NaN
/// handling).
#[inline(always)]
fn clamp(v: f64, lo: f64, hi: f64) -> f64 {
    let v = if v < lo { lo } else { v };
    if v > hi {
        hi
    } else {
        v
    }
}

/// An integer-valued f64 of magnitude at most 2^51 as i64.
#[inline(always)]
fn to_int(r: f64) -> i64 {
    debug_assert!(r.fract() == 0.0 && r.abs() <= TWO_POW_51 + 1.0);
    // SAFETY: callers pass integer values of magnitude <= 2^51 + 1, well inside i64.
    unsafe { r.to_int_unchecked::<i64>() }
}

/// Rounds `y` (|y| <= 2^51 + 1) to an integer with `rounding`; exact.
#[inline(always)]
fn round(y: f64, rounding: Rounding, random: Option<u64>) -> f64 {
    let t = (y + MAGIC) - MAGIC;
    let d = y - t;
    match rounding {
        Rounding::RndConv => t,
        Rounding::Trn => t - (d < 0.0) as u8 as f64,
        Rounding::TrnZero => {
            if y >= 0.0 {
                t - (d < 0.0) as u8 as f64
            } else {
                t + (d > 0.0) as u8 as f64
            }
        }
        Rounding::Rnd => t + (d == 0.5) as u8 as f64,
        Rounding::RndMinInf => t - (d == -0.5) as u8 as f64,
        Rounding::RndZero => {
            t + (d == 0.5 && y < 0.0) as u8 as f64 - (d == -0.5 && y > 0.0) as u8 as f64
        }
        Rounding::RndInf => {
            t + (d == 0.5 && y > 0.0) as u8 as f64 - (d == -0.5 && y < 0.0) as u8 as f64
        }
        Rounding::Stochastic => match random {
            None => t,
            // Away from zero with probability equal to the discarded magnitude fraction,
            // exactly as the integer path decides it.
            Some(u) => {
                if y >= 0.0 {
                    let floor = t - (d < 0.0) as u8 as f64;
                    floor + dropped_of(y - floor).exceeds(u) as u8 as f64
                } else {
                    let ceil = t + (d > 0.0) as u8 as f64;
                    ceil - dropped_of(ceil - y).exceeds(u) as u8 as f64
                }
            }
        },
    }
}

/// The integer path out of line, so the float route stays small where it is inlined.
#[inline(never)]
fn integer_path(x: f64, fmt: FxFormat, random: Option<u64>) -> Result<(i64, Clip), QuantError> {
    // The format by value: a reference would make callers' loops keep it in memory.
    from_f64_exact_clip(x, &fmt, random)
}

/// Converts doubles into one format, taking the float route where it is exact; build it
/// once and reuse it in loops.
#[derive(Clone, Copy, Debug)]
pub struct Quantizer {
    fmt: FxFormat,
    grid: Option<FloatGrid>,
}

impl Quantizer {
    #[inline]
    pub fn new(fmt: &FxFormat) -> Self {
        Quantizer {
            fmt: *fmt,
            grid: FloatGrid::new(fmt),
        }
    }

    pub fn format(&self) -> &FxFormat {
        &self.fmt
    }

    /// Whether finite inputs mostly take the float route (width <= 50 and a binary point
    /// within f64's exponent range).
    pub fn has_float_route(&self) -> bool {
        self.grid.is_some()
    }

    pub(crate) fn grid(&self) -> Option<&FloatGrid> {
        self.grid.as_ref()
    }

    /// Code and overflow outcome; `random` is the stochastic word (STOCHASTIC formats
    /// round to nearest-even without one).
    #[inline(always)]
    pub(crate) fn code_clip(&self, x: f64, random: Option<u64>) -> Result<(i64, Clip), QuantError> {
        if !x.is_finite() {
            return Err(QuantError::NotFinite(x));
        }
        if let Some(g) = &self.grid {
            if let Some((c, clipped)) = g.code(x, random) {
                return Ok((to_int(c), g.clip_kind(clipped)));
            }
        }
        integer_path(x, self.fmt, random)
    }

    /// The raw code of the exact value of `x` (see [`from_f64`]).
    #[inline(always)]
    pub fn from_f64(&self, x: f64) -> Result<i64, QuantError> {
        self.code_clip(x, None).map(|(c, _)| c)
    }

    /// [`Quantizer::from_f64`], counting the value and any saturation or wrap in `stats`
    /// (NaN/Inf are counted there too, and still refused).
    #[inline]
    pub fn from_f64_counted(&self, x: f64, stats: &mut QuantStats) -> Result<i64, QuantError> {
        match self.code_clip(x, None) {
            Ok((c, clip)) => {
                stats.record(clip);
                Ok(c)
            }
            Err(e) => {
                stats.record_non_finite(x);
                Err(e)
            }
        }
    }

    /// Converts a slice and returns the counts. On a NaN or infinity returns its error
    /// (the output is then partly written).
    pub fn from_f64_slice(&self, xs: &[f64], out: &mut [i64]) -> Result<QuantStats, QuantError> {
        assert_eq!(
            xs.len(),
            out.len(),
            "from_f64_slice: input and output lengths differ"
        );
        match self.grid {
            Some(g) if g.saturates_all_finite() && g.rounding != Rounding::Stochastic => {
                with_rounding!(g.rounding, |r| saturating_codes(&g, r, xs, out))
            }
            _ => {
                let mut stats = QuantStats::default();
                for (o, &x) in out.iter_mut().zip(xs) {
                    *o = self.from_f64_counted(x, &mut stats)?;
                }
                Ok(stats)
            }
        }
    }
}

/// Codes of a slice on the saturating float route: one branch-free pass, then the first
/// non-finite input (if any) is reported.
#[inline(always)]
fn saturating_codes(
    g: &FloatGrid,
    rounding: Rounding,
    xs: &[f64],
    out: &mut [i64],
) -> Result<QuantStats, QuantError> {
    let (mut clipped_n, mut non_finite) = (0u64, 0u64);
    for (o, &x) in out.iter_mut().zip(xs) {
        let finite = x.is_finite();
        let (c, clipped) = g.code_saturating(if finite { x } else { 0.0 }, rounding, None);
        *o = to_int(c);
        clipped_n += clipped as u64;
        non_finite += !finite as u64;
    }
    if non_finite > 0 {
        let bad = xs
            .iter()
            .find(|x| !x.is_finite())
            .copied()
            .unwrap_or(f64::NAN);
        return Err(QuantError::NotFinite(bad));
    }
    Ok(QuantStats {
        elements: xs.len() as u64,
        saturated: clipped_n,
        ..QuantStats::default()
    })
}

/// The raw code of `x` in `fmt`: the double's exact value is quantized (rounding mode)
/// and then fitted (overflow mode), as HLS assigns a double to an `ap_fixed`. Bit-identical
/// to [`from_f64_exact`](crate::from_f64_exact); STOCHASTIC formats round to nearest,
/// ties to even here (use [`from_f64_stochastic`](crate::from_f64_stochastic)).
///
/// # Errors
/// [`QuantError::NotFinite`] for NaN and infinities: they have no fixed-point value.
#[inline]
pub fn from_f64(x: f64, fmt: &FxFormat) -> Result<i64, QuantError> {
    Quantizer::new(fmt).from_f64(x)
}

/// `to_f64(from_f64(x))`: `x` moved onto `fmt`'s grid, as a double.
pub fn quantize(x: f64, fmt: &FxFormat) -> Result<f64, QuantError> {
    from_f64(x, fmt).map(|r| crate::to_f64(r, fmt))
}
