//! Our aggregate statistics against rliable's own (`agents/tests/peers/rliable_peer.py`
//! runs rliable 1.x from the project's venv on the same returns).
//!
//! Bootstrap generators differ (numpy's global MT19937 in rliable, ChaCha8 in fixar), so
//! the peer also records the index draws rliable consumed and we replay them through
//! `stats::stratified_bootstrap` / `independent_bootstrap`: the point estimates and the
//! intervals from those draws must equal rliable's to 1e-9 relative (only summation order
//! differs). Our own seeded intervals are checked against rliable's replicate
//! distribution: each endpoint must sit at the 2.5% / 97.5% point of it within 1
//! percentage point (the Monte Carlo error of rliable's 4,000 replicates here is ~0.25
//! points; 50,000 as in our files would take rliable's Python loop minutes).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use agents::stats::{
    independent_bootstrap, iqm_ci_tasks, iqm_of_tasks, percentile_interval,
    probability_of_improvement, probability_of_improvement_ci, stratified_bootstrap,
};
use serde_json::{json, Value};

/// rliable's replicates per estimate in this test (its default is 50,000, ours too).
const REPS: usize = 4_000;

fn sets() -> BTreeMap<&'static str, Vec<Vec<f64>>> {
    BTreeMap::from([
        // Pendulum-like finals over 5 seeds, one collapsed seed; a rung sharing a value.
        ("fxp32", vec![vec![-148.2, -151.9, -139.4, -402.7, -160.3]]),
        ("w8", vec![vec![-155.0, -151.9, -149.7, -170.2, -162.5]]),
        (
            "ten_seeds",
            vec![vec![
                -1200.5, -150.0, -150.0, -148.25, -133.0, -171.5, -160.0, -149.0, -900.0, -140.5,
            ]],
        ),
        (
            "two_tasks",
            vec![vec![10.0, 12.5, 9.0, 30.0], vec![-1.0, 0.5, 0.25, 0.0]],
        ),
        (
            "two_tasks_b",
            vec![vec![11.0, 12.5, 8.0, 9.5], vec![0.0, 0.5, -2.0, 0.0]],
        ),
    ])
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300),
        "{what}: fixar {a} vs rliable {b}"
    );
}

fn replay(draws: &Value) -> impl FnMut(usize) -> usize {
    let d: Vec<usize> = draws
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let mut k = 0;
    move |n| {
        let i = d[k];
        k += 1;
        assert!(i < n, "draw {i} out of 0..{n}");
        i
    }
}

/// Where `x` falls in the empirical distribution of `reps`: (P(X < x), P(X <= x)).
fn cdf_bracket(reps: &[f64], x: f64) -> (f64, f64) {
    let n = reps.len() as f64;
    let below = reps.iter().filter(|&&r| r < x).count() as f64;
    let at_or_below = reps.iter().filter(|&&r| r <= x).count() as f64;
    (below / n, at_or_below / n)
}

fn at_quantile(reps: &[f64], x: f64, q: f64, what: &str) {
    let (lo, hi) = cdf_bracket(reps, x);
    assert!(
        lo <= q + 0.01 && hi >= q - 0.01,
        "{what}: our endpoint {x} sits at [{lo}, {hi}] of rliable's replicates, not at {q}"
    );
}

#[test]
fn iqm_and_probability_of_improvement_match_rliable() {
    let sets = sets();
    let pairs = [
        ("w8", "fxp32"),
        ("fxp32", "fxp32"),
        ("two_tasks", "two_tasks_b"),
    ];
    let input = json!({"seed": 11, "reps": REPS, "iqm": sets, "poi": pairs});
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/rliable_peer.py");
    let mut child = Command::new(envs::bridge::python_executable())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the project's Python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "rliable peer failed (is rliable installed? scripts/setup-peers installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peer: Value = serde_json::from_slice(&out.stdout).unwrap();

    let iqm_stat = |s: &[Vec<f64>]| iqm_of_tasks(s).unwrap();
    for (name, tasks) in &sets {
        let r = &peer["iqm"][name];
        let ours = iqm_ci_tasks(tasks).unwrap();
        close(ours.estimate, r["estimate"].as_f64().unwrap(), name);
        // rliable's own replicates, from its draws.
        let replicates = stratified_bootstrap(tasks, iqm_stat, REPS, &mut replay(&r["draws"]));
        let (lo, hi) = percentile_interval(replicates.clone(), 0.95);
        close(lo, r["ci"][0].as_f64().unwrap(), &format!("{name} CI low"));
        close(hi, r["ci"][1].as_f64().unwrap(), &format!("{name} CI high"));
        at_quantile(&replicates, ours.ci_low, 0.025, name);
        at_quantile(&replicates, ours.ci_high, 0.975, name);
    }
    let poi_stat = |a: &[Vec<f64>], b: &[Vec<f64>]| probability_of_improvement(a, b).unwrap();
    for (i, (x, y)) in pairs.iter().enumerate() {
        let r = &peer["poi"][i];
        let what = format!("P({x} > {y})");
        let ours = probability_of_improvement_ci(&sets[x], &sets[y]).unwrap();
        close(ours.estimate, r["estimate"].as_f64().unwrap(), &what);
        let replicates =
            independent_bootstrap(&sets[x], &sets[y], poi_stat, REPS, &mut replay(&r["draws"]));
        let (lo, hi) = percentile_interval(replicates.clone(), 0.95);
        close(lo, r["ci"][0].as_f64().unwrap(), &format!("{what} CI low"));
        close(hi, r["ci"][1].as_f64().unwrap(), &format!("{what} CI high"));
        at_quantile(&replicates, ours.ci_low, 0.025, &what);
        at_quantile(&replicates, ours.ci_high, 0.975, &what);
    }
    // The identical-arrays rule and the tie rule are both exercised above.
    assert_eq!(peer["poi"][1]["estimate"].as_f64(), Some(0.5));
}
