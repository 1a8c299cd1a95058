//! FIXAR's in-training QAT schedule on tiny Pendulum runs: the switch happens at exactly
//! the delay (quantizers from the ranges observed until then, rows at that step), the
//! affine quantizer casts the activations afterwards, and a run killed on either side of
//! the delay resumes to the same files as an uninterrupted one.

mod common;

use std::fs;
use std::path::Path;

use agents::config::{Algo, TrainConfig};
use agents::schedule::{ScheduleConfig, ScheduleQuantizer};
use agents::trainer::Trainer;
use agents::{Preset, TensorClass};
use common::{assert_same_files, scratch};
use quant::AffineQuantizer;

const DELAY: u64 = 700;

/// The shared tiny Pendulum run at FXP32 with a switch at 700 (off the log cadence of
/// 200, so the switch row is the forced one) and checkpoints every 200 steps at episode
/// ends (Pendulum's episodes are 200 steps).
fn tiny(algo: Algo, quantizer: ScheduleQuantizer) -> TrainConfig {
    TrainConfig {
        checkpoint_every: 200,
        schedule: ScheduleConfig {
            quantizer,
            delay: Some(DELAY),
            ..Default::default()
        },
        ..common::tiny(algo, Preset::Fxp32)
    }
}

fn read(dir: &Path, name: &str) -> String {
    String::from_utf8(fs::read(dir.join(name)).unwrap()).unwrap()
}

/// Every layer's affine quantizer at `class`, by layer name.
fn affine_of(t: &Trainer, class: TensorClass) -> Vec<(String, Option<AffineQuantizer>)> {
    t.agent()
        .networks()
        .iter()
        .flat_map(|n| n.layers())
        .map(|l| (l.name().to_string(), l.affine(class).copied()))
        .collect()
}

