//! The ladder's files: `qat.csv`, `formats.json` and `qat.md` (the verdict itself is
//! `agents::qat::verdict`), and where they go.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use agents::layout;
use agents::precision::ClassSpec;
use agents::qat::derive::table_spec;
use agents::qat::{narrowest_within, ptq_verdict, Reference, RungResult, Strategy, Tolerance};
use agents::stats::Estimate;
use anyhow::{Context, Result};

use crate::report::{bullets, heading, Table};

/// `qat.csv`: strategy, width, mean_return, std_return, seeds, status, then rliable's
/// statistics over seeds: iqm_return with its 95% stratified-bootstrap interval
/// (iqm_ci_low, iqm_ci_high) and prob_improvement = P(rung return > reference return)
/// with its interval (one row per rung; statistics empty when no seed finished, the
/// probability also when the reference has no per-seed returns).
pub fn write_csv(path: &Path, results: &[RungResult], reference: &Reference) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    w.write_record([
        "strategy",
        "width",
        "mean_return",
        "std_return",
        "seeds",
        "status",
        "iqm_return",
        "iqm_ci_low",
        "iqm_ci_high",
        "prob_improvement",
        "prob_improvement_ci_low",
        "prob_improvement_ci_high",
    ])?;
    let columns = |e: Option<Estimate>| {
        e.map(|e| {
            [e.estimate, e.ci_low, e.ci_high]
                .map(|v| format!("{v:.4}"))
                .to_vec()
        })
        .unwrap_or_else(|| vec![String::new(); 3])
    };
    for r in results {
        let (m, s) = r
            .mean_std()
            .map(|(m, s)| (format!("{m:.4}"), format!("{s:.4}")))
            .unwrap_or_default();
        let mut row = vec![
            r.strategy.name().to_string(),
            r.rung.width.to_string(),
            m,
            s,
            r.returns().len().to_string(),
            r.status(),
        ];
        row.extend(columns(r.iqm_ci()));
        row.extend(columns(r.improvement_over(reference)));
        w.write_record(row)?;
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
    crate::rundir::write_atomic(path, text).with_context(|| format!("writing {}", path.display()))
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
    let _ = writeln!(s, "{}", heading(1, ctx.title));
    let _ = writeln!(
        s,
        "Reference ({}): {:.2} ± {:.2} over {} seeds.",
        ctx.reference.label, ctx.reference.mean, ctx.reference.std, ctx.reference.seeds
    );
    if let Some(e) = ctx.reference.iqm_ci() {
        let _ = writeln!(
            s,
            "Reference IQM: {} (95% stratified-bootstrap CI, {} replicates, seed {}).",
            interval(&e),
            e.reps,
            e.seed
        );
    }
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
    let mut header = vec!["width".to_string()];
    header.extend(strategies.iter().map(|st| st.to_string()));
    let mut table = Table::with_header(header).right(0);
    for w in &widths {
        let mut row = vec![w.to_string()];
        for st in &strategies {
            row.push(
                results
                    .iter()
                    .find(|r| r.strategy == *st && r.rung.width == *w)
                    .map(|r| cell(r, reference, ctx.tolerance))
                    .unwrap_or_else(|| "–".into()),
            );
        }
        table.row(row);
    }
    s.push_str(&table.to_markdown());
    let _ = writeln!(
        s,
        "\nCells: mean ± std of the final eval return over seeds (seeds finished), the gap to \
         the reference on the tolerance's scale, ✓ within tolerance, ✗ outside.\n"
    );

    s.push_str(&aggregate_table(
        ctx.reference,
        &strategies,
        &widths,
        results,
    ));

    let _ = writeln!(s, "{}", heading(2, "Narrowest width within tolerance"));
    let narrowest: Vec<String> = strategies
        .iter()
        .map(
            |st| match narrowest_within(results, *st, reference, ctx.tolerance) {
                Some(w) => format!("{st}: {w} bits"),
                None => format!("{st}: none of its rungs"),
            },
        )
        .collect();
    s.push_str(&bullets(&narrowest));
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
                let mut t = Table::new(&["layer", "class", "format"]);
                for (layer, f) in best.formats.iter().filter(|(k, _)| k.starts_with("actor.")) {
                    for class in agents::precision::TensorClass::ALL {
                        let v = agents::precision::FormatValue(f.get(class));
                        t.row(vec![layer.clone(), class.to_string(), format!("`{v}`")]);
                    }
                }
                s.push_str(&t.to_markdown());
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
        let _ = writeln!(s, "\n{}", heading(2, "Failed rungs"));
        let lines: Vec<String> = failed
            .iter()
            .map(|r| format!("{} {}: {}", r.strategy, r.rung.describe(), r.status()))
            .collect();
        s.push_str(&bullets(&lines));
    }
    if !ctx.notes.is_empty() {
        let _ = writeln!(s, "\n{}", heading(2, "Notes"));
        s.push_str(&bullets(ctx.notes));
    }
    s
}

