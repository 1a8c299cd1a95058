//! Fixed-point formats: width, integer bits, quantization and overflow modes, and their
//! HLS spelling (`ap_fixed<16,6,AP_RND_CONV,AP_SAT>`).

use std::fmt;
use std::str::FromStr;

/// What happens to the bits below the least significant bit (HLS quantization mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// Toward minus infinity (floor); the HLS default.
    Trn,
    /// Toward zero.
    TrnZero,
    /// To nearest, ties toward plus infinity.
    Rnd,
    /// To nearest, ties toward zero.
    RndZero,
    /// To nearest, ties toward minus infinity.
    RndMinInf,
    /// To nearest, ties away from zero.
    RndInf,
    /// To nearest, ties to even.
    RndConv,
    /// Up with probability equal to the discarded fraction (not HLS). Needs a
    /// [`StochasticSource`](crate::StochasticSource); the functions that take none round
    /// to nearest, ties to even instead.
    Stochastic,
}

/// What happens above the most significant bit (HLS overflow mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Overflow {
    /// Keep the low W bits (two's complement); the HLS default.
    Wrap,
    /// Clamp to the minimum or maximum code.
    Sat,
    /// An overflowing value becomes 0.
    SatZero,
    /// Clamp to +/- the maximum code: a signed format never yields its most negative code
    /// through saturation.
    SatSym,
}

const ROUNDINGS: [(Rounding, &str); 8] = [
    (Rounding::Trn, "AP_TRN"),
    (Rounding::TrnZero, "AP_TRN_ZERO"),
    (Rounding::Rnd, "AP_RND"),
    (Rounding::RndZero, "AP_RND_ZERO"),
    (Rounding::RndMinInf, "AP_RND_MIN_INF"),
    (Rounding::RndInf, "AP_RND_INF"),
    (Rounding::RndConv, "AP_RND_CONV"),
    (Rounding::Stochastic, "AP_STOCHASTIC"),
];

const OVERFLOWS: [(Overflow, &str); 4] = [
    (Overflow::Wrap, "AP_WRAP"),
    (Overflow::Sat, "AP_SAT"),
    (Overflow::SatZero, "AP_SAT_ZERO"),
    (Overflow::SatSym, "AP_SAT_SYM"),
];

/// Looks a mode up by its HLS name; the `AP_` prefix is optional.
fn lookup<T: Copy>(table: &[(T, &'static str)], s: &str) -> Option<T> {
    let s = s.trim();
    table
        .iter()
        .find(|(_, name)| *name == s || name.strip_prefix("AP_") == Some(s))
        .map(|(v, _)| *v)
}

impl Rounding {
    /// Every mode, HLS's seven first.
    pub const ALL: [Rounding; 8] = [
        Rounding::Trn,
        Rounding::TrnZero,
        Rounding::Rnd,
        Rounding::RndZero,
        Rounding::RndMinInf,
        Rounding::RndInf,
        Rounding::RndConv,
        Rounding::Stochastic,
    ];

    /// The HLS spelling (`AP_RND_CONV`; ours: `AP_STOCHASTIC`).
    pub fn hls_name(self) -> &'static str {
        ROUNDINGS.iter().find(|(r, _)| *r == self).unwrap().1
    }
}

impl Overflow {
    /// Every mode.
    pub const ALL: [Overflow; 4] = [
        Overflow::Wrap,
        Overflow::Sat,
        Overflow::SatZero,
        Overflow::SatSym,
    ];

    /// The HLS spelling (`AP_SAT`).
    pub fn hls_name(self) -> &'static str {
        OVERFLOWS.iter().find(|(o, _)| *o == self).unwrap().1
    }
}

impl fmt::Display for Rounding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hls_name())
    }
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hls_name())
    }
}

impl FromStr for Rounding {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, FormatError> {
        lookup(&ROUNDINGS, s).ok_or_else(|| FormatError::Rounding(s.trim().to_string()))
    }
}

impl FromStr for Overflow {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, FormatError> {
        lookup(&OVERFLOWS, s).ok_or_else(|| FormatError::Overflow(s.trim().to_string()))
    }
}

