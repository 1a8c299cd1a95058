//! `fixar accel` and `fixar bench accel`: the accelerator model's report (IPS, power,
//! IPS/W, cycles and energy per phase, resources and fit, FXP32 vs FXP16, a sweep with
//! its Pareto front, the calibration against FIXAR's paper, and this CPU side by side)
//! as markdown or JSON on stdout plus report.md, report.json and plots in `--out`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use accel_model::plan::{Phase, Plan};
use accel_model::presets::{self, Preset};
use accel_model::sweep::{pareto_front, SweepPoint, SweepSpec};
use accel_model::{
    Algo, Estimate, HwConfig, ModelError, Optimizer, Parallelism, Performance, Precision, Workload,
    INFERENCE_IPS_DEFINITION, TRAINING_IPS_DEFINITION,
};
use agents::config::{Algo as AgentAlgo, OptimizerKind, TrainConfig};
use agents::Preset as AgentPrecision;
use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::failure::config_error;
use crate::plot;

/// Default CPU power for the side-by-side, W per thread used: a 120 W, 8-core server
/// part's TDP share for one core (stated in every report; `--cpu-watts` overrides).
pub const DEFAULT_CPU_WATTS_PER_THREAD: f64 = 15.0;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Md,
    Json,
}

/// `fixar accel`
#[derive(clap::Args, Debug)]
pub struct AccelArgs {
    /// Agent training config (runs/configs/*.toml): algo, env_id, hidden, batch_size,
    /// precision, policy_frequency, optimizer; other keys are ignored. Without it, the
    /// preset's own workload.
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Hardware preset name (fixar-u50, cleanrl-td3-u50, zcu102, ultra96-v2) or a TOML file
    /// in the preset format (`base = "fixar-u50"` to override a few fields).
    #[arg(long, default_value = "fixar-u50")]
    pub hw: String,
    /// Sweep axes, e.g. `cores=1,2,4,8;array=8x8,16x16;precision=16,32;batch=64,256;clock=150,225;mode=adaptive`.
    /// Default: cores 1-8 x 8x8/16x16/32x32 x FXP16/FXP32 x every mode.
    #[arg(long)]
    pub sweep: Option<String>,
    /// What stdout gets.
    #[arg(long, value_enum, default_value_t = Format::Md)]
    pub format: Format,
    /// Directory for report.md, report.json and plots (default runs-out/accel/<preset>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// CPU power for the side-by-side, W (default 15 W per thread used).
    #[arg(long)]
    pub cpu_watts: Option<f64>,
    /// Seconds of each timed CPU run (float32 agent, then the fixed-point one; 0 skips them).
    #[arg(long, default_value_t = 3.0)]
    pub cpu_seconds: f64,
}

/// `fixar bench accel`
#[derive(clap::Args, Debug)]
pub struct BenchAccelArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Hardware preset whose workload is evaluated.
    #[arg(long, default_value = "fixar-u50")]
    pub hw: String,
}

fn model_error(e: ModelError) -> anyhow::Error {
    config_error(e.to_string())
}

// ---------------------------------------------------------------------------------------
// Workload from an agent config

/// Observation and action sizes of the environments fixar trains on, so a report does
/// not need to start a Python process for a MuJoCo id.
const ENV_DIMS: &[(&str, usize, usize)] = &[
    ("Pendulum-v1", 3, 1),
    ("MountainCarContinuous-v0", 2, 1),
    ("HalfCheetah-v5", 17, 6),
    ("Hopper-v5", 11, 3),
    ("Walker2d-v5", 17, 6),
    ("InvertedPendulum-v5", 4, 1),
    ("Reacher-v5", 10, 2),
];

/// (obs, act) sizes: the table for known ids, else the spaces of `envs::make(id)`.
pub fn env_dims(id: &str) -> anyhow::Result<(usize, usize)> {
    if let Some(&(_, o, a)) = ENV_DIMS.iter().find(|(n, _, _)| *n == id) {
        return Ok((o, a));
    }
    let env = envs::make(id).map_err(|e| config_error(format!("env `{id}`: {e}")))?;
    Ok((
        env.observation_space().low.len(),
        env.action_space().low.len(),
    ))
}

