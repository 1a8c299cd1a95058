//! `fixar train` end to end on tiny budgets: run directory contents, refusals, config
//! errors, and a real kill (SIGKILL) and a stop signal (SIGTERM), each followed by
//! `--resume`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agents::config::TrainConfig;
use agents::precision::Preset;
use common::{fixar, tiny_config, Ran, Run, Scratch};

/// The tiny fxp16 config of these tests, `total` steps long, written into `dir`.
fn config(dir: &Scratch, total: u64) -> PathBuf {
    dir.write_config(
        "tiny.toml",
        &TrainConfig {
            total_timesteps: total,
            hidden: vec![32, 32],
            checkpoint_every: 400,
            precision: Preset::Fxp16,
            ..tiny_config()
        },
    )
}

fn train(args: &[&str]) -> Ran {
    fixar().arg("train").args(args).run()
}

/// Waits (up to 2 minutes) until the seed directory holds its first checkpoint.
fn wait_for_checkpoint(seed_dir: &Path) {
    let ck = seed_dir.join("checkpoint.bin");
    let t = Instant::now();
    while !ck.exists() && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        ck.exists(),
        "no checkpoint appeared in {}",
        seed_dir.display()
    );
}

/// The four CSVs of two seed directories are equal byte for byte.
fn assert_same_csvs(x: &Path, y: &Path, what: &str) {
    for f in ["metrics.csv", "quant.csv", "eval.csv", "episodes.csv"] {
        let read = |d: &Path| std::fs::read_to_string(d.join(f)).unwrap();
        assert!(read(x) == read(y), "{f} differs after {what}");
    }
}

