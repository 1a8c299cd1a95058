//! The output layer's `a = cast(tanh(z) * scale + offset)` (the agent's action squashing,
//! per output column) as a threshold table, the form both code generators export.
//!
//! The output code is a step function of the input code, so the table lists, for every
//! output code, the smallest input code that produces it (computed with `quant::from_f64`
//! on the double-precision `tanh`). That is exact by construction and integer-only, but
//! it needs one entry per output code: an output format with more than
//! [`MAX_TANH_FRAC_BITS`] fraction bits is refused.

use quant::{FxFormat, Overflow, Rounding};

/// Largest fraction width of a tanh output format that the exporter tabulates
/// (2^(F+1) + 1 table entries).
pub const MAX_TANH_FRAC_BITS: i32 = 20;

/// Why a tanh cannot be tabulated.
#[derive(Debug, thiserror::Error)]
pub enum TanhError {
    #[error("tanh scale {scale} and offset {offset}: the scale must be positive and both finite")]
    ScaleOffset { scale: f64, offset: f64 },
    #[error("tanh output format {format} has {frac_bits} fraction bits; the exported tanh table needs one entry per output code, so at most {MAX_TANH_FRAC_BITS} fraction bits are supported (export a narrower QAT rung)")]
    TooFine { format: FxFormat, frac_bits: i32 },
    #[error("tanh output format {format} rounds stochastically; deployed inference needs a deterministic rounding mode")]
    Stochastic { format: FxFormat },
    #[error("no format holds tanh's range")]
    Format(#[from] quant::FormatError),
}

/// One tanh table: `codes[i]` is the output for inputs in `[thresholds[i], thresholds[i+1])`.
#[derive(Clone, Debug, PartialEq)]
pub struct TanhTable {
    pub thresholds: Vec<i64>,
    pub codes: Vec<i64>,
}

impl TanhTable {
    /// The output code for input code `z`.
    pub fn lookup(&self, z: i64) -> i64 {
        let i = self.thresholds.partition_point(|t| *t <= z);
        self.codes[i.saturating_sub(1)]
    }
}

/// The tabulated `cast(tanh(z) * scale + offset)` from `in_fmt` codes to `out_fmt` codes
/// (see the module docs); `scale` must be positive.
pub fn tanh_table(
    in_fmt: &FxFormat,
    out_fmt: &FxFormat,
    scale: f64,
    offset: f64,
) -> Result<TanhTable, TanhError> {
    if !(scale > 0.0 && scale.is_finite() && offset.is_finite()) {
        return Err(TanhError::ScaleOffset { scale, offset });
    }
    if out_fmt.frac_bits() > MAX_TANH_FRAC_BITS {
        return Err(TanhError::TooFine {
            format: *out_fmt,
            frac_bits: out_fmt.frac_bits(),
        });
    }
    if out_fmt.rounding == Rounding::Stochastic {
        return Err(TanhError::Stochastic { format: *out_fmt });
    }
    // Rounding only (no overflow) is monotone in the input: find its steps by binary
    // search, then apply the output format's overflow to each step's code.
    let int_bits = quant::int_bits_for_range(scale + offset.abs(), 64, 2);
    let unbounded = FxFormat::new(
        true,
        (out_fmt.frac_bits() + int_bits).clamp(2, 64) as u32,
        int_bits,
        out_fmt.rounding,
        Overflow::Sat,
    )?;
    let rounded = |z: i64| -> i64 {
        let t = quant::to_f64(z, in_fmt).tanh() * scale + offset;
        quant::from_f64(t, &unbounded).expect("tanh is finite")
    };
    let final_code = |r: i64| quant::cast(r, &unbounded, out_fmt);
    let (lo, hi) = (in_fmt.raw_min(), in_fmt.raw_max());
    let mut thresholds = vec![lo];
    let mut steps = vec![rounded(lo)];
    let last = rounded(hi);
    while *steps.last().unwrap() < last {
        let cur = *steps.last().unwrap();
        // Smallest z in (prev, hi] with rounded(z) > cur.
        let (mut a, mut b) = (*thresholds.last().unwrap(), hi);
        while b - a > 1 {
            let mid = a + (b - a) / 2;
            if rounded(mid) > cur {
                b = mid;
            } else {
                a = mid;
            }
        }
        thresholds.push(b);
        steps.push(rounded(b));
    }
    let codes = steps.into_iter().map(final_code).collect();
    Ok(TanhTable { thresholds, codes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(s: &str) -> FxFormat {
        s.parse().unwrap()
    }

    #[test]
    fn tanh_table_equals_direct_quantization_for_every_input_code() {
        for (zin, out) in [
            (
                "ap_fixed<12,4,AP_TRN,AP_SAT>",
                "ap_fixed<10,2,AP_RND_CONV,AP_SAT>",
            ),
            ("ap_fixed<10,3>", "ap_fixed<8,1,AP_RND,AP_WRAP>"),
            ("ap_fixed<9,6>", "ap_fixed<6,1,AP_TRN_ZERO,AP_SAT_SYM>"),
            (
                "ap_fixed<14,5,AP_RND,AP_SAT>",
                "ap_fixed<12,3,AP_RND_CONV,AP_SAT>",
            ),
        ] {
            let (zf, of) = (fmt(zin), fmt(out));
            for (scale, offset) in [(1.0, 0.0), (2.0, 0.0), (0.75, 0.5)] {
                let t = tanh_table(&zf, &of, scale, offset).unwrap();
                for z in zf.raw_min()..=zf.raw_max() {
                    let v = quant::to_f64(z, &zf).tanh() * scale + offset;
                    let direct = quant::from_f64(v, &of).unwrap();
                    assert_eq!(
                        t.lookup(z),
                        direct,
                        "{zin} -> {out} x{scale}+{offset} at raw {z}"
                    );
                }
            }
        }
    }

    #[test]
    fn tanh_table_refuses_output_formats_too_fine_to_tabulate() {
        let e = tanh_table(&fmt("ap_fixed<32,8>"), &fmt("ap_fixed<32,2>"), 1.0, 0.0).unwrap_err();
        assert!(e.to_string().contains("fraction bits"), "{e}");
    }
}
