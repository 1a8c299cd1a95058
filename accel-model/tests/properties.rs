//! Properties the model must keep, and bad input (the paper comparison is `paper.rs`).

use accel_model::plan::Plan;
use accel_model::sweep::{pareto_front, SweepSpec};
use accel_model::{estimate, presets, HwConfig, ModelError, Parallelism, Precision, Workload};

const MODES: [Parallelism; 3] = [
    Parallelism::IntraLayer,
    Parallelism::IntraBatch,
    Parallelism::Adaptive,
];

fn workloads() -> Vec<Workload> {
    let mut out = vec![presets::load("fixar-u50").unwrap().workload.unwrap()];
    out.push(Workload::cleanrl_td3("pendulum", 3, 1, Precision::Fxp16));
    let mut small = Workload::cleanrl_td3("hopper-64", 11, 3, Precision::Fxp16);
    small.actor_hidden = vec![64, 48];
    small.critic_hidden = vec![64, 64];
    small.batch = 24;
    small.inference_batch = 5;
    out.push(small);
    out
}

fn u50() -> HwConfig {
    presets::load("fixar-u50").unwrap().hw
}

/// GEMMs use as many of the cores as pay off (intra-layer cores share the one weight
/// port, so more of them can be slower), so more cores never add GEMM cycles. Faster
/// weight-gradient GEMMs leave less port time to hide updates in, so training IPS may
/// dip, but by under 1%.
#[test]
fn more_cores_never_add_gemm_cycles_and_cost_training_ips_under_1_percent() {
    for w in workloads() {
        for p in [Precision::Fxp16, Precision::Fxp32] {
            let plan = Plan::new(&Workload {
                precision: p,
                ..w.clone()
            });
            for mode in MODES {
                for (rows, cols) in [(16, 16), (8, 4)] {
                    let mut last = (0.0, 0.0, f64::INFINITY);
                    for cores in 1..=12 {
                        let hw = HwConfig {
                            cores,
                            pe_rows: rows,
                            pe_cols: cols,
                            parallelism: mode,
                            ..u50()
                        };
                        let perf = plan.performance(&hw);
                        let gemm: f64 = perf
                            .phases
                            .iter()
                            .zip(&plan.phases)
                            .filter(|(_, ph)| {
                                ph.ops
                                    .iter()
                                    .any(|o| matches!(o, accel_model::plan::Op::Gemm(_)))
                            })
                            .map(|(r, _)| r.runs_per_iteration * r.cycles as f64)
                            .sum();
                        assert!(
                            gemm <= last.2
                                && perf.accelerator_training_ips >= 0.99 * last.0
                                && perf.inference_ips >= last.1,
                            "{} {p:?} {mode:?} {rows}x{cols}: {cores} cores {} / {} / {gemm} vs {:?}",
                            w.name,
                            perf.accelerator_training_ips,
                            perf.inference_ips,
                            last
                        );
                        last = (perf.accelerator_training_ips, perf.inference_ips, gemm);
                    }
                }
            }
        }
    }
}

#[test]
fn fxp16_mode_is_never_slower_than_fxp32() {
    for w in workloads() {
        let p16 = Plan::new(&Workload {
            precision: Precision::Fxp16,
            ..w.clone()
        });
        let p32 = Plan::new(&Workload {
            precision: Precision::Fxp32,
            ..w.clone()
        });
        for mode in MODES {
            for cores in [1, 2, 3, 4, 7] {
                for (rows, cols) in [(16, 16), (8, 8), (4, 16)] {
                    let hw = HwConfig {
                        cores,
                        pe_rows: rows,
                        pe_cols: cols,
                        parallelism: mode,
                        ..u50()
                    };
                    let (a, b) = (p16.performance(&hw), p32.performance(&hw));
                    assert!(
                        a.accelerator_training_ips >= b.accelerator_training_ips,
                        "{} {mode:?} {cores}",
                        w.name
                    );
                    assert!(
                        a.inference_ips >= b.inference_ips,
                        "{} {mode:?} {cores}",
                        w.name
                    );
                    for (x, y) in a.phases.iter().zip(&b.phases) {
                        assert!(x.cycles <= y.cycles, "{:?} {mode:?} {cores}", x.phase);
                    }
                }
            }
        }
    }
}

