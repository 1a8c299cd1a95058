//! The one plotting module: every figure fixar writes goes through here, so colours per
//! label, fonts, sizes and the PNG + SVG pair are the same across commands.
//!
//! Each function takes a description of the chart and a path stem, and writes
//! `<stem>.png` and `<stem>.svg` (parent directories are created).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

const SIZE: (u32, u32) = (960, 600);
const FONT: &str = "sans-serif";

/// One line of a line chart, with an optional shaded band and optional error bars.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// (x, lo, hi), drawn as a translucent band; empty for none.
    pub band: Vec<(f64, f64, f64)>,
    /// (x, lo, hi), drawn as vertical error bars; empty for none.
    pub error_bars: Vec<(f64, f64, f64)>,
}

impl Series {
    /// A line through the IQM of each x's samples (e.g. the seeds' eval returns at an env
    /// step) with their 95% stratified-bootstrap interval as the band (rliable's
    /// statistics, `agents::stats::iqm_ci`); x values without finite samples are left out.
    pub fn iqm_ci(label: String, samples: impl IntoIterator<Item = (f64, Vec<f64>)>) -> Self {
        let (points, band) = samples
            .into_iter()
            .filter_map(|(x, ys)| agents::stats::iqm_ci(&ys).map(|e| (x, e)))
            .map(|(x, e)| ((x, e.estimate), (x, e.ci_low, e.ci_high)))
            .unzip();
        Series {
            label,
            points,
            band,
            error_bars: Vec::new(),
        }
    }
}

/// A horizontal reference band across the whole x range (e.g. a reference return ± std).
#[derive(Clone, Debug)]
pub struct HBand {
    pub label: String,
    pub lo: f64,
    pub hi: f64,
}

#[derive(Clone, Debug, Default)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub hbands: Vec<HBand>,
    /// Vertical markers: (x, label).
    pub vlines: Vec<(f64, String)>,
    pub log_x: bool,
    pub log_y: bool,
    /// Category names for a categorical x axis: when not empty, x values are the
    /// positions 0, 1, ... of these categories, evenly spaced and labelled by name
    /// (e.g. bit widths 4, 6, 8, ... 32 rather than a linear scale).
    pub x_categories: Vec<String>,
}

/// The label of x position `v` on a categorical axis: the category at a whole position,
/// nothing between categories.
fn category_label(categories: &[String], v: f64) -> String {
    let i = v.round();
    if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < categories.len() {
        categories[i as usize].clone()
    } else {
        String::new()
    }
}

#[derive(Clone, Debug, Default)]
pub struct StackedBars {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub categories: Vec<String>,
    /// One entry per stack layer: (label, value per category).
    pub stacks: Vec<(String, Vec<f64>)>,
}

#[derive(Clone, Debug, Default)]
pub struct Scatter {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub groups: Vec<(String, Vec<(f64, f64)>)>,
    /// Drawn as a line over the points (e.g. a Pareto front); empty for none.
    pub front: Vec<(f64, f64)>,
}

/// A stable colour per label: known strategy and precision names get fixed colours, other
/// labels a colour from a hash of the label, so the same label looks the same everywhere.
pub fn color_for(label: &str) -> RGBColor {
    const PALETTE: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    let key = label.to_ascii_lowercase();
    let fixed = [
        ("float32", 0),
        ("fxp32", 1),
        ("fxp16", 2),
        ("range", 3),
        ("qat", 3),
        ("ptq", 4),
        ("learned", 5),
        ("delay", 6),
        ("intra-layer", 0),
        ("intra-batch", 1),
        ("adaptive", 2),
    ];
    for (name, i) in fixed {
        if key == name || key.starts_with(&format!("{name} ")) {
            return PALETTE[i];
        }
    }
    // FNV-1a: stable across runs and platforms.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    PALETTE[(h % PALETTE.len() as u64) as usize]
}

fn stem_paths(stem: &Path) -> Result<(PathBuf, PathBuf)> {
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating plot directory {}", dir.display()))?;
    }
    let with = |ext: &str| {
        let mut s = stem.as_os_str().to_owned();
        s.push(ext);
        PathBuf::from(s)
    };
    Ok((with(".png"), with(".svg")))
}

