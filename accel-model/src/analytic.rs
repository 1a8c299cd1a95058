//! The analytic cycle model: closed-form cycle counts from tiling each GEMM onto the PE
//! array, the parallelism mapping per phase, and the energy events they cause.
//!
//! # The array and its schedule (shared with the simulator, which must agree)
//! A core is an R x C PE array. Each PE holds one 32-bit stationary word: one FXP32
//! weight, or two FXP16 weights for two different output neurons (its two datapaths), so
//! a tile covers R inputs x C*lanes outputs. Each cycle one row of the streamed operand
//! (one sample) enters: activation r is broadcast along row r, every PE multiplies, and
//! each column sums its R products in a pipelined adder tree; after `latency` cycles the
//! column sum is added to the output buffer. The stationary registers are double
//! buffered: the next tile loads (`read_bits` per cycle) while the current one streams.
//! So a core running `tiles` tiles over `m` streamed rows takes
//! `ld + (tiles - 1) * max(m, ld) + m + latency` cycles, with `ld = ceil(32 R C / read_bits)`
//! and `latency = 2 + ceil(log2 R)` (multiply, adder tree, accumulate). GEMMs of a phase
//! run one after another.

use serde::{Deserialize, Serialize};

use crate::hw::{HwConfig, Parallelism};
use crate::plan::{BatchAxis, Gemm, Op, ParamPass, Phase, PhasePlan, Stationary};
use crate::workload::Precision;

/// A concrete mapping of one GEMM onto the cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    /// Column tiles dealt round-robin to the cores; every core streams all m rows.
    IntraLayer,
    /// The batch split over `active` cores (rows for forward/input-error GEMMs, the
    /// reduction for weight gradients, whose partial sums are then added across cores).
    IntraBatch { active: usize },
}

pub(crate) fn ceil_log2(x: usize) -> u64 {
    if x <= 1 {
        0
    } else {
        (usize::BITS - (x - 1).leading_zeros()) as u64
    }
}

fn div_ceil(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}

/// The PE array geometry of one core in one datapath mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayGeom {
    pub cores: usize,
    pub rows: usize,
    pub cols: usize,
    pub lanes: usize,
    /// Cycles to load one stationary tile from the weight memory.
    pub weight_load: u64,
    /// Cycles to load one stationary tile from the activation/error buffer.
    pub buffer_load: u64,
    pub weight_read_bits: usize,
    pub buffer_read_bits: usize,
    /// Cycles from a row entering the array to its column sums reaching the output buffer.
    pub latency: u64,
}

/// Cycles and energy events of one GEMM (or a phase: the sum of its GEMMs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub cycles: u64,
    pub macs: u64,
    /// Cycles the array waits for stationary tiles (first load + loads longer than a tile's
    /// streaming) on the slowest core.
    pub load_stall_cycles: u64,
    /// Cross-core gradient reduction cycles.
    pub reduction_cycles: u64,
    /// 32-bit on-chip RAM accesses over all cores.
    pub sram_words: u64,
    pub offchip_bytes: u64,
}

impl Cost {
    fn add(&mut self, o: &Cost) {
        self.cycles += o.cycles;
        self.macs += o.macs;
        self.load_stall_cycles += o.load_stall_cycles;
        self.reduction_cycles += o.reduction_cycles;
        self.sram_words += o.sram_words;
        self.offchip_bytes += o.offchip_bytes;
    }
}

impl ArrayGeom {
    pub fn new(hw: &HwConfig, precision: Precision) -> ArrayGeom {
        let tile_bits = 32 * hw.pe_rows * hw.pe_cols;
        ArrayGeom {
            cores: hw.cores,
            rows: hw.pe_rows,
            cols: hw.pe_cols,
            lanes: precision.lanes(),
            weight_load: div_ceil(tile_bits, hw.weight_memory.read_bits) as u64,
            buffer_load: div_ceil(tile_bits, hw.buffers.read_bits) as u64,
            weight_read_bits: hw.weight_memory.read_bits,
            buffer_read_bits: hw.buffers.read_bits,
            latency: 2 + ceil_log2(hw.pe_rows),
        }
    }

