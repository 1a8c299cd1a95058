//! A preset and workload studied from every side `fixar accel` reports: the estimate,
//! the paper comparison ([`crate::paper`]), the model per batch, FXP32 vs FXP16, a
//! sweep with its Pareto front, the simulator's check of every phase, what the preset
//! fits and assumes, and a CPU measured elsewhere side by side. Data and computation
//! only; `runs` measures the CPU, renders and writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::paper::{self, BatchRow, PaperComparison};
use crate::plan::{Phase, Plan};
use crate::presets::Preset;
use crate::sweep::{pareto_front, SweepPoint, SweepSpec};
use crate::{Estimate, HwConfig, ModelError, Parallelism, Performance, Precision, Workload};

/// Batch sizes every study evaluates (FIXAR's four).
pub const REPORT_BATCHES: [usize; 4] = [64, 128, 256, 512];

/// What this CPU measured for the same workload, and the ratios against the estimate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CpuSide {
    /// The same agent with fixed point emulated at the workload's precision (what fixar's
    /// own training runs at here), samples per second; not the baseline for the ratios.
    pub emulated_fixed_point_ips: Option<f64>,
    /// What was timed (and what was not).
    pub measured: String,
    pub threads: usize,
    pub training_ips: f64,
    pub power_w: f64,
    pub power_source: String,
    pub ips_per_watt: f64,
}

impl CpuSide {
    /// Any CPU measurement: `training_ips` samples through a training iteration per
    /// second at `power_w` watts (IPS/W follows).
    pub fn from_measured(
        training_ips: f64,
        measured: String,
        threads: usize,
        power_w: f64,
        power_source: String,
    ) -> CpuSide {
        CpuSide {
            emulated_fixed_point_ips: None,
            measured,
            threads,
            training_ips,
            power_w,
            power_source,
            ips_per_watt: training_ips / power_w,
        }
    }
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

/// A preset and workload seen from every side the `fixar accel` report shows (its JSON
/// is this; the markdown renders the same fields).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Study {
    #[serde(flatten)]
    pub estimate: Estimate,
    pub preset_description: String,
    pub workload_source: String,
    pub notes: Vec<String>,
    pub calibration: Option<paper::Calibration>,
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
    pub simulator_checks: Vec<crate::sim::PhaseCheck>,
    /// Stems of the figures written beside the report (filled in by whoever writes them).
    pub plots: Vec<String>,
    /// The multiplier-free PE against the multiplying one (`fixar accel --pow2-terms K`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift_add: Option<crate::shift_add::PeComparison>,
}

impl Study {
    /// Everything but the CPU run and the files: preset + workload (`workload_source`
    /// says where it came from) -> the study, with the sweep and the simulator run.
    pub fn new(
        preset: &Preset,
        w: &Workload,
        workload_source: String,
        sweep: &SweepSpec,
        notes: Vec<String>,
    ) -> Result<Study, ModelError> {
        let estimate = Plan::new(w).estimate(&preset.hw)?;
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
            crate::sim::check_iteration(&small, &preset.hw, 7)
        } else {
            Vec::new()
        };
        Ok(Study {
            calibration: paper::calibration(preset, w, &estimate),
            estimate,
            preset_description: preset.description.clone(),
            workload_source,
            notes,
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
            shift_add: None,
        })
    }

    /// Adds the CPU side and the ratios.
    pub fn with_cpu(mut self, cpu: CpuSide) -> Self {
        if let Some(p) = &self.estimate.performance {
            self.speedup_vs_cpu = Some(p.accelerator_training_ips / cpu.training_ips);
            self.efficiency_ratio_vs_cpu = Some(p.ips_per_watt / cpu.ips_per_watt);
        }
        self.cpu = Some(cpu);
        self
    }
}

/// The estimate's performance; `None` when the configuration does not fit or is invalid.
pub fn performance(w: &Workload, hw: &HwConfig) -> Option<Performance> {
    Plan::new(w).estimate(hw).ok().and_then(|e| e.performance)
}

/// Accelerator training IPS against AAP cores `1..=max_cores` in each mode at
/// `precision`, fitting points only.
pub fn ips_vs_cores(
    w: &Workload,
    hw: &HwConfig,
    precision: Precision,
    max_cores: usize,
) -> Vec<(Parallelism, Vec<(usize, f64)>)> {
    let w = Workload {
        precision,
        ..w.clone()
    };
    Parallelism::ALL
        .map(|parallelism| {
            let points = (1..=max_cores).filter_map(|cores| {
                let hw = HwConfig {
                    cores,
                    parallelism,
                    ..hw.clone()
                };
                Some((cores, performance(&w, &hw)?.accelerator_training_ips))
            });
            (parallelism, points.collect())
        })
        .to_vec()
}

