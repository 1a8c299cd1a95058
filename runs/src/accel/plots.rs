//! The `fixar accel` figures (PNG + SVG through `crate::plot`): system and accelerator
//! IPS against batch with the paper's figures (like FIXAR's Figs. 8-9), the time
//! breakdown of one time step per batch (like its Fig. 10), IPS against cores, IPS/W
//! against bit width, cycles per phase, and the sweep's Pareto front.

use std::path::Path;

use accel_model::paper::BatchRow;
use accel_model::plan::{Phase, Plan};
use accel_model::study::Study;
use accel_model::{HwConfig, Parallelism, Performance, Precision, Workload};

use crate::plot;

const MODES: [Parallelism; 3] = Parallelism::ALL;

fn perf_at(w: &Workload, hw: &HwConfig) -> Option<Performance> {
    Plan::new(w).estimate(hw).ok().and_then(|e| e.performance)
}

/// Writes the four figures into `dir`; returns their stems (relative to `dir`).
pub fn write_plots(
    report: &Study,
    w: &Workload,
    hw: &HwConfig,
    dir: &Path,
) -> anyhow::Result<Vec<String>> {
    let mut stems = batch_plots(report, dir)?;
    // IPS vs cores, per mode, one chart per precision (fitting points only).
    for precision in [Precision::Fxp16, Precision::Fxp32] {
        let wl = Workload {
            precision,
            ..w.clone()
        };
        let mut limit = 0usize;
        let series = MODES
            .iter()
            .map(|&mode| plot::Series {
                label: mode.name().to_string(),
                points: (1..=8)
                    .filter_map(|cores| {
                        let p = perf_at(
                            &wl,
                            &HwConfig {
                                cores,
                                parallelism: mode,
                                ..hw.clone()
                            },
                        )?;
                        limit = limit.max(cores);
                        Some((cores as f64, p.accelerator_training_ips))
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        let stem = format!("ips_vs_cores_{}", precision.to_string().to_lowercase());
        plot::line_chart(
            &plot::LineChart {
                title: format!(
                    "Accelerator training IPS vs AAP cores, {precision} ({}, {})",
                    hw.name, hw.device.name
                ),
                x_label: "AAP cores".into(),
                y_label: "accelerator training IPS (samples/s)".into(),
                series,
                vlines: vec![(limit as f64, format!("fit limit {limit}"))],
                ..Default::default()
            },
            &dir.join(&stem),
        )?;
        stems.push(stem);
    }

    // IPS/W vs bit width, per mode.
    let series = MODES
        .iter()
        .map(|&mode| plot::Series {
            label: mode.name().to_string(),
            points: [Precision::Fxp16, Precision::Fxp32]
                .iter()
                .filter_map(|&precision| {
                    let p = perf_at(
                        &Workload {
                            precision,
                            ..w.clone()
                        },
                        &HwConfig {
                            parallelism: mode,
                            ..hw.clone()
                        },
                    )?;
                    Some((precision.bits() as f64, p.ips_per_watt))
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    plot::line_chart(
        &plot::LineChart {
            title: format!("Training IPS/W vs datapath width ({} cores)", hw.cores),
            x_label: "bit width (bits)".into(),
            y_label: "training IPS/W (samples/s/W)".into(),
            series,
            ..Default::default()
        },
        &dir.join("ipsw_vs_bits"),
    )?;
    stems.push("ipsw_vs_bits".to_string());

    // Stacked cycles per phase for each mode x precision.
    let mut categories = Vec::new();
    let mut per_config: Vec<Vec<f64>> = Vec::new();
    for precision in [Precision::Fxp16, Precision::Fxp32] {
        for mode in MODES {
            let p = Plan::new(&Workload {
                precision,
                ..w.clone()
            })
            .performance(&HwConfig {
                parallelism: mode,
                ..hw.clone()
            });
            categories.push(format!("{} {precision}", mode.name()));
            per_config.push(
                p.phases
                    .iter()
                    .map(|ph| ph.runs_per_iteration * ph.cycles as f64 / 1e3)
                    .collect(),
            );
        }
    }
    // Phases grouped so the stack stays readable (labels chosen to get distinct colours).
    let groups: [(&str, &[Phase]); 8] = [
        ("action inference", &[Phase::ActionInference]),
        (
            "target nets forward",
            &[Phase::TargetActor, Phase::TargetCritic],
        ),
        (
            "critic forward/backward",
            &[Phase::CriticForward, Phase::CriticBackward],
        ),
        ("critic update", &[Phase::CriticUpdate]),
        (
            "actor forward/backward",
            &[Phase::ActorForward, Phase::ActorBackward],
        ),
        ("actor update", &[Phase::ActorUpdate]),
        ("target update", &[Phase::TargetUpdate]),
        ("off-chip stalls", &[Phase::ReplayFetch]),
    ];
    let stacks = groups
        .iter()
        .map(|(label, members)| {
            let idx: Vec<usize> = members
                .iter()
                .map(|m| {
                    Phase::ALL
                        .iter()
                        .position(|p| p == m)
                        .expect("phase listed")
                })
                .collect();
            (
                label.to_string(),
                per_config
                    .iter()
                    .map(|c| idx.iter().map(|&i| c[i]).sum())
                    .collect(),
            )
        })
        .collect();
    plot::stacked_bars(
        &plot::StackedBars {
            title: format!(
                "Cycles per phase of one training iteration ({} cores)",
                hw.cores
            ),
            x_label: "parallelism and precision".into(),
            y_label: "kcycles per iteration".into(),
            categories,
            stacks,
        },
        &dir.join("cycles_per_phase"),
    )?;
    stems.push("cycles_per_phase".to_string());

    // Pareto front of the sweep.
    let mut groups: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for p in &report.sweep {
        if let (Some(ips), Some(eff)) = (p.accelerator_training_ips, p.ips_per_watt) {
            let label = format!("{} {}", p.point.precision, p.point.parallelism.name());
            match groups.iter_mut().find(|g| g.0 == label) {
                Some(g) => g.1.push((ips, eff)),
                None => groups.push((label, vec![(ips, eff)])),
            }
        }
    }
    let front = report
        .pareto_front
        .iter()
        .filter_map(|&i| {
            let p = &report.sweep[i];
            Some((p.accelerator_training_ips?, p.ips_per_watt?))
        })
        .collect();
    plot::scatter(
        &plot::Scatter {
            title: format!(
                "Sweep: accelerator training IPS vs IPS/W on {} (fitting points)",
                hw.device.name
            ),
            x_label: "accelerator training IPS (samples/s)".into(),
            y_label: "IPS/W (samples/s/W)".into(),
            groups,
            front,
        },
        &dir.join("pareto"),
    )?;
    stems.push("pareto".to_string());
    Ok(stems)
}

/// System and accelerator IPS against batch, and the time step's breakdown per batch.
fn batch_plots(report: &Study, dir: &Path) -> anyhow::Result<Vec<String>> {
    let rows = &report.batches;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let e = &report.estimate;
    let xs = |f: fn(&BatchRow) -> f64| -> Vec<(f64, f64)> {
        rows.iter().map(|b| (b.batch as f64, f(b))).collect()
    };
    let mut series = vec![
        plot::Series {
            label: "model: accelerator".into(),
            points: xs(|b| b.accelerator_training_ips),
            ..Default::default()
        },
        plot::Series {
            label: "model: system".into(),
            points: xs(|b| b.system_training_ips),
            ..Default::default()
        },
    ];
    let mut hbands = Vec::new();
    let mut vlines = Vec::new();
    if let Some(c) = &report.paper {
        let band: Vec<(f64, f64, f64)> = rows
            .iter()
            .filter_map(|b| b.cpu_gpu_ips_range.map(|(lo, hi)| (b.batch as f64, lo, hi)))
            .collect();
        series.push(plot::Series {
            label: "CPU-GPU (from the paper's 1.8-4.8x)".into(),
            points: band
                .iter()
                .map(|&(x, lo, hi)| (x, (lo * hi).sqrt()))
                .collect(),
            band,
            ..Default::default()
        });
        if let Some(r) = c
            .rows
            .iter()
            .find(|r| r.figure.starts_with("accelerator IPS"))
        {
            hbands.push(plot::HBand {
                label: format!("paper: accelerator {:.1} (+-10%)", r.paper),
                lo: 0.9 * r.paper,
                hi: 1.1 * r.paper,
            });
        }
        if let Some(r) = c.rows.iter().find(|r| r.figure.starts_with("system IPS")) {
            hbands.push(plot::HBand {
                label: format!("paper: system {:.1} (+-10%)", r.paper),
                lo: 0.9 * r.paper,
                hi: 1.1 * r.paper,
            });
            vlines.push((c.headline_batch as f64, "headline batch".to_string()));
        }
    }
    plot::line_chart(
        &plot::LineChart {
            title: format!(
                "Training IPS vs batch ({}, {} cores at {} MHz)",
                e.hw, e.cores, e.clock_mhz
            ),
            x_label: "batch size".into(),
            y_label: "training IPS (samples/s)".into(),
            series,
            hbands,
            vlines,
            ..Default::default()
        },
        &dir.join("ips_vs_batch"),
    )?;
    plot::stacked_bars(
        &plot::StackedBars {
            title: format!("One time step per batch ({})", e.hw),
            x_label: "batch size".into(),
            y_label: "ms per time step".into(),
            categories: rows.iter().map(|b| b.batch.to_string()).collect(),
            stacks: vec![
                (
                    "CPU: environment".into(),
                    rows.iter().map(|b| b.env_ms).collect(),
                ),
                (
                    "runtime + PCIe".into(),
                    rows.iter().map(|b| b.runtime_ms + b.link_ms).collect(),
                ),
                (
                    "FPGA".into(),
                    rows.iter().map(|b| b.accelerator_ms).collect(),
                ),
            ],
        },
        &dir.join("time_breakdown"),
    )?;
    Ok(vec!["ips_vs_batch".into(), "time_breakdown".into()])
}
