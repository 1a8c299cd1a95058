//! Fuzzing every file and value a user or a run directory feeds the agents crate, with
//! the workspace's fuzz driver (`fuzz/`): training configs (TOML files and `--set`
//! values), checkpoints (resumed, then trained a few steps), sweep files and the files
//! `fixar collect` reads. No input may panic, hang or abort; what is accepted must be
//! usable. Long runs: `scripts/fuzz`.

use std::path::{Path, PathBuf};

use agents::config::{load, TrainConfig};
use agents::sweep::{collect, SweepSpec};
use agents::trainer::Trainer;

/// A directory for this test binary's scratch files (one per target).
fn scratch(target: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fixar-fuzz-{}-{target}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const CONFIG_TOKENS: &[&[u8]] = &[
    b"total_timesteps = ",
    b"hidden = [",
    b"precision = \"fxp16\"",
    b"[formats]\n",
    b"weight = \"ap_fixed<16,3,AP_RND_CONV,AP_SAT>\"",
    b"learning_rate = ",
    b"1e308",
    b"-inf",
    b"nan",
    b"18446744073709551615",
    b"-1",
    b"0",
    b"\"",
    b"[[",
    b"algo = \"ddpg\"",
    b"noise = ",
    b"\n",
];

/// A config that loads must write back (`config.toml`) to itself: `--resume` reads it.
fn round_trips(cfg: &TrainConfig, resolved: &str) {
    let back: TrainConfig = toml::from_str(resolved).unwrap();
    assert_eq!(&back, cfg, "{resolved}");
    let _ = cfg.precision_spec();
}

#[test]
fn training_config_files() {
    let d = scratch("config_toml");
    let path = d.join("c.toml");
    fuzzkit::fuzz(
        "config_toml",
        &fuzzkit::corpus("config_toml"),
        CONFIG_TOKENS,
        |bytes| {
            std::fs::write(&path, bytes).unwrap();
            let Ok((cfg, resolved)) = load(Some(&path), &[]) else {
                return false;
            };
            round_trips(&cfg, &resolved);
            true
        },
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn set_values() {
    fuzzkit::fuzz(
        "config_set",
        &fuzzkit::corpus("config_set"),
        CONFIG_TOKENS,
        |bytes| {
            let text = String::from_utf8_lossy(bytes);
            let sets: Vec<String> = text.lines().map(String::from).collect();
            let Ok((cfg, resolved)) = load(None, &sets) else {
                return false;
            };
            round_trips(&cfg, &resolved);
            true
        },
    );
}

/// A small finished-mid-run seed directory: its checkpoint is the seed input, its CSVs
/// stay beside every mutated checkpoint.
fn seed_dir(dir: &Path) -> Vec<u8> {
    let cfg = TrainConfig {
        total_timesteps: 600,
        learning_starts: 100,
        buffer_size: 400,
        batch_size: 8,
        hidden: vec![4],
        eval_every: 300,
        eval_episodes: 1,
        log_every: 100,
        checkpoint_every: 200,
        ..Default::default()
    };
    let mut t = Trainer::new(cfg, 3, dir).unwrap();
    t.run(Some(450), &mut |_| {}).unwrap();
    std::fs::read(dir.join("checkpoint.bin")).unwrap()
}

/// A version 2 checkpoint with its CRC recomputed, so mutations reach the parser
/// behind the checksum (the raw mutation is tried too).
fn resealed(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 20 || &bytes[..8] != b"FIXARCK2" {
        return None;
    }
    let body = &bytes[..bytes.len() - 4];
    let mut out = body.to_vec();
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    Some(out)
}

#[test]
fn checkpoint_files() {
    let d = scratch("checkpoint");
    let good = seed_dir(&d);
    let csvs: Vec<(PathBuf, Vec<u8>)> = ["metrics.csv", "quant.csv", "eval.csv", "episodes.csv"]
        .iter()
        .map(|f| (d.join(f), std::fs::read(d.join(f)).unwrap()))
        .collect();
    let mut seeds = fuzzkit::corpus("checkpoint");
    seeds.push(good);
    let tokens: &[&[u8]] = &[
        b"\"shape\":[",
        b"\"offset\":",
        b"\"len\":",
        b"\"kind\":\"i64\"",
        b"18446744073709551615",
        b"-1",
        b"\"formats\":[[\"ap_fixed<64,32>\"]]",
        b"null",
    ];
    let ck = d.join("checkpoint.bin");
    fuzzkit::fuzz("checkpoint", &seeds, tokens, |bytes| {
        let mut resumed = false;
        for input in [Some(bytes.to_vec()), resealed(bytes)]
            .into_iter()
            .flatten()
        {
            std::fs::write(&ck, &input).unwrap();
            for (p, b) in &csvs {
                std::fs::write(p, b).unwrap();
            }
            if let Ok(mut t) = Trainer::resume(&d) {
                // What resumes must train: a few steps and a checkpoint.
                let stop = t.step() + 3;
                let _ = t.run(Some(stop), &mut |_| {});
                let _ = t.checkpoint();
                resumed = true;
            }
        }
        resumed
    });
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn sweep_files() {
    let d = scratch("sweep_file");
    std::fs::write(d.join("base.toml"), "total_timesteps = 300\n").unwrap();
    let path = d.join("sweep.toml");
    let tokens: &[&[u8]] = &[
        b"algos = [\"td3\", \"ddpg\"]",
        b"envs = [\"Pendulum-v1\"]",
        b"precisions = [\"fxp16\", \"float32\"]",
        b"seeds = [0, 1]",
        b"[set]\n",
        b"base = \"base.toml\"",
        b"\"../x\"",
        b"-1",
        b"\n",
    ];
    fuzzkit::fuzz(
        "sweep_file",
        &fuzzkit::corpus("sweep_file"),
        tokens,
        |bytes| {
            std::fs::write(&path, bytes).unwrap();
            let Ok((spec, base)) = SweepSpec::load(&path) else {
                return false;
            };
            for t in spec.expand().iter().take(64) {
                let _ = spec.trial_config(&path, &base, t);
                let dir = agents::sweep::trial_dir(Path::new("out"), t);
                assert!(
                    dir.starts_with("out/trials") && dir.components().count() == 3,
                    "trial {} leaves the sweep directory: {}",
                    t.id,
                    dir.display()
                );
            }
            true
        },
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn collected_sweep_directories() {
    let d = scratch("collect");
    let trials = d.join("trials");
    // An input is `sweep.json`, then `trial.json` files, separated by a line `---`.
    let tokens: &[&[u8]] = &[
        b"\n---\n",
        b"\"trials\":[",
        b"\"final_eval_return\":",
        b"\"eval_curve\":[[100,-1.5]]",
        b"\"id\":\"td3-Pendulum-v1-fxp16-s0\"",
        b"1e999",
        b"null",
    ];
    fuzzkit::fuzz("collect", &fuzzkit::corpus("collect"), tokens, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        let mut parts = text.split("\n---\n");
        let _ = std::fs::remove_dir_all(&trials);
        std::fs::write(d.join("sweep.json"), parts.next().unwrap_or("")).unwrap();
        for (i, t) in parts.enumerate() {
            let dir = trials.join(format!("t{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("trial.json"), t).unwrap();
        }
        let Ok(c) = collect(std::slice::from_ref(&d)) else {
            return false;
        };
        let _ = c.problems();
        let _ = agents::sweep::summarize(&c.results);
        true
    });
    let _ = std::fs::remove_dir_all(&d);
}
