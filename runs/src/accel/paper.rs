//! "Paper vs model": a preset's published figures (its `[reference]`) beside what the
//! model computes for the same design and workload — accelerator and system IPS per
//! batch, utilization, power, IPS/W, resources per component, the per-sample MAC
//! accounting the paper's IPS follows, and the model's readings of a table's "peak".
//! Nothing here feeds the model; it only runs it and compares.

use std::fmt::Write as _;

use accel_model::plan::Plan;
use accel_model::presets::Preset;
use accel_model::{MacAccounting, Performance, Workload};
use serde::{Deserialize, Serialize};

/// One figure: the paper's value, the model's, their difference and the tolerance the
/// reproduction is held to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PaperRow {
    pub figure: String,
    pub paper: f64,
    pub model: Option<f64>,
    pub error_pct: Option<f64>,
    pub tolerance_pct: f64,
    pub within: bool,
}

/// The model at one batch size, with the time step it implies.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchRow {
    pub batch: usize,
    pub accelerator_training_ips: f64,
    pub system_training_ips: f64,
    pub training_utilization: f64,
    /// The CPU-GPU system's IPS the paper's speed-up band implies (system / high, / low).
    pub cpu_gpu_ips_range: Option<(f64, f64)>,
    pub env_ms: f64,
    pub runtime_ms: f64,
    pub link_ms: f64,
    pub accelerator_ms: f64,
}

/// A resource figure of one Table I component, paper and model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResourceRow {
    pub component: String,
    pub resource: String,
    pub paper: u64,
    pub model: u64,
}

/// One per-sample MAC accounting and the accelerator IPS it gives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountingRow {
    pub accounting: String,
    pub macs_per_sample: f64,
    pub accelerator_training_ips: f64,
    pub error_pct: f64,
}

/// The whole comparison.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PaperComparison {
    pub source: String,
    pub headline_batch: usize,
    pub rows: Vec<PaperRow>,
    pub batches: Vec<BatchRow>,
    pub resources: Vec<ResourceRow>,
    pub accounting: Vec<AccountingRow>,
    /// The arrays' peak at one MAC per PE and cycle, GMAC/s.
    pub peak_gmac_per_s: f64,
    /// What the paper's IPS at its utilization implies per sample at that peak.
    pub implied_macs_per_sample: f64,
    /// Accelerator IPS under mechanisms the paper does not describe (what, IPS, error vs
    /// the paper's accelerator figure), to show what a gap would take to close.
    pub alternatives: Vec<(String, f64, f64)>,
    /// A comparison table's "peak", and model figures that could explain it.
    pub table_peak_ips: f64,
    pub table_peak_readings: Vec<(String, f64, f64)>,
}

fn pct(model: f64, paper: f64) -> f64 {
    100.0 * (model - paper) / paper
}

fn perf(w: &Workload, preset: &Preset) -> Option<Performance> {
    Plan::new(w)
        .estimate(&preset.hw)
        .ok()
        .and_then(|e| e.performance)
}

/// The model at each batch in `batches` for `w` on the preset's hardware.
pub fn batch_rows(preset: &Preset, w: &Workload, batches: &[usize]) -> Vec<BatchRow> {
    let band = preset.reference.as_ref().map(|r| r.speedup_vs_cpu_gpu);
    batches
        .iter()
        .filter_map(|&batch| {
            let p = perf(&Workload { batch, ..w.clone() }, preset)?;
            let t = &p.time_step;
            Some(BatchRow {
                batch,
                accelerator_training_ips: p.accelerator_training_ips,
                system_training_ips: p.system_training_ips,
                training_utilization: p.training_utilization,
                cpu_gpu_ips_range: band
                    .map(|[lo, hi]| (p.system_training_ips / hi, p.system_training_ips / lo)),
                env_ms: 1e3 * t.env_s,
                runtime_ms: 1e3 * t.runtime_s,
                link_ms: 1e3 * t.link_s,
                accelerator_ms: 1e3 * t.accelerator_s,
            })
        })
        .collect()
}

