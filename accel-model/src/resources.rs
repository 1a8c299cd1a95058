//! FPGA resources of a configuration, per component of the design (the rows of FIXAR's
//! Table I: PEs, on-chip memory, optimizer, control, platform interfaces), whether they
//! fit the device, and whether a workload's operands fit the memories that hold them.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::hw::{HwConfig, MemKind};
use crate::plan::Plan;

/// Resources of one component of the design.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ComponentResources {
    pub name: String,
    pub lut: u64,
    pub ff: u64,
    pub bram36: u64,
    pub uram: u64,
    pub dsp: u64,
}

/// FPGA resources of one configuration: totals and the components they add up from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub dsp: u64,
    pub lut: u64,
    pub ff: u64,
    pub bram36: u64,
    pub uram: u64,
    pub components: Vec<ComponentResources>,
}

/// Whether the configuration fits its device, and by how much.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub device: String,
    pub fits: bool,
    /// Resources (or the board power limit) exceeded, e.g. `dsp 6144 > 5952`.
    pub exceeded: Vec<String>,
    /// Used / available per resource, 0..1 when it fits.
    pub dsp_util: f64,
    pub lut_util: f64,
    pub ff_util: f64,
    pub bram_util: f64,
    pub uram_util: f64,
}

/// Words one primitive holds in this design's layout: BRAM36 as 1K x 32 (of 36) bits,
/// UltraRAM as 4K x 32 (of 72) bits, one word a row so every bank delivers a word a cycle.
fn words_per_primitive(kind: MemKind) -> u64 {
    match kind {
        MemKind::Bram => 1024,
        MemKind::Uram => 4096,
    }
}

/// (BRAM36, URAM) of `banks` banks of `depth` words each.
fn memory_primitives(kind: MemKind, banks: u64, depth: u64) -> (u64, u64) {
    let n = banks * depth.div_ceil(words_per_primitive(kind));
    match kind {
        MemKind::Bram => (n, 0),
        MemKind::Uram => (0, n),
    }
}

/// LUTs and FFs of one unit counted in bits: `adder` bits of adders (and array-multiplier,
/// divider or square-root rows), `mux` bits of 2:1 multiplexers, `regs` register bits.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LogicBits {
    pub adder: f64,
    pub mux: f64,
    pub regs: f64,
}

impl LogicBits {
    pub fn lut(&self, r: &crate::hw::ResourceCosts) -> f64 {
        self.adder * r.lut_per_adder_bit + self.mux * r.lut_per_mux_bit
    }

    pub fn ff(&self, r: &crate::hw::ResourceCosts) -> f64 {
        self.regs * r.ff_per_result_bit
    }
}

/// One PE, from its operand widths (w = weight bits, a = activation bits, p = w + a the
/// product, R = PE rows): two w x a multipliers in DSPs (no LUTs); the FXP32 recombination
/// adder (upper product shifted by a, added to the lower: p bits); the mux choosing one
/// recombined or two separate products (p bits); the mux of the double-buffered
/// stationary register (w bits); and the PE's share of its column's two adder trees
/// ((R-1)/R nodes per lane of p + log2 R bits). Registers: the two stationary words, the
/// two activation halves passed along the row, the two products and the tree nodes.
pub fn pe_bits(hw: &HwConfig) -> LogicBits {
    let r = &hw.resources;
    let (w, a) = (r.weight_bits as f64, r.activation_bits as f64);
    let p = w + a;
    let rows = hw.pe_rows as f64;
    let tree = 2.0 * (rows - 1.0) / rows * (p + crate::analytic::ceil_log2(hw.pe_rows) as f64);
    LogicBits {
        adder: p + tree,
        mux: p + w,
        regs: 2.0 * w + 2.0 * a + 2.0 * p + tree,
    }
}

/// One core's control and post-processing: per output column and lane (C x 2), the
/// output-buffer accumulator (2w bits), the bias adder and the ReLU/derivative mask (w
/// bits each), and Algorithm 1's activation quantizer Q(A) = floor(A / delta) + z (A times
/// 1/delta as an a-row array multiplier of w bits, then z added: a bits); the address
/// generators (counters); the 512-bit activation line buffer's row select (`read_bits`).
pub fn control_bits(hw: &HwConfig) -> LogicBits {
    let r = &hw.resources;
    let (w, a) = (r.weight_bits as f64, r.activation_bits as f64);
    let columns = 2.0 * hw.pe_cols as f64;
    let per_column = 2.0 * w + w + a * w + a;
    let addresses = (r.address_generators_per_core * r.address_bits) as f64;
    let adder = columns * per_column + addresses;
    let mux = columns * w + hw.buffers.read_bits as f64;
    LogicBits {
        adder,
        mux,
        regs: adder + hw.buffers.read_bits as f64,
    }
}

