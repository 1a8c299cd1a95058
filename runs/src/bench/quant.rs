//! `fixar bench quant`: `from_f64` conversion throughput against the apytypes peer
//! (`../shared/bench/apytypes_quantize.py`), and tensor fake-quantization against
//! libtorch's plain `(x * s).round().clamp(lo, hi) / s`, in the same run.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use quant::{from_f64, FxFormat, Quantizer, StochasticSource};
use tch::Tensor;

use crate::failure::config_error;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchQuantArgs {
    /// Values converted per timed run (the peer converts the same number).
    #[arg(long, default_value_t = 1_000_000)]
    pub n: usize,
    /// Timed runs; the fastest counts (ours and the peer's).
    #[arg(long, default_value_t = 15)]
    pub repeat: usize,
    /// Run the apytypes peer in the same invocation.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub peer: bool,
}

/// The benchmark's format: the apytypes peer's cast target.
const BENCH_FORMAT: &str = "ap_fixed<16,6,AP_RND_CONV,AP_SAT>";

/// `n` uniform doubles in [-40, 40), the peer's distribution (our own generator).
fn bench_inputs(n: usize) -> Vec<f64> {
    let mut rng = StochasticSource::new(0);
    (0..n)
        .map(|_| -40.0 + 80.0 * (rng.next_word() >> 11) as f64 / (1u64 << 53) as f64)
        .collect()
}

