//! The `fixar accel` figures (PNG + SVG through `crate::plot`): system and accelerator
//! IPS against batch with the paper's figures (like FIXAR's Figs. 8-9), the time
//! breakdown of one time step per batch (like its Fig. 10), IPS against cores, IPS/W
//! against bit width, cycles per phase, and the sweep's Pareto front.

use std::path::Path;

use accel_model::paper::BatchRow;
use accel_model::study::{self, Study, PHASE_GROUPS};
use accel_model::{HwConfig, Parallelism, Precision, Workload};

use crate::plot;

/// One series per mode from `(mode, points)` pairs.
fn by_mode(curves: Vec<(Parallelism, Vec<(usize, f64)>)>) -> Vec<plot::Series> {
    let series = curves.into_iter().map(|(mode, points)| plot::Series {
        label: mode.name().to_string(),
        points: points.iter().map(|&(x, y)| (x as f64, y)).collect(),
        ..Default::default()
    });
    series.collect()
}

/// Writes the figures into `dir`; returns their stems (relative to `dir`).
pub fn write_plots(
    report: &Study,
    w: &Workload,
    hw: &HwConfig,
    dir: &Path,
) -> anyhow::Result<Vec<String>> {
    let mut stems = batch_plots(report, dir)?;
    // IPS vs cores, per mode, one chart per precision (fitting points only).
    for precision in [Precision::Fxp16, Precision::Fxp32] {
        let curves = study::ips_vs_cores(w, hw, precision, 8);
        let limit = curves
            .iter()
            .flat_map(|c| &c.1)
            .map(|p| p.0)
            .max()
            .unwrap_or(0);
        let stem = format!("ips_vs_cores_{}", precision.to_string().to_lowercase());
        plot::line_chart(
            &plot::LineChart {
                title: format!(
                    "Accelerator training IPS vs AAP cores, {precision} ({}, {})",
                    hw.name, hw.device.name
                ),
                x_label: "AAP cores".into(),
                y_label: "accelerator training IPS (samples/s)".into(),
                series: by_mode(curves),
                vlines: vec![(limit as f64, format!("fit limit {limit}"))],
                ..Default::default()
            },
            &dir.join(&stem),
        )?;
        stems.push(stem);
    }
    plot::line_chart(
        &plot::LineChart {
            title: format!("Training IPS/W vs datapath width ({} cores)", hw.cores),
            x_label: "bit width (bits)".into(),
            y_label: "training IPS/W (samples/s/W)".into(),
            series: by_mode(study::ips_per_watt_vs_bits(w, hw)),
            ..Default::default()
        },
        &dir.join("ipsw_vs_bits"),
    )?;
    stems.push("ipsw_vs_bits".to_string());
    // Stacked cycles per phase for each mode x precision.
    let configs = study::kcycles_per_phase_group(w, hw);
    let stacks = PHASE_GROUPS
        .iter()
        .enumerate()
        .map(|(g, (label, _))| (label.to_string(), configs.iter().map(|c| c.2[g]).collect()));
    plot::stacked_bars(
        &plot::StackedBars {
            title: format!(
                "Cycles per phase of one training iteration ({} cores)",
                hw.cores
            ),
            x_label: "parallelism and precision".into(),
            y_label: "kcycles per iteration".into(),
            categories: configs
                .iter()
                .map(|(p, m, _)| format!("{} {p}", m.name()))
                .collect(),
            stacks: stacks.collect(),
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
    let ys = |f: fn(&BatchRow) -> f64| -> Vec<f64> { rows.iter().map(f).collect() };
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
        for (what, paper) in [
            ("accelerator", c.paper_accelerator_ips()),
            ("system", c.paper_system_ips()),
        ] {
            if let Some(paper) = paper {
                hbands.push(plot::HBand {
                    label: format!("paper: {what} {paper:.1} (+-10%)"),
                    lo: 0.9 * paper,
                    hi: 1.1 * paper,
                });
            }
        }
        if c.paper_system_ips().is_some() {
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
                ("CPU: environment".into(), ys(|b| b.env_ms)),
                ("runtime + PCIe".into(), ys(|b| b.runtime_ms + b.link_ms)),
                ("FPGA".into(), ys(|b| b.accelerator_ms)),
            ],
        },
        &dir.join("time_breakdown"),
    )?;
    Ok(vec!["ips_vs_batch".into(), "time_breakdown".into()])
}
