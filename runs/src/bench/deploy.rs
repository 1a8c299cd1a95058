//! `fixar bench deploy`: the exported C actor's batch-1 inference, compiled with
//! `cc -O3 -march=native`, against libtorch's f32 batch-1 forward of the same actor.
//!
//! The actor is the checkpoint `fixar export --run` would export. Its C target goes to a
//! scratch directory with a timing harness that first runs every exported test vector and
//! counts mismatches against the golden integer inference (any mismatch fails the bench:
//! a fast wrong actor has no speed), then times `--calls` calls cycling through those
//! inputs. libtorch runs the same network with the deployed values in f32 (addmm per
//! layer, then ReLU or `tanh * scale + offset`) on one thread under `no_grad`, from input
//! tensors built beforehand. Rounds alternate C and libtorch so both see the same load;
//! medians over rounds are reported, the speedup is the ratio of the medians.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use agents::deploy::native::{int32_input_limit, max_code, Accumulation, LayerPlan};
use agents::deploy::{DeployedActor, Target};
use agents::mlp::Activation;
use anyhow::{anyhow, bail, Context, Result};
use tch::{Kind, Tensor};

use super::{median, Figures, Format, ScratchDir};
use crate::failure::config_error;

/// `fixar bench deploy`
#[derive(clap::Args, Debug)]
pub struct BenchDeployArgs {
    /// A run directory with a fixed-point actor checkpoint (what `fixar export --run` reads).
    #[arg(long)]
    pub run: PathBuf,
    /// Batch-1 calls per timed round (each side).
    #[arg(long, default_value_t = 20_000)]
    pub calls: u64,
    /// Timed rounds, alternating the C actor and libtorch; medians reported.
    #[arg(long, default_value_t = 7)]
    pub rounds: usize,
    /// Exported test vectors the compiled actor must reproduce (and the inputs timed).
    #[arg(long, default_value_t = 256)]
    pub vectors: usize,
    /// The C compiler.
    #[arg(long, default_value = "cc")]
    pub cc: String,
    /// What stdout gets.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Flags the harness is compiled with.
const CFLAGS: [&str; 2] = ["-O3", "-march=native"];

/// The timing harness: checks every vector against the golden outputs, then times
/// `calls` calls cycling through the inputs (after `calls / 10` untimed ones).
const HARNESS: &str = r#"/* fixar bench deploy: golden check, then batch-1 timing. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "fixar_actor.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    FILE *f;
    long n, in_dim, out_dim, t, i, calls, mismatches = 0;
    fixar_obs_t *xs;
    long long *want;
    fixar_action_t y[FIXAR_ACTOR_ACT_DIM];
    volatile long long sink = 0;
    double t0;
    if (argc != 3) { fprintf(stderr, "usage: bench vectors.txt calls\n"); return 2; }
    calls = atol(argv[2]);
    f = fopen(argv[1], "r");
    if (!f || fscanf(f, "%ld %ld %ld", &n, &in_dim, &out_dim) != 3 || n < 1
        || in_dim != FIXAR_ACTOR_OBS_DIM || out_dim != FIXAR_ACTOR_ACT_DIM) {
        fprintf(stderr, "%s: bad vectors file\n", argv[1]); return 2;
    }
    xs = malloc(sizeof *xs * n * in_dim);
    want = malloc(sizeof *want * n * out_dim);
    for (t = 0; t < n; ++t) {
        for (i = 0; i < in_dim; ++i) {
            long long v;
            if (fscanf(f, "%lld", &v) != 1) { fprintf(stderr, "short file\n"); return 2; }
            xs[t * in_dim + i] = (fixar_obs_t)v;
        }
        for (i = 0; i < out_dim; ++i)
            if (fscanf(f, "%lld", &want[t * out_dim + i]) != 1) { fprintf(stderr, "short file\n"); return 2; }
    }
    fclose(f);
    for (t = 0; t < n; ++t) {
        fixar_actor_infer(xs + t * in_dim, y);
        for (i = 0; i < out_dim; ++i) mismatches += y[i] != want[t * out_dim + i];
    }
    for (t = 0; t < calls / 10; ++t) { fixar_actor_infer(xs + (t % n) * in_dim, y); sink += y[0]; }
    t0 = now_s();
    for (t = 0; t < calls; ++t) { fixar_actor_infer(xs + (t % n) * in_dim, y); sink += y[0]; }
    printf("ns_per_call: %.3f\n", (now_s() - t0) / (double)calls * 1e9);
    printf("checked: %ld\nmismatches: %ld\n", n, mismatches);
    return 0;
}
"#;

