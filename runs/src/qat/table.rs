//! Rung results, the tolerance test, the chosen rung, and the files they are written to:
//! `qat.csv`, `qat.md`, `formats.json`, `chosen.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use agents::pow2::MultiplierCount;
use agents::precision::ClassSpec;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::derive::{table_spec, FormatTable};
use super::ladder::Rung;

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
    /// Range-based formats whose actor binary points are then learned by gradient
    /// (`agents::learned_point`), retrained down the ladder like `range`.
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

/// Mean and population standard deviation (ddof 0); `None` for no values.
pub fn mean_std(xs: &[f64]) -> Option<(f64, f64)> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
    Some((m, v.sqrt()))
}

impl RungResult {
    /// The final eval returns of the seeds that finished.
    pub fn returns(&self) -> Vec<f64> {
        self.seeds.iter().filter_map(|s| s.eval_mean).collect()
    }

    /// Mean and std over seeds of the per-seed eval means (agents.md's reporting rule).
    pub fn mean_std(&self) -> Option<(f64, f64)> {
        mean_std(&self.returns())
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
            .filter(|s| s.eval_mean.is_some() && s.checkpoint.is_some())
            .max_by(|a, b| a.eval_mean.partial_cmp(&b.eval_mean).unwrap())
    }
}

/// A reference return band: the parent's precision, and float32.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reference {
    pub label: String,
    pub mean: f64,
    pub std: f64,
    pub seeds: usize,
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
                mb.partial_cmp(&ma).unwrap()
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
    pub fn load(run_dir: &Path) -> Result<Chosen> {
        let p = run_dir.join("qat").join("chosen.json");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
    }
}

