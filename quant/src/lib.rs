//! Fixed-point formats and arithmetic with the semantics of HLS `ap_fixed`.
//!
//! Every fixed-point cast in fixar goes through this crate. The scalar core is pure
//! Rust; the tensor path (feature `torch`, on by default) emulates the same casts on
//! libtorch tensors.
