//! The cycle-level simulator: steps each core's PE array cycle by cycle on raw
//! fixed-point integers — a weight-load engine filling the double-buffered stationary
//! registers at the memory's read width, one streamed row a cycle broadcast along the
//! array's rows, each PE multiplying with `quant::mul`, column sums through a pipelined
//! adder tree into the output buffer — and, for split reductions, the cross-core adder
//! tree — and the update passes through the weight port (`sim_update.rs`), hidden behind
//! the simulated weight-gradient GEMMs. Its outputs must equal `quant`'s golden GEMM bit
//! for bit and its cycle counts the analytic model's for every phase (`analytic.rs`
//! describes the shared schedule); the cycles here come from stepping the engines, not
//! from the closed form.

use std::collections::VecDeque;

use quant::{FxFormat, Overflow, Rounding};

use crate::analytic::{ceil_log2, ArrayGeom, Mapping};
use crate::plan::{BatchAxis, Gemm};

/// One GEMM's operands: `x` (m x k, row-major, the streamed operand), `w` (the stationary
/// one: k x n row-major, or for a `transposed` GEMM the forward layout n x k, read
/// transposed), an optional bias (n), and the output format.
#[derive(Clone, Copy, Debug)]
pub struct GemmData<'a> {
    pub x: &'a [i64],
    pub xf: FxFormat,
    pub w: &'a [i64],
    pub wf: FxFormat,
    pub bias: Option<(&'a [i64], FxFormat)>,
    pub out: FxFormat,
}

/// What the simulator produced.
#[derive(Clone, Debug, PartialEq)]
pub struct SimResult {
    /// m x n raw codes in `out`.
    pub y: Vec<i64>,
    /// Cycles until the last result reached the output buffer (slowest core + reduction).
    pub cycles: u64,
    /// Cycles of each core.
    pub core_cycles: Vec<u64>,
    pub reduction_cycles: u64,
    /// MACs the PEs performed (padding lanes excluded).
    pub macs: u64,
}

fn fmt(signed: bool, width: u32, frac: i64) -> FxFormat {
    FxFormat::new(
        signed,
        width,
        (width as i64 - frac) as i32,
        Rounding::Trn,
        Overflow::Wrap,
    )
    .expect("accumulator format within quant's limits")
}

/// Exact PE product with `quant::mul` into a format wide enough to hold it.
struct Multiplier {
    prod: Option<FxFormat>,
    xf: FxFormat,
    wf: FxFormat,
}

impl Multiplier {
    fn new(xf: FxFormat, wf: FxFormat) -> Self {
        let width = xf.width + wf.width;
        let prod = (width <= 64).then(|| {
            fmt(
                xf.signed || wf.signed,
                width,
                (xf.frac_bits() + wf.frac_bits()) as i64,
            )
        });
        Multiplier { prod, xf, wf }
    }

    #[inline]
    fn mul(&self, x: i64, w: i64) -> i128 {
        match &self.prod {
            Some(p) => p.raw_value(quant::mul(x, &self.xf, w, &self.wf, p)),
            // Wider than quant's 64-bit codes: the exact integer product.
            None => self.xf.raw_value(x) * self.wf.raw_value(w),
        }
    }
}

/// One core's share: rows of x, the k range, and the column tiles it runs.
struct Share {
    rows: std::ops::Range<usize>,
    ks: std::ops::Range<usize>,
    col_tiles: Vec<usize>,
}

fn balanced(total: usize, parts: usize, j: usize) -> std::ops::Range<usize> {
    let base = total / parts;
    let extra = total % parts;
    let start = j * base + j.min(extra);
    start..start + base + usize::from(j < extra)
}

