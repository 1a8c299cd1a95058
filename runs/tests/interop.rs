//! The formats other tools read, read back by those tools: TensorBoard event files
//! checked scalar by scalar against the CSVs with Python's `tensorboard` (after a
//! resume, too); `weights.safetensors` loaded with Python's `safetensors`, the actor's
//! integer forward redone in numpy from its codes and compared with the export's test
//! vectors; the hls4ml export checked against hls4ml's config schema and converted by
//! hls4ml, its C++ simulation compared layer by layer with fixar's codes; shell
//! completions.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use agents::config::{Algo, TrainConfig};
use agents::trainer::Trainer;
use common::{fixar, tiny_config, train_tiny_fxp16, workspace, Ran, Run, Scratch};

/// The project's venv Python (scripts/setup, scripts/setup-readers); its absence fails.
fn python() -> PathBuf {
    let p = workspace().join(".venv/bin/python");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup-readers (scripts/test does)",
        p.display()
    );
    p
}

/// Runs `runs/tests/py/<script>` with `args` in the venv's Python.
fn py(script: &str, args: &[&Path]) -> Ran {
    let mut c = Command::new(python());
    c.arg(workspace().join("runs/tests/py").join(script));
    c.args(args);
    c.run()
}

/// `fixar train --seeds 0 --config CFG --out OUT`; returns OUT.
fn train_seed_0(cfg: &Path, out: &Path) -> PathBuf {
    fixar()
        .args(["-q", "train", "--seeds", "0", "--config"])
        .arg(cfg)
        .arg("--out")
        .arg(out)
        .run_ok();
    out.to_path_buf()
}

/// More log rows and episodes than tiny_config: 1000 steps, a row every 100, an
/// evaluation every 400, a checkpoint every episode.
fn logged_config(algo: Algo) -> TrainConfig {
    TrainConfig {
        algo,
        total_timesteps: 1000,
        eval_every: 400,
        log_every: 100,
        checkpoint_every: 200,
        eval_episodes: 1,
        precision: agents::precision::Preset::Fxp16,
        ..tiny_config()
    }
}