/// `1.23 [0.50, 2.00]`: an estimate and its interval.
pub fn interval(e: &Estimate) -> String {
    format!("{:.2} [{:.2}, {:.2}]", e.estimate, e.ci_low, e.ci_high)
}

/// The rliable section of `qat.md`: per rung the IQM over seeds and P(rung > reference),
/// each with its 95% stratified-bootstrap interval.
fn aggregate_table(
    reference: &Reference,
    strategies: &[Strategy],
    widths: &[u32],
    results: &[RungResult],
) -> String {
    let mut s = format!("{}\n", heading(2, "Aggregate statistics (rliable)"));
    let mut t = Table::new(&[
        "strategy",
        "width",
        "IQM [95% CI]",
        &format!("P(rung > {}) [95% CI]", reference.label),
    ])
    .right(1);
    for st in strategies {
        for w in widths {
            if let Some(r) = results
                .iter()
                .find(|r| r.strategy == *st && r.rung.width == *w)
            {
                let show = |e: Option<Estimate>| e.map_or("–".into(), |e| interval(&e));
                t.row(vec![
                    st.to_string(),
                    w.to_string(),
                    show(r.iqm_ci()),
                    show(r.improvement_over(reference)),
                ]);
            }
        }
    }
    s.push_str(&t.to_markdown());
    let _ = writeln!(
        s,
        "\nIQM: the mean of the middle 50% of the seeds' final eval returns (scipy's \
         `trim_mean(x, 0.25)`). P(rung > reference): the probability that a seed of the rung \
         returns more than a seed of the reference, ties counting one half (the Mann-Whitney \
         U over all pairs). Intervals: percentile intervals of {} stratified-bootstrap \
         replicates over seeds, seed {}, as rliable computes them.\n",
        agents::stats::BOOTSTRAP_REPS,
        agents::stats::BOOTSTRAP_SEED
    );
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

/// The output paths of one `fixar qat` run.
pub struct QatPaths {
    pub dir: PathBuf,
}

impl QatPaths {
    pub fn new(run_dir: &Path) -> Self {
        QatPaths {
            dir: layout::qat_dir(run_dir),
        }
    }
    pub fn csv(&self) -> PathBuf {
        self.dir.join(layout::QAT_CSV)
    }
    pub fn md(&self) -> PathBuf {
        self.dir.join(layout::QAT_MD)
    }
    pub fn formats(&self) -> PathBuf {
        self.dir.join(layout::QAT_FORMATS)
    }
    pub fn chosen(&self) -> PathBuf {
        self.dir.join(layout::QAT_CHOSEN)
    }
    pub fn plot_stem(&self) -> PathBuf {
        self.dir.join(layout::QAT_PLOT)
    }
    pub fn rung_dir(&self, strategy: Strategy, width: u32) -> PathBuf {
        layout::rung_dir(&self.dir, strategy.name(), width)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agents::qat::{choose, Rung, Scale};

    fn rung(strategy: Strategy, width: u32, returns: &[Option<f64>]) -> RungResult {
        RungResult::from_returns(strategy, Rung::uniform(width), returns)
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
                    returns: vec![-149.0, -151.0],
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
        // rliable's section: range 8 bits (-153, -151) against (-149, -151): P = 0.125.
        assert!(md.contains("## Aggregate statistics (rliable)"), "{md}");
        assert!(md.contains("| range | 8 | -152.00 ["), "{md}");
        assert!(md.contains("| 0.12 ["), "{md}");
    }

    #[test]
    fn csv_has_the_issue_columns_and_empty_stats_for_a_fully_failed_rung() {
        let dir = std::env::temp_dir().join(format!("fixar-qat-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("qat.csv");
        let reference = Reference {
            label: "fxp32".into(),
            mean: -155.0,
            std: 5.0,
            seeds: 2,
            returns: vec![-155.0, -150.0],
        };
        write_csv(
            &p,
            &[
                rung(Strategy::Ptq, 32, &[Some(-150.0), Some(-160.0)]),
                rung(Strategy::Range, 4, &[None]),
            ],
            &reference,
        )
        .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "strategy,width,mean_return,std_return,seeds,status,iqm_return,iqm_ci_low,\
             iqm_ci_high,prob_improvement,prob_improvement_ci_low,prob_improvement_ci_high"
        );
        // IQM of two seeds is their mean; its replicates range over {-160, -155, -150}.
        // P(ptq > ref): pairs (-150 vs -155, -150) = 1 + 0.5, (-160 vs both) = 0 -> 0.375.
        assert!(
            lines[1]
                .starts_with("ptq,32,-155.0000,5.0000,2,ok,-155.0000,-160.0000,-150.0000,0.3750,"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("range,4,,,0,failed: seed 0: diverged"),
            "{}",
            lines[2]
        );
        assert!(lines[2].ends_with(",,,,,,"), "{}", lines[2]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
