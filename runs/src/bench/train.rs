//! `fixar bench train`: end-to-end training steps per second of our trainer (env steps,
//! replay, one gradient update per step; no evaluation, logging or checkpoint in the
//! timed window) and, in the same invocation, of the matching Stable-Baselines3 run.
//!
//! Our side runs `agents::trainer::Trainer` on the config: the config's
//! `learning_starts` random steps and then `--warmup` steps with updates go untimed, so
//! the timed rounds measure steady state (one update per env step), as the peer's script
//! times `learn` only after its own 1000 random steps. Rounds are marked from the
//! trainer's progress callback (every 50 steps), and after each of our rounds the peer
//! runs one round of as many steps, so both see the same machine load; medians over
//! rounds are reported and the speedup is the ratio of the medians. One libtorch thread
//! and a one-thread rayon pool on our side, `--threads 1` for the peer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use agents::config::{Algo, TrainConfig};
use agents::trainer::Trainer;
use anyhow::{bail, Context, Result};

use super::{median, rates, run_sb3, Figures, Format, ScratchDir};
use crate::failure::config_error;

/// `fixar bench train`
#[derive(clap::Args, Debug)]
pub struct BenchTrainArgs {
    /// The TOML training config (runs/configs/).
    #[arg(long)]
    pub config: PathBuf,
    /// Override a config key, as `fixar train --set`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Timed steps per round (rounded up to a multiple of 50), ours and the peer's.
    #[arg(long, default_value_t = 2000)]
    pub steps: u64,
    /// Untimed steps with updates after `learning_starts`, before the first round.
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// Rounds, alternating ours and the peer's; medians reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: u64,
    /// What stdout gets.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Progress is reported every this many steps: round boundaries fall on its multiples.
const MARK: u64 = 50;

/// A Stable-Baselines3 script timing the same algorithm, env and networks.
struct Peer {
    script: &'static str,
    /// Its `name: value` line with training steps/s (one update per step).
    key: &'static str,
    hidden: [usize; 2],
    /// The batch it is run with, when the script takes one (else the one it has).
    batch: Option<usize>,
}

impl Peer {
    /// The peer matching `cfg`'s algorithm, env and network shapes, or a config error.
    fn of(cfg: &TrainConfig) -> Result<Peer> {
        let peer = match (cfg.algo, cfg.env_id.as_str()) {
            (Algo::Ddpg, "HalfCheetah-v5") => Peer {
                script: "sb3_ddpg_halfcheetah.py",
                key: "sb3_ddpg_env_steps_per_s",
                hidden: [400, 300],
                batch: None,
            },
            (Algo::Td3, "Pendulum-v1") => Peer {
                script: "sb3_td3_pendulum.py",
                key: "sb3_td3_env_steps_per_s",
                hidden: [256, 256],
                batch: Some(256),
            },
            (algo, env) => {
                return Err(config_error(format!(
                    "no Stable-Baselines3 peer for {} on {env}: ../shared/bench has sb3_ddpg_halfcheetah.py (DDPG on HalfCheetah-v5) and sb3_td3_pendulum.py (TD3 on Pendulum-v1)",
                    format!("{algo:?}").to_uppercase()
                )))
            }
        };
        if cfg.hidden != peer.hidden {
            return Err(config_error(format!(
                "key `hidden`: {:?}, but the peer {} trains {:?} networks",
                cfg.hidden, peer.script, peer.hidden
            )));
        }
        if let Some(b) = peer.batch.filter(|&b| b != cfg.batch_size) {
            return Err(config_error(format!(
                "key `batch_size`: {}, but the peer {} trains with batch {b}",
                cfg.batch_size, peer.script
            )));
        }
        Ok(peer)
    }

