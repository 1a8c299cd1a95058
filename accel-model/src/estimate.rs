//! From a plan and a configuration to the figures: accelerator and system training IPS,
//! inference IPS, card power, IPS/W, cycles and energy per phase, utilization, and the
//! FPGA resources and fit (`resources.rs`), each figure with its definition.

use serde::{Deserialize, Serialize};

use crate::analytic::{phase_costs, Cost};
use crate::error::ModelError;
use crate::host::{time_step, TimeStep};
use crate::hw::HwConfig;
use crate::plan::{Op, Phase, Plan};
use crate::power::{card_power, PowerBreakdown};
use crate::resources::{check_memories, fit, logic_counts, resources, spill_words, Fit, Resources};
use crate::workload::{Precision, Workload};

/// What accelerator training IPS counts; printed with every figure.
pub const ACCELERATOR_IPS_DEFINITION: &str = "accelerator_training_ips = batch / accelerator \
time of one time step; that time = one action inference for the environment step, target actor \
and target critic(s) forward, critic(s) forward, backward and update, and (every policy_delay \
iterations, amortized) actor forward, backward through critic 1, actor update and soft target \
updates, plus any off-chip stall. Host, runtime and link time are not counted.";

/// What system training IPS counts; printed with every figure.
pub const SYSTEM_IPS_DEFINITION: &str = "system_training_ips = batch / end-to-end time of one \
time step = environment step on the CPU (host.env_ms) + the accelerator runtime's per-batch \
overhead (host.runtime_ms) + the replay batch over the host link + the accelerator time above, \
one after the other.";

/// `training_ips` is kept as an alias; printed with every figure.
pub const TRAINING_IPS_DEFINITION: &str = "training_ips is an alias of system_training_ips \
(kept for older readers of report.json); see system_training_ips.";

/// What inference IPS counts; printed with every figure.
pub const INFERENCE_IPS_DEFINITION: &str = "inference IPS = actions per second when the \
accelerator only runs action inference: inference_batch states through the actor per pass \
(1 = one environment), passes back to back.";

/// What training utilization counts; printed with every figure.
pub const UTILIZATION_DEFINITION: &str = "training_utilization = MACs / (PE slots x cycles of \
the iteration's GEMM phases): how busy the arrays are while they compute (tile padding, \
pipeline fill, load stalls and cross-core reductions count as idle; exposed update and stall \
cycles, when the arrays do not compute, are excluded). overall_utilization counts every cycle.";

/// What IPS/W counts; printed with every figure.
pub const IPS_PER_WATT_DEFINITION: &str = "ips_per_watt = accelerator_training_ips / power_w, \
power_w = average card power (FPGA, off-chip memory, host link, board, regulators) while \
training, as FIXAR defines it (accelerator IPS over the whole card's power).";

/// One phase in the report (cycles and energy are per run; multiply by
/// `runs_per_iteration` for the iteration's share).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    pub phase: Phase,
    pub name: String,
    pub runs_per_iteration: f64,
    pub mode: String,
    /// Cycles the phase adds to the iteration (exposed cycles for update passes).
    pub cycles: u64,
    pub macs: u64,
    /// MACs / (cycles x cores x PEs x lanes).
    pub utilization: f64,
    pub load_stall_cycles: u64,
    pub reduction_cycles: u64,
    /// Weight-port cycles of the phase's update passes, and how many of them hide behind
    /// weight-gradient GEMMs.
    pub port_cycles: u64,
    pub hidden_cycles: u64,
    /// Dynamic energy of the phase's events (MACs, on-chip, off-chip), J per run.
    pub dynamic_energy_j: f64,
}

