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

/// A table in the report's style: `|`-separated header, columns aligned by letter
/// (`l`/`r`), spaced rule.
fn table(header: &str, align: &str) -> Table {
    Table::new(&header.split('|').collect::<Vec<_>>())
        .aligned(align)
        .spaced()
}

/// `v` with `d` decimals.
fn n(v: f64, d: usize) -> String {
    format!("{v:.d$}")
}

/// `v` with `d` decimals, or `none`.
fn opt(v: Option<f64>, d: usize, none: &str) -> String {
    v.map_or(none.into(), |v| n(v, d))
}

/// A fraction as a percentage with one decimal.
fn pc(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
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
        "precision|accelerator IPS|system IPS|inference IPS|power (W)|IPS/W",
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
        let mut t = table("phase|mode|GEMMs|MACs|simulated cycles|analytic cycles|simulated port accesses|analytic port accesses|bit-exact", "llrrrrrrl");
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
    if let Some(c) = &r.shift_add {
        s += &shift_add_md(c);
    }
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
        "cores|array|precision|batch|clock (MHz)|mode|accelerator IPS|IPS/W|power (W)",
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
            n(p.accelerator_training_ips.unwrap_or(0.0), 1),
            n(p.ips_per_watt.unwrap_or(0.0), 1),
            n(p.power_w.unwrap_or(0.0), 2)
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
    let mut table = table("figure|value", "lr");
    let time_step = [t.env_s, t.runtime_s, t.link_s, t.accelerator_s].map(|x| 1e3 * x);
    for (k, v) in [
        ("accelerator training IPS", n(p.accelerator_training_ips, 1)),
        ("system training IPS", n(p.system_training_ips, 1)),
        ("training IPS (alias of system)", n(p.training_ips, 1)),
        ("inference IPS", n(p.inference_ips, 1)),
        ("card power, training (W)", n(p.power_w, 2)),
        ("IPS/W (accelerator IPS / card power)", n(p.ips_per_watt, 1)),
        ("card power, inference only (W)", n(p.inference_power_w, 2)),
        ("IPS/W, inference", n(p.inference_ips_per_watt, 1)),
        ("MAC per trained sample", n(p.macs_per_sample, 0)),
        ("accelerator time per step (us)", n(p.iteration_s * 1e6, 2)),
        (
            "time step: env / runtime / link / accelerator (ms)",
            slashed(&time_step, &[2, 2, 3, 2]),
        ),
        ("PE utilization while computing", pc(p.training_utilization)),
        ("PE utilization over every cycle", pc(p.overall_utilization)),
        ("PE utilization, inference", pc(p.inference_utilization)),
        (
            "power: FPGA static / memory / host link / board (W)",
            slashed(
                &[w.fpga_static_w, w.memory_w, w.host_link_w, w.board_w],
                &[2; 4],
            ),
        ),
        (
            "power: clocked logic / activity / regulators (W)",
            slashed(&[w.logic_w, w.activity_w, w.regulator_w], &[2; 3]),
        ),
        (
            "energy per training sample (uJ)",
            n(p.energy_per_training_sample_j * 1e6, 3),
        ),
        (
            "energy per inference (uJ)",
            n(p.energy_per_inference_j * 1e6, 3),
        ),
    ] {
        table.row(cells![k, v]);
    }
    format!("{}\n{}\n", heading(2, "Headline"), table.to_markdown())
}

/// Values with their decimals, joined by ` / `.
fn slashed(vs: &[f64], decimals: &[usize]) -> String {
    let parts: Vec<String> = vs.iter().zip(decimals).map(|(&v, &d)| n(v, d)).collect();
    parts.join(" / ")
}

/// The model per batch (with the CPU-GPU band the paper's speed-up implies, when there
/// is one).
fn batch_table(rows: &[BatchRow]) -> String {
    let band = rows.iter().any(|b| b.cpu_gpu_ips_range.is_some());
    let (cpu_gpu, align) = match band {
        true => ("|CPU-GPU IPS implied by the paper's 1.8-4.8x", "rrrrrrrrr"),
        false => ("", "rrrrrrrr"),
    };
    let header = format!("batch|accelerator IPS|system IPS{cpu_gpu}|utilization|env (ms)|runtime (ms)|link (ms)|FPGA (ms)");
    let mut t = table(&header, align);
    for b in rows {
        let mut row = cells![
            b.batch,
            n(b.accelerator_training_ips, 1),
            n(b.system_training_ips, 1)
        ];
        if let Some((lo, hi)) = b.cpu_gpu_ips_range {
            row.push(format!("{lo:.0}-{hi:.0}"));
        }
        let (u, env, rt, link, acc) = (
            b.training_utilization,
            b.env_ms,
            b.runtime_ms,
            b.link_ms,
            b.accelerator_ms,
        );
        row.extend([n(u, 3), n(env, 2), n(rt, 2), n(link, 3), n(acc, 2)]);
        t.row(row);
    }
    t.to_markdown()
}

