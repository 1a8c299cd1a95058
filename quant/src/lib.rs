//! Fixed-point formats and arithmetic with the semantics of HLS `ap_fixed`.
//!
//! Every fixed-point cast in fixar goes through this crate. The scalar core is pure
//! Rust; the tensor path (feature `torch`, on by default) emulates the same casts on
//! libtorch tensors.

mod exact;
mod format;
mod magnitude;
mod quantizer;
mod stats;
mod stochastic;
pub mod vectors;

pub use exact::{
    add, apply_counted, cast, cast_counted, from_f64_exact, from_f64_stochastic, mul, sub, to_f64,
    Op, QuantError,
};
pub use format::{FormatError, FxFormat, Overflow, Rounding, MAX_ABS_INT_BITS};
pub use quantizer::{from_f64, quantize, Quantizer};
pub use stats::{Clip, QuantStats};
pub use stochastic::{StochasticBlock, StochasticSource};
