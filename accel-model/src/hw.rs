//! The hardware being modeled: an accelerator configuration (`HwConfig`) on an FPGA
//! (`Device`). Numbers come from TOML presets in `accel-model/presets/`, each with its
//! source; see `presets.rs` for loading.

use serde::{Deserialize, Serialize};

use crate::error::{positive_f64, positive_usize, ModelError};

/// How the N AAP cores share a phase's work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Parallelism {
    /// The cores split each layer (its input columns, or its outputs: see
    /// [`IntraLayerSplit`]) and share one batch: one vector finishes up to N times faster
    /// (FIXAR's inference mode).
    IntraLayer,
    /// Each core takes different samples of the batch (FIXAR's training mode); weight
    /// gradients are summed across cores.
    IntraBatch,
    /// Per phase, whichever of the two takes fewer cycles (FIXAR's adaptive parallelism).
    Adaptive,
}

impl Parallelism {
    /// Every mode, in the order reports list them.
    pub const ALL: [Parallelism; 3] = [
        Parallelism::IntraLayer,
        Parallelism::IntraBatch,
        Parallelism::Adaptive,
    ];

    pub fn parse(s: &str) -> Option<Parallelism> {
        match s.trim().to_ascii_lowercase().as_str() {
            "intra-layer" | "layer" => Some(Parallelism::IntraLayer),
            "intra-batch" | "batch" => Some(Parallelism::IntraBatch),
            "adaptive" => Some(Parallelism::Adaptive),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Parallelism::IntraLayer => "intra-layer",
            Parallelism::IntraBatch => "intra-batch",
            Parallelism::Adaptive => "adaptive",
        }
    }
}

/// How an intra-layer GEMM shares one layer among the cores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntraLayerSplit {
    /// FIXAR's: the layer's input columns over the cores, partial sums added by the
    /// cross-core adder tree.
    #[default]
    Inputs,
    /// Output neurons over the cores: each core finishes its own outputs, no reduction.
    Outputs,
}

/// On-chip RAM primitive holding the weight memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemKind {
    /// BRAM36 used as 1K x 36: one per 1024 32-bit words of a bank.
    Bram,
    /// UltraRAM 4K x 72: one per 4096 32-bit words of a bank (the upper half unused).
    Uram,
}

/// The weight memory: one store shared by all cores holding every online and target
/// network, behind one port that reads *or* writes `port_bits` a cycle. Intra-batch
/// GEMMs broadcast the tile it reads to every core; intra-layer GEMMs load a different
/// tile per core, so the cores take turns on the port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightMemory {
    pub banks: usize,
    /// 32-bit words per bank (an FXP16 word holds two weights).
    pub depth_words: usize,
    /// Bits read or written per cycle over all banks (one 32-bit word per bank and cycle).
    pub port_bits: usize,
    pub kind: MemKind,
    /// Whether update passes run on the port while weight-gradient GEMMs stream (true) or
    /// after the backward pass, one after the other (false).
    #[serde(default = "yes")]
    pub updates_behind_gradients: bool,
}

fn yes() -> bool {
    true
}

impl WeightMemory {
    pub fn capacity_words(&self) -> u64 {
        (self.banks * self.depth_words) as u64
    }

    /// 32-bit words the port moves per cycle.
    pub fn port_words(&self) -> u64 {
        (self.port_bits / 32) as u64
    }
}

/// The optimizer's state memory (Adam's moments), banked like the weight memory so the
/// update engine reads and writes one moment word per weight word it moves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerMemory {
    pub banks: usize,
    /// 32-bit words per bank.
    pub depth_words: usize,
    pub kind: MemKind,
}

/// Each core's activation/error buffer (line buffer + stored activations for backward).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Buffers {
    /// 32-bit words one core's buffer holds: inputs, outputs and the activations kept for
    /// backward of the core's share of the batch; what does not fit spills off chip.
    pub capacity_words: usize,
    /// Bits per cycle read when an error/activation tile is the stationary operand (weight
    /// gradients): each core's own line buffer.
    pub read_bits: usize,
    /// BRAM36 (1K x 32 used) or URAM (4K x 72, one 32-bit word a row).
    pub kind: MemKind,
}

