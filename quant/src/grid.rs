//! Exact rounding onto a grid in binary floating point, generic over f32 and f64, so
//! loops over f32 data can stay in f32 (twice the SIMD lanes) when the format allows.
//!
//! Why it is exact: `x * 2^F` only changes the exponent while the result stays normal;
//! codes below 2^(p-2) (p = 24 or 53 significand bits) are integers the type holds;
//! `(y + 1.5*2^(p-1)) - 1.5*2^(p-1)` rounds to nearest-even exactly for |y| <= 2^(p-2);
//! and `y - round(y)` is exact, so every tie and discarded fraction is seen exactly.

use std::ops::{Add, Mul, Sub};

use crate::format::{pow2, Rounding};
use crate::magnitude::Dropped;

const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// f32 or f64 arithmetic for the grid kernels.
pub(crate) trait Real:
    Copy + PartialOrd + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Send + Sync
{
    /// The unsigned integer of the same width.
    type Bits: Copy + Default + PartialEq + std::ops::BitOr<Output = Self::Bits>;
    /// 1 for true, 0 for false, in `Bits`.
    fn bit(b: bool) -> Self::Bits;
    /// 1.5 * 2^(p-1): adding and subtracting it rounds to an integer (nearest-even).
    const MAGIC: Self;
    const ZERO: Self;
    const HALF: Self;
    fn of_bool(b: bool) -> Self;
    /// +0 when `zero`, else self (bit mask, no branch).
    fn zero_if(self, zero: bool) -> Self;
    fn is_finite(self) -> bool;
    fn is_nan(self) -> bool;
    /// Exact conversion of a double that the type holds.
    fn of_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// Nearest integer, ties to even (one instruction with SSE4.1/AVX).
    fn round_even(self) -> Self;
    /// Largest integer not above.
    fn floor(self) -> Self;
    /// Integer part.
    fn trunc(self) -> Self;
}

/// `Real` for a float type, its same-width bits type and its rounding constant.
macro_rules! impl_real {
    ($t:ident, $bits:ty, $magic:expr) => {
        impl Real for $t {
            type Bits = $bits;
            #[inline(always)]
            fn bit(b: bool) -> $bits {
                b as $bits
            }
            const MAGIC: $t = $magic;
            const ZERO: $t = 0.0;
            const HALF: $t = 0.5;
            #[inline(always)]
            fn of_bool(b: bool) -> $t {
                b as u8 as $t
            }
            #[inline(always)]
            fn zero_if(self, zero: bool) -> $t {
                $t::from_bits(self.to_bits() & !(zero as $bits).wrapping_neg())
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                $t::is_finite(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                $t::is_nan(self)
            }
            #[inline(always)]
            fn of_f64(v: f64) -> $t {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn round_even(self) -> $t {
                $t::round_ties_even(self)
            }
            #[inline(always)]
            fn floor(self) -> $t {
                $t::floor(self)
            }
            #[inline(always)]
            fn trunc(self) -> $t {
                $t::trunc(self)
            }
        }
    };
}

impl_real!(f64, u64, 6_755_399_441_055_744.0); // 1.5 * 2^52
impl_real!(f32, u32, 12_582_912.0); // 1.5 * 2^23

/// The discarded fraction `f` in [0, 1) of a float, as the integer path reports it.
#[inline(always)]
fn dropped_of(f: f64) -> Dropped {
    debug_assert!((0.0..1.0).contains(&f), "dropped fraction {f}");
    let scaled = f * TWO_POW_64;
    // SAFETY: f in [0, 1) (its callers' y - floor(y) and ceil(y) - y), so scaled is in
    // [0, 2^64): the conversion is exact truncation, the same as `as` without its
    // saturation, which keeps the loops over slices vectorized (vcvttpd2uqq).
    let top = unsafe { scaled.to_int_unchecked::<u64>() };
    Dropped {
        top,
        sticky: top as f64 != scaled,
    }
}

/// `v` clamped to [lo, hi] for non-NaN `v` (plain compares: max/min instructions).
#[inline(always)]
pub(crate) fn clamp<R: Real>(v: R, lo: R, hi: R) -> R {
    let v = if v < lo { lo } else { v };
    if v > hi {
        hi
    } else {
        v
    }
}

/// Rounds `y` (|y| <= 2^(p-2)) to an integer with `rounding`; exact. `random` is the
/// stochastic word (nearest-even without one).
#[inline(always)]
pub(crate) fn round<R: Real>(y: R, rounding: Rounding, random: Option<u64>) -> R {
    let t = (y + R::MAGIC) - R::MAGIC;
    let d = y - t;
    let (zero, half) = (R::ZERO, R::HALF);
    let neg_half = zero - half;
    let b = R::of_bool;
    // The common mode first, as a compare: callers that dispatch per value then avoid a
    // jump table.
    if rounding == Rounding::RndConv {
        return t;
    }
    match rounding {
        Rounding::RndConv => t,
        Rounding::Trn => t - b(d < zero),
        Rounding::TrnZero => {
            if y >= zero {
                t - b(d < zero)
            } else {
                t + b(d > zero)
            }
        }
        Rounding::Rnd => t + b(d == half),
        Rounding::RndMinInf => t - b(d == neg_half),
        Rounding::RndZero => t + b(d == half && y < zero) - b(d == neg_half && y > zero),
        Rounding::RndInf => t + b(d == half && y > zero) - b(d == neg_half && y < zero),
        Rounding::Stochastic => match random {
            None => t,
            // Away from zero with probability equal to the discarded magnitude fraction,
            // exactly as the integer path decides it.
            Some(u) => {
                if y >= zero {
                    let floor = t - b(d < zero);
                    floor + b(dropped_of((y - floor).to_f64()).exceeds(u))
                } else {
                    let ceil = t + b(d > zero);
                    ceil - b(dropped_of((ceil - y).to_f64()).exceeds(u))
                }
            }
        },
    }
}

/// A saturating format's constants in precision R.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SatGrid<R> {
    pub scale: R,
    pub inv_scale: R,
    /// Codes the overflow step lets through (SAT_SYM: from -max).
    pub lo: R,
    pub hi: R,
    clamp_lo: R,
    clamp_hi: R,
    sat_zero: bool,
    /// The grid's constants in f32 when f32 arithmetic rounds f32 inputs onto it exactly
    /// (see [`Screen`]), whatever the width.
    pub screen32: Option<Screen<f32>>,
}

/// Constants of the screened route: scale, rounding instruction, one range test per
/// element, and no clamp. Inside the range the code is the rounded value itself; a
/// chunk with any element outside it (saturated, or not finite) is redone by a loop
/// that saturates.
///
/// In f32 for f32 inputs when `1 <= 2^F <= 2^100`, for any width: `x * 2^F` is then exact
/// or overflows to infinity (outside), its rounding to an integer has at most 24
/// significant bits, and that integer times `2^-F` is a normal f32, the grid value itself
/// (an f32 input only reaches codes with 24 significant bits). The f32 bounds are `lo - 1`
/// and `hi + 1` rounded inwards where f32 does not hold them (e.g. `-2^31 - 1`), so an
/// edge code may be sent to the saturating loop but an outside one never passes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Screen<S> {
    pub scale: S,
    pub inv_scale: S,
    /// `lo - 1` and `hi + 1`: a code `r` is inside when `below < r < above` (false for
    /// NaN).
    pub below: S,
    pub above: S,
}

