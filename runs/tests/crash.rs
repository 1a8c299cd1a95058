//! Crash consistency: `fixar train`, `fixar sweep --shard` and `fixar qat` killed with SIGKILL at
//! many seeded random moments (some of them while a checkpoint is being written),
//! resumed each time, end with files byte-identical to an uninterrupted run's (wall
//! times aside), and event files holding the same scalars at the same steps (none lost,
//! none twice; `charts/SPS` and wall times aside). Also damaged run-directory files found on resume: a `config.toml`
//! edited after the run started, a `metrics.csv` cut short or altered; and a disk that
//! fills up (a small tmpfs) mid-run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use agents::config::TrainConfig;
use common::{copy_dir, fixar, tiny_config, Ran, Run, Scratch};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Held by every test here: they time kills against an uninterrupted run's wall time,
/// which only means something when no other test of this file shares the CPU.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The CSVs a seed directory holds; all must survive kills byte for byte.
const CSVS: [&str; 4] = ["metrics.csv", "quant.csv", "eval.csv", "episodes.csv"];

/// Pendulum (native), 8-8 networks, a checkpoint every episode (200 steps), an
/// evaluation every 400 steps: many checkpoints in a run of a few seconds.
fn crash_config(total: u64) -> TrainConfig {
    TrainConfig {
        total_timesteps: total,
        learning_starts: 300,
        batch_size: 16,
        hidden: vec![8, 8],
        eval_every: 400,
        eval_episodes: 1,
        log_every: 100,
        checkpoint_every: 200,
        ..tiny_config()
    }
}

/// `summary.json` without its wall-clock fields.
fn summary_sans_wall_time(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("summary.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for s in v["seeds"].as_array_mut().unwrap() {
        let s = s.as_object_mut().unwrap();
        for k in ["wall_time_s", "updates_per_s", "update_only_per_s"] {
            assert!(s.remove(k).is_some(), "summary.json lacks {k}");
        }
    }
    v
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn assert_same_files(a: &Path, b: &Path, files: &[&str]) {
    for f in files {
        assert!(
            read(&a.join(f)) == read(&b.join(f)),
            "{} differs from the uninterrupted run's {}",
            b.join(f).display(),
            a.join(f).display()
        );
    }
}

/// The scalars of a seed directory's event file but `charts/SPS` (a wall-clock figure),
/// in file order.
fn event_scalars(dir: &Path) -> Vec<(u64, String, f32)> {
    let path = dir.join(agents::layout::EVENTS);
    agents::tfevents::reproducible_scalars(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// The CSVs of two seed directories are byte-identical and their event files hold the
/// same scalars.
fn assert_same_records(a: &Path, b: &Path) {
    assert_same_files(a, b, &CSVS);
    let (ea, eb) = (event_scalars(a), event_scalars(b));
    assert!(ea.len() > 50, "{}: only {} scalars", a.display(), ea.len());
    assert!(
        ea == eb,
        "{}'s event file differs from the uninterrupted run's ({} vs {} scalars)",
        b.display(),
        eb.len(),
        ea.len()
    );
}

/// Any `*.tmp` left in `dir` or its subdirectories: a write the kill interrupted.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(it) = std::fs::read_dir(dir) {
        for e in it.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(temp_files(&p));
            } else if p.extension().is_some_and(|x| x == "tmp") {
                out.push(p);
            }
        }
    }
    out
}

/// How one attempt ended.
enum Ended {
    /// Killed; `mid_write`: a checkpoint (or other atomic file) was being written.
    Killed {
        mid_write: bool,
    },
    Exited(Ran),
}

/// Runs `cmd`'s child until `deadline` after its start, or (with `at_checkpoint`) until
/// a `checkpoint.tmp` appears under `watch`, then SIGKILLs it; or lets it exit.
fn kill_at(mut child: Child, watch: &Path, deadline: Duration, at_checkpoint: bool) -> Ended {
    let t = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            return Ended::Exited(child.wait_with_output().unwrap().into());
        }
        let writing = at_checkpoint && !temp_files(watch).is_empty();
        if writing || t.elapsed() >= deadline {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return Ended::Killed {
                mid_write: !temp_files(watch).is_empty(),
            };
        }
        if !at_checkpoint {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn spawn(args: &[&str]) -> Child {
    fixar()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Kills attempts of a command at seeded random moments until `kills` kills happened
/// (each next attempt is `next(run dir state)`), then runs it to its end. Returns how
/// many kills hit a write in progress.
fn kill_repeatedly(
    kills: usize,
    seed: u64,
    watch: &Path,
    max_delay: Duration,
    mut next: impl FnMut() -> Vec<String>,
) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut done, mut mid_write) = (0, 0);
    while done < kills {
        let args = next();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // One kill in four waits for a checkpoint write and kills inside it.
        let at_checkpoint = rng.gen_ratio(1, 4);
        let delay = max_delay.mul_f64(rng.gen_range(0.0..1.0));
        let limit = if at_checkpoint { max_delay * 2 } else { delay };
        match kill_at(spawn(&args), watch, limit, at_checkpoint) {
            Ended::Killed { mid_write: m } => {
                done += 1;
                mid_write += m as usize;
            }
            Ended::Exited(ran) => panic!(
                "{args:?} ended (exit {:?}) before kill {} of {kills}; shorten the delays: {}",
                ran.code, done, ran.stderr
            ),
        }
    }
    let args = next();
    let ran = fixar().args(&args).run();
    assert!(ran.success(), "{args:?}: {}", ran.stderr);
    mid_write
}