/// One run of the compiled harness: (ns per call, vectors checked, mismatches).
fn run_harness(exe: &Path, dir: &Path, calls: u64) -> Result<(f64, u64, u64)> {
    let out = Command::new(exe)
        .arg(dir.join("vectors.txt"))
        .arg(calls.to_string())
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let field = |name: &str| -> Result<f64> {
        stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(": ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .ok_or_else(|| anyhow!("{} printed no {name}: {stdout}", exe.display()))
    };
    Ok((
        field("ns_per_call")?,
        field("checked")? as u64,
        field("mismatches")? as u64,
    ))
}

/// The actor in f32 for libtorch: per layer (weight `in x out`, bias, activation).
struct TorchActor(Vec<(Tensor, Tensor, Activation)>);

impl TorchActor {
    fn of(actor: &DeployedActor) -> TorchActor {
        let values = |codes: &[i64], f: &quant::FxFormat| -> Vec<f32> {
            codes.iter().map(|&c| quant::to_f64(c, f) as f32).collect()
        };
        TorchActor(
            actor
                .layers
                .iter()
                .map(|l| {
                    let w = Tensor::from_slice(&values(&l.weight, &l.weight_fmt))
                        .reshape([l.in_dim as i64, l.out_dim as i64]);
                    let b = Tensor::from_slice(&values(&l.bias, &l.bias_fmt));
                    (w, b, l.activation.clone())
                })
                .collect(),
        )
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for (w, b, act) in &self.0 {
            let z = b.addmm(&h, w);
            h = match act {
                Activation::Relu => z.relu(),
                Activation::Identity => z,
                Activation::Tanh { scale, offset } => {
                    z.tanh() * Tensor::from_slice(scale) + Tensor::from_slice(offset)
                }
            };
        }
        h
    }
}

/// Seconds per batch-1 forward over `calls` calls cycling through `inputs`.
fn time_libtorch(net: &TorchActor, inputs: &[Tensor], calls: u64) -> f64 {
    let _guard = tch::no_grad_guard();
    for x in inputs.iter().cycle().take((calls / 10) as usize) {
        let _ = net.forward(x);
    }
    let t = Instant::now();
    for x in inputs.iter().cycle().take(calls as usize) {
        let _ = net.forward(x);
    }
    t.elapsed().as_secs_f64() / calls as f64
}

/// `3-64-64-1`.
fn shape(actor: &DeployedActor) -> String {
    std::iter::once(actor.obs_dim())
        .chain(actor.layers.iter().map(|l| l.out_dim))
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

/// How each layer sums, e.g. `int32,int32-limbs/int32<=5218,int32`: a limb layer names
/// the largest input code magnitude for which a call takes its one `int32` pass.
fn sums(actor: &DeployedActor) -> String {
    let mut x = actor.input_fmt;
    actor
        .layers
        .iter()
        .map(|l| {
            let p = LayerPlan::of(&x, l);
            let x_in = std::mem::replace(&mut x, l.act_fmt);
            match p.accumulation {
                Accumulation::Int32 => "int32".to_string(),
                Accumulation::Int32Limbs { .. } => match int32_input_limit(l) {
                    Some(m) if m >= max_code(&x_in) => "int32".to_string(),
                    Some(m) => format!("int32-limbs/int32<={m}"),
                    None => "int32-limbs".to_string(),
                },
                Accumulation::Int64 => "int64".to_string(),
                Accumulation::Wide => "emulated-128".to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The `fixar bench deploy` command.
pub fn run(args: &BenchDeployArgs) -> Result<ExitCode> {
    if args.calls == 0 || args.rounds == 0 || args.vectors == 0 {
        return Err(config_error(
            "--calls, --rounds and --vectors must be positive",
        ));
    }
    let dir = crate::export::resolve_checkpoint_dir(&args.run)?;
    let actor = DeployedActor::load(&dir).context("loading the actor to deploy")?;
    let scratch = ScratchDir::new("deploy")?;
    agents::deploy::export(&actor, Target::C, scratch.path(), args.vectors)
        .with_context(|| format!("exporting {}", actor.origin))?;
    std::fs::write(scratch.path().join("bench.c"), HARNESS)
        .with_context(|| format!("writing the harness in {}", scratch.path().display()))?;
    let exe = scratch.path().join("bench");
    let cc = Command::new(&args.cc)
        .args(CFLAGS)
        .args(["-o", "bench", "bench.c", "fixar_actor.c"])
        .current_dir(scratch.path())
        .output()
        .with_context(|| format!("running the C compiler `{}`", args.cc))?;
    if !cc.status.success() {
        bail!(
            "{} {} failed: {}",
            args.cc,
            CFLAGS.join(" "),
            String::from_utf8_lossy(&cc.stderr).trim()
        );
    }
    tch::set_num_threads(1);
    let torch = TorchActor::of(&actor);
    let inputs: Vec<Tensor> = agents::deploy::test_inputs(&actor, args.vectors, 0x5eed)
        .iter()
        .map(|x| {
            let v: Vec<f32> = x
                .iter()
                .map(|&c| quant::to_f64(c, &actor.input_fmt) as f32)
                .collect();
            Tensor::from_slice(&v)
                .reshape([1, actor.obs_dim() as i64])
                .to_kind(Kind::Float)
        })
        .collect();
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    let (mut checked, mut mismatches) = (0, 0);
    for _ in 0..args.rounds {
        let (ns, n, bad) = run_harness(&exe, scratch.path(), args.calls)?;
        ours.push(ns / 1e3);
        (checked, mismatches) = (n, mismatches + bad);
        peer.push(time_libtorch(&torch, &inputs, args.calls) * 1e6);
    }
    if mismatches > 0 {
        bail!(
            "the compiled C actor differs from the golden integer inference on {mismatches} outputs of {checked} vectors per round: not timing a wrong actor"
        );
    }
    let (c_us, torch_us) = (median(&ours), median(&peer));
    let macs: usize = actor.layers.iter().map(|l| l.in_dim * l.out_dim).sum();
    let mut fig = Figures::default();
    fig.put("run", dir.display().to_string());
    fig.put("actor", shape(&actor));
    fig.put("input_format", actor.input_fmt.to_string());
    fig.put("weight_formats", {
        let w: Vec<String> = actor
            .layers
            .iter()
            .map(|l| l.weight_fmt.to_string())
            .collect();
        w.join(",")
    });
    fig.put("sums", sums(&actor));
    fig.put("macs_per_action", macs as u64);
    fig.put("cc", format!("{} {}", args.cc, CFLAGS.join(" ")));
    fig.put("threads", 1);
    fig.put("rounds", args.rounds as u64);
    fig.put("calls_per_round", args.calls);
    fig.put("golden_vectors_checked", checked);
    fig.put("golden_mismatches", mismatches);
    fig.num("c_us_per_action", c_us, 4);
    fig.num("c_ns_per_mac", c_us * 1e3 / macs as f64, 4);
    fig.put(
        "c_rounds_us_per_action",
        ours.iter()
            .map(|v| format!("{v:.4}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    fig.num("libtorch_us_per_action", torch_us, 3);
    fig.put(
        "libtorch_rounds_us_per_action",
        peer.iter()
            .map(|v| format!("{v:.3}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    fig.num("speedup_vs_libtorch", torch_us / c_us, 2);
    fig.print(args.format)?;
    Ok(ExitCode::SUCCESS)
}
