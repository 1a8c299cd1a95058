//! The reward-vs-bit-width figure: one line per strategy, the IQM over seeds with its 95%
//! stratified-bootstrap interval as a band (rliable's statistic), the reference
//! precisions as horizontal bands (their IQM interval, or mean ± std without per-seed
//! returns), the tolerance band around the reference mean, and the chosen width as a
//! vertical marker. The widths are categories (4, 6, 8, ... 32 evenly spaced), not a
//! linear scale on which 16 to 32 would take half the width.

use std::path::Path;

use anyhow::Result;

use crate::plot::{line_chart, HBand, LineChart, Series};
use agents::qat::{Reference, RungResult, Strategy, Tolerance};
use agents::stats::Estimate;

/// What the figure's title and labels name.
pub struct FigureContext<'a> {
    pub env: &'a str,
    pub algorithm: &'a str,
    pub seeds: &'a [u64],
    pub episodes: usize,
    pub reference: &'a Reference,
    pub float_reference: Option<&'a Reference>,
    pub tolerance: &'a Tolerance,
    pub chosen: Option<&'a RungResult>,
}

/// `0–3 (4 seeds)` for consecutive seeds, else `0, 2, 5`.
pub fn seeds_label(seeds: &[u64]) -> String {
    let consecutive = seeds.windows(2).all(|w| w[1] == w[0] + 1);
    match (seeds.first(), seeds.last()) {
        (Some(a), Some(b)) if consecutive && seeds.len() > 2 => {
            format!("{a}–{b} ({} seeds)", seeds.len())
        }
        _ => seeds
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The chart description (separate from drawing, so it can be checked).
pub fn chart(ctx: &FigureContext, results: &[RungResult]) -> LineChart {
    let mut widths: Vec<u32> = results.iter().map(|r| r.rung.width).collect();
    widths.sort_unstable();
    widths.dedup();
    let position = |w: u32| widths.iter().position(|&x| x == w).unwrap_or(0) as f64;
    let mut series = Vec::new();
    for st in Strategy::ALL {
        let mut pts: Vec<(f64, Estimate)> = results
            .iter()
            .filter(|r| r.strategy == st && r.failure().is_none())
            .filter_map(|r| r.iqm_ci().map(|e| (position(r.rung.width), e)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push(Series {
            label: st.name().to_string(),
            points: pts.iter().map(|(x, e)| (*x, e.estimate)).collect(),
            band: pts.iter().map(|(x, e)| (*x, e.ci_low, e.ci_high)).collect(),
            error_bars: Vec::new(),
        });
    }
    let band = |r: &Reference| match r.iqm_ci() {
        Some(e) => HBand {
            label: format!("{} (IQM, 95% CI)", r.label),
            lo: e.ci_low,
            hi: e.ci_high,
        },
        None => HBand {
            label: format!("{} (mean ± std)", r.label),
            lo: r.mean - r.std,
            hi: r.mean + r.std,
        },
    };
    let mut hbands = vec![band(ctx.reference)];
    if let Some(f) = ctx.float_reference {
        hbands.push(band(f));
    }
    let a = ctx.tolerance.allowance(ctx.reference.mean);
    let (lo, hi) = (ctx.reference.mean - a, ctx.reference.mean);
    hbands.push(HBand {
        label: format!(
            "within {:.0}% of {}",
            ctx.tolerance.fraction * 100.0,
            ctx.reference.label
        ),
        lo,
        hi,
    });
    let vlines = ctx
        .chosen
        .map(|c| {
            vec![(
                position(c.rung.width),
                format!("chosen: {} {} bits", c.strategy, c.rung.width),
            )]
        })
        .unwrap_or_default();
    LineChart {
        title: format!(
            "Reward vs bit width: {} on {}, seeds {} ({} eval episodes each)",
            ctx.algorithm.to_uppercase(),
            ctx.env,
            seeds_label(ctx.seeds),
            ctx.episodes
        ),
        x_label: "bit width (bits)".into(),
        y_label: "eval return: IQM over seeds (band: 95% bootstrap CI)".into(),
        series,
        hbands,
        vlines,
        log_x: false,
        log_y: false,
        x_categories: widths.iter().map(|w| w.to_string()).collect(),
    }
}

/// Writes `<stem>.png` and `<stem>.svg`.
pub fn write(ctx: &FigureContext, results: &[RungResult], stem: &Path) -> Result<()> {
    line_chart(&chart(ctx, results), stem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agents::qat::{Rung, Scale, SeedOutcome};

    #[test]
    fn figure_has_a_line_per_strategy_reference_bands_and_the_chosen_marker() {
        let seeds = |xs: &[f64]| {
            xs.iter()
                .enumerate()
                .map(|(i, &x)| SeedOutcome {
                    seed: i as u64,
                    eval_mean: Some(x),
                    error: None,
                    checkpoint: None,
                    formats: Default::default(),
                    multipliers: None,
                })
                .collect()
        };
        let results = vec![
            RungResult {
                strategy: Strategy::Ptq,
                rung: Rung::uniform(16),
                seeds: seeds(&[-150.0, -160.0]),
            },
            RungResult {
                strategy: Strategy::Ptq,
                rung: Rung::uniform(8),
                seeds: seeds(&[-900.0, -1000.0]),
            },
            RungResult {
                strategy: Strategy::Range,
                rung: Rung::uniform(8),
                seeds: seeds(&[-155.0, -165.0]),
            },
        ];
        let reference = Reference {
            label: "fxp32".into(),
            mean: -155.0,
            std: 5.0,
            seeds: 2,
            returns: vec![-150.0, -160.0],
        };
        let float = Reference {
            label: "float32".into(),
            mean: -150.0,
            std: 4.0,
            seeds: 2,
            returns: Vec::new(),
        };
        let tol = agents::qat::Tolerance {
            fraction: 0.05,
            scale: Scale::Reference,
        };
        let ctx = FigureContext {
            env: "Pendulum-v1",
            algorithm: "td3",
            seeds: &[0, 1, 2],
            episodes: 10,
            reference: &reference,
            float_reference: Some(&float),
            tolerance: &tol,
            chosen: Some(&results[2]),
        };
        let c = chart(&ctx, &results);
        assert!(
            c.title.contains("TD3")
                && c.title.contains("Pendulum-v1")
                && c.title.contains("0–2 (3 seeds)")
        );
        assert_eq!(c.series.len(), 2);
        // Widths as evenly spaced categories: 8 at position 0, 16 at position 1.
        assert_eq!(c.x_categories, vec!["8".to_string(), "16".to_string()]);
        assert_eq!(c.series[0].points, vec![(0.0, -950.0), (1.0, -155.0)]);
        // Two seeds: the bootstrap replicates range over {-1000, -950, -900}.
        assert_eq!(c.series[0].band[0], (0.0, -1000.0, -900.0));
        assert_eq!(c.hbands.len(), 3);
        assert!(c.hbands[0].label.contains("IQM, 95% CI"));
        assert_eq!((c.hbands[0].lo, c.hbands[0].hi), (-160.0, -150.0));
        assert!(c.hbands[1].label.contains("mean ± std"));
        assert_eq!(c.vlines[0].0, 0.0);
        let dir = std::env::temp_dir().join(format!("fixar-qat-fig-{}", std::process::id()));
        let stem = dir.join("reward_vs_bits");
        write(&ctx, &results, &stem).unwrap();
        assert!(stem.with_extension("png").metadata().unwrap().len() > 1000);
        assert!(std::fs::read_to_string(stem.with_extension("svg"))
            .unwrap()
            .contains("Pendulum-v1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