    /// Output neurons one tile covers.
    pub fn tile_cols(&self) -> usize {
        self.cols * self.lanes
    }

    pub fn load_cycles(&self, s: Stationary) -> u64 {
        match s {
            Stationary::Weights => self.weight_load,
            Stationary::Buffer => self.buffer_load,
        }
    }

    /// Bits per cycle the stationary operand's memory delivers.
    pub fn read_bits(&self, s: Stationary) -> usize {
        match s {
            Stationary::Weights => self.weight_read_bits,
            Stationary::Buffer => self.buffer_read_bits,
        }
    }

    /// Cycles for one core to stream `m` rows through `tiles` tiles.
    pub fn core_cycles(&self, m: usize, tiles: usize, ld: u64) -> u64 {
        if m == 0 || tiles == 0 {
            return 0;
        }
        let m = m as u64;
        ld + (tiles as u64 - 1) * m.max(ld) + m + self.latency
    }

    /// Cycles of summing `active` cores' m x n partial results: a pipelined adder tree
    /// over the cores takes one output tile row (C*lanes values) per cycle.
    pub fn reduction_cycles(&self, m: usize, n: usize, active: usize) -> u64 {
        if active <= 1 {
            return 0;
        }
        div_ceil(m * n, self.tile_cols()) as u64 + ceil_log2(active)
    }

    /// The cost of one GEMM under a mapping.
    pub fn gemm_cost(&self, g: &Gemm, mapping: Mapping) -> Cost {
        let ld = self.load_cycles(g.stationary);
        let (r, ce) = (self.rows, self.tile_cols());
        let tk = div_ceil(g.k, r);
        let tn = div_ceil(g.n, ce);
        let stall = |m: usize, tiles: usize| {
            if m == 0 || tiles == 0 {
                0
            } else {
                ld + (tiles as u64 - 1) * ld.saturating_sub(m as u64)
            }
        };
        // On-chip traffic: stationary tile words, broadcast activations, partial sums
        // read and written back.
        let traffic =
            |tiles: usize, m: usize| (tiles * (r * self.cols + m * (r + 2 * self.cols))) as u64;
        let mut c = Cost {
            macs: g.macs(),
            ..Cost::default()
        };
        match mapping {
            Mapping::IntraLayer => {
                let tiles = tk * div_ceil(tn, self.cores);
                c.cycles = self.core_cycles(g.m, tiles, ld);
                c.load_stall_cycles = stall(g.m, tiles);
                c.sram_words = traffic(tk * tn, g.m);
            }
            Mapping::IntraBatch { active } => match g.batch_axis {
                BatchAxis::M => {
                    let m = div_ceil(g.m, active);
                    c.cycles = self.core_cycles(m, tk * tn, ld);
                    c.load_stall_cycles = stall(m, tk * tn);
                    let busy = active.min(g.m);
                    c.sram_words = (busy * tk * tn * r * self.cols) as u64
                        + (tk * tn * g.m * (r + 2 * self.cols)) as u64;
                }
                BatchAxis::K => {
                    let k = div_ceil(g.k, active);
                    let tiles = div_ceil(k, r) * tn;
                    let red = self.reduction_cycles(g.m, g.n, active.min(g.k));
                    c.cycles = self.core_cycles(g.m, tiles, ld) + red;
                    c.load_stall_cycles = stall(g.m, tiles);
                    c.reduction_cycles = red;
                    let busy = active.min(g.k);
                    c.sram_words = busy as u64 * traffic(tiles, g.m)
                        + (g.m * g.n * busy.saturating_sub(1)) as u64;
                }
            },
        }
        c
    }