/// Fastest of `repeat` runs, in seconds.
fn fastest(repeat: usize, mut f: impl FnMut()) -> f64 {
    (0..repeat.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// The apytypes peer's `name: value` lines.
fn apytypes_peer(n: usize) -> Result<BTreeMap<String, f64>> {
    let shared =
        std::env::var("FIXAR_SHARED_DIR").unwrap_or_else(|_| env!("FIXAR_SHARED_DIR").into());
    let script = Path::new(&shared).join("bench/apytypes_quantize.py");
    if !script.is_file() {
        return Err(anyhow!("{} not found", script.display()));
    }
    let python = envs::bridge::python_executable();
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args(["--n", &n.to_string(), "--repeat", "5"])
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").trim();
        return Err(anyhow!(
            "{} failed: {last} (scripts/setup-peers installs apytypes)",
            script.display()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(k, v)| Some((k.trim().to_string(), v.trim().parse().ok()?)))
        .collect())
}

/// `fixar bench quant`: prints `name: value` lines.
pub fn bench(args: &BenchQuantArgs) -> Result<ExitCode> {
    if args.n == 0 {
        return Err(config_error("--n must be at least 1"));
    }
    let fmt: FxFormat = BENCH_FORMAT.parse().expect("benchmark format parses");
    let xs = bench_inputs(args.n);
    println!("format: {fmt}");
    println!("values: {}", args.n);

    // Scalar path, one thread: the public per-value call in a loop, and the slice call.
    let per_call = fastest(args.repeat, || {
        let mut acc = 0i64;
        for &x in black_box(&xs) {
            acc = acc.wrapping_add(from_f64(x, &fmt).expect("finite input"));
        }
        black_box(acc);
    });
    let q = Quantizer::new(&fmt);
    let mut codes = vec![0i64; xs.len()];
    let slice = fastest(args.repeat, || {
        q.from_f64_slice(black_box(&xs), &mut codes)
            .expect("finite input");
        black_box(&codes);
    });
    let ours = args.n as f64 / per_call;
    println!("quantize_values_per_s: {ours:.0}");
    println!("quantize_slice_values_per_s: {:.0}", args.n as f64 / slice);
    if args.peer {
        match apytypes_peer(args.n) {
            Ok(peer) => match peer.get("apytypes_quantize_values_per_s") {
                Some(&p) => {
                    println!("apytypes_quantize_values_per_s: {p:.0}");
                    println!("quantize_speedup_vs_apytypes: {:.1}", ours / p);
                }
                None => println!(
                    "apytypes_quantize_values_per_s: n/a (no such line in the peer's output)"
                ),
            },
            Err(e) => println!("apytypes_quantize_values_per_s: n/a ({e:#})"),
        }
    }

    // Tensor path: 1M f32 (or --n), ours against libtorch's plain expression,
    // alternating so both see the same machine load. libtorch's multi-threaded kernels
    // slow down badly when another process holds a core, so it is also timed on one
    // thread and the ratio is taken against its faster setting; a one-thread-each ratio
    // is printed too.
    let x32: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
    let x = Tensor::from_slice(&x32);
    let s = 2f64.powi(fmt.frac_bits());
    let (lo, hi) = (fmt.raw_min() as f64, fmt.raw_max() as f64);
    let ours = || {
        let _ = black_box(quant::tensor::fake_quant(&x, &fmt, None));
    };
    let plain = || {
        let _ = black_box((&x * s).round().clamp(lo, hi) / s);
    };
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .context("building a one-thread pool")?;
    let torch_threads = tch::get_num_threads();
    let mut out32 = vec![0f32; x32.len()];
    let mut best = [f64::INFINITY; 4]; // ours, plain, ours 1 thread, plain 1 thread
    for _ in 0..args.repeat.max(1) {
        best[0] = best[0].min(fastest(1, ours));
        best[1] = best[1].min(fastest(1, plain));
        // The same kernel on the tensor's data (tensors cannot move into the pool).
        best[2] = best[2].min(one_thread.install(|| {
            fastest(1, || {
                quant::fake_quant_slice(&x32, &mut out32, &fmt, None);
                black_box(&out32);
            })
        }));
        tch::set_num_threads(1);
        best[3] = best[3].min(fastest(1, plain));
        tch::set_num_threads(torch_threads);
    }
    let (fq, _) = quant::tensor::fake_quant(&x, &fmt, None);
    // RND_CONV + SAT is exactly round-half-even then clamp: the two must agree.
    let agree = fq.equal(&((&x * s).round().clamp(lo, hi) / s));
    println!(
        "tensor_threads: libtorch {torch_threads}, rayon {}",
        rayon::current_num_threads()
    );
    println!("tensor_fakequant_ms: {:.3}", best[0] * 1e3);
    println!("tensor_plain_ms: {:.3}", best[1] * 1e3);
    println!("tensor_plain_1thread_ms: {:.3}", best[3] * 1e3);
    println!(
        "tensor_fakequant_vs_plain: {:.2}",
        best[0] / best[1].min(best[3])
    );
    println!("tensor_fakequant_1thread_ms: {:.3}", best[2] * 1e3);
    println!(
        "tensor_fakequant_vs_plain_1thread: {:.2}",
        best[2] / best[3]
    );
    println!("tensor_results_identical: {agree}");
    exact_gemm(args.repeat.max(1));
    Ok(ExitCode::SUCCESS)
}

/// The exact GEMM of 16-bit codes (`quant::tensor::grid_mm`: the VNNI integer kernel
/// where the CPU has it) against libtorch's f64 GEMM of the same values (what the exact
/// path ran before) and its f32 GEMM (what `fast` runs), one thread, at TD3's 256-wide
/// layers (batch 256) and FIXAR's 400-300 critic layer (batch 64).
fn exact_gemm(repeat: usize) {
    let threads = tch::get_num_threads();
    tch::set_num_threads(1);
    println!("exact_gemm_vnni: {}", quant::grid_gemm_available());
    for (m, k, n) in [(256i64, 256i64, 256i64), (64, 400, 300)] {
        // Codes of ap_fixed<16,6> (10 fractional bits) from a fixed pattern.
        let codes = |len: i64, mul: i64| {
            let v: Vec<f64> = (0..len)
                .map(|i| ((i * mul) % 65536 - 32768) as f64 / 1024.0)
                .collect();
            Tensor::from_slice(&v)
        };
        let x = codes(m * k, 7919).view([m, k]);
        let w = codes(k * n, 104729).view([k, n]);
        let (x32, w32) = (x.to_kind(tch::Kind::Float), w.to_kind(tch::Kind::Float));
        let mut best = [f64::INFINITY; 3];
        for _ in 0..repeat {
            best[0] = best[0].min(fastest(20, || {
                let _ = black_box(quant::tensor::grid_mm(&x, 10, &w, 10, None));
            }));
            best[1] = best[1].min(fastest(20, || {
                let _ = black_box(x.mm(&w));
            }));
            best[2] = best[2].min(fastest(20, || {
                let _ = black_box(x32.mm(&w32));
            }));
        }
        let same = quant::tensor::grid_mm(&x, 10, &w, 10, None).equal(&x.mm(&w));
        let shape = format!("{m}x{k}x{n}");
        println!("exact_gemm_{shape}_us: {:.1}", best[0] * 1e6);
        println!("libtorch_f64_gemm_{shape}_us: {:.1}", best[1] * 1e6);
        println!("libtorch_f32_gemm_{shape}_us: {:.1}", best[2] * 1e6);
        println!("exact_gemm_{shape}_vs_f64: {:.2}", best[1] / best[0]);
        println!("exact_gemm_{shape}_vs_f32: {:.2}", best[2] / best[0]);
        println!("exact_gemm_{shape}_identical_to_f64: {same}");
    }
    tch::set_num_threads(threads);
}