/// Steps one core through its share; returns its cycles and adds exact partial sums
/// (at `frac` fraction bits) into `acc` (m x n).
fn run_core(
    geom: &ArrayGeom,
    g: &Gemm,
    d: &GemmData,
    share: &Share,
    mapping: Mapping,
    mul: &Multiplier,
    acc: &mut [i128],
) -> (u64, u64) {
    let mut macs = 0u64;
    let (r_n, c_n, lanes) = (geom.rows, geom.cols, geom.lanes);
    let ce = c_n * lanes;
    // Tile order: per column tile, the k tiles of this core's range in order.
    let k_tiles: Vec<usize> = share.ks.clone().step_by(r_n).collect();
    let tiles: Vec<(usize, usize)> = share
        .col_tiles
        .iter()
        .flat_map(|&ct| k_tiles.iter().map(move |&k0| (k0, ct * ce)))
        .collect();
    let rows: Vec<usize> = share.rows.clone().collect();
    if tiles.is_empty() || rows.is_empty() {
        return (0, 0);
    }
    let words = (r_n * c_n) as u64;
    let bits_needed = words * 32;
    // The bits this core gets a cycle: the whole port when the tile is broadcast, its turn
    // of the shared port when every core loads its own tile.
    let bits_per_cycle = geom.read_bits(g.stationary, mapping) as u64;
    debug_assert_eq!(
        bits_needed.div_ceil(bits_per_cycle),
        geom.load_cycles(g.stationary, mapping)
    );
    // Two register slots of R x C x lanes stationary values (0 = padding).
    let mut slots = [vec![0i64; r_n * ce], vec![0i64; r_n * ce]];
    let mut slot_tile = [usize::MAX; 2];
    let mut next_load = 0usize; // tile being (or next to be) loaded
    let mut loaded_bits = 0u64;
    // Cycle in which each tile's last stationary word was written.
    let mut loaded_at: Vec<Option<u64>> = vec![None; tiles.len()];
    let mut injecting = 0usize; // tile currently streaming
    let mut next_row = 0usize;
    let mut done_injecting = vec![false; tiles.len()];
    // (deliver cycle, output row, first output column, column sums)
    let mut pipe: VecDeque<(u64, usize, usize, Vec<i128>)> = VecDeque::new();
    let k_end = share.ks.end;
    let mut cycle = 0u64;
    loop {
        // Weight-load engine: tile t may load once tile t-2 (same slot) finished streaming.
        if next_load < tiles.len() && (next_load < 2 || done_injecting[next_load - 2]) {
            loaded_bits += bits_per_cycle;
            if loaded_bits >= bits_needed {
                let (k0, n0) = tiles[next_load];
                let s = next_load % 2;
                for r in 0..r_n {
                    for j in 0..ce {
                        let (k, n) = (k0 + r, n0 + j);
                        slots[s][r * ce + j] = if k < k_end && n < g.n {
                            if g.transposed {
                                d.w[n * g.k + k]
                            } else {
                                d.w[k * g.n + n]
                            }
                        } else {
                            0
                        };
                    }
                }
                slot_tile[s] = next_load;
                loaded_at[next_load] = Some(cycle);
                next_load += 1;
                loaded_bits = 0;
            }
        }
        // Stream engine: one row enters the array per cycle once its tile is resident
        // (loaded in an earlier cycle).
        if injecting < tiles.len() && loaded_at[injecting].is_some_and(|c| c < cycle) {
            let (k0, n0) = tiles[injecting];
            let s = injecting % 2;
            debug_assert_eq!(slot_tile[s], injecting);
            let i = rows[next_row];
            let mut sums = vec![0i128; ce];
            for r in 0..r_n {
                let k = k0 + r;
                if k >= k_end {
                    break;
                }
                let a = d.x[i * g.k + k]; // broadcast along row r
                for (j, sum) in sums.iter_mut().enumerate() {
                    if n0 + j < g.n {
                        *sum += mul.mul(a, slots[s][r * ce + j]);
                        macs += 1;
                    }
                }
            }
            pipe.push_back((cycle + geom.latency, i, n0, sums));
            next_row += 1;
            if next_row == rows.len() {
                done_injecting[injecting] = true;
                injecting += 1;
                next_row = 0;
            }
        }
        // Column sums leaving the adder tree are added into the output buffer.
        while pipe.front().is_some_and(|p| p.0 == cycle) {
            let (_, i, n0, sums) = pipe.pop_front().expect("front exists");
            for (j, s) in sums.into_iter().enumerate() {
                if n0 + j < g.n {
                    acc[i * g.n + n0 + j] += s;
                }
            }
        }
        cycle += 1;
        if injecting == tiles.len() && pipe.is_empty() {
            return (cycle, macs);
        }
    }
}

/// `cast(acc + bias)` at `frac` fraction bits into `out`, exactly, with quant's
/// arithmetic (a value wider than 64 bits is split in two exact halves and added by
/// `quant::add`, which rounds once).
fn finish(acc: i128, frac: i64, out: &FxFormat) -> i64 {
    if let Ok(v) = i64::try_from(acc) {
        return quant::cast(v, &fmt(true, 64, frac), out);
    }
    let hi = (acc >> 62) as i64;
    let lo = (acc & ((1i128 << 62) - 1)) as i64;
    quant::add(hi, &fmt(true, 64, frac - 62), lo, &fmt(true, 64, frac), out)
}