#[test]
fn adaptive_is_never_slower_than_either_fixed_mode_per_phase() {
    for w in workloads() {
        let plan = Plan::new(&w);
        for cores in [1, 2, 4, 8] {
            let at = |mode| {
                plan.performance(&HwConfig {
                    cores,
                    parallelism: mode,
                    ..u50()
                })
            };
            let (l, b, a) = (
                at(Parallelism::IntraLayer),
                at(Parallelism::IntraBatch),
                at(Parallelism::Adaptive),
            );
            // Per GEMM phase; an update pass's exposed cycles depend on how fast the
            // backward before it ran, so they are compared through the total below.
            for (i, ph) in plan.phases.iter().enumerate() {
                if ph
                    .ops
                    .iter()
                    .any(|o| matches!(o, accel_model::plan::Op::Gemm(_)))
                {
                    assert!(a.phases[i].cycles <= l.phases[i].cycles.min(b.phases[i].cycles));
                }
            }
            assert!(
                a.accelerator_training_ips
                    >= l.accelerator_training_ips.max(b.accelerator_training_ips) * (1.0 - 1e-12)
            );
        }
    }
}

#[test]
fn energy_per_inference_falls_as_utilization_rises() {
    for w in workloads() {
        for cores in [1, 4] {
            let hw = HwConfig { cores, ..u50() };
            let mut pts: Vec<(f64, f64)> = [1, 2, 4, 8, 16, 32, 64, 128, 256]
                .iter()
                .map(|&ib| {
                    let perf = Plan::new(&Workload {
                        inference_batch: ib,
                        ..w.clone()
                    })
                    .performance(&hw);
                    (perf.inference_utilization, perf.energy_per_inference_j)
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(
                pts.last().unwrap().0 > 2.0 * pts[0].0,
                "utilization should vary: {pts:?}"
            );
            for p in pts.windows(2) {
                assert!(
                    p[1].0 == p[0].0 || p[1].1 <= p[0].1,
                    "{}: energy/inference rose with utilization: {pts:?}",
                    w.name
                );
            }
        }
    }
}

#[test]
fn every_builtin_preset_loads_fits_its_device_and_estimates() {
    for name in presets::preset_names() {
        let p = presets::load(name).unwrap();
        let e = estimate(p.workload.as_ref().unwrap(), &p.hw).unwrap();
        assert!(e.fit.fits, "{name}: {:?}", e.fit.exceeded);
        let perf = e.performance.unwrap();
        assert!(
            perf.accelerator_training_ips > perf.system_training_ips && perf.power_w > 0.0,
            "{name}"
        );
        assert!(perf.training_utilization > 0.0 && perf.training_utilization <= 1.0);
    }
    assert_eq!(presets::devices().len(), 3);
}

#[test]
fn a_design_too_big_for_its_device_is_reported_as_not_fitting_without_figures() {
    let preset = presets::load("fixar-u50").unwrap();
    let hw = HwConfig {
        cores: 8,
        ..preset.hw.clone()
    };
    let e = estimate(preset.workload.as_ref().unwrap(), &hw).unwrap();
    assert!(!e.fit.fits);
    assert!(e.performance.is_none());
    assert!(
        e.fit.exceeded.iter().any(|x| x.starts_with("dsp")),
        "{:?}",
        e.fit.exceeded
    );
    let json = serde_json::to_value(&e).unwrap();
    assert!(json.get("training_ips").is_none());
}

#[test]
fn sweep_front_holds_only_fitting_non_dominated_points() {
    let preset = presets::load("fixar-u50").unwrap();
    let w = preset.workload.unwrap();
    let spec = SweepSpec::default_for(&w, &preset.hw);
    let pts = spec.run(&w, &preset.hw);
    assert_eq!(pts.len(), spec.points().len());
    assert!(
        pts.iter().any(|p| !p.fits),
        "the default sweep reaches past the U50"
    );
    let front = pareto_front(&pts);
    assert!(!front.is_empty());
    for &i in &front {
        let (ips, eff) = (
            pts[i].accelerator_training_ips.unwrap(),
            pts[i].ips_per_watt.unwrap(),
        );
        assert!(pts[i].fits);
        assert!(!pts
            .iter()
            .any(|q| match (q.accelerator_training_ips, q.ips_per_watt) {
                (Some(a), Some(b)) => a >= ips && b >= eff && (a > ips || b > eff),
                _ => false,
            }));
    }
}

fn field_of(e: ModelError) -> String {
    match e {
        ModelError::Invalid { field, .. } | ModelError::TooLarge { field, .. } => field,
        other => panic!("expected a field error, got {other}"),
    }
}

#[test]
fn bad_sizes_clocks_and_bandwidths_are_rejected_naming_the_field() {
    let preset = presets::load("fixar-u50").unwrap();
    let w = preset.workload.unwrap();
    let hw = preset.hw;
    let cases: Vec<(HwConfig, &str)> = vec![
        (
            HwConfig {
                cores: 0,
                ..hw.clone()
            },
            "hw.cores",
        ),
        (
            HwConfig {
                pe_rows: 0,
                ..hw.clone()
            },
            "hw.pe_rows",
        ),
        (
            HwConfig {
                clock_mhz: 0.0,
                ..hw.clone()
            },
            "hw.clock_mhz",
        ),
        (
            HwConfig {
                clock_mhz: -5.0,
                ..hw.clone()
            },
            "hw.clock_mhz",
        ),
        (
            HwConfig {
                offchip_gbps: -1.0,
                ..hw.clone()
            },
            "hw.offchip_gbps",
        ),
        (
            HwConfig {
                offchip_gbps: f64::NAN,
                ..hw.clone()
            },
            "hw.offchip_gbps",
        ),
    ];
    for (h, field) in cases {
        assert_eq!(field_of(estimate(&w, &h).unwrap_err()), field);
    }
    let mut h = hw.clone();
    h.weight_memory.port_bits = 0;
    assert_eq!(
        field_of(estimate(&w, &h).unwrap_err()),
        "hw.weight_memory.port_bits"
    );
    let mut bad = w.clone();
    bad.batch = 0;
    assert_eq!(field_of(estimate(&bad, &hw).unwrap_err()), "workload.batch");
    let mut bad = w.clone();
    bad.critic_hidden = vec![400, 0];
    assert_eq!(
        field_of(estimate(&bad, &hw).unwrap_err()),
        "workload.critic_hidden[1]"
    );
    // A layer wider than the weight memory can hold.
    let mut wide = w.clone();
    wide.actor_hidden = vec![4096, 4096];
    let err = estimate(&wide, &hw).unwrap_err();
    assert!(err.to_string().contains("actor layer 1"), "{err}");
    assert_eq!(field_of(err), "workload.actor_hidden");
}

#[test]
fn bad_presets_and_devices_are_rejected_naming_what_is_wrong() {
    let e = presets::load("no-such-preset").unwrap_err();
    assert!(matches!(e, ModelError::UnknownPreset(..)), "{e}");
    assert!(e.to_string().contains("fixar-u50"));
    let e = presets::parse("base = \"fixar-u50\"\ndevice = \"vu19p\"\n", "user.toml").unwrap_err();
    assert!(matches!(e, ModelError::UnknownDevice(..)), "{e}");
    let e = presets::parse("base = \"fixar-u50\"\ncores = -2\n", "user.toml").unwrap_err();
    assert_eq!(field_of(e), "cores");
    for bits in [0, 500, 1024] {
        let e = presets::parse(
            &format!("base = \"fixar-u50\"\n[weight_memory]\nport_bits = {bits}\n"),
            "user.toml",
        )
        .unwrap_err();
        assert_eq!(field_of(e), "hw.weight_memory.port_bits", "{bits}");
    }
    // An unknown key is named by the TOML reader.
    let e = presets::parse(
        "base = \"fixar-u50\"\n[weight_memory]\nwrite_bits = 16\n",
        "user.toml",
    )
    .unwrap_err();
    assert!(
        matches!(e, ModelError::Parse { .. }) && e.to_string().contains("write_bits"),
        "{e}"
    );
    let e = presets::parse("base = \"fixar-u50\"\nclock_mhz = 0.0\n", "user.toml").unwrap_err();
    assert_eq!(field_of(e), "hw.clock_mhz");
    // A user file overriding a few fields keeps the base's others.
    let p = presets::parse(
        "base = \"fixar-u50\"\nname = \"mine\"\ncores = 2\n",
        "user.toml",
    )
    .unwrap();
    assert_eq!(
        (p.hw.cores, p.hw.pe_rows, p.hw.name.as_str()),
        (2, 16, "mine")
    );
    assert!(p.reference.is_none());
}

#[test]
fn sweep_specs_parse_and_reject_bad_axes() {
    let preset = presets::load("fixar-u50").unwrap();
    let w = preset.workload.unwrap();
    let s = SweepSpec::parse(
        "cores=1,2;array=8x8,16x16;precision=16,32;mode=adaptive",
        &w,
        &preset.hw,
    )
    .unwrap();
    assert_eq!(s.points().len(), 8);
    for bad in ["cores=0", "clock=-3", "array=16", "speed=3", "batch=x"] {
        let e = SweepSpec::parse(bad, &w, &preset.hw).unwrap_err();
        assert!(e.to_string().contains("sweep"), "{bad}: {e}");
    }
}