impl<S: Real> Screen<S> {
    /// `x`'s code when it is inside the range (and whether it is), for the modes a
    /// rounding instruction computes; `x` in S exactly.
    #[inline(always)]
    pub fn code(&self, x: S, rounding: Rounding) -> (S, bool) {
        debug_assert!(
            has_direct_rounding(rounding),
            "screened route: {rounding:?}"
        );
        let y = x * self.scale;
        let r = match rounding {
            Rounding::RndConv => y.round_even(),
            Rounding::Trn => y.floor(),
            _ => y.trunc(),
        };
        (r, (r > self.below) & (r < self.above))
    }
}

impl<R: Real> SatGrid<R> {
    /// From exact f64 constants (`scale` = 2^F, `inv_scale` = 2^-F, code bounds).
    pub fn new(scale: f64, inv_scale: f64, lo: f64, hi: f64, sat_zero: bool) -> Self {
        // The f32 bounds round inwards: the screen may send an in-range code at the very
        // edge to the saturating loop, never let an outside one through.
        let (below, above) = ((lo - 1.0) as f32, (hi + 1.0) as f32);
        let below = if (below as f64) < lo - 1.0 {
            below.next_up()
        } else {
            below
        };
        let above = if (above as f64) > hi + 1.0 {
            above.next_down()
        } else {
            above
        };
        let screen32 = (1.0..=pow2(100)).contains(&scale).then_some(Screen {
            scale: scale as f32,
            inv_scale: inv_scale as f32,
            below,
            above,
        });
        SatGrid {
            screen32,
            scale: R::of_f64(scale),
            inv_scale: R::of_f64(inv_scale),
            lo: R::of_f64(lo),
            hi: R::of_f64(hi),
            clamp_lo: R::of_f64(lo - 1.0),
            clamp_hi: R::of_f64(hi + 1.0),
            sat_zero,
        }
    }

    /// The code of finite `x` (an integer-valued R) and whether it saturated. Rounding
    /// is monotone and the bounds are integers, so clamping one step outside the range
    /// before rounding keeps both the code and the verdict. Branch-free.
    #[inline(always)]
    pub fn code(&self, x: R, rounding: Rounding, random: Option<u64>) -> (R, bool) {
        let r = round(
            clamp(x * self.scale, self.clamp_lo, self.clamp_hi),
            rounding,
            random,
        );
        self.bound(r)
    }

    /// [`Self::code`] for the modes a rounding instruction computes (`RndConv`, `Trn`,
    /// `TrnZero`; None for the others), same code and verdict for finite `x`: rounding
    /// is monotone and the bounds are integers, so the clamp before rounding that
    /// [`Self::code`] needs for its add-and-subtract rounding can go. Non-finite `x`
    /// give meaningless results.
    #[inline(always)]
    pub fn code_direct(&self, x: R, rounding: Rounding) -> Option<(R, bool)> {
        let y = x * self.scale;
        let r = match rounding {
            Rounding::RndConv => y.round_even(),
            Rounding::Trn => y.floor(),
            Rounding::TrnZero => y.trunc(),
            _ => return None,
        };
        Some(self.bound(r))
    }

    /// The screened route's constants in R (exact for the formats a SatGrid<R> holds).
    #[inline(always)]
    pub fn screen(&self) -> Screen<R> {
        Screen {
            scale: self.scale,
            inv_scale: self.inv_scale,
            below: self.clamp_lo,
            above: self.clamp_hi,
        }
    }

    /// The saturation step on a rounded value.
    #[inline(always)]
    fn bound(&self, r: R) -> (R, bool) {
        let clipped = (r < self.lo) | (r > self.hi);
        let code = clamp(r, self.lo, self.hi).zero_if(self.sat_zero & clipped);
        (code, clipped)
    }
}

/// The modes [`SatGrid::code_direct`] computes.
pub(crate) fn has_direct_rounding(rounding: Rounding) -> bool {
    matches!(
        rounding,
        Rounding::RndConv | Rounding::Trn | Rounding::TrnZero
    )
}
