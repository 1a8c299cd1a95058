//! `fixar accel`: the accelerator model's report (accelerator and
//! system IPS, card power, IPS/W, cycles and energy per phase, resources per component
//! and fit, FXP32 vs FXP16, a sweep with its Pareto front, paper vs model for FIXAR's
//! design, and this CPU side by side) as markdown or JSON on stdout plus report.md,
//! report.json and plots in `--out`. What is reported is computed by
//! `accel_model::study` (paper vs model: `accel_model::paper`); here the flags, the
//! workload from an agent config, the CPU measurement and the files. The markdown is
//! `accel/report.rs`, the figures `accel/plots.rs`; `fixar bench accel` is in `bench`.

mod plots;
mod report;

pub use accel_model::study::{CpuSide, Study as AccelReport};

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use accel_model::presets;
use accel_model::sweep::SweepSpec;
use accel_model::{Algo, HwConfig, MacAccounting, ModelError, Optimizer, Precision, Workload};
use agents::config::{Algo as AgentAlgo, OptimizerKind, TrainConfig};
use agents::Preset as AgentPrecision;
use anyhow::Context;

use crate::failure::config_error;
use plots::write_plots;
use report::render_md;

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
    /// Also compare a multiplier-free (shift-add) PE for weights of at most K signed
    /// powers of two (`fixar qat --pow2-terms K`) against the multiplying PE: DSP, LUT,
    /// FF and inference power of the same workload.
    #[arg(long, allow_negative_numbers = true)]
    pub pow2_terms: Option<i64>,
    /// With --pow2-terms: the PE operand widths `W,A` (weight, activation bits) both PEs
    /// are sized for (default: the preset's, e.g. 32,16 for fixar-u50).
    #[arg(long)]
    pub pe_bits: Option<String>,
    /// The host side of the system throughput.
    #[command(flatten)]
    pub host: HostArgs,
}

/// PE operand widths (weight, activation bits).
type PeBits = (usize, usize);

/// `--pow2-terms K [--pe-bits W,A]` checked: K in 1..=W, widths in 2..=64.
fn shift_add_args(
    args: &AccelArgs,
    hw: &HwConfig,
) -> anyhow::Result<Option<(u32, Option<PeBits>)>> {
    let bits = match &args.pe_bits {
        None => None,
        Some(text) => {
            let parsed: Option<Vec<usize>> =
                text.split(',').map(|v| v.trim().parse().ok()).collect();
            match parsed.as_deref() {
                Some(&[w, a]) if (2..=64).contains(&w) && (2..=64).contains(&a) => Some((w, a)),
                _ => {
                    return Err(config_error(format!(
                        "--pe-bits `{text}`: expected W,A, two widths between 2 and 64"
                    )))
                }
            }
        }
    };
    let Some(k) = args.pow2_terms else {
        require(bits.is_none(), "--pe-bits needs --pow2-terms".into())?;
        return Ok(None);
    };
    let width = bits.map_or(hw.resources.weight_bits, |(w, _)| w);
    require(
        (1..=width as i64).contains(&k),
        format!("--pow2-terms must be between 1 and the PE weight width ({width}), got {k}"),
    )?;
    Ok(Some((k as u32, bits)))
}

/// `fixar accel` options that change the workload's batch or the host model.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct HostArgs {
    /// Training batch (FIXAR: 64, 128, 256, 512); default: the preset's or the agent's.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Environment time per time step on the host, ms (default: the preset's, 2 ms from
    /// FIXAR's paper; measure your own env with `fixar env` and pass it here).
    #[arg(long)]
    pub env_ms: Option<f64>,
}

pub(crate) fn model_error(e: ModelError) -> anyhow::Error {
    config_error(e.to_string())
}

