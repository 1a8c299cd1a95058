//! `fixar bench deploy`, `fixar bench train` and `fixar bench quant` on tiny budgets: the JSON figures exist
//! and are positive, the compiled C actor reproduces the golden integer inference on the
//! exported vectors, and commands without a peer or a checkpoint are usage errors.

mod common;

use agents::config::{Algo, TrainConfig};
use common::{fixar, tiny_config, train_tiny_fxp16, workspace, Run, Scratch};

fn positive(j: &serde_json::Value, key: &str) -> f64 {
    let v = j[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {j}"));
    assert!(v > 0.0 && v.is_finite(), "{key} = {v}");
    v
}

#[test]
fn bench_deploy_times_a_c_actor_that_equals_the_golden_inference_beside_libtorch() {
    let dir = Scratch::new("deploy");
    let run = train_tiny_fxp16(&dir);
    let j = fixar()
        .args(["bench", "deploy", "--calls", "300", "--rounds", "2"])
        .args(["--vectors", "100", "--format", "json", "--run"])
        .arg(&run)
        .run_ok()
        .json();
    assert_eq!(j["golden_vectors_checked"].as_u64(), Some(100), "{j}");
    assert_eq!(j["golden_mismatches"].as_u64(), Some(0), "{j}");
    assert_eq!(j["actor"], "3-16-16-1");
    assert_eq!(j["macs_per_action"].as_u64(), Some(3 * 16 + 16 * 16 + 16));
    assert_eq!(j["sums"].as_str().unwrap().split(',').count(), 3, "{j}");
    let c = positive(&j, "c_us_per_action");
    let torch = positive(&j, "libtorch_us_per_action");
    let speedup = positive(&j, "speedup_vs_libtorch");
    assert!((speedup - torch / c).abs() <= 0.01 * speedup + 0.01, "{j}");

    let text = fixar()
        .args(["bench", "deploy", "--calls", "50", "--rounds", "1", "--run"])
        .arg(&run)
        .run_ok()
        .stdout;
    assert!(text.lines().any(|l| l.starts_with("speedup_vs_libtorch: ")));

    let missing = fixar()
        .args(["bench", "deploy", "--run"])
        .arg(dir.join("nothing"))
        .run();
    assert_eq!(missing.code, Some(2), "{}", missing.stderr);
    assert!(
        missing.stderr.contains("no such directory"),
        "{}",
        missing.stderr
    );
}

#[test]
fn bench_train_reports_our_steady_state_steps_per_second_beside_sb3s() {
    let dir = Scratch::new("train");
    // The SB3 TD3 Pendulum peer's networks and batch.
    let cfg = dir.write_config(
        "td3.toml",
        &TrainConfig {
            hidden: vec![256, 256],
            batch_size: 256,
            learning_starts: 100,
            ..tiny_config()
        },
    );
    let j = fixar()
        .args(["bench", "train", "--steps", "100", "--rounds", "1"])
        .args(["--warmup", "20", "--format", "json", "--config"])
        .arg(&cfg)
        .run_ok()
        .json();
    assert_eq!(j["algo"], "td3");
    assert_eq!(j["peer"], "sb3_td3_pendulum.py");
    assert_eq!(j["steps_per_round"].as_u64(), Some(100));
    assert_eq!(j["untimed_random_steps"].as_u64(), Some(100));
    assert_eq!(
        j["untimed_update_steps"].as_u64(),
        Some(50),
        "rounded up to 50"
    );
    let ours = positive(&j, "fixar_steps_per_s");
    let sb3 = positive(&j, "sb3_steps_per_s");
    let speedup = positive(&j, "speedup_vs_sb3");
    assert!((speedup - ours / sb3).abs() <= 0.01 * speedup + 0.01, "{j}");
}

#[test]
fn bench_train_without_a_matching_peer_is_a_usage_error_naming_why() {
    let dir = Scratch::new("nopeer");
    let ddpg = dir.write_config(
        "ddpg.toml",
        &TrainConfig {
            algo: Algo::Ddpg,
            ..tiny_config()
        },
    );
    let o = fixar()
        .args(["bench", "train", "--config"])
        .arg(&ddpg)
        .run();
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("no Stable-Baselines3 peer for DDPG on Pendulum-v1"),
        "{}",
        o.stderr
    );
    let td3 = workspace().join("runs/configs/td3_pendulum.toml");
    let o = fixar()
        .args(["bench", "train", "--set", "hidden=[64,64]", "--config"])
        .arg(&td3)
        .run();
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("key `hidden`"), "{}", o.stderr);
}

#[test]
fn bench_quant_times_the_exact_gemm_and_it_equals_libtorch_f64() {
    let out = fixar()
        .args([
            "bench", "quant", "--n", "2000", "--repeat", "1", "--peer", "false",
        ])
        .run_ok()
        .stdout;
    let value = |key: &str| -> &str {
        out.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
            .unwrap_or_else(|| panic!("no `{key}` line in\n{out}"))
    };
    for shape in ["256x256x256", "64x400x300"] {
        assert_eq!(
            value(&format!("exact_gemm_{shape}_identical_to_f64")),
            "true"
        );
        for key in ["exact_gemm", "libtorch_f64_gemm", "libtorch_f32_gemm"] {
            let us: f64 = value(&format!("{key}_{shape}_us")).parse().unwrap();
            assert!(us > 0.0 && us.is_finite(), "{key}_{shape}_us = {us}");
        }
    }
    assert!(["true", "false"].contains(&value("exact_gemm_vnni")));
}
