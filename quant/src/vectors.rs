//! Checking this crate against reference vectors in the format of
//! `shared/testdata/ap_fixed/` (`from_f64.csv`: `format,input,raw`; `ops.csv`:
//! `op,a_format,a_raw,b_format,b_raw,out_format,out_raw`), as `fixar fx verify` and the
//! tests do.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::{add, cast, from_f64, mul, sub, FxFormat};

/// One row that did not reproduce (or could not be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub file: PathBuf,
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    /// What was computed, e.g. `mul ap_fixed<8,3,...>(5) * ap_fixed<...>(7) -> ap_fixed<...>`.
    pub what: String,
    pub expected: String,
    pub got: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: expected {}, got {}",
            self.file.display(),
            self.line,
            self.what,
            self.expected,
            self.got
        )
    }
}

/// Totals over the checked rows and the first mismatches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub passed: u64,
    pub failed: u64,
    /// Files checked.
    pub files: Vec<PathBuf>,
    /// The first `keep` mismatches (see [`verify_path`]).
    pub mismatches: Vec<Mismatch>,
}

/// Why a path could not be checked at all (as opposed to rows that fail).
#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("{0}: no such file or directory")]
    Missing(PathBuf),
    #[error("{0}: directory holds neither from_f64.csv nor ops.csv")]
    Empty(PathBuf),
    #[error("{path}: header `{header}` is neither `format,input,raw` nor `op,a_format,a_raw,b_format,b_raw,out_format,out_raw`")]
    Header { path: PathBuf, header: String },
    #[error("{path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
}

/// Checks a directory (its `from_f64.csv` and/or `ops.csv`) or one such file; keeps the
/// first `keep` mismatches. Rows that cannot be parsed count as failures.
pub fn verify_path(path: &Path, keep: usize) -> Result<VerifyReport, VectorError> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let found: Vec<PathBuf> = ["from_f64.csv", "ops.csv"]
            .iter()
            .map(|n| path.join(n))
            .filter(|p| p.is_file())
            .collect();
        if found.is_empty() {
            return Err(VectorError::Empty(path.to_path_buf()));
        }
        found
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        return Err(VectorError::Missing(path.to_path_buf()));
    };
    let mut report = VerifyReport::default();
    for file in files {
        verify_file(&file, keep, &mut report)?;
        report.files.push(file);
    }
    Ok(report)
}

const FROM_F64_HEADER: [&str; 3] = ["format", "input", "raw"];
const OPS_HEADER: [&str; 7] = [
    "op",
    "a_format",
    "a_raw",
    "b_format",
    "b_raw",
    "out_format",
    "out_raw",
];

fn verify_file(path: &Path, keep: usize, report: &mut VerifyReport) -> Result<(), VectorError> {
    let csv_err = |source| VectorError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(csv_err)?;
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let is_ops = if header == FROM_F64_HEADER {
        false
    } else if header == OPS_HEADER {
        true
    } else {
        return Err(VectorError::Header {
            path: path.to_path_buf(),
            header: header.join(","),
        });
    };
    for record in reader.records() {
        let record = record.map_err(csv_err)?;
        let line = record.position().map_or(0, |p| p.line());
        let fields: Vec<&str> = record.iter().map(str::trim).collect();
        let outcome = if is_ops {
            check_op(&fields)
        } else {
            check_from_f64(&fields)
        };
        match outcome {
            Ok(()) => report.passed += 1,
            Err((what, expected, got)) => {
                report.failed += 1;
                if report.mismatches.len() < keep {
                    report.mismatches.push(Mismatch {
                        file: path.to_path_buf(),
                        line,
                        what,
                        expected,
                        got,
                    });
                }
            }
        }
    }
    Ok(())
}

type RowFailure = (String, String, String);
type BinaryOp = fn(i64, &FxFormat, i64, &FxFormat, &FxFormat) -> i64;

fn unreadable(fields: &[&str], why: String) -> RowFailure {
    (fields.join(","), "a well-formed row".into(), why)
}

fn parse_format(fields: &[&str], s: &str) -> Result<FxFormat, RowFailure> {
    s.parse()
        .map_err(|e| unreadable(fields, format!("format `{s}`: {e}")))
}

/// A raw code as written (signed decimal, or unsigned up to 2^64 - 1) in the `i64` the
/// crate uses (bit pattern for unsigned 64-bit codes).
fn parse_raw(fields: &[&str], s: &str) -> Result<i64, RowFailure> {
    match s.parse::<i128>() {
        Ok(v) if v >= i64::MIN as i128 && v <= u64::MAX as i128 => Ok(v as i64),
        _ => Err(unreadable(
            fields,
            format!("raw `{s}` is not a 64-bit integer"),
        )),
    }
}

fn show_raw(raw: i64, fmt: &FxFormat) -> String {
    fmt.raw_value(raw).to_string()
}

fn check_from_f64(fields: &[&str]) -> Result<(), RowFailure> {
    if fields.len() != 3 {
        return Err(unreadable(
            fields,
            format!("{} fields, expected 3", fields.len()),
        ));
    }
    let fmt = parse_format(fields, fields[0])?;
    let x: f64 = fields[1]
        .parse()
        .map_err(|_| unreadable(fields, format!("input `{}` is not a number", fields[1])))?;
    let want = parse_raw(fields, fields[2])?;
    let what = format!("{fmt} = {}", fields[1]);
    match from_f64(x, &fmt) {
        Ok(got) if fmt.raw_value(got) == fmt.raw_value(want) => Ok(()),
        Ok(got) => Err((what, show_raw(want, &fmt), show_raw(got, &fmt))),
        Err(e) => Err((what, show_raw(want, &fmt), format!("error: {e}"))),
    }
}

fn check_op(fields: &[&str]) -> Result<(), RowFailure> {
    if fields.len() != 7 {
        return Err(unreadable(
            fields,
            format!("{} fields, expected 7", fields.len()),
        ));
    }
    let op = fields[0];
    let fa = parse_format(fields, fields[1])?;
    let a = parse_raw(fields, fields[2])?;
    let out = parse_format(fields, fields[5])?;
    let want = parse_raw(fields, fields[6])?;
    let (got, what) = if op == "cast" {
        (
            cast(a, &fa, &out),
            format!("cast {fa}({}) -> {out}", fields[2]),
        )
    } else {
        let fb = parse_format(fields, fields[3])?;
        let b = parse_raw(fields, fields[4])?;
        let (f, sym): (BinaryOp, &str) = match op {
            "add" => (add, "+"),
            "sub" => (sub, "-"),
            "mul" => (mul, "*"),
            _ => {
                return Err(unreadable(
                    fields,
                    format!("op `{op}` (expected add, sub, mul or cast)"),
                ))
            }
        };
        (
            f(a, &fa, b, &fb, &out),
            format!("{fa}({}) {sym} {fb}({}) -> {out}", fields[2], fields[4]),
        )
    };
    if out.raw_value(got) == out.raw_value(want) {
        Ok(())
    } else {
        Err((what, show_raw(want, &out), show_raw(got, &out)))
    }
}