/// A chart that can draw itself on any plotters backend.
trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Draws the same figure onto a PNG and an SVG backend.
fn render_both<F: Figure>(stem: &Path, fig: &F) -> Result<()> {
    let (png, svg) = stem_paths(stem)?;
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        fig.draw(&root)
            .with_context(|| format!("drawing {}", png.display()))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", png.display()))?;
    }
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        fig.draw(&root)
            .with_context(|| format!("drawing {}", svg.display()))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", svg.display()))?;
    }
    Ok(())
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e:?}")
}

/// Finite (lo, hi) over the values, padded by 5%; a degenerate range is widened.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let pad = if lo.abs() > 1e-12 {
            lo.abs() * 0.1
        } else {
            1.0
        };
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

fn axis_value(v: f64, log: bool) -> f64 {
    if log {
        v.max(f64::MIN_POSITIVE).log10()
    } else {
        v
    }
}

fn tick_label(v: f64, log: bool) -> String {
    let v = if log { 10f64.powf(v) } else { v };
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Writes `<stem>.png` and `<stem>.svg` with the lines, bands, error bars, horizontal
/// reference bands and vertical markers of `c`.
pub fn line_chart(c: &LineChart, out_stem: &Path) -> Result<()> {
    render_both(out_stem, c)
}

impl Figure for LineChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let c = self;
        let (lx, ly) = (c.log_x, c.log_y);
        let xs = c
            .series
            .iter()
            .flat_map(|s| {
                s.points
                    .iter()
                    .map(|p| p.0)
                    .chain(s.band.iter().map(|b| b.0))
                    .chain(s.error_bars.iter().map(|b| b.0))
            })
            .chain(c.vlines.iter().map(|v| v.0))
            .map(|x| axis_value(x, lx));
        let categorical = !c.x_categories.is_empty();
        let x_range = if categorical {
            (-0.5, c.x_categories.len() as f64 - 0.5)
        } else {
            span(xs)
        };
        let ys = c
            .series
            .iter()
            .flat_map(|s| {
                s.points
                    .iter()
                    .map(|p| p.1)
                    .chain(s.band.iter().flat_map(|b| [b.1, b.2]))
                    .chain(s.error_bars.iter().flat_map(|b| [b.1, b.2]))
            })
            .chain(c.hbands.iter().flat_map(|b| [b.lo, b.hi]))
            .map(|y| axis_value(y, ly));
        let y_range = span(ys);
        {
            root.fill(&WHITE).map_err(err)?;
            let mut chart = ChartBuilder::on(root)
                .caption(&c.title, (FONT, 24))
                .margin(16)
                .x_label_area_size(48)
                .y_label_area_size(72)
                .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)
                .map_err(err)?;
            let x_tick = |v: &f64| {
                if categorical {
                    category_label(&c.x_categories, *v)
                } else {
                    tick_label(*v, lx)
                }
            };
            chart
                .configure_mesh()
                .x_labels(if categorical {
                    c.x_categories.len() + 1
                } else {
                    10
                })
                .x_desc(&c.x_label)
                .y_desc(&c.y_label)
                .x_label_formatter(&x_tick)
                .y_label_formatter(&|v| tick_label(*v, ly))
                .label_style((FONT, 15))
                .axis_desc_style((FONT, 17))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(err)?;

            for (i, b) in c.hbands.iter().enumerate() {
                let color = PALETTE_BANDS[i % PALETTE_BANDS.len()];
                let (lo, hi) = (axis_value(b.lo, ly), axis_value(b.hi, ly));
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x_range.0, lo), (x_range.1, hi)],
                        color.mix(0.18).filled(),
                    )))
                    .map_err(err)?
                    .label(&b.label)
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 6), (x + 18, y + 6)], color.mix(0.35).filled())
                    });
                let mid = (lo + hi) / 2.0;
                chart
                    .draw_series(LineSeries::new(
                        [(x_range.0, mid), (x_range.1, mid)],
                        color.mix(0.6).stroke_width(1),
                    ))
                    .map_err(err)?;
            }

            for s in &c.series {
                let color = color_for(&s.label);
                if !s.band.is_empty() {
                    let mut poly: Vec<(f64, f64)> = s
                        .band
                        .iter()
                        .map(|b| (axis_value(b.0, lx), axis_value(b.2, ly)))
                        .collect();
                    poly.extend(
                        s.band
                            .iter()
                            .rev()
                            .map(|b| (axis_value(b.0, lx), axis_value(b.1, ly))),
                    );
                    chart
                        .draw_series(std::iter::once(Polygon::new(poly, color.mix(0.2).filled())))
                        .map_err(err)?;
                }
                if !s.error_bars.is_empty() {
                    chart
                        .draw_series(s.error_bars.iter().map(|b| {
                            ErrorBar::new_vertical(
                                axis_value(b.0, lx),
                                axis_value(b.1, ly),
                                (axis_value(b.1, ly) + axis_value(b.2, ly)) / 2.0,
                                axis_value(b.2, ly),
                                color.stroke_width(1),
                                8,
                            )
                        }))
                        .map_err(err)?;
                }
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .map(|p| (axis_value(p.0, lx), axis_value(p.1, ly)))
                    .filter(|p| p.0.is_finite() && p.1.is_finite())
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(err)?
                    .label(&s.label)
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 18, y)], color.stroke_width(3))
                    });
                if pts.len() <= 40 {
                    chart
                        .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
                        .map_err(err)?;
                }
            }

            for (x, label) in &c.vlines {
                let x = axis_value(*x, lx);
                chart
                    .draw_series(DashedLineSeries::new(
                        [(x, y_range.0), (x, y_range.1)],
                        6,
                        4,
                        BLACK.stroke_width(1),
                    ))
                    .map_err(err)?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        label.clone(),
                        (x, y_range.1 - (y_range.1 - y_range.0) * 0.03),
                        (FONT, 14),
                    )))
                    .map_err(err)?;
            }

            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font((FONT, 15))
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(err)?;
            Ok(())
        }
    }
}

