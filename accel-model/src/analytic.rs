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
//! `ld + (tiles - 1) * max(m, ld) + m + latency` cycles, with `ld = ceil(32 R C / bits)`
//! and `latency = 2 + ceil(log2 R)` (multiply, adder tree, accumulate). GEMMs of a phase
//! run one after another.
//!
//! The weight memory is one store behind one port (`port_bits`, reads or writes): an
//! intra-batch GEMM broadcasts each tile to every core (`bits = port_bits`); an intra-layer
//! GEMM needs a different tile per core, so the cores share the port (`bits = port_bits /
//! cores`). Error/activation tiles come from each core's own buffer (`buffers.read_bits`).
//!
//! Updates (optimizer step, soft target update) move every weight word through the port,
//! `port_ops` accesses per word, `port_bits / 32` words a cycle. They run while the
//! weight-gradient GEMMs of their network stream (those take their stationary tiles from
//! the error buffers, leaving the port idle); the cycles they do not fit in are exposed.

use serde::{Deserialize, Serialize};

use crate::hw::{HwConfig, IntraLayerSplit, Parallelism};
use crate::plan::{BatchAxis, Gemm, Op, ParamPass, Phase, PhasePlan, Plan, Stationary};
use crate::workload::Precision;

/// A concrete mapping of one GEMM onto the cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    /// Intra-layer parallelism on `active` cores, each streaming all m rows and loading its
    /// own weight tiles through its turn of the shared port. FIXAR's split
    /// ([`IntraLayerSplit::Inputs`]): the layer's input columns over the cores (contiguous
    /// shares, cycle for cycle the paper's interleave), partial sums added by the
    /// cross-core adder tree; or output column tiles dealt round-robin, no reduction.
    IntraLayer { active: usize },
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
    /// Cycles to load one stationary tile from the weight memory, broadcast to all cores.
    pub weight_load: u64,

    /// Cycles to load one stationary tile from the activation/error buffer.
    pub buffer_load: u64,
    pub weight_read_bits: usize,
    pub buffer_read_bits: usize,
    /// Cycles from a row entering the array to its column sums reaching the output buffer.
    pub latency: u64,
    /// Intra-layer GEMMs split the input columns (FIXAR) rather than the outputs.
    pub split_inputs: bool,
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
    /// Cycles of weight-gradient GEMMs (the weight port is idle during them).
    pub grad_cycles: u64,
    /// Weight-port cycles of parameter passes (all of them, hidden or not).
    pub port_cycles: u64,
    /// Of `port_cycles`, those hidden behind weight-gradient GEMMs.
    pub hidden_cycles: u64,
}

impl Cost {
    fn add(&mut self, o: &Cost) {
        self.cycles += o.cycles;
        self.macs += o.macs;
        self.load_stall_cycles += o.load_stall_cycles;
        self.reduction_cycles += o.reduction_cycles;
        self.sram_words += o.sram_words;
        self.offchip_bytes += o.offchip_bytes;
        self.grad_cycles += o.grad_cycles;
        self.port_cycles += o.port_cycles;
        self.hidden_cycles += o.hidden_cycles;
    }
}

impl ArrayGeom {
    pub fn new(hw: &HwConfig, precision: Precision) -> ArrayGeom {
        let tile_bits = 32 * hw.pe_rows * hw.pe_cols;
        let port = hw.weight_memory.port_bits;
        ArrayGeom {
            cores: hw.cores,
            rows: hw.pe_rows,
            cols: hw.pe_cols,
            lanes: precision.lanes(),
            weight_load: div_ceil(tile_bits, port) as u64,
            buffer_load: div_ceil(tile_bits, hw.buffers.read_bits) as u64,
            weight_read_bits: port,
            buffer_read_bits: hw.buffers.read_bits,
            latency: 2 + ceil_log2(hw.pe_rows),
            split_inputs: hw.intra_layer_split == IntraLayerSplit::Inputs,
        }
    }

    /// Output neurons one tile covers.
    pub fn tile_cols(&self) -> usize {
        self.cols * self.lanes
    }

    /// Cycles to load one stationary tile under a mapping.
    pub fn load_cycles(&self, s: Stationary, mapping: Mapping) -> u64 {
        div_ceil(32 * self.rows * self.cols, self.read_bits(s, mapping)) as u64
    }

