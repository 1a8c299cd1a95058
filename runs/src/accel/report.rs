//! The `fixar accel` report: the estimate with every figure's definition, the paper
//! comparison (`paper.rs`), FXP32 vs FXP16, phases, the simulator's check of every phase,
//! resources per component, the CPU side by side, the sweep's Pareto front, and what the
//! preset fits and assumes; as JSON and as markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use accel_model::plan::Plan;
use accel_model::presets::{self, Preset};
use accel_model::sweep::{pareto_front, SweepPoint, SweepSpec};
use accel_model::{Estimate, Performance, Precision, Workload};
use serde::{Deserialize, Serialize};

use super::paper::{self, BatchRow, PaperComparison};
use super::{model_error, CpuSide};

/// Batch sizes every report evaluates (FIXAR's four).
pub const REPORT_BATCHES: [usize; 4] = [64, 128, 256, 512];

/// The paper's system IPS and IPS/W against this model at the headline batch (the short
/// form of `paper`, kept for the pipeline's report).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Calibration {
    pub source: String,
    pub paper_training_ips: f64,
    pub model_training_ips: f64,
    pub training_ips_error_pct: f64,
    pub paper_ips_per_watt: f64,
    pub model_ips_per_watt: f64,
    pub ips_per_watt_error_pct: f64,
}

/// One precision's headline figures for the same hardware.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrecisionRow {
    pub precision: Precision,
    pub accelerator_training_ips: Option<f64>,
    /// System IPS (the `training_ips` alias).
    pub training_ips: Option<f64>,
    pub inference_ips: Option<f64>,
    pub power_w: Option<f64>,
    pub ips_per_watt: Option<f64>,
    pub fits: bool,
}

/// The whole `fixar accel` report (JSON; the markdown renders the same fields).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccelReport {
    #[serde(flatten)]
    pub estimate: Estimate,
    pub preset_description: String,
    pub workload_source: String,
    pub notes: Vec<String>,
    pub calibration: Option<Calibration>,
    /// Paper vs model, for a preset with published figures running its own workload.
    pub paper: Option<PaperComparison>,
    /// The model at each of [`REPORT_BATCHES`] (same hardware and workload).
    pub batches: Vec<BatchRow>,
    pub precisions: Vec<PrecisionRow>,
    pub cpu: Option<CpuSide>,
    /// Estimated accelerator training IPS / CPU training IPS.
    pub speedup_vs_cpu: Option<f64>,
    /// Estimated IPS/W / CPU IPS/W.
    pub efficiency_ratio_vs_cpu: Option<f64>,
    pub sweep: Vec<SweepPoint>,
    /// Indices into `sweep` of the Pareto front (accelerator IPS vs IPS/W).
    pub pareto_front: Vec<usize>,
    /// Preset parameter -> the one paper figure it is fitted to.
    pub fitted: BTreeMap<String, String>,
    /// Preset parameter -> the reason for its assumed value.
    pub assumptions: BTreeMap<String, String>,
    /// Batch the simulator ran at (the workload's, capped to keep a report quick).
    pub simulator_batch: usize,
    /// The cycle-level simulator run on every phase of this configuration (random
    /// operands): its cycles against the analytic model's, its outputs against the golden GEMM.
    pub simulator_checks: Vec<accel_model::sim::PhaseCheck>,
    pub plots: Vec<String>,
}

fn pct(model: f64, paper: f64) -> f64 {
    100.0 * (model - paper) / paper
}

