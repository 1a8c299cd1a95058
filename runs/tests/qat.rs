//! `fixar qat` end to end on a tiny parent run: PTQ at the parent's width reproduces the
//! parent, every output is written, a diverging rung is recorded as failed while the
//! ladder goes on, and bad input exits 2.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use agents::config::TrainConfig;
use agents::precision::{Preset, TensorClass};
use agents::qat::Strategy;
use clap::Parser;
use common::{copy_dir, fixar, tiny_config, Run, Scratch};
use runs::qat::{execute, QatArgs};

/// A tiny fxp32 TD3 parent (2 seeds, 2 episodes of Pendulum, 16-16 networks), trained
/// once per test binary. A static is never dropped: the directory outlives the tests.
fn parent() -> &'static Path {
    static DIR: OnceLock<Scratch> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Scratch::new("parent");
        let cfg = TrainConfig {
            checkpoint_every: 200,
            precision: Preset::Fxp32,
            ..tiny_config()
        };
        runs::train::train_seeds(&cfg, &[0, 1], &dir, 2, false).unwrap();
        dir
    })
}

/// A copy of the parent, so tests writing `qat/` do not share outputs.
fn parent_copy(name: &str) -> Scratch {
    let dst = Scratch::new(name);
    copy_dir(parent(), &dst);
    dst
}

fn args(from: &Path, extra: &[&str]) -> QatArgs {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        qat: QatArgs,
    }
    let mut v = vec![
        "qat".to_string(),
        "--from".into(),
        from.display().to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    Cli::parse_from(v).qat
}

#[test]
fn ptq_at_the_parent_width_reproduces_the_parent_eval_and_every_output_is_written() {
    let run = parent_copy("ptq");
    let plan = args(
        &run,
        &[
            "--strategy",
            "ptq",
            "--widths",
            "32,12,6",
            "--profile-steps",
            "60",
        ],
    )
    .plan()
    .unwrap();
    let report = execute(&plan).unwrap();
    let summary = runs::qat::read_summary(&run).unwrap();
    // The reference is the parent's own final eval, and PTQ at 32 bits equals it bit for bit.
    assert_eq!(
        report.outcome.reference.mean,
        summary.final_eval_return.mean
    );
    let r32 = &report.outcome.results[0];
    assert_eq!((r32.strategy, r32.rung.width), (Strategy::Ptq, 32));
    for (o, s) in r32.seeds.iter().zip(&summary.seeds) {
        assert_eq!(o.eval_mean, Some(s.final_eval_return), "seed {}", s.seed);
    }
    // Narrow rungs really are narrow: every forward class of every layer at 6 bits.
    let r6 = &report.outcome.results[2];
    for o in &r6.seeds {
        assert!(!o.formats.is_empty());
        for (layer, f) in &o.formats {
            for c in agents::qat::FORWARD_CLASSES {
                assert_eq!(f.get(c).unwrap().width, 6, "{layer} {c}");
            }
            // PTQ leaves the training-only classes alone.
            assert_eq!(f.get(TensorClass::Grad).unwrap().width, 32, "{layer}");
        }
    }
    let p = &report.paths;
    let csv = std::fs::read_to_string(p.csv()).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.starts_with(
        "strategy,width,mean_return,std_return,seeds,status,iqm_return,iqm_ci_low,iqm_ci_high,\
         prob_improvement,prob_improvement_ci_low,prob_improvement_ci_high\nptq,32,"
    ));
    // rliable's statistics on every finished rung: the IQM inside its interval, P in [0, 1].
    for row in csv.lines().skip(1) {
        let f: Vec<&str> = row.split(',').collect();
        let num = |i: usize| f[i].parse::<f64>().unwrap_or_else(|_| panic!("{row}"));
        assert!(num(7) <= num(6) && num(6) <= num(8), "{row}");
        assert!((0.0..=1.0).contains(&num(9)), "{row}");
        assert!(num(10) <= num(9) && num(9) <= num(11), "{row}");
    }
    let formats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.formats()).unwrap()).unwrap();
    for w in ["w32", "w12", "w6"] {
        let layer = &formats["ptq"][w]["seed_1"]["critic2_target.fc3"];
        for c in TensorClass::ALL {
            assert!(layer[c.name()].is_string(), "{w} {c}: {layer}");
        }
    }
    assert!(std::fs::read_to_string(p.md())
        .unwrap()
        .contains("| width |"));
    assert!(p.plot_stem().with_extension("png").is_file());
    assert!(p.plot_stem().with_extension("svg").is_file());
    // PTQ at 32 bits is within any tolerance of itself, so a rung is chosen.
    let chosen = agents::qat::Chosen::load(&run).unwrap();
    assert!(chosen.checkpoint.is_relative());
    assert!(run.join(&chosen.checkpoint).is_file());
    assert!(chosen.actor_formats.contains_key("actor.fc1"));
    assert!(!chosen.actor_formats.contains_key("critic1.fc1"));
}

