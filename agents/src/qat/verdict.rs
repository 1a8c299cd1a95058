//! The verdict of a ladder: each rung's outcome per seed, the tolerance test against the
//! reference, the chosen rung, and `chosen.json` (what `fixar export` loads).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::derive::{table_spec, FormatTable};
use super::ladder::Rung;
use super::QatError;
use crate::layout::{self, FileError};
use crate::pow2::MultiplierCount;
use crate::precision::ClassSpec;
pub use crate::stats::mean_std;

/// How a rung's network got its narrow formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Post-training quantization: the parent's weights at the rung's formats, no
    /// retraining.
    Ptq,
    /// Range-based QAT down the ladder: each rung re-derives formats from ranges and
    /// retrains from the previous rung's checkpoint.
    Range,
    /// Quantization delay: each rung branches from the parent (trained at 32 bits until
    /// its last step D), takes the formats derived at D, and trains on.
    Delay,
    /// Range-based formats at the first rung whose binary points are then trained with
    /// the weights (`agents::learned_point`), retrained down the ladder like `range`.
    Learned,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::Ptq,
        Strategy::Range,
        Strategy::Delay,
        Strategy::Learned,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Ptq => "ptq",
            Strategy::Range => "range",
            Strategy::Delay => "delay",
            Strategy::Learned => "learned",
        }
    }

    /// Whether the strategy retrains (QAT) or only quantizes (PTQ).
    pub fn retrains(self) -> bool {
        self != Strategy::Ptq
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One seed at one rung.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedOutcome {
    pub seed: u64,
    /// Mean return over the evaluation episodes; `None` when the seed failed.
    pub eval_mean: Option<f64>,
    /// Why the seed failed (diverged, ...).
    pub error: Option<String>,
    /// The checkpoint holding this rung's network for this seed.
    pub checkpoint: Option<PathBuf>,
    /// Every layer's formats at this rung for this seed (ranges differ per seed).
    #[serde(skip)]
    pub formats: FormatTable,
    /// The actor's multiplier count when its weights are multiplier-free.
    pub multipliers: Option<MultiplierCount>,
}

/// One strategy at one rung, over all seeds.
#[derive(Clone, Debug)]
pub struct RungResult {
    pub strategy: Strategy,
    pub rung: Rung,
    pub seeds: Vec<SeedOutcome>,
}

impl RungResult {
    /// A result from per-seed returns (`None` = a seed that diverged), seeds numbered
    /// from 0, each with a checkpoint `ck<seed>` and no formats: how tests and tools
    /// state an outcome without running a ladder.
    pub fn from_returns(strategy: Strategy, rung: Rung, returns: &[Option<f64>]) -> RungResult {
        RungResult {
            strategy,
            rung,
            seeds: returns
                .iter()
                .enumerate()
                .map(|(i, r)| SeedOutcome {
                    seed: i as u64,
                    eval_mean: *r,
                    error: r
                        .is_none()
                        .then(|| "diverged: NaN in actor.fc1 preact".into()),
                    checkpoint: Some(PathBuf::from(format!("ck{i}"))),
                    formats: FormatTable::new(),
                    multipliers: None,
                })
                .collect(),
        }
    }

    /// The final eval returns of the seeds that finished.
    pub fn returns(&self) -> Vec<f64> {
        self.seeds.iter().filter_map(|s| s.eval_mean).collect()
    }

    /// Mean and std over seeds of the per-seed eval means (agents.md's reporting rule).
    pub fn mean_std(&self) -> Option<(f64, f64)> {
        mean_std(&self.returns())
    }

    /// The IQM over seeds of the per-seed eval means with its 95% stratified-bootstrap
    /// interval (rliable's statistic); `None` when no seed finished.
    pub fn iqm_ci(&self) -> Option<crate::stats::Estimate> {
        crate::stats::iqm_ci(&self.returns())
    }

    /// P(this rung's return > the reference's) over seeds, rliable's probability of
    /// improvement with its 95% bootstrap interval; `None` without returns on either side.
    pub fn improvement_over(&self, reference: &Reference) -> Option<crate::stats::Estimate> {
        crate::stats::probability_of_improvement_ci(
            &[self.returns()],
            std::slice::from_ref(&reference.returns),
        )
    }

    /// `None` when every seed finished; otherwise the reasons, seed by seed.
    pub fn failure(&self) -> Option<String> {
        let reasons: Vec<String> = self
            .seeds
            .iter()
            .filter_map(|s| {
                s.error
                    .as_ref()
                    .map(|e| format!("seed {}: {}", s.seed, e.replace(['\n', ','], " ")))
            })
            .collect();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// `ok` or `failed: <reasons>`.
    pub fn status(&self) -> String {
        match self.failure() {
            None => "ok".into(),
            Some(r) => format!("failed: {r}"),
        }
    }

    /// The seed with the highest eval return (the one whose actor gets exported).
    pub fn best_seed(&self) -> Option<&SeedOutcome> {
        self.seeds
            .iter()
            .filter(|s| s.eval_mean.is_some_and(f64::is_finite) && s.checkpoint.is_some())
            .max_by(|a, b| a.eval_mean.unwrap().total_cmp(&b.eval_mean.unwrap()))
    }
}

/// A reference return band: the parent's precision, and float32.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reference {
    pub label: String,
    pub mean: f64,
    pub std: f64,
    pub seeds: usize,
    /// The per-seed returns behind `mean` (for the IQM and the probability of
    /// improvement); empty in files written before they were recorded.
    #[serde(default)]
    pub returns: Vec<f64>,
}

impl Reference {
    /// The reference's IQM with its 95% bootstrap interval; `None` without returns.
    pub fn iqm_ci(&self) -> Option<crate::stats::Estimate> {
        crate::stats::iqm_ci(&self.returns)
    }
}

/// What "within tolerance" is measured against.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scale")]
pub enum Scale {
    /// `ref - mean <= tol * |ref|`: losing at most a fraction of the reference return's
    /// magnitude. Returns are rewards summed, so "5% worse" is 5% of |ref| below ref
    /// whatever its sign: for Pendulum (ref near -150) a rung holds down to about -157.5.
    /// Doing better than the reference always holds.
    Reference,
    /// `ref - mean <= tol * (ref - random)`: losing at most a fraction of what training
    /// gained over a uniformly random policy; doing better than the reference always
    /// passes. For Pendulum (random about -1200) 5% is about 50.
    Random { random_mean: f64 },
}

/// The tolerance test of a rung against the reference.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Tolerance {
    pub fraction: f64,
    #[serde(flatten)]
    pub scale: Scale,
}

