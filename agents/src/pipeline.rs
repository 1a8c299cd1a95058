//! A pipeline file (`fixar pipeline`): train at `fxp32`, walk the QAT ladder from that
//! run, estimate the accelerator at the chosen width. This module is the file's schema
//! and the one decision between the stages, the accelerator datapath a chosen width
//! runs on; the command runs the stages and writes the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::precision::Preset;

/// Why a pipeline file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot read pipeline file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pipeline file {}: {source}", .path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

/// A pipeline file (TOML).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Name used in titles.
    pub name: String,
    /// The training config (relative to this file); its `precision` is set to `fxp32`.
    pub train: PathBuf,
    /// Seeds, as `fixar train --seeds` takes them (`0..3`, `0,4`).
    #[serde(default = "default_seeds")]
    pub seeds: String,
    /// Output directory (relative to the working directory).
    #[serde(default)]
    pub out: Option<PathBuf>,
    /// `key = value` overrides on the training config (as `fixar train --set`).
    #[serde(default)]
    pub set: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub qat: QatStage,
    #[serde(default)]
    pub accel: AccelStage,
}

fn default_seeds() -> String {
    "0..2".into()
}

/// The QAT stage: the flags of `fixar qat`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QatStage {
    pub widths: String,
    pub strategy: String,
    pub tolerance: f64,
    /// Retraining steps per rung.
    pub steps: u64,
    /// Profiling steps on the parent.
    pub profile_steps: u64,
    /// Eval episodes per seed (default: the training config's).
    pub episodes: Option<u32>,
    /// Any other `fixar qat` flags, e.g. `["--headroom", "1"]`.
    pub extra_args: Vec<String>,
}

impl Default for QatStage {
    fn default() -> Self {
        QatStage {
            widths: "32,16,12,10,8,6".into(),
            strategy: "range,ptq".into(),
            tolerance: 0.05,
            steps: 2000,
            profile_steps: 500,
            episodes: None,
            extra_args: Vec::new(),
        }
    }
}

/// The accelerator stage.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccelStage {
    /// Hardware preset (`fixar accel --hw`).
    pub hw: String,
    /// Seconds of the timed CPU run of the same agent (0 = skip).
    pub cpu_seconds: f64,
    /// CPU power for the efficiency ratio (default: the accel command's).
    pub cpu_watts: Option<f64>,
}

impl Default for AccelStage {
    fn default() -> Self {
        AccelStage {
            hw: "fixar-u50".into(),
            cpu_seconds: 3.0,
            cpu_watts: None,
        }
    }
}

impl PipelineSpec {
    pub fn load(path: &Path) -> Result<Self, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| PipelineError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The training config's path: `train` relative to the pipeline file at `spec_path`.
    pub fn train_path(&self, spec_path: &Path) -> PathBuf {
        spec_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&self.train)
    }

    /// `out`, else `runs-out/pipeline/<name>`.
    pub fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs-out/pipeline").join(&self.name))
    }
}

/// The accelerator datapath a QAT-chosen width runs on: FIXAR's PEs do one FXP32 or two
/// FXP16 MACs per cycle, so widths up to 16 bits use FXP16; no chosen width keeps FXP32.
pub fn accel_datapath(chosen_width: Option<u32>) -> Preset {
    if chosen_width.is_some_and(|w| w <= 16) {
        Preset::Fxp16
    } else {
        Preset::Fxp32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_file_takes_the_stage_defaults() {
        let spec: PipelineSpec = toml::from_str("name = \"p\"\ntrain = \"td3.toml\"\n").unwrap();
        assert_eq!(spec.seeds, "0..2");
        assert_eq!(spec.qat.widths, "32,16,12,10,8,6");
        assert_eq!(spec.accel.hw, "fixar-u50");
        assert_eq!(spec.out_dir(), PathBuf::from("runs-out/pipeline/p"));
        let cfg = spec.train_path(Path::new("runs/configs/p.toml"));
        assert_eq!(cfg, PathBuf::from("runs/configs/td3.toml"));
        let bad =
            toml::from_str::<PipelineSpec>("name = \"p\"\ntrain = \"t\"\n[qat]\nwidth = \"8\"\n");
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("unknown field `width`"));
    }

    #[test]
    fn widths_up_to_16_bits_run_on_the_fxp16_datapath() {
        assert_eq!(accel_datapath(Some(8)), Preset::Fxp16);
        assert_eq!(accel_datapath(Some(16)), Preset::Fxp16);
        assert_eq!(accel_datapath(Some(24)), Preset::Fxp32);
        assert_eq!(accel_datapath(None), Preset::Fxp32);
    }
}
