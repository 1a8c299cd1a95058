//! The `fixar accel` report as markdown, built from `crate::report`'s pieces: the
//! estimate with every figure's definition, paper vs model, FXP32 vs FXP16, phases, the
//! simulator's check of every phase, resources per component, the CPU side by side, the
//! sweep's Pareto front, and what the preset fits and assumes. The figures and rows come
//! from `accel_model::study` and `accel_model::paper`; this file only formats them.

use std::fmt::Write as _;

use accel_model::paper::{BatchRow, PaperComparison};
use accel_model::presets;
use accel_model::study::Study;
use accel_model::Performance;

use crate::report::{bullets, heading, Table};

/// A row's cells from anything that displays.
macro_rules! cells {
    ($($e:expr),* $(,)?) => { vec![$($e.to_string()),*] };
}

/// A table in the report's style: columns aligned by letter (`l`/`r`), spaced rule.
fn table(header: &[&str], align: &str) -> Table {
    Table::new(header).aligned(align).spaced()
}

/// `v` with `d` decimals, or `none`.
fn opt(v: Option<f64>, d: usize, none: &str) -> String {
    v.map_or(none.into(), |v| format!("{v:.d$}"))
}

/// The whole report.
pub fn render_md(r: &Study) -> String {
    let e = &r.estimate;
    let mut s = heading(
        1,
        &format!("Accelerator estimate: `{}` on {}", e.hw, e.device),
    );
    let _ = writeln!(s, "\n{}\n", r.preset_description);
    let mut items = vec![
        format!("Workload: {} (from {})", e.workload, r.workload_source),
        format!(
            "Hardware: {} AAP cores of {} PEs, {} MHz, {} parallelism (intra-layer splits {}), {}",
            e.cores, e.array, e.clock_mhz, e.parallelism, e.intra_layer_split, e.precision
        ),
    ];
    items.extend(r.notes.iter().map(|n| format!("Note: {n}")));
    s += &bullets(&items);
    s += "\n**Definitions.**\n\n";
    s += &bullets(&[
        &e.accelerator_training_ips_definition,
        &e.system_training_ips_definition,
        &e.training_ips_definition,
        &e.training_utilization_definition,
        &e.ips_per_watt_definition,
        &e.inference_ips_definition,
    ]);
    s += "\n";
    match &e.performance {
        None => {
            let _ = writeln!(
                s,
                "{}\nThe configuration does not fit {}: {}. No throughput is estimated for it.\n",
                heading(2, "Does not fit"),
                e.fit.device,
                e.fit.exceeded.join("; ")
            );
        }
        Some(p) => s += &headline(p),
    }
    match &r.paper {
        Some(c) => s += &paper_md(c),
        None => s += &format!("{}\n{}\n", heading(2, "Per batch"), batch_table(&r.batches)),
    }
    let mut t = table(
        &[
            "precision",
            "accelerator IPS",
            "system IPS",
            "inference IPS",
            "power (W)",
            "IPS/W",
        ],
        "lrrrrr",
    );
    for p in &r.precisions {
        let f = |v, d| opt(v, d, "does not fit");
        t.row(cells![
            p.precision,
            f(p.accelerator_training_ips, 1),
            f(p.training_ips, 1),
            f(p.inference_ips, 1),
            f(p.power_w, 2),
            f(p.ips_per_watt, 1)
        ]);
    }
    let _ = write!(
        s,
        "{}\n{}",
        heading(2, "FXP32 vs FXP16 (same hardware and workload)"),
        t.to_markdown()
    );
    if let Some(p) = &e.performance {
        s += &phases(p);
    }
    if !r.simulator_checks.is_empty() {
        let mut t = table(
            &[
                "phase",
                "mode",
                "GEMMs",
                "MACs",
                "simulated cycles",
                "analytic cycles",
                "simulated port accesses",
                "analytic port accesses",
                "bit-exact",
            ],
            "llrrrrrrl",
        );
        for c in &r.simulator_checks {
            t.row(cells![
                c.phase.name(),
                c.mode,
                c.gemms,
                c.macs,
                c.simulated_cycles,
                c.analytic_cycles,
                c.simulated_port_cycles,
                c.analytic_port_cycles,
                if c.bit_exact { "yes" } else { "NO" }
            ]);
        }
        let _ = write!(
            s,
            "\n{}\nEvery phase of one iteration at batch {} with random operands: cycles against the analytic model (update passes: weight-port accesses too), GEMM outputs against `quant::golden_gemm`.\n\n{}",
            heading(2, "Cycle-level simulator on this configuration"),
            r.simulator_batch,
            t.to_markdown()
        );
    }
    s += &resources(r);
    let _ = write!(s, "\n{}\n", heading(2, "This CPU, same workload"));
    match &r.cpu {
        None => s += "Not measured (`--cpu-seconds 0`).\n",
        Some(c) => {
            let mut items = vec![
                format!("Measured: {}", c.measured),
                format!("Threads: {}", c.threads),
                format!("Training IPS: {:.1}", c.training_ips),
                format!("CPU power: {:.1} W ({})", c.power_w, c.power_source),
                format!("CPU IPS/W: {:.2}", c.ips_per_watt),
            ];
            if let Some(fx) = c.emulated_fixed_point_ips {
                items.push(format!("The same agent with {} emulated bit-exactly on this CPU: {fx:.1} IPS (fixar's own training speed here; not the baseline)", e.precision));
            }
            if let (Some(x), Some(y)) = (r.speedup_vs_cpu, r.efficiency_ratio_vs_cpu) {
                items.push(format!(
                    "Estimated accelerator speed-up: {x:.1}x; efficiency ratio (IPS/W): {y:.1}x"
                ));
            }
            s += &bullets(&items);
        }
    }
    let mut t = table(
        &[
            "cores",
            "array",
            "precision",
            "batch",
            "clock (MHz)",
            "mode",
            "accelerator IPS",
            "IPS/W",
            "power (W)",
        ],
        "rllrrlrrr",
    );
    for &i in &r.pareto_front {
        let (p, d) = (&r.sweep[i], &r.sweep[i].point);
        t.row(cells![
            d.cores,
            format!("{}x{}", d.array.0, d.array.1),
            d.precision,
            d.batch,
            d.clock_mhz,
            d.parallelism.name(),
            format!("{:.1}", p.accelerator_training_ips.unwrap_or(0.0)),
            format!("{:.1}", p.ips_per_watt.unwrap_or(0.0)),
            format!("{:.2}", p.power_w.unwrap_or(0.0))
        ]);
    }
    let _ = write!(
        s,
        "\n{}\n{} design points ({} fit the device). Pareto front of accelerator training IPS vs IPS/W:\n\n{}",
        heading(2, "Sweep"),
        r.sweep.len(),
        r.sweep.iter().filter(|p| p.fits).count(),
        t.to_markdown()
    );
    for (title, map) in [
        ("Fitted parameters of the preset", &r.fitted),
        ("Assumptions of the preset", &r.assumptions),
    ] {
        if !map.is_empty() {
            let items: Vec<String> = map.iter().map(|(k, v)| format!("**{k}**: {v}")).collect();
            let _ = write!(s, "\n{}\n{}", heading(2, title), bullets(&items));
        }
    }
    if !r.plots.is_empty() {
        let items: Vec<String> = r
            .plots
            .iter()
            .map(|p| format!("![{p}]({p}.png) ([svg]({p}.svg))"))
            .collect();
        let _ = write!(s, "\n{}\n{}", heading(2, "Plots"), bullets(&items));
    }
    s
}

