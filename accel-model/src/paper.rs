//! "Paper vs model": a preset's published figures (its `[reference]`) beside what the
//! model computes for the same design and workload: accelerator and system IPS per
//! batch, utilization, power, IPS/W, resources per component, the per-sample MAC
//! accounting the paper's IPS follows, and the model's readings of a table's "peak";
//! each row with its error and verdict against the tolerance it is held to. Nothing here
//! feeds the model; it only runs it and compares. `runs` renders these rows.

use crate::plan::Plan;
use crate::presets::Preset;
use crate::{Estimate, MacAccounting, Performance, Workload};
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

impl PaperRow {
    /// A figure held to `tolerance_pct` percent of the paper's value (no model value:
    /// not within).
    pub fn relative(figure: String, paper: f64, model: Option<f64>, tolerance_pct: f64) -> Self {
        let error_pct = model.map(|m| pct(m, paper));
        PaperRow {
            figure,
            paper,
            model,
            error_pct,
            tolerance_pct,
            within: error_pct.is_some_and(|e| e.abs() <= tolerance_pct),
        }
    }

    /// A figure held to an absolute `tolerance` (a fraction such as utilization); the
    /// tolerance is reported as that percentage of the paper's value.
    pub fn absolute(figure: String, paper: f64, model: f64, tolerance: f64) -> Self {
        PaperRow {
            tolerance_pct: 100.0 * tolerance / paper,
            within: (model - paper).abs() <= tolerance,
            ..PaperRow::relative(figure, paper, Some(model), 0.0)
        }
    }
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

/// Where one batch's iteration spends its cycles beyond the ideal (every PE busy every
/// cycle on the iteration's MACs), weighted by runs per iteration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LossRow {
    pub batch: usize,
    pub iteration_cycles: f64,
    /// MACs / PE slots: the cycles at 100% utilization.
    pub ideal_cycles: f64,
    /// Action inference (one state through the actor: load-bound, the same at every batch).
    pub action_inference: f64,
    /// Cross-core sums of split reductions (weight gradients under intra-batch).
    pub reductions: f64,
    /// Update passes not hidden behind weight-gradient GEMMs.
    pub exposed_updates: f64,
    /// Stationary-tile loads the streaming did not hide (training phases).
    pub load_stalls: f64,
    /// The rest: pipeline fill and drain per tile, tile padding, off-chip stall.
    pub fill_and_padding: f64,
}

/// Whether a batch's stored activations fit on chip (the paper: no DRAM access).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpillRow {
    pub batch: usize,
    /// Words one core's share of the batch keeps for backward.
    pub words_per_core: u64,
    /// Words one core's activation buffer holds.
    pub buffer_words: u64,
    /// Activation bytes per iteration written to and read back from HBM.
    pub spilled_bytes: u64,
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
    /// Where each batch's cycles go beyond the ideal.
    pub losses: Vec<LossRow>,
    /// Stored activations against the on-chip buffers, per batch.
    pub spill: Vec<SpillRow>,
    /// A comparison table's "peak", and model figures that could explain it.
    pub table_peak_ips: f64,
    pub table_peak_readings: Vec<(String, f64, f64)>,
}

/// The model's signed error against the paper, percent of the paper's figure.
pub fn pct(model: f64, paper: f64) -> f64 {
    100.0 * (model - paper) / paper
}

impl PaperComparison {
    /// The paper's accelerator training IPS (the same at every batch).
    pub fn paper_accelerator_ips(&self) -> Option<f64> {
        self.paper_figure("accelerator IPS")
    }

    /// The paper's system training IPS at the headline batch.
    pub fn paper_system_ips(&self) -> Option<f64> {
        self.paper_figure("system IPS")
    }

    fn paper_figure(&self, prefix: &str) -> Option<f64> {
        let row = self.rows.iter().find(|r| r.figure.starts_with(prefix));
        row.map(|r| r.paper)
    }
}