#[test]
fn train_writes_a_complete_run_directory_and_refuses_to_overwrite_it() {
    let d = Scratch::new("complete");
    let cfg = config(&d, 600);
    let out = d.join("run");
    let o = train(&[
        "--config",
        cfg.to_str().unwrap(),
        "--seeds",
        "0..2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.success(), "{}", o.stderr);
    for f in [
        "config.toml",
        "run.json",
        "summary.json",
        "learning_curve.png",
        "learning_curve.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    for s in [0, 1] {
        for f in [
            "metrics.csv",
            "quant.csv",
            "eval.csv",
            "episodes.csv",
            "checkpoint.bin",
        ] {
            assert!(
                out.join(format!("seed_{s}")).join(f).is_file(),
                "seed_{s}/{f} missing"
            );
        }
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["seeds"].as_array().unwrap().len(), 2);
    assert_eq!(summary["final_eval_return"]["n"], 2);
    assert_eq!(summary["precision"], "fxp16");
    let stdout = &o.stdout;
    assert!(stdout.contains("final_eval_return_mean:"), "{stdout}");
    // run.json names the CPU (MKL's kernels, and so float sums, depend on it).
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if let Some(model) = cpuinfo.lines().find(|l| l.starts_with("model name")) {
        let model = model.split_once(':').unwrap().1.trim();
        assert_eq!(info["cpu"], model, "{info}");
    }

    // A second run into the same directory is refused (exit 2); --force replaces it.
    let o = train(&[
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.code, Some(2));
    assert!(o.stderr.contains("already holds a run"));
    let o = train(&[
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--force",
        "--seeds",
        "3",
    ]);
    assert!(o.success(), "{}", o.stderr);
    assert!(out.join("seed_3").is_dir() && !out.join("seed_0").exists());
}

#[test]
fn bad_config_exits_2_and_creates_nothing() {
    let d = Scratch::new("bad");
    let cfg = d.write("bad.toml", "algo = \"td3\"\nlearning_rat = 0.1\n");
    let out = d.join("run");
    let o = train(&[
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.code, Some(2));
    let err = &o.stderr;
    assert!(
        err.contains("bad.toml") && err.contains("learning_rat"),
        "{err}"
    );
    assert!(!out.exists());
    let good = config(&d, 600);
    let o = train(&[
        "--config",
        good.to_str().unwrap(),
        "--set",
        "gamma=high",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.code, Some(2));
    let err = &o.stderr;
    assert!(err.contains("gamma") && err.contains("f64"), "{err}");
    assert!(!out.exists());
}

#[test]
fn killed_run_resumes_to_the_same_metrics_as_an_uninterrupted_one() {
    let d = Scratch::new("kill");
    let cfg = config(&d, 2400);
    let (a, b) = (d.join("a"), d.join("b"));
    let o = train(&[
        "--config",
        cfg.to_str().unwrap(),
        "--seeds",
        "4",
        "--out",
        a.to_str().unwrap(),
    ]);
    assert!(o.success(), "{}", o.stderr);

    let mut child = fixar()
        .args([
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--seeds",
            "4",
            "--out",
            b.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_checkpoint(&b.join("seed_4"));
    child.kill().unwrap(); // SIGKILL: no chance to write anything more
    child.wait().unwrap();
    assert!(
        !b.join("summary.json").exists(),
        "the run finished before the kill; raise the budget"
    );

    let o = train(&["--resume", b.to_str().unwrap()]);
    assert!(o.success(), "{}", o.stderr);
    assert_same_csvs(&a.join("seed_4"), &b.join("seed_4"), "kill + resume");
    let ra: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("summary.json")).unwrap()).unwrap();
    let rb: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        ra["seeds"][0]["final_eval_return"],
        rb["seeds"][0]["final_eval_return"]
    );

    // SIGTERM (like Ctrl-C and Slurm's SIGUSR1): the run checkpoints at its next episode
    // boundary and exits 128 + 15 naming the resume command; the resume then equals the
    // uninterrupted run too.
    let c = d.join("c");
    let child = fixar()
        .args(["train", "--config", cfg.to_str().unwrap(), "--seeds", "4"])
        .args(["--out", c.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_checkpoint(&c.join("seed_4"));
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("fixar train --resume"), "{err}");
    assert!(
        !c.join("summary.json").exists(),
        "the run finished; raise the budget"
    );
    let steps = |dir: &Path| {
        std::fs::read_to_string(dir.join("seed_4").join("metrics.csv"))
            .unwrap()
            .lines()
            .count()
    };
    assert!(steps(&c) < steps(&a), "stopped at the end, not early");
    let o = train(&["--resume", c.to_str().unwrap()]);
    assert!(o.success(), "{}", o.stderr);
    assert_same_csvs(&a.join("seed_4"), &c.join("seed_4"), "SIGTERM + resume");
}

#[test]
fn a_closed_stdout_loses_nothing_of_the_run() {
    // `fixar train ... | head -0`: the summary lines at the end meet a closed pipe. The
    // command exits 141 without a panic message, and the run directory holds what an
    // ordinary run of the same config and seed writes, byte for byte.
    let d = Scratch::new("closed-stdout");
    let cfg = config(&d, 600);
    let run = |out: &Path, closed: bool| {
        let mut c = fixar();
        c.arg("train")
            .args(["--config", cfg.to_str().unwrap(), "--seeds", "0"])
            .args(["--out", out.to_str().unwrap()]);
        if closed {
            c.run_stdout_closed()
        } else {
            c.run()
        }
    };
    let (piped, plain) = (d.join("piped"), d.join("plain"));
    let o = run(&piped, true);
    let err = &o.stderr;
    assert_eq!(o.code, Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let o = run(&plain, false);
    assert!(o.success(), "{}", o.stderr);
    assert!(piped.join("summary.json").is_file());
    for f in ["metrics.csv", "quant.csv", "eval.csv", "episodes.csv"] {
        let read = |dir: &Path| std::fs::read(dir.join("seed_0").join(f)).unwrap();
        assert_eq!(read(&piped), read(&plain), "seed_0/{f}");
    }
}

#[test]
fn absurd_config_values_and_unknown_env_ids_exit_2_naming_the_key_and_create_nothing() {
    let dir = Scratch::new("absurd");
    let cfg = config(&dir, 400);
    for (set, key) in [
        ("hidden=[100000000000]", "`hidden`"),
        ("learning_rate=inf", "`learning_rate`"),
        ("gamma=nan", "`gamma`"),
        ("env_id=NoSuchEnv-v9", "`env_id`"),
    ] {
        let out = dir.join(format!("run-{}", set.len()));
        let r = train(&[
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            set,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(r.code, Some(2), "{set}: {}", r.stderr);
        assert!(r.stderr.contains(key), "{set}: {}", r.stderr);
        assert!(!out.exists(), "{set}: the run directory was created");
    }
}

#[test]
fn bad_schedule_keys_exit_2_naming_the_key_and_create_nothing() {
    let dir = Scratch::new("schedule");
    let cfg = config(&dir, 400);
    let on = ["schedule.quantizer=affine", "schedule.delay=300"];
    for (sets, key) in [
        (
            vec!["schedule.quantizer=affine", "schedule.delay=500"],
            "`schedule.delay` = 500 is beyond `total_timesteps` = 400",
        ),
        (
            vec![on[0], on[1], "schedule.bits=1"],
            "`schedule.bits` must be in 2..=32, got 1",
        ),
        (vec![on[0], on[1], "schedule.bits=33"], "`schedule.bits`"),
        (vec!["schedule.quantizer=log2", on[1]], "log2"),
        (
            vec![on[0], on[1], "schedule.classes=[\"weight\"]"],
            "`schedule.classes`: `weight`",
        ),
        (
            vec![on[0], on[1], "schedule.classes=[\"actvation\"]"],
            "actvation",
        ),
        (vec![on[0], on[1], "schedule.dealy=300"], "dealy"),
        (vec![on[0]], "`schedule.delay` is required"),
    ] {
        let out = dir.join("run");
        let mut args = vec!["--config", cfg.to_str().unwrap()];
        for s in &sets {
            args.extend(["--set", s]);
        }
        args.extend(["--out", out.to_str().unwrap()]);
        let r = train(&args);
        assert_eq!(r.code, Some(2), "{sets:?}: {}", r.stderr);
        assert!(r.stderr.contains(key), "{sets:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("schedule"),
            "{sets:?} does not name the key: {}",
            r.stderr
        );
        assert!(!out.exists(), "{sets:?}: the run directory was created");
    }
    // The keys reach the config: a valid schedule trains and switches at its delay.
    let out = dir.join("ok");
    let r = train(&[
        "--config",
        cfg.to_str().unwrap(),
        "--set",
        on[0],
        "--set",
        on[1],
        "--set",
        "precision=fxp32",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(r.success(), "{}", r.stderr);
    let seed = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("metrics.csv").exists())
        .expect("a seed directory");
    let metrics = std::fs::read_to_string(seed.join("metrics.csv")).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("300,") && l.ends_with(",affine16")),
        "{metrics}"
    );
    let resolved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        resolved.contains("[schedule]") && resolved.contains("quantizer = \"affine\""),
        "{resolved}"
    );
}

/// `--branch-from`: FIXAR's schedule started from an FXP32 run's checkpoint before the
/// delay writes the CSVs of the scheduled run trained from step 0; a config that differs
/// elsewhere is a usage error naming the key, and nothing is created.
#[test]
fn a_branched_run_equals_the_run_from_scratch_and_bad_branches_exit_2() {
    let d = Scratch::new("branch");
    let cfg = config(&d, 400);
    let common = ["precision=fxp32", "buffer_size=400"];
    let sched = [
        "total_timesteps=800",
        "schedule.quantizer=affine",
        "schedule.delay=600",
    ];
    let run = |sets: &[&str], extra: &[&str], out: &Path| {
        let mut args = vec!["--config", cfg.to_str().unwrap()];
        for s in sets {
            args.extend(["--set", s]);
        }
        args.extend(extra);
        args.extend(["--out", out.to_str().unwrap()]);
        train(&args)
    };
    let src = d.join("fxp32");
    let r = run(&common, &[], &src);
    assert!(r.success(), "{}", r.stderr);
    let both: Vec<&str> = common.iter().chain(&sched).copied().collect();
    let scratch = d.join("scratch");
    let r = run(&both, &[], &scratch);
    assert!(r.success(), "{}", r.stderr);
    let branched = d.join("branched");
    let r = run(&both, &["--branch-from", src.to_str().unwrap()], &branched);
    assert!(r.success(), "{}", r.stderr);
    for f in ["metrics.csv", "eval.csv", "episodes.csv", "quant.csv"] {
        let a = std::fs::read_to_string(scratch.join("seed_0").join(f)).unwrap();
        let b = std::fs::read_to_string(branched.join("seed_0").join(f)).unwrap();
        assert_eq!(a, b, "{f}");
    }
    let info = std::fs::read_to_string(branched.join("run.json")).unwrap();
    assert!(info.contains("branched_from"), "{info}");
    let bad = d.join("bad");
    let mut sets = both.clone();
    sets.push("learning_rate=0.5");
    let r = run(&sets, &["--branch-from", src.to_str().unwrap()], &bad);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("learning_rate"), "{}", r.stderr);
    assert!(!bad.exists(), "a refused branch created {}", bad.display());
    let r = train(&[
        "--resume",
        branched.to_str().unwrap(),
        "--branch-from",
        src.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
}

/// `fixar compare` over a scheduled run and its unscheduled source: the tables name the
/// schedule, the ratio of equal runs is 1, the figures exist; a bad `--run` exits 2.
#[test]
fn compare_tabulates_and_plots_runs_side_by_side() {
    let d = Scratch::new("compare");
    let cfg = config(&d, 800);
    let a = d.join("a");
    let b = d.join("b");
    for (out, sets) in [
        (&a, vec!["precision=fxp32"]),
        (
            &b,
            vec![
                "precision=fxp32",
                "schedule.quantizer=affine",
                "schedule.delay=600",
            ],
        ),
    ] {
        let mut args = vec![
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        for s in &sets {
            args.extend(["--set", s]);
        }
        let r = train(&args);
        assert!(r.success(), "{}", r.stderr);
    }
    let out = d.join("cmp");
    let r = fixar()
        .arg("compare")
        .arg("--run")
        .arg(format!("fxp32={}", a.display()))
        .arg("--run")
        .arg(format!("twice={}", a.display()))
        .arg("--run")
        .arg(format!("fixar={}", b.display()))
        .arg("--out")
        .arg(&out)
        .arg("--stem")
        .arg("fig")
        .run();
    assert!(r.success(), "{}", r.stderr);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fig.json")).unwrap()).unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs[1]["ratio_to_reference"]["of_means"], 1.0, "{json}");
    assert_eq!(
        runs[2]["schedule"], "affine16 from step 600 (activation)",
        "{json}"
    );
    assert_eq!(runs[2]["dip"]["delay"], 600, "{json}");
    assert!(runs[2]["activation_saturation_after"].is_number(), "{json}");
    for f in [
        "fig.png",
        "fig.svg",
        "fig_eval.png",
        "fig_eval.svg",
        "fig.md",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let r = fixar().args(["compare", "--run", "nolabel"]).run();
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("LABEL=RUN_DIR"), "{}", r.stderr);
    let r = fixar()
        .args(["compare", "--run"])
        .arg(format!("x={}", d.join("nothing").display()))
        .run();
    assert_eq!(r.code, Some(2), "{}", r.stderr);
}