const PALETTE_BANDS: [RGBColor; 4] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

/// Writes `<stem>.png` and `<stem>.svg`: one bar per category, stacked by layer.
pub fn stacked_bars(c: &StackedBars, out_stem: &Path) -> Result<()> {
    render_both(out_stem, c)
}

impl Figure for StackedBars {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let c = self;
        let n = c.categories.len();
        let totals: Vec<f64> = (0..n)
            .map(|i| {
                c.stacks
                    .iter()
                    .map(|s| s.1.get(i).copied().unwrap_or(0.0))
                    .sum()
            })
            .collect();
        let top = totals.iter().copied().fold(0.0f64, f64::max).max(1e-12) * 1.08;
        {
            root.fill(&WHITE).map_err(err)?;
            let mut chart = ChartBuilder::on(root)
                .caption(&c.title, (FONT, 24))
                .margin(16)
                .x_label_area_size(56)
                .y_label_area_size(80)
                .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0.0..top)
                .map_err(err)?;
            let cats = c.categories.clone();
            chart
                .configure_mesh()
                .x_desc(&c.x_label)
                .y_desc(&c.y_label)
                .x_labels(n.max(1))
                .x_label_formatter(&|v| {
                    let i = v.round();
                    if (v - i).abs() < 1e-6 && i >= 0.0 {
                        cats.get(i as usize).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                })
                .y_label_formatter(&|v| tick_label(*v, false))
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 17))
                .disable_x_mesh()
                .draw()
                .map_err(err)?;
            let mut base = vec![0.0; n];
            for (label, values) in &c.stacks {
                let color = color_for(label);
                let bars: Vec<_> = (0..n)
                    .map(|i| {
                        let v = values.get(i).copied().unwrap_or(0.0);
                        let r = Rectangle::new(
                            [(i as f64 - 0.35, base[i]), (i as f64 + 0.35, base[i] + v)],
                            color.filled(),
                        );
                        base[i] += v;
                        r
                    })
                    .collect();
                chart
                    .draw_series(bars)
                    .map_err(err)?
                    .label(label)
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font((FONT, 14))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(err)?;
            Ok(())
        }
    }
}

/// Writes `<stem>.png` and `<stem>.svg`: points per group, and `front` as a line.
pub fn scatter(c: &Scatter, out_stem: &Path) -> Result<()> {
    render_both(out_stem, c)
}

