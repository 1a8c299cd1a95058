//! Fast conversion of doubles: a float route that is exact by construction for the
//! common formats (width <= 50, moderate binary point), falling back to the integer path
//! for everything else. Property tests check it against [`from_f64_exact`] bit for bit.
//!
//! Why the float route is exact: see [`crate::grid`].

use crate::exact::{from_f64_exact_clip, wrap_to_width, QuantError};
use crate::format::{pow2, FxFormat, Overflow, Rounding};
use crate::grid::{clamp, round, SatGrid};
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

const TWO_POW_51: f64 = 2_251_799_813_685_248.0;

/// Precomputed constants of the float route for one format.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FloatGrid {
    sat: SatGrid<f64>,
    /// The same grid in f32, when f32 arithmetic is exact for it (width <= 22 and
    /// 0 <= F <= 126, so codes, 2^F, 2^-F and every grid value are normal f32).
    sat32: Option<SatGrid<f32>>,
    /// Inputs with |x| < tiny could lose bits when scaled (subnormal results).
    tiny: f64,
    rounding: Rounding,
    overflow: Overflow,
    /// Every finite input takes the float route, the overflow mode is SAT or SAT_SYM and
    /// rounding is to nearest, ties to even (RND_CONV, or STOCHASTIC without a word):
    /// the scalar call's common case, one clamp and one rounding.
    nearest_sat: bool,
    fmt: FxFormat,
}

impl FloatGrid {
    #[inline]
    pub fn new(fmt: &FxFormat) -> Option<Self> {
        let f = fmt.frac_bits();
        if fmt.width > 50 || !(-900..=1000).contains(&f) {
            return None;
        }
        let hi = fmt.raw_max() as f64;
        let lo = if fmt.overflow == Overflow::SatSym && fmt.signed {
            -fmt.raw_max() as f64 // not -hi: that is -0.0 for width 1
        } else {
            fmt.raw_min() as f64
        };
        let (scale, inv_scale) = (pow2(f as i64), pow2(-(f as i64)));
        let sat_zero = fmt.overflow == Overflow::SatZero;
        let nearest_sat = f >= 0
            && matches!(fmt.overflow, Overflow::Sat | Overflow::SatSym)
            && matches!(fmt.rounding, Rounding::RndConv | Rounding::Stochastic);
        Some(FloatGrid {
            sat: SatGrid::new(scale, inv_scale, lo, hi, sat_zero),
            sat32: (fmt.width <= 22 && (0..=126).contains(&f))
                .then(|| SatGrid::new(scale, inv_scale, lo, hi, sat_zero)),
            tiny: if f < 0 { pow2(-1022 - f as i64) } else { 0.0 },
            rounding: fmt.rounding,
            overflow: fmt.overflow,
            nearest_sat,
            fmt: *fmt,
        })
    }

    /// `2^-F`: code times this is the value (exact for the formats this route takes).
    #[inline(always)]
    pub fn inv_scale(&self) -> f64 {
        self.sat.inv_scale
    }

    /// The saturating grid in f64 and, where exact, in f32.
    #[inline(always)]
    pub fn saturating(&self) -> (&SatGrid<f64>, Option<&SatGrid<f32>>) {
        (&self.sat, self.sat32.as_ref())
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
            let y = x * self.sat.scale;
            if y.abs() > TWO_POW_51 {
                return None;
            }
            let r = round(y, self.rounding, random);
            if r >= self.sat.lo && r <= self.sat.hi {
                return Some((r, false));
            }
            let wrapped = wrap_to_width(to_int(r) as u64, &self.fmt);
            return Some((wrapped as f64, true));
        }
        Some(self.sat.code(x, self.rounding, random))
    }

    /// [`FloatGrid::code`] without the overflow verdict: for SAT and SAT_SYM one clamp to
    /// the code range before rounding gives the same code (the bounds are integers and
    /// rounding is monotone and fixes integers), which saves the per-value work of the
    /// scalar call.
    #[inline(always)]
    pub fn code_only(&self, x: f64) -> Option<f64> {
        if self.nearest_sat {
            let y = clamp(x * self.sat.scale, self.sat.lo, self.sat.hi);
            return Some(round(y, Rounding::RndConv, None));
        }
        match self.overflow {
            Overflow::Sat | Overflow::SatSym if x.abs() >= self.tiny => Some(round(
                clamp(x * self.sat.scale, self.sat.lo, self.sat.hi),
                self.rounding,
                None,
            )),
            _ => self.code(x, None).map(|(c, _)| c),
        }
    }

    /// Whether every finite input takes the float route and the mode saturates (so the
    /// [`FloatGrid::saturating`] grids apply to all of them).
    #[inline(always)]
    pub fn saturates_all_finite(&self) -> bool {
        self.tiny == 0.0 && self.overflow != Overflow::Wrap
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

/// An integer-valued f64 of magnitude at most 2^51 as i64.
#[inline(always)]
fn to_int(r: f64) -> i64 {
    debug_assert!(r.fract() == 0.0 && r.abs() <= TWO_POW_51 + 1.0);
    // SAFETY: callers pass integer values of magnitude <= 2^51 + 1, well inside i64.
    unsafe { r.to_int_unchecked::<i64>() }
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
        if !x.is_finite() {
            return Err(QuantError::NotFinite(x));
        }
        if let Some(c) = self.grid.as_ref().and_then(|g| g.code_only(x)) {
            return Ok(to_int(c));
        }
        integer_path(x, self.fmt, None).map(|(c, _)| c)
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
        let (c, clipped) = g.sat.code(if finite { x } else { 0.0 }, rounding, None);
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
    if !x.is_finite() {
        return Err(QuantError::NotFinite(x));
    }
    if let Some(c) = FloatGrid::new(fmt).and_then(|g| g.code_only(x)) {
        return Ok(to_int(c));
    }
    // The caller's format, not a local copy: nothing has to be kept in memory per call.
    cold_integer_path(x, fmt)
}

#[inline(never)]
fn cold_integer_path(x: f64, fmt: &FxFormat) -> Result<i64, QuantError> {
    from_f64_exact_clip(x, fmt, None).map(|(c, _)| c)
}

/// `to_f64(from_f64(x))`: `x` moved onto `fmt`'s grid, as a double.
pub fn quantize(x: f64, fmt: &FxFormat) -> Result<f64, QuantError> {
    from_f64(x, fmt).map(|r| crate::to_f64(r, fmt))
}
