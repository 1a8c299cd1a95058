//! Sweeps: two shards run in two processes and merged by `fixar collect` give the same
//! results table as one process running the whole grid; bad input exits as documented.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixar() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fixar"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fixar-sweep-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A grid of 4 tiny trials (2 algos x 2 precisions x 1 seed) writing into `out`.
fn write_sweep(dir: &Path, out: &Path) -> PathBuf {
    std::fs::write(
        dir.join("base.toml"),
        "env_id = \"Pendulum-v1\"\ntotal_timesteps = 300\nlearning_starts = 100\nbatch_size = 32\nhidden = [16, 16]\neval_every = 150\neval_episodes = 2\nlog_every = 100\ncheckpoint_every = 100000\n",
    )
    .unwrap();
    let sweep = dir.join("sweep.toml");
    std::fs::write(
        &sweep,
        format!(
            "name = \"tiny\"\nbase = \"base.toml\"\nalgos = [\"td3\", \"ddpg\"]\nenvs = [\"Pendulum-v1\"]\nprecisions = [\"float32\", \"fxp32\"]\nseeds = [0]\nout = \"{}\"\n",
            out.display()
        ),
    )
    .unwrap();
    sweep
}

fn ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn two_shards_in_two_processes_collect_to_the_one_process_results() {
    let dir = scratch("shards");
    let (whole, shards) = (dir.join("whole"), dir.join("sharded"));
    let sweep_whole = write_sweep(&dir, &whole);
    ok(fixar().args(["-q", "sweep", "--config"]).arg(&sweep_whole));

    let sweep_sharded = dir.join("sharded.toml");
    std::fs::write(
        &sweep_sharded,
        std::fs::read_to_string(&sweep_whole)
            .unwrap()
            .replace(whole.to_str().unwrap(), shards.to_str().unwrap()),
    )
    .unwrap();
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
    let o = fixar().args(["collect"]).arg(&a).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing trial(s)"));

    let merged = dir.join("merged");
    ok(fixar()
        .args(["collect", "--out"])
        .arg(&merged)
        .arg(&a)
        .arg(&b));
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
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("duplicated"));
}

#[test]
fn bad_sweep_input_exits_2_and_creates_nothing() {
    let dir = scratch("bad");
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
    let o = fixar()
        .args(["sweep", "--config"])
        .arg(&sweep)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("fxp7"));
    assert!(!out.exists(), "nothing is created on a config error");
    let o = fixar()
        .args(["sweep", "--shard", "2/2", "--config"])
        .arg(&sweep)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = fixar()
        .args(["collect"])
        .arg(dir.join("nope"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