/// Largest |integer bits| accepted. It keeps every format's values f64 numbers: the range
/// stays below 2^1010 and the LSB, 2^-(W - I) with W <= 64, at or above 2^-1074, the
/// smallest f64 above zero (a larger bound let the long fuzz run find
/// `ap_fixed<1,-6470>`, whose LSB is 0 in f64). It also keeps the exact intermediates of
/// operations on extreme formats small (an add of two formats whose binary points are
/// far apart needs that many bits).
pub const MAX_ABS_INT_BITS: i32 = 1010;

/// Why a format could not be built or parsed; each variant names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("width W = {0} is out of range: W must be in 1..=64")]
    Width(i64),
    #[error("integer bits I = {0} are out of range: |I| must be at most {MAX_ABS_INT_BITS}")]
    IntBits(i64),
    #[error(
        "unknown quantization mode `{0}` (expected AP_TRN, AP_TRN_ZERO, AP_RND, AP_RND_ZERO, \
         AP_RND_MIN_INF, AP_RND_INF, AP_RND_CONV or AP_STOCHASTIC)"
    )]
    Rounding(String),
    #[error("unknown overflow mode `{0}` (expected AP_WRAP, AP_SAT, AP_SAT_ZERO or AP_SAT_SYM)")]
    Overflow(String),
    #[error("saturation bits N = {0} are not supported (only N = 0, the HLS default)")]
    SaturationBits(String),
    #[error("`{0}` is not a fixed-point format: expected `ap_fixed<W,I[,Q[,O]]>` or `ap_ufixed<W,I[,Q[,O]]>`")]
    Syntax(String),
    #[error("{part} `{text}` in `{format}` is not an integer")]
    NotAnInteger {
        part: &'static str,
        text: String,
        format: String,
    },
}

/// A fixed-point format with `ap_fixed` semantics: `width` bits of which `int_bits` are
/// integer bits (sign included), so `frac_bits = width - int_bits` and a raw code `r`
/// means `r * 2^-frac_bits`.
///
/// Raw codes are carried in an `i64`: the W-bit two's complement value sign-extended for
/// signed formats, the unsigned value for unsigned ones. The one exception is an unsigned
/// 64-bit format, whose codes above `i64::MAX` are stored as their bit pattern (read the
/// `i64` as `u64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FxFormat {
    pub signed: bool,
    pub width: u32,
    pub int_bits: i32,
    pub rounding: Rounding,
    pub overflow: Overflow,
}

impl FxFormat {
    /// A format after checking `1 <= width <= 64` and `|int_bits| <= MAX_ABS_INT_BITS`.
    pub fn new(
        signed: bool,
        width: u32,
        int_bits: i32,
        rounding: Rounding,
        overflow: Overflow,
    ) -> Result<Self, FormatError> {
        if !(1..=64).contains(&width) {
            return Err(FormatError::Width(width as i64));
        }
        if int_bits.unsigned_abs() > MAX_ABS_INT_BITS as u32 {
            return Err(FormatError::IntBits(int_bits as i64));
        }
        Ok(FxFormat {
            signed,
            width,
            int_bits,
            rounding,
            overflow,
        })
    }

    /// `ap_fixed<width, int_bits>` with HLS's defaults (TRN, WRAP).
    pub fn signed(width: u32, int_bits: i32) -> Result<Self, FormatError> {
        Self::new(true, width, int_bits, Rounding::Trn, Overflow::Wrap)
    }

    /// `ap_ufixed<width, int_bits>` with HLS's defaults (TRN, WRAP).
    pub fn unsigned(width: u32, int_bits: i32) -> Result<Self, FormatError> {
        Self::new(false, width, int_bits, Rounding::Trn, Overflow::Wrap)
    }

    /// The same bits with other quantization and overflow modes.
    pub fn with_modes(self, rounding: Rounding, overflow: Overflow) -> Self {
        FxFormat {
            rounding,
            overflow,
            ..self
        }
    }

    /// Fraction bits `width - int_bits` (negative when the LSB weighs more than 1).
    #[inline]
    pub fn frac_bits(&self) -> i32 {
        self.width as i32 - self.int_bits
    }