#[test]
fn a_diverging_rung_is_recorded_as_failed_and_the_ladder_goes_on() {
    let run = parent_copy("nan");
    // A learning rate of 1e300 divides Adam's step by a zero in f32: the master weights
    // become non-finite at the first update, and the trainer's checks catch it.
    let plan = args(
        &run,
        &[
            "--strategy",
            "range,ptq",
            "--widths",
            "16,8",
            "--steps",
            "40",
            "--profile-steps",
            "40",
            "--learning-rate",
            "1e300",
        ],
    )
    .plan()
    .unwrap();
    let report = execute(&plan).unwrap();
    let range: Vec<_> = report
        .outcome
        .results
        .iter()
        .filter(|r| r.strategy == Strategy::Range)
        .collect();
    assert_eq!(range.len(), 2, "both rungs are in the table");
    for r in &range {
        let status = r.status();
        assert!(status.starts_with("failed: seed 0:"), "{status}");
        assert!(status.contains("non-finite"), "{status}");
    }
    // PTQ does not retrain, so it is unaffected.
    assert!(report
        .outcome
        .results
        .iter()
        .filter(|r| r.strategy == Strategy::Ptq)
        .all(|r| r.failure().is_none()));
    let csv = std::fs::read_to_string(report.paths.csv()).unwrap();
    assert!(csv.contains("range,8,,,0,failed: seed 0:"), "{csv}");
}

#[test]
fn a_range_chain_retrains_each_rung_from_the_previous_one() {
    let run = parent_copy("chain");
    // 70 steps: the rungs end mid-episode (Pendulum's are 200 steps long).
    let plan = args(
        &run,
        &[
            "--strategy",
            "range",
            "--widths",
            "24,12",
            "--steps",
            "70",
            "--profile-steps",
            "40",
        ],
    )
    .plan()
    .unwrap();
    let report = execute(&plan).unwrap();
    for r in &report.outcome.results {
        assert_eq!(r.status(), "ok", "w{}", r.rung.width);
    }
    // Each rung continued from the one before: the w12 checkpoints are 2 x 70 steps on.
    let steps = |w: u32| -> u64 {
        let t = agents::trainer::Trainer::resume(
            &report.paths.rung_dir(Strategy::Range, w).join("seed_0"),
        )
        .unwrap();
        t.step()
    };
    assert_eq!(steps(24) + 70, steps(12));
    // The rung's checkpoint is the deployable network: weights on their formats' grids.
    let dir = report.paths.rung_dir(Strategy::Range, 12).join("seed_0");
    let t = agents::trainer::Trainer::resume(&dir).unwrap();
    for l in t.agent().actor().layers() {
        let f = l.formats().get(TensorClass::Weight).unwrap();
        let (q, _) = quant::tensor::fake_quant(l.weight(), &f, None);
        assert!(
            q.equal(l.weight()),
            "{} weights off the grid of {f}",
            l.name()
        );
    }
}

