//! Scalar conversion into ap_fixed<16,6,AP_RND_CONV,AP_SAT> (the apytypes peer's task)
//! and tensor fake-quantization of 1M f32 against libtorch's plain
//! `(x * s).round().clamp(lo, hi) / s`. `fixar bench quant` prints the same figures with
//! the peer's beside them.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quant::{from_f64, FxFormat, Quantizer, StochasticSource};

const N: usize = 1_000_000;

/// N uniform doubles in [-40, 40), as the peer script draws them (its own seed/RNG).
fn inputs() -> Vec<f64> {
    let mut rng = StochasticSource::new(0);
    (0..N)
        .map(|_| -40.0 + 80.0 * (rng.next_word() >> 11) as f64 / (1u64 << 53) as f64)
        .collect()
}

fn scalar(c: &mut Criterion) {
    let fmt: FxFormat = "ap_fixed<16,6,AP_RND_CONV,AP_SAT>".parse().unwrap();
    let xs = inputs();
    let mut g = c.benchmark_group("scalar_from_f64");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("from_f64_per_call", |b| {
        b.iter(|| {
            let mut acc = 0i64;
            for &x in black_box(&xs) {
                acc = acc.wrapping_add(from_f64(x, &fmt).unwrap());
            }
            acc
        })
    });
    let q = Quantizer::new(&fmt);
    let mut out = vec![0i64; N];
    g.bench_function("quantizer_slice", |b| {
        b.iter(|| q.from_f64_slice(black_box(&xs), &mut out).unwrap())
    });
    g.bench_function("from_f64_exact_integer_path", |b| {
        b.iter(|| {
            let mut acc = 0i64;
            for &x in black_box(&xs) {
                acc = acc.wrapping_add(quant::from_f64_exact(x, &fmt).unwrap());
            }
            acc
        })
    });
    g.finish();
}

/// The training hot path's casts: 1024-element chunks of in-range values into
/// `ap_fixed<32,8,AP_RND_CONV,AP_SAT>` (fxp32's shape), f32 GEMM results widened into
/// f64 storage, and f64 into f64 (optimizer state, parameters).
fn chunk(c: &mut Criterion) {
    let fmt: FxFormat = "ap_fixed<32,8,AP_RND_CONV,AP_SAT>".parse().unwrap();
    let xs64: Vec<f64> = inputs()[..1024].iter().map(|&x| x * 3.0).collect();
    let xs32: Vec<f32> = xs64.iter().map(|&x| x as f32).collect();
    let mut out = vec![0f64; 1024];
    let mut g = c.benchmark_group("chunk_1024_fxp32");
    g.throughput(Throughput::Elements(1024));
    g.bench_function("f32_into_f64", |b| {
        b.iter(|| quant::fake_quant_slice_widen(black_box(&xs32), &mut out, &fmt, None))
    });
    let mut out32 = vec![0f32; 1024];
    g.bench_function("f32_into_f32", |b| {
        b.iter(|| quant::fake_quant_slice(black_box(&xs32), &mut out32, &fmt, None))
    });
    g.bench_function("f64_into_f64", |b| {
        b.iter(|| quant::fake_quant_slice(black_box(&xs64), &mut out, &fmt, None))
    });
    g.finish();
}

#[cfg(feature = "torch")]
fn tensor(c: &mut Criterion) {
    use tch::Tensor;
    let fmt: FxFormat = "ap_fixed<16,6,AP_RND_CONV,AP_SAT>".parse().unwrap();
    let xs: Vec<f32> = inputs().iter().map(|&x| x as f32).collect();
    let x = Tensor::from_slice(&xs);
    let s = 2f64.powi(fmt.frac_bits());
    let (lo, hi) = (fmt.raw_min() as f64, fmt.raw_max() as f64);
    let mut g = c.benchmark_group("tensor_1m_f32");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("fake_quant", |b| {
        b.iter(|| quant::tensor::fake_quant(black_box(&x), &fmt, None))
    });
    g.bench_function("libtorch_plain", |b| {
        b.iter(|| (black_box(&x) * s).round().clamp(lo, hi) / s)
    });
    g.finish();
}

#[cfg(not(feature = "torch"))]
fn tensor(_: &mut Criterion) {}

criterion_group!(benches, scalar, chunk, tensor);
criterion_main!(benches);
