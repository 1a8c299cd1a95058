//! Whole-loop properties on tiny budgets: determinism, kill + resume, NaN reporting.

mod common;

use std::fs;

use agents::config::{Algo, NoiseKind};
use agents::trainer::{TrainError, Trainer};
use agents::Preset;
use common::{assert_same_files, scratch, tiny};

fn once() {
    tch::set_num_threads(1);
}

#[test]
fn same_config_and_seed_give_byte_identical_metrics() {
    once();
    let cfg = tiny(Algo::Td3, Preset::Fxp16);
    let (a, b) = (scratch("det-a"), scratch("det-b"));
    let ra = Trainer::new(cfg.clone(), 3, &a)
        .unwrap()
        .run(None, &mut |_| {})
        .unwrap()
        .unwrap();
    let rb = Trainer::new(cfg, 3, &b)
        .unwrap()
        .run(None, &mut |_| {})
        .unwrap()
        .unwrap();
    assert_same_files(&a, &b, "same seed twice");
    assert_eq!(
        ra.final_eval_return.to_bits(),
        rb.final_eval_return.to_bits()
    );
    assert_eq!(ra.updates, 1_000);
    let metrics = String::from_utf8(fs::read(a.join("metrics.csv")).unwrap()).unwrap();
    assert_eq!(metrics.lines().count(), 1 + 6, "{metrics}");
    let quant = String::from_utf8(fs::read(a.join("quant.csv")).unwrap()).unwrap();
    assert!(
        quant.contains("critic1.fc2,activation,\"ap_fixed<16,8"),
        "{quant}"
    );
    // The actor trains on every second update; its ranges are observed all the same.
    let actor_max: f64 = quant
        .lines()
        .filter(|l| l.contains(",actor,") && l.contains(",activation,"))
        .map(|l| {
            let after_format = l.rsplit('"').next().unwrap();
            after_format
                .split(',')
                .nth(6)
                .unwrap()
                .parse::<f64>()
                .unwrap()
        })
        .fold(0.0, f64::max);
    assert!(
        actor_max > 0.0,
        "actor activation ranges never observed:\n{quant}"
    );
    for d in [a, b] {
        fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn resumed_run_equals_uninterrupted_run_bit_for_bit() {
    once();
    for (algo, precision) in [(Algo::Td3, Preset::Fxp16), (Algo::Ddpg, Preset::Float32)] {
        let mut cfg = tiny(algo, precision);
        if algo == Algo::Ddpg {
            cfg.exploration = NoiseKind::Ou;
        }
        let (a, b) = (scratch("full"), scratch("killed"));
        let ra = Trainer::new(cfg.clone(), 5, &a)
            .unwrap()
            .run(None, &mut |_| {})
            .unwrap()
            .unwrap();
        // "Kill" at step 1000: the last checkpoint was taken at the episode end at step 800.
        let stopped = Trainer::new(cfg, 5, &b)
            .unwrap()
            .run(Some(1_000), &mut |_| {})
            .unwrap();
        assert!(stopped.is_none());
        let mut t = Trainer::resume(&b).unwrap();
        assert_eq!(t.step(), 800);
        let rb = t.run(None, &mut |_| {}).unwrap().unwrap();
        assert_same_files(&a, &b, &format!("{algo:?} {precision:?}"));
        assert_eq!(
            ra.final_eval_return.to_bits(),
            rb.final_eval_return.to_bits()
        );
        assert_eq!(ra.eval_curve, rb.eval_curve);
        for d in [a, b] {
            fs::remove_dir_all(d).unwrap();
        }
    }
}

/// What a preemption signal does (`Trainer::stop_when`, set by `fixar sweep`'s SIGUSR1
/// handler): stop at the next episode boundary with a checkpoint there, so the resumed
/// run loses nothing and equals an uninterrupted one.
#[test]
fn a_stop_request_checkpoints_at_the_episode_end_and_resumes_bit_for_bit() {
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    once();
    let cfg = tiny(Algo::Td3, Preset::Fxp16);
    let (a, b) = (scratch("unstopped"), scratch("stopped"));
    let ra = Trainer::new(cfg.clone(), 3, &a)
        .unwrap()
        .run(None, &mut |_| {})
        .unwrap()
        .unwrap();
    let mut t = Trainer::new(cfg, 3, &b).unwrap();
    t.stop_when(&STOP);
    let stopped = t
        .run(None, &mut |p| {
            if p.step >= 900 {
                STOP.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .unwrap();
    assert!(stopped.is_none());
    // Pendulum's episodes are 200 steps: the request at step 900 stops at step 1000,
    // past the last periodic checkpoint, and the checkpoint is taken there.
    assert_eq!(t.step(), 1000);
    drop(t);
    let mut t = Trainer::resume(&b).unwrap();
    assert_eq!(t.step(), 1000);
    let rb = t.run(None, &mut |_| {}).unwrap().unwrap();
    assert_same_files(&a, &b, "stopped and resumed");
    assert_eq!(
        ra.final_eval_return.to_bits(),
        rb.final_eval_return.to_bits()
    );
    for d in [a, b] {
        fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn diverging_run_names_step_network_layer_and_class_and_keeps_last_checkpoint() {
    once();
    let mut cfg = tiny(Algo::Td3, Preset::Float32);
    cfg.learning_rate = 1e30;
    cfg.checkpoint_every = 100;
    let d = scratch("nan");
    let err = Trainer::new(cfg, 0, &d)
        .unwrap()
        .run(None, &mut |_| {})
        .unwrap_err();
    let msg = err.to_string();
    match err {
        TrainError::NonFinite {
            step,
            ref network,
            ref layer,
            ..
        } => {
            assert!(step >= 200, "{msg}");
            assert!(layer.starts_with(network.as_str()), "{msg}");
        }
        other => panic!("expected a non-finite error, got {other}"),
    }
    assert!(
        msg.contains("network") && msg.contains("layer") && msg.contains("tensor class"),
        "{msg}"
    );
    // The checkpoint from the episode end at step 200 is intact and loads.
    let t = Trainer::resume(&d).unwrap();
    assert_eq!(t.step(), 200);
    fs::remove_dir_all(d).unwrap();
}
