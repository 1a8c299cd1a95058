//! From a plan and a configuration to the figures: IPS, power, IPS/W, cycles and energy
//! per phase, utilization, FPGA resources and whether the design fits its device.

use serde::{Deserialize, Serialize};

use crate::analytic::{phase_cost, ArrayGeom, Cost, PhaseCost};
use crate::error::ModelError;
use crate::hw::{HwConfig, MemKind};
use crate::plan::{Phase, Plan};
use crate::workload::{Precision, Workload};

/// What training IPS counts; printed with every figure.
pub const TRAINING_IPS_DEFINITION: &str = "training IPS = samples through one full training \
iteration per second = batch / iteration time; one iteration = one action inference for the \
environment step, target actor and target critic(s) forward, critic(s) forward, backward and \
update, and (every policy_delay iterations, amortized) actor forward, backward through critic 1, \
actor update and soft target updates, plus any replay-fetch stall. The environment itself runs \
on the host and is not counted.";

/// What inference IPS counts; printed with every figure.
pub const INFERENCE_IPS_DEFINITION: &str = "inference IPS = actions per second when the \
accelerator only runs action inference: inference_batch states through the actor per pass \
(1 = one environment), passes back to back.";

/// FPGA resources of one configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub dsp: u64,
    pub lut: u64,
    pub ff: u64,
    pub bram36: u64,
    pub uram: u64,
}

/// Whether the configuration fits its device, and by how much.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub device: String,
    pub fits: bool,
    /// Resources (or the board power limit) exceeded, e.g. `dsp 6144 > 5952`.
    pub exceeded: Vec<String>,
    /// Used / available per resource, 0..1 when it fits.
    pub dsp_util: f64,
    pub lut_util: f64,
    pub ff_util: f64,
    pub bram_util: f64,
    pub uram_util: f64,
}

/// One phase in the report (cycles and energy are per run; multiply by
/// `runs_per_iteration` for the iteration's share).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    pub phase: Phase,
    pub name: String,
    pub runs_per_iteration: f64,
    pub mode: String,
    pub cycles: u64,
    pub macs: u64,
    /// MACs / (cycles x cores x PEs x lanes).
    pub utilization: f64,
    pub load_stall_cycles: u64,
    pub reduction_cycles: u64,
    /// Dynamic energy of the phase's events (MACs, on-chip, off-chip), J per run.
    pub dynamic_energy_j: f64,
}

/// The performance half of an estimate (absent when the configuration does not fit).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Performance {
    pub training_ips: f64,
    pub inference_ips: f64,
    /// Average power over a training iteration, W.
    pub power_w: f64,
    /// training_ips / power_w.
    pub ips_per_watt: f64,
    /// Average power while only running action inference, W.
    pub inference_power_w: f64,
    pub inference_ips_per_watt: f64,
    pub iteration_cycles: f64,
    pub iteration_s: f64,
    pub inference_cycles: u64,
    /// Array utilization over the whole iteration (update passes count as idle).
    pub training_utilization: f64,
    pub inference_utilization: f64,
    pub energy_per_training_sample_j: f64,
    pub energy_per_inference_j: f64,
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
    pub cores: usize,
    pub array: String,
    pub clock_mhz: f64,
    pub batch: usize,
    pub resources: Resources,
    pub fit: Fit,
    #[serde(flatten)]
    pub performance: Option<Performance>,
    pub training_ips_definition: String,
    pub inference_ips_definition: String,
}

/// Resources of a configuration from its per-part costs.
pub fn resources(hw: &HwConfig) -> Resources {
    let r = &hw.resources;
    let n = hw.cores as u64;
    let pes = (hw.pe_rows * hw.pe_cols) as u64;
    let wm = &hw.weight_memory;
    let (per_prim, kind) = match wm.kind {
        MemKind::Bram => (1024, MemKind::Bram),
        MemKind::Uram => (4096, MemKind::Uram),
    };
    let wm_prims = n * wm.banks as u64 * (wm.depth_words as u64).div_ceil(per_prim);
    let mut res = Resources {
        dsp: n * pes * r.dsp_per_pe as u64,
        lut: n * (pes * r.lut_per_pe as u64 + r.lut_per_core as u64) + r.lut_shell as u64,
        ff: n * (pes * r.ff_per_pe as u64 + r.ff_per_core as u64) + r.ff_shell as u64,
        bram36: r.bram_shell as u64,
        uram: 0,
    };
    let buf = hw.buffers.capacity_words as u64;
    match hw.buffers.kind {
        MemKind::Bram => res.bram36 += n * buf.div_ceil(1024),
        MemKind::Uram => res.uram += n * buf.div_ceil(8192),
    }
    match kind {
        MemKind::Bram => res.bram36 += wm_prims,
        MemKind::Uram => res.uram += wm_prims,
    }
    res
}

fn fit(hw: &HwConfig, res: &Resources) -> Fit {
    let d = &hw.device;
    let mut exceeded = Vec::new();
    let mut util = |name: &str, used: u64, avail: u64| {
        if used > avail {
            exceeded.push(format!("{name} {used} > {avail}"));
        }
        if avail == 0 {
            if used == 0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            used as f64 / avail as f64
        }
    };
    let dsp_util = util("dsp", res.dsp, d.dsps);
    let lut_util = util("lut", res.lut, d.luts);
    let ff_util = util("ff", res.ff, d.ffs);
    let bram_util = util("bram36", res.bram36, d.bram36);
    let uram_util = util("uram", res.uram, d.uram);
    Fit {
        device: d.id.clone(),
        fits: exceeded.is_empty(),
        exceeded,
        dsp_util,
        lut_util,
        ff_util,
        bram_util,
        uram_util,
    }
}