/// Card power, bottom up: static power of the FPGA, the off-chip memory and the host
/// link, the board's own consumers, clocked logic (LUT/FF, scaling with clock), events
/// (MACs, on-chip words, off-chip bytes), all drawn through the board's regulators.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerParams {
    /// FPGA static (leakage) power, W.
    pub fpga_static_w: f64,
    /// Off-chip memory devices powered but idle (HBM stacks and PHY, or DDR), W.
    pub memory_w: f64,
    /// Host link (PCIe hard block and transceivers), W; 0 on boards without one.
    pub host_link_w: f64,
    /// Board consumers besides the FPGA and memory (management controller, clocking), W.
    pub board_w: f64,
    /// Fraction of the board's input power the regulators deliver (0..1].
    pub regulator_efficiency: f64,
    /// Clocked logic: LUT (with its routing) and FF (with clock tree) power, uW per MHz
    /// each at the default toggle rate.
    pub lut_uw_per_mhz: f64,
    pub ff_uw_per_mhz: f64,
    /// Energy of one MAC in FXP32 mode (both datapaths combined), pJ.
    pub mac_pj_fxp32: f64,
    /// Energy of one FXP16 MAC (one datapath), pJ.
    pub mac_pj_fxp16: f64,
    /// One 32-bit on-chip RAM access (weight memory, buffer, optimizer state), pJ.
    pub sram_pj_per_word: f64,
    /// One byte to or from off-chip memory, pJ.
    pub offchip_pj_per_byte: f64,
}

/// A fixed part of the design (platform interfaces) and its resources.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformPart {
    pub name: String,
    pub lut: u64,
    pub ff: u64,
    #[serde(default)]
    pub bram36: u64,
    #[serde(default)]
    pub dsp: u64,
}

/// FPGA resources per part of the design. DSPs are counted per PE; LUTs and FFs are
/// built bottom up from operand widths (`resources.rs` lists every unit and its width):
/// each adder, multiplier row or mux is so many bits, each bit costs `lut_per_adder_bit`
/// or `lut_per_mux_bit` LUTs, and every pipelined unit registers its result bits
/// (`ff_per_result_bit`). Nothing here is a per-component total.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceCosts {
    pub dsp_per_pe: usize,
    /// LUTs per bit of a ripple-carry adder/subtractor or of one row of an array
    /// multiplier, divider or square root (the partial-product AND folds into the LUT).
    pub lut_per_adder_bit: f64,
    /// LUTs per bit of a 2:1 multiplexer.
    pub lut_per_mux_bit: f64,
    /// FFs per result bit of a pipelined unit (one register stage per unit or row).
    pub ff_per_result_bit: f64,
    /// Bits of the weight operand of a PE multiplier (FIXAR: 32) and of its activation
    /// operand (FIXAR: 16; a 32-bit activation is two halves on the two multipliers).
    pub weight_bits: usize,
    pub activation_bits: usize,
    /// Width of the optimizer's datapath (Adam's moments and the weight), bits.
    pub optimizer_bits: usize,
    /// Address generators per core (weight, buffer, output, gradient streams), each a
    /// counter of `address_bits`.
    pub address_generators_per_core: usize,
    pub address_bits: usize,
    pub optimizer_dsp: usize,
    /// Interfaces of the platform (kernel interface, memory controller, host DMA).
    #[serde(default)]
    pub platform: Vec<PlatformPart>,
}

/// The host side of a training time step: the environment on the CPU, the accelerator
/// runtime's per-batch overhead, and the batch's transfer over the host link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostParams {
    /// Environment step time on the host, ms per time step.
    pub env_ms: f64,
    /// The accelerator runtime's fixed overhead per training batch (buffer allocation,
    /// kernel launch, synchronisation), ms.
    pub runtime_ms: f64,
    /// Effective host-link bandwidth for the batch transfer, GB/s.
    pub link_gbps: f64,
}

/// An FPGA device and its board, from the vendor data sheet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub part: String,
    pub luts: u64,
    pub ffs: u64,
    pub dsps: u64,
    pub bram36: u64,
    pub uram: u64,
    /// Off-chip memory bandwidth of the board, GB/s (1e9 bytes/s).
    pub offchip_gbps: f64,
    /// Board power limit, W, when the board has one.
    #[serde(default)]
    pub power_budget_w: Option<f64>,
    pub source: String,
}

/// One accelerator configuration on one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HwConfig {
    pub name: String,
    pub device: Device,
    /// AAP cores.
    pub cores: usize,
    /// PE array rows (the reduction dimension: activations broadcast along a row).
    pub pe_rows: usize,
    /// PE array columns (output neurons; partial sums accumulate down a column).
    pub pe_cols: usize,
    pub clock_mhz: f64,
    pub parallelism: Parallelism,
    /// What intra-layer GEMMs split over the cores.
    pub intra_layer_split: IntraLayerSplit,
    /// Off-chip bandwidth the design uses, GB/s.
    pub offchip_gbps: f64,
    pub weight_memory: WeightMemory,
    pub optimizer_memory: OptimizerMemory,
    pub buffers: Buffers,
    pub power: PowerParams,
    pub resources: ResourceCosts,
    pub host: HostParams,
}