/// Everything but the CPU run and the files: preset + workload -> report.
pub fn build_report(
    preset: &Preset,
    w: &Workload,
    workload_source: String,
    sweep: &SweepSpec,
    notes: Vec<String>,
) -> anyhow::Result<AccelReport> {
    let plan = Plan::new(w);
    let estimate = plan.estimate(&preset.hw).map_err(model_error)?;
    let calibration = match (&preset.reference, &estimate.performance) {
        (Some(r), Some(p))
            if Some(w) == preset.workload.as_ref() && w.batch == r.headline_batch =>
        {
            Some(Calibration {
                source: r.source.clone(),
                paper_training_ips: r.system_training_ips,
                model_training_ips: p.system_training_ips,
                training_ips_error_pct: pct(p.system_training_ips, r.system_training_ips),
                paper_ips_per_watt: r.ips_per_watt,
                model_ips_per_watt: p.ips_per_watt,
                ips_per_watt_error_pct: pct(p.ips_per_watt, r.ips_per_watt),
            })
        }
        _ => None,
    };
    let precisions = [Precision::Fxp32, Precision::Fxp16]
        .into_iter()
        .map(|precision| {
            let e = Plan::new(&Workload {
                precision,
                ..w.clone()
            })
            .estimate(&preset.hw);
            let perf = e.as_ref().ok().and_then(|e| e.performance.clone());
            PrecisionRow {
                precision,
                accelerator_training_ips: perf.as_ref().map(|p| p.accelerator_training_ips),
                training_ips: perf.as_ref().map(|p| p.system_training_ips),
                inference_ips: perf.as_ref().map(|p| p.inference_ips),
                power_w: perf.as_ref().map(|p| p.power_w),
                ips_per_watt: perf.as_ref().map(|p| p.ips_per_watt),
                fits: perf.is_some(),
            }
        })
        .collect();
    let points = sweep.run(w, &preset.hw);
    let front = pareto_front(&points);
    // Every phase, at a batch small enough for a debug build to step quickly.
    let simulator_batch = w.batch.min(4 * preset.hw.cores);
    let simulator_checks = if estimate.fit.fits {
        let small = Plan::new(&Workload {
            batch: simulator_batch,
            ..w.clone()
        });
        accel_model::sim::check_iteration(&small, &preset.hw, 7)
    } else {
        Vec::new()
    };
    Ok(AccelReport {
        estimate,
        preset_description: preset.description.clone(),
        workload_source,
        notes,
        calibration,
        paper: paper::compare(preset, w),
        batches: paper::batch_rows(preset, w, &REPORT_BATCHES),
        precisions,
        cpu: None,
        speedup_vs_cpu: None,
        efficiency_ratio_vs_cpu: None,
        sweep: points,
        pareto_front: front,
        fitted: preset.fitted.clone(),
        assumptions: preset.assumptions.clone(),
        simulator_batch,
        simulator_checks,
        plots: Vec::new(),
    })
}

impl AccelReport {
    /// Adds the CPU side and the ratios.
    pub fn with_cpu(mut self, cpu: CpuSide) -> Self {
        if let Some(p) = &self.estimate.performance {
            self.speedup_vs_cpu = Some(p.accelerator_training_ips / cpu.training_ips);
            self.efficiency_ratio_vs_cpu = Some(p.ips_per_watt / cpu.ips_per_watt);
        }
        self.cpu = Some(cpu);
        self
    }

