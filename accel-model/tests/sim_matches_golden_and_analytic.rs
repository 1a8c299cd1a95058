//! The cycle-level simulator against quant's golden GEMM (bit for bit) and against the
//! analytic model (cycle for cycle), over shapes, arrays, precisions and mappings.

use accel_model::analytic::{ArrayGeom, Mapping};
use accel_model::plan::{BatchAxis, Gemm, Op, Plan, Stationary};
use accel_model::sim::{simulate_gemm, GemmData};
use accel_model::{presets, HwConfig, IntraLayerSplit, Precision, Workload};
use quant::{FxFormat, Overflow, Rounding};

/// xorshift64*: deterministic test data without a rand dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn codes(&mut self, n: usize, f: &FxFormat) -> Vec<i64> {
        let span = (f.raw_max() as i128 - f.raw_min() as i128 + 1) as u128;
        (0..n)
            .map(|_| (f.raw_min() as i128 + (self.next() as u128 % span) as i128) as i64)
            .collect()
    }
}

fn hw(rows: usize, cols: usize, cores: usize, read_bits: usize) -> HwConfig {
    let mut hw = presets::load("fixar-u50").unwrap().hw;
    hw.pe_rows = rows;
    hw.pe_cols = cols;
    hw.cores = cores;
    hw.weight_memory.port_bits = read_bits;
    hw.buffers.read_bits = (read_bits / 2).max(32) / 32 * 32;
    hw
}

fn formats(p: Precision) -> (FxFormat, FxFormat, FxFormat) {
    match p {
        Precision::Fxp16 => (
            FxFormat::signed(16, 6).unwrap(),
            FxFormat::signed(16, 2).unwrap(),
            FxFormat::signed(16, 7)
                .unwrap()
                .with_modes(Rounding::RndConv, Overflow::Sat),
        ),
        Precision::Fxp32 => (
            FxFormat::signed(32, 12).unwrap(),
            FxFormat::signed(32, 4).unwrap(),
            FxFormat::signed(32, 14)
                .unwrap()
                .with_modes(Rounding::Rnd, Overflow::Wrap),
        ),
    }
}

fn check(
    geom: &ArrayGeom,
    g: &Gemm,
    p: Precision,
    mapping: Mapping,
    rng: &mut Rng,
    with_bias: bool,
) {
    let (xf, wf, out) = formats(p);
    let x = rng.codes(g.m * g.k, &xf);
    let w = rng.codes(g.k * g.n, &wf);
    let bf = FxFormat::signed(p.bits(), 8).unwrap();
    let b = rng.codes(g.n, &bf);
    let bias = with_bias.then_some((b.as_slice(), bf));
    let d = GemmData {
        x: &x,
        xf,
        w: &w,
        wf,
        bias,
        out,
    };
    let sim = simulate_gemm(geom, g, &d, mapping);
    // A transposed GEMM's `w` is the forward layout (n x k); the golden GEMM takes W^T.
    let w_golden = if g.transposed {
        accel_model::sim::transpose(&w, g.n, g.k)
    } else {
        w.clone()
    };
    let golden = quant::golden_gemm(
        &x,
        &xf,
        &w_golden,
        &wf,
        bias.as_ref().map(|(b, f)| (*b, f)),
        g.m,
        g.k,
        g.n,
        &out,
    );
    assert_eq!(
        sim.y, golden,
        "values differ: {g:?} {p:?} {mapping:?} {geom:?}"
    );
    let cost = geom.gemm_cost(g, mapping);
    assert_eq!(
        sim.cycles, cost.cycles,
        "cycles differ: {g:?} {p:?} {mapping:?} {geom:?} (sim cores {:?}, reduction {})",
        sim.core_cycles, sim.reduction_cycles
    );
    assert_eq!(sim.reduction_cycles, cost.reduction_cycles);
    assert_eq!(sim.macs, g.macs());
}