#[test]
fn train_killed_24_times_at_random_moments_resumes_to_the_uninterrupted_run() {
    let _alone = alone();
    let d = Scratch::new("crash-train");
    let cfg = d.write_config("crash.toml", &crash_config(6000));
    let (a, b) = (d.join("a"), d.join("b"));
    let common = |out: &Path| {
        [
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--seeds",
            "0,1",
            "--jobs",
            "1",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let t = Instant::now();
    fixar().args(common(&a)).run_ok();
    let whole = t.elapsed();

    // Kills land anywhere from process start (loading libtorch, creating the run
    // directory) to well into training; few attempts survive past many checkpoints,
    // so the run advances slowly through many kills.
    let max_delay = whole / 10;
    let started = || b.join("run.json").is_file();
    let mid_write = kill_repeatedly(24, 24, &b, max_delay, || {
        if started() {
            // `--jobs` as the first command's: summary.json records it.
            ["train", "--resume", b.to_str().unwrap(), "--jobs", "1"]
                .map(String::from)
                .to_vec()
        } else {
            // Killed before the run directory was complete: nothing to resume, and the
            // documented recovery is to start it again over what is there.
            let mut c = common(&b);
            c.push("--force".into());
            c
        }
    });
    eprintln!(
        "24 kills ({mid_write} inside a checkpoint write); uninterrupted run {:.1} s, all {:.1} s",
        whole.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    assert!(mid_write >= 1, "no kill landed inside a checkpoint write");
    assert_eq!(summary_sans_wall_time(&a), summary_sans_wall_time(&b));
    for s in ["seed_0", "seed_1"] {
        assert_same_records(&a.join(s), &b.join(s));
    }
    assert!(temp_files(&b).is_empty(), "{:?}", temp_files(&b));
}

/// A two-trial sweep file of crash_config trials.
fn sweep_file(d: &Scratch, out: &Path) -> PathBuf {
    let base = d.write_config("base.toml", &crash_config(2400));
    d.write(
        "sweep.toml",
        &format!(
            "name = \"crash\"\nbase = \"{}\"\nalgos = [\"td3\"]\nenvs = [\"Pendulum-v1\"]\n\
             precisions = [\"float32\"]\nseeds = [0, 1, 2, 3]\nout = \"{}\"\n",
            base.display(),
            out.display()
        ),
    )
}

#[test]
fn sweep_shard_killed_12_times_resumes_to_the_uninterrupted_shard() {
    let _alone = alone();
    let d = Scratch::new("crash-sweep");
    let (a, b) = (d.join("a"), d.join("b"));
    let file = sweep_file(&d, &a);
    let shard = |out: &Path| {
        [
            "sweep",
            "--config",
            file.to_str().unwrap(),
            "--shard",
            "0/2",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let t = Instant::now();
    fixar().args(shard(&a)).run_ok();
    let whole = t.elapsed();
    // Rerunning the same shard command is how a shard resumes.
    let mid_write = kill_repeatedly(12, 12, &b, whole / 8, || shard(&b));
    eprintln!("12 kills ({mid_write} inside a write); uninterrupted shard {whole:?}");
    let trials: Vec<_> = std::fs::read_dir(a.join("trials"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(trials.len(), 2, "{trials:?}");
    for t in trials {
        let (ta, tb) = (a.join("trials").join(&t), b.join("trials").join(&t));
        assert_same_records(&ta, &tb);
        let trial = |p: &Path| {
            let mut v: serde_json::Value =
                serde_json::from_slice(&read(&p.join("trial.json"))).unwrap();
            v.as_object_mut().unwrap().remove("wall_s").unwrap();
            v
        };
        assert_eq!(trial(&ta), trial(&tb));
    }
    assert_same_files(&a, &b, &["sweep.json"]);
}

/// `train --config CFG --out OUT`.
fn train_args(cfg: &Path, out: &Path) -> Vec<String> {
    [
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// A finished run and a copy of it stopped at a checkpoint in the middle (by a kill),
/// for the damaged-file tests: (finished, killed).
fn finished_and_killed(d: &Scratch) -> (PathBuf, PathBuf) {
    let cfg = d.write_config("c.toml", &crash_config(1600));
    let (a, b) = (d.join("a"), d.join("b"));
    let args = |out: &Path| train_args(&cfg, out);
    fixar().args(args(&a)).run_ok();
    let child = spawn(&args(&b).iter().map(String::as_str).collect::<Vec<_>>());
    // Kill once the second checkpoint is there (the first is at step 200).
    let ck = b.join("seed_0").join("checkpoint.bin");
    let t = Instant::now();
    let mut child = child;
    while t.elapsed() < Duration::from_secs(120) {
        let rows = std::fs::read_to_string(b.join("seed_0").join("episodes.csv"))
            .map_or(0, |s| s.lines().count());
        if ck.is_file() && rows >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(ck.is_file() && !b.join("summary.json").exists());
    (a, b)
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.push((p.clone(), read(&p)));
        }
    }
    out.sort();
    out
}

fn resume(dir: &Path) -> Ran {
    fixar()
        .args(["train", "--resume", dir.to_str().unwrap()])
        .run()
}

#[test]
fn damaged_run_files_are_refused_by_name_and_left_as_they_are_or_repaired() {
    let _alone = alone();
    let d = Scratch::new("damaged");
    let (a, b) = finished_and_killed(&d);
    let seed = b.join("seed_0");
    let metrics = seed.join("metrics.csv");
    let good = read(&metrics);

    // config.toml edited after the run started: exit 2 naming it, nothing touched.
    let c = d.join("edited");
    copy_dir(&b, &c);
    let cfg = c.join("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("batch_size = 16", "batch_size = 17")).unwrap();
    let before = snapshot(&c);
    let o = resume(&c);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(
        o.stderr.contains("config.toml") && o.stderr.contains("edited"),
        "{}",
        o.stderr
    );
    assert!(snapshot(&c) == before, "a refused resume changed files");
    // Even with run.json's record gone, the checkpoint's config tells (exit 1).
    let info = c.join("run.json");
    let mut v: serde_json::Value = serde_json::from_slice(&read(&info)).unwrap();
    v.as_object_mut().unwrap().remove("config_crc32").unwrap();
    std::fs::write(&info, v.to_string()).unwrap();
    let before = snapshot(&c);
    let o = resume(&c);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(
        o.stderr.contains("checkpoint.bin") && o.stderr.contains("batch_size"),
        "{}",
        o.stderr
    );
    assert!(snapshot(&c) == before, "a refused resume changed files");

    // metrics.csv or the event file cut short before the checkpoint's mark (its last
    // rows, half a line) or altered before it: exit 1 naming it, nothing touched.
    type Damage = fn(&[u8]) -> Vec<u8>;
    let cut: Damage = |g| g[..g.len() / 4].to_vec();
    let flipped: Damage = |g| {
        let mut g = g.to_vec();
        let i = g.len() / 3;
        g[i] ^= 0x01;
        g
    };
    let events = agents::layout::EVENTS;
    let good_events = read(&seed.join(events));
    for (name, file, damage) in [
        ("cut", "metrics.csv", cut),
        ("flipped", "metrics.csv", flipped),
        ("events-cut", events, cut),
        ("events-flipped", events, flipped),
    ] {
        let c = d.join(name);
        copy_dir(&b, &c);
        let bytes = if file == events { &good_events } else { &good };
        std::fs::write(c.join("seed_0").join(file), damage(bytes)).unwrap();
        let before = snapshot(&c);
        let o = resume(&c);
        assert_eq!(o.code, Some(1), "{name}: {}", o.stderr);
        assert!(
            o.stderr.contains(file) && !o.stderr.contains("panicked"),
            "{name}: {}",
            o.stderr
        );
        assert!(
            snapshot(&c) == before,
            "{name}: a refused resume changed files"
        );
    }

    // A half-written last line after the checkpoint's mark (what a kill mid-row
    // leaves): repaired, and the run ends equal to the uninterrupted one.
    let mut half = good.clone();
    half.extend_from_slice(b"1234,56,7,-12");
    std::fs::write(&metrics, &half).unwrap();
    let o = resume(&b);
    assert!(o.success(), "{}", o.stderr);
    assert_eq!(summary_sans_wall_time(&a), summary_sans_wall_time(&b));
    assert_same_records(&a.join("seed_0"), &seed);
}

/// A tmpfs mounted for a test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `dir`, or says why it cannot (not root, no
    /// CAP_SYS_ADMIN in a container, no `mount`).
    fn mount(dir: &Path, bytes: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let o = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, bytes: u64) {
        let o = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_training_with_a_clear_error_and_the_run_resumes_once_there_is_room() {
    let _alone = alone();
    let d = Scratch::new("disk-full");
    let cfg = d.write_config("c.toml", &crash_config(4000));
    let a = d.join("a");
    let args = |out: &Path| train_args(&cfg, out);
    fixar().args(args(&a)).run_ok();
    // Room for one and a half checkpoints (most of a checkpoint is its range
    // observers, so all are about the size of the last): the first fits, and the disk
    // fills while the next one is written beside it, as atomic writes do.
    let ck = read(&a.join("seed_0").join("checkpoint.bin")).len() as u64;
    let room = (ck * 3 / 2).div_ceil(4096) * 4096;
    let fs = match Tmpfs::mount(&d.join("small"), room) {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a small tmpfs to fill ({why})");
            return;
        }
    };
    let b = fs.0.join("run");
    let o = fixar().args(args(&b)).run();
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(
        o.stderr.contains("No space left on device") && o.stderr.contains(b.to_str().unwrap()),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    let error = o.stderr.lines().rev().find(|l| l.contains("No space"));
    eprintln!("disk full at {room} bytes: {}", error.unwrap_or_default());
    let seed = b.join("seed_0");
    assert!(
        seed.join("checkpoint.bin").is_file(),
        "no checkpoint survived"
    );
    assert!(temp_files(&b).is_empty(), "{:?}", temp_files(&b));
    // What was written is what the uninterrupted run wrote (a prefix of it).
    for f in CSVS {
        let (x, y) = (read(&a.join("seed_0").join(f)), read(&seed.join(f)));
        assert!(
            x.starts_with(&y),
            "{f} holds bytes the uninterrupted run does not"
        );
    }
    // With room again, the run resumes in place and ends as the uninterrupted one.
    fs.resize(64 << 20);
    let o = resume(&b);
    assert!(o.success(), "{}", o.stderr);
    assert_eq!(summary_sans_wall_time(&a), summary_sans_wall_time(&b));
    assert_same_records(&a.join("seed_0"), &seed);
}

/// `fixar qat` killed 12 times at seeded random moments (some inside a rung's checkpoint
/// write), continued each time with `--resume` (or started again when the kill came
/// before the ladder recorded its plan), ends with the outputs of an uninterrupted
/// ladder byte for byte; `--resume` with other flags is a usage error.
#[test]
fn qat_killed_12_times_resumes_to_the_uninterrupted_ladder() {
    let _alone = alone();
    let d = Scratch::new("crash-qat");
    let parent = d.join("parent");
    let cfg = d.write_config(
        "parent.toml",
        &TrainConfig {
            precision: agents::precision::Preset::Fxp32,
            ..crash_config(800)
        },
    );
    fixar()
        .args(["-q", "train", "--seeds", "0,1", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&parent)
        .run_ok();
    let (a, b) = (d.join("a"), d.join("b"));
    copy_dir(&parent, &a);
    copy_dir(&parent, &b);
    let qat = |run: &Path, resume: bool| {
        let mut v = [
            "qat",
            "--from",
            run.to_str().unwrap(),
            "--strategy",
            "ptq,range,delay",
            "--widths",
            "12,8,6",
            "--steps",
            "300",
            "--profile-steps",
            "100",
        ]
        .map(String::from)
        .to_vec();
        if resume {
            v.push("--resume".into());
        }
        v
    };
    let t = Instant::now();
    fixar().args(qat(&a, false)).run_ok();
    let whole = t.elapsed();
    let mid_write = kill_repeatedly(12, 12, &b, whole / 6, || {
        qat(&b, b.join("qat/plan.txt").is_file())
    });
    eprintln!(
        "12 kills ({mid_write} inside a write); uninterrupted ladder {:.1} s",
        whole.as_secs_f64()
    );
    assert_same_files(
        &a.join("qat"),
        &b.join("qat"),
        &["qat.csv", "qat.md", "formats.json", "chosen.json"],
    );
    assert!(temp_files(&b).is_empty(), "{:?}", temp_files(&b));
    // Every rung recorded that it finished (what a later --resume reads back).
    for rung in ["ptq_w12", "range_w8", "delay_w6"] {
        for s in ["seed_0", "seed_1"] {
            let rec = b.join("qat").join(rung).join(s).join("rung.json");
            assert!(rec.is_file(), "{} missing", rec.display());
        }
    }
    // Other flags than the interrupted ladder's: refused, naming what differs.
    let mut other = qat(&b, true);
    other[8] = "200".into();
    let r = fixar().args(&other).run();
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("other settings"), "{}", r.stderr);
}
