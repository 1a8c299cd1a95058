//! A multiplier-free PE (QFX's reason for weights that are sums of at most K signed
//! powers of two, `fixar qat --pow2-terms K`) against the multiplying PE, for the same
//! workload and the rest of the design unchanged.
//!
//! # The shift-add PE
//! Each of the PE's two `w x a` multipliers (DSPs in [`crate::resources::pe_bits`]'s PE)
//! becomes K terms in LUTs: per term a barrel shifter of the `a`-bit activation by the
//! digit's position (`ceil(log2 w)` stages of 2:1 multiplexers, `p = w + a` bits each)
//! and an adder/subtractor of `p` bits (K - 1 of them add the terms with their signs, one
//! negates the first term when its digit is negative), each term registered. The
//! stationary weight is stored as its K digits, `ceil(log2 w) + 2` bits each (position,
//! sign, non-zero), double-buffered like the weight word it replaces. The FXP32
//! recombination, the mode mux and the column's adder trees stay as in the multiplying
//! PE. No DSP.
//!
//! # Which work it can do
//! Only GEMMs whose stationary operand is a multiplier-free weight: the actor's forward,
//! i.e. action inference. Training's backward GEMMs multiply errors by activations and
//! weights, which are not multiplier-free, so the comparison is of the inference figures
//! (same cycles: one product per PE lane per cycle, pipelined).
//!
//! # Power
//! The multiplying PE's MAC event energy (`hw.power.mac_pj_*`, the DSP multiply and its
//! tree node) is dropped; the shifters' and adders' LUTs and registers are charged as all
//! other logic is, at the clock and the default toggle rate (`lut_uw_per_mhz`,
//! `ff_uw_per_mhz`). That is an assumption of the same standing as the preset's own
//! power coefficients.

use serde::{Deserialize, Serialize};

use crate::analytic::ceil_log2;
use crate::error::ModelError;
use crate::hw::HwConfig;
use crate::plan::Plan;
use crate::power::card_power;
use crate::resources::{fit, pe_bits, resources, LogicBits, Resources};
use crate::workload::{Precision, Workload};

/// What the comparison counts; printed with it.
pub const SHIFT_ADD_DEFINITION: &str = "shift-add PE = each w x a multiplier replaced by K \
barrel shifters (ceil(log2 w) mux stages of w + a bits) and K adder/subtractors of w + a bits \
in LUTs, weights stored as K digits of ceil(log2 w) + 2 bits, no DSP; it runs action inference \
only (training multiplies errors, which are not powers of two). Inference power drops the \
DSP MAC energy and charges the added LUTs and FFs at the clock like all other logic; the rest \
of the design is the same in both columns.";

/// DSP48E2s for one signed `w x a` multiplier (27 x 18 each, cascaded).
pub fn dsps_per_multiplier(w: usize, a: usize) -> usize {
    w.div_ceil(27) * a.div_ceil(18)
}

/// One shift-add PE of `hw`'s operand widths with `k` terms per weight.
pub fn shift_add_pe_bits(hw: &HwConfig, k: u32) -> LogicBits {
    let r = &hw.resources;
    let (w, a) = (r.weight_bits as f64, r.activation_bits as f64);
    let p = w + a;
    let k = k as f64;
    let stages = ceil_log2(r.weight_bits) as f64;
    let digits = k * (stages + 2.0);
    let mul = pe_bits(hw);
    // The multiplying PE's stationary word (mux w, registers 2w) becomes the digits.
    let lanes = 2.0;
    LogicBits {
        adder: mul.adder + lanes * k * p,
        mux: mul.mux - w + digits + lanes * k * p * stages,
        regs: mul.regs - 2.0 * w + 2.0 * digits + lanes * k * p,
    }
}

/// One column of the comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeSide {
    /// `multiplier` or `shift-add (K terms)`.
    pub pe: String,
    pub pe_dsp: u64,
    pub pe_lut: u64,
    pub pe_ff: u64,
    /// The whole design's.
    pub dsp: u64,
    pub lut: u64,
    pub ff: u64,
    pub fits: bool,
    pub inference_ips: f64,
    pub inference_power_w: f64,
    pub inference_ips_per_watt: f64,
}

/// The multiplying PE against the shift-add PE.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeComparison {
    pub terms: u32,
    pub weight_bits: usize,
    pub activation_bits: usize,
    pub pes: u64,
    pub multiplying: PeSide,
    pub shift_add: PeSide,
    pub definition: String,
}

/// `hw` with PE operands of `w x a` bits (DSPs per PE follow them), when given.
pub fn with_operand_bits(hw: &HwConfig, bits: Option<(usize, usize)>) -> HwConfig {
    let mut hw = hw.clone();
    if let Some((w, a)) = bits {
        hw.resources.weight_bits = w;
        hw.resources.activation_bits = a;
        hw.resources.dsp_per_pe = 2 * dsps_per_multiplier(w, a);
    }
    hw
}

