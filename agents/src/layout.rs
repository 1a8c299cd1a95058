//! Every file and directory name of a run directory, in one place: the trainer writes
//! the seed files, the QAT ladder its rungs, and `runs` the run-level files and reports,
//! all through these names, so a reader (resume, `fixar qat --from`, `fixar export
//! --run`, `fixar collect`) finds what a writer left.
//!
//! ```text
//! <run>/config.toml  run.json  summary.json  learning_curve.png/.svg
//! <run>/seed_<n>/    checkpoint.bin metrics.csv quant.csv eval.csv episodes.csv
//!                    events.out.tfevents.fixar weights.safetensors
//! <run>/qat/         qat.csv qat.md formats.json chosen.json reward_vs_bits.png/.svg
//! <run>/qat/<strategy>_w<width>/seed_<n>/   (a rung: the seed files above)
//! <run>/export/<target>/                    (`fixar export`)
//! <sweep>/sweep.json results.csv results.md; <sweep>/<trial>/trial.json + seed files
//! <pipeline>/report.md report.html accel_agent.toml accel/ (report.md report.json)
//! ```

use std::path::{Path, PathBuf};

/// The resolved config of a run (file + `--set`), what `--resume` reads.
pub const CONFIG: &str = "config.toml";
/// How the run was started: seeds, config source, `--set` values.
pub const RUN_INFO: &str = "run.json";
/// Written when every seed has finished.
pub const SUMMARY: &str = "summary.json";
/// The learning-curve plot's stem (`.png` and `.svg`).
pub const CURVE: &str = "learning_curve";

/// A seed's whole training state.
pub const CHECKPOINT: &str = "checkpoint.bin";
pub const METRICS: &str = "metrics.csv";
pub const QUANT: &str = "quant.csv";
pub const EVAL: &str = "eval.csv";
pub const EPISODES: &str = "episodes.csv";
/// The CSV streams a trainer appends to, in the order a checkpoint records their lengths.
pub const SEED_CSVS: [&str; 4] = [METRICS, QUANT, EVAL, EPISODES];
/// The seed's TensorBoard event file (`crate::tfevents`; TensorBoard reads any file
/// whose name holds `tfevents`). One per seed directory, cut back on resume like the CSVs.
pub const EVENTS: &str = "events.out.tfevents.fixar";
/// The online networks' weights (float values and raw codes) in the safetensors format,
/// rewritten atomically at every checkpoint (`crate::weights`).
pub const WEIGHTS: &str = "weights.safetensors";
/// Every file a trainer keeps in a seed directory (what a QAT branch copies).
pub const SEED_FILES: [&str; 6] = [CHECKPOINT, METRICS, QUANT, EVAL, EPISODES, EVENTS];

/// The QAT ladder's directory inside a run, and its files.
pub const QAT_DIR: &str = "qat";
pub const QAT_CSV: &str = "qat.csv";
pub const QAT_MD: &str = "qat.md";
pub const QAT_FORMATS: &str = "formats.json";
pub const QAT_CHOSEN: &str = "chosen.json";
pub const QAT_PLOT: &str = "reward_vs_bits";
/// The learned binary points' trajectories: `learned_points` (the actor) and
/// `learned_points_<critic>` (`.png` and `.svg`).
pub const QAT_LEARNED_PLOT: &str = "learned_points";

/// A sweep's grid record, its collected tables, and one trial's result.
pub const SWEEP: &str = "sweep.json";
pub const SWEEP_RESULTS_CSV: &str = "results.csv";
pub const SWEEP_RESULTS_MD: &str = "results.md";
pub const TRIAL: &str = "trial.json";

/// Reports (`fixar pipeline`, `fixar accel --out`): `<stem>.md`, `.html`, `.json`.
pub const REPORT_STEM: &str = "report";
/// The agent config the pipeline hands to the accelerator model.
pub const ACCEL_AGENT: &str = "accel_agent.toml";
/// Where `fixar export` writes by default: `<run>/export/<target>`.
pub const EXPORT_DIR: &str = "export";

/// `<run>/seed_<n>`.
pub fn seed_dir(run: &Path, seed: u64) -> PathBuf {
    run.join(format!("seed_{seed}"))
}

/// Whether a directory name is a seed directory's (`seed_<n>`).
pub fn is_seed_dir_name(name: &str) -> bool {
    name.starts_with("seed_")
}

/// `<run>/qat`.
pub fn qat_dir(run: &Path) -> PathBuf {
    run.join(QAT_DIR)
}

/// `<run>/qat/chosen.json`.
pub fn chosen_path(run: &Path) -> PathBuf {
    qat_dir(run).join(QAT_CHOSEN)
}

/// `<qat>/<strategy>_w<width>`: one rung of one strategy.
pub fn rung_dir(qat: &Path, strategy: &str, width: u32) -> PathBuf {
    qat.join(format!("{strategy}_w{width}"))
}

/// Writes `bytes` to `path` so that a reader (or a resume after a kill at any moment)
/// sees the old file or the new one, never a part: a temporary file beside it
/// (`<name>.tmp`), fsync, rename over `path`, fsync of the directory. A stale temporary
/// file from a killed writer is simply replaced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        // A full disk: leave no partial temporary file taking the space.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path);
    Ok(())
}

/// Makes a rename into `path`'s directory durable (best effort: not every file system
/// lets a directory be opened and synced).
pub fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Reading or writing one of these files failed: the message names what was done and
/// the path, and the cause stays its source.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {}", .path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl FileError {
    /// `.map_err(FileError::io("reading", path))`.
    pub fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
        let path = path.to_path_buf();
        move |source| FileError::Io { what, path, source }
    }

    /// `.map_err(FileError::json(path))`.
    pub fn json(path: &Path) -> impl FnOnce(serde_json::Error) -> FileError {
        let path = path.to_path_buf();
        move |source| FileError::Json { path, source }
    }
}