/// Training IPS/W against the datapath width (FXP16, FXP32) in each mode, fitting
/// points only.
pub fn ips_per_watt_vs_bits(w: &Workload, hw: &HwConfig) -> Vec<(Parallelism, Vec<(usize, f64)>)> {
    Parallelism::ALL
        .map(|parallelism| {
            let points = [Precision::Fxp16, Precision::Fxp32]
                .into_iter()
                .filter_map(|precision| {
                    let w = Workload {
                        precision,
                        ..w.clone()
                    };
                    let hw = HwConfig {
                        parallelism,
                        ..hw.clone()
                    };
                    Some((
                        precision.bits() as usize,
                        performance(&w, &hw)?.ips_per_watt,
                    ))
                });
            (parallelism, points.collect())
        })
        .to_vec()
}

/// The phases of an iteration in groups a stacked chart keeps readable.
pub const PHASE_GROUPS: [(&str, &[Phase]); 8] = [
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

/// Kilocycles per iteration of each of [`PHASE_GROUPS`] (runs per iteration counted),
/// for each precision (FXP16, FXP32) in each mode, fitting or not.
pub fn kcycles_per_phase_group(
    w: &Workload,
    hw: &HwConfig,
) -> Vec<(Precision, Parallelism, Vec<f64>)> {
    let mut out = Vec::new();
    for precision in [Precision::Fxp16, Precision::Fxp32] {
        let plan = Plan::new(&Workload {
            precision,
            ..w.clone()
        });
        for parallelism in Parallelism::ALL {
            let p = plan.performance(&HwConfig {
                parallelism,
                ..hw.clone()
            });
            let kcycles = |phase: &Phase| {
                let i = Phase::ALL
                    .iter()
                    .position(|x| x == phase)
                    .expect("phase listed");
                let ph = &p.phases[i];
                ph.runs_per_iteration * ph.cycles as f64 / 1e3
            };
            let groups = PHASE_GROUPS
                .iter()
                .map(|(_, members)| members.iter().map(kcycles).sum())
                .collect();
            out.push((precision, parallelism, groups));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    #[test]
    fn a_study_of_the_u50_has_the_paper_every_batch_both_precisions_and_cpu_ratios() {
        let p = presets::load("fixar-u50").unwrap();
        let w = p.workload.clone().unwrap();
        let sweep = SweepSpec::single(&w, &p.hw);
        let s = Study::new(&p, &w, "preset".into(), &sweep, Vec::new()).unwrap();
        assert!(s.paper.is_some() && s.calibration.is_some());
        let batches: Vec<usize> = s.batches.iter().map(|b| b.batch).collect();
        assert_eq!(batches, REPORT_BATCHES);
        assert_eq!(s.precisions.len(), 2);
        assert!(s.precisions.iter().all(|r| r.fits));
        assert_eq!(s.sweep.len(), 1);
        assert_eq!(s.simulator_batch, 8);
        assert!(s.simulator_checks.iter().all(|c| c.bit_exact));
        let perf = s.estimate.performance.clone().unwrap();
        let cpu = CpuSide::from_measured(1000.0, "t".into(), 1, 10.0, "w".into());
        assert_eq!(cpu.ips_per_watt, 100.0);
        let s = s.with_cpu(cpu);
        assert_eq!(
            s.speedup_vs_cpu,
            Some(perf.accelerator_training_ips / 1000.0)
        );
        assert_eq!(s.efficiency_ratio_vs_cpu, Some(perf.ips_per_watt / 100.0));
    }

    #[test]
    fn the_figure_data_covers_every_mode_and_every_phase_once() {
        let p = presets::load("fixar-u50").unwrap();
        let w = p.workload.clone().unwrap();
        let mut grouped: Vec<Phase> = PHASE_GROUPS.iter().flat_map(|g| g.1.to_vec()).collect();
        grouped.sort_by_key(|ph| Phase::ALL.iter().position(|x| x == ph));
        assert_eq!(grouped, Phase::ALL.to_vec());
        let configs = kcycles_per_phase_group(&w, &p.hw);
        assert_eq!(configs.len(), 2 * Parallelism::ALL.len());
        let (precision, mode, groups) = &configs[0];
        let perf = Plan::new(&Workload {
            precision: *precision,
            ..w.clone()
        })
        .performance(&HwConfig {
            parallelism: *mode,
            ..p.hw.clone()
        });
        let total: f64 = groups.iter().sum();
        assert!(
            (total - perf.iteration_cycles / 1e3).abs() < 1e-6 * total,
            "{total}"
        );
        let cores = ips_vs_cores(&w, &p.hw, Precision::Fxp16, 3);
        assert_eq!(cores.len(), 3);
        assert!(cores
            .iter()
            .all(|(_, pts)| pts.first().map(|p| p.0) == Some(1)));
        let bits = ips_per_watt_vs_bits(&w, &p.hw);
        assert!(bits
            .iter()
            .all(|(_, pts)| pts.iter().map(|p| p.0).eq([16, 32])));
    }
}
