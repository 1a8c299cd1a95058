//! Sweeps: two shards run in two processes and merged by `fixar collect` give the same
//! results table as one process running the whole grid; bad input exits as documented.

mod common;

use std::path::{Path, PathBuf};

use agents::config::TrainConfig;
use common::{fixar, tiny_config, Run, Scratch};

/// A grid of 4 tiny trials (2 algos x 2 precisions x 1 seed) writing into `out`.
fn write_sweep(dir: &Scratch, out: &Path) -> PathBuf {
    dir.write_config(
        "base.toml",
        &TrainConfig {
            total_timesteps: 300,
            learning_starts: 100,
            eval_every: 150,
            log_every: 100,
            ..tiny_config()
        },
    );
    dir.write(
        "sweep.toml",
        &format!(
            "name = \"tiny\"\nbase = \"base.toml\"\nalgos = [\"td3\", \"ddpg\"]\nenvs = [\"Pendulum-v1\"]\nprecisions = [\"float32\", \"fxp32\"]\nseeds = [0]\nout = \"{}\"\n",
            out.display()
        ),
    )
}

#[test]
fn two_shards_in_two_processes_collect_to_the_one_process_results() {
    let dir = Scratch::new("shards");
    let (whole, shards) = (dir.join("whole"), dir.join("sharded"));
    let sweep_whole = write_sweep(&dir, &whole);
    fixar()
        .args(["-q", "sweep", "--config"])
        .arg(&sweep_whole)
        .run_ok();

    let sweep_sharded = dir.write(
        "sharded.toml",
        &std::fs::read_to_string(&sweep_whole)
            .unwrap()
            .replace(whole.to_str().unwrap(), shards.to_str().unwrap()),
    );
    // Two processes at once, each with its own output directory, as on two machines.
    let (a, b) = (shards.join("a"), shards.join("b"));
    let mut p0 = fixar()
        .args(["-q", "sweep", "--shard", "0/2", "--config"])
        .arg(&sweep_sharded)
        .arg("--out")
        .arg(&a)
        .spawn()
        .unwrap();
    let mut p1 = fixar()
        .args(["-q", "sweep", "--shard", "1/2", "--config"])
        .arg(&sweep_sharded)
        .arg("--out")
        .arg(&b)
        .spawn()
        .unwrap();
    assert!(p0.wait().unwrap().success() && p1.wait().unwrap().success());

    // One shard alone is incomplete: collect lists the missing trials and fails.
    let o = fixar().args(["collect"]).arg(&a).run();
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("missing trial(s)"));

    let merged = dir.join("merged");
    fixar()
        .args(["collect", "--out"])
        .arg(&merged)
        .arg(&a)
        .arg(&b)
        .run_ok();
    let one = std::fs::read_to_string(whole.join("results.csv")).unwrap();
    let two = std::fs::read_to_string(merged.join("results.csv")).unwrap();
    assert_eq!(one.lines().count(), 5, "{one}");
    assert_eq!(one, two, "sharded results differ from the one-process run");
    assert_eq!(
        std::fs::read_to_string(whole.join("results.md")).unwrap(),
        std::fs::read_to_string(merged.join("results.md")).unwrap()
    );
    assert!(merged.join("curves_td3_Pendulum-v1.png").is_file());

    // Collecting the same shard twice reports duplicates.
    let o = fixar()
        .args(["collect", "--allow-partial", "--out"])
        .arg(dir.join("dup"))
        .arg(&a)
        .arg(&a)
        .arg(&b)
        .run();
    assert!(o.success());
    assert!(o.stderr.contains("duplicated"));
}

#[test]
fn bad_sweep_input_exits_2_and_creates_nothing() {
    let dir = Scratch::new("bad");
    let out = dir.join("out");
    let sweep = write_sweep(&dir, &out);
    let text = std::fs::read_to_string(&sweep).unwrap();
    std::fs::write(
        &sweep,
        text.replace(
            "precisions = [\"float32\", \"fxp32\"]",
            "precisions = [\"fxp7\"]",
        ),
    )
    .unwrap();
    let o = fixar().args(["sweep", "--config"]).arg(&sweep).run();
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("fxp7"));
    assert!(!out.exists(), "nothing is created on a config error");
    let o = fixar()
        .args(["sweep", "--shard", "2/2", "--config"])
        .arg(&sweep)
        .run();
    assert_eq!(o.code, Some(2));
    let o = fixar().args(["collect"]).arg(dir.join("nope")).run();
    assert_eq!(o.code, Some(2));
}