#[test]
fn affine_schedule_switches_at_exactly_the_delay_from_the_observed_ranges() {
    tch::set_num_threads(1);
    let dir = scratch("switch");
    let mut t = Trainer::new(tiny(Algo::Ddpg, ScheduleQuantizer::Affine), 1, &dir).unwrap();
    assert!(t.run(Some(DELAY - 1), &mut |_| {}).unwrap().is_none());
    assert!(affine_of(&t, TensorClass::Activation)
        .iter()
        .all(|(_, q)| q.is_none()));
    let before = t.formats();
    // Each layer's range when the switch happens (nothing is observed between the last
    // update of step DELAY and the switch right after it).
    t.run(Some(DELAY), &mut |_| {}).unwrap();
    let switched = affine_of(&t, TensorClass::Activation);
    assert_eq!(
        switched.len(),
        12,
        "actor, critic and their targets, 3 layers each"
    );
    for net in t.agent().networks() {
        for l in net.layers() {
            let q = l.affine(TensorClass::Activation).expect("switched");
            // A target's own forwards are observed; none fell back to its twin here.
            let (lo, hi) = l.ranges()[TensorClass::Activation.index()]
                .min_max
                .range()
                .expect("observed before the delay");
            assert_eq!(
                *q,
                AffineQuantizer::from_range(16, lo, hi).unwrap(),
                "{}",
                l.name()
            );
            assert_eq!(q.bits(), 16);
            if net.name().starts_with("critic") && l.name().ends_with("fc1") {
                assert!(lo >= 0.0, "ReLU outputs: {lo}");
            }
            // Everything else keeps FXP32, activation format included (the affine
            // values land on it).
            assert_eq!(l.formats(), &before[l.name()], "{}", l.name());
        }
    }
    // Training goes on with the quantizers, counted as activation casts.
    t.run(None, &mut |_| {}).unwrap().unwrap();
    let metrics = read(&dir, "metrics.csv");
    let header = metrics.lines().next().unwrap();
    assert!(header.ends_with(",schedule"), "{header}");
    let rows: Vec<(&str, &str)> = metrics
        .lines()
        .skip(1)
        .map(|l| (l.split(',').next().unwrap(), l.rsplit(',').next().unwrap()))
        .collect();
    let steps: Vec<&str> = rows.iter().map(|r| r.0).collect();
    assert_eq!(steps, ["200", "400", "600", "700", "800", "1000", "1200"]);
    for (step, col) in rows {
        assert_eq!(col, if step == "700" { "affine16" } else { "" }, "{step}");
    }
    let quant = read(&dir, "quant.csv");
    let act_rows = |step: &str| -> Vec<&str> {
        quant
            .lines()
            .filter(|l| l.starts_with(&format!("{step},")) && l.contains(",activation,"))
            .collect()
    };
    assert_eq!(act_rows("700").len(), 12);
    for l in act_rows("600") {
        assert!(l.contains("\"ap_fixed<32,16,AP_RND_CONV,AP_SAT>\""), "{l}");
    }
    for step in ["700", "800", "1200"] {
        for l in act_rows(step) {
            assert!(l.contains(",\"affine<16,delta="), "{l}");
        }
    }
    // Saturations of the affine codes are counted after the switch: the ranges keep
    // growing past the frozen ones, and the formula saturates its own extremes.
    let saturated: u64 = ["800", "1000", "1200"]
        .iter()
        .flat_map(|s| act_rows(s))
        .map(|l| l.rsplit('"').next().unwrap().split(',').nth(2).unwrap())
        .map(|v| v.parse::<u64>().unwrap())
        .sum();
    assert!(saturated > 0, "{quant}");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn runs_killed_before_or_after_the_delay_resume_to_the_uninterrupted_files() {
    tch::set_num_threads(1);
    for (algo, quantizer) in [
        (Algo::Ddpg, ScheduleQuantizer::Affine),
        (Algo::Td3, ScheduleQuantizer::ApFixed),
    ] {
        let cfg = tiny(algo, quantizer);
        let full = scratch(&format!("full-{quantizer}"));
        let ra = Trainer::new(cfg.clone(), 4, &full)
            .unwrap()
            .run(None, &mut |_| {})
            .unwrap()
            .unwrap();
        // Killed at 650 (last checkpoint 600, before the delay) and at 1000 (last
        // checkpoint 800, after it: the switched state comes from the checkpoint).
        for (kill, ck) in [(650, 600), (1_000, 800)] {
            let b = scratch(&format!("killed-{quantizer}-{kill}"));
            let stopped = Trainer::new(cfg.clone(), 4, &b)
                .unwrap()
                .run(Some(kill), &mut |_| {})
                .unwrap();
            assert!(stopped.is_none());
            let mut t = Trainer::resume(&b).unwrap();
            assert_eq!(t.step(), ck);
            let rb = t.run(None, &mut |_| {}).unwrap().unwrap();
            let what = format!("{algo:?} {quantizer} killed at {kill}");
            assert_same_files(&full, &b, &what);
            assert_eq!(ra.eval_curve, rb.eval_curve, "{what}");
            fs::remove_dir_all(b).unwrap();
        }
        let quant = read(&full, "quant.csv");
        let want = match quantizer {
            ScheduleQuantizer::Affine => ",activation,\"affine<16,",
            _ => ",activation,\"ap_fixed<16,",
        };
        assert!(
            quant
                .lines()
                .any(|l| l.starts_with("700,") && l.contains(want)),
            "{quant}"
        );
        fs::remove_dir_all(full).unwrap();
    }
}

/// `Trainer::branch`: a scheduled run started from the checkpoint of a run without the
/// schedule (finished, or killed, before the delay), or with another quantizer, writes
/// the files the scheduled run writes from step 0; a checkpoint past the delay or a
/// config that differs elsewhere is refused before anything is written.
#[test]
fn branch_equals_a_run_from_scratch() {
    tch::set_num_threads(1);
    // One replay capacity for every total below (min(buffer_size, total_timesteps)).
    let with = |quantizer, total| TrainConfig {
        buffer_size: 400,
        total_timesteps: total,
        ..tiny(Algo::Ddpg, quantizer)
    };
    let target = with(ScheduleQuantizer::Affine, 1_200);
    let full = scratch("branch-full");
    let ra = Trainer::new(target.clone(), 3, &full)
        .unwrap()
        .run(None, &mut |_| {})
        .unwrap()
        .unwrap();
    // Sources: FXP32 without a schedule finished at 400 (a multiple of the eval and log
    // periods), the same killed at 650 (checkpoint 600), and the ap_fixed schedule
    // killed at 650.
    let sources = [
        (
            "plain-finished",
            with(ScheduleQuantizer::None, 400),
            None,
            400,
        ),
        (
            "plain-killed",
            with(ScheduleQuantizer::None, 1_200),
            Some(650),
            600,
        ),
        (
            "apfixed-killed",
            with(ScheduleQuantizer::ApFixed, 1_200),
            Some(650),
            600,
        ),
    ];
    for (name, cfg, kill, at) in sources {
        let src = scratch(&format!("branch-src-{name}"));
        Trainer::new(cfg, 3, &src)
            .unwrap()
            .run(kill, &mut |_| {})
            .unwrap();
        let before = common::files(&src);
        let dst = scratch(&format!("branch-dst-{name}"));
        let mut t = Trainer::branch(&src, target.clone(), &dst).unwrap();
        assert_eq!(t.step(), at, "{name}");
        let rb = t.run(None, &mut |_| {}).unwrap().unwrap();
        assert_same_files(&full, &dst, &format!("branch from {name}"));
        assert_eq!(ra.eval_curve, rb.eval_curve, "{name}");
        assert_eq!(ra.final_eval_return, rb.final_eval_return, "{name}");
        assert_eq!(
            before,
            common::files(&src),
            "{name}: the source was changed"
        );
        fs::remove_dir_all(dst).unwrap();
        fs::remove_dir_all(src).unwrap();
    }
    // Refusals, each before the destination exists.
    let src = scratch("branch-src-late");
    Trainer::new(with(ScheduleQuantizer::None, 1_200), 3, &src)
        .unwrap()
        .run(Some(1_000), &mut |_| {})
        .unwrap();
    let refused = |src: &Path, cfg: TrainConfig, want: &str| {
        let dst = scratch("branch-dst-refused");
        let e = Trainer::branch(src, cfg, &dst)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains(want), "{e}");
        assert!(!dst.exists(), "{e}: the destination was created");
    };
    refused(&src, target.clone(), "switches at step 700");
    let mut later = target.clone();
    later.schedule.delay = Some(1_100);
    later.learning_rate *= 2.0;
    refused(&src, later, "learning_rate");
    fs::remove_dir_all(src).unwrap();
    // A source whose replay buffer was cut to its shorter run (capacity 400) and never
    // overwrote: the branch takes the target's capacity (1,000) and equals the target
    // run from scratch.
    let roomy = TrainConfig {
        buffer_size: 1_000,
        ..target.clone()
    };
    let full_roomy = scratch("branch-full-roomy");
    let rr = Trainer::new(roomy.clone(), 3, &full_roomy)
        .unwrap()
        .run(None, &mut |_| {})
        .unwrap()
        .unwrap();
    let src = scratch("branch-src-short");
    let short = TrainConfig {
        buffer_size: 1_000,
        ..with(ScheduleQuantizer::None, 400)
    };
    Trainer::new(short, 3, &src)
        .unwrap()
        .run(None, &mut |_| {})
        .unwrap();
    let dst = scratch("branch-dst-short");
    let mut t = Trainer::branch(&src, roomy, &dst).unwrap();
    assert_eq!(t.step(), 400);
    let rb = t.run(None, &mut |_| {}).unwrap().unwrap();
    assert_same_files(&full_roomy, &dst, "branch from a shorter run");
    assert_eq!(rr.eval_curve, rb.eval_curve);
    assert_eq!(rr.final_eval_return, rb.final_eval_return);
    // The capacity shows in the result: the same run with 400 transitions differs, so
    // a branch that kept the source's capacity would fail the comparison above.
    assert_ne!(ra.eval_curve, rr.eval_curve);
    for d in [dst, src, full_roomy] {
        fs::remove_dir_all(d).unwrap();
    }
    fs::remove_dir_all(full).unwrap();
}
