//! What `fixar qat` reports about learned binary points: the final learned formats
//! beside `range`'s at the same rung and seed (a section of `qat.md`), and their
//! trajectories (`qat/learned_points*.png/.svg`: integer bits against env steps, one
//! line per layer and class, one figure per online network), read from the learned
//! rungs' `metrics.csv` (`<layer>.<class>.int_bits` columns, see
//! `agents::trainer::Trainer::learn_binary_points`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use agents::layout;
use agents::precision::TensorClass;
use agents::qat::{RungResult, Strategy};
use anyhow::{Context, Result};

use crate::plot::{line_chart, LineChart, Series};
use crate::report::{heading, Table};

/// One learned cast at one rung and seed, beside `range`'s format of that cast.
#[derive(Clone, Debug, PartialEq)]
pub struct PointCompare {
    pub width: u32,
    pub seed: u64,
    /// `actor.fc1.weight`.
    pub point: String,
    pub range_int_bits: i32,
    pub learned_int_bits: i32,
}

/// Every forward cast of the online networks at every rung where both `learned` and
/// `range` finished for a seed.
pub fn compare(results: &[RungResult]) -> Vec<PointCompare> {
    let mut out = Vec::new();
    for l in results.iter().filter(|r| r.strategy == Strategy::Learned) {
        let Some(r) = results
            .iter()
            .find(|r| r.strategy == Strategy::Range && r.rung.width == l.rung.width)
        else {
            continue;
        };
        for ls in l.seeds.iter().filter(|s| s.error.is_none()) {
            let Some(rs) = r
                .seeds
                .iter()
                .find(|s| s.seed == ls.seed && s.error.is_none())
            else {
                continue;
            };
            for (layer, lf) in &ls.formats {
                if layer.contains("_target.") {
                    continue;
                }
                let Some(rf) = rs.formats.get(layer) else {
                    continue;
                };
                for c in agents::learned_point::LEARNED_CLASSES {
                    // The input is cast (and learned) at the first layer only.
                    if c == TensorClass::Input && !layer.ends_with(".fc1") {
                        continue;
                    }
                    if let (Some(a), Some(b)) = (lf.get(c), rf.get(c)) {
                        out.push(PointCompare {
                            width: l.rung.width,
                            seed: ls.seed,
                            point: format!("{layer}.{c}"),
                            range_int_bits: b.int_bits,
                            learned_int_bits: a.int_bits,
                        });
                    }
                }
            }
        }
    }
    out
}

/// Per rung width: (casts compared over seeds, casts whose learned format differs,
/// summed |I_learned − I_range| over them, seeds).
pub fn moved_by_width(cmp: &[PointCompare]) -> BTreeMap<u32, (usize, usize, i64, usize)> {
    let mut out: BTreeMap<u32, (usize, usize, i64, usize)> = BTreeMap::new();
    let mut seeds: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for p in cmp {
        let e = out.entry(p.width).or_default();
        e.0 += 1;
        let d = (p.learned_int_bits - p.range_int_bits).abs() as i64;
        if d != 0 {
            e.1 += 1;
            e.2 += d;
        }
        let s = seeds.entry(p.width).or_default();
        if !s.contains(&p.seed) {
            s.push(p.seed);
        }
    }
    for (w, e) in out.iter_mut() {
        e.3 = seeds.get(w).map_or(0, Vec::len);
    }
    out
}