/// The cross-core adder tree of split reductions: (N - 1) x C adders of 2w bits.
pub fn reduction_bits(hw: &HwConfig) -> LogicBits {
    let w = hw.resources.weight_bits as f64;
    let adder = (hw.cores.saturating_sub(1) * hw.pe_cols) as f64 * 2.0 * w;
    LogicBits {
        adder,
        mux: 0.0,
        regs: adder,
    }
}

/// One lane of the Adam engine (one per word of the weight port), b = optimizer bits, its
/// arithmetic in LUTs (the optimizer's few DSPs serve per-step scalars): g^2 as a b x b
/// array multiplier (b rows of b bits), m / (sqrt(v) + eps) as a b-row divider (b + 1
/// bits a row), sqrt(v) as b/2 rows of b bits, the two moment averages (g - m, times the
/// constant 1 - beta by three shift-and-add adders, plus m: 5 adders of b bits each), the
/// step (a constant learning rate by three shift-and-add adders, eps and the weight
/// subtraction: 5 adders). Every row and adder registers its result.
pub fn adam_lane_bits(hw: &HwConfig) -> LogicBits {
    let b = hw.resources.optimizer_bits as f64;
    let adder = b * b + b * (b + 1.0) + b / 2.0 * b + 2.0 * 5.0 * b + 5.0 * b;
    LogicBits {
        adder,
        mux: 0.0,
        regs: adder,
    }
}

/// Read multiplexers of `banks` banks of `prims` primitives each: a 2:1 mux tree of
/// 32-bit words over each bank's primitives.
fn memory_mux_bits(banks: u64, prims: u64) -> f64 {
    (banks * prims.saturating_sub(1) * 32) as f64
}

/// (LUT, FF, BRAM36, URAM, DSP) of the design's own components, in [`COMPONENTS`] order.
fn core_components(hw: &HwConfig) -> [[u64; 5]; 4] {
    let r = &hw.resources;
    let n = hw.cores as u64;
    let pes = n * (hw.pe_rows * hw.pe_cols) as u64;
    let wm = &hw.weight_memory;
    let om = &hw.optimizer_memory;
    let (wb, wu) = memory_primitives(wm.kind, wm.banks as u64, wm.depth_words as u64);
    let (ob, ou) = memory_primitives(om.kind, om.banks as u64, om.depth_words as u64);
    let (bb, bu) = memory_primitives(hw.buffers.kind, n, hw.buffers.capacity_words as u64);
    let lanes = wm.port_words();
    let per_bank = |total: u64, banks: u64| total / banks.max(1);
    let mem_mux = memory_mux_bits(wm.banks as u64, per_bank(wb + wu, wm.banks as u64))
        + memory_mux_bits(om.banks as u64, per_bank(ob + ou, om.banks as u64))
        + memory_mux_bits(n, per_bank(bb + bu, n));
    let pe = pe_bits(hw);
    let ctl = control_bits(hw);
    let red = reduction_bits(hw);
    let adam = adam_lane_bits(hw);
    let round = |x: f64| x.round() as u64;
    [
        [
            round(pes as f64 * pe.lut(r)),
            round(pes as f64 * pe.ff(r)),
            0,
            0,
            pes * r.dsp_per_pe as u64,
        ],
        [
            round(mem_mux * r.lut_per_mux_bit),
            0,
            wb + ob + bb,
            wu + ou + bu,
            0,
        ],
        [
            round(lanes as f64 * adam.lut(r)),
            round(lanes as f64 * adam.ff(r)),
            0,
            0,
            r.optimizer_dsp as u64,
        ],
        [
            round(n as f64 * ctl.lut(r) + red.lut(r)),
            round(n as f64 * ctl.ff(r) + red.ff(r)),
            0,
            0,
            0,
        ],
    ]
}

/// Names of the design's own components (the platform parts follow them).
const COMPONENTS: [&str; 4] = ["PEs", "on-chip memory", "optimizer", "control"];

/// LUTs and FFs of the whole design, without building the per-component list (the
/// power model needs them for every sweep point).
pub fn logic_counts(hw: &HwConfig) -> (u64, u64) {
    let own = core_components(hw);
    let platform = &hw.resources.platform;
    (
        own.iter().map(|c| c[0]).sum::<u64>() + platform.iter().map(|p| p.lut).sum::<u64>(),
        own.iter().map(|c| c[1]).sum::<u64>() + platform.iter().map(|p| p.ff).sum::<u64>(),
    )
}