    pub fn render_md(&self) -> String {
        let e = &self.estimate;
        let mut s = String::new();
        let _ = writeln!(s, "# Accelerator estimate: `{}` on {}\n", e.hw, e.device);
        let _ = writeln!(s, "{}\n", self.preset_description);
        let _ = writeln!(
            s,
            "- Workload: {} (from {})\n- Hardware: {} AAP cores of {} PEs, {} MHz, {} parallelism (intra-layer splits {}), {}",
            e.workload, self.workload_source, e.cores, e.array, e.clock_mhz, e.parallelism, e.intra_layer_split, e.precision
        );
        for n in &self.notes {
            let _ = writeln!(s, "- Note: {n}");
        }
        let _ = writeln!(s, "\n**Definitions.**\n");
        for d in [
            &e.accelerator_training_ips_definition,
            &e.system_training_ips_definition,
            &e.training_ips_definition,
            &e.training_utilization_definition,
            &e.ips_per_watt_definition,
            &e.inference_ips_definition,
        ] {
            let _ = writeln!(s, "- {d}");
        }
        let _ = writeln!(s);
        match &e.performance {
            None => {
                let _ = writeln!(
                    s,
                    "## Does not fit\n\nThe configuration does not fit {}: {}. No throughput is estimated for it.\n",
                    e.fit.device,
                    e.fit.exceeded.join("; ")
                );
            }
            Some(p) => render_headline(&mut s, p),
        }
        match &self.paper {
            Some(c) => paper::render_md(c, &mut s),
            None => render_batches(&mut s, &self.batches),
        }
        let _ = writeln!(s, "## FXP32 vs FXP16 (same hardware and workload)\n");
        let _ = writeln!(s, "| precision | accelerator IPS | system IPS | inference IPS | power (W) | IPS/W |\n| --- | ---: | ---: | ---: | ---: | ---: |");
        for r in &self.precisions {
            let f = |v: Option<f64>, d: usize| {
                v.map_or("does not fit".to_string(), |v| format!("{v:.d$}"))
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                r.precision,
                f(r.accelerator_training_ips, 1),
                f(r.training_ips, 1),
                f(r.inference_ips, 1),
                f(r.power_w, 2),
                f(r.ips_per_watt, 1)
            );
        }
        if let Some(p) = &e.performance {
            render_phases(&mut s, p);
        }
        if !self.simulator_checks.is_empty() {
            let _ = writeln!(
                s,
                "\n## Cycle-level simulator on this configuration\n\nEvery phase of one iteration at batch {} with random operands: cycles against the analytic model (update passes: weight-port accesses too), GEMM outputs against `quant::golden_gemm`.\n",
                self.simulator_batch
            );
            let _ = writeln!(s, "| phase | mode | GEMMs | MACs | simulated cycles | analytic cycles | simulated port accesses | analytic port accesses | bit-exact |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
            for c in &self.simulator_checks {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    c.phase.name(),
                    c.mode,
                    c.gemms,
                    c.macs,
                    c.simulated_cycles,
                    c.analytic_cycles,
                    c.simulated_port_cycles,
                    c.analytic_port_cycles,
                    if c.bit_exact { "yes" } else { "NO" }
                );
            }
        }
        let r = &e.resources;
        let fit = &e.fit;
        let d = presets::device(&fit.device).ok();
        let _ = writeln!(
            s,
            "\n## FPGA resources on {} ({})\n",
            e.device,
            if fit.fits { "fits" } else { "does NOT fit" }
        );
        let _ = writeln!(
            s,
            "| resource | used | available | utilization |\n| --- | ---: | ---: | ---: |"
        );
        if let Some(d) = d {
            for (name, used, avail, u) in [
                ("DSP", r.dsp, d.dsps, fit.dsp_util),
                ("LUT", r.lut, d.luts, fit.lut_util),
                ("FF", r.ff, d.ffs, fit.ff_util),
                ("BRAM36", r.bram36, d.bram36, fit.bram_util),
                ("URAM", r.uram, d.uram, fit.uram_util),
            ] {
                let _ = writeln!(s, "| {name} | {used} | {avail} | {:.1}% |", 100.0 * u);
            }
            let _ = writeln!(s, "\nDevice figures: {}", d.source);
        }
        let _ = writeln!(
            s,
            "\n| component | LUT | FF | BRAM36 | URAM | DSP |\n| --- | ---: | ---: | ---: | ---: | ---: |"
        );
        for c in &r.components {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                c.name, c.lut, c.ff, c.bram36, c.uram, c.dsp
            );
        }
        let _ = writeln!(s, "\n## This CPU, same workload\n");
        match &self.cpu {
            None => {
                let _ = writeln!(s, "Not measured (`--cpu-seconds 0`).");
            }
            Some(c) => {
                let _ = writeln!(
                    s,
                    "- Measured: {}\n- Threads: {}\n- Training IPS: {:.1}\n- CPU power: {:.1} W ({})\n- CPU IPS/W: {:.2}",
                    c.measured, c.threads, c.training_ips, c.power_w, c.power_source, c.ips_per_watt
                );
                if let Some(fx) = c.emulated_fixed_point_ips {
                    let _ = writeln!(
                        s,
                        "- The same agent with {} emulated bit-exactly on this CPU: {fx:.1} IPS (fixar's own training speed here; not the baseline)",
                        self.estimate.precision
                    );
                }
                if let (Some(x), Some(y)) = (self.speedup_vs_cpu, self.efficiency_ratio_vs_cpu) {
                    let _ = writeln!(s, "- Estimated accelerator speed-up: {x:.1}x; efficiency ratio (IPS/W): {y:.1}x");
                }
            }
        }
        let fitting = self.sweep.iter().filter(|p| p.fits).count();
        let _ = writeln!(
            s,
            "\n## Sweep\n\n{} design points ({} fit the device). Pareto front of accelerator training IPS vs IPS/W:\n",
            self.sweep.len(),
            fitting
        );
        let _ = writeln!(s, "| cores | array | precision | batch | clock (MHz) | mode | accelerator IPS | IPS/W | power (W) |\n| ---: | --- | --- | ---: | ---: | --- | ---: | ---: | ---: |");
        for &i in &self.pareto_front {
            let (p, d) = (&self.sweep[i], &self.sweep[i].point);
            let _ = writeln!(
                s,
                "| {} | {}x{} | {} | {} | {} | {} | {:.1} | {:.1} | {:.2} |",
                d.cores,
                d.array.0,
                d.array.1,
                d.precision,
                d.batch,
                d.clock_mhz,
                d.parallelism.name(),
                p.accelerator_training_ips.unwrap_or(0.0),
                p.ips_per_watt.unwrap_or(0.0),
                p.power_w.unwrap_or(0.0)
            );
        }
        if !self.fitted.is_empty() {
            let _ = writeln!(s, "\n## Fitted parameters of the preset\n");
            for (k, v) in &self.fitted {
                let _ = writeln!(s, "- **{k}**: {v}");
            }
        }
        if !self.assumptions.is_empty() {
            let _ = writeln!(s, "\n## Assumptions of the preset\n");
            for (k, v) in &self.assumptions {
                let _ = writeln!(s, "- **{k}**: {v}");
            }
        }
        if !self.plots.is_empty() {
            let _ = writeln!(s, "\n## Plots\n");
            for p in &self.plots {
                let _ = writeln!(s, "- ![{p}]({p}.png) ([svg]({p}.svg))");
            }
        }
        s
    }
}