/// The performance half of an estimate (absent when the configuration does not fit).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Performance {
    pub accelerator_training_ips: f64,
    pub system_training_ips: f64,
    /// Alias of `system_training_ips` ([`TRAINING_IPS_DEFINITION`]).
    pub training_ips: f64,
    pub inference_ips: f64,
    /// Average card power over a training time step's accelerator part, W.
    pub power_w: f64,
    /// accelerator_training_ips / power_w.
    pub ips_per_watt: f64,
    /// Average card power while only running action inference, W.
    pub inference_power_w: f64,
    pub inference_ips_per_watt: f64,
    pub iteration_cycles: f64,
    pub iteration_s: f64,
    pub inference_cycles: u64,
    /// Array utilization while computing ([`UTILIZATION_DEFINITION`]).
    pub training_utilization: f64,
    /// Array utilization over every cycle of the iteration.
    pub overall_utilization: f64,
    pub inference_utilization: f64,
    /// MACs per trained sample (the iteration's MACs / batch).
    pub macs_per_sample: f64,
    pub energy_per_training_sample_j: f64,
    pub energy_per_inference_j: f64,
    /// One time step of the whole system ([`SYSTEM_IPS_DEFINITION`]).
    pub time_step: TimeStep,
    pub power: PowerBreakdown,
    pub phases: Vec<PhaseReport>,
}

/// The whole estimate for one workload on one configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub hw: String,
    pub device: String,
    pub workload: String,
    pub precision: Precision,
    pub parallelism: String,
    /// What intra-layer GEMMs split over the cores: `inputs` (FIXAR) or `outputs`.
    pub intra_layer_split: String,
    pub cores: usize,
    pub array: String,
    pub clock_mhz: f64,
    pub batch: usize,
    pub resources: Resources,
    pub fit: Fit,
    #[serde(flatten)]
    pub performance: Option<Performance>,
    pub accelerator_training_ips_definition: String,
    pub system_training_ips_definition: String,
    pub training_ips_definition: String,
    pub inference_ips_definition: String,
    pub training_utilization_definition: String,
    pub ips_per_watt_definition: String,
}

impl Plan {
    /// Performance of the plan on `hw`, without the device-fit check (use
    /// [`Plan::estimate`] for reports; this is what a sweep point would deliver if it fit).
    pub fn performance(&self, hw: &HwConfig) -> Performance {
        let w = &self.workload;
        let precision = w.precision;
        let p = &hw.power;
        let mac_pj = match precision {
            Precision::Fxp32 => p.mac_pj_fxp32,
            Precision::Fxp16 => p.mac_pj_fxp16,
        };
        let dynamic_j = |c: &Cost| {
            1e-12
                * (c.macs as f64 * mac_pj
                    + c.sram_words as f64 * p.sram_pj_per_word
                    + c.offchip_bytes as f64 * p.offchip_pj_per_byte)
        };
        let slots = (hw.cores * hw.pe_rows * hw.pe_cols * precision.lanes()) as f64;
        let util = |macs: f64, cycles: f64| {
            if cycles > 0.0 {
                macs / (cycles * slots)
            } else {
                0.0
            }
        };

        let mut costs = phase_costs(self, hw);
        let compute: f64 = costs
            .iter()
            .map(|c| c.runs_per_iteration * c.cost.cycles as f64)
            .sum();
        // The next replay batch is prefetched, and spilled activations are written and
        // read back, during this iteration's compute.
        let offchip = self.replay_bytes + 2 * 4 * spill_words(self, hw);
        let fetch = (offchip as f64 / hw.offchip_bytes_per_cycle()).ceil();
        if let Some(rf) = costs.iter_mut().find(|c| c.phase == Phase::ReplayFetch) {
            rf.cost.cycles = (fetch - compute).max(0.0) as u64;
            rf.cost.offchip_bytes = offchip;
        }
        let phases: Vec<PhaseReport> = costs
            .iter()
            .map(|c| PhaseReport {
                phase: c.phase,
                name: c.phase.name().to_string(),
                runs_per_iteration: c.runs_per_iteration,
                mode: c.mode.clone(),
                cycles: c.cost.cycles,
                macs: c.cost.macs,
                utilization: util(c.cost.macs as f64, c.cost.cycles as f64),
                load_stall_cycles: c.cost.load_stall_cycles,
                reduction_cycles: c.cost.reduction_cycles,
                port_cycles: c.cost.port_cycles,
                hidden_cycles: c.cost.hidden_cycles,
                dynamic_energy_j: dynamic_j(&c.cost),
            })
            .collect();
        let weighted = |f: &dyn Fn(&PhaseReport) -> f64| -> f64 {
            phases.iter().map(|p| p.runs_per_iteration * f(p)).sum()
        };
        let has_gemm: Vec<bool> = self
            .phases
            .iter()
            .map(|ph| ph.ops.iter().any(|o| matches!(o, Op::Gemm(_))))
            .collect();
        let gemm_cycles: f64 = phases
            .iter()
            .zip(&has_gemm)
            .filter(|(_, g)| **g)
            .map(|(p, _)| p.runs_per_iteration * p.cycles as f64)
            .sum();
        let iteration_cycles = weighted(&|p| p.cycles as f64);
        let iteration_s = iteration_cycles * hw.cycle_s();
        let macs = weighted(&|p| p.macs as f64);
        let logic = logic_counts(hw);
        let power = card_power(hw, logic, weighted(&|p| p.dynamic_energy_j), iteration_s);
        let accelerator_training_ips = w.batch as f64 / iteration_s;
        let step = time_step(hw, self.replay_bytes, iteration_s);
        let system_training_ips = w.batch as f64 / step.total_s;

        let inf = &phases[0];
        debug_assert_eq!(inf.phase, Phase::ActionInference);
        let inference_s = inf.cycles as f64 * hw.cycle_s();
        let inference_power = card_power(hw, logic, inf.dynamic_energy_j, inference_s);
        let inference_ips = w.inference_batch as f64 / inference_s;
        Performance {
            accelerator_training_ips,
            system_training_ips,
            training_ips: system_training_ips,
            inference_ips,
            power_w: power.total_w,
            ips_per_watt: accelerator_training_ips / power.total_w,
            inference_power_w: inference_power.total_w,
            inference_ips_per_watt: inference_ips / inference_power.total_w,
            iteration_cycles,
            iteration_s,
            inference_cycles: inf.cycles,
            training_utilization: util(macs, gemm_cycles),
            overall_utilization: util(macs, iteration_cycles),
            inference_utilization: inf.utilization,
            macs_per_sample: macs / w.batch as f64,
            energy_per_training_sample_j: power.total_w * iteration_s / w.batch as f64,
            energy_per_inference_j: inference_power.total_w * inference_s
                / w.inference_batch as f64,
            time_step: step,
            power,
            phases,
        }
    }

