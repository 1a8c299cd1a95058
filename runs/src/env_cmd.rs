//! `fixar env check`, `fixar env rollout` and `fixar bench env`: checking environments
//! against recorded Gymnasium trajectories, printing trajectories, and timing native and
//! bridged stepping against Python Gymnasium in the same run.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use envs::bridge::{self, BridgeConfig, BridgedEnv};
use envs::reference::{self, ReferenceEpisode, ReferenceFile};
use envs::{Env, VecEnv};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::failure::config_error;

/// `fixar env ...`
#[derive(clap::Subcommand, Debug)]
pub enum EnvCommand {
    /// Replay recorded Gymnasium episodes (initial state + actions) and compare every
    /// observation, reward and terminated/truncated flag. Exits 1 if any episode is off.
    Check(CheckArgs),
    /// Print one episode's trajectory (stops at the episode's end or after --steps).
    Rollout(RolloutArgs),
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// JSON file in the format of testdata/gymnasium/classic_control.json.
    pub file: PathBuf,
    /// Largest allowed |ours − recorded| for observations and rewards.
    #[arg(long, default_value_t = reference::DEFAULT_TOLERANCE)]
    pub tolerance: f64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Uniform samples from the action space (seeded by --seed).
    Random,
    /// All-zero actions.
    Zero,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One row per observation: step, obs_*, action_*, reward, terminated, truncated.
    Csv,
    /// The reference-trajectory format `fixar env check` reads.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct RolloutArgs {
    /// Gymnasium id (native, or any Box-space id through the Python bridge).
    #[arg(long = "env")]
    pub env: String,
    /// Seed for reset and for the random policy.
    #[arg(long)]
    pub seed: u64,
    /// Most steps to take (default: the env's time limit, or 1000).
    #[arg(long)]
    pub steps: Option<u32>,
    #[arg(long, value_enum, default_value_t = Policy::Random)]
    pub policy: Policy,
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
}

/// `fixar bench env`
#[derive(clap::Args, Debug)]
pub struct BenchEnvArgs {
    /// Native Pendulum-v1 steps to time.
    #[arg(long, default_value_t = 2_000_000)]
    pub native_steps: u64,
    /// Python Gymnasium Pendulum-v1 steps to time.
    #[arg(long, default_value_t = 50_000)]
    pub python_steps: u64,
    /// Steps per round for the bridged env and for Python stepping it directly.
    #[arg(long, default_value_t = 10_000)]
    pub bridge_steps: u64,
    /// Alternating rounds (bridge, then Python direct); the median round counts.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The bridged env to time.
    #[arg(long, default_value = "HalfCheetah-v5")]
    pub bridge_env: String,
    /// Only time the native env (no Python).
    #[arg(long)]
    pub native_only: bool,
}