fn headline(p: &Performance) -> String {
    let (t, w) = (&p.time_step, &p.power);
    let mut table = table(&["figure", "value"], "lr");
    for (k, v) in [
        (
            "accelerator training IPS",
            format!("{:.1}", p.accelerator_training_ips),
        ),
        (
            "system training IPS",
            format!("{:.1}", p.system_training_ips),
        ),
        (
            "training IPS (alias of system)",
            format!("{:.1}", p.training_ips),
        ),
        ("inference IPS", format!("{:.1}", p.inference_ips)),
        ("card power, training (W)", format!("{:.2}", p.power_w)),
        (
            "IPS/W (accelerator IPS / card power)",
            format!("{:.1}", p.ips_per_watt),
        ),
        (
            "card power, inference only (W)",
            format!("{:.2}", p.inference_power_w),
        ),
        (
            "IPS/W, inference",
            format!("{:.1}", p.inference_ips_per_watt),
        ),
        (
            "MAC per trained sample",
            format!("{:.0}", p.macs_per_sample),
        ),
        (
            "accelerator time per step (us)",
            format!("{:.2}", p.iteration_s * 1e6),
        ),
        (
            "time step: env / runtime / link / accelerator (ms)",
            format!(
                "{:.2} / {:.2} / {:.3} / {:.2}",
                1e3 * t.env_s,
                1e3 * t.runtime_s,
                1e3 * t.link_s,
                1e3 * t.accelerator_s
            ),
        ),
        (
            "PE utilization while computing",
            format!("{:.1}%", 100.0 * p.training_utilization),
        ),
        (
            "PE utilization over every cycle",
            format!("{:.1}%", 100.0 * p.overall_utilization),
        ),
        (
            "PE utilization, inference",
            format!("{:.1}%", 100.0 * p.inference_utilization),
        ),
        (
            "power: FPGA static / memory / host link / board (W)",
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2}",
                w.fpga_static_w, w.memory_w, w.host_link_w, w.board_w
            ),
        ),
        (
            "power: clocked logic / activity / regulators (W)",
            format!(
                "{:.2} / {:.2} / {:.2}",
                w.logic_w, w.activity_w, w.regulator_w
            ),
        ),
        (
            "energy per training sample (uJ)",
            format!("{:.3}", p.energy_per_training_sample_j * 1e6),
        ),
        (
            "energy per inference (uJ)",
            format!("{:.3}", p.energy_per_inference_j * 1e6),
        ),
    ] {
        table.row(cells![k, v]);
    }
    format!("{}\n{}\n", heading(2, "Headline"), table.to_markdown())
}