#[test]
fn multiplier_free_actor_weights_have_at_most_k_powers_of_two() {
    let run = parent_copy("pow2");
    let plan = args(
        &run,
        &[
            "--strategy",
            "ptq",
            "--widths",
            "10",
            "--profile-steps",
            "40",
            "--pow2-terms",
            "2",
        ],
    )
    .plan()
    .unwrap();
    let report = execute(&plan).unwrap();
    let r = &report.outcome.results[0];
    for o in &r.seeds {
        let m = o.multipliers.expect("counted");
        assert_eq!(m.multiplications, 0);
        // 16-16 actor on Pendulum: 3x16 + 16x16 + 16x1 weights.
        assert_eq!(m.products, 3 * 16 + 16 * 16 + 16);
        assert!(m.shifts <= 2 * (m.products - m.zero_weights));
        // The checkpoint holds the projected weights: every raw code has <= 2 signed digits.
        let dir = o
            .checkpoint
            .as_ref()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let t = agents::trainer::Trainer::resume(&dir).unwrap();
        for l in t.agent().actor().layers() {
            let f = l.formats().get(TensorClass::Weight).unwrap();
            let w =
                Vec::<f64>::try_from(l.weight().to_kind(tch::Kind::Double).flatten(0, -1)).unwrap();
            for x in w {
                let raw = quant::from_f64(x, &f).unwrap();
                assert!(
                    agents::pow2::signed_digit_count(raw) <= 2,
                    "{} {x}",
                    l.name()
                );
            }
        }
    }
    // The multiplier-free export of that checkpoint: no weight multiplication, a clean
    // -Wall -Wextra -Werror build, and its bench passes on the golden path's vectors.
    let seed_dir = r.seeds[0].checkpoint.as_ref().unwrap().parent().unwrap();
    let out = run.join("export-c");
    let o = fixar()
        .args([
            "-q",
            "export",
            "--target",
            "c",
            "--pow2-terms",
            "2",
            "--run",
        ])
        .arg(seed_dir)
        .arg("--out")
        .arg(&out)
        .run_ok();
    assert!(
        o.stdout.contains("per inference: 0 multiplications"),
        "{}",
        o.stdout
    );
    std::process::Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"])
        .args(["-o", "tb", "tb.c", "fixar_actor.c"])
        .current_dir(&out)
        .run_ok();
    let tb = std::process::Command::new(out.join("tb"))
        .arg("vectors.txt")
        .current_dir(&out)
        .run_ok();
    assert_eq!(tb.stdout.trim(), "256 passed, 0 failed");
    let src = std::fs::read_to_string(out.join("fixar_actor.c")).unwrap();
    assert!(!src.contains("_W[") && src.contains("multiplier-free"));
    // Refused, naming the flag (exit 2): the parent's weights are not multiplier-free,
    // K is out of range, or more than the rung's 10-bit weights have.
    let parent = run.join("seed_0");
    let rung = seed_dir.to_path_buf();
    for (dir, target, k, says) in [
        (&parent, "c", "2", "signed powers of two, more than 2"),
        (&parent, "c", "0", "between 1 and 32"),
        (&parent, "hls", "-1", "between 1 and 32"),
        (&rung, "c", "12", "the actor's weight width (10), got 12"),
        (&rung, "hls4ml", "2", "applies to --target c and hls"),
    ] {
        let o = fixar()
            .args(["export", "--target", target, "--pow2-terms", k, "--run"])
            .arg(dir)
            .arg("--out")
            .arg(run.join("export-bad"))
            .run();
        assert_eq!(o.code, Some(2), "{}", o.stderr);
        assert!(
            o.stderr.contains("--pow2-terms") && o.stderr.contains(says),
            "{}",
            o.stderr
        );
    }
}

