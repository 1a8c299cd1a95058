//! `fixar bench td3`: TD3 gradient updates per second on a filled replay buffer
//! (Pendulum-v1 shapes: obs 3, action 1; 256-256 networks; batch 256), libtorch's f32
//! GEMM throughput at exactly the update's GEMM shapes measured in the same run, the
//! roofline fraction, fast/exact mismatch per layer (fixed-point presets), and the
//! Stable-Baselines3 peer from `../shared/bench/sb3_td3_pendulum.py`.
//!
//! What is counted: one update = one critic step on both critics (TD3 target with target
//! policy smoothing) plus, every `policy_frequency` = 2 updates, one actor step and the
//! soft target updates, including minibatch sampling; no env stepping. The roofline:
//! FLOPs of one update (2 m k n per GEMM, averaged over the policy delay) divided by the
//! time libtorch needs for the same GEMMs back to back at the same thread count;
//! `roofline_fraction` = that GEMM-only time / the measured time per update. Updates and
//! GEMMs are timed in alternating rounds and the best round of each is reported, so load
//! from other processes affects both alike. Each round starts with 50 untimed updates, as
//! the peer's script warms up before it times (the probe and the peer's process leave
//! other data in the caches).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use agents::config::TrainConfig;
use agents::mlp::fast_exact_mismatch;
use agents::replay::ReplayBuffer;
use agents::trainer::build_agent;
use agents::Preset;
use anyhow::{anyhow, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use super::{median, rates};
pub use agents::td3::{update_gemms as td3_update_gemms, GemmRole};

use crate::failure::config_error;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchTd3Args {
    /// float32, fxp32 or fxp16.
    #[arg(long, default_value = "float32")]
    pub precision: String,
    /// Timed gradient updates.
    #[arg(long, default_value_t = 500)]
    pub updates: u64,
    /// libtorch intra-op threads (ours and the peer's).
    #[arg(long, default_value_t = 1)]
    pub threads: i32,
    /// GEMM emulation of fixed-point layers: fast, exact or auto.
    #[arg(long, default_value = "fast")]
    pub gemm: String,
    /// Run the Stable-Baselines3 peer in the same invocation.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub peer: bool,
    /// Rounds of (updates, GEMM roofline, peer); the best of each is reported, medians
    /// beside.
    #[arg(long, default_value_t = 3)]
    pub rounds: u64,
    /// Measure libtorch's GEMM throughput for the roofline (off: only the updates run,
    /// e.g. under a profiler).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub roofline: bool,
    /// Updates the peer times, split over the rounds.
    #[arg(long, default_value_t = 1000)]
    pub peer_updates: u64,
}

const OBS: usize = 3;
const ACT: usize = 1;
const HIDDEN: [usize; 2] = [256, 256];
const BATCH: usize = 256;
const POLICY_FREQUENCY: u64 = 2;
/// Untimed updates before each round (the peer's script warms up with 50).
const WARM_UP: usize = 50;

/// Seconds per call of libtorch's f32 GEMM for one (role, batch, k, n), as the MLP
/// issues it (addmm, x^T mm dz, dz mm W^T), averaged over at least 30 ms.
fn time_gemm(role: GemmRole, b: usize, k: usize, n: usize) -> f64 {
    let opts = (Kind::Float, tch::Device::Cpu);
    let (b, k, n) = (b as i64, k as i64, n as i64);
    let x = Tensor::randn([b, k], opts);
    let w = Tensor::randn([k, n], opts);
    let bias = Tensor::randn([n], opts);
    let dz = Tensor::randn([b, n], opts);
    let call = || match role {
        GemmRole::Forward => bias.addmm(&x, &w),
        GemmRole::WeightGrad => x.tr().mm(&dz),
        GemmRole::InputError => dz.mm(&w.tr()),
    };
    for _ in 0..5 {
        let _ = call();
    }
    let (mut reps, t) = (0u64, Instant::now());
    while t.elapsed().as_secs_f64() < 0.03 || reps < 10 {
        let _ = call();
        reps += 1;
    }
    t.elapsed().as_secs_f64() / reps as f64
}

/// (FLOPs per update, seconds of GEMM per update at libtorch's measured speed).
pub fn gemm_roofline(gemms: &BTreeMap<(GemmRole, usize, usize, usize), f64>) -> (f64, f64) {
    let mut flops = 0.0;
    let mut secs = 0.0;
    for (&(role, b, k, n), &count) in gemms {
        let (m, kk, nn) = match role {
            GemmRole::Forward => (b, k, n),
            GemmRole::WeightGrad => (k, b, n),
            GemmRole::InputError => (b, n, k),
        };
        flops += count * 2.0 * (m * kk * nn) as f64;
        secs += count * time_gemm(role, b, k, n);
    }
    (flops, secs)
}

/// quant::tensor::fake_quant on a 256 x 256 tensor of `kind` into the fxp32 preset's
/// pre-activation format (Q16.16, RND_CONV, SAT): nanoseconds per element.
fn fake_quant_ns_per_element(kind: Kind) -> f64 {
    let f: quant::FxFormat = "ap_fixed<32,16,AP_RND_CONV,AP_SAT>"
        .parse()
        .expect("valid format");
    let x = Tensor::randn([256, 256], (kind, tch::Device::Cpu)) * 50.0;
    for _ in 0..5 {
        let _ = quant::tensor::fake_quant(&x, &f, None);
    }
    let (mut reps, t) = (0u64, Instant::now());
    while t.elapsed().as_secs_f64() < 0.05 || reps < 10 {
        let _ = quant::tensor::fake_quant(&x, &f, None);
        reps += 1;
    }
    t.elapsed().as_secs_f64() * 1e9 / (reps as f64 * x.numel() as f64)
}

/// Elements every layer of the agent cast since the last call (its counters are taken).
fn cast_elements(agent: &mut Box<dyn agents::Agent>) -> u64 {
    agent
        .networks_mut()
        .into_iter()
        .flat_map(|n| {
            n.take_stats()
                .into_iter()
                .map(|l| l.iter().map(|s| s.elements).sum::<u64>())
        })
        .sum()
}

/// The peer's `name: value` lines, or why there are none.
fn run_peer(threads: i32, updates: u64) -> Result<BTreeMap<String, f64>> {
    let (threads, updates) = (threads.to_string(), updates.to_string());
    super::run_sb3(
        "sb3_td3_pendulum.py",
        &[
            "--threads",
            &threads,
            "--updates",
            &updates,
            "--steps",
            "200",
        ],
    )
}

/// The `fixar bench td3` command.
pub fn run(args: &BenchTd3Args) -> Result<ExitCode> {
    let precision: Preset =
        args.precision
            .parse()
            .map_err(|e: agents::precision::PrecisionError| {
                config_error(format!("--precision: {e}"))
            })?;
    let gemm = match args.gemm.as_str() {
        "fast" => agents::Gemm::Fast,
        "exact" => agents::Gemm::Exact,
        "auto" => agents::Gemm::Auto,
        other => {
            return Err(config_error(format!(
                "--gemm {other}: expected fast, exact or auto"
            )))
        }
    };
    if args.threads < 1 || args.updates == 0 || args.rounds == 0 {
        return Err(config_error(
            "--threads, --updates and --rounds must be positive",
        ));
    }
    if args.peer && args.peer_updates == 0 {
        return Err(config_error(
            "--peer-updates must be positive (or --peer false)",
        ));
    }
    tch::set_num_threads(args.threads);
    crate::train::keep_freed_memory();
    let cfg = TrainConfig {
        hidden: HIDDEN.to_vec(),
        batch_size: BATCH,
        precision,
        gemm,
        policy_frequency: POLICY_FREQUENCY,
        ..TrainConfig::default()
    };
    let mut env = envs::make("Pendulum-v1").map_err(|e| anyhow!("Pendulum-v1: {e}"))?;
    let (os, asp) = (env.observation_space().clone(), env.action_space().clone());
    assert_eq!((os.low.len(), asp.low.len()), (OBS, ACT));
    let mut agent = build_agent(&cfg, &os, &asp, 0);
    // Fill the buffer with random-action transitions, as before learning starts.
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut buffer = ReplayBuffer::new(10_000, OBS, ACT);
    let (mut obs, mut next) = (vec![0f32; OBS], vec![0f32; OBS]);
    env.reset(Some(0), &mut obs).map_err(|e| anyhow!("{e}"))?;
    for _ in 0..10_000 {
        let a = [rng.gen_range(asp.low[0]..=asp.high[0])];
        let out = env.step(&a, &mut next).map_err(|e| anyhow!("{e}"))?;
        buffer.push(&obs, &a, out.reward as f32, &next, out.terminated);
        obs.copy_from_slice(&next);
        if out.done() {
            env.reset(None, &mut obs).map_err(|e| anyhow!("{e}"))?;
        }
    }
    // quant's casts parallelise with rayon: give them the same thread count as
    // libtorch, so `--threads 1` measures one core.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads as usize)
        .build()
        .context("starting the bench thread pool")?;
    let gemms = td3_update_gemms(OBS, ACT, &HIDDEN, BATCH, POLICY_FREQUENCY);
    let mut peer: Vec<Result<BTreeMap<String, f64>>> = Vec::new();
    let (secs, gemm_secs, flops, casts, per_round, round_secs, cpu_secs) = pool.install(|| {
        // libtorch's thread count (OpenMP's, MKL's) is per calling thread: set it on the
        // thread that runs the updates, not only on main (a worker otherwise runs some
        // GEMMs, e.g. `mm` without transposes, on every core).
        tch::set_num_threads(args.threads);
        // Untimed updates, as the peer's script does before timing; their cast counts
        // are dropped so `cast_elements_per_update` counts timed updates only.
        let warm_up = |agent: &mut Box<dyn agents::Agent>,
                       buffer: &mut ReplayBuffer,
                       rng: &mut ChaCha8Rng| {
            for _ in 0..WARM_UP {
                let b = buffer.sample(BATCH, rng);
                agent.update(&b, rng);
            }
            cast_elements(agent);
        };
        warm_up(&mut agent, &mut buffer, &mut rng);
        // Rounds alternate timed updates with the GEMM roofline measurement and a peer
        // run, so all three see the same machine load; the best round of each is
        // reported (other processes only ever slow a round down), medians beside.
        let rounds = args.rounds;
        let per_round = args.updates.div_ceil(rounds);
        let (mut best_gemm, mut flops) = (f64::INFINITY, f64::NAN);
        let (mut ours, mut cast_sum, mut cpu) = (Vec::new(), 0u64, Vec::new());
        for round in 0..rounds {
            if round > 0 {
                // The peer's run and the GEMM probe left other data in the caches; its
                // script warms up before timing too.
                warm_up(&mut agent, &mut buffer, &mut rng);
            }
            let (t, c) = (Instant::now(), process_cpu_s());
            for _ in 0..per_round {
                let b = buffer.sample(BATCH, &mut rng);
                agent.update(&b, &mut rng);
            }
            ours.push(t.elapsed().as_secs_f64() / per_round as f64);
            cpu.push((process_cpu_s() - c) / per_round as f64);
            cast_sum += cast_elements(&mut agent);
            if args.roofline {
                let (f, g) = gemm_roofline(&gemms);
                flops = f;
                best_gemm = best_gemm.min(g);
            }
            if args.peer && !matches!(peer.last(), Some(Err(_))) {
                peer.push(run_peer(args.threads, args.peer_updates.div_ceil(rounds)));
            }
        }
        let best = ours.iter().copied().fold(f64::INFINITY, f64::min);
        let best_cpu = cpu.iter().copied().fold(f64::INFINITY, f64::min);
        (
            best,
            best_gemm,
            flops,
            cast_sum / rounds,
            per_round,
            ours,
            best_cpu,
        )
    });
    let ups = 1.0 / secs;
    let ours_median = 1.0 / median(&round_secs);
    println!("precision: {precision}");
    println!("gemm_mode: {}", args.gemm);
    println!("threads: {}", args.threads);
    println!("shapes: Pendulum-v1 obs {OBS} act {ACT}, hidden 256-256, batch {BATCH}, policy_frequency {POLICY_FREQUENCY}");
    println!(
        "updates: {} ({} rounds of {per_round}, best round reported{})",
        per_round * args.rounds,
        args.rounds,
        if args.peer {
            "; each round followed by the peer's"
        } else {
            ""
        }
    );
    println!("updates_per_s: {ups:.1}");
    println!("updates_per_s_median: {ours_median:.1}");
    println!(
        "rounds_updates_per_s: {}",
        rates(&round_secs.iter().map(|s| 1.0 / s).collect::<Vec<_>>())
    );
    println!("ms_per_update: {:.3}", secs * 1e3);
    // CPU time of this process over the timed updates (nothing else of ours runs then):
    // on a loaded machine wall time also counts time the scheduler gave to others.
    println!("cpu_ms_per_update: {:.3}", cpu_secs * 1e3);
    println!("updates_per_cpu_s: {:.1}", 1.0 / cpu_secs);
    if args.roofline {
        println!("flops_per_update: {flops:.4e}");
        println!("gemm_ms_per_update: {:.3}", gemm_secs * 1e3);
        println!("gemm_gflops: {:.1}", flops / gemm_secs / 1e9);
        println!("achieved_gflops: {:.1}", flops * ups / 1e9);
        println!("roofline_fraction: {:.3}", gemm_secs / secs);
    }
    if precision != Preset::Float32 {
        let per_update = casts as f64 / per_round as f64;
        let kind = agent.networks()[1].kind();
        let ns = pool.install(|| fake_quant_ns_per_element(kind));
        println!("cast_elements_per_update: {per_update:.0}");
        println!("fake_quant_ns_per_element: {ns:.2}");
        println!(
            "fake_quant_ms_per_update_estimate: {:.3}",
            per_update * ns * 1e-6
        );
        let b = buffer.sample(BATCH, &mut rng);
        let nets = agent.networks();
        let d_actor =
            Tensor::randn([BATCH as i64, ACT as i64], (Kind::Double, tch::Device::Cpu)) * 1e-3;
        let d_critic = Tensor::randn([BATCH as i64, 1], (Kind::Double, tch::Device::Cpu)) * 1e-2;
        let x_critic = Tensor::cat(&[b.obs.shallow_clone(), b.actions.shallow_clone()], 1);
        for (net, x, d) in [(nets[0], &b.obs, &d_actor), (nets[1], &x_critic, &d_critic)] {
            match fast_exact_mismatch(net, x, d) {
                Ok(rows) => {
                    for r in rows {
                        println!("mismatch.{}.preact: {:.5}", r.layer, r.preact);
                        println!("mismatch.{}.grad: {:.5}", r.layer, r.grad);
                        if r.error.is_finite() {
                            println!("mismatch.{}.error: {:.5}", r.layer, r.error);
                        }
                    }
                }
                Err(e) => println!("mismatch.{}: n/a ({e})", net.name()),
            }
        }
    }
    if args.peer {
        match peer.iter().find_map(|r| r.as_ref().err()) {
            Some(e) => println!("sb3_td3_updates_per_s: n/a ({e})"),
            None => {
                let get = |key: &str| -> Vec<f64> {
                    peer.iter()
                        .filter_map(|r| r.as_ref().ok()?.get(key).copied())
                        .collect()
                };
                let (u, env) = (get("sb3_td3_updates_per_s"), get("sb3_td3_env_steps_per_s"));
                if !u.is_empty() {
                    let best = u.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let med = median(&u);
                    println!("sb3_td3_updates_per_s: {best:.1}");
                    println!("sb3_td3_updates_per_s_median: {med:.1}");
                    println!("sb3_rounds_updates_per_s: {}", rates(&u));
                    println!("speedup_vs_sb3: {:.2}", ups / best);
                    println!("speedup_vs_sb3_median: {:.2}", ours_median / med);
                }
                if !env.is_empty() {
                    let best = env.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    println!("sb3_td3_env_steps_per_s: {best:.1}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_print_with_one_decimal() {
        assert_eq!(rates(&[1.25, 10.0]), "1.2 10.0");
    }

    #[test]
    fn td3_update_flops_count_every_gemm_of_both_phases() {
        let g = td3_update_gemms(3, 1, &[256, 256], 256, 2);
        let mut flops = 0.0;
        for (&(role, b, k, n), &c) in &g {
            let _ = role;
            flops += c * 2.0 * (b * k * n) as f64;
        }
        // Hand count: critic phase 599,040 MACs/sample, actor phase 332,544 / 2.
        let macs = 599_040.0 + 332_544.0 / 2.0;
        assert!(
            (flops - 2.0 * 256.0 * macs).abs() < 1.0,
            "{flops} vs {}",
            2.0 * 256.0 * macs
        );
        // 256x256 forward: target actor, 4 critics, and half of (actor + critic1).
        assert_eq!(g[&(GemmRole::Forward, 256, 256, 256)], 6.0);
    }
}

/// CPU seconds this process has used (all its threads).
fn process_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