/// Checks that the workload's operands fit the memories that must hold them.
pub fn check_memories(plan: &Plan, hw: &HwConfig) -> Result<(), ModelError> {
    let w = &plan.workload;
    let cap = hw.weight_memory.capacity_words();
    let (layer, words) = &plan.largest_layer;
    if *words > cap {
        let field = if layer.starts_with("actor") {
            "workload.actor_hidden"
        } else {
            "workload.critic_hidden"
        };
        return Err(ModelError::TooLarge {
            field: field.to_string(),
            what: format!("{layer} weights"),
            needed: *words,
            memory: "the weight memory (hw.weight_memory.banks x depth_words)".into(),
            capacity: cap,
        });
    }
    if plan.weight_words > cap {
        return Err(ModelError::TooLarge {
            field: "hw.weight_memory.depth_words".into(),
            what: "all online and target networks' weights".into(),
            needed: plan.weight_words,
            memory: "one core's weight memory".into(),
            capacity: cap,
        });
    }
    let per_core = w.batch.div_ceil(hw.cores) as u64 * plan.buffer_words_per_sample;
    let buf = hw.buffers.capacity_words as u64;
    if plan.buffer_words_per_sample > buf {
        return Err(ModelError::TooLarge {
            field: "workload.actor_hidden / critic_hidden".into(),
            what: "one sample's activations and errors".into(),
            needed: plan.buffer_words_per_sample,
            memory: "the activation buffer (hw.buffers.capacity_words)".into(),
            capacity: buf,
        });
    }
    if per_core > buf {
        return Err(ModelError::TooLarge {
            field: "workload.batch".into(),
            what: format!(
                "activations and errors of {} samples per core",
                w.batch.div_ceil(hw.cores)
            ),
            needed: per_core,
            memory: "the activation buffer (hw.buffers.capacity_words)".into(),
            capacity: buf,
        });
    }
    Ok(())
}

impl Plan {
    /// Performance of the plan on `hw`, without the device-fit check (use
    /// [`Plan::estimate`] for reports; this is what a sweep point would deliver if it fit).
    pub fn performance(&self, hw: &HwConfig) -> Performance {
        let w = &self.workload;
        let precision = w.precision;
        let geom = ArrayGeom::new(hw, precision);
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
        let scale = hw.clock_mhz / p.ref_clock_mhz;
        let fixed_w = p.static_w + scale * (p.shell_w + p.core_w * hw.cores as f64);
        let slots = (hw.cores * hw.pe_rows * hw.pe_cols * precision.lanes()) as f64;
        let util = |macs: f64, cycles: f64| {
            if cycles > 0.0 {
                macs / (cycles * slots)
            } else {
                0.0
            }
        };

        let mut costs: Vec<PhaseCost> = self
            .phases
            .iter()
            .map(|ph| phase_cost(ph, &geom, hw, precision))
            .collect();
        let compute: f64 = costs
            .iter()
            .map(|c| c.runs_per_iteration * c.cost.cycles as f64)
            .sum();
        // The next replay batch is prefetched during this iteration's compute.
        let fetch = (self.replay_bytes as f64 / hw.offchip_bytes_per_cycle()).ceil();
        if let Some(rf) = costs.iter_mut().find(|c| c.phase == Phase::ReplayFetch) {
            rf.cost.cycles = (fetch - compute).max(0.0) as u64;
            rf.cost.offchip_bytes = self.replay_bytes;
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
                dynamic_energy_j: dynamic_j(&c.cost),
            })
            .collect();
        let weighted = |f: &dyn Fn(&PhaseReport) -> f64| -> f64 {
            phases.iter().map(|p| p.runs_per_iteration * f(p)).sum()
        };
        let iteration_cycles = weighted(&|p| p.cycles as f64);
        let iteration_s = iteration_cycles * hw.cycle_s();
        let iteration_j = weighted(&|p| p.dynamic_energy_j) + fixed_w * iteration_s;
        let training_ips = w.batch as f64 / iteration_s;
        let power_w = iteration_j / iteration_s;

        let inf = &phases[0];
        debug_assert_eq!(inf.phase, Phase::ActionInference);
        let inference_s = inf.cycles as f64 * hw.cycle_s();
        let inference_j = inf.dynamic_energy_j + fixed_w * inference_s;
        let inference_ips = w.inference_batch as f64 / inference_s;
        let inference_power_w = inference_j / inference_s;
        Performance {
            training_ips,
            inference_ips,
            power_w,
            ips_per_watt: training_ips / power_w,
            inference_power_w,
            inference_ips_per_watt: inference_ips / inference_power_w,
            iteration_cycles,
            iteration_s,
            inference_cycles: inf.cycles,
            training_utilization: util(weighted(&|p| p.macs as f64), iteration_cycles),
            inference_utilization: inf.utilization,
            energy_per_training_sample_j: iteration_j / w.batch as f64,
            energy_per_inference_j: inference_j / w.inference_batch as f64,
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
            cores: hw.cores,
            array: format!("{}x{}", hw.pe_rows, hw.pe_cols),
            clock_mhz: hw.clock_mhz,
            batch: w.batch,
            resources: res,
            fit,
            performance,
            training_ips_definition: TRAINING_IPS_DEFINITION.to_string(),
            inference_ips_definition: INFERENCE_IPS_DEFINITION.to_string(),
        })
    }
}

/// Validates the workload, plans it and estimates it on `hw`.
pub fn estimate(workload: &Workload, hw: &HwConfig) -> Result<Estimate, ModelError> {
    workload.validate()?;
    Plan::new(workload).estimate(hw)
}