impl Tolerance {
    /// The allowed shortfall below the reference.
    pub fn allowance(&self, reference: f64) -> f64 {
        match self.scale {
            Scale::Reference => self.fraction * reference.abs(),
            Scale::Random { random_mean } => self.fraction * (reference - random_mean).abs(),
        }
    }

    pub fn holds(&self, reference: f64, mean: f64) -> bool {
        reference - mean <= self.allowance(reference)
    }

    /// The gap as a fraction of the scale (signed: negative = below the reference).
    pub fn relative_gap(&self, reference: f64, mean: f64) -> f64 {
        let scale = self.allowance(reference) / self.fraction;
        (mean - reference) / scale
    }

    /// One line that says how to read the tolerance.
    pub fn describe(&self, reference: f64) -> String {
        let a = self.allowance(reference);
        match self.scale {
            Scale::Reference => format!(
                "ref − mean ≤ {:.1}% × |ref| = {a:.2} (ref = {reference:.2}; better than \
                 the reference always holds)",
                self.fraction * 100.0
            ),
            Scale::Random { random_mean } => format!(
                "ref − mean ≤ {:.1}% × (ref − random) = {a:.2} (ref = {reference:.2}, random \
                 policy = {random_mean:.2})",
                self.fraction * 100.0
            ),
        }
    }
}

/// The narrowest rung within tolerance (ties: the higher mean).
pub fn choose<'a>(
    results: &'a [RungResult],
    reference: f64,
    tol: &Tolerance,
) -> Option<&'a RungResult> {
    results
        .iter()
        .filter(|r| r.failure().is_none())
        .filter(|r| r.mean_std().is_some_and(|(m, _)| tol.holds(reference, m)))
        .min_by(|a, b| {
            a.rung.width.cmp(&b.rung.width).then_with(|| {
                let (ma, mb) = (a.mean_std().unwrap().0, b.mean_std().unwrap().0);
                mb.total_cmp(&ma)
            })
        })
}

/// The narrowest width within tolerance for one strategy.
pub fn narrowest_within(
    results: &[RungResult],
    strategy: Strategy,
    reference: f64,
    tol: &Tolerance,
) -> Option<u32> {
    let mine: Vec<RungResult> = results
        .iter()
        .filter(|r| r.strategy == strategy)
        .cloned()
        .collect();
    choose(&mine, reference, tol).map(|r| r.rung.width)
}

/// Where PTQ falls off while QAT still holds, said plainly (or that it does not happen).
pub fn ptq_verdict(results: &[RungResult], reference: f64, tol: &Tolerance) -> Option<String> {
    let ptq = results.iter().any(|r| r.strategy == Strategy::Ptq);
    let qat: Vec<Strategy> = Strategy::ALL
        .into_iter()
        .filter(|s| s.retrains() && results.iter().any(|r| r.strategy == *s))
        .collect();
    if !ptq || qat.is_empty() {
        return None;
    }
    let holds = |st: Strategy, w: u32| {
        results.iter().any(|r| {
            r.strategy == st
                && r.rung.width == w
                && r.failure().is_none()
                && r.mean_std().is_some_and(|(m, _)| tol.holds(reference, m))
        })
    };
    let mut widths: Vec<u32> = results
        .iter()
        .filter(|r| r.strategy == Strategy::Ptq)
        .map(|r| r.rung.width)
        .collect();
    widths.sort_unstable_by(|a, b| b.cmp(a));
    let falloff = widths.iter().copied().find(|&w| !holds(Strategy::Ptq, w));
    Some(match falloff {
        None => "PTQ holds at every width of the ladder: retraining buys nothing here.".into(),
        Some(w) => {
            let holding: Vec<&str> = qat
                .iter()
                .filter(|&&st| holds(st, w))
                .map(|st| st.name())
                .collect();
            if holding.is_empty() {
                format!(
                    "PTQ falls off at {w} bits, and no QAT strategy holds there either: at this \
                     budget retraining does not recover what PTQ loses."
                )
            } else {
                format!(
                    "PTQ falls off at {w} bits while QAT still holds there ({}).",
                    holding.join(", ")
                )
            }
        }
    })
}