/// Bits one weight-memory bank delivers a cycle: one 32-bit word (a BRAM36 or URAM row
/// holds one word in this layout), so the port is at most 32 bits x banks wide.
const BANK_PORT_BITS: usize = 32;

impl HwConfig {
    /// Rejects zero or negative sizes, clocks, bandwidths and powers, naming the field.
    pub fn validate(&self) -> Result<(), ModelError> {
        positive_usize("hw.cores", self.cores)?;
        positive_usize("hw.pe_rows", self.pe_rows)?;
        positive_usize("hw.pe_cols", self.pe_cols)?;
        positive_f64("hw.clock_mhz", self.clock_mhz, false)?;
        positive_f64("hw.offchip_gbps", self.offchip_gbps, false)?;
        let wm = &self.weight_memory;
        positive_usize("hw.weight_memory.banks", wm.banks)?;
        positive_usize("hw.weight_memory.depth_words", wm.depth_words)?;
        if wm.port_bits < 32 || !wm.port_bits.is_multiple_of(32) {
            return Err(ModelError::invalid(
                "hw.weight_memory.port_bits",
                wm.port_bits,
                "must be a positive multiple of 32 (whole 32-bit words per cycle)",
            ));
        }
        if wm.port_bits > wm.banks * BANK_PORT_BITS {
            return Err(ModelError::invalid(
                "hw.weight_memory.port_bits",
                wm.port_bits,
                format!(
                    "{} banks deliver at most {} bits a cycle (one 32-bit word per bank)",
                    wm.banks,
                    wm.banks * BANK_PORT_BITS
                ),
            ));
        }
        let om = &self.optimizer_memory;
        positive_usize("hw.optimizer_memory.banks", om.banks)?;
        positive_usize("hw.optimizer_memory.depth_words", om.depth_words)?;
        positive_usize("hw.buffers.capacity_words", self.buffers.capacity_words)?;
        if self.buffers.read_bits < 32 || !self.buffers.read_bits.is_multiple_of(32) {
            return Err(ModelError::invalid(
                "hw.buffers.read_bits",
                self.buffers.read_bits,
                "must be a positive multiple of 32 (whole 32-bit words per cycle)",
            ));
        }
        let r = &self.resources;
        for (field, v) in [
            ("hw.resources.weight_bits", r.weight_bits),
            ("hw.resources.activation_bits", r.activation_bits),
            ("hw.resources.optimizer_bits", r.optimizer_bits),
            ("hw.resources.address_bits", r.address_bits),
        ] {
            positive_usize(field, v)?;
            if v > 64 {
                return Err(ModelError::invalid(field, v, "must be at most 64 bits"));
            }
        }
        for (field, v) in [
            ("hw.resources.lut_per_adder_bit", r.lut_per_adder_bit),
            ("hw.resources.lut_per_mux_bit", r.lut_per_mux_bit),
            ("hw.resources.ff_per_result_bit", r.ff_per_result_bit),
        ] {
            positive_f64(field, v, true)?;
        }
        let p = &self.power;
        for (field, v) in [
            ("hw.power.fpga_static_w", p.fpga_static_w),
            ("hw.power.memory_w", p.memory_w),
            ("hw.power.host_link_w", p.host_link_w),
            ("hw.power.board_w", p.board_w),
            ("hw.power.lut_uw_per_mhz", p.lut_uw_per_mhz),
            ("hw.power.ff_uw_per_mhz", p.ff_uw_per_mhz),
            ("hw.power.mac_pj_fxp32", p.mac_pj_fxp32),
            ("hw.power.mac_pj_fxp16", p.mac_pj_fxp16),
            ("hw.power.sram_pj_per_word", p.sram_pj_per_word),
            ("hw.power.offchip_pj_per_byte", p.offchip_pj_per_byte),
            ("hw.host.env_ms", self.host.env_ms),
            ("hw.host.runtime_ms", self.host.runtime_ms),
        ] {
            positive_f64(field, v, true)?;
        }
        positive_f64("hw.host.link_gbps", self.host.link_gbps, false)?;
        let eff = p.regulator_efficiency;
        if !(eff.is_finite() && eff > 0.0 && eff <= 1.0) {
            return Err(ModelError::invalid(
                "hw.power.regulator_efficiency",
                eff,
                "must be in (0, 1]",
            ));
        }
        positive_f64("device.offchip_gbps", self.device.offchip_gbps, false)?;
        Ok(())
    }

    /// Clock period in seconds.
    pub fn cycle_s(&self) -> f64 {
        1e-6 / self.clock_mhz
    }

    /// Off-chip bytes per accelerator cycle.
    pub fn offchip_bytes_per_cycle(&self) -> f64 {
        self.offchip_gbps * 1e9 * self.cycle_s()
    }
}