/// The `qat.md` section: how many casts' learned integer bits differ from `range`'s at
/// each rung, and the final formats of the first seed, learned beside range, per rung.
pub fn section(results: &[RungResult], figures: &[PathBuf]) -> String {
    let cmp = compare(results);
    if cmp.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    let _ = writeln!(s, "{}", heading(2, "Learned binary points vs range"));
    let mut t = Table::new(&[
        "width",
        "seeds",
        "casts compared",
        "learned ≠ range",
        "integer bits moved (Σ|ΔI|)",
        "per seed",
    ])
    .right(0);
    for (w, (n, diff, bits, seeds)) in moved_by_width(&cmp).iter().rev() {
        t.row(vec![
            w.to_string(),
            seeds.to_string(),
            n.to_string(),
            diff.to_string(),
            bits.to_string(),
            format!("{:.1}", *bits as f64 / (*seeds).max(1) as f64),
        ]);
    }
    s.push_str(&t.to_markdown());
    let seed = cmp[0].seed;
    let mut widths: Vec<u32> = cmp.iter().map(|p| p.width).collect();
    widths.sort_unstable_by(|a, b| b.cmp(a));
    widths.dedup();
    let _ = writeln!(
        s,
        "\nInteger bits of every forward cast of the online networks at the end of each \
         rung, seed {seed}: `range` → `learned` (the width is the rung's; ✱ where they \
         differ).\n"
    );
    let mut header = vec!["cast".to_string()];
    header.extend(widths.iter().map(|w| format!("w{w}")));
    let mut t = Table::with_header(header);
    let mut points: Vec<&str> = Vec::new();
    for p in cmp.iter().filter(|p| p.seed == seed) {
        if !points.contains(&p.point.as_str()) {
            points.push(&p.point);
        }
    }
    for point in points {
        let mut row = vec![format!("`{point}`")];
        for w in &widths {
            row.push(
                cmp.iter()
                    .find(|p| p.seed == seed && p.width == *w && p.point == point)
                    .map(|p| {
                        let mark = if p.range_int_bits != p.learned_int_bits {
                            " ✱"
                        } else {
                            ""
                        };
                        format!("{} → {}{mark}", p.range_int_bits, p.learned_int_bits)
                    })
                    .unwrap_or_else(|| "–".into()),
            );
        }
        t.row(row);
    }
    s.push_str(&t.to_markdown());
    if !figures.is_empty() {
        let names: Vec<String> = figures
            .iter()
            .filter_map(|f| f.file_name().map(|n| format!("`{}`", n.to_string_lossy())))
            .collect();
        let _ = writeln!(
            s,
            "\nTrajectories (integer bits against steps, seed {seed}): {}.",
            names.join(", ")
        );
    }
    s
}

/// Rows of learned-point values: (env step, `s` per column, empty where absent).
type TrajectoryRows = Vec<(f64, Vec<Option<f64>>)>;

/// The learned points' columns of a `metrics.csv`: their names (`<layer>.<class>`) and
/// the rows that hold values.
fn read_trajectories(path: &Path) -> Result<(Vec<String>, TrajectoryRows)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let cols: Vec<(usize, String)> = header
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.strip_suffix(".int_bits").map(|n| (i, n.to_string())))
        .collect();
    let mut rows = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        let Some(step) = f.first().and_then(|s| s.parse::<f64>().ok()) else {
            continue;
        };
        let vals: Vec<Option<f64>> = cols
            .iter()
            .map(|(i, _)| f.get(*i).and_then(|v| v.parse().ok()))
            .collect();
        if vals.iter().any(Option::is_some) {
            rows.push((step, vals));
        }
    }
    Ok((cols.into_iter().map(|c| c.1).collect(), rows))
}

