//! The one place that writes markdown and HTML. Reports as data: sections of
//! paragraphs, tables and figures, rendered to markdown (figures linked) and to one
//! self-contained HTML file (figures embedded as base64 PNG); and the markdown pieces
//! ([`heading`], [`Table::to_markdown`], [`bullets`]) that documents written line by
//! line (`qat.md`, a sweep's `results.md`, the accelerator report) are built from.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine as _;

/// How a table column is aligned in markdown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Align {
    #[default]
    Left,
    Right,
}

#[derive(Clone, Debug, Default)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Per column; missing columns are left-aligned.
    pub align: Vec<Align>,
    /// The alignment row spaced like the others (`| --- | ---: |`) instead of `|---|---:|`.
    pub spaced: bool,
}

#[derive(Clone, Debug)]
pub enum Block {
    Paragraph(String),
    Table(Table),
    /// A PNG written by `runs::plot` (path relative to the report's directory or absolute),
    /// with its caption.
    Figure {
        png: PathBuf,
        caption: String,
    },
    /// A preformatted block (e.g. a format listing).
    Code(String),
}

#[derive(Clone, Debug)]
pub struct Section {
    pub heading: String,
    pub blocks: Vec<Block>,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub title: String,
    pub sections: Vec<Section>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table::with_header(header.iter().map(|s| s.to_string()).collect())
    }

    pub fn with_header(header: Vec<String>) -> Self {
        Table {
            header,
            rows: Vec::new(),
            align: Vec::new(),
            spaced: false,
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Right-aligns column `col` (numbers).
    pub fn right(mut self, col: usize) -> Self {
        if self.align.len() <= col {
            self.align.resize(col + 1, Align::Left);
        }
        self.align[col] = Align::Right;
        self
    }

    /// Columns aligned by letter, `l` or `r` (`"lrr"`).
    pub fn aligned(mut self, cols: &str) -> Self {
        self.align = cols
            .chars()
            .map(|c| if c == 'r' { Align::Right } else { Align::Left })
            .collect();
        self
    }

    /// Writes the alignment row spaced (`| --- | ---: |`).
    pub fn spaced(mut self) -> Self {
        self.spaced = true;
        self
    }

    /// `| a | b |`, the alignment row, then one line per row.
    pub fn to_markdown(&self) -> String {
        let mut s = format!("| {} |\n|", self.header.join(" | "));
        let sp = if self.spaced { " " } else { "" };
        for i in 0..self.header.len() {
            let rule = match self.align.get(i).copied().unwrap_or_default() {
                Align::Left => "---",
                Align::Right => "---:",
            };
            let _ = write!(s, "{sp}{rule}{sp}|");
        }
        s.push('\n');
        for r in &self.rows {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        s
    }
}

/// A markdown heading line: `## text`.
pub fn heading(level: usize, text: &str) -> String {
    format!("{} {text}\n", "#".repeat(level))
}

/// A markdown bullet list, one `- item` line each.
pub fn bullets<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|i| format!("- {}\n", i.as_ref()))
        .collect()
}

impl Section {
    pub fn new(heading: impl Into<String>) -> Self {
        Section {
            heading: heading.into(),
            blocks: Vec::new(),
        }
    }

    pub fn text(mut self, t: impl Into<String>) -> Self {
        self.blocks.push(Block::Paragraph(t.into()));
        self
    }

    pub fn table(mut self, t: Table) -> Self {
        self.blocks.push(Block::Table(t));
        self
    }

    pub fn figure(mut self, png: impl Into<PathBuf>, caption: impl Into<String>) -> Self {
        self.blocks.push(Block::Figure {
            png: png.into(),
            caption: caption.into(),
        });
        self
    }

    pub fn code(mut self, t: impl Into<String>) -> Self {
        self.blocks.push(Block::Code(t.into()));
        self
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Inline markdown used in paragraphs: `code` spans and **bold**; everything else escaped.
fn inline_html(s: &str) -> String {
    let mut out = String::new();
    let mut code = false;
    let mut bold = false;
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('`') {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
            rest = r;
        } else if let (false, Some(r)) = (code, rest.strip_prefix("**")) {
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
            rest = r;
        } else {
            let c = rest.chars().next().unwrap();
            out.push_str(&escape(&c.to_string()));
            rest = &rest[c.len_utf8()..];
        }
    }
    if code {
        out.push_str("</code>");
    }
    if bold {
        out.push_str("</strong>");
    }
    out
}

impl Report {
    pub fn to_markdown(&self, base: &Path) -> String {
        let mut s = heading(1, &self.title);
        for sec in &self.sections {
            let _ = write!(s, "\n{}", heading(2, &sec.heading));
            for b in &sec.blocks {
                match b {
                    Block::Paragraph(t) => {
                        let _ = write!(s, "\n{t}\n");
                    }
                    Block::Code(t) => {
                        let _ = write!(s, "\n```\n{t}\n```\n");
                    }
                    Block::Table(t) => {
                        let _ = write!(s, "\n{}", t.to_markdown());
                    }
                    Block::Figure { png, caption } => {
                        let rel = png.strip_prefix(base).unwrap_or(png);
                        let _ = write!(s, "\n![{caption}]({})\n\n*{caption}*\n", rel.display());
                    }
                }
            }
        }
        s
    }