fn render_headline(s: &mut String, p: &Performance) {
    let _ = writeln!(s, "## Headline\n\n| figure | value |\n| --- | ---: |");
    let t = &p.time_step;
    let w = &p.power;
    let rows = [
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
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(s);
}

/// The model per batch for a preset without published figures.
fn render_batches(s: &mut String, rows: &[BatchRow]) {
    let _ = writeln!(s, "## Per batch\n");
    paper::render_batch_table(rows, s);
    let _ = writeln!(s);
}

fn render_phases(s: &mut String, p: &Performance) {
    let _ = writeln!(
        s,
        "\n## Phases of one training iteration\n\nCycles and energy per run; `share` weights by runs per iteration.\n"
    );
    let _ = writeln!(s, "| phase | runs/iter | mode | cycles | share | utilization | load stall | reduction | port accesses (hidden) | dynamic energy (uJ) |\n| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for ph in &p.phases {
        let share = ph.runs_per_iteration * ph.cycles as f64 / p.iteration_cycles;
        let _ = writeln!(
            s,
            "| {} | {:.2} | {} | {} | {:.1}% | {:.1}% | {} | {} | {} ({}) | {:.2} |",
            ph.name,
            ph.runs_per_iteration,
            ph.mode,
            ph.cycles,
            100.0 * share,
            100.0 * ph.utilization,
            ph.load_stall_cycles,
            ph.reduction_cycles,
            ph.port_cycles,
            ph.hidden_cycles,
            ph.dynamic_energy_j * 1e6
        );
    }
}