    /// The intra-batch mapping of `g` on at most `self.cores` cores with the fewest
    /// cycles (a reduction over cores costs cycles, so fewer cores can be faster; this
    /// also makes cycles never rise with the core count).
    pub fn best_intra_batch(&self, g: &Gemm) -> (Mapping, Cost) {
        match g.batch_axis {
            // Fewer rows per core never costs more: use every core that gets a row.
            BatchAxis::M => {
                let map = Mapping::IntraBatch {
                    active: self.cores.min(g.m.max(1)),
                };
                (map, self.gemm_cost(g, map))
            }
            // The tile count only falls at a = ceil(k / (q R)) for q row-tiles per core;
            // between those, more cores only add reduction: try just those counts.
            BatchAxis::K => {
                let limit = self.cores.min(g.k.max(1));
                let mut best = None::<(Mapping, Cost)>;
                let tk = div_ceil(g.k, self.rows).max(1);
                for q in (1..=tk).rev() {
                    let active = div_ceil(g.k, q * self.rows).clamp(1, limit);
                    let map = Mapping::IntraBatch { active };
                    let cost = self.gemm_cost(g, map);
                    if best.is_none_or(|(_, b)| cost.cycles < b.cycles) {
                        best = Some((map, cost));
                    }
                }
                best.expect("at least one candidate")
            }
        }
    }

    /// Cost and per-GEMM mappings of a phase's GEMMs under one concrete mode.
    pub fn phase_gemms(&self, ops: &[Op], intra_layer: bool) -> (Cost, Vec<Mapping>) {
        let mut total = Cost::default();
        let mut maps = Vec::new();
        for op in ops {
            if let Op::Gemm(g) = op {
                let (map, cost) = if intra_layer {
                    (Mapping::IntraLayer, self.gemm_cost(g, Mapping::IntraLayer))
                } else {
                    self.best_intra_batch(g)
                };
                total.add(&cost);
                maps.push(map);
            }
        }
        (total, maps)
    }
}

/// Cycles and traffic of a parameter pass: writes go to every core's replica at once
/// through the weight memory's write port; optimizer state streams off-chip; the slower
/// of the two decides.
pub fn param_pass_cost(p: &ParamPass, hw: &HwConfig, precision: Precision) -> Cost {
    let bits = precision.bits() as u64;
    let onchip =
        (p.params * p.writes_per_param * bits).div_ceil(hw.weight_memory.write_bits as u64);
    let offchip_bytes = p.params * p.offchip_words_per_param * bits / 8;
    let offchip = (offchip_bytes as f64 / hw.offchip_bytes_per_cycle()).ceil() as u64;
    let per_word = 32 / bits;
    Cost {
        cycles: onchip.max(offchip),
        sram_words: p.params.div_ceil(per_word) * (2 + p.writes_per_param * hw.cores as u64),
        offchip_bytes,
        ..Cost::default()
    }
}

/// One phase evaluated: which mode ran it, its cost per run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseCost {
    pub phase: Phase,
    pub runs_per_iteration: f64,
    /// `intra-layer` or `intra-batch` (chosen per phase under adaptive parallelism);
    /// `-` for phases without GEMMs.
    pub mode: String,
    pub cost: Cost,
}

/// Evaluates one phase under the configured parallelism.
pub fn phase_cost(
    p: &PhasePlan,
    geom: &ArrayGeom,
    hw: &HwConfig,
    precision: Precision,
) -> PhaseCost {
    let has_gemm = p.ops.iter().any(|o| matches!(o, Op::Gemm(_)));
    let (mut cost, mode) = if !has_gemm {
        (Cost::default(), "-")
    } else {
        match hw.parallelism {
            Parallelism::IntraLayer => (geom.phase_gemms(&p.ops, true).0, "intra-layer"),
            Parallelism::IntraBatch => (geom.phase_gemms(&p.ops, false).0, "intra-batch"),
            Parallelism::Adaptive => {
                let layer = geom.phase_gemms(&p.ops, true).0;
                let batch = geom.phase_gemms(&p.ops, false).0;
                // Fewer cycles wins; on a tie, less on-chip traffic.
                if (layer.cycles, layer.sram_words) < (batch.cycles, batch.sram_words) {
                    (layer, "intra-layer")
                } else {
                    (batch, "intra-batch")
                }
            }
        }
    };
    for op in &p.ops {
        if let Op::Params(pp) = op {
            cost.add(&param_pass_cost(pp, hw, precision));
        }
    }
    PhaseCost {
        phase: p.phase,
        runs_per_iteration: p.runs_per_iteration,
        mode: mode.to_string(),
        cost,
    }
}