/// Reads an agent training config (agents' `TrainConfig`, TOML).
pub fn read_agent_config(path: &Path) -> anyhow::Result<TrainConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| config_error(format!("cannot read agent config {}: {e}", path.display())))?;
    let cfg: TrainConfig = toml::from_str(&text)
        .map_err(|e| config_error(format!("while reading {}: {e}", path.display())))?;
    cfg.validate()
        .map_err(|e| config_error(format!("{}: {e}", path.display())))?;
    Ok(cfg)
}

/// The accelerator workload of an agent config: its networks (from the env's spaces and
/// `hidden`), batch, algorithm, policy delay, optimizer and precision. Returns notes on
/// how it was mapped.
pub fn workload_from_agent(
    cfg: &TrainConfig,
    name: &str,
) -> anyhow::Result<(Workload, Vec<String>)> {
    let (obs_dim, act_dim) = env_dims(&cfg.env_id)?;
    let mut notes = Vec::new();
    let precision = match cfg.precision {
        AgentPrecision::Fxp16 => Precision::Fxp16,
        AgentPrecision::Fxp32 => Precision::Fxp32,
        AgentPrecision::Float32 => {
            notes.push(
                "the agent config trains in float32; the accelerator has no float datapath, so it is estimated at FXP32 (its widest mode)".into(),
            );
            Precision::Fxp32
        }
    };
    let algo = match cfg.algo {
        AgentAlgo::Ddpg => Algo::Ddpg,
        AgentAlgo::Td3 => Algo::Td3,
    };
    let w = Workload {
        name: format!("{name} ({})", cfg.env_id),
        algo,
        policy_delay: (algo == Algo::Td3).then_some(cfg.policy_frequency as usize),
        obs_dim,
        act_dim,
        actor_hidden: cfg.hidden.clone(),
        critic_hidden: cfg.hidden.clone(),
        batch: cfg.batch_size,
        inference_batch: 1,
        precision,
        optimizer: match cfg.optimizer {
            OptimizerKind::Adam => Optimizer::Adam,
            OptimizerKind::Sgd => Optimizer::Sgd,
        },
    };
    w.validate().map_err(model_error)?;
    Ok((w, notes))
}

/// An agent config for a preset's workload (for the CPU run), when agents can build it:
/// one `hidden` list for actor and critics.
pub fn agent_config_for(w: &Workload, precision: AgentPrecision) -> Option<TrainConfig> {
    (w.actor_hidden == w.critic_hidden).then(|| TrainConfig {
        algo: match w.algo {
            Algo::Ddpg => AgentAlgo::Ddpg,
            Algo::Td3 => AgentAlgo::Td3,
        },
        hidden: w.actor_hidden.clone(),
        batch_size: w.batch,
        policy_frequency: w.policy_delay() as u64,
        optimizer: match w.optimizer {
            Optimizer::Adam => OptimizerKind::Adam,
            Optimizer::Sgd => OptimizerKind::Sgd,
        },
        precision,
        ..TrainConfig::default()
    })
}

// ---------------------------------------------------------------------------------------
// The CPU side by side

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
    /// The hook for any CPU measurement (the lead can pass the agents crate's measured
    /// update rate here): samples through a training iteration per second.
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

/// Times the fixar agent's training iterations on this CPU, one thread: per iteration one
/// action inference (`Agent::act`), one replay sample and one `Agent::update` (critic
/// every call, actor and targets every `policy_frequency`-th), as the accelerator's
/// iteration. The buffer holds random transitions (the environment is not stepped, as
/// on the accelerator side). Returns samples per second (batch x iterations / seconds).
pub fn measure_cpu_agent(
    cfg: &TrainConfig,
    obs_dim: usize,
    act_dim: usize,
    seconds: f64,
) -> anyhow::Result<f64> {
    use rand::{Rng, SeedableRng};
    let threads_before = tch::get_num_threads();
    tch::set_num_threads(1);
    let space = |d: usize| envs::BoxSpace {
        low: vec![-1.0; d],
        high: vec![1.0; d],
    };
    let mut agent = agents::trainer::build_agent(cfg, &space(obs_dim), &space(act_dim), 0);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let n = 4 * cfg.batch_size;
    let mut buffer = agents::replay::ReplayBuffer::new(n, obs_dim, act_dim);
    let draw = |d: usize, rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
        (0..d).map(|_| rng.gen_range(-1.0..1.0)).collect()
    };
    for _ in 0..n {
        let (o, a, o2) = (
            draw(obs_dim, &mut rng),
            draw(act_dim, &mut rng),
            draw(obs_dim, &mut rng),
        );
        buffer.push(&o, &a, rng.gen_range(-1.0..1.0), &o2, false);
    }
    let state = draw(obs_dim, &mut rng);
    let mut action = vec![0f32; act_dim];
    let mut iteration = |rng: &mut rand_chacha::ChaCha8Rng| {
        agent.act(&state, &mut action);
        let batch = buffer.sample(cfg.batch_size, rng);
        agent.update(&batch, rng);
    };
    for _ in 0..2 {
        iteration(&mut rng);
    }
    let start = Instant::now();
    let mut iters = 0u64;
    while iters < 3 || start.elapsed().as_secs_f64() < seconds {
        iteration(&mut rng);
        iters += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    tch::set_num_threads(threads_before);
    Ok(cfg.batch_size as f64 * iters as f64 / secs)
}