    /// One HTML file with every figure embedded; fails if a figure is missing.
    pub fn to_html(&self, base: &Path) -> Result<String> {
        let mut s = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:4px 8px;text-align:left}}th{{background:#eee}}img{{max-width:100%}}figure{{margin:1.5em 0}}figcaption{{font-style:italic;color:#555}}pre{{background:#f5f5f5;padding:8px;overflow-x:auto}}code{{background:#f5f5f5}}</style></head><body>\n<h1>{t}</h1>\n",
            t = escape(&self.title)
        );
        for sec in &self.sections {
            let _ = writeln!(s, "<h2>{}</h2>", inline_html(&sec.heading));
            for b in &sec.blocks {
                match b {
                    Block::Paragraph(t) => {
                        let _ = writeln!(s, "<p>{}</p>", inline_html(t));
                    }
                    Block::Code(t) => {
                        let _ = writeln!(s, "<pre>{}</pre>", escape(t));
                    }
                    Block::Table(t) => {
                        s.push_str("<table><tr>");
                        for h in &t.header {
                            let _ = write!(s, "<th>{}</th>", inline_html(h));
                        }
                        s.push_str("</tr>\n");
                        for r in &t.rows {
                            s.push_str("<tr>");
                            for c in r {
                                let _ = write!(s, "<td>{}</td>", inline_html(c));
                            }
                            s.push_str("</tr>\n");
                        }
                        s.push_str("</table>\n");
                    }
                    Block::Figure { png, caption } => {
                        // A path that exists is taken as given (absolute or relative to the
                        // working directory); otherwise it is relative to the report.
                        let path = if png.exists() {
                            png.clone()
                        } else {
                            base.join(png)
                        };
                        let bytes = std::fs::read(&path)
                            .with_context(|| format!("embedding figure {}", path.display()))?;
                        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                        let _ = writeln!(
                            s,
                            "<figure><img alt=\"{c}\" src=\"data:image/png;base64,{data}\"><figcaption>{c}</figcaption></figure>",
                            c = escape(caption)
                        );
                    }
                }
            }
        }
        s.push_str("</body></html>\n");
        Ok(s)
    }

    /// Writes `<dir>/<stem>.md` and `<dir>/<stem>.html`.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let md = dir.join(format!("{stem}.md"));
        let html = dir.join(format!("{stem}.html"));
        let html_text = self.to_html(dir)?;
        crate::rundir::write_atomic(&md, self.to_markdown(dir))
            .with_context(|| format!("writing {}", md.display()))?;
        crate::rundir::write_atomic(&html, html_text)
            .with_context(|| format!("writing {}", html.display()))?;
        Ok((md, html))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_rows_compact_or_spaced() {
        let t = Table::new(&["a", "b"]).aligned("lr");
        assert_eq!(t.to_markdown(), "| a | b |\n|---|---:|\n");
        assert_eq!(t.spaced().to_markdown(), "| a | b |\n| --- | ---: |\n");
    }

    #[test]
    fn html_embeds_figures_and_escapes_text() {
        let dir = std::env::temp_dir().join(format!("fixar-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stem = dir.join("fig");
        crate::plot::line_chart(
            &crate::plot::LineChart {
                title: "t".into(),
                x_label: "x".into(),
                y_label: "y".into(),
                series: vec![crate::plot::Series {
                    label: "a".into(),
                    points: vec![(0.0, 1.0), (1.0, 2.0)],
                    ..Default::default()
                }],
                ..Default::default()
            },
            &stem,
        )
        .unwrap();
        let mut t = Table::new(&["width", "format"]);
        t.row(vec!["16".into(), "`ap_fixed<16,6>`".into()]);
        let r = Report {
            title: "R & D".into(),
            sections: vec![Section::new("Results")
                .text("a <b> c")
                .table(t)
                .figure(dir.join("fig.png"), "curve")],
        };
        let (md, html) = r.write(&dir, "report").unwrap();
        let html = std::fs::read_to_string(html).unwrap();
        assert!(html.contains("data:image/png;base64,iVBOR"), "PNG embedded");
        assert!(html.contains("R &amp; D") && html.contains("a &lt;b&gt; c"));
        assert!(html.contains("<code>ap_fixed&lt;16,6&gt;</code>"));
        let md = std::fs::read_to_string(md).unwrap();
        assert!(md.contains("![curve](fig.png)"));
        let missing = Report {
            title: "x".into(),
            sections: vec![Section::new("s").figure("nope.png", "n")],
        };
        assert!(missing.to_html(&dir).is_err());
    }
}
