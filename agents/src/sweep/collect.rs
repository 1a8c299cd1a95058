//! A sweep's directories on disk: the grid record, trial directories, merging finished
//! trials from any number of directories (missing, partial and duplicated trials named),
//! and the per-group summary the tables and plots show.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{SweepError, SweepSpec, Trial, TrialResult};
use crate::layout::{self, FileError};

/// The expanded grid as written to `sweep.json`, so `collect` knows what to expect.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GridRecord {
    pub name: String,
    pub trials: Vec<Trial>,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SweepError {
    let f = FileError::io(what, path);
    move |source| SweepError::File(f(source))
}

fn json(path: &Path) -> impl FnOnce(serde_json::Error) -> SweepError {
    let f = FileError::json(path);
    move |source| SweepError::File(f(source))
}

/// Writes `sweep.json` (identical in every process of the same sweep).
pub fn write_grid(out: &Path, spec: &SweepSpec) -> Result<(), SweepError> {
    std::fs::create_dir_all(out).map_err(io("creating", out))?;
    let rec = GridRecord {
        name: spec.name.clone(),
        trials: spec.expand(),
    };
    write_json_atomic(&out.join(layout::SWEEP), &rec)
}

/// Writes `value` as pretty JSON atomically ([`layout::write_atomic`]), so a reader sees
/// the whole file or none, even after a kill.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), SweepError> {
    let text = serde_json::to_string_pretty(value).map_err(json(path))?;
    layout::write_atomic(path, text.as_bytes()).map_err(io("writing", path))
}

/// Directory of a trial inside a sweep output directory.
pub fn trial_dir(out: &Path, trial: &Trial) -> PathBuf {
    out.join("trials").join(&trial.id)
}

/// Trials found by `collect`, and what is wrong with the set.
#[derive(Debug, Default)]
pub struct Collected {
    pub grid: Option<GridRecord>,
    /// One result per finished trial, sorted by trial.
    pub results: Vec<TrialResult>,
    /// Ids in the grid with no directory anywhere.
    pub missing: Vec<String>,
    /// Ids with a directory but no `trial.json` anywhere (started, not finished).
    pub partial: Vec<String>,
    /// Ids finished in more than one directory (the first directory's result is kept).
    pub duplicated: Vec<String>,
}

impl Collected {
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.partial.is_empty() && self.duplicated.is_empty()
    }

    /// One line per kind of problem (`2 missing trial(s): a, b`), or `None` when the
    /// set is complete.
    pub fn problems(&self) -> Option<String> {
        let mut msg = String::new();
        for (what, ids) in [
            ("missing", &self.missing),
            ("partial (started, no trial.json)", &self.partial),
            ("duplicated", &self.duplicated),
        ] {
            if !ids.is_empty() {
                let _ = writeln!(msg, "{} {what} trial(s): {}", ids.len(), ids.join(", "));
            }
        }
        (!msg.is_empty()).then_some(msg)
    }
}

/// Reads `sweep.json` and every `trials/*/trial.json` under each directory (at least
/// one); every directory must hold the same grid.
pub fn collect(dirs: &[PathBuf]) -> Result<Collected, SweepError> {
    let mut c = Collected::default();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut partial = BTreeSet::new();
    for dir in dirs {
        let grid_path = dir.join(layout::SWEEP);
        let text =
            std::fs::read_to_string(&grid_path).map_err(|source| SweepError::NotASweepDir {
                dir: dir.clone(),
                grid: grid_path.clone(),
                source,
            })?;
        let grid: GridRecord = serde_json::from_str(&text).map_err(json(&grid_path))?;
        match &c.grid {
            None => c.grid = Some(grid),
            Some(g) if *g == grid => {}
            Some(g) => {
                return Err(SweepError::GridMismatch {
                    dir: dir.clone(),
                    name: grid.name,
                    first: g.name.clone(),
                })
            }
        }
        let Ok(entries) = std::fs::read_dir(dir.join("trials")) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        entries.sort();
        for path in entries.into_iter().filter(|p| p.is_dir()) {
            let id = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let file = path.join(layout::TRIAL);
            if !file.is_file() {
                partial.insert(id);
                continue;
            }
            let text = std::fs::read_to_string(&file).map_err(io("reading", &file))?;
            let r: TrialResult = serde_json::from_str(&text).map_err(json(&file))?;
            *seen.entry(r.trial.id.clone()).or_default() += 1;
            if seen[&r.trial.id] == 1 {
                c.results.push(r);
            }
        }
    }
    let grid = c.grid.as_ref().expect("at least one directory");
    let done: BTreeSet<String> = c.results.iter().map(|r| r.trial.id.clone()).collect();
    c.duplicated = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id)
        .collect();
    // A trial finished in one directory and left partial in another is not missing.
    c.partial = partial
        .into_iter()
        .filter(|id| !done.contains(id))
        .collect();
    c.missing = grid
        .trials
        .iter()
        .filter(|t| !done.contains(&t.id) && !c.partial.contains(&t.id))
        .map(|t| t.id.clone())
        .collect();
    c.results.sort_by(|a, b| a.trial.cmp(&b.trial));
    Ok(c)
}

/// The trials of one algo x env x precision, summarized across seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupSummary {
    pub algo: String,
    pub env: String,
    pub precision: String,
    /// Number of trials (seeds) in the group.
    pub seeds: usize,
    /// Final eval return across seeds: mean and sample std (0 for one seed).
    pub mean: f64,
    pub std: f64,
    /// The eval curve at the steps every seed evaluated at.
    pub curve: Vec<CurvePoint>,
}