/// `<run>/qat/chosen.json`: where `fixar export` finds the quantized actor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Chosen {
    pub strategy: Strategy,
    pub width: u32,
    pub rung: Rung,
    pub mean_return: f64,
    pub std_return: f64,
    pub reference: Reference,
    pub tolerance: Tolerance,
    /// The best seed's checkpoint at the chosen rung, relative to the run directory
    /// (`qat/range_w16/seed_0/checkpoint.bin`): load it as a run checkpoint; its formats
    /// are the rung's.
    pub checkpoint: PathBuf,
    pub seed: u64,
    pub seed_eval_mean: f64,
    /// The actor's layers (`actor.fc1`, ...) and their formats at the chosen rung, for
    /// that seed: layer -> class -> HLS spelling.
    pub actor_formats: BTreeMap<String, ClassSpec>,
    /// Every seed's checkpoint at the chosen rung (relative to the run directory).
    pub checkpoints: Vec<(u64, PathBuf)>,
    /// Set when the actor's weights are multiplier-free: at most this many signed powers
    /// of two per weight.
    pub pow2_terms: Option<u32>,
}

impl Chosen {
    pub fn from_result(
        r: &RungResult,
        reference: &Reference,
        tol: &Tolerance,
        pow2_terms: Option<u32>,
    ) -> Option<Chosen> {
        let best = r.best_seed()?;
        let (mean, std) = r.mean_std()?;
        let actor: FormatTable = best
            .formats
            .iter()
            .filter(|(k, _)| k.starts_with("actor."))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        Some(Chosen {
            strategy: r.strategy,
            width: r.rung.width,
            rung: r.rung,
            mean_return: mean,
            std_return: std,
            reference: reference.clone(),
            tolerance: *tol,
            checkpoint: best.checkpoint.clone()?,
            seed: best.seed,
            seed_eval_mean: best.eval_mean?,
            actor_formats: table_spec(&actor),
            checkpoints: r
                .seeds
                .iter()
                .filter_map(|s| Some((s.seed, s.checkpoint.clone()?)))
                .collect(),
            pow2_terms,
        })
    }

    /// Reads `<run>/qat/chosen.json`.
    pub fn load(run_dir: &Path) -> Result<Chosen, QatError> {
        let p = layout::chosen_path(run_dir);
        let text = std::fs::read_to_string(&p).map_err(FileError::io("reading", &p))?;
        Ok(serde_json::from_str(&text).map_err(FileError::json(&p))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_reads_on_the_reference_magnitude_for_negative_returns() {
        let t = Tolerance {
            fraction: 0.05,
            scale: Scale::Reference,
        };
        assert!(t.holds(-150.0, -157.0));
        assert!(t.holds(-150.0, -100.0)); // better than the reference
        assert!(!t.holds(-150.0, -158.0));
        assert!(t.holds(150.0, 143.0) && !t.holds(150.0, 142.0)); // positive returns alike
        let r = Tolerance {
            fraction: 0.05,
            scale: Scale::Random {
                random_mean: -1250.0,
            },
        };
        assert!(r.holds(-150.0, -200.0)); // 50 <= 0.05 * 1100 = 55
        assert!(!r.holds(-150.0, -206.0));
        assert!(r.holds(-150.0, -100.0)); // better than the reference
    }

    #[test]
    fn the_narrowest_passing_width_wins_and_failed_rungs_are_never_chosen() {
        let t = Tolerance {
            fraction: 0.05,
            scale: Scale::Reference,
        };
        let r = |st, w, xs: &[Option<f64>]| RungResult::from_returns(st, Rung::uniform(w), xs);
        let results = vec![
            r(Strategy::Ptq, 16, &[Some(-151.0), Some(-149.0)]),
            r(Strategy::Range, 8, &[Some(-153.0), Some(-151.0)]),
            r(Strategy::Range, 6, &[Some(-150.0), None]),
        ];
        let c = choose(&results, -150.0, &t).unwrap();
        assert_eq!((c.strategy, c.rung.width), (Strategy::Range, 8));
        assert_eq!(
            narrowest_within(&results, Strategy::Ptq, -150.0, &t),
            Some(16)
        );
        assert!(results[2].status().starts_with("failed: seed 1: diverged"));
    }
}