/// Runs one GEMM on the modeled cores under `mapping`.
pub fn simulate_gemm(geom: &ArrayGeom, g: &Gemm, d: &GemmData, mapping: Mapping) -> SimResult {
    assert_eq!(d.x.len(), g.m * g.k, "x is m x k");
    assert_eq!(d.w.len(), g.k * g.n, "w is k x n");
    let ce = geom.tile_cols();
    let tn = g.n.div_ceil(ce);
    let mul = Multiplier::new(d.xf, d.wf);
    let frac_p = (d.xf.frac_bits() + d.wf.frac_bits()) as i64;
    let shares: Vec<Share> = match mapping {
        Mapping::IntraLayer { active } if geom.split_inputs => (0..active)
            .map(|j| Share {
                rows: 0..g.m,
                ks: balanced(g.k, active, j),
                col_tiles: (0..tn).collect(),
            })
            .collect(),
        Mapping::IntraLayer { active } => (0..active)
            .map(|j| Share {
                rows: 0..g.m,
                ks: 0..g.k,
                col_tiles: (j..tn).step_by(active).collect(),
            })
            .collect(),
        Mapping::IntraBatch { active } => (0..active)
            .map(|j| match g.batch_axis {
                BatchAxis::M => Share {
                    rows: balanced(g.m, active, j),
                    ks: 0..g.k,
                    col_tiles: (0..tn).collect(),
                },
                BatchAxis::K => Share {
                    rows: 0..g.m,
                    ks: balanced(g.k, active, j),
                    col_tiles: (0..tn).collect(),
                },
            })
            .collect(),
    };
    let mut macs = 0;
    let mut core_cycles = Vec::new();
    let mut partials = Vec::new();
    for share in &shares {
        let mut acc = vec![0i128; g.m * g.n];
        let (c, core_macs) = run_core(geom, g, d, share, mapping, &mul, &mut acc);
        macs += core_macs;
        core_cycles.push(c);
        partials.push(acc);
    }
    // Cross-core reduction (only split reductions have more than one partial per output):
    // an adder tree over the contributing cores takes `ce` outputs a cycle.
    let contributing = partials
        .iter()
        .zip(&shares)
        .filter(|(_, s)| !s.ks.is_empty() && !s.rows.is_empty() && !s.col_tiles.is_empty())
        .count();
    let split_k = match mapping {
        Mapping::IntraLayer { .. } => geom.split_inputs,
        Mapping::IntraBatch { .. } => g.batch_axis == BatchAxis::K,
    };
    let mut acc = vec![0i128; g.m * g.n];
    let mut reduction_cycles = 0;
    if split_k && contributing > 1 {
        let depth = ceil_log2(contributing);
        let mut pos = 0;
        while pos < acc.len() {
            let end = (pos + ce).min(acc.len());
            for p in &partials {
                for (a, v) in acc[pos..end].iter_mut().zip(&p[pos..end]) {
                    *a += v;
                }
            }
            pos = end;
            reduction_cycles += 1;
        }
        reduction_cycles += depth;
    } else {
        for p in &partials {
            for (a, v) in acc.iter_mut().zip(p) {
                *a += v;
            }
        }
    }
    // Bias, aligned to the finer of the two binary points, then one cast.
    let frac = match d.bias {
        Some((_, bf)) => frac_p.max(bf.frac_bits() as i64),
        None => frac_p,
    };
    let y = acc
        .iter()
        .enumerate()
        .map(|(idx, &a)| {
            let mut v = a << (frac - frac_p);
            if let Some((b, bf)) = d.bias {
                v += bf.raw_value(b[idx % g.n]) << (frac - bf.frac_bits() as i64);
            }
            finish(v, frac, &d.out)
        })
        .collect();
    let slowest = core_cycles.iter().copied().max().unwrap_or(0);
    SimResult {
        y,
        cycles: slowest + reduction_cycles,
        core_cycles,
        reduction_cycles,
        macs,
    }
}

/// The simulator run on one phase of a plan with random operands, against the analytic
/// model and the golden GEMM.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PhaseCheck {
    pub phase: crate::plan::Phase,
    pub mode: String,
    pub gemms: usize,
    pub macs: u64,
    /// Cycles the phase adds to the iteration, simulated and analytic.
    pub simulated_cycles: u64,
    pub analytic_cycles: u64,
    /// Weight-port accesses of the phase's update passes, simulated and analytic.
    pub simulated_port_cycles: u64,
    pub analytic_port_cycles: u64,
    /// Every output of every GEMM equal to `quant::golden_gemm`'s.
    pub bit_exact: bool,
}