/// Eval return across seeds at one env step: mean, min and max.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurvePoint {
    pub step: u64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

/// One summary per algo x env x precision, sorted by them; within a group, seeds count
/// in the order of `results`.
pub fn summarize(results: &[TrialResult]) -> Vec<GroupSummary> {
    let mut groups: BTreeMap<(&str, &str, &str), Vec<&TrialResult>> = BTreeMap::new();
    for r in results {
        let t = &r.trial;
        groups
            .entry((&t.algo, &t.env, &t.precision))
            .or_default()
            .push(r);
    }
    groups
        .into_iter()
        .map(|((algo, env, precision), rs)| {
            let (mean, std) = crate::stats::mean_sample_std(
                &rs.iter().map(|r| r.final_eval_return).collect::<Vec<_>>(),
            );
            let steps: BTreeSet<u64> = rs
                .iter()
                .flat_map(|r| r.eval_curve.iter().map(|p| p.0))
                .collect();
            let curve = steps
                .into_iter()
                .filter_map(|step| {
                    let vals: Vec<f64> = rs
                        .iter()
                        .filter_map(|r| r.eval_curve.iter().find(|p| p.0 == step).map(|p| p.1))
                        .collect();
                    let (lo, hi) = crate::stats::min_max(&vals);
                    (vals.len() == rs.len()).then(|| CurvePoint {
                        step,
                        mean: crate::stats::mean_sample_std(&vals).0,
                        min: lo,
                        max: hi,
                    })
                })
                .collect();
            GroupSummary {
                algo: algo.to_string(),
                env: env.to_string(),
                precision: precision.to_string(),
                seeds: rs.len(),
                mean,
                std,
                curve,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{scratch, spec};
    use super::*;

    fn result(t: &Trial, ret: f64, curve: Vec<(u64, f64)>) -> TrialResult {
        TrialResult {
            trial: t.clone(),
            final_eval_return: ret,
            env_steps: 100,
            eval_curve: curve,
            wall_s: 1.0,
        }
    }

    #[test]
    fn collect_reports_missing_partial_and_duplicated_trials() {
        let root = scratch("collect");
        let (a, b) = (root.join("a"), root.join("b"));
        let sp = spec();
        write_grid(&a, &sp).unwrap();
        write_grid(&b, &sp).unwrap();
        let trials = sp.expand();
        let finish = |dir: &Path, t: &Trial| {
            let d = trial_dir(dir, t);
            std::fs::create_dir_all(&d).unwrap();
            let r = result(t, -150.0, vec![(100, -150.0)]);
            write_json_atomic(&d.join(layout::TRIAL), &r).unwrap();
        };
        for t in &trials[..10] {
            finish(&a, t);
        }
        finish(&b, &trials[0]);
        std::fs::create_dir_all(trial_dir(&b, &trials[10])).unwrap();
        let c = collect(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(c.results.len(), 10);
        assert_eq!(c.duplicated, vec![trials[0].id.clone()]);
        assert_eq!(c.partial, vec![trials[10].id.clone()]);
        assert_eq!(c.missing, vec![trials[11].id.clone()]);
        assert!(!c.is_complete());
        let msg = c.problems().unwrap();
        assert!(
            msg.contains(&format!("1 missing trial(s): {}\n", trials[11].id)),
            "{msg}"
        );
        assert!(msg.contains("1 duplicated trial(s)"), "{msg}");

        // A partial trial finished elsewhere is neither partial nor missing.
        finish(&a, &trials[10]);
        finish(&a, &trials[11]);
        let c = collect(std::slice::from_ref(&a)).unwrap();
        assert!(c.is_complete() && c.problems().is_none());
        assert_eq!(c.results.len(), 12);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn collect_rejects_a_non_sweep_directory_and_a_different_grid() {
        let root = scratch("grids");
        let e = collect(&[root.join("nope")]).unwrap_err();
        assert!(
            matches!(e, SweepError::NotASweepDir { .. }) && e.is_usage(),
            "{e}"
        );
        let mut other = spec();
        other.name = "u".into();
        other.seeds = vec![7];
        write_grid(&root.join("a"), &spec()).unwrap();
        write_grid(&root.join("b"), &other).unwrap();
        let e = collect(&[root.join("a"), root.join("b")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("holds sweep `u` with a different grid than sweep `t`"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn summaries_average_over_seeds_at_common_eval_steps() {
        let trials = spec().expand();
        // ddpg float32, seeds 0..2; seed 2 misses the evaluation at step 200.
        let rs = vec![
            result(&trials[0], -100.0, vec![(100, -300.0), (200, -200.0)]),
            result(&trials[1], -200.0, vec![(100, -100.0), (200, -100.0)]),
            result(&trials[2], -300.0, vec![(100, -200.0)]),
            result(&trials[3], -50.0, vec![(100, -50.0)]),
        ];
        let s = summarize(&rs);
        assert_eq!(s.len(), 2);
        let g = &s[0];
        assert_eq!(
            (g.algo.as_str(), g.precision.as_str(), g.seeds),
            ("ddpg", "float32", 3)
        );
        assert_eq!((g.mean, g.std), (-200.0, 100.0));
        let point = CurvePoint {
            step: 100,
            mean: -200.0,
            min: -300.0,
            max: -100.0,
        };
        assert_eq!(g.curve, vec![point]);
        assert_eq!(
            (s[1].precision.as_str(), s[1].seeds, s[1].std),
            ("fxp32", 1, 0.0)
        );
    }
}