/// A configuration error (`msg`) unless `ok`.
fn require(ok: bool, msg: String) -> anyhow::Result<()> {
    if ok {
        Ok(())
    } else {
        Err(config_error(msg))
    }
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
        accounting: MacAccounting::Minimal,
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

/// Times the agent of workload `w` on this CPU in float32 and with its fixed point
/// emulated (`--cpu-seconds` each); `None` when agents cannot build it.
fn cpu_side(args: &AccelArgs, w: &Workload) -> anyhow::Result<Option<CpuSide>> {
    let Some(float_cfg) = agent_config_for(w, AgentPrecision::Float32) else {
        return Ok(None);
    };
    let (watts, why) = match args.cpu_watts {
        Some(x) => (x, "--cpu-watts".to_string()),
        None => (
            DEFAULT_CPU_WATTS_PER_THREAD,
            format!("default: {DEFAULT_CPU_WATTS_PER_THREAD} W per thread used, a 120 W 8-core server CPU's TDP share"),
        ),
    };
    tracing::info!(
        "timing the fixar agent on this CPU, float32, 1 thread, {:.1} s",
        args.cpu_seconds
    );
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
    if let Some(fx_cfg) = agent_config_for(w, fx) {
        tracing::info!("timing the same agent with {} emulated", w.precision);
        cpu.emulated_fixed_point_ips = Some(measure_cpu_agent(
            &fx_cfg,
            w.obs_dim,
            w.act_dim,
            args.cpu_seconds,
        )?);
    }
    Ok(Some(cpu))
}

// ---------------------------------------------------------------------------------------
// Commands

/// `fixar accel`
pub fn run(args: &AccelArgs) -> anyhow::Result<ExitCode> {
    let report = produce(args)?;
    match args.format {
        Format::Md => print!("{}", render_md(&report)),
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
    let mut preset = preset;
    let mut w = w;
    if let Some(batch) = args.host.batch {
        require(batch > 0, "--batch 0: must be at least 1".into())?;
        w.batch = batch;
    }
    if let Some(ms) = args.host.env_ms {
        require(
            ms.is_finite() && ms >= 0.0,
            format!("--env-ms {ms}: must not be negative"),
        )?;
        preset.hw.host.env_ms = ms;
    }
    let sweep = match &args.sweep {
        Some(text) => SweepSpec::parse(text, &w, &preset.hw).map_err(model_error)?,
        None => SweepSpec::default_for(&w, &preset.hw),
    };
    if let Some(watts) = args.cpu_watts {
        let msg = format!("--cpu-watts {watts}: must be greater than zero");
        require(watts.is_finite() && watts > 0.0, msg)?;
    }
    let secs = args.cpu_seconds;
    require(
        secs.is_finite() && secs >= 0.0,
        format!("--cpu-seconds {secs}: must not be negative"),
    )?;
    tracing::info!(
        "estimating {} on {} ({} sweep points)",
        w.describe(),
        preset.hw.name,
        sweep.points().len()
    );
    let shift_add = shift_add_args(args, &preset.hw)?;
    let mut report = AccelReport::new(&preset, &w, source, &sweep, notes).map_err(model_error)?;
    if let Some((k, bits)) = shift_add {
        let c = accel_model::shift_add::compare(&w, &preset.hw, k, bits).map_err(model_error)?;
        report.shift_add = Some(c);
    }
    if report.estimate.performance.is_none() {
        return Err(config_error(format!(
            "`{}` does not fit {}: {}",
            args.hw,
            report.estimate.fit.device,
            report.estimate.fit.exceeded.join("; ")
        )));
    }
    if args.cpu_seconds > 0.0 {
        match cpu_side(args, &w)? {
            Some(cpu) => report = report.with_cpu(cpu),
            None => report.notes.push(
                "CPU side not measured: the agents crate builds one hidden-size list for actor and critics, this workload has two".into(),
            ),
        }
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs-out/accel").join(&preset.hw.name));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    report.plots = write_plots(&report, &w, &preset.hw, &out)?;
    let md = render_md(&report);
    let json = serde_json::to_string_pretty(&report)?;
    crate::rundir::write_atomic(out.join("report.md"), &md)
        .with_context(|| format!("writing {}/report.md", out.display()))?;
    crate::rundir::write_atomic(out.join("report.json"), &json)
        .with_context(|| format!("writing {}/report.json", out.display()))?;
    tracing::info!("wrote {}/report.md, report.json and plots", out.display());
    Ok(report)
}
