//! Learned binary points in QAT retraining (`agents::learned_point`): they move under
//! training at narrow widths, the layers' formats and the target networks follow them,
//! a format change keeps them (only the start of a ladder sets them from formats), and
//! a run resumed from a checkpoint equals an uninterrupted one bit for bit.

mod common;

use std::fs;

use agents::config::Algo;
use agents::precision::{FormatTable, TensorClass, TrainMode};
use agents::trainer::Trainer;
use agents::Preset;
use common::{assert_same_files, scratch, tiny};

type Points = Vec<(String, TensorClass, f64)>;

/// Every forward class of every layer at `width` bits with `int_bits` integer bits
/// (the rest float), like a QAT rung.
fn rung(t: &Trainer, width: u32, int_bits: i32) -> FormatTable {
    let mut table = t.formats();
    for f in table.values_mut() {
        for c in TensorClass::ALL {
            let fmt = agents::qat::FORWARD_CLASSES
                .contains(&c)
                .then(|| quant::FxFormat::signed(width, int_bits).unwrap());
            f.set(c, fmt);
        }
    }
    table
}

/// A TD3 fxp16 run trained 400 steps, switched to QAT at 6 bits with learned points.
fn learner(name: &str) -> (Trainer, std::path::PathBuf) {
    let d = scratch(name);
    let mut t = Trainer::new(tiny(Algo::Td3, Preset::Fxp16), 3, &d).unwrap();
    t.train_steps(400).unwrap();
    t.set_mode(TrainMode::Qat);
    let f = rung(&t, 6, 2);
    t.set_formats(&f);
    assert!(t.learn_binary_points(0.05).unwrap());
    (t, d)
}

fn int_bits_of(t: &Trainer, layer: &str, class: TensorClass) -> i32 {
    t.formats()[layer].get(class).unwrap().int_bits
}

#[test]
fn points_move_formats_and_targets_follow_and_a_new_width_keeps_them() {
    let (mut t, d) = learner("learned-move");
    let start: Points = t.learned_points();
    // Actor (3 layers: input + 4 classes each), two critics: 13 points each.
    assert_eq!(start.len(), 39);
    assert!(start.iter().all(|(_, _, s)| *s == 2.0));
    t.train_steps(400).unwrap();
    let after = t.learned_points();
    let moved: Vec<_> = after
        .iter()
        .filter(|(_, _, s)| s.round() != 2.0)
        .map(|(l, c, s)| format!("{l}.{c}={s:.2}"))
        .collect();
    assert!(
        !moved.is_empty(),
        "400 QAT steps moved no binary point: {after:?}"
    );
    for (layer, class, s) in &after {
        assert_eq!(
            int_bits_of(&t, layer, *class),
            s.round() as i32,
            "{layer}.{class}"
        );
        let target = layer.replacen('.', "_target.", 1);
        assert_eq!(
            int_bits_of(&t, &target, *class),
            s.round() as i32,
            "{target}.{class} does not follow {layer}"
        );
    }
    // The next rung: 4 bits, formats derived afresh. The learned integer bits stay,
    // and asking to learn again (what every rung does) resets nothing.
    let f = rung(&t, 4, 1);
    t.set_formats(&f);
    assert!(!t.learn_binary_points(0.05).unwrap());
    assert_eq!(
        t.learned_points(),
        after,
        "a new rung reset the learned points"
    );
    for (layer, class, s) in &after {
        let f = t.formats()[layer.as_str()].get(*class).unwrap();
        assert_eq!(
            (f.width, f.int_bits),
            (4, s.round() as i32),
            "{layer}.{class}"
        );
    }
    // metrics.csv: one int_bits column per point, its rows as wide as its header.
    let m = fs::read_to_string(d.join("metrics.csv")).unwrap();
    let header = m.lines().next().unwrap();
    assert!(
        header.ends_with("critic2.fc3.activation.int_bits"),
        "{header}"
    );
    let cols = header.split(',').count();
    assert!(m.lines().all(|l| l.split(',').count() == cols));
    let last = m.lines().last().unwrap();
    assert!(!last.ends_with(','), "last row lacks the points: {last}");
    fs::remove_dir_all(d).unwrap();
}

#[test]
fn a_resumed_learner_equals_an_uninterrupted_one_bit_for_bit() {
    // Both stop at step 600 (train_steps ends with an evaluation), one of them resumes.
    let (mut a, da) = learner("learned-full");
    a.train_steps(200).unwrap();
    a.train_steps(200).unwrap();
    let (mut b, db) = learner("learned-killed");
    b.train_steps(200).unwrap();
    b.checkpoint().unwrap();
    let before = b.learned_points();
    drop(b);
    let mut b = Trainer::resume(&db).unwrap();
    assert_eq!(b.learned_points(), before, "the checkpoint lost the points");
    b.train_steps(200).unwrap();
    assert_eq!(a.learned_points(), b.learned_points());
    assert_eq!(a.formats(), b.formats());
    a.checkpoint().unwrap();
    b.checkpoint().unwrap();
    assert_same_files(&da, &db, "learned points, resumed");
    for d in [da, db] {
        fs::remove_dir_all(d).unwrap();
    }
}
