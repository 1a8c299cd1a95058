//! `fixar env check` and `fixar env rollout`: checking environments against recorded
//! Gymnasium trajectories, and printing trajectories. (`fixar bench env` is in
//! [`crate::bench::env`].)

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use envs::reference::{self, ReferenceEpisode, ReferenceFile};
use envs::Env;
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