/// The model per batch (with the CPU-GPU band the paper's speed-up implies, when there
/// is one).
fn batch_table(rows: &[BatchRow]) -> String {
    let band = rows.iter().any(|b| b.cpu_gpu_ips_range.is_some());
    let mut header = vec!["batch", "accelerator IPS", "system IPS"];
    if band {
        header.push("CPU-GPU IPS implied by the paper's 1.8-4.8x");
    }
    header.extend([
        "utilization",
        "env (ms)",
        "runtime (ms)",
        "link (ms)",
        "FPGA (ms)",
    ]);
    let mut t = table(&header, &"r".repeat(header.len()));
    for b in rows {
        let mut row = cells![
            b.batch,
            format!("{:.1}", b.accelerator_training_ips),
            format!("{:.1}", b.system_training_ips)
        ];
        if let Some((lo, hi)) = b.cpu_gpu_ips_range {
            row.push(format!("{lo:.0}-{hi:.0}"));
        }
        row.extend(cells![
            format!("{:.3}", b.training_utilization),
            format!("{:.2}", b.env_ms),
            format!("{:.2}", b.runtime_ms),
            format!("{:.3}", b.link_ms),
            format!("{:.2}", b.accelerator_ms)
        ]);
        t.row(row);
    }
    t.to_markdown()
}

