//! The committed results of FIXAR's HalfCheetah campaign (`runs/results/fixar-halfcheetah`,
//! issue 20) are what main computes: seed 0 of the FXP32 variant, rerun from its
//! committed `config.toml` for 10,000 steps through the MuJoCo bridge, evaluates to the
//! committed `eval.csv` rows at steps 5,000 and 10,000 byte for byte (the actor's
//! initialisation, the exact integer evaluation, the env seeds).
//! `scripts/reproduce-fixar-halfcheetah VARIANT [SEED] [STEPS]` does the same for any
//! committed variant and longer budgets.

mod common;

use common::{fixar, workspace, Run, Scratch};

fn rows(path: &std::path::Path, steps: &[&str]) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    steps
        .iter()
        .map(|s| {
            text.lines()
                .find(|l| l.starts_with(&format!("{s},")))
                .unwrap_or_else(|| panic!("{}: no row at step {s}", path.display()))
                .to_string()
        })
        .collect()
}

#[test]
fn committed_fxp32_seed_0_reproduces_its_first_evaluations() {
    let variant = workspace().join("runs/results/fixar-halfcheetah/fxp32");
    let d = Scratch::new("fixar-results");
    let out = d.join("run");
    let r = fixar()
        .args(["-q", "train", "--seeds", "0", "--jobs", "1"])
        .arg("--config")
        .arg(variant.join("config.toml"))
        .args(["--set", "total_timesteps=10000", "--out"])
        .arg(&out)
        .run();
    assert!(r.success(), "{}", r.stderr);
    let steps = ["5000", "10000"];
    assert_eq!(
        rows(&out.join("seed_0/eval.csv"), &steps),
        rows(&variant.join("seed_0/eval.csv"), &steps)
    );
}