/// Paper vs model (also the README's table).
fn paper_md(c: &PaperComparison) -> String {
    let mut rows = table("figure|paper|model|error|tolerance|within", "lrrrrl");
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
        &format!("accounting|MAC per sample|{acc_header}|vs paper"),
        "lrrr",
    );
    for a in &c.accounting {
        accounting.row(cells![
            a.accounting,
            format!("{:.3}M", a.macs_per_sample / 1e6),
            n(a.accelerator_training_ips, 1),
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
    let mut resources = table("component|LUT|FF|BRAM36|URAM|DSP", "lrrrrr");
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
    let mut losses = table(
        "batch|iteration cycles|ideal (all PEs busy)|action inference|cross-core sums|exposed updates|load stalls|fill, drain, padding",
        "rrrrrrrr",
    );
    for l in &c.losses {
        let share = |x: f64| format!("{:.0} ({:.1}%)", x, 100.0 * x / l.iteration_cycles);
        losses.row(cells![
            l.batch,
            format!("{:.0}", l.iteration_cycles),
            share(l.ideal_cycles),
            share(l.action_inference),
            share(l.reductions),
            share(l.exposed_updates),
            share(l.load_stalls),
            share(l.fill_and_padding)
        ]);
    }
    let mut spill = table(
        "batch|stored words per core|buffer words per core|activation bytes to and from HBM per iteration",
        "rrrr",
    );
    for r in &c.spill {
        spill.row(cells![
            r.batch,
            r.words_per_core,
            r.buffer_words,
            r.spilled_bytes
        ]);
    }
    let alternatives = format!(
        "{}\n{}\n{}\n{}\n{}",
        readings(&c.alternatives),
        heading(3, "Where each batch's cycles go beyond the ideal"),
        losses.to_markdown(),
        heading(
            3,
            "Stored activations against the on-chip buffers (the paper: no DRAM access)"
        ),
        spill.to_markdown(),
    );
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
        alternatives,
        heading(3, &format!("Table II's \"peak\" of {:.1} IPS", c.table_peak_ips)),
        c.paper_accelerator_ips().unwrap_or(0.0),
        readings(&c.table_peak_readings),
        heading(3, "Table I per component (paper / model)"),
        resources.to_markdown(),
    )
}

fn phases(p: &Performance) -> String {
    let mut t = table("phase|runs/iter|mode|cycles|share|utilization|load stall|reduction|port accesses (hidden)|dynamic energy (uJ)", "lrlrrrrrrr");
    for ph in &p.phases {
        let share = ph.runs_per_iteration * ph.cycles as f64 / p.iteration_cycles;
        t.row(cells![
            ph.name,
            n(ph.runs_per_iteration, 2),
            ph.mode,
            ph.cycles,
            pc(share),
            pc(ph.utilization),
            ph.load_stall_cycles,
            ph.reduction_cycles,
            format!("{} ({})", ph.port_cycles, ph.hidden_cycles),
            n(ph.dynamic_energy_j * 1e6, 2)
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
    let mut t = table("resource|used|available|utilization", "lrrr");
    let mut s = String::new();
    if let Ok(d) = presets::device(&fit.device) {
        for (name, used, avail, u) in [
            ("DSP", res.dsp, d.dsps, fit.dsp_util),
            ("LUT", res.lut, d.luts, fit.lut_util),
            ("FF", res.ff, d.ffs, fit.ff_util),
            ("BRAM36", res.bram36, d.bram36, fit.bram_util),
            ("URAM", res.uram, d.uram, fit.uram_util),
        ] {
            t.row(cells![name, used, avail, pc(u)]);
        }
        s = format!("\nDevice figures: {}\n", d.source);
    }
    let mut comps = table("component|LUT|FF|BRAM36|URAM|DSP", "lrrrrr");
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

/// The multiplier-free PE against the multiplying one (`--pow2-terms`).
fn shift_add_md(c: &accel_model::PeComparison) -> String {
    let mut t = table(
        "PE|DSP/PE|LUT/PE|FF/PE|DSP|LUT|FF|fits|inference IPS|inference W|inference IPS/W",
        "lrrrrrrlrrr",
    );
    for p in [&c.multiplying, &c.shift_add] {
        t.row(cells![
            p.pe,
            p.pe_dsp,
            p.pe_lut,
            p.pe_ff,
            p.dsp,
            p.lut,
            p.ff,
            if p.fits { "yes" } else { "no" },
            n(p.inference_ips, 0),
            n(p.inference_power_w, 2),
            n(p.inference_ips_per_watt, 1)
        ]);
    }
    let title = format!(
        "Multiplier-free PE: {}-bit weights of at most {} signed powers of two, {}-bit activations, {} PEs",
        c.weight_bits, c.terms, c.activation_bits, c.pes
    );
    format!(
        "\n{}\n{}\n{}\n",
        heading(2, &title),
        t.to_markdown(),
        c.definition
    )
}