#[test]
fn simulator_equals_golden_gemm_and_analytic_cycles_over_shapes_arrays_and_mappings() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let shapes = [
        (1, 1, 1),
        (1, 17, 400),
        (3, 16, 16),
        (5, 33, 7),
        (16, 23, 40),
        (40, 9, 65),
        (64, 64, 1),
        (7, 100, 33),
    ];
    let arrays = [
        (16, 16, 4, 512),
        (8, 8, 3, 512),
        (4, 8, 2, 96),
        (8, 8, 3, 160),
        (16, 4, 5, 256),
    ];
    let mut checked = 0;
    for (split, &(rows, cols, cores, read_bits)) in
        [IntraLayerSplit::Inputs, IntraLayerSplit::Outputs]
            .into_iter()
            .flat_map(|s| arrays.iter().map(move |a| (s, a)))
    {
        let mut hw = hw(rows, cols, cores, read_bits);
        hw.intra_layer_split = split;
        for p in [Precision::Fxp16, Precision::Fxp32] {
            let geom = ArrayGeom::new(&hw, p);
            for (i, &(m, k, n)) in shapes.iter().enumerate() {
                for (axis, stationary, transposed) in [
                    (BatchAxis::M, Stationary::Weights, false),
                    (BatchAxis::M, Stationary::Weights, true),
                    (BatchAxis::K, Stationary::Buffer, false),
                ] {
                    let g = Gemm {
                        m,
                        k,
                        n,
                        batch_axis: axis,
                        stationary,
                        transposed,
                    };
                    let split = if axis == BatchAxis::M { m } else { k };
                    let mut maps: Vec<Mapping> = (1..=cores)
                        .map(|active| Mapping::IntraLayer { active })
                        .collect();
                    maps.extend(
                        (1..=cores.min(split)).map(|active| Mapping::IntraBatch { active }),
                    );
                    for map in maps {
                        check(&geom, &g, p, map, &mut rng, i % 2 == 0);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 900, "{checked}");
}

#[test]
fn simulated_phases_of_a_small_td3_iteration_take_the_analytic_cycles() {
    let mut w = Workload::cleanrl_td3("small", 3, 1, Precision::Fxp16);
    w.actor_hidden = vec![24, 20];
    w.critic_hidden = vec![24, 20];
    w.batch = 12;
    let mut rng = Rng(7);
    for p in [Precision::Fxp16, Precision::Fxp32] {
        w.precision = p;
        let hw = hw(8, 8, 3, 512);
        let geom = ArrayGeom::new(&hw, p);
        let plan = Plan::new(&w);
        for ph in &plan.phases {
            for intra_layer in [true, false] {
                let (cost, maps) = geom.phase_gemms(&ph.ops, intra_layer);
                let gemms: Vec<&Gemm> = ph
                    .ops
                    .iter()
                    .filter_map(|o| match o {
                        Op::Gemm(g) => Some(g),
                        _ => None,
                    })
                    .collect();
                let (xf, wf, out) = formats(p);
                let mut sim_cycles = 0;
                for (g, map) in gemms.iter().zip(&maps) {
                    let x = rng.codes(g.m * g.k, &xf);
                    let wt = rng.codes(g.k * g.n, &wf);
                    let d = GemmData {
                        x: &x,
                        xf,
                        w: &wt,
                        wf,
                        bias: None,
                        out,
                    };
                    let s = simulate_gemm(&geom, g, &d, *map);
                    assert_eq!(
                        s.y,
                        quant::golden_gemm(
                            &x,
                            &xf,
                            &if g.transposed {
                                accel_model::sim::transpose(&wt, g.n, g.k)
                            } else {
                                wt.clone()
                            },
                            &wf,
                            None,
                            g.m,
                            g.k,
                            g.n,
                            &out
                        )
                    );
                    sim_cycles += s.cycles;
                }
                assert_eq!(
                    sim_cycles, cost.cycles,
                    "{:?} intra_layer={intra_layer} {p:?}",
                    ph.phase
                );
            }
        }
    }
}

#[test]
fn every_simulated_phase_of_a_preset_iteration_takes_the_analytic_cycles() {
    for name in ["ultra96-v2", "zcu102"] {
        let preset = presets::load(name).unwrap();
        let mut w = preset.workload.clone().unwrap();
        if name == "zcu102" {
            // A smaller network keeps the debug-build simulation short; the mapping and the
            // memories are the preset's.
            w.actor_hidden = vec![40, 30];
            w.critic_hidden = vec![40, 30];
            w.batch = 24;
        }
        let plan = Plan::new(&w);
        let checks = accel_model::sim::check_iteration(&plan, &preset.hw, 3);
        assert_eq!(checks.len(), plan.phases.len());
        for c in &checks {
            assert!(c.bit_exact, "{name}: {c:?}");
            assert_eq!(c.simulated_cycles, c.analytic_cycles, "{name}: {c:?}");
            assert_eq!(
                c.simulated_port_cycles, c.analytic_port_cycles,
                "{name}: {c:?}"
            );
        }
        // The update phases move real words through the port: no 0 == 0 comparisons.
        for ph in [
            accel_model::Phase::CriticUpdate,
            accel_model::Phase::ActorUpdate,
            accel_model::Phase::TargetUpdate,
        ] {
            let c = checks.iter().find(|c| c.phase == ph).unwrap();
            assert!(c.analytic_port_cycles > 0, "{name}: {c:?}");
        }
    }
}

#[test]
fn update_passes_not_hidden_behind_gradients_add_their_whole_port_time_in_both_models() {
    let preset = presets::load("ultra96-v2").unwrap();
    let mut hw = preset.hw.clone();
    hw.weight_memory.updates_behind_gradients = false;
    let plan = Plan::new(preset.workload.as_ref().unwrap());
    let checks = accel_model::sim::check_iteration(&plan, &hw, 5);
    for c in &checks {
        assert_eq!(c.simulated_cycles, c.analytic_cycles, "{c:?}");
    }
    let upd = checks
        .iter()
        .find(|c| c.phase == accel_model::Phase::CriticUpdate)
        .unwrap();
    assert!(upd.simulated_cycles >= upd.simulated_port_cycles);
}
