//! Every row of the HLS reference vectors reproduces.

use std::path::PathBuf;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("FIXAR_SHARED_DIR")).join("testdata/ap_fixed")
}

fn check(file: &str, min_rows: u64) {
    let report = quant::vectors::verify_path(&vectors_dir().join(file), 20).unwrap();
    for m in &report.mismatches {
        eprintln!("{m}");
    }
    assert_eq!(
        report.failed,
        0,
        "{} of {} rows differ",
        report.failed,
        report.passed + report.failed
    );
    assert!(
        report.passed >= min_rows,
        "only {} rows checked",
        report.passed
    );
}

#[test]
fn every_from_f64_row_matches_hls() {
    check("from_f64.csv", 7000);
}

#[test]
fn every_ops_row_matches_hls() {
    check("ops.csv", 9000);
}

#[test]
fn integer_path_alone_matches_every_from_f64_row() {
    let mut reader = csv::Reader::from_path(vectors_dir().join("from_f64.csv")).unwrap();
    let mut n = 0;
    for rec in reader.records() {
        let rec = rec.unwrap();
        let fmt: quant::FxFormat = rec[0].parse().unwrap();
        let x: f64 = rec[1].parse().unwrap();
        let want = rec[2].parse::<i128>().unwrap() as i64;
        assert_eq!(quant::from_f64_exact(x, &fmt), Ok(want), "{fmt} = {x}");
        n += 1;
    }
    assert!(n >= 7000);
}