/// Both PEs on `hw` (operands `bits`, default the preset's) for workload `w`'s action
/// inference; `k` must be in 1..=weight bits.
pub fn compare(
    w: &Workload,
    hw: &HwConfig,
    k: u32,
    bits: Option<(usize, usize)>,
) -> Result<PeComparison, ModelError> {
    let hw = with_operand_bits(hw, bits);
    let r = &hw.resources;
    for (field, v) in [
        ("pe weight bits", r.weight_bits),
        ("pe activation bits", r.activation_bits),
    ] {
        if !(2..=64).contains(&v) {
            return Err(ModelError::invalid(field, v, "must be between 2 and 64"));
        }
    }
    if k == 0 || k as usize > r.weight_bits {
        return Err(ModelError::invalid(
            "pow2 terms",
            k,
            format!("must be between 1 and the weight width ({})", r.weight_bits),
        ));
    }
    w.validate()?;
    hw.validate()?;
    let plan = Plan::new(w);
    let res = resources(&hw);
    let perf = plan.performance(&hw);
    let pes = (hw.cores * hw.pe_rows * hw.pe_cols) as u64;
    let inf = &perf.phases[0];
    let inference_s = inf.cycles as f64 * hw.cycle_s();
    let ips = w.inference_batch as f64 / inference_s;
    let mul_pe = pe_bits(&hw);
    let rc = &hw.resources;
    let round = |x: f64| x.round() as u64;
    // One column: the PE's name, DSPs and logic, the design's resources, inference power.
    let side =
        |pe: String, pe_dsp: usize, bits: &LogicBits, res: &Resources, power_w: f64| PeSide {
            pe,
            pe_dsp: pe_dsp as u64,
            pe_lut: round(bits.lut(rc)),
            pe_ff: round(bits.ff(rc)),
            dsp: res.dsp,
            lut: res.lut,
            ff: res.ff,
            fits: fit(&hw, res).fits,
            inference_ips: ips,
            inference_power_w: power_w,
            inference_ips_per_watt: ips / power_w,
        };
    let multiplying = side(
        "multiplier".into(),
        rc.dsp_per_pe,
        &mul_pe,
        &res,
        perf.inference_power_w,
    );
    let sa_pe = shift_add_pe_bits(&hw, k);
    let (d_lut, d_ff) = (
        pes as f64 * (sa_pe.lut(rc) - mul_pe.lut(rc)),
        pes as f64 * (sa_pe.ff(rc) - mul_pe.ff(rc)),
    );
    let mut sa_res = res.clone();
    sa_res.dsp -= pes * rc.dsp_per_pe as u64;
    sa_res.lut = round(res.lut as f64 + d_lut);
    sa_res.ff = round(res.ff as f64 + d_ff);
    let mac_pj = match w.precision {
        Precision::Fxp32 => hw.power.mac_pj_fxp32,
        Precision::Fxp16 => hw.power.mac_pj_fxp16,
    };
    let event_j = inf.dynamic_energy_j - 1e-12 * inf.macs as f64 * mac_pj;
    let power = card_power(&hw, (sa_res.lut, sa_res.ff), event_j, inference_s);
    let shift_add = side(
        format!("shift-add ({k} terms)"),
        0,
        &sa_pe,
        &sa_res,
        power.total_w,
    );
    Ok(PeComparison {
        terms: k,
        weight_bits: rc.weight_bits,
        activation_bits: rc.activation_bits,
        pes,
        multiplying,
        shift_add,
        definition: SHIFT_ADD_DEFINITION.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    fn setup() -> (Workload, HwConfig) {
        let p = presets::load("fixar-u50").unwrap();
        (p.workload.unwrap(), p.hw)
    }

    #[test]
    fn the_shift_add_pe_has_no_dsp_and_grows_with_k_and_the_widths() {
        let (w, hw) = setup();
        let c1 = compare(&w, &hw, 1, Some((8, 8))).unwrap();
        let c2 = compare(&w, &hw, 2, Some((8, 8))).unwrap();
        let c2w = compare(&w, &hw, 2, Some((16, 16))).unwrap();
        assert_eq!((c2.shift_add.pe_dsp, c2.multiplying.pe_dsp), (0, 2));
        assert_eq!(c2.multiplying.dsp - c2.shift_add.dsp, 2 * c2.pes);
        assert!(c1.shift_add.pe_lut < c2.shift_add.pe_lut);
        assert!(c2.shift_add.pe_lut < c2w.shift_add.pe_lut);
        assert!(c2.shift_add.lut > c2.multiplying.lut);
        let added = (c2.shift_add.lut - c2.multiplying.lut) as f64 / c2.pes as f64;
        let per_pe = (c2.shift_add.pe_lut - c2.multiplying.pe_lut) as f64;
        assert!((added - per_pe).abs() < 1.0, "{added} vs {per_pe}");
        // Same work, same cycles.
        assert_eq!(c2.shift_add.inference_ips, c2.multiplying.inference_ips);
        // By hand at 8 x 8, K = 2: 2 lanes x 2 terms x (16-bit adder + 3 stages x 16-bit mux).
        let mul = pe_bits(&with_operand_bits(&hw, Some((8, 8))));
        let sa = shift_add_pe_bits(&with_operand_bits(&hw, Some((8, 8))), 2);
        assert_eq!(sa.adder - mul.adder, 64.0);
        assert_eq!(sa.mux - mul.mux, -8.0 + 10.0 + 192.0);
    }

    #[test]
    fn dsp_count_follows_the_dsp48e2_operand_limits() {
        assert_eq!(dsps_per_multiplier(32, 16), 2);
        assert_eq!(dsps_per_multiplier(27, 18), 1);
        assert_eq!(dsps_per_multiplier(8, 8), 1);
        assert_eq!(dsps_per_multiplier(32, 32), 4);
    }

    #[test]
    fn bad_k_and_widths_name_what_is_wrong() {
        let (w, hw) = setup();
        let e = compare(&w, &hw, 0, None).unwrap_err().to_string();
        assert!(
            e.contains("pow2 terms") && e.contains("weight width (32)"),
            "{e}"
        );
        let e = compare(&w, &hw, 9, Some((8, 8))).unwrap_err().to_string();
        assert!(e.contains("(8)"), "{e}");
        let e = compare(&w, &hw, 1, Some((1, 8))).unwrap_err().to_string();
        assert!(e.contains("pe weight bits"), "{e}");
    }
}