/// Runs the comparison when the preset has published figures and `w` is its workload
/// (at any batch).
pub fn compare(preset: &Preset, w: &Workload) -> Option<PaperComparison> {
    let r = preset.reference.as_ref()?;
    let own = preset.workload.as_ref()?;
    let same = Workload {
        batch: own.batch,
        ..w.clone()
    };
    if &same != own {
        return None;
    }
    let at = |batch: usize| Workload {
        batch,
        ..own.clone()
    };
    let head = perf(&at(r.headline_batch), preset)?;
    let batches = batch_rows(preset, own, &r.batches);
    let row = |figure: String, paper: f64, model: Option<f64>, tol: f64| {
        let error_pct = model.map(|m| pct(m, paper));
        PaperRow {
            figure,
            paper,
            model,
            error_pct,
            tolerance_pct: tol,
            within: error_pct.is_some_and(|e| e.abs() <= tol),
        }
    };
    let mut rows = Vec::new();
    for b in &batches {
        rows.push(row(
            format!("accelerator IPS, batch {}", b.batch),
            r.accelerator_training_ips,
            Some(b.accelerator_training_ips),
            10.0,
        ));
    }
    for b in &batches {
        let mut u = row(
            format!("PE utilization, batch {}", b.batch),
            r.training_utilization,
            Some(b.training_utilization),
            0.0,
        );
        // Utilization is held to an absolute 0.1.
        u.tolerance_pct = 100.0 * 0.1 / r.training_utilization;
        u.within = (b.training_utilization - r.training_utilization).abs() <= 0.1;
        rows.push(u);
    }
    rows.push(row(
        format!("system IPS, batch {} (headline)", r.headline_batch),
        r.system_training_ips,
        Some(head.system_training_ips),
        10.0,
    ));
    rows.push(row(
        "card power (W)".into(),
        r.power_w,
        Some(head.power_w),
        15.0,
    ));
    rows.push(row(
        "IPS/W (accelerator IPS / card power)".into(),
        r.ips_per_watt,
        Some(head.ips_per_watt),
        10.0,
    ));
    let e = Plan::new(&at(r.headline_batch)).estimate(&preset.hw).ok()?;
    let mut resources = Vec::new();
    for c in &r.resources {
        let m = if c.name == "total" {
            Some(accel_model::ComponentResources {
                name: "total".into(),
                lut: e.resources.lut,
                ff: e.resources.ff,
                bram36: e.resources.bram36,
                uram: e.resources.uram,
                dsp: e.resources.dsp,
            })
        } else {
            e.resources
                .components
                .iter()
                .find(|x| x.name == c.name)
                .cloned()
        };
        let Some(m) = m else { continue };
        for (res, paper, model) in [
            ("LUT", c.lut, m.lut),
            ("FF", c.ff, m.ff),
            ("BRAM36", c.bram36, m.bram36),
            ("URAM", c.uram, m.uram),
            ("DSP", c.dsp, m.dsp),
        ] {
            if c.name == "total" && res != "FF" {
                rows.push(row(
                    format!("Table I total {res}"),
                    paper as f64,
                    Some(model as f64),
                    15.0,
                ));
            }
            resources.push(ResourceRow {
                component: c.name.clone(),
                resource: res.into(),
                paper,
                model,
            });
        }
    }
    let accounting = [MacAccounting::Minimal, MacAccounting::Autograd]
        .into_iter()
        .filter_map(|a| {
            let p = perf(
                &Workload {
                    accounting: a,
                    ..at(r.headline_batch)
                },
                preset,
            )?;
            Some(AccountingRow {
                accounting: a.name().into(),
                macs_per_sample: p.macs_per_sample,
                accelerator_training_ips: p.accelerator_training_ips,
                error_pct: pct(p.accelerator_training_ips, r.accelerator_training_ips),
            })
        })
        .collect();
    let hw = &preset.hw;
    let peak_macs = (hw.cores * hw.pe_rows * hw.pe_cols) as f64 * hw.clock_mhz * 1e6;
    let mut sequential = preset.clone();
    sequential.hw.weight_memory.updates_behind_gradients = false;
    let smallest = r.batches.iter().copied().min().unwrap_or(r.headline_batch);
    let largest = r.batches.iter().copied().max().unwrap_or(r.headline_batch);
    let mut readings = Vec::new();
    if let Some(p) = perf(&at(smallest), &sequential) {
        readings.push((
            format!("accelerator IPS at batch {smallest} with the update passes after the backward (not hidden)"),
            p.accelerator_training_ips,
            pct(p.accelerator_training_ips, r.table_peak_ips),
        ));
    }
    if let Some(b) = batches.iter().find(|b| b.batch == largest) {
        readings.push((
            format!("system IPS at batch {largest}"),
            b.system_training_ips,
            pct(b.system_training_ips, r.table_peak_ips),
        ));
    }
    let mut outputs = preset.clone();
    outputs.hw.intra_layer_split = accel_model::IntraLayerSplit::Outputs;
    let alternatives = r
        .batches
        .iter()
        .filter_map(|&b| {
            let p = perf(&at(b), &outputs)?;
            Some((
                format!("batch {b}, intra-layer GEMMs split by outputs (no cross-core sum)"),
                p.accelerator_training_ips,
                pct(p.accelerator_training_ips, r.accelerator_training_ips),
            ))
        })
        .collect();
    Some(PaperComparison {
        alternatives,
        source: r.source.clone(),
        headline_batch: r.headline_batch,
        rows,
        batches,
        resources,
        accounting,
        peak_gmac_per_s: peak_macs / 1e9,
        implied_macs_per_sample: peak_macs * r.training_utilization / r.accelerator_training_ips,
        table_peak_ips: r.table_peak_ips,
        table_peak_readings: readings,
    })
}