/// Runs every phase of `plan` on `hw` in the simulator, in plan order, with seeded random
/// operands (signed formats of the workload's width, round-to-nearest-even and saturating
/// outputs): GEMMs on the PE arrays, update passes on the weight port hidden behind the
/// simulated weight-gradient GEMMs, and the off-chip stall from a stepped DMA engine.
pub fn check_iteration(
    plan: &crate::plan::Plan,
    hw: &crate::hw::HwConfig,
    seed: u64,
) -> Vec<PhaseCheck> {
    use crate::analytic::phase_costs;
    use crate::plan::{Op, Phase};
    let precision = plan.workload.precision;
    let geom = ArrayGeom::new(hw, precision);
    let analytic = phase_costs(plan, hw);
    let bits = precision.bits();
    let xf = FxFormat::signed(bits, bits as i32 / 4).expect("format");
    let wf = FxFormat::signed(bits, 2).expect("format");
    let out = FxFormat::signed(bits, bits as i32 / 4)
        .expect("format")
        .with_modes(Rounding::RndConv, Overflow::Sat);
    let mut state = seed | 1;
    let mut codes = |n: usize, f: &FxFormat| -> Vec<i64> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                f.raw_value(state as i64) as i64
            })
            .collect()
    };
    let mut windows: Vec<(Phase, u64)> = Vec::new();
    let mut checks = Vec::new();
    for (ph, a) in plan.phases.iter().zip(&analytic) {
        let mut check = PhaseCheck {
            phase: ph.phase,
            mode: a.mode.clone(),
            gemms: 0,
            macs: 0,
            simulated_cycles: 0,
            analytic_cycles: a.cost.cycles,
            simulated_port_cycles: 0,
            analytic_port_cycles: a.cost.port_cycles,
            bit_exact: true,
        };
        let (_, maps) = geom.phase_gemms(&ph.ops, a.mode == "intra-layer");
        let gemms = ph.ops.iter().filter_map(|o| match o {
            Op::Gemm(g) => Some(g),
            Op::Params(_) => None,
        });
        let mut grad_cycles = 0;
        for (g, map) in gemms.zip(maps) {
            let (x, w) = (codes(g.m * g.k, &xf), codes(g.k * g.n, &wf));
            // The golden GEMM takes W^T explicitly; the array reads the stored W transposed.
            let w_golden = if g.transposed {
                transpose(&w, g.n, g.k)
            } else {
                w.clone()
            };
            let d = GemmData {
                x: &x,
                xf,
                w: &w,
                wf,
                bias: None,
                out,
            };
            let s = simulate_gemm(&geom, g, &d, map);
            check.bit_exact &=
                s.y == quant::golden_gemm(&x, &xf, &w_golden, &wf, None, g.m, g.k, g.n, &out);
            check.gemms += 1;
            check.macs += s.macs;
            check.simulated_cycles += s.cycles;
            if g.batch_axis == BatchAxis::K {
                grad_cycles += s.cycles;
            }
        }
        if !hw.weight_memory.updates_behind_gradients {
            grad_cycles = 0;
        }
        windows.push((ph.phase, grad_cycles));
        for op in &ph.ops {
            if let Op::Params(pp) = op {
                let words = pp.params.div_ceil(32 / bits as u64);
                let beats = words.div_ceil(hw.weight_memory.port_words());
                let mut none = 0;
                let window = windows
                    .iter_mut()
                    .find(|w| w.0 == pp.behind)
                    .map_or(&mut none, |w| &mut w.1);
                let run = crate::sim_update::run_pass(beats * pp.port_ops / 2, window);
                check.simulated_cycles += run.exposed_cycles;
                check.simulated_port_cycles += run.port_cycles;
            }
        }
        if ph.phase == Phase::ReplayFetch {
            check.simulated_cycles = offchip_stall(plan, hw, &checks);
        }
        checks.push(check);
    }
    checks
}

/// `a` (rows x cols, row-major) transposed.
pub fn transpose(a: &[i64], rows: usize, cols: usize) -> Vec<i64> {
    let mut t = vec![0; a.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}

/// Steps the DMA engine moving the iteration's off-chip bytes at the configured bandwidth
/// and returns the cycles it outlasts the simulated compute.
fn offchip_stall(plan: &crate::plan::Plan, hw: &crate::hw::HwConfig, done: &[PhaseCheck]) -> u64 {
    let bytes = plan.replay_bytes + 2 * 4 * crate::resources::spill_words(plan, hw);
    let per_cycle = hw.offchip_bytes_per_cycle();
    let (mut moved, mut cycles) = (0.0f64, 0u64);
    while moved < bytes as f64 {
        moved += per_cycle;
        cycles += 1;
    }
    let compute: f64 = done
        .iter()
        .zip(&plan.phases)
        .map(|(c, p)| p.runs_per_iteration * c.simulated_cycles as f64)
        .sum();
    (cycles as f64 - compute).max(0.0) as u64
}
