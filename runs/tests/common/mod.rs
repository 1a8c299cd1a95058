//! Helpers shared by the `runs` integration tests (each test file says `mod common;`):
//! running the `fixar` binary and reading what it printed, scratch directories, and the
//! tiny training config the end-to-end tests start from.

// Every test binary compiles its own copy of this module and uses only part of it; the
// rest would be `dead_code` in that binary and fail `clippy -D warnings`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use agents::config::TrainConfig;

/// The `fixar` binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_fixar");

/// The workspace root (the folder holding `runs/`).
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// `fixar` as the tests run it: from the temp dir, without `LD_LIBRARY_PATH` and with
/// stdin closed. So every test also shows that the binary finds libtorch through its
/// rpath from any directory, and none can hang reading the terminal. Paths passed to it
/// are absolute (see [`workspace`] for files in the repository).
pub fn fixar() -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(std::env::temp_dir())
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null());
    c
}

/// How a finished `fixar` exited and what it printed.
#[derive(Debug)]
pub struct Ran {
    /// `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Stdout parsed as JSON (for `--format json`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

impl From<std::process::Output> for Ran {
    fn from(o: std::process::Output) -> Ran {
        Ran {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Running a [`Command`] (usually [`fixar`]) to its end, capturing stdout and stderr.
pub trait Run {
    /// Runs it and returns how it went, whatever that was.
    fn run(&mut self) -> Ran;
    /// Runs it and panics, showing the command and its stderr, unless it exits 0.
    fn run_ok(&mut self) -> Ran;
    /// Runs it with its stdout a pipe the reader closed before it printed anything, as
    /// under `fixar ... | head -0`.
    fn run_stdout_closed(&mut self) -> Ran;
}

impl Run for Command {
    fn run(&mut self) -> Ran {
        self.output()
            .unwrap_or_else(|e| panic!("cannot start {self:?}: {e}"))
            .into()
    }

    fn run_ok(&mut self) -> Ran {
        let ran = self.run();
        assert!(ran.success(), "{self:?} failed: {}", ran.stderr);
        ran
    }

    fn run_stdout_closed(&mut self) -> Ran {
        let mut child = self
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {self:?}: {e}"));
        drop(child.stdout.take());
        child.wait_with_output().unwrap().into()
    }
}

/// A fresh directory under the temp dir, unique per test binary, process, name and call,
/// removed on drop unless the test is failing (then it is kept, and its path printed, to
/// look at). It derefs to its [`Path`].
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// `name` says which test it is for: it is part of the directory's name.
    pub fn new(name: &str) -> Scratch {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fixar-{}-{}-{name}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to the file `name` in it and returns the file's path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Writes `cfg` as the TOML training config `name` in it and returns the file's path.
    pub fn write_config(&self, name: &str, cfg: &TrainConfig) -> PathBuf {
        self.write(name, &toml::to_string(cfg).unwrap())
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A training run small enough for a test: TD3 on Pendulum, 400 steps (200 of them
/// random), 16-16 networks, one evaluation of 2 episodes at the end, a checkpoint only at
/// the end, float32. Tests override what they are about with `..tiny_config()`.
pub fn tiny_config() -> TrainConfig {
    TrainConfig {
        total_timesteps: 400,
        learning_starts: 200,
        batch_size: 32,
        hidden: vec![16, 16],
        eval_every: 400,
        eval_episodes: 2,
        log_every: 200,
        checkpoint_every: 100_000,
        ..Default::default()
    }
}

/// Trains the tiny fxp16 run (one seed, one evaluation episode) into `<dir>/run` and
/// returns its path: an actor `fixar export` and `fixar bench deploy` take.
pub fn train_tiny_fxp16(dir: &Scratch) -> PathBuf {
    let cfg = dir.write_config(
        "tiny.toml",
        &TrainConfig {
            eval_episodes: 1,
            precision: agents::precision::Preset::Fxp16,
            ..tiny_config()
        },
    );
    let run = dir.join("run");
    let ran = fixar()
        .args(["-q", "train", "--seeds", "0", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&run)
        .run();
    assert!(ran.success(), "fixar train failed: {}", ran.stderr);
    run
}

/// A recursive copy of the directory `src` into `dst`.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}