// ---------------------------------------------------------------------------------------
// The report

/// Paper figure vs this model.
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
    pub precisions: Vec<PrecisionRow>,
    pub cpu: Option<CpuSide>,
    /// Estimated training IPS / CPU training IPS.
    pub speedup_vs_cpu: Option<f64>,
    /// Estimated IPS/W / CPU IPS/W.
    pub efficiency_ratio_vs_cpu: Option<f64>,
    pub sweep: Vec<SweepPoint>,
    /// Indices into `sweep` of the Pareto front (training IPS vs IPS/W).
    pub pareto_front: Vec<usize>,
    pub assumptions: std::collections::BTreeMap<String, String>,
    /// The cycle-level simulator run on two phases of this very configuration (random
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
        (Some(r), Some(p)) if Some(w) == preset.workload.as_ref() => Some(Calibration {
            source: r.source.clone(),
            paper_training_ips: r.training_ips,
            model_training_ips: p.training_ips,
            training_ips_error_pct: pct(p.training_ips, r.training_ips),
            paper_ips_per_watt: r.ips_per_watt,
            model_ips_per_watt: p.ips_per_watt,
            ips_per_watt_error_pct: pct(p.ips_per_watt, r.ips_per_watt),
        }),
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
                training_ips: perf.as_ref().map(|p| p.training_ips),
                inference_ips: perf.as_ref().map(|p| p.inference_ips),
                power_w: perf.as_ref().map(|p| p.power_w),
                ips_per_watt: perf.as_ref().map(|p| p.ips_per_watt),
                fits: perf.is_some(),
            }
        })
        .collect();
    let points = sweep.run(w, &preset.hw);
    let front = pareto_front(&points);
    let simulator_checks = if estimate.fit.fits {
        [Phase::ActionInference, Phase::TargetActor]
            .iter()
            .filter_map(|&ph| accel_model::sim::check_phase(&plan, &preset.hw, ph, 7))
            .collect()
    } else {
        Vec::new()
    };
    Ok(AccelReport {
        estimate,
        preset_description: preset.description.clone(),
        workload_source,
        notes,
        calibration,
        precisions,
        cpu: None,
        speedup_vs_cpu: None,
        efficiency_ratio_vs_cpu: None,
        sweep: points,
        pareto_front: front,
        assumptions: preset.assumptions.clone(),
        simulator_checks,
        plots: Vec::new(),
    })
}