    /// Bits per cycle one core's stationary operand arrives at under a mapping: the whole
    /// weight port for a broadcast tile, its turn of it when `active` cores load their own.
    pub fn read_bits(&self, s: Stationary, mapping: Mapping) -> usize {
        match (s, mapping) {
            (Stationary::Weights, Mapping::IntraLayer { active }) => {
                (self.weight_read_bits / active.max(1)).max(1)
            }
            (Stationary::Weights, Mapping::IntraBatch { .. }) => self.weight_read_bits,
            (Stationary::Buffer, _) => self.buffer_read_bits,
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
        let ld = self.load_cycles(g.stationary, mapping);
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
        // A split reduction dimension: each of `active` cores takes ceil(k / active) of
        // it over every column tile and streams all m rows; an adder tree sums the cores'
        // partial results.
        let split_k = |c: &mut Cost, active: usize| {
            let k = div_ceil(g.k, active);
            let tiles = div_ceil(k, r) * tn;
            let red = self.reduction_cycles(g.m, g.n, active.min(g.k));
            c.cycles = self.core_cycles(g.m, tiles, ld) + red;
            c.load_stall_cycles = stall(g.m, tiles);
            c.reduction_cycles = red;
            let busy = active.min(g.k);
            c.sram_words =
                busy as u64 * traffic(tiles, g.m) + (g.m * g.n * busy.saturating_sub(1)) as u64;
        };
        match mapping {
            Mapping::IntraLayer { active } if self.split_inputs => split_k(&mut c, active),
            Mapping::IntraLayer { active } => {
                let tiles = tk * div_ceil(tn, active);
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
                BatchAxis::K => split_k(&mut c, active),
            },
        }
        if g.batch_axis == BatchAxis::K {
            c.grad_cycles = c.cycles;
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

    /// The intra-layer mapping of `g` on at most `self.cores` cores with the fewest cycles
    /// (the cores share the weight port and add their partial sums, so more of them can
    /// be slower).
    pub fn best_intra_layer(&self, g: &Gemm) -> (Mapping, Cost) {
        let parts = if self.split_inputs {
            g.k
        } else {
            div_ceil(g.n, self.tile_cols())
        };
        (1..=self.cores.min(parts.max(1)))
            .map(|active| {
                let map = Mapping::IntraLayer { active };
                (map, self.gemm_cost(g, map))
            })
            .min_by_key(|(_, c)| c.cycles)
            .expect("at least one candidate")
    }

    /// Cost and per-GEMM mappings of a phase's GEMMs under one concrete mode.
    pub fn phase_gemms(&self, ops: &[Op], intra_layer: bool) -> (Cost, Vec<Mapping>) {
        let mut total = Cost::default();
        let mut maps = Vec::new();
        for op in ops {
            if let Op::Gemm(g) = op {
                let (map, cost) = if intra_layer {
                    self.best_intra_layer(g)
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

/// Port accesses of a parameter pass: its weight words in beats of `port_bits / 32`
/// words, `port_ops` accesses each (a read and a write per stream of words).
pub fn param_port_cycles(p: &ParamPass, hw: &HwConfig, precision: Precision) -> u64 {
    let words = p.params.div_ceil(32 / precision.bits() as u64);
    words.div_ceil(hw.weight_memory.port_words()) * p.port_ops
}

/// The cost of a parameter pass given the idle port cycles `window` left behind its
/// network's weight-gradient GEMMs (consumed as the pass hides in them). The update
/// pipeline (`sim_update::UPDATE_PIPELINE` cycles) stretches a pass shorter than it.
pub fn param_pass_cost(
    p: &ParamPass,
    hw: &HwConfig,
    precision: Precision,
    state_words_per_param: u64,
    window: &mut u64,
) -> Cost {
    let port = param_port_cycles(p, hw, precision);
    let reads = port / 2;
    let elapsed = if reads == 0 {
        0
    } else {
        port.max(reads + crate::sim_update::UPDATE_PIPELINE)
    };
    let hidden = elapsed.min(*window);
    *window -= hidden;
    let words = p.params.div_ceil(32 / precision.bits() as u64);
    Cost {
        cycles: elapsed - hidden,
        // Weight words through the port, and each optimizer state word read and written.
        sram_words: words * p.port_ops + 2 * words * state_words_per_param,
        port_cycles: port,
        hidden_cycles: hidden,
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

/// Evaluates one phase's GEMMs under the configured parallelism.
pub fn gemm_phase_cost(p: &PhasePlan, geom: &ArrayGeom, hw: &HwConfig) -> PhaseCost {
    let has_gemm = p.ops.iter().any(|o| matches!(o, Op::Gemm(_)));
    let (cost, mode) = if !has_gemm {
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
    PhaseCost {
        phase: p.phase,
        runs_per_iteration: p.runs_per_iteration,
        mode: mode.to_string(),
        cost,
    }
}

/// Every phase of a plan: GEMM phases first, then the parameter passes in plan order,
/// each hiding in what is left of its network's weight-gradient cycles.
pub fn phase_costs(plan: &Plan, hw: &HwConfig) -> Vec<PhaseCost> {
    let precision = plan.workload.precision;
    let geom = ArrayGeom::new(hw, precision);
    let mut costs: Vec<PhaseCost> = plan
        .phases
        .iter()
        .map(|p| gemm_phase_cost(p, &geom, hw))
        .collect();
    let hide = hw.weight_memory.updates_behind_gradients;
    let mut windows: Vec<(Phase, u64)> = costs
        .iter()
        .map(|c| (c.phase, if hide { c.cost.grad_cycles } else { 0 }))
        .collect();
    let state = plan.workload.optimizer.state_words_per_param();
    for (c, p) in costs.iter_mut().zip(&plan.phases) {
        for op in &p.ops {
            if let Op::Params(pp) = op {
                let window = windows
                    .iter_mut()
                    .find(|w| w.0 == pp.behind)
                    .map(|w| &mut w.1);
                let mut none = 0;
                let st = if pp.optimizer_state { state } else { 0 };
                c.cost.add(&param_pass_cost(
                    pp,
                    hw,
                    precision,
                    st,
                    window.unwrap_or(&mut none),
                ));
            }
        }
    }
    costs
}