    /// The full estimate: validates, checks memories and device fit, and includes the
    /// performance only when the configuration fits.
    pub fn estimate(&self, hw: &HwConfig) -> Result<Estimate, ModelError> {
        hw.validate()?;
        check_memories(self, hw)?;
        let res = resources(hw);
        let mut fit = fit(hw, &res);
        let mut performance = None;
        if fit.fits {
            let perf = self.performance(hw);
            match hw.device.power_budget_w {
                Some(budget) if perf.power_w > budget => {
                    fit.fits = false;
                    fit.exceeded.push(format!(
                        "power {:.1} W > board limit {budget} W",
                        perf.power_w
                    ));
                }
                _ => performance = Some(perf),
            }
        }
        let w = &self.workload;
        Ok(Estimate {
            hw: hw.name.clone(),
            device: hw.device.name.clone(),
            workload: w.describe(),
            precision: w.precision,
            parallelism: hw.parallelism.name().to_string(),
            intra_layer_split: match hw.intra_layer_split {
                crate::hw::IntraLayerSplit::Inputs => "inputs",
                crate::hw::IntraLayerSplit::Outputs => "outputs",
            }
            .to_string(),
            cores: hw.cores,
            array: format!("{}x{}", hw.pe_rows, hw.pe_cols),
            clock_mhz: hw.clock_mhz,
            batch: w.batch,
            resources: res,
            fit,
            performance,
            accelerator_training_ips_definition: ACCELERATOR_IPS_DEFINITION.to_string(),
            system_training_ips_definition: SYSTEM_IPS_DEFINITION.to_string(),
            training_ips_definition: TRAINING_IPS_DEFINITION.to_string(),
            inference_ips_definition: INFERENCE_IPS_DEFINITION.to_string(),
            training_utilization_definition: UTILIZATION_DEFINITION.to_string(),
            ips_per_watt_definition: IPS_PER_WATT_DEFINITION.to_string(),
        })
    }
}

/// Validates the workload, plans it and estimates it on `hw`.
pub fn estimate(workload: &Workload, hw: &HwConfig) -> Result<Estimate, ModelError> {
    workload.validate()?;
    Plan::new(workload).estimate(hw)
}