#[test]
fn bad_input_exits_2_with_a_message_naming_it() {
    let empty = Scratch::new("empty");
    let e = empty.to_str().unwrap();
    // Exit code and stderr of `fixar args`.
    let fixar = |args: &[&str]| {
        let o = fixar().args(args).run();
        (o.code.unwrap_or(-1), o.stderr)
    };
    let (code, err) = fixar(&["qat", "--from", e]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("summary.json is missing"), "{err}");
    let (code, err) = fixar(&["qat", "--from", "/nonexistent/run"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no such directory"), "{err}");
    for (widths, says) in [
        ("16,32", "strictly decreasing"),
        ("32,64", "width 64 cannot"),
        ("", "empty"),
        ("32,x", "`x`"),
    ] {
        let (code, err) = fixar(&["qat", "--from", e, "--widths", widths]);
        assert_eq!(code, 2, "--widths {widths}: {err}");
        assert!(err.contains(says), "--widths {widths}: {err}");
    }
    let (code, err) = fixar(&["qat", "--from", e, "--strategy", "magic"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown strategy `magic`"), "{err}");
    for (flag, value, says) in [
        ("--pow2-terms", "0", "--pow2-terms must be between 1 and"),
        ("--pow2-terms", "-2", "got -2"),
        ("--pow2-terms", "7", "weight width of the ladder (6), got 7"),
        ("--pow2-terms", "two", "--pow2-terms"),
        ("--learn-lr", "0", "--learn-lr must be in (0, 1]"),
        ("--learn-lr", "-0.1", "--learn-lr"),
        ("--learn-lr", "NaN", "--learn-lr"),
        ("--learn-lr", "2", "got 2"),
        ("--train-mode", "fixed", "--train-mode qat"),
    ] {
        let (code, err) = fixar(&[
            "qat",
            "--from",
            e,
            "--widths",
            "8,6",
            "--strategy",
            "learned",
            flag,
            value,
        ]);
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}

#[test]
fn learned_points_differ_from_range_at_every_rung_and_are_never_reset() {
    let run = parent_copy("learned");
    let plan = args(
        &run,
        &[
            "--strategy",
            "learned,range",
            "--widths",
            "8,6",
            "--steps",
            "400",
            "--profile-steps",
            "60",
            "--learn-lr",
            "0.05",
        ],
    )
    .plan()
    .unwrap();
    let report = execute(&plan).unwrap();
    let qat = run.join("qat");
    // formats.json: at every rung and seed some layer's learned format is not range's.
    let formats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(qat.join("formats.json")).unwrap()).unwrap();
    for w in ["w8", "w6"] {
        for seed in ["seed_0", "seed_1"] {
            let (l, r) = (&formats["learned"][w][seed], &formats["range"][w][seed]);
            assert!(l.is_object() && r.is_object(), "{w} {seed} missing");
            assert_ne!(l, r, "{w} {seed}: learned formats are range's");
        }
    }
    let md = std::fs::read_to_string(qat.join("qat.md")).unwrap();
    assert!(md.contains("## Learned binary points vs range"), "{md}");
    for f in [
        "learned_points",
        "learned_points_critic1",
        "learned_points_critic2",
    ] {
        for ext in ["png", "svg"] {
            let p = qat.join(format!("{f}.{ext}"));
            assert!(
                p.metadata().map(|m| m.len() > 1000).unwrap_or(false),
                "{p:?}"
            );
        }
    }
    // Not reset between rungs: the w6 rung's points continue w8's Adam state (a reset
    // restarts its step count), and each rung's checkpoint holds its points.
    let adam_steps = |w: u32| {
        let r = report
            .outcome
            .results
            .iter()
            .find(|r| r.strategy == Strategy::Learned && r.rung.width == w)
            .unwrap();
        let dir = r.seeds[0].checkpoint.as_ref().unwrap().parent().unwrap();
        let t = agents::trainer::Trainer::resume(dir).unwrap();
        let actor = t.agent().actor();
        let lp = actor
            .learned_points()
            .expect("the checkpoint holds learned points");
        for p in &lp.points {
            let f = actor.layers()[p.layer].formats().get(p.class).unwrap();
            assert_eq!(f.int_bits, p.int_bits(), "w{w}: format is not round(s)");
            assert_eq!(f.width, w);
        }
        lp.t
    };
    let (t8, t6) = (adam_steps(8), adam_steps(6));
    assert!(t8 > 0 && t6 == 2 * t8, "Adam steps: w8 {t8}, w6 {t6}");
}
