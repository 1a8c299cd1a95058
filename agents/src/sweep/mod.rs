//! Sweeps that outgrow one machine: a grid (algos x envs x precisions x seeds) expanded
//! into independent trials with stable ids, deterministic shards, each trial's training
//! config, and ([`collect`]) merging trial results from any number of directories and
//! summarizing them per algo/env/precision. `fixar sweep` and `fixar collect` run trials
//! and write the tables, the Slurm script and the plots.
//!
//! Layout of a sweep output directory:
//! ```text
//! <out>/sweep.json            the expanded grid (every process writes the same file)
//! <out>/trials/<id>/          one training run per trial (the `fixar train` layout)
//! <out>/trials/<id>/trial.json  written last, atomically: the trial is finished
//! <out>/results.csv, results.md, curves_<algo>_<env>.png/.svg   written by collect
//! ```
//! A trial's id is derived from its parameters only (`td3-Pendulum-v1-fxp32-s0`), so the
//! same grid gives the same ids in every process and on every machine; shard `i/n` takes
//! the trials whose position in the id-sorted grid is `i` modulo `n`.

mod collect;

pub use collect::{
    collect, summarize, trial_dir, write_grid, write_json_atomic, Collected, CurvePoint,
    GridRecord, GroupSummary,
};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;

/// Why a sweep file, a shard, a trial's config or a sweep directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("cannot read sweep file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sweep file {}: {source}", .path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("sweep file {}: key `{key}` is empty", .path.display())]
    EmptyKey { path: PathBuf, key: &'static str },
    /// `what` is "a value" or "a seed".
    #[error("sweep file {}: key `{key}` lists {what} twice", .path.display())]
    Repeated {
        path: PathBuf,
        key: &'static str,
        what: &'static str,
    },
    /// A value that would make a trial id that is not one directory name.
    #[error(
        "sweep file {}: key `{key}`: value {value:?} cannot be part of a trial directory's \
         name (no `/`, `\\`, `..`, control characters, nor an empty value)",
        .path.display()
    )]
    BadName {
        path: PathBuf,
        key: &'static str,
        value: String,
    },
    #[error("sweep file {}: key `base`: training config {} not found", .path.display(), .base.display())]
    BaseNotFound { path: PathBuf, base: PathBuf },
    /// A shard that is not `i/n` with `i < n`; the message names the flag and the value.
    #[error("--shard `{spec}`: {problem}")]
    Shard { spec: String, problem: String },
    #[error("cannot read {}: {source}", .path.display())]
    ReadBase {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    ParseBase {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("sweep {} (base {}), trial {trial}: {source}", .spec.display(), .base.display())]
    TrialConfig {
        spec: PathBuf,
        base: PathBuf,
        trial: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("sweep {}, trial {trial}: {source}", .spec.display())]
    InvalidTrial {
        spec: PathBuf,
        trial: String,
        #[source]
        source: crate::config::ConfigError,
    },
    #[error("{}: not a sweep output directory ({}: {source})", .dir.display(), .grid.display())]
    NotASweepDir {
        dir: PathBuf,
        grid: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} holds sweep `{name}` with a different grid than sweep `{first}` collected so far", .dir.display())]
    GridMismatch {
        dir: PathBuf,
        name: String,
        first: String,
    },
    #[error(transparent)]
    File(#[from] crate::layout::FileError),
}

impl SweepError {
    /// Whether the user's input is wrong (a sweep file, a shard, a trial's config, a
    /// directory that is not a sweep's) rather than something failing at run time.
    pub fn is_usage(&self) -> bool {
        !matches!(self, SweepError::File(_))
    }
}

/// A sweep file (`SWEEP.toml`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Name of the sweep, used in titles and the default output directory.
    pub name: String,
    /// The training config every trial starts from (relative to the sweep file).
    pub base: PathBuf,
    pub algos: Vec<String>,
    pub envs: Vec<String>,
    pub precisions: Vec<String>,
    pub seeds: Vec<u64>,
    /// `key = value` overrides applied to every trial (as `fixar train --set`).
    #[serde(default)]
    pub set: BTreeMap<String, toml::Value>,
    /// Output directory (relative to the working directory); default `runs-out/sweeps/<name>`.
    #[serde(default)]
    pub out: Option<PathBuf>,
}

/// One point of the grid.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Trial {
    pub id: String,
    pub algo: String,
    pub env: String,
    pub precision: String,
    pub seed: u64,
}

