//! `fixar export`: the quantized actor leaves the tool as code hardware people use.
//!
//! This command only finds the checkpoint a run means (its QAT choice, else its first
//! seed), loads it as an [`agents::deploy::DeployedActor`] and writes the target's files
//! with [`agents::deploy::export`]; the integer inference, the tanh tables, the test
//! vectors and the C99 / HLS C++ generators live in `agents::deploy`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agents::deploy::{DeployedActor, Target};
use agents::layout;
use anyhow::{bail, Context, Result};

use crate::failure::config_error;

/// `--target`: the command-line spelling of [`Target`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetArg {
    C,
    Hls,
    Hls4ml,
}

impl From<TargetArg> for Target {
    fn from(t: TargetArg) -> Target {
        match t {
            TargetArg::C => Target::C,
            TargetArg::Hls => Target::Hls,
            TargetArg::Hls4ml => Target::Hls4ml,
        }
    }
}

/// `fixar export` arguments.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A run directory (its QAT choice in `qat/chosen.json` when present, else its first
    /// seed), or one seed's directory holding `checkpoint.bin`.
    #[arg(long)]
    pub run: PathBuf,
    /// `c`: dependency-free C99; `hls`: HLS C++ with ap_fixed types; `hls4ml`: hls4ml's
    /// per-layer precision config, the weights and a script building the hls4ml model.
    #[arg(long, value_enum)]
    pub target: TargetArg,
    /// Output directory (default: `<run>/export/<target>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Number of test vectors.
    #[arg(long, default_value_t = 256)]
    pub vectors: usize,
    /// Multiplier-free code: every product as the shifts and adds of its weight's signed
    /// powers of two; every weight must have at most K (default: the `--pow2-terms` the
    /// QAT choice in `qat/chosen.json` was trained with, if any).
    #[arg(long, allow_negative_numbers = true)]
    pub pow2_terms: Option<i64>,
}

/// The `K` of `--pow2-terms`, else of the run's QAT choice; `--pow2-terms` out of
/// 1..=32 is a usage error.
fn pow2_terms(args: &ExportArgs) -> Result<Option<u32>> {
    if let Some(k) = args.pow2_terms {
        if !(1..=32).contains(&k) {
            return Err(config_error(format!(
                "--pow2-terms must be between 1 and 32 (the widest exported weight), got {k}"
            )));
        }
        return Ok(Some(k as u32));
    }
    if args.run.join(layout::CHECKPOINT).is_file() || !layout::chosen_path(&args.run).is_file() {
        return Ok(None);
    }
    Ok(agents::qat::Chosen::load(&args.run)?.pow2_terms)
}

/// The checkpoint directory `fixar export --run` means.
pub fn resolve_checkpoint_dir(run: &Path) -> Result<PathBuf> {
    if !run.is_dir() {
        return Err(config_error(format!(
            "--run {}: no such directory",
            run.display()
        )));
    }
    if run.join(layout::CHECKPOINT).is_file() {
        return Ok(run.to_path_buf());
    }
    let chosen = layout::chosen_path(run);
    if chosen.is_file() {
        let dir = agents::qat::Chosen::load(run)?.checkpoint;
        // As written (absolute, or relative to the working directory `fixar qat` ran
        // in) when it exists, else relative to the run directory.
        let dir = if dir.exists() { dir } else { run.join(dir) };
        let dir = if dir.is_file() {
            dir.parent().map(Path::to_path_buf).unwrap_or(dir)
        } else {
            dir
        };
        if dir.join(layout::CHECKPOINT).is_file() {
            tracing::info!(
                "exporting the QAT choice in {} ({})",
                chosen.display(),
                dir.display()
            );
            return Ok(dir);
        }
        bail!(
            "{} points at {}, which holds no checkpoint.bin",
            chosen.display(),
            dir.display()
        );
    }
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(run)
        .with_context(|| format!("listing {}", run.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(layout::CHECKPOINT).is_file())
        .collect();
    seeds.sort();
    seeds.into_iter().next().ok_or_else(|| {
        config_error(format!(
            "--run {}: no checkpoint.bin in it or in its seed directories, and no qat/chosen.json",
            run.display()
        ))
    })
}

/// `fixar export`.
pub fn run(args: &ExportArgs) -> Result<ExitCode> {
    let target = Target::from(args.target);
    // hls4ml builds its own multipliers from the precision config: shift-add code is C
    // and HLS only (a QAT choice's K is then not applied).
    let terms =
        match target {
            Target::Hls4ml if args.pow2_terms.is_some() => return Err(config_error(
                "--pow2-terms applies to --target c and hls (hls4ml builds its own multipliers)",
            )),
            Target::Hls4ml => None,
            _ => pow2_terms(args)?,
        };
    let dir = resolve_checkpoint_dir(&args.run)?;
    let mut actor = DeployedActor::load(&dir).context("loading the actor to export")?;
    if let Some(k) = terms {
        let widest = actor.layers.iter().map(|l| l.weight_fmt.width).max();
        if let Some(w) = widest.filter(|&w| k > w) {
            return Err(config_error(format!(
                "--pow2-terms must be between 1 and the actor's weight width ({w}), got {k}"
            )));
        }
        actor
            .check_pow2_terms(k)
            .map_err(|e| config_error(format!("--pow2-terms {k}: {} in {}", e, dir.display())))?;
        actor.shift_add = true;
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.run.join(layout::EXPORT_DIR).join(target.name()));
    let summary = agents::deploy::export(&actor, target, &out, args.vectors)
        .with_context(|| format!("exporting {} to {}", actor.origin, out.display()))?;
    for f in &summary.files {
        println!("wrote {}", f.display());
    }
    println!(
        "{} test vectors; formats per layer in {}",
        summary.vectors,
        out.join("README.md").display()
    );
    println!("{}", agents::deploy::ops_line(&actor));
    Ok(ExitCode::SUCCESS)
}
