//! Fixed-point formats and arithmetic with the semantics of HLS `ap_fixed`.
//!
//! Every fixed-point cast in fixar goes through this crate. It is for emulating, bit for
//! bit, what an FPGA datapath written with Vitis HLS `ap_fixed` computes: formats of 1 to
//! 64 bits with any binary point, the seven HLS quantization modes (plus stochastic
//! rounding for training) and the four overflow modes. It is not a general big-number or
//! decimal library, and it does not pick formats for you beyond the range rule of
//! [`int_bits_for_range`].
//!
//! - **Formats**: [`FxFormat`] parses and prints the HLS spelling and (de)serialises as it.
//! - **Exact scalar path** (pure Rust, no floating point on the exact path): raw codes are
//!   `i64`; [`from_f64`] quantizes the exact value of a double, [`to_f64`], [`cast`],
//!   [`add`], [`sub`], [`mul`] compute at full precision, then assign (round, then handle
//!   overflow). NaN and infinities are refused with [`QuantError::NotFinite`]. Every row
//!   of the HLS reference vectors (`shared/testdata/ap_fixed`) reproduces ([`vectors`]).
//! - **Slices and tensors**: [`fake_quant_slice`] (pure Rust) and, behind the default
//!   `torch` feature, [`tensor::fake_quant`], [`tensor::fake_quant_ste`] and
//!   [`tensor::exact_linear`], bit-identical to the scalar path, with [`QuantStats`]
//!   counts of saturations, wraps and NaN/Inf per call.
//! - **Reference GEMM**: [`golden_gemm`] (`y = cast(x W + b)`, exact accumulation).
//! - **Ranges**: [`RangeObserver`], [`MinMaxObserver`] and [`int_bits_for_range`].
//! - **Affine quantizer**: [`AffineQuantizer`], FIXAR's asymmetric n-bit activation
//!   quantizer with a zero point (floor rounding, codes saturating to `[0, 2^n - 1]`),
//!   scalar, slice and (feature `torch`) [`tensor::affine_fake_quant`].
//!
//! Conventions worth knowing:
//! - Raw codes are `i64`: sign-extended for signed formats, zero-extended for unsigned
//!   ones; an unsigned 64-bit format stores codes above `i64::MAX` as their bit pattern
//!   ([`FxFormat::raw_value`] reads any code as its number).
//! - SAT_SYM treats the most negative code as overflow (as HLS does): a signed SAT_SYM
//!   assignment never yields it, even for a value that equals it exactly.
//! - STOCHASTIC rounding needs a [`StochasticSource`] (word `i` of a call rounds element
//!   `i`); functions that take none round STOCHASTIC formats to nearest, ties to even.
//! - Loops should build a [`Quantizer`] once ([`from_f64`] is already ~1 ns per value).
//! - Slice and tensor outputs are the grid value rounded once to the element type; that
//!   is exact except for f32 with codes of more than 24 significant bits.
//! - Operands are limited to 64 bits and |integer bits| to [`MAX_ABS_INT_BITS`].
//!
// Doctest binaries live outside target/, where the relative libtorch rpath does not
// reach: with `torch` on, the example is compiled but not run (the scalar-only test run,
// `--no-default-features`, runs it).
#![cfg_attr(not(feature = "torch"), doc = "```")]
#![cfg_attr(feature = "torch", doc = "```no_run")]
//! use quant::{add, from_f64, to_f64, FxFormat};
//!
//! let f: FxFormat = "ap_fixed<16,6,AP_RND_CONV,AP_SAT>".parse()?;
//! assert_eq!(f.to_string(), "ap_fixed<16,6,AP_RND_CONV,AP_SAT>");
//! let a = from_f64(3.14159, &f)?; // 3217 * 2^-10
//! assert_eq!(a, 3217);
//! assert_eq!(from_f64(1e6, &f)?, f.raw_max()); // saturates
//! let s = add(a, &f, a, &f, &f);
//! assert_eq!(to_f64(s, &f), 6.283203125);
//! assert!(from_f64(f64::NAN, &f).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod affine;
mod exact;
mod fake;
mod format;
mod gemm;
mod grid;
mod intgemm;
mod magnitude;
mod observer;
mod quantizer;
mod stats;
mod stochastic;
#[cfg(feature = "torch")]
pub mod tensor;
pub mod vectors;

pub use affine::{
    AffineError, AffineQuantizer, AFFINE_MAX_BITS, AFFINE_TABLE_MAX_BITS, AFFINE_TABLE_MIN_LEN,
};
pub use exact::{
    add, apply_counted, cast, cast_counted, from_f64_exact, from_f64_stochastic, mul, sub, to_f64,
    Op, QuantError,
};
pub use fake::{fake_quant_slice, fake_quant_slice_widen, FakeQuantElem};
pub use format::{FormatError, FxFormat, Overflow, Rounding, MAX_ABS_INT_BITS};
pub use gemm::{f64_gemm_is_exact, golden_gemm, golden_gemm_with_stats, AccumulatorCast};
pub use intgemm::{grid_gemm, grid_gemm_available, GridOperand};
pub use observer::{int_bits_for_range, MinMaxObserver, RangeKind, RangeObserver};
pub use quantizer::{from_f64, quantize, Quantizer};
pub use stats::{Clip, QuantStats};
pub use stochastic::{StochasticBlock, StochasticSource};