/// What a finished trial reports (`trial.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrialResult {
    pub trial: Trial,
    pub final_eval_return: f64,
    pub env_steps: u64,
    /// (env step, eval return) at each evaluation.
    pub eval_curve: Vec<(u64, f64)>,
    /// Wall time of the trial; kept out of results.csv so results compare across machines.
    pub wall_s: f64,
}

/// Which slice of the grid a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = SweepError;
    fn from_str(s: &str) -> Result<Self, SweepError> {
        let bad = |problem: String| SweepError::Shard {
            spec: s.to_string(),
            problem,
        };
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| bad("expected i/n, e.g. 0/4".into()))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| bad(format!("`{i}` is not a shard index")))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| bad(format!("`{n}` is not a shard count")))?;
        if count == 0 || index >= count {
            return Err(bad(format!(
                "the index must be below the count (0/{count} .. {}/{count})",
                count.saturating_sub(1)
            )));
        }
        Ok(Shard { index, count })
    }
}

impl SweepSpec {
    /// Reads and checks a sweep file; returns it with the path of its base training
    /// config. Errors name the file and the key.
    pub fn load(path: &Path) -> Result<(Self, PathBuf), SweepError> {
        let text = std::fs::read_to_string(path).map_err(|source| SweepError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let spec: SweepSpec = toml::from_str(&text).map_err(|source| SweepError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let p = || path.to_path_buf();
        for (key, list) in [
            ("algos", &spec.algos),
            ("envs", &spec.envs),
            ("precisions", &spec.precisions),
        ] {
            if list.is_empty() {
                return Err(SweepError::EmptyKey { path: p(), key });
            }
            // Trial ids join these values into a directory name inside the sweep's.
            let bad = |v: &&String| {
                v.is_empty()
                    || v.contains(['/', '\\'])
                    || v.contains("..")
                    || v.chars().any(char::is_control)
            };
            if let Some(v) = list.iter().find(bad) {
                return Err(SweepError::BadName {
                    path: p(),
                    key,
                    value: v.clone(),
                });
            }
            if list.iter().collect::<BTreeSet<_>>().len() != list.len() {
                let what = "a value";
                return Err(SweepError::Repeated {
                    path: p(),
                    key,
                    what,
                });
            }
        }
        if spec.seeds.is_empty() {
            return Err(SweepError::EmptyKey {
                path: p(),
                key: "seeds",
            });
        }
        if spec.seeds.iter().collect::<BTreeSet<_>>().len() != spec.seeds.len() {
            let (key, what) = ("seeds", "a seed");
            return Err(SweepError::Repeated {
                path: p(),
                key,
                what,
            });
        }
        let base = path.parent().unwrap_or(Path::new(".")).join(&spec.base);
        if !base.is_file() {
            return Err(SweepError::BaseNotFound { path: p(), base });
        }
        Ok((spec, base))
    }

    pub fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs-out/sweeps").join(&self.name))
    }

    /// Every trial of the grid, sorted by id.
    pub fn expand(&self) -> Vec<Trial> {
        let mut trials = Vec::new();
        for algo in &self.algos {
            for env in &self.envs {
                for precision in &self.precisions {
                    for &seed in &self.seeds {
                        trials.push(Trial {
                            id: format!("{algo}-{env}-{precision}-s{seed}"),
                            algo: algo.clone(),
                            env: env.clone(),
                            precision: precision.clone(),
                            seed,
                        });
                    }
                }
            }
        }
        trials.sort();
        trials
    }

    /// The training config of one trial: the base config, the sweep's `set` overrides,
    /// then the trial's algo, env and precision. Errors name the sweep file and the key.
    pub fn trial_config(
        &self,
        spec_path: &Path,
        base_path: &Path,
        trial: &Trial,
    ) -> Result<TrainConfig, SweepError> {
        let text = std::fs::read_to_string(base_path).map_err(|source| SweepError::ReadBase {
            path: base_path.to_path_buf(),
            source,
        })?;
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|source| SweepError::ParseBase {
                path: base_path.to_path_buf(),
                source,
            })?;
        for (k, v) in &self.set {
            table.insert(k.clone(), v.clone());
        }
        table.insert("algo".into(), toml::Value::String(trial.algo.clone()));
        table.insert("env_id".into(), toml::Value::String(trial.env.clone()));
        table.insert(
            "precision".into(),
            toml::Value::String(trial.precision.clone()),
        );
        let cfg: TrainConfig =
            table
                .try_into()
                .map_err(|source: toml::de::Error| SweepError::TrialConfig {
                    spec: spec_path.to_path_buf(),
                    base: base_path.to_path_buf(),
                    trial: trial.id.clone(),
                    source: Box::new(source),
                })?;
        cfg.validate().map_err(|source| SweepError::InvalidTrial {
            spec: spec_path.to_path_buf(),
            trial: trial.id.clone(),
            source,
        })?;
        Ok(cfg)
    }
}