/// The trajectory charts of one seed's learned chain (`rungs`: the rung directories in
/// ladder order), one per online network.
pub fn charts(rungs: &[(u32, PathBuf)], seed: u64) -> Result<Vec<(String, LineChart)>> {
    // Each rung's metrics.csv continues the previous one's, so the last holds them all.
    let Some((_, last)) = rungs.last() else {
        return Ok(Vec::new());
    };
    let (names, rows) = read_trajectories(&last.join(layout::METRICS))?;
    let mut vlines = Vec::new();
    for (w, dir) in rungs {
        let (_, r) = read_trajectories(&dir.join(layout::METRICS))?;
        if let Some((step, _)) = r.last() {
            vlines.push((*step, format!("end of w{w}")));
        }
    }
    let mut nets: Vec<String> = Vec::new();
    for n in &names {
        let net = n.split('.').next().unwrap_or("").to_string();
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    let mut out = Vec::new();
    for net in nets {
        let series: Vec<Series> = names
            .iter()
            .enumerate()
            .filter(|(_, n)| n.split('.').next() == Some(net.as_str()))
            .map(|(i, n)| Series {
                label: n.strip_prefix(&format!("{net}.")).unwrap_or(n).to_string(),
                points: rows
                    .iter()
                    .filter_map(|(x, v)| v[i].map(|y| (*x, y)))
                    .collect(),
                ..Default::default()
            })
            .collect();
        out.push((
            net.clone(),
            LineChart {
                title: format!("Learned binary points of {net}, seed {seed}"),
                x_label: "env step".into(),
                y_label: "integer bits s (format uses round(s))".into(),
                series,
                vlines: vlines.clone(),
                ..Default::default()
            },
        ));
    }
    Ok(out)
}

/// Writes `<qat>/learned_points.png/.svg` (the actor) and
/// `<qat>/learned_points_<critic>.png/.svg` for the first seed of the learned chain
/// that finished every rung; returns the PNG paths.
pub fn write_figures(qat: &Path, results: &[RungResult]) -> Result<Vec<PathBuf>> {
    let learned: Vec<&RungResult> = results
        .iter()
        .filter(|r| r.strategy == Strategy::Learned)
        .collect();
    let Some(first) = learned.first() else {
        return Ok(Vec::new());
    };
    let Some(seed) = first.seeds.iter().map(|s| s.seed).find(|seed| {
        learned
            .iter()
            .all(|r| r.seeds.iter().any(|s| s.seed == *seed && s.error.is_none()))
    }) else {
        return Ok(Vec::new());
    };
    let rungs: Vec<(u32, PathBuf)> = learned
        .iter()
        .map(|r| {
            let d = layout::rung_dir(qat, Strategy::Learned.name(), r.rung.width);
            (r.rung.width, layout::seed_dir(&d, seed))
        })
        .collect();
    let mut out = Vec::new();
    for (net, chart) in charts(&rungs, seed)? {
        let stem = match net.as_str() {
            "actor" => qat.join(layout::QAT_LEARNED_PLOT),
            n => qat.join(format!("{}_{n}", layout::QAT_LEARNED_PLOT)),
        };
        line_chart(&chart, &stem)?;
        out.push(stem.with_extension("png"));
    }
    Ok(out)
}

/// The class of a `<layer>.<class>` point name.
pub fn class_of(point: &str) -> Option<TensorClass> {
    point.rsplit('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agents::precision::LayerFormats;
    use agents::qat::{Rung, SeedOutcome};
    use quant::FxFormat;

    fn outcome(seed: u64, weight_int_bits: i32) -> SeedOutcome {
        let mut f = LayerFormats::float();
        f.set(
            TensorClass::Weight,
            Some(FxFormat::signed(6, weight_int_bits).unwrap()),
        );
        f.set(TensorClass::Bias, Some(FxFormat::signed(6, 2).unwrap()));
        SeedOutcome {
            seed,
            eval_mean: Some(-150.0),
            error: None,
            checkpoint: None,
            formats: [
                ("actor.fc1".to_string(), f),
                ("actor_target.fc1".to_string(), f),
            ]
            .into(),
            multipliers: None,
        }
    }

    #[test]
    fn comparison_counts_moved_bits_per_width_and_skips_targets() {
        let results = vec![
            RungResult {
                strategy: Strategy::Range,
                rung: Rung::uniform(6),
                seeds: vec![outcome(0, 1), outcome(1, 1)],
            },
            RungResult {
                strategy: Strategy::Learned,
                rung: Rung::uniform(6),
                seeds: vec![outcome(0, 3), outcome(1, 1)],
            },
        ];
        let cmp = compare(&results);
        assert_eq!(cmp.len(), 4, "{cmp:?}");
        assert_eq!(class_of(&cmp[0].point), Some(TensorClass::Weight));
        assert_eq!(moved_by_width(&cmp)[&6], (4, 1, 2, 2));
        let md = section(&results, &[]);
        assert!(md.contains("| `actor.fc1.weight` | 1 → 3 ✱ |"), "{md}");
        assert!(md.contains("| `actor.fc1.bias` | 2 → 2 |"), "{md}");
    }
}