fn perf(w: &Workload, preset: &Preset) -> Option<Performance> {
    crate::study::performance(w, &preset.hw)
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
    let row = PaperRow::relative;
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
        // Utilization is held to an absolute 0.1.
        rows.push(PaperRow::absolute(
            format!("PE utilization, batch {}", b.batch),
            r.training_utilization,
            b.training_utilization,
            0.1,
        ));
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
            Some(crate::ComponentResources {
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
    outputs.hw.intra_layer_split = crate::IntraLayerSplit::Outputs;
    let alternatives: Vec<(String, f64, f64)> = r
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
    let mut alternatives = alternatives;
    let mut losses = Vec::new();
    let mut spill = Vec::new();
    for &b in &r.batches {
        let wb = at(b);
        let Some(p) = perf(&wb, preset) else { continue };
        let w = |f: &dyn Fn(&crate::PhaseReport) -> f64, keep: &dyn Fn(crate::Phase) -> bool| {
            p.phases
                .iter()
                .filter(|ph| keep(ph.phase))
                .map(|ph| ph.runs_per_iteration * f(ph))
                .sum::<f64>()
        };
        let all = |_: crate::Phase| true;
        let training = |ph: crate::Phase| ph != crate::Phase::ActionInference;
        let updates = |ph: crate::Phase| {
            matches!(
                ph,
                crate::Phase::CriticUpdate | crate::Phase::ActorUpdate | crate::Phase::TargetUpdate
            )
        };
        let slots = (hw.cores * hw.pe_rows * hw.pe_cols * wb.precision.lanes()) as f64;
        let macs = w(&|ph| ph.macs as f64, &all);
        let reductions = w(&|ph| ph.reduction_cycles as f64, &all);
        let action_inference = w(&|ph| ph.cycles as f64, &|ph| {
            ph == crate::Phase::ActionInference
        });
        let exposed_updates = w(&|ph| ph.cycles as f64, &updates);
        let load_stalls = w(&|ph| ph.load_stall_cycles as f64, &training);
        let ideal = macs / slots;
        let row = LossRow {
            batch: b,
            iteration_cycles: p.iteration_cycles,
            ideal_cycles: ideal,
            action_inference,
            reductions,
            exposed_updates,
            load_stalls,
            fill_and_padding: p.iteration_cycles
                - ideal
                - action_inference
                - reductions
                - exposed_updates
                - load_stalls
                + macs_in_inference(&p) / slots,
        };
        alternatives.push((
            format!("batch {b}, each cross-core gradient sum pipelined with the stream that produces it (its cycles removed)"),
            b as f64 / ((p.iteration_cycles - reductions) * hw.cycle_s()),
            pct(
                b as f64 / ((p.iteration_cycles - reductions) * hw.cycle_s()),
                r.accelerator_training_ips,
            ),
        ));
        losses.push(row);
        let plan = Plan::new(&wb);
        spill.push(SpillRow {
            batch: b,
            words_per_core: b.div_ceil(hw.cores) as u64 * plan.buffer_words_per_sample,
            buffer_words: hw.buffers.capacity_words as u64,
            spilled_bytes: 2 * 4 * crate::resources::spill_words(&plan, hw),
        });
    }
    Some(PaperComparison {
        losses,
        spill,
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

/// Of the action-inference phase, its MACs (already in the ideal cycles, so not twice a loss).
fn macs_in_inference(p: &Performance) -> f64 {
    p.phases
        .iter()
        .filter(|ph| ph.phase == crate::Phase::ActionInference)
        .map(|ph| ph.runs_per_iteration * ph.macs as f64)
        .sum()
}

/// The paper's system IPS and IPS/W against this model at the headline batch (the short
/// form of [`PaperComparison`], kept for the pipeline's report).
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

/// The calibration when `w` is the preset's own workload at the paper's headline batch
/// and `e` (its estimate) fits.
pub fn calibration(preset: &Preset, w: &Workload, e: &Estimate) -> Option<Calibration> {
    let (r, p) = (preset.reference.as_ref()?, e.performance.as_ref()?);
    (Some(w) == preset.workload.as_ref() && w.batch == r.headline_batch).then(|| Calibration {
        source: r.source.clone(),
        paper_training_ips: r.system_training_ips,
        model_training_ips: p.system_training_ips,
        training_ips_error_pct: pct(p.system_training_ips, r.system_training_ips),
        paper_ips_per_watt: r.ips_per_watt,
        model_ips_per_watt: p.ips_per_watt,
        ips_per_watt_error_pct: pct(p.ips_per_watt, r.ips_per_watt),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    fn u50() -> Preset {
        presets::load("fixar-u50").unwrap()
    }

    #[test]
    fn the_papers_figures_are_fixars_u50_numbers() {
        let r = u50().reference.unwrap();
        assert!(r.source.contains("DAC 2021"));
        assert_eq!(r.accelerator_training_ips, 53826.8);
        assert_eq!(r.batches, vec![64, 128, 256, 512]);
        assert_eq!((r.system_training_ips, r.headline_batch), (25293.3, 256));
        assert_eq!(r.speedup_vs_cpu_gpu, [1.8, 4.8]);
        assert_eq!(r.training_utilization, 0.924);
        assert_eq!((r.power_w, r.ips_per_watt), (20.4, 2638.0));
        assert_eq!(r.table_peak_ips, 38779.8);
        let total = r.resources.iter().find(|c| c.name == "total").unwrap();
        assert!(total.dsp > 0 && total.lut > 0);
    }

    #[test]
    fn rows_hold_relative_and_absolute_tolerances() {
        assert_eq!(pct(110.0, 100.0), 10.0);
        assert_eq!(pct(90.0, 100.0), -10.0);
        let r = PaperRow::relative("x".into(), 100.0, Some(109.0), 10.0);
        assert_eq!(r.error_pct, Some(9.0));
        assert!(r.within);
        assert!(!PaperRow::relative("x".into(), 100.0, Some(88.0), 10.0).within);
        let none = PaperRow::relative("x".into(), 100.0, None, 10.0);
        assert_eq!((none.error_pct, none.within), (None, false));
        // Utilization: 0.8 against 0.924 is 13.4% off but within an absolute 0.13.
        let u = PaperRow::absolute("u".into(), 0.924, 0.8, 0.13);
        assert!(u.within);
        assert!((u.tolerance_pct - 100.0 * 0.13 / 0.924).abs() < 1e-12);
        assert!((u.error_pct.unwrap() - pct(0.8, 0.924)).abs() < 1e-12);
        assert!(!PaperRow::absolute("u".into(), 0.924, 0.79, 0.13).within);
    }

    #[test]
    fn the_comparison_covers_every_figure_for_the_presets_own_workload_only() {
        let p = u50();
        let own = p.workload.clone().unwrap();
        let c = compare(
            &p,
            &Workload {
                batch: 64,
                ..own.clone()
            },
        )
        .expect("own workload");
        let r = p.reference.as_ref().unwrap();
        assert_eq!(c.batches.len(), 4);
        // 4 accelerator IPS + 4 utilization + system, power, IPS/W + Table I totals but FF.
        assert_eq!(c.rows.len(), 4 + 4 + 3 + 4, "{:?}", c.rows);
        for row in &c.rows {
            let m = row.model.unwrap();
            assert_eq!(row.error_pct, Some(pct(m, row.paper)), "{}", row.figure);
        }
        assert_eq!(c.peak_gmac_per_s, 2.0 * 256.0 * 164e6 / 1e9);
        assert_eq!(
            c.implied_macs_per_sample,
            2.0 * 256.0 * 164e6 * r.training_utilization / r.accelerator_training_ips
        );
        assert_eq!(c.accounting.len(), 2);
        assert_eq!(c.paper_accelerator_ips(), Some(r.accelerator_training_ips));
        assert_eq!(c.paper_system_ips(), Some(r.system_training_ips));
        assert_eq!(c.alternatives.len(), 2 * r.batches.len());
        assert_eq!((c.losses.len(), c.spill.len()), (4, 4));
        for l in &c.losses {
            assert!(
                l.fill_and_padding >= 0.0 && l.ideal_cycles < l.iteration_cycles,
                "{l:?}"
            );
        }
        let other = Workload {
            obs_dim: own.obs_dim + 1,
            ..own
        };
        assert!(compare(&p, &other).is_none());
    }

    #[test]
    fn calibration_is_the_headline_batch_only() {
        let p = u50();
        let own = p.workload.clone().unwrap();
        let e = Plan::new(&own).estimate(&p.hw).unwrap();
        let c = calibration(&p, &own, &e).expect("headline batch");
        let perf = e.performance.as_ref().unwrap();
        assert_eq!(c.model_training_ips, perf.system_training_ips);
        assert_eq!(
            c.training_ips_error_pct,
            pct(perf.system_training_ips, 25293.3)
        );
        let w64 = Workload { batch: 64, ..own };
        let e64 = Plan::new(&w64).estimate(&p.hw).unwrap();
        assert!(calibration(&p, &w64, &e64).is_none());
    }
}
