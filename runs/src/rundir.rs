//! Run directories of `fixar train`: what is in one, refusing to overwrite a run, and
//! finding a run again for `--resume`.
//!
//! ```text
//! <run>/config.toml        the resolved config (file + --set), what --resume reads
//! <run>/run.json           seeds, config source, command line
//! <run>/seed_<n>/          metrics.csv quant.csv eval.csv episodes.csv checkpoint.bin
//! <run>/learning_curve.png/.svg
//! <run>/summary.json       written when every seed has finished
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::failure::config_error;

/// `run.json`: how the run was started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub seeds: Vec<u64>,
    pub config_source: Option<String>,
    pub sets: Vec<String>,
    /// CRC-32 of `config.toml` as the run wrote it, so `--resume` notices an edit (runs
    /// from before this field have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_crc32: Option<u32>,
    /// The run directory whose seeds' checkpoints this run branched from
    /// (`fixar train --branch-from`; see `agents::trainer::Trainer::branch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branched_from: Option<String>,
    /// The CPU the run was created on ([`cpu_model`]). libtorch's MKL picks its GEMM
    /// kernels by CPU, and their sums round differently: float32 runs, and FXP32's fast
    /// GEMM once updates start, reproduce bit for bit only on a CPU that gets the same
    /// kernels; exact paths (integer evaluation, the exact GEMM) reproduce on any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
}

/// This machine's CPU model (`model name` in `/proc/cpuinfo`), where the OS says.
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

pub use agents::layout::{seed_dir, CONFIG, CURVE, RUN_INFO, SUMMARY};

/// Whether `dir` already holds (part of) a run.
pub fn holds_run(dir: &Path) -> bool {
    [CONFIG, RUN_INFO, SUMMARY]
        .iter()
        .any(|f| dir.join(f).exists())
        || std::fs::read_dir(dir).is_ok_and(|mut it| {
            it.any(|e| {
                e.is_ok_and(|e| agents::layout::is_seed_dir_name(&e.file_name().to_string_lossy()))
            })
        })
}

/// Checks that `dir` may receive a new run: absent, empty of runs, or `force` (then the
/// old run's files, and only those, are removed). Creates nothing.
pub fn check_fresh(dir: &Path, force: bool) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(config_error(format!(
            "--out {}: exists and is not a directory",
            dir.display()
        )));
    }
    if holds_run(dir) && !force {
        return Err(config_error(format!(
            "--out {}: already holds a run; use --resume {0} to continue it or --force to replace it",
            dir.display()
        )));
    }
    Ok(())
}

/// Removes a previous run's files from `dir` (for `--force`): the known files and the
/// `seed_*` directories; anything else is left alone.
pub fn clear_run(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for f in [CONFIG, RUN_INFO, SUMMARY] {
        let p = dir.join(f);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    for ext in ["png", "svg"] {
        let _ = std::fs::remove_file(dir.join(format!("{CURVE}.{ext}")));
    }
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir()
            && p.file_name()
                .is_some_and(|n| agents::layout::is_seed_dir_name(&n.to_string_lossy()))
        {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}

/// Creates the run directory with its resolved config and run info (recording the
/// config's CRC-32 in `info`). Both are written atomically, `run.json` last: a kill at
/// any moment leaves a complete run or one `--resume` refuses by name.
pub fn create(dir: &Path, resolved_config: &str, info: &mut RunInfo) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    info.config_crc32 = Some(crc32fast::hash(resolved_config.as_bytes()));
    info.cpu = cpu_model();
    for (name, text) in [
        (CONFIG, resolved_config.to_string()),
        (RUN_INFO, serde_json::to_string_pretty(info)?),
    ] {
        let p = dir.join(name);
        agents::layout::write_atomic(&p, text.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// The resolved config text and run info of an existing run (for `--resume`): a
/// missing or unreadable file, or a `config.toml` edited since the run wrote it, is a
/// config error naming the file.
pub fn open(dir: &Path) -> Result<(String, RunInfo)> {
    let bad = |path: &Path, e: &dyn std::fmt::Display| {
        config_error(format!(
            "--resume {}: {}: {e}",
            dir.display(),
            path.display()
        ))
    };
    let cfg = dir.join(CONFIG);
    let text = std::fs::read_to_string(&cfg).map_err(|e| {
        config_error(format!(
            "--resume {}: no run here ({}: {e})",
            dir.display(),
            cfg.display()
        ))
    })?;
    let info_path = dir.join(RUN_INFO);
    let info_text = std::fs::read_to_string(&info_path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            "; the run was interrupted while being created: start it again with --force"
        } else {
            ""
        };
        bad(&info_path, &format!("{e}{hint}"))
    })?;
    let info: RunInfo = serde_json::from_str(&info_text).map_err(|e| bad(&info_path, &e))?;
    let crc = crc32fast::hash(text.as_bytes());
    if let Some(want) = info.config_crc32.filter(|&w| w != crc) {
        return Err(bad(
            &cfg,
            &format!(
                "edited after the run started (CRC-32 {crc:08x}, {RUN_INFO} recorded \
                 {want:08x}); a run continues with the config it started with: put the \
                 original back (every seed's checkpoint.bin holds it) or start a new run"
            ),
        ));
    }
    warn_if_other_cpu("--resume", dir, &info);
    Ok((text, info))
}

/// Warns when the run in `dir` (its `info`) was created on another CPU than this one:
/// float32 and fast-GEMM steps continued here may round differently from a run that
/// stayed there (exact paths are unaffected). `how` names the flag (`--resume`,
/// `--branch-from`).
pub fn warn_if_other_cpu(how: &str, dir: &Path, info: &RunInfo) {
    if let (Some(then), Some(now)) = (&info.cpu, cpu_model()) {
        if *then != now {
            tracing::warn!(
                "{how} {}: the run started on \"{then}\", this is \"{now}\": float32 and \
                 fast-GEMM steps from here on may round differently from a run that stays \
                 on the first CPU (exact paths are unaffected)",
                dir.display()
            );
        }
    }
}

/// Writes a result file atomically (temp file, fsync, rename: `agents::layout::write_atomic`),
/// so a kill or a full disk leaves the previous file or none, never half of one.
pub fn write_atomic(path: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
    agents::layout::write_atomic(path.as_ref(), bytes.as_ref())
}