    /// One round of `steps` timed steps: steps/s.
    fn round(&self, steps: u64, batch: usize) -> Result<f64> {
        let (steps, batch) = (steps.to_string(), batch.to_string());
        let mut args = vec!["--threads", "1", "--updates", "50", "--steps", &steps];
        if self.batch.is_none() {
            args.extend(["--batch", &batch]);
        }
        let lines: BTreeMap<String, f64> = run_sb3(self.script, &args)?;
        lines
            .get(self.key)
            .copied()
            .with_context(|| format!("{} printed no {}", self.script, self.key))
    }
}

/// The `fixar bench train` command.
pub fn run(args: &BenchTrainArgs) -> Result<ExitCode> {
    if args.steps == 0 || args.rounds == 0 {
        return Err(config_error("--steps and --rounds must be positive"));
    }
    let (mut cfg, _) =
        agents::config::load(Some(&args.config), &args.sets).map_err(crate::failure::usage)?;
    let peer = Peer::of(&cfg)?;
    let per_round = args.steps.div_ceil(MARK) * MARK;
    let start = (cfg.learning_starts + args.warmup).div_ceil(MARK) * MARK;
    let stop = start + per_round * args.rounds;
    // Evaluation, logging and checkpoints fall after `stop`, where the run is cut off.
    cfg.total_timesteps = stop + 1;
    cfg.eval_every = stop + 1;
    cfg.log_every = stop + 1;
    cfg.checkpoint_every = stop + 1;
    crate::train::keep_freed_memory();
    tch::set_num_threads(1);
    let scratch = ScratchDir::new("train")?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .context("starting the bench thread pool")?;
    let (ours, sb3, gemms) = pool.install(|| -> Result<(Vec<f64>, Vec<f64>, String)> {
        // libtorch's thread count is per calling thread: set it where the updates run.
        tch::set_num_threads(1);
        let mut trainer =
            Trainer::new(cfg.clone(), 0, scratch.path()).context("starting the trainer")?;
        let gemms = trainer.gemm_description();
        let (mut ours, mut sb3) = (Vec::new(), Vec::new());
        let mut peer_error = None;
        let mut round_start: Option<Instant> = None;
        trainer
            .run(Some(stop), &mut |p| {
                if p.step < start || !(p.step - start).is_multiple_of(per_round) {
                    return;
                }
                if let Some(t) = round_start {
                    ours.push(per_round as f64 / t.elapsed().as_secs_f64());
                    if peer_error.is_none() {
                        match peer.round(per_round, cfg.batch_size) {
                            Ok(v) => sb3.push(v),
                            Err(e) => peer_error = Some(e),
                        }
                    }
                }
                round_start = Some(Instant::now());
            })
            .context("training")?;
        if let Some(e) = peer_error {
            return Err(e.context("the Stable-Baselines3 peer"));
        }
        Ok((ours, sb3, gemms))
    })?;
    if ours.len() as u64 != args.rounds || sb3.len() != ours.len() {
        bail!(
            "timed {} of {} rounds (peer {})",
            ours.len(),
            args.rounds,
            sb3.len()
        );
    }
    let (ours_med, sb3_med) = (median(&ours), median(&sb3));
    let mut fig = Figures::default();
    fig.put("config", args.config.display().to_string());
    fig.put("sets", args.sets.join(" "));
    fig.put("algo", format!("{:?}", cfg.algo).to_lowercase());
    fig.put("env_id", cfg.env_id.clone());
    fig.put("precision", cfg.precision.to_string());
    fig.put(
        "gemm",
        format!("{} ({gemms})", format!("{:?}", cfg.gemm).to_lowercase()),
    );
    fig.put(
        "hidden",
        cfg.hidden
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join("-"),
    );
    fig.put("batch_size", cfg.batch_size as u64);
    fig.put("threads", 1);
    fig.put("untimed_random_steps", cfg.learning_starts);
    fig.put("untimed_update_steps", start - cfg.learning_starts);
    fig.put("steps_per_round", per_round);
    fig.put("rounds", args.rounds);
    fig.num("fixar_steps_per_s", ours_med, 1);
    fig.put("fixar_rounds_steps_per_s", rates(&ours));
    fig.put("peer", peer.script);
    fig.num("sb3_steps_per_s", sb3_med, 1);
    fig.put("sb3_rounds_steps_per_s", rates(&sb3));
    fig.num("speedup_vs_sb3", ours_med / sb3_med, 2);
    fig.print(args.format)?;
    Ok(ExitCode::SUCCESS)
}