#[test]
fn event_files_hold_every_csv_scalar_once_even_after_a_resume() {
    let d = Scratch::new("events");
    // TD3 through the library: stopped after step 700 (its last checkpoint at 600, so
    // rows 600..700 were written past it, as a kill leaves them), resumed, finished.
    let td3 = d.join("td3");
    let mut t = Trainer::new(logged_config(Algo::Td3), 0, &td3).unwrap();
    assert!(t.run(Some(700), &mut |_| {}).unwrap().is_none());
    drop(t);
    let events = td3.join(agents::layout::EVENTS);
    let before = std::fs::metadata(&events).unwrap().len();
    let mut t = Trainer::resume(&td3).unwrap();
    assert!(
        std::fs::metadata(&events).unwrap().len() < before,
        "the resume did not cut the event file back to the checkpoint"
    );
    t.run(None, &mut |_| {}).unwrap().unwrap();
    drop(t);
    // DDPG through the CLI.
    let cfg = d.write_config("ddpg.toml", &logged_config(Algo::Ddpg));
    let run = train_seed_0(&cfg, &d.join("ddpg"));
    let ddpg = run.join("seed_0");

    let ran = py("check_events.py", &[&td3, &ddpg]);
    assert!(ran.success(), "{}{}", ran.stdout, ran.stderr);
    eprint!("{}", ran.stdout);
    for (dir, at_least) in [(&td3, 1000), (&ddpg, 1000)] {
        let line = format!("scalars checked in {}", dir.display());
        let n: usize = ran
            .stdout
            .lines()
            .find_map(|l| l.strip_suffix(&line))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no count for {}: {}", dir.display(), ran.stdout));
        assert!(n >= at_least, "{n} scalars in {}", dir.display());
    }

    // The check fails when a value differs: an eval.csv mean one ulp off in f32 terms.
    let eval = ddpg.join("eval.csv");
    let text = std::fs::read_to_string(&eval).unwrap();
    let row: Vec<&str> = text.lines().nth(1).unwrap().split(',').collect();
    let mean: f64 = row[1].parse().unwrap();
    let off = f64::from(f32::from_bits((mean as f32).to_bits() + 1));
    std::fs::write(&eval, text.replacen(row[1], &off.to_string(), 1)).unwrap();
    let ran = py("check_events.py", &[&ddpg]);
    assert_eq!(ran.code, Some(1), "{}{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("eval/return"), "{}", ran.stdout);
}

/// `fixar export --target c --vectors 256` of `run`: the path of its vectors.txt.
fn export_vectors(run: &Path, out: &Path) -> PathBuf {
    fixar()
        .args(["-q", "export", "--target", "c", "--vectors", "256", "--run"])
        .arg(run)
        .arg("--out")
        .arg(out)
        .run_ok();
    out.join("vectors.txt")
}

#[test]
fn safetensors_codes_reproduce_the_integer_actor_in_numpy() {
    let d = Scratch::new("safetensors");
    let fxp16 = train_tiny_fxp16(&d);
    let cfg = d.write_config(
        "fxp32.toml",
        &TrainConfig {
            eval_episodes: 1,
            precision: agents::precision::Preset::Fxp32,
            ..tiny_config()
        },
    );
    let fxp32 = train_seed_0(&cfg, &d.join("fxp32"));
    for (run, name) in [(&fxp16, "fxp16"), (&fxp32, "fxp32")] {
        let seed = run.join("seed_0");
        assert!(
            seed.join(agents::layout::WEIGHTS).is_file(),
            "{name}: no weights"
        );
        let vectors = export_vectors(run, &d.join(format!("export-{name}")));
        let ran = py("check_safetensors.py", &[&seed, &vectors]);
        assert!(ran.success(), "{name}: {}{}", ran.stdout, ran.stderr);
        assert!(
            ran.stdout.contains("256 passed, 0 failed"),
            "{name}: {}",
            ran.stdout
        );
        eprintln!("{name}: {}", ran.stdout.trim());
    }
    // The check fails when one expected output code is off by one.
    let vectors = d.join("export-fxp16/vectors.txt");
    let text = std::fs::read_to_string(&vectors).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut row: Vec<i64> = lines[1].split(' ').map(|t| t.parse().unwrap()).collect();
    *row.last_mut().unwrap() += 1;
    lines[1] = row.iter().map(i64::to_string).collect::<Vec<_>>().join(" ");
    std::fs::write(&vectors, lines.join("\n") + "\n").unwrap();
    let ran = py("check_safetensors.py", &[&fxp16.join("seed_0"), &vectors]);
    assert_eq!(ran.code, Some(1), "{}{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.contains("255 passed, 1 failed"),
        "{}",
        ran.stdout
    );
}

/// Runs `build_hls4ml.py --check` of an hls4ml export in the venv's Python.
fn hls4ml_check(export: &Path) -> Ran {
    Command::new(python())
        .args(["build_hls4ml.py", "--check"])
        .current_dir(export)
        .run()
}

#[test]
fn hls4ml_export_follows_hls4mls_schema_and_its_csim_matches_every_layer() {
    let d = Scratch::new("hls4ml");
    let run = train_tiny_fxp16(&d);
    let out = d.join("hls4ml");
    fixar()
        .args(["-q", "export", "--target", "hls4ml", "--run"])
        .arg(&run)
        .arg("--out")
        .arg(&out)
        .run_ok();
    // The schema hls4ml documents, every precision parsed by hls4ml, and the formats
    // the training run's own weights.safetensors records.
    let trained = run.join("seed_0").join(agents::layout::WEIGHTS);
    let ran = py("check_hls4ml_config.py", &[&out, &trained]);
    assert!(ran.success(), "{}{}", ran.stdout, ran.stderr);
    assert_eq!(ran.stdout.trim(), "ok: 7 layers");
    // hls4ml converts the config and weights, compiles its C++ simulation, and every
    // layer but the final tanh (fc1, fc1_relu, fc2, fc2_relu, fc3) equals fixar's codes
    // on the 256 test vectors.
    let ran = hls4ml_check(&out);
    assert!(ran.success(), "{}{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.contains("1280 passed, 0 failed"),
        "{}",
        ran.stdout
    );
    eprintln!("{}", ran.stdout.lines().last().unwrap_or_default());

    // One weight precision off by an integer bit: both checks fail.
    let config = out.join("hls4ml_config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let w = &mut json["HLSConfig"]["LayerName"]["fc1"]["Precision"]["weight"];
    let f: quant::FxFormat = w.as_str().unwrap().parse().unwrap();
    let wider = quant::FxFormat {
        int_bits: f.int_bits + 1,
        ..f
    };
    *w = wider.to_string().into();
    std::fs::write(&config, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    let ran = py("check_hls4ml_config.py", &[&out, &trained]);
    assert_eq!(ran.code, Some(1), "{}{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.starts_with("fc1.weight:"), "{}", ran.stdout);
    let ran = hls4ml_check(&out);
    assert_eq!(ran.code, Some(1), "{}{}", ran.stdout, ran.stderr);
    assert!(!ran.stdout.contains(" 0 failed"), "{}", ran.stdout);
}

#[test]
fn completions_name_every_subcommand_and_bash_parses_them() {
    let d = Scratch::new("completions");
    for shell in ["bash", "zsh", "fish"] {
        let ran = fixar().args(["completions", shell]).run_ok();
        for sub in [
            "train",
            "qat",
            "export",
            "accel",
            "pipeline",
            "sweep",
            "collect",
            "compare",
            "bench",
            "env",
            "fx",
            "info",
            "completions",
        ] {
            assert!(
                ran.stdout.contains(sub),
                "{shell} completions do not name `{sub}`"
            );
        }
        // Flags of a subcommand too, e.g. `fixar export --target` (fish: `-l target`).
        let flag = if shell == "fish" {
            "-l target"
        } else {
            "--target"
        };
        assert!(ran.stdout.contains(flag), "{shell}: no {flag}");
        if shell == "bash" {
            let script = d.write("fixar.bash", &ran.stdout);
            Command::new("bash").arg("-n").arg(&script).run_ok();
        }
    }
    let ran = fixar().args(["completions", "tcsh"]).run();
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("tcsh"), "{}", ran.stderr);
}