impl AccelReport {
    /// Adds the CPU side and the ratios.
    pub fn with_cpu(mut self, cpu: CpuSide) -> Self {
        if let Some(p) = &self.estimate.performance {
            self.speedup_vs_cpu = Some(p.training_ips / cpu.training_ips);
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
            "- Workload: {} (from {})\n- Hardware: {} AAP cores of {} PEs, {} MHz, {} parallelism, {}",
            e.workload, self.workload_source, e.cores, e.array, e.clock_mhz, e.parallelism, e.precision
        );
        for n in &self.notes {
            let _ = writeln!(s, "- Note: {n}");
        }
        let _ = writeln!(
            s,
            "\n**Definitions.** {TRAINING_IPS_DEFINITION}\n\n{INFERENCE_IPS_DEFINITION}\n"
        );
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
        if let Some(c) = &self.calibration {
            let _ = writeln!(s, "## Against the paper\n\nSource: {}\n", c.source);
            let _ = writeln!(
                s,
                "| figure | paper | this model | error |\n| --- | ---: | ---: | ---: |"
            );
            let _ = writeln!(
                s,
                "| training IPS | {:.1} | {:.1} | {:+.1}% |\n| IPS/W | {:.1} | {:.1} | {:+.1}% |\n",
                c.paper_training_ips,
                c.model_training_ips,
                c.training_ips_error_pct,
                c.paper_ips_per_watt,
                c.model_ips_per_watt,
                c.ips_per_watt_error_pct
            );
        }
        let _ = writeln!(s, "## FXP32 vs FXP16 (same hardware and workload)\n");
        let _ = writeln!(s, "| precision | training IPS | inference IPS | power (W) | IPS/W |\n| --- | ---: | ---: | ---: | ---: |");
        for r in &self.precisions {
            let f = |v: Option<f64>, d: usize| {
                v.map_or("does not fit".to_string(), |v| format!("{v:.d$}"))
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                r.precision,
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
                "\n## Cycle-level simulator on this configuration\n\nRandom operands; cycles against the analytic model, outputs against `quant::golden_gemm`.\n"
            );
            let _ = writeln!(s, "| phase | mode | GEMMs | MACs | simulated cycles | analytic cycles | bit-exact |\n| --- | --- | ---: | ---: | ---: | ---: | --- |");
            for c in &self.simulator_checks {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    c.phase.name(),
                    c.mode,
                    c.gemms,
                    c.macs,
                    c.simulated_cycles,
                    c.analytic_cycles,
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
            "\n## Sweep\n\n{} design points ({} fit the device). Pareto front of training IPS vs IPS/W:\n",
            self.sweep.len(),
            fitting
        );
        let _ = writeln!(s, "| cores | array | precision | batch | clock (MHz) | mode | training IPS | IPS/W | power (W) |\n| ---: | --- | --- | ---: | ---: | --- | ---: | ---: | ---: |");
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
                p.training_ips.unwrap_or(0.0),
                p.ips_per_watt.unwrap_or(0.0),
                p.power_w.unwrap_or(0.0)
            );
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
    let rows = [
        ("training IPS", format!("{:.1}", p.training_ips)),
        ("inference IPS", format!("{:.1}", p.inference_ips)),
        ("power, training (W)", format!("{:.2}", p.power_w)),
        ("IPS/W, training", format!("{:.1}", p.ips_per_watt)),
        (
            "power, inference only (W)",
            format!("{:.2}", p.inference_power_w),
        ),
        (
            "IPS/W, inference",
            format!("{:.1}", p.inference_ips_per_watt),
        ),
        ("iteration time (us)", format!("{:.2}", p.iteration_s * 1e6)),
        (
            "PE utilization, training",
            format!("{:.1}%", 100.0 * p.training_utilization),
        ),
        (
            "PE utilization, inference",
            format!("{:.1}%", 100.0 * p.inference_utilization),
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

fn render_phases(s: &mut String, p: &Performance) {
    let _ = writeln!(
        s,
        "\n## Phases of one training iteration\n\nCycles and energy per run; `share` weights by runs per iteration.\n"
    );
    let _ = writeln!(s, "| phase | runs/iter | mode | cycles | share | utilization | load stall | reduction | dynamic energy (uJ) |\n| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for ph in &p.phases {
        let share = ph.runs_per_iteration * ph.cycles as f64 / p.iteration_cycles;
        let _ = writeln!(
            s,
            "| {} | {:.2} | {} | {} | {:.1}% | {:.1}% | {} | {} | {:.2} |",
            ph.name,
            ph.runs_per_iteration,
            ph.mode,
            ph.cycles,
            100.0 * share,
            100.0 * ph.utilization,
            ph.load_stall_cycles,
            ph.reduction_cycles,
            ph.dynamic_energy_j * 1e6
        );
    }
}

// ---------------------------------------------------------------------------------------
// Plots

const MODES: [Parallelism; 3] = [
    Parallelism::IntraLayer,
    Parallelism::IntraBatch,
    Parallelism::Adaptive,
];

fn perf_at(w: &Workload, hw: &HwConfig) -> Option<Performance> {
    Plan::new(w).estimate(hw).ok().and_then(|e| e.performance)
}

/// Writes the four figures into `dir`; returns their stems (relative to `dir`).
pub fn write_plots(
    report: &AccelReport,
    w: &Workload,
    hw: &HwConfig,
    dir: &Path,
) -> anyhow::Result<Vec<String>> {
    let mut stems = Vec::new();
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
                        Some((cores as f64, p.training_ips))
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        let stem = format!("ips_vs_cores_{}", precision.to_string().to_lowercase());
        plot::line_chart(
            &plot::LineChart {
                title: format!(
                    "Training IPS vs AAP cores, {precision} ({}, {})",
                    hw.name, hw.device.name
                ),
                x_label: "AAP cores".into(),
                y_label: "training IPS (samples/s)".into(),
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
        ("replay fetch (stall)", &[Phase::ReplayFetch]),
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
        if let (Some(ips), Some(eff)) = (p.training_ips, p.ips_per_watt) {
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
        .filter_map(|&i| Some((report.sweep[i].training_ips?, report.sweep[i].ips_per_watt?)))
        .collect();
    plot::scatter(
        &plot::Scatter {
            title: format!(
                "Sweep: training IPS vs IPS/W on {} (fitting points)",
                hw.device.name
            ),
            x_label: "training IPS (samples/s)".into(),
            y_label: "training IPS/W (samples/s/W)".into(),
            groups,
            front,
        },
        &dir.join("pareto"),
    )?;
    stems.push("pareto".to_string());
    Ok(stems)
}

// ---------------------------------------------------------------------------------------
// Commands

/// `fixar accel`
pub fn run(args: &AccelArgs) -> anyhow::Result<ExitCode> {
    let report = produce(args)?;
    match args.format {
        Format::Md => print!("{}", report.render_md()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything `fixar accel` does but printing: the estimate, the CPU side, and the
/// report and plots written into the output directory. The pipeline calls this too.
pub fn produce(args: &AccelArgs) -> anyhow::Result<AccelReport> {
    let preset = presets::load(&args.hw).map_err(model_error)?;
    let (w, source, notes) = match &args.agent {
        Some(path) => {
            let cfg = read_agent_config(path)?;
            let (w, notes) = workload_from_agent(&cfg, &path.display().to_string())
                .with_context(|| format!("while reading {}", path.display()))?;
            (w, path.display().to_string(), notes)
        }
        None => match &preset.workload {
            Some(w) => (w.clone(), format!("preset {}", preset.hw.name), Vec::new()),
            None => {
                return Err(config_error(format!(
                    "preset `{}` has no [workload]; pass --agent CONFIG",
                    args.hw
                )))
            }
        },
    };
    let sweep = match &args.sweep {
        Some(text) => SweepSpec::parse(text, &w, &preset.hw).map_err(model_error)?,
        None => SweepSpec::default_for(&w, &preset.hw),
    };
    if let Some(watts) = args.cpu_watts {
        if !(watts.is_finite() && watts > 0.0) {
            return Err(config_error(format!(
                "--cpu-watts {watts}: must be greater than zero"
            )));
        }
    }
    if !(args.cpu_seconds.is_finite() && args.cpu_seconds >= 0.0) {
        return Err(config_error(format!(
            "--cpu-seconds {}: must not be negative",
            args.cpu_seconds
        )));
    }
    tracing::info!(
        "estimating {} on {} ({} sweep points)",
        w.describe(),
        preset.hw.name,
        sweep.points().len()
    );
    let mut report = build_report(&preset, &w, source, &sweep, notes)?;
    if args.cpu_seconds > 0.0 {
        match agent_config_for(&w, AgentPrecision::Float32) {
            None => report.notes.push(
                "CPU side not measured: the agents crate builds one hidden-size list for actor and critics, this workload has two".into(),
            ),
            Some(float_cfg) => {
                let (watts, why) = match args.cpu_watts {
                    Some(x) => (x, "--cpu-watts".to_string()),
                    None => (
                        DEFAULT_CPU_WATTS_PER_THREAD,
                        format!("default: {DEFAULT_CPU_WATTS_PER_THREAD} W per thread used, a 120 W 8-core server CPU's TDP share"),
                    ),
                };
                tracing::info!("timing the fixar agent on this CPU, float32, 1 thread, {:.1} s", args.cpu_seconds);
                let ips = measure_cpu_agent(&float_cfg, w.obs_dim, w.act_dim, args.cpu_seconds)?;
                let measured = format!(
                    "the fixar agents crate's {} in float32 (libtorch, 1 thread): per iteration one action inference, one replay sample of {} and one update (actor and targets every {}), replay filled with random transitions, environment not stepped",
                    w.algo.name(),
                    w.batch,
                    w.policy_delay()
                );
                let mut cpu = CpuSide::from_measured(ips, measured, 1, watts, why);
                let fx = match w.precision {
                    Precision::Fxp16 => AgentPrecision::Fxp16,
                    Precision::Fxp32 => AgentPrecision::Fxp32,
                };
                if let Some(fx_cfg) = agent_config_for(&w, fx) {
                    tracing::info!("timing the same agent with {} emulated", w.precision);
                    cpu.emulated_fixed_point_ips =
                        Some(measure_cpu_agent(&fx_cfg, w.obs_dim, w.act_dim, args.cpu_seconds)?);
                }
                report = report.with_cpu(cpu);
            }
        }
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs-out/accel").join(&preset.hw.name));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    report.plots = write_plots(&report, &w, &preset.hw, &out)?;
    let md = report.render_md();
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(out.join("report.md"), &md)
        .with_context(|| format!("writing {}/report.md", out.display()))?;
    std::fs::write(out.join("report.json"), &json)
        .with_context(|| format!("writing {}/report.json", out.display()))?;
    tracing::info!("wrote {}/report.md, report.json and plots", out.display());
    Ok(report)
}

/// Analytic-model evaluations per second on one thread (plan built once, hardware
/// varied), and sweep points per second with rayon.
pub fn bench(args: &BenchAccelArgs) -> anyhow::Result<ExitCode> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err(config_error(format!(
            "--seconds {}: must be greater than zero",
            args.seconds
        )));
    }
    let preset = presets::load(&args.hw).map_err(model_error)?;
    let w = preset
        .workload
        .clone()
        .ok_or_else(|| config_error(format!("preset `{}` has no [workload]", args.hw)))?;
    let plan = Plan::new(&w);
    let variants: Vec<HwConfig> = (1..=5)
        .flat_map(|cores| {
            MODES.iter().map({
                let hw = &preset.hw;
                move |&parallelism| HwConfig {
                    cores,
                    parallelism,
                    ..hw.clone()
                }
            })
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let (evals, secs, checksum) = pool.install(|| {
        let start = Instant::now();
        let mut evals = 0u64;
        let mut checksum = 0.0;
        while start.elapsed().as_secs_f64() < args.seconds {
            for hw in &variants {
                let e = plan.estimate(hw).map_err(model_error)?;
                checksum += e.performance.map_or(0.0, |p| p.training_ips);
                evals += 1;
            }
        }
        anyhow::Ok((evals, start.elapsed().as_secs_f64(), checksum))
    })?;
    let per_s = evals as f64 / secs;
    let spec = SweepSpec {
        cores: (1..=8).collect(),
        arrays: vec![(4, 4), (8, 8), (16, 16), (32, 32)],
        precisions: vec![Precision::Fxp16, Precision::Fxp32],
        batches: vec![32, 64, 128, 256],
        clocks_mhz: vec![150.0, 200.0, 225.0, 300.0],
        modes: MODES.to_vec(),
    };
    let start = Instant::now();
    let pts = spec.run(&w, &preset.hw);
    let sweep_secs = start.elapsed().as_secs_f64();
    println!("workload: {}", w.describe());
    println!("accel_model_evals_per_s_1_thread: {per_s:.0}");
    println!("accel_model_goal_evals_per_s: 100000");
    println!("accel_model_meets_goal: {}", per_s >= 100_000.0);
    println!(
        "sweep_points_per_s_rayon_{}_threads: {:.0} ({} points incl. planning and fit checks)",
        rayon::current_num_threads(),
        pts.len() as f64 / sweep_secs,
        pts.len()
    );
    println!("peer: none (no analytical accelerator model among the peers in shared/bench)");
    tracing::debug!("checksum {checksum}");
    Ok(ExitCode::SUCCESS)
}