fn opt(v: Option<f64>, d: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.d$}"))
}

/// The model per batch as a markdown table (with the CPU-GPU band the paper's speed-up
/// implies, when there is one).
pub fn render_batch_table(rows: &[BatchRow], s: &mut String) {
    let band = rows.iter().any(|b| b.cpu_gpu_ips_range.is_some());
    let _ = writeln!(
        s,
        "| batch | accelerator IPS | system IPS |{} utilization | env (ms) | runtime (ms) | link (ms) | FPGA (ms) |\n| ---: | ---: | ---: |{} ---: | ---: | ---: | ---: | ---: |",
        if band { " CPU-GPU IPS implied by the paper's 1.8-4.8x |" } else { "" },
        if band { " ---: |" } else { "" }
    );
    for b in rows {
        let cell = match b.cpu_gpu_ips_range {
            Some((lo, hi)) => format!(" {lo:.0}-{hi:.0} |"),
            None => String::new(),
        };
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} |{cell} {:.3} | {:.2} | {:.2} | {:.3} | {:.2} |",
            b.batch,
            b.accelerator_training_ips,
            b.system_training_ips,
            b.training_utilization,
            b.env_ms,
            b.runtime_ms,
            b.link_ms,
            b.accelerator_ms
        );
    }
}

/// The comparison as a markdown section (also the README's table).
pub fn render_md(c: &PaperComparison, s: &mut String) {
    let _ = writeln!(s, "## Paper vs model\n\nSource: {}\n", c.source);
    let _ = writeln!(
        s,
        "| figure | paper | model | error | tolerance | within |\n| --- | ---: | ---: | ---: | ---: | --- |"
    );
    for r in &c.rows {
        let d = if r.figure.starts_with("Table I") {
            0
        } else if r.paper < 10.0 {
            3
        } else {
            1
        };
        let _ = writeln!(
            s,
            "| {} | {:.d$} | {} | {} | ±{:.0}% | {} |",
            r.figure,
            r.paper,
            opt(r.model, d),
            r.error_pct.map_or("-".into(), |e| format!("{e:+.1}%")),
            r.tolerance_pct,
            if r.within { "yes" } else { "NO" }
        );
    }
    let _ = writeln!(
        s,
        "\n### Per batch: accelerator, system, and the time step\n"
    );
    render_batch_table(&c.batches, s);
    let _ = writeln!(
        s,
        "\n### Which per-sample MAC accounting the paper's IPS follows\n\nAt one MAC per PE per cycle ({:.1} GMAC/s peak) and the paper's utilization, its accelerator IPS implies {:.3}M MAC per sample.\n\n| accounting | MAC per sample | accelerator IPS, batch {} | vs paper |\n| --- | ---: | ---: | ---: |",
        c.peak_gmac_per_s,
        c.implied_macs_per_sample / 1e6,
        c.headline_batch
    );
    for a in &c.accounting {
        let _ = writeln!(
            s,
            "| {} | {:.3}M | {:.1} | {:+.1}% |",
            a.accounting,
            a.macs_per_sample / 1e6,
            a.accelerator_training_ips,
            a.error_pct
        );
    }
    let _ = writeln!(
        s,
        "\n### Accelerator IPS under mechanisms the paper does not describe\n"
    );
    for (what, v, e) in &c.alternatives {
        let _ = writeln!(s, "- {what}: {v:.1} IPS ({e:+.1}%)");
    }
    let _ = writeln!(
        s,
        "\n### Table II's \"peak\" of {:.1} IPS\n\nIt does not equal the accelerator's {:.1} IPS. Model figures that could be it (the text establishes none of them):\n",
        c.table_peak_ips,
        c.rows.first().map_or(0.0, |r| r.paper)
    );
    for (what, v, e) in &c.table_peak_readings {
        let _ = writeln!(s, "- {what}: {v:.1} IPS ({e:+.1}%)");
    }
    let _ = writeln!(
        s,
        "\n### Table I per component (paper / model)\n\n| component | LUT | FF | BRAM36 | URAM | DSP |\n| --- | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut components: Vec<&str> = Vec::new();
    for r in &c.resources {
        if !components.contains(&r.component.as_str()) {
            components.push(&r.component);
        }
    }
    for comp in components {
        let cell = |res: &str| {
            c.resources
                .iter()
                .find(|r| r.component == comp && r.resource == res)
                .map_or("-".into(), |r| format!("{} / {}", r.paper, r.model))
        };
        let _ = writeln!(
            s,
            "| {comp} | {} | {} | {} | {} | {} |",
            cell("LUT"),
            cell("FF"),
            cell("BRAM36"),
            cell("URAM"),
            cell("DSP")
        );
    }
    let _ = writeln!(s);
}
