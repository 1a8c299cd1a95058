//! A synthetic deployed actor for the generator tests: formats that exercise every
//! rounding and overflow mode, and a helper that compiles and runs a target's bench.

use std::path::{Path, PathBuf};
use std::process::Command;

use quant::FxFormat;

use super::{DeployedActor, DeployedLayer};
use crate::mlp::Activation;

pub fn fmt(s: &str) -> FxFormat {
    s.parse().unwrap()
}

/// A test's scratch directory: removed when dropped, unless the test is panicking
/// (then it stays for inspection, and its path is in the failure message).
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A fresh, empty scratch directory for one test.
pub fn scratch(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("fixar-deploy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

/// A deterministic stream of non-negative draws.
fn draws(seed: u64) -> impl FnMut() -> i64 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as i64
    }
}

/// A `k x n` layer with formats `[w, b, z, a]` and codes drawn uniformly over the weight
/// and bias formats.
fn layer(
    name: &str,
    (k, n): (usize, usize),
    [w, b, z, a]: [&str; 4],
    activation: Activation,
    next: &mut dyn FnMut() -> i64,
) -> DeployedLayer {
    let (wf, bf) = (fmt(w), fmt(b));
    let mut draw = |f: &FxFormat| {
        let span = (f.raw_max() as i128 - f.raw_min() as i128 + 1) as i64;
        f.raw_min() + next().rem_euclid(span)
    };
    DeployedLayer {
        name: name.into(),
        in_dim: k,
        out_dim: n,
        weight: (0..k * n).map(|_| draw(&wf)).collect(),
        weight_fmt: wf,
        bias: (0..n).map(|_| draw(&bf)).collect(),
        bias_fmt: bf,
        preact_fmt: fmt(z),
        activation,
        act_fmt: fmt(a),
    }
}

/// [`synthetic_actor`] with every weight the nearest code of at most `k` signed powers
/// of two, exported multiplier-free.
pub fn synthetic_pow2_actor(seed: u64, k: u32) -> DeployedActor {
    let mut a = synthetic_actor(seed);
    for l in &mut a.layers {
        let book = crate::pow2::Pow2Codebook::new(&l.weight_fmt, k).unwrap();
        for w in &mut l.weight {
            *w = book.project_raw(quant::to_f64(*w, &l.weight_fmt));
        }
    }
    a.shift_add = true;
    a
}

/// A small actor whose formats exercise every rounding and overflow mode, with weights
/// large enough that pre-activations overflow their formats now and then. Its layers sum
/// in `int32_t`, `int32_t` and `int64_t` in the C target, the second over blocks of 64 outputs.
pub fn synthetic_actor(seed: u64) -> DeployedActor {
    let mut next = draws(seed);
    let layers = vec![
        layer(
            "fc1",
            (3, 16),
            [
                "ap_fixed<12,2,AP_RND_CONV,AP_SAT>",
                "ap_fixed<10,3>",
                "ap_fixed<14,5,AP_RND,AP_WRAP>",
                "ap_fixed<10,4,AP_RND_ZERO,AP_SAT_SYM>",
            ],
            Activation::Relu,
            &mut next,
        ),
        layer(
            "fc2",
            (16, 64),
            [
                "ap_fixed<16,1,AP_TRN_ZERO,AP_SAT>",
                "ap_fixed<32,8,AP_RND_INF,AP_SAT>",
                "ap_fixed<13,4,AP_RND_MIN_INF,AP_SAT_ZERO>",
                "ap_ufixed<9,3,AP_RND_INF,AP_WRAP>",
            ],
            Activation::Relu,
            &mut next,
        ),
        layer(
            "fc3",
            (64, 2),
            [
                "ap_fixed<32,3,AP_RND_CONV,AP_SAT>",
                "ap_fixed<24,6,AP_RND_CONV,AP_SAT>",
                "ap_fixed<16,4,AP_RND_CONV,AP_SAT>",
                "ap_fixed<12,2,AP_RND_CONV,AP_SAT>",
            ],
            // Squashes into action bounds of different widths.
            Activation::Tanh {
                scale: vec![0.5, 1.75],
                offset: vec![0.0, 0.25],
            },
            &mut next,
        ),
    ];
    DeployedActor {
        origin: "synthetic test actor".into(),
        input_fmt: fmt("ap_fixed<16,5,AP_RND_CONV,AP_SAT>"),
        layers,
        shift_add: false,
    }
}

/// A small actor whose layers take the C target's other routes: 16-bit products summed
/// in two `int32_t` input limbs over blocks of 64 outputs, 16 x 32-bit products in `int64_t` cast with a left shift
/// (the pre-activation has more fraction bits than the accumulator) into a wrapping
/// format, and 32 x 32-bit products in the 128-bit emulation.
pub fn synthetic_wide_actor(seed: u64) -> DeployedActor {
    let mut next = draws(seed);
    let layers = vec![
        layer(
            "fc1",
            (6, 64),
            [
                "ap_fixed<16,2,AP_TRN,AP_WRAP>",
                "ap_fixed<16,4,AP_RND,AP_SAT>",
                "ap_fixed<16,8,AP_RND_CONV,AP_SAT>",
                "ap_fixed<16,8,AP_RND_CONV,AP_SAT>",
            ],
            Activation::Relu,
            &mut next,
        ),
        layer(
            "fc2",
            (64, 16),
            [
                "ap_fixed<32,8,AP_RND_CONV,AP_SAT>",
                "ap_fixed<32,8,AP_TRN_ZERO,AP_SAT>",
                "ap_fixed<24,-10,AP_RND_INF,AP_WRAP>",
                "ap_fixed<32,16,AP_RND_MIN_INF,AP_SAT_SYM>",
            ],
            Activation::Identity,
            &mut next,
        ),
        layer(
            "fc3",
            (16, 2),
            [
                "ap_fixed<32,3,AP_RND_CONV,AP_SAT>",
                "ap_fixed<32,6,AP_RND_CONV,AP_SAT>",
                "ap_fixed<16,4,AP_RND_ZERO,AP_SAT>",
                "ap_fixed<12,2,AP_RND_CONV,AP_SAT>",
            ],
            Activation::Tanh {
                scale: vec![1.0, 2.0],
                offset: vec![0.0, -0.5],
            },
            &mut next,
        ),
    ];
    DeployedActor {
        origin: "synthetic wide test actor".into(),
        input_fmt: fmt("ap_fixed<16,6,AP_RND_CONV,AP_SAT>"),
        layers,
        shift_add: false,
    }
}

/// Compiles a bench in `dir` with `compile` (which must succeed), runs it on
/// `vectors.txt`: whether it passed, and its stdout.
pub fn run_bench(dir: &Path, compile: &mut Command) -> (bool, String) {
    let out = compile.current_dir(dir).output().expect("compiler runs");
    assert!(
        out.status.success(),
        "compile failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(dir.join("tb"))
        .arg("vectors.txt")
        .current_dir(dir)
        .output()
        .unwrap();
    (
        run.status.success(),
        String::from_utf8_lossy(&run.stdout).to_string(),
    )
}
