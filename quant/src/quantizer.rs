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
            fmt: *fmt,
        })
    }

    /// `2^-F`: code times this is the value (exact for the formats this route takes).
    #[inline(always)]
    pub fn inv_scale(&self) -> f64 {
        self.inv_scale
    }

    /// The code of finite `x` as an integer-valued f64, and what overflow did; `None`
    /// when this input needs the integer path.
    #[inline(always)]
    pub fn code(&self, x: f64, random: Option<u64>) -> Option<(f64, Clip)> {
        if x.abs() < self.tiny && x != 0.0 {
            return None;
        }
        let y = x * self.scale;
        let y = if self.overflow == Overflow::Wrap {
            if y.abs() > TWO_POW_51 {
                return None;
            }
            y
        } else {
            // Rounding is monotone and the bounds are integers, so clamping one step
            // outside the range first keeps both the code and the overflow verdict.
            y.max(self.clamp_lo).min(self.clamp_hi)
        };
        let r = round(y, self.rounding, random);
        if r >= self.lo && r <= self.hi {
            return Some((r, Clip::None));
        }
        Some(match self.overflow {
            Overflow::Sat | Overflow::SatSym => (r.max(self.lo).min(self.hi), Clip::Saturated),
            Overflow::SatZero => (0.0, Clip::Saturated),
            Overflow::Wrap => (
                wrap_to_width(r as i64 as u64, &self.fmt) as f64,
                Clip::Wrapped,
            ),
        })
    }
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
            if let Some((c, clip)) = g.code(x, random) {
                return Ok((c as i64, clip));
            }
        }
        from_f64_exact_clip(x, &self.fmt, random)
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

    /// Converts a slice; stops at the first NaN or infinity. Returns the counts.
    pub fn from_f64_slice(&self, xs: &[f64], out: &mut [i64]) -> Result<QuantStats, QuantError> {
        assert_eq!(
            xs.len(),
            out.len(),
            "from_f64_slice: input and output lengths differ"
        );
        let mut stats = QuantStats::default();
        for (o, &x) in out.iter_mut().zip(xs) {
            let (c, clip) = self.code_clip(x, None)?;
            stats.record(clip);
            *o = c;
        }
        Ok(stats)
    }
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