    /// The weight of one code step, `2^-frac_bits` (0 or infinity beyond f64's range).
    #[inline]
    pub fn lsb(&self) -> f64 {
        pow2(-self.frac_bits() as i64)
    }

    /// The smallest raw code (`-2^(W-1)` signed, 0 unsigned).
    #[inline]
    pub fn raw_min(&self) -> i64 {
        if self.signed {
            i64::MIN >> (64 - self.width)
        } else {
            0
        }
    }

    /// The largest raw code (`2^(W-1) - 1` signed, `2^W - 1` unsigned; for an unsigned
    /// 64-bit format the bit pattern of `u64::MAX`, i.e. -1).
    #[inline]
    pub fn raw_max(&self) -> i64 {
        if self.signed {
            i64::MAX >> (64 - self.width)
        } else {
            (u64::MAX >> (64 - self.width)) as i64
        }
    }

    /// The smallest value, `raw_min * lsb`.
    pub fn min_value(&self) -> f64 {
        crate::to_f64(self.raw_min(), self)
    }

    /// The largest value, `raw_max * lsb`.
    pub fn max_value(&self) -> f64 {
        crate::to_f64(self.raw_max(), self)
    }

    /// The numeric value of a raw code: sign-extended for signed formats, zero-extended
    /// for unsigned ones. Bits above the width are ignored.
    #[inline]
    pub fn raw_value(&self, raw: i64) -> i128 {
        let shift = 64 - self.width;
        if self.signed {
            ((raw << shift) >> shift) as i128
        } else {
            (((raw as u64) << shift) >> shift) as i128
        }
    }
}

/// `2^e` as f64 (0 below the subnormal range, infinity above the finite range).
#[inline]
pub(crate) fn pow2(e: i64) -> f64 {
    if e > 1023 {
        f64::INFINITY
    } else if e >= -1022 {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else if e >= -1074 {
        f64::from_bits(1u64 << (e + 1074))
    } else {
        0.0
    }
}

impl fmt::Display for FxFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}<{},{},{},{}>",
            if self.signed { "ap_fixed" } else { "ap_ufixed" },
            self.width,
            self.int_bits,
            self.rounding,
            self.overflow
        )
    }
}

impl FromStr for FxFormat {
    type Err = FormatError;

    /// Parses `ap_fixed<W,I[,Q[,O[,N]]]>` / `ap_ufixed<...>`; omitted modes take HLS's
    /// defaults (AP_TRN, AP_WRAP); N (saturation bits) is accepted only as 0.
    fn from_str(text: &str) -> Result<Self, FormatError> {
        let s = text.trim();
        let syntax = || FormatError::Syntax(text.to_string());
        let (signed, rest) = if let Some(r) = s.strip_prefix("ap_fixed") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("ap_ufixed") {
            (false, r)
        } else {
            return Err(syntax());
        };
        let args = rest
            .trim()
            .strip_prefix('<')
            .and_then(|r| r.strip_suffix('>'))
            .ok_or_else(syntax)?;
        let parts: Vec<&str> = args.split(',').map(str::trim).collect();
        if !(2..=5).contains(&parts.len()) {
            return Err(syntax());
        }
        let int = |part: &'static str, t: &str| {
            t.parse::<i64>().map_err(|_| FormatError::NotAnInteger {
                part,
                text: t.to_string(),
                format: text.to_string(),
            })
        };
        let width = int("width W", parts[0])?;
        let int_bits = int("integer bits I", parts[1])?;
        let rounding = match parts.get(2) {
            Some(q) => q.parse()?,
            None => Rounding::Trn,
        };
        let overflow = match parts.get(3) {
            Some(o) => o.parse()?,
            None => Overflow::Wrap,
        };
        if let Some(n) = parts.get(4) {
            if int("saturation bits N", n)? != 0 {
                return Err(FormatError::SaturationBits(n.to_string()));
            }
        }
        if !(1..=64).contains(&width) {
            return Err(FormatError::Width(width));
        }
        if int_bits.unsigned_abs() > MAX_ABS_INT_BITS as u64 {
            return Err(FormatError::IntBits(int_bits));
        }
        FxFormat::new(signed, width as u32, int_bits as i32, rounding, overflow)
    }
}