/// Paper vs model (also the README's table).
fn paper_md(c: &PaperComparison) -> String {
    let mut rows = table(
        &["figure", "paper", "model", "error", "tolerance", "within"],
        "lrrrrl",
    );
    for r in &c.rows {
        let d = if r.figure.starts_with("Table I") {
            0
        } else if r.paper < 10.0 {
            3
        } else {
            1
        };
        rows.row(cells![
            r.figure,
            format!("{:.d$}", r.paper),
            opt(r.model, d, "-"),
            r.error_pct.map_or("-".into(), |e| format!("{e:+.1}%")),
            format!("±{:.0}%", r.tolerance_pct),
            if r.within { "yes" } else { "NO" }
        ]);
    }
    let acc_header = format!("accelerator IPS, batch {}", c.headline_batch);
    let mut accounting = table(
        &["accounting", "MAC per sample", &acc_header, "vs paper"],
        "lrrr",
    );
    for a in &c.accounting {
        accounting.row(cells![
            a.accounting,
            format!("{:.3}M", a.macs_per_sample / 1e6),
            format!("{:.1}", a.accelerator_training_ips),
            format!("{:+.1}%", a.error_pct)
        ]);
    }
    let readings = |v: &[(String, f64, f64)]| {
        let items: Vec<String> = v
            .iter()
            .map(|(what, v, e)| format!("{what}: {v:.1} IPS ({e:+.1}%)"))
            .collect();
        bullets(&items)
    };
    let mut resources = table(
        &["component", "LUT", "FF", "BRAM36", "URAM", "DSP"],
        "lrrrrr",
    );
    let mut components: Vec<&str> = Vec::new();
    for r in &c.resources {
        if !components.contains(&r.component.as_str()) {
            components.push(&r.component);
        }
    }
    for comp in components {
        let mut row = cells![comp];
        row.extend(["LUT", "FF", "BRAM36", "URAM", "DSP"].map(|res| {
            c.resources
                .iter()
                .find(|r| r.component == comp && r.resource == res)
                .map_or("-".into(), |r| format!("{} / {}", r.paper, r.model))
        }));
        resources.row(row);
    }
    format!(
        "{}\nSource: {}\n\n{}\n{}\n{}\n{}\nAt one MAC per PE per cycle ({:.1} GMAC/s peak) and the paper's utilization, its accelerator IPS implies {:.3}M MAC per sample.\n\n{}\n{}\n{}\n{}\nIt does not equal the accelerator's {:.1} IPS. Model figures that could be it (the text establishes none of them):\n\n{}\n{}\n{}\n",
        heading(2, "Paper vs model"),
        c.source,
        rows.to_markdown(),
        heading(3, "Per batch: accelerator, system, and the time step"),
        batch_table(&c.batches),
        heading(3, "Which per-sample MAC accounting the paper's IPS follows"),
        c.peak_gmac_per_s,
        c.implied_macs_per_sample / 1e6,
        accounting.to_markdown(),
        heading(3, "Accelerator IPS under mechanisms the paper does not describe"),
        readings(&c.alternatives),
        heading(3, &format!("Table II's \"peak\" of {:.1} IPS", c.table_peak_ips)),
        c.rows.first().map_or(0.0, |r| r.paper),
        readings(&c.table_peak_readings),
        heading(3, "Table I per component (paper / model)"),
        resources.to_markdown(),
    )
}

fn phases(p: &Performance) -> String {
    let mut t = table(
        &[
            "phase",
            "runs/iter",
            "mode",
            "cycles",
            "share",
            "utilization",
            "load stall",
            "reduction",
            "port accesses (hidden)",
            "dynamic energy (uJ)",
        ],
        "lrlrrrrrrr",
    );
    for ph in &p.phases {
        let share = ph.runs_per_iteration * ph.cycles as f64 / p.iteration_cycles;
        t.row(cells![
            ph.name,
            format!("{:.2}", ph.runs_per_iteration),
            ph.mode,
            ph.cycles,
            format!("{:.1}%", 100.0 * share),
            format!("{:.1}%", 100.0 * ph.utilization),
            ph.load_stall_cycles,
            ph.reduction_cycles,
            format!("{} ({})", ph.port_cycles, ph.hidden_cycles),
            format!("{:.2}", ph.dynamic_energy_j * 1e6)
        ]);
    }
    format!(
        "\n{}\nCycles and energy per run; `share` weights by runs per iteration.\n\n{}",
        heading(2, "Phases of one training iteration"),
        t.to_markdown()
    )
}

/// FPGA resources: used against the device, then per component.
fn resources(r: &Study) -> String {
    let (e, fit) = (&r.estimate, &r.estimate.fit);
    let res = &e.resources;
    let mut t = table(&["resource", "used", "available", "utilization"], "lrrr");
    let mut s = String::new();
    if let Ok(d) = presets::device(&fit.device) {
        for (name, used, avail, u) in [
            ("DSP", res.dsp, d.dsps, fit.dsp_util),
            ("LUT", res.lut, d.luts, fit.lut_util),
            ("FF", res.ff, d.ffs, fit.ff_util),
            ("BRAM36", res.bram36, d.bram36, fit.bram_util),
            ("URAM", res.uram, d.uram, fit.uram_util),
        ] {
            t.row(cells![name, used, avail, format!("{:.1}%", 100.0 * u)]);
        }
        s = format!("\nDevice figures: {}\n", d.source);
    }
    let mut comps = table(
        &["component", "LUT", "FF", "BRAM36", "URAM", "DSP"],
        "lrrrrr",
    );
    for c in &res.components {
        comps.row(cells![c.name, c.lut, c.ff, c.bram36, c.uram, c.dsp]);
    }
    let title = format!(
        "FPGA resources on {} ({})",
        e.device,
        if fit.fits { "fits" } else { "does NOT fit" }
    );
    format!(
        "\n{}\n{}{s}\n{}",
        heading(2, &title),
        t.to_markdown(),
        comps.to_markdown()
    )
}