impl Figure for Scatter {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let c = self;
        let all = || {
            c.groups
                .iter()
                .flat_map(|g| g.1.iter())
                .chain(c.front.iter())
        };
        let x_range = span(all().map(|p| p.0));
        let y_range = span(all().map(|p| p.1));
        {
            root.fill(&WHITE).map_err(err)?;
            let mut chart = ChartBuilder::on(root)
                .caption(&c.title, (FONT, 24))
                .margin(16)
                .x_label_area_size(48)
                .y_label_area_size(80)
                .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc(&c.x_label)
                .y_desc(&c.y_label)
                .x_label_formatter(&|v| tick_label(*v, false))
                .y_label_formatter(&|v| tick_label(*v, false))
                .label_style((FONT, 15))
                .axis_desc_style((FONT, 17))
                .draw()
                .map_err(err)?;
            for (label, pts) in &c.groups {
                let color = color_for(label);
                chart
                    .draw_series(
                        pts.iter()
                            .map(|p| Circle::new(*p, 4, color.mix(0.7).filled())),
                    )
                    .map_err(err)?
                    .label(label)
                    .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
            }
            if !c.front.is_empty() {
                let mut front = c.front.clone();
                front.sort_by(|a, b| a.0.total_cmp(&b.0));
                chart
                    .draw_series(LineSeries::new(front, BLACK.stroke_width(2)))
                    .map_err(err)?
                    .label("Pareto front")
                    .legend(|(x, y)| {
                        PathElement::new([(x, y), (x + 18, y)], BLACK.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font((FONT, 15))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(err)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fixar-plot-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join(name)
    }

    #[test]
    fn line_chart_writes_png_and_svg_with_title_and_labels() {
        let stem = tmp("curve");
        let chart = LineChart {
            title: "TD3 Pendulum-v1".into(),
            x_label: "environment steps".into(),
            y_label: "eval return".into(),
            series: vec![Series {
                label: "fxp32".into(),
                points: vec![(0.0, -1200.0), (1000.0, -600.0), (2000.0, -180.0)],
                band: vec![
                    (0.0, -1300.0, -1100.0),
                    (1000.0, -700.0, -500.0),
                    (2000.0, -250.0, -150.0),
                ],
                error_bars: vec![(2000.0, -250.0, -150.0)],
            }],
            hbands: vec![HBand {
                label: "float32".into(),
                lo: -200.0,
                hi: -160.0,
            }],
            vlines: vec![(1000.0, "chosen".into())],
            log_x: false,
            log_y: false,
            x_categories: Vec::new(),
        };
        line_chart(&chart, &stem).unwrap();
        let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
        for text in [
            "TD3 Pendulum-v1",
            "environment steps",
            "eval return",
            "fxp32",
            "float32",
        ] {
            assert!(svg.contains(text), "svg lacks {text}");
        }
        let png = std::fs::read(stem.with_extension("png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }

    #[test]
    fn stacked_bars_and_scatter_write_both_files() {
        let stem = tmp("phases");
        stacked_bars(
            &StackedBars {
                title: "cycles per phase".into(),
                x_label: "mode".into(),
                y_label: "cycles".into(),
                categories: vec!["fxp32".into(), "fxp16".into()],
                stacks: vec![
                    ("forward".into(), vec![10.0, 5.0]),
                    ("backward".into(), vec![20.0, 10.0]),
                ],
            },
            &stem,
        )
        .unwrap();
        assert!(stem.with_extension("png").exists() && stem.with_extension("svg").exists());
        let stem = tmp("pareto");
        scatter(
            &Scatter {
                title: "IPS vs IPS/W".into(),
                x_label: "IPS".into(),
                y_label: "IPS/W".into(),
                groups: vec![("adaptive".into(), vec![(1.0, 2.0), (2.0, 1.0)])],
                front: vec![(1.0, 2.0), (2.0, 1.0)],
            },
            &stem,
        )
        .unwrap();
        let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
        assert!(svg.contains("Pareto front"));
    }

    #[test]
    fn color_for_is_stable_and_distinguishes_strategies() {
        assert_eq!(color_for("ptq"), color_for("PTQ"));
        assert_ne!(color_for("ptq"), color_for("range"));
        assert_eq!(color_for("some label"), color_for("some label"));
    }
}
