//! `fixar fx verify PATH`: checks the fixed-point core against HLS reference vectors.
//! (`fixar bench quant` is in [`crate::bench::quant`].)

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use quant::vectors::{verify_path, VectorError};

use crate::failure::config_error;

/// `fixar fx ...`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum FxCommand {
    /// Check from_f64.csv / ops.csv vectors (HLS ap_fixed ground truth): prints the first
    /// mismatches and `N passed, M failed`; exits 1 on any mismatch.
    Verify(VerifyArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// A directory holding from_f64.csv and/or ops.csv, or one such file.
    pub path: PathBuf,
    /// How many mismatches to print.
    #[arg(long, default_value_t = 20)]
    pub show: usize,
}

/// Dispatches `fixar fx`.
pub fn run(cmd: &FxCommand) -> Result<ExitCode> {
    match cmd {
        FxCommand::Verify(args) => verify(args),
    }
}

/// `fixar fx verify`: exit 0 when every row reproduces, 1 on any mismatch, 2 when the
/// path holds no vectors.
pub fn verify(args: &VerifyArgs) -> Result<ExitCode> {
    let report = verify_path(&args.path, args.show).map_err(|e| match e {
        VectorError::Csv { .. } => anyhow!(e),
        other => config_error(other.to_string()),
    })?;
    for m in &report.mismatches {
        println!("mismatch: {m}");
    }
    if report.failed as usize > report.mismatches.len() {
        println!(
            "... {} more mismatches",
            report.failed as usize - report.mismatches.len()
        );
    }
    for f in &report.files {
        tracing::debug!("checked {}", f.display());
    }
    println!("{} passed, {} failed", report.passed, report.failed);
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn verify_reports_exit_codes_for_good_bad_and_missing_vectors() {
        let dir = std::env::temp_dir().join(format!("fixar-fx-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("from_f64.csv");
        std::fs::write(
            &good,
            "format,input,raw\n\"ap_fixed<8,4,AP_RND_CONV,AP_SAT>\",0.34375,6\n",
        )
        .unwrap();
        let args = |p: &Path| VerifyArgs {
            path: p.to_path_buf(),
            show: 5,
        };
        assert_eq!(verify(&args(&dir)).unwrap(), ExitCode::SUCCESS);
        let bad = dir.join("ops.csv");
        std::fs::write(
            &bad,
            "op,a_format,a_raw,b_format,b_raw,out_format,out_raw\n\
             add,\"ap_fixed<8,4>\",3,\"ap_fixed<8,4>\",4,\"ap_fixed<8,4>\",8\n",
        )
        .unwrap();
        assert_eq!(verify(&args(&bad)).unwrap(), ExitCode::FAILURE);
        let missing = verify(&args(&dir.join("nope"))).unwrap_err();
        assert_eq!(crate::failure::exit_code(&missing), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