/// Dispatches `fixar env ...`.
pub fn run(cmd: EnvCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EnvCommand::Check(a) => check(&a),
        EnvCommand::Rollout(a) => {
            print!("{}", rollout(&a)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `fixar env check FILE`: prints per env id the largest deviations, every failed
/// episode, then `N passed, M failed`; exit code 1 if any failed.
pub fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let path = &args.file;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(|e| config_error(format!("{e:#}")))?;
    let file = reference::parse(&text).map_err(|e| {
        config_error(format!(
            "{}: not a reference-trajectory file: {e}",
            path.display()
        ))
    })?;
    if file.episodes.is_empty() {
        return Err(config_error(format!("{}: no episodes", path.display())));
    }
    if args.tolerance.is_nan() || args.tolerance < 0.0 {
        return Err(config_error(format!(
            "--tolerance {} must be a non-negative number",
            args.tolerance
        )));
    }
    let bar = indicatif::ProgressBar::new(file.episodes.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} episodes")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix("replaying");
    let reports = reference::replay_file_with(&file, args.tolerance, |_| bar.inc(1));
    bar.finish_and_clear();
    print!("{}", render_check(&reports));
    let failed = reports.iter().filter(|r| !r.passed).count();
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The text `fixar env check` prints.
pub fn render_check(reports: &[reference::EpisodeReport]) -> String {
    let mut out = String::new();
    for s in reference::summarize(reports) {
        let _ = writeln!(
            out,
            "{}: {}/{} episodes passed, max obs deviation {:.3e}, max reward deviation {:.3e}",
            s.env, s.passed, s.episodes, s.max_obs_dev, s.max_reward_dev
        );
    }
    for r in reports.iter().filter(|r| !r.passed) {
        let mut why = Vec::new();
        if let Some(e) = &r.error {
            why.push(format!("error: {e}"));
        }
        if let Some(t) = r.first_flag_mismatch {
            why.push(format!("terminated/truncated differ first at step {t}"));
        }
        if r.error.is_none() {
            why.push(format!(
                "obs deviation {:.3e}, reward deviation {:.3e} after {} steps",
                r.max_obs_dev, r.max_reward_dev, r.steps
            ));
        }
        let _ = writeln!(
            out,
            "episode {} ({}) failed: {}",
            r.index,
            r.env,
            why.join("; ")
        );
    }
    let passed = reports.iter().filter(|r| r.passed).count();
    let _ = writeln!(out, "{} passed, {} failed", passed, reports.len() - passed);
    out
}

/// Runs one episode with `policy` (random actions seeded by `seed`) and returns it as a
/// reference episode (what both output formats print).
pub fn record_episode(
    env: &mut dyn Env,
    seed: u64,
    steps: u32,
    policy: Policy,
) -> anyhow::Result<ReferenceEpisode> {
    let space = env.action_space().clone();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let id = env.id().to_string();
    reference::record(env, seed, steps, |_, action| match policy {
        Policy::Random => space.sample_into(&mut rng, action),
        Policy::Zero => action.fill(0.0),
    })
    .with_context(|| format!("rolling out {id}"))
}

/// `fixar env rollout`: the trajectory as CSV or JSON text.
pub fn rollout(args: &RolloutArgs) -> anyhow::Result<String> {
    if args.steps == Some(0) {
        return Err(config_error("--steps must be at least 1"));
    }
    let mut env = envs::make(&args.env).map_err(|e| match e {
        envs::EnvError::UnknownId { .. } => config_error(format!("--env: {e}")),
        other => anyhow::Error::new(other),
    })?;
    let steps = args.steps.or(env.max_episode_steps()).unwrap_or(1000);
    let ep = record_episode(env.as_mut(), args.seed, steps, args.policy)?;
    Ok(match args.format {
        Format::Json => {
            let file = ReferenceFile {
                generator: Some(format!(
                    "fixar {} env rollout --env {} --seed {} --policy {:?}",
                    env!("CARGO_PKG_VERSION"),
                    args.env,
                    args.seed,
                    args.policy
                )),
                episodes: vec![ep],
            };
            serde_json::to_string(&file)? + "\n"
        }
        Format::Csv => episode_csv(&ep),
    })
}

/// CSV of an episode: row 0 is the reset observation (no action, reward or flags), row
/// `t` the observation after the `t`-th action, with that action and its outcome.
pub fn episode_csv(ep: &ReferenceEpisode) -> String {
    let obs_dim = ep.obs.first().map_or(0, Vec::len);
    let act_dim = ep.actions.first().map_or(0, Vec::len);
    let mut out = String::from("step");
    for i in 0..obs_dim {
        let _ = write!(out, ",obs_{i}");
    }
    for i in 0..act_dim {
        let _ = write!(out, ",action_{i}");
    }
    out.push_str(",reward,terminated,truncated\n");
    for (t, obs) in ep.obs.iter().enumerate() {
        let _ = write!(out, "{t}");
        for v in obs {
            let _ = write!(out, ",{}", *v as f32);
        }
        if t == 0 {
            out.push_str(&",".repeat(act_dim + 3));
        } else {
            for v in &ep.actions[t - 1] {
                let _ = write!(out, ",{v}");
            }
            let _ = write!(
                out,
                ",{},{},{}",
                ep.rewards[t - 1],
                ep.terminated[t - 1],
                ep.truncated[t - 1]
            );
        }
        out.push('\n');
    }
    out
}

/// Python side of the benchmark: steps `gymnasium.make(ID)` with uniform random actions
/// (resetting at episode ends) and prints the time per step.
const PY_STEP_TIMER: &str = r#"
import sys, time
import numpy as np
import gymnasium as gym
env_id, steps, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
env = gym.make(env_id)
rng = np.random.default_rng(seed)
space = env.action_space
actions = rng.uniform(space.low, space.high, size=(4096,) + space.shape).astype(space.dtype)
env.reset(seed=seed)
for i in range(200):
    _, _, te, tr, _ = env.step(actions[i])
    if te or tr:
        env.reset()
step, reset = env.step, env.reset
t = time.perf_counter()
for i in range(steps):
    _, _, te, tr, _ = step(actions[i & 4095])
    if te or tr:
        reset()
dt = time.perf_counter() - t
print(f"us_per_step: {dt / steps * 1e6}")
"#;

/// Times `steps` steps of `id` stepped directly in Python (µs/step, same machine, now).
pub fn python_us_per_step(id: &str, steps: u64, seed: u64) -> anyhow::Result<f64> {
    let python = bridge::python_executable();
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(PY_STEP_TIMER)
        .arg(id)
        .arg(steps.to_string())
        .arg(seed.to_string())
        .current_dir(std::env::temp_dir())
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "Python timing of {id} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("us_per_step: "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no timing in Python's output: {stdout}"))
}

/// Mean wall time per step (seconds) of `steps` steps with cycling random actions,
/// resetting at episode ends (resets included, as in the Python timing).
pub fn time_steps(env: &mut dyn Env, steps: u64, seed: u64) -> anyhow::Result<f64> {
    let mut obs = vec![0.0f32; env.observation_space().dim()];
    let dim = env.action_space().dim();
    let space = env.action_space().clone();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut actions = vec![0.0f32; 4096 * dim];
    for a in actions.chunks_mut(dim) {
        space.sample_into(&mut rng, a);
    }
    env.reset(Some(seed), &mut obs)?;
    let mut run = |n: u64, obs: &mut [f32]| -> anyhow::Result<()> {
        for i in 0..n as usize {
            let a = &actions[(i & 4095) * dim..((i & 4095) + 1) * dim];
            let out = env.step(a, obs)?;
            if out.done() {
                env.reset(None, obs)?;
            }
        }
        Ok(())
    };
    run(200.min(steps), &mut obs)?; // warm-up
    let t = Instant::now();
    run(steps, &mut obs)?;
    Ok(t.elapsed().as_secs_f64() / steps.max(1) as f64)
}

/// Mean wall time per vector step (seconds), random actions, auto-reset included.
pub fn time_vec_steps(env: &mut VecEnv, steps: u64, seed: u64) -> anyhow::Result<f64> {
    let (n, dim) = (env.num_envs(), env.act_dim());
    let space = env.action_space().clone();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut actions = vec![0.0f32; 256 * n * dim];
    for a in actions.chunks_mut(dim) {
        space.sample_into(&mut rng, a);
    }
    env.reset(Some(seed))?;
    let t = Instant::now();
    for i in 0..steps as usize {
        let k = i & 255;
        env.step(&actions[k * n * dim..(k + 1) * n * dim])?;
    }
    Ok(t.elapsed().as_secs_f64() / steps.max(1) as f64)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// `fixar bench env`: `name: value` lines, ours beside Python Gymnasium's, same run.
pub fn bench(args: &BenchEnvArgs) -> anyhow::Result<ExitCode> {
    if args.rounds == 0
        || args.native_steps == 0
        || args.bridge_steps == 0
        || args.python_steps == 0
    {
        return Err(config_error("step counts and --rounds must be at least 1"));
    }
    let mut pendulum = envs::make_native("Pendulum-v1")?;
    let native = time_steps(pendulum.as_mut(), args.native_steps, 0)?;
    println!("native_pendulum_v1_ns_per_step: {:.1}", native * 1e9);
    if args.native_only {
        return Ok(ExitCode::SUCCESS);
    }
    let py = python_us_per_step("Pendulum-v1", args.python_steps, 0)?;
    println!("python_gymnasium_pendulum_v1_us_per_step: {py:.2}");
    println!("native_speedup_vs_python: {:.0}", py * 1e-6 / native);

    let id = &args.bridge_env;
    let mut bridged = BridgedEnv::new(id, &BridgeConfig::default())?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        ours.push(time_steps(&mut bridged, args.bridge_steps, round as u64)? * 1e6);
        theirs.push(python_us_per_step(id, args.bridge_steps, round as u64)?);
        tracing::debug!(
            round,
            bridged = ours[round],
            python = theirs[round],
            "bench round"
        );
    }
    let (b, p) = (median(ours), median(theirs));
    println!("bridged_{}_us_per_step: {b:.2}", metric_name(id));
    println!("python_direct_{}_us_per_step: {p:.2}", metric_name(id));
    println!("bridge_cost_ratio: {:.2}", b / p);
    println!("bridge_cost_ratio_target: 1.50");
    drop(bridged);

    // Two bridged copies in a VecEnv: their workers step concurrently.
    let copies = bridge::make_many(id, 2, &BridgeConfig::default())?;
    let mut vec_env = VecEnv::from_envs(
        copies
            .into_iter()
            .map(|e| Box::new(e) as Box<dyn Env>)
            .collect(),
    )?;
    let vec_step = time_vec_steps(&mut vec_env, args.bridge_steps, 0)?;
    println!(
        "bridged_{}_vec2_us_per_vector_step: {:.2}",
        metric_name(id),
        vec_step * 1e6
    );
    Ok(ExitCode::SUCCESS)
}

/// `HalfCheetah-v5` → `halfcheetah_v5`.
fn metric_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_json_replays_and_csv_has_one_row_per_observation() {
        let args = RolloutArgs {
            env: "MountainCarContinuous-v0".into(),
            seed: 4,
            steps: Some(50),
            policy: Policy::Random,
            format: Format::Json,
        };
        let json = rollout(&args).unwrap();
        let file = reference::parse(&json).unwrap();
        assert_eq!(file.episodes.len(), 1);
        let ep = &file.episodes[0];
        assert_eq!(ep.actions.len(), 50);
        assert_eq!(ep.initial_state.len(), 2);
        // Random actions from [-1, 1] vary; what we print replays exactly.
        assert!(ep.actions.iter().any(|a| a[0] > 0.1) && ep.actions.iter().any(|a| a[0] < -0.1));
        let reports = reference::replay_file(&file, 0.0);
        assert!(reports[0].passed, "{:?}", reports[0]);
        // Same seed, same trajectory.
        assert_eq!(rollout(&args).unwrap(), json);

        let csv = rollout(&RolloutArgs {
            format: Format::Csv,
            policy: Policy::Zero,
            ..args
        })
        .unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "step,obs_0,obs_1,action_0,reward,terminated,truncated"
        );
        assert_eq!(lines.len(), 1 + 51);
        assert!(lines[1].starts_with("0,") && lines[1].ends_with(",,,,"));
        let row: Vec<&str> = lines[2].split(',').collect();
        assert_eq!(row.len(), 7);
        assert_eq!(
            (row[0], row[3], row[5], row[6]),
            ("1", "0", "false", "false")
        );
        assert_eq!(
            row[4].parse::<f64>().unwrap(),
            0.0,
            "zero action costs nothing"
        );
    }

    #[test]
    fn rollout_stops_at_the_time_limit_and_rejects_unknown_ids() {
        let args = RolloutArgs {
            env: "Pendulum-v1".into(),
            seed: 1,
            steps: Some(500),
            policy: Policy::Zero,
            format: Format::Json,
        };
        let file = reference::parse(&rollout(&args).unwrap()).unwrap();
        let ep = &file.episodes[0];
        assert_eq!(ep.actions.len(), 200);
        assert!(ep.truncated[199] && !ep.truncated[198]);
        let err = rollout(&RolloutArgs {
            env: "NoSuchEnv-v0".into(),
            ..args
        })
        .unwrap_err();
        assert_eq!(crate::failure::exit_code(&err), 2, "{err:#}");
    }

    #[test]
    fn check_report_counts_failures() {
        let mut env = envs::make_native("Pendulum-v1").unwrap();
        let ep = record_episode(env.as_mut(), 9, 20, Policy::Random).unwrap();
        let mut bad = ep.clone();
        bad.rewards[7] += 1e-3;
        let file = ReferenceFile {
            generator: None,
            episodes: vec![ep, bad],
        };
        let reports = reference::replay_file(&file, 1e-5);
        let text = render_check(&reports);
        assert!(text.ends_with("1 passed, 1 failed\n"), "{text}");
        assert!(text.contains("episode 1 (Pendulum-v1) failed"), "{text}");
        assert!(text.contains("Pendulum-v1: 1/2 episodes passed"), "{text}");
    }
}
