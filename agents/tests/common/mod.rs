//! What the whole-loop tests share: a tiny Pendulum config, scratch directories, and
//! the byte comparison of two seed directories' CSVs (and their event files' scalars).

use std::fs;
use std::path::{Path, PathBuf};

use agents::config::{Algo, TrainConfig};
use agents::Preset;

/// 1200 Pendulum steps, updates from 200, 16-16 networks, evaluations every 400 steps,
/// log rows every 200, checkpoints every 400, ranges observed every 10th update.
pub fn tiny(algo: Algo, precision: Preset) -> TrainConfig {
    TrainConfig {
        algo,
        env_id: "Pendulum-v1".into(),
        total_timesteps: 1_200,
        learning_starts: 200,
        batch_size: 32,
        hidden: vec![16, 16],
        eval_every: 400,
        eval_episodes: 2,
        log_every: 200,
        checkpoint_every: 400,
        range_every: 10,
        precision,
        ..Default::default()
    }
}

pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fixar-agents-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

pub fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    ["metrics.csv", "quant.csv", "eval.csv", "episodes.csv"]
        .iter()
        .map(|f| (f.to_string(), fs::read(dir.join(f)).unwrap()))
        .collect()
}

/// Panics naming the first differing line of the first differing file, or the first
/// differing scalar of the event files.
pub fn assert_same_files(a: &Path, b: &Path, what: &str) {
    let scalars =
        |d: &Path| agents::tfevents::reproducible_scalars(&d.join(agents::layout::EVENTS)).unwrap();
    let (x, y) = (scalars(a), scalars(b));
    if let Some(i) = (0..x.len().max(y.len())).find(|&i| x.get(i) != y.get(i)) {
        panic!(
            "{what}: event scalar {i} differs: {:?} vs {:?}",
            x.get(i),
            y.get(i)
        );
    }
    for ((name, x), (_, y)) in files(a).into_iter().zip(files(b)) {
        if x != y {
            let (x, y) = (
                String::from_utf8_lossy(&x).into_owned(),
                String::from_utf8_lossy(&y).into_owned(),
            );
            let (i, (lx, ly)) = x
                .lines()
                .zip(y.lines())
                .enumerate()
                .find(|(_, (p, q))| p != q)
                .unwrap_or((0, ("<length differs>", "<length differs>")));
            panic!("{what}: {name} differs at line {i}:\n{lx}\n{ly}");
        }
    }
}
