//! The hardware being modeled: an accelerator configuration (`HwConfig`) on an FPGA
//! (`Device`). Numbers come from TOML presets in `accel-model/presets/`, each with its
//! source; see `presets.rs` for loading.

use serde::{Deserialize, Serialize};

use crate::error::{positive_f64, positive_usize, ModelError};

/// How the N AAP cores share a phase's work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Parallelism {
    /// The cores split a layer's output neurons (column tiles) and share one batch: one
    /// batch finishes about N times faster (FIXAR's inference mode).
    IntraLayer,
    /// Each core takes different samples of the batch (FIXAR's training mode); weight
    /// gradients are summed across cores.
    IntraBatch,
    /// Per phase, whichever of the two takes fewer cycles (FIXAR's adaptive parallelism).
    Adaptive,
}

impl Parallelism {
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

/// On-chip RAM primitive holding the weight memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemKind {
    /// BRAM36 used as 1K x 36: one per 1024 32-bit words of a bank.
    Bram,
    /// UltraRAM 4K x 72: one per 4096 32-bit words of a bank (the upper half unused).
    Uram,
}

/// Each core's weight memory: a replica of every network's weights (intra-batch needs
/// all of them in every core; updates are written to all replicas at once).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightMemory {
    pub banks: usize,
    /// 32-bit words per bank (an FXP16 word holds two weights).
    pub depth_words: usize,
    /// Bits read per cycle over all banks; these feed the PE array's weight registers.
    pub read_bits: usize,
    /// Bits written per cycle over all banks (weight updates).
    pub write_bits: usize,
    pub kind: MemKind,
}

impl WeightMemory {
    pub fn capacity_words(&self) -> u64 {
        (self.banks * self.depth_words) as u64
    }
}

/// Each core's activation/error buffer (line buffer + stored activations for backward).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Buffers {
    /// 32-bit words one core's buffer holds: inputs, outputs and the activations kept for
    /// backward of the core's share of the batch.
    pub capacity_words: usize,
    /// Bits per cycle read when an error/activation tile is the stationary operand (weight
    /// gradients) — the same 512-bit path as the weight memory in the presets.
    pub read_bits: usize,
    /// BRAM36 (1K x 32 used) or URAM (4K x 72, two 32-bit words a row).
    pub kind: MemKind,
}

/// Power parameters. Dynamic energy is counted per event; the clock tree and control of
/// an instantiated core burn `core_w` (at `ref_clock_mhz`, scaling with clock) whether its
/// PEs are busy or not, which is why energy per inference falls as utilization rises.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerParams {
    /// Device static (leakage) power, W.
    pub static_w: f64,
    /// Shell/infrastructure dynamic power independent of the core count (host interface,
    /// memory controller, control processor), W at `ref_clock_mhz`.
    pub shell_w: f64,
    /// Clock tree, control and idle toggling of one AAP core, W at `ref_clock_mhz`.
    pub core_w: f64,
    pub ref_clock_mhz: f64,
    /// Energy of one MAC in FXP32 mode (both datapaths combined), pJ.
    pub mac_pj_fxp32: f64,
    /// Energy of one FXP16 MAC (one datapath), pJ.
    pub mac_pj_fxp16: f64,
    /// One 32-bit on-chip RAM access (weight memory or buffer), pJ.
    pub sram_pj_per_word: f64,
    /// One byte to or from off-chip memory, pJ.
    pub offchip_pj_per_byte: f64,
}

/// FPGA resources per part of the design.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceCosts {
    pub dsp_per_pe: usize,
    pub lut_per_pe: usize,
    pub ff_per_pe: usize,
    /// Control, line buffer, post-processing (activation, derivative) per core.
    pub lut_per_core: usize,
    pub ff_per_core: usize,
    /// Platform shell, host interface, memory controller, update unit.
    pub lut_shell: usize,
    pub ff_shell: usize,
    pub bram_shell: usize,
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
    /// Off-chip bandwidth the design uses, GB/s.
    pub offchip_gbps: f64,
    pub weight_memory: WeightMemory,
    pub buffers: Buffers,
    pub power: PowerParams,
    pub resources: ResourceCosts,
}

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
        positive_usize("hw.weight_memory.write_bits", wm.write_bits)?;
        if wm.read_bits < 32 {
            return Err(ModelError::invalid(
                "hw.weight_memory.read_bits",
                wm.read_bits,
                "must be at least 32 (one weight word per cycle)",
            ));
        }
        positive_usize("hw.buffers.capacity_words", self.buffers.capacity_words)?;
        if self.buffers.read_bits < 32 {
            return Err(ModelError::invalid(
                "hw.buffers.read_bits",
                self.buffers.read_bits,
                "must be at least 32 (one word per cycle)",
            ));
        }
        let p = &self.power;
        positive_f64("hw.power.static_w", p.static_w, true)?;
        positive_f64("hw.power.shell_w", p.shell_w, true)?;
        positive_f64("hw.power.core_w", p.core_w, true)?;
        positive_f64("hw.power.ref_clock_mhz", p.ref_clock_mhz, false)?;
        positive_f64("hw.power.mac_pj_fxp32", p.mac_pj_fxp32, true)?;
        positive_f64("hw.power.mac_pj_fxp16", p.mac_pj_fxp16, true)?;
        positive_f64("hw.power.sram_pj_per_word", p.sram_pj_per_word, true)?;
        positive_f64("hw.power.offchip_pj_per_byte", p.offchip_pj_per_byte, true)?;
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