impl serde::Serialize for FxFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for FxFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Modes (de)serialise as their HLS names.
macro_rules! serde_by_hls_name {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.hls_name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_by_hls_name!(Rounding);
serde_by_hls_name!(Overflow);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hls_spelling_round_trips_and_defaults_are_trn_wrap() {
        let f: FxFormat = "ap_fixed<16,6,AP_RND_CONV,AP_SAT>".parse().unwrap();
        assert_eq!(
            f,
            FxFormat::new(true, 16, 6, Rounding::RndConv, Overflow::Sat).unwrap()
        );
        assert_eq!(f.to_string(), "ap_fixed<16,6,AP_RND_CONV,AP_SAT>");
        let u: FxFormat = "ap_ufixed<8,0>".parse().unwrap();
        assert_eq!(u, FxFormat::unsigned(8, 0).unwrap());
        assert_eq!(u.to_string(), "ap_ufixed<8,0,AP_TRN,AP_WRAP>");
        for q in Rounding::ALL {
            for o in Overflow::ALL {
                let f = FxFormat::new(false, 64, -7, q, o).unwrap();
                assert_eq!(f.to_string().parse::<FxFormat>().unwrap(), f);
            }
        }
        let g: FxFormat = " ap_fixed< 8 , -3 , RND , SAT_SYM , 0 > ".parse().unwrap();
        assert_eq!(
            g,
            FxFormat::new(true, 8, -3, Rounding::Rnd, Overflow::SatSym).unwrap()
        );
    }

    #[test]
    fn bad_formats_name_the_wrong_part() {
        let err = |s: &str| s.parse::<FxFormat>().unwrap_err();
        assert_eq!(err("ap_fixed<0,3>"), FormatError::Width(0));
        assert_eq!(err("ap_fixed<65,3>"), FormatError::Width(65));
        assert_eq!(
            err("ap_fixed<8,3,AP_RND_UP>"),
            FormatError::Rounding("AP_RND_UP".into())
        );
        assert_eq!(
            err("ap_fixed<8,3,AP_RND,AP_CLAMP>"),
            FormatError::Overflow("AP_CLAMP".into())
        );
        assert!(matches!(
            err("ap_fixed<8,x>"),
            FormatError::NotAnInteger {
                part: "integer bits I",
                ..
            }
        ));
        assert!(matches!(err("ap_int<8>"), FormatError::Syntax(_)));
        assert!(matches!(err("ap_fixed<8>"), FormatError::Syntax(_)));
        assert!(matches!(
            err("ap_fixed<8,3,AP_RND,AP_SAT,2>"),
            FormatError::SaturationBits(_)
        ));
        assert_eq!(err("ap_fixed<8,100000>"), FormatError::IntBits(100000));
        assert!(err("ap_fixed<0,3>").to_string().contains("W = 0"));
    }

    #[test]
    fn raw_limits_follow_width_and_signedness() {
        let s = FxFormat::signed(8, 3).unwrap();
        assert_eq!((s.raw_min(), s.raw_max()), (-128, 127));
        assert_eq!((s.min_value(), s.max_value()), (-4.0, 127.0 / 32.0));
        let u = FxFormat::unsigned(8, 3).unwrap();
        assert_eq!((u.raw_min(), u.raw_max()), (0, 255));
        let w = FxFormat::signed(64, 64).unwrap();
        assert_eq!((w.raw_min(), w.raw_max()), (i64::MIN, i64::MAX));
        assert_eq!(FxFormat::unsigned(64, 0).unwrap().raw_max(), -1);
        assert_eq!(FxFormat::signed(4, 10).unwrap().lsb(), 64.0);
    }

    #[test]
    fn serde_uses_the_hls_string() {
        let f = FxFormat::new(true, 16, 6, Rounding::RndConv, Overflow::Sat).unwrap();
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, "\"ap_fixed<16,6,AP_RND_CONV,AP_SAT>\"");
        assert_eq!(serde_json::from_str::<FxFormat>(&json).unwrap(), f);
        assert!(serde_json::from_str::<FxFormat>("\"ap_fixed<0,1>\"").is_err());
    }
}