/// The trials of one shard: positions `index`, `index + count`, ... of the sorted grid.
pub fn shard(trials: &[Trial], s: Shard) -> Vec<Trial> {
    trials
        .iter()
        .skip(s.index)
        .step_by(s.count)
        .cloned()
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec() -> SweepSpec {
        SweepSpec {
            name: "t".into(),
            base: "base.toml".into(),
            algos: vec!["td3".into(), "ddpg".into()],
            envs: vec!["Pendulum-v1".into()],
            precisions: vec!["float32".into(), "fxp32".into()],
            seeds: vec![0, 1, 2],
            set: BTreeMap::new(),
            out: None,
        }
    }

    pub(crate) fn scratch(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("fixar-sweep-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        root
    }

    #[test]
    fn grid_ids_are_stable_unique_and_sorted() {
        let trials = spec().expand();
        assert_eq!(trials.len(), 12);
        let ids: BTreeSet<_> = trials.iter().map(|t| t.id.clone()).collect();
        assert_eq!(ids.len(), 12);
        assert!(ids.contains("td3-Pendulum-v1-fxp32-s2"));
        assert_eq!(trials[0].id, "ddpg-Pendulum-v1-float32-s0");
        let mut reordered = spec();
        reordered.algos.reverse();
        reordered.seeds.reverse();
        assert_eq!(
            reordered.expand(),
            trials,
            "ids and order do not depend on listing order"
        );
    }

    #[test]
    fn shards_partition_the_grid() {
        let trials = spec().expand();
        for n in 1..=5 {
            let mut all: Vec<Trial> = (0..n)
                .flat_map(|i| shard(&trials, Shard { index: i, count: n }))
                .collect();
            all.sort();
            assert_eq!(all, trials, "{n} shards");
        }
        let first = shard(&trials, Shard { index: 1, count: 4 });
        assert_eq!(
            first,
            vec![trials[1].clone(), trials[5].clone(), trials[9].clone()]
        );
    }

    #[test]
    fn shard_spec_parses_and_rejects_bad_values() {
        assert_eq!(
            "1/4".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 4 }
        );
        for bad in ["4/4", "1", "a/2", "0/0", "1/b"] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(matches!(e, SweepError::Shard { .. }), "{bad}");
            assert!(e.is_usage());
            assert!(
                e.to_string().starts_with(&format!("--shard `{bad}`: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn sweep_files_are_checked_key_by_key() {
        let dir = scratch("load");
        std::fs::write(dir.join("base.toml"), "total_timesteps = 300\n").unwrap();
        let good = "name = \"t\"\nbase = \"base.toml\"\nalgos = [\"td3\"]\nenvs = [\"Pendulum-v1\"]\nprecisions = [\"fxp32\"]\nseeds = [0, 1]\n";
        let path = dir.join("sweep.toml");
        std::fs::write(&path, good).unwrap();
        let (spec, base) = SweepSpec::load(&path).unwrap();
        assert_eq!(base, dir.join("base.toml"));
        assert_eq!(spec.out_dir(), PathBuf::from("runs-out/sweeps/t"));
        let cfg = spec.trial_config(&path, &base, &spec.expand()[1]).unwrap();
        assert_eq!(cfg.total_timesteps, 300);
        assert_eq!(cfg.env_id, "Pendulum-v1");
        for (from, to, msg) in [
            ("algos = [\"td3\"]", "algos = []", "key `algos` is empty"),
            (
                "seeds = [0, 1]",
                "seeds = [1, 1]",
                "key `seeds` lists a seed twice",
            ),
            (
                "envs = [\"Pendulum-v1\"]",
                "envs = [\"a\", \"a\"]",
                "key `envs` lists a value twice",
            ),
            ("base.toml", "nope.toml", "key `base`: training config"),
            ("seeds", "seedz", "unknown field"),
        ] {
            std::fs::write(&path, good.replace(from, to)).unwrap();
            let e = SweepSpec::load(&path).unwrap_err();
            assert!(e.is_usage() && e.to_string().contains(msg), "{e}");
        }
        std::fs::write(&path, good.replace("fxp32", "fxp7")).unwrap();
        let (spec, base) = SweepSpec::load(&path).unwrap();
        let e = spec
            .trial_config(&path, &base, &spec.expand()[0])
            .unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("fxp7"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
