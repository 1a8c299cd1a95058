//! `fixar bench env`: native Pendulum-v1 and bridged MuJoCo stepping timed against
//! Python Gymnasium stepping the same env, in the same run.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use envs::bridge::{self, BridgeConfig, BridgedEnv};
use envs::{Env, VecEnv};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::median;
use crate::failure::config_error;

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
    let (b, p) = (median(&ours), median(&theirs));
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