/// Resources of a configuration from its per-part costs and memory sizes.
pub fn resources(hw: &HwConfig) -> Resources {
    let mut components: Vec<ComponentResources> = COMPONENTS
        .iter()
        .zip(core_components(hw))
        .map(|(name, [lut, ff, bram36, uram, dsp])| ComponentResources {
            name: name.to_string(),
            lut,
            ff,
            bram36,
            uram,
            dsp,
        })
        .collect();
    components.extend(hw.resources.platform.iter().map(|p| ComponentResources {
        name: p.name.clone(),
        lut: p.lut,
        ff: p.ff,
        bram36: p.bram36,
        dsp: p.dsp,
        uram: 0,
    }));
    let sum = |f: fn(&ComponentResources) -> u64| components.iter().map(f).sum::<u64>();
    Resources {
        dsp: sum(|c| c.dsp),
        lut: sum(|c| c.lut),
        ff: sum(|c| c.ff),
        bram36: sum(|c| c.bram36),
        uram: sum(|c| c.uram),
        components,
    }
}

/// Used against available resources of the configuration's device.
pub fn fit(hw: &HwConfig, res: &Resources) -> Fit {
    let d = &hw.device;
    let mut exceeded = Vec::new();
    let mut util = |name: &str, used: u64, avail: u64| {
        if used > avail {
            exceeded.push(format!("{name} {used} > {avail}"));
        }
        if avail == 0 {
            if used == 0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            used as f64 / avail as f64
        }
    };
    let dsp_util = util("dsp", res.dsp, d.dsps);
    let lut_util = util("lut", res.lut, d.luts);
    let ff_util = util("ff", res.ff, d.ffs);
    let bram_util = util("bram36", res.bram36, d.bram36);
    let uram_util = util("uram", res.uram, d.uram);
    Fit {
        device: d.id.clone(),
        fits: exceeded.is_empty(),
        exceeded,
        dsp_util,
        lut_util,
        ff_util,
        bram_util,
        uram_util,
    }
}

/// Checks that the workload's operands fit the memories that must hold them: every
/// weight in the weight memory, the optimizer's state in its memory, and at least one
/// sample's activations in each core's buffer (a larger share of the batch spills off
/// chip, see [`spill_words`]).
pub fn check_memories(plan: &Plan, hw: &HwConfig) -> Result<(), ModelError> {
    let cap = hw.weight_memory.capacity_words();
    let (layer, words) = &plan.largest_layer;
    if *words > cap {
        let field = if layer.starts_with("actor") {
            "workload.actor_hidden"
        } else {
            "workload.critic_hidden"
        };
        return Err(ModelError::TooLarge {
            field: field.to_string(),
            what: format!("{layer} weights"),
            needed: *words,
            memory: "the weight memory (hw.weight_memory.banks x depth_words)".into(),
            capacity: cap,
        });
    }
    if plan.weight_words > cap {
        return Err(ModelError::TooLarge {
            field: "hw.weight_memory.depth_words".into(),
            what: "all online and target networks' weights".into(),
            needed: plan.weight_words,
            memory: "the weight memory".into(),
            capacity: cap,
        });
    }
    let om = &hw.optimizer_memory;
    let ocap = (om.banks * om.depth_words) as u64;
    if plan.optimizer_words > ocap {
        return Err(ModelError::TooLarge {
            field: "hw.optimizer_memory.depth_words".into(),
            what: "the optimizer's state of every online network".into(),
            needed: plan.optimizer_words,
            memory: "the optimizer memory".into(),
            capacity: ocap,
        });
    }
    let buf = hw.buffers.capacity_words as u64;
    if plan.buffer_words_per_sample > buf {
        return Err(ModelError::TooLarge {
            field: "workload.actor_hidden / critic_hidden".into(),
            what: "one sample's activations and errors".into(),
            needed: plan.buffer_words_per_sample,
            memory: "the activation buffer (hw.buffers.capacity_words)".into(),
            capacity: buf,
        });
    }
    Ok(())
}

/// Words of stored activations per iteration that do not fit the cores' buffers and go
/// to off-chip memory (written in the forward passes, read back in backward).
pub fn spill_words(plan: &Plan, hw: &HwConfig) -> u64 {
    let per_core = plan.workload.batch.div_ceil(hw.cores) as u64 * plan.buffer_words_per_sample;
    per_core.saturating_sub(hw.buffers.capacity_words as u64) * hw.cores as u64
}