/// `qat.csv`: strategy, width, mean_return, std_return, seeds, status (one row per rung;
/// mean/std empty when no seed finished).
pub fn write_csv(path: &Path, results: &[RungResult]) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    w.write_record([
        "strategy",
        "width",
        "mean_return",
        "std_return",
        "seeds",
        "status",
    ])?;
    for r in results {
        let (m, s) = r
            .mean_std()
            .map(|(m, s)| (format!("{m:.4}"), format!("{s:.4}")))
            .unwrap_or_default();
        w.write_record([
            r.strategy.name().to_string(),
            r.rung.width.to_string(),
            m,
            s,
            r.returns().len().to_string(),
            r.status(),
        ])?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `formats.json`: strategy -> width -> seed -> layer -> class -> format.
pub fn write_formats_json(path: &Path, results: &[RungResult]) -> Result<()> {
    type Seeds = BTreeMap<String, BTreeMap<String, ClassSpec>>;
    let mut out: BTreeMap<String, BTreeMap<String, Seeds>> = BTreeMap::new();
    for r in results {
        let seeds: Seeds = r
            .seeds
            .iter()
            .filter(|s| !s.formats.is_empty())
            .map(|s| (format!("seed_{}", s.seed), table_spec(&s.formats)))
            .collect();
        out.entry(r.strategy.name().into())
            .or_default()
            .insert(format!("w{}", r.rung.width), seeds);
    }
    let text = serde_json::to_string_pretty(&out)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Everything `qat.md` says besides the results.
pub struct MdContext<'a> {
    pub title: &'a str,
    pub reference: &'a Reference,
    pub float_reference: Option<&'a Reference>,
    pub random_mean: Option<f64>,
    pub tolerance: &'a Tolerance,
    pub chosen: Option<&'a RungResult>,
    pub notes: &'a [String],
}

/// `qat.md`: the table (width × strategy), the verdict per strategy, the chosen rung, and
/// the actor's formats at the chosen rung.
pub fn render_md(ctx: &MdContext, results: &[RungResult]) -> String {
    let mut s = String::new();
    let reference = ctx.reference.mean;
    let _ = writeln!(s, "# {}\n", ctx.title);
    let _ = writeln!(
        s,
        "Reference ({}): {:.2} ± {:.2} over {} seeds.",
        ctx.reference.label, ctx.reference.mean, ctx.reference.std, ctx.reference.seeds
    );
    if let Some(f) = ctx.float_reference {
        let _ = writeln!(
            s,
            "Reference ({}): {:.2} ± {:.2} over {} seeds.",
            f.label, f.mean, f.std, f.seeds
        );
    }
    if let Some(r) = ctx.random_mean {
        let _ = writeln!(s, "Uniformly random policy: {r:.2}.");
    }
    let _ = writeln!(s, "Tolerance: {}.\n", ctx.tolerance.describe(reference));

    let strategies: Vec<Strategy> = Strategy::ALL
        .into_iter()
        .filter(|st| results.iter().any(|r| r.strategy == *st))
        .collect();
    let mut widths: Vec<u32> = results.iter().map(|r| r.rung.width).collect();
    widths.sort_unstable_by(|a, b| b.cmp(a));
    widths.dedup();
    let _ = write!(s, "| width |");
    for st in &strategies {
        let _ = write!(s, " {st} |");
    }
    let _ = write!(s, "\n|---:|");
    for _ in &strategies {
        let _ = write!(s, "---|");
    }
    s.push('\n');
    for w in &widths {
        let _ = write!(s, "| {w} |");
        for st in &strategies {
            let cell = results
                .iter()
                .find(|r| r.strategy == *st && r.rung.width == *w)
                .map(|r| cell(r, reference, ctx.tolerance))
                .unwrap_or_else(|| "–".into());
            let _ = write!(s, " {cell} |");
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\nCells: mean ± std of the final eval return over seeds (seeds finished), the gap to \
         the reference on the tolerance's scale, ✓ within tolerance, ✗ outside.\n"
    );

    let _ = writeln!(s, "## Narrowest width within tolerance\n");
    for st in &strategies {
        match narrowest_within(results, *st, reference, ctx.tolerance) {
            Some(w) => {
                let _ = writeln!(s, "- {st}: {w} bits");
            }
            None => {
                let _ = writeln!(s, "- {st}: none of its rungs");
            }
        }
    }
    if let Some(v) = ptq_verdict(results, reference, ctx.tolerance) {
        let _ = writeln!(s, "\n{v}");
    }
    s.push('\n');
    match ctx.chosen {
        Some(c) => {
            let (m, sd) = c.mean_std().unwrap_or((f64::NAN, f64::NAN));
            let _ = writeln!(
                s,
                "**Chosen:** {} at {} — {m:.2} ± {sd:.2} (see `chosen.json`).\n",
                c.strategy,
                c.rung.describe()
            );
            if let Some(best) = c.best_seed() {
                let _ = writeln!(
                    s,
                    "Actor formats at the chosen rung (seed {}):\n",
                    best.seed
                );
                let _ = writeln!(s, "| layer | class | format |\n|---|---|---|");
                for (layer, f) in best.formats.iter().filter(|(k, _)| k.starts_with("actor.")) {
                    for class in agents::precision::TensorClass::ALL {
                        let v = agents::precision::FormatValue(f.get(class));
                        let _ = writeln!(s, "| {layer} | {class} | `{v}` |");
                    }
                }
                if let Some(m) = best.multipliers {
                    let _ = writeln!(
                        s,
                        "\nMultiplier-free actor: {} products per inference, {} zero weights, \
                         {} shifts, {} adds, {} multiplications remaining.",
                        m.products, m.zero_weights, m.shifts, m.shift_adds, m.multiplications
                    );
                }
            }
        }
        None => {
            let _ = writeln!(s, "**Chosen:** no rung is within tolerance.");
        }
    }
    let failed: Vec<&RungResult> = results.iter().filter(|r| r.failure().is_some()).collect();
    if !failed.is_empty() {
        let _ = writeln!(s, "\n## Failed rungs\n");
        for r in failed {
            let _ = writeln!(s, "- {} {}: {}", r.strategy, r.rung.describe(), r.status());
        }
    }
    if !ctx.notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in ctx.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

fn cell(r: &RungResult, reference: f64, tol: &Tolerance) -> String {
    let n = r.returns().len();
    match r.mean_std() {
        None => format!("failed (0/{})", r.seeds.len()),
        Some((m, sd)) => {
            let gap = tol.relative_gap(reference, m) * 100.0;
            let mark = if r.failure().is_some() {
                "failed"
            } else if tol.holds(reference, m) {
                "✓"
            } else {
                "✗"
            };
            format!("{m:.1} ± {sd:.1} ({n}) {gap:+.1}% {mark}")
        }
    }
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

/// The output paths of one `fixar qat` run.
pub struct QatPaths {
    pub dir: PathBuf,
}

impl QatPaths {
    pub fn new(run_dir: &Path) -> Self {
        QatPaths {
            dir: run_dir.join("qat"),
        }
    }
    pub fn csv(&self) -> PathBuf {
        self.dir.join("qat.csv")
    }
    pub fn md(&self) -> PathBuf {
        self.dir.join("qat.md")
    }
    pub fn formats(&self) -> PathBuf {
        self.dir.join("formats.json")
    }
    pub fn chosen(&self) -> PathBuf {
        self.dir.join("chosen.json")
    }
    pub fn plot_stem(&self) -> PathBuf {
        self.dir.join("reward_vs_bits")
    }
    pub fn rung_dir(&self, strategy: Strategy, width: u32) -> PathBuf {
        self.dir.join(format!("{}_w{width}", strategy.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(strategy: Strategy, width: u32, returns: &[Option<f64>]) -> RungResult {
        RungResult {
            strategy,
            rung: Rung::uniform(width),
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
    fn failed_rungs_are_never_chosen_and_the_narrowest_passing_width_wins() {
        let t = Tolerance {
            fraction: 0.05,
            scale: Scale::Reference,
        };
        let results = vec![
            rung(Strategy::Ptq, 16, &[Some(-151.0), Some(-149.0)]),
            rung(Strategy::Ptq, 8, &[Some(-400.0), Some(-500.0)]),
            rung(Strategy::Range, 16, &[Some(-150.0), Some(-152.0)]),
            rung(Strategy::Range, 8, &[Some(-153.0), Some(-151.0)]),
            rung(Strategy::Range, 6, &[Some(-150.0), None]),
        ];
        let c = choose(&results, -150.0, &t).unwrap();
        assert_eq!((c.strategy, c.rung.width), (Strategy::Range, 8));
        assert!(results[4].status().starts_with("failed: seed 1: diverged"));
        assert_eq!(results[4].returns().len(), 1);
        let v = ptq_verdict(&results, -150.0, &t).unwrap();
        assert!(
            v.contains("PTQ falls off at 8 bits") && v.contains("range"),
            "{v}"
        );
        let md = render_md(
            &MdContext {
                title: "t",
                reference: &Reference {
                    label: "fxp32".into(),
                    mean: -150.0,
                    std: 1.0,
                    seeds: 2,
                },
                float_reference: None,
                random_mean: None,
                tolerance: &t,
                chosen: Some(c),
                notes: &[],
            },
            &results,
        );
        assert!(
            md.contains("- range: 8 bits") && md.contains("- ptq: 16 bits"),
            "{md}"
        );
        assert!(md.contains("## Failed rungs"), "{md}");
    }

    #[test]
    fn csv_has_the_issue_columns_and_empty_stats_for_a_fully_failed_rung() {
        let dir = std::env::temp_dir().join(format!("fixar-qat-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("qat.csv");
        write_csv(
            &p,
            &[
                rung(Strategy::Ptq, 32, &[Some(-150.0), Some(-160.0)]),
                rung(Strategy::Range, 4, &[None]),
            ],
        )
        .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "strategy,width,mean_return,std_return,seeds,status"
        );
        assert_eq!(lines[1], "ptq,32,-155.0000,5.0000,2,ok");
        assert!(
            lines[2].starts_with("range,4,,,0,failed: seed 0: diverged"),
            "{}",
            lines[2]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
