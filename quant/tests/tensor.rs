//! The tensor path against the scalar path (feature `torch`).
#![cfg(feature = "torch")]

use proptest::prelude::*;
use quant::tensor::{exact_linear, fake_quant, fake_quant_ste};
use quant::{
    from_f64, from_f64_stochastic, golden_gemm_with_stats, to_f64, FakeQuantElem, FxFormat,
    Overflow, QuantStats, Rounding, StochasticSource,
};
use tch::{Kind, Tensor};

fn any_format(max_w: u32) -> impl Strategy<Value = FxFormat> {
    (any::<bool>(), 1..=max_w, -30i32..70, 0..7usize, 0..4usize).prop_map(|(s, w, i, q, o)| {
        FxFormat::new(s, w, i, Rounding::ALL[q], Overflow::ALL[o]).unwrap()
    })
}

/// Values around a format's grid and range, plus a few non-finite ones.
fn values_for(fmt: FxFormat, n: usize) -> impl Strategy<Value = Vec<f64>> {
    let lsb = fmt.lsb();
    let span = 2f64.powi(fmt.width.min(60) as i32 + 1);
    prop::collection::vec(
        prop_oneof![
            8 => (-span..span, prop_oneof![Just(0.0), Just(0.5), 0.0..1.0f64])
                .prop_map(move |(k, f)| (k.trunc() + f) * lsb),
            2 => any::<f32>().prop_map(|x| x as f64),
            1 => prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
        ],
        1..n,
    )
}

/// The scalar path's answer for one element of a tensor of element type T, and its
/// counts.
fn scalar_fake_quant<T: FakeQuantElem>(x: T, f: &FxFormat, stats: &mut QuantStats) -> T {
    let xd = x.to_f64();
    if !xd.is_finite() {
        stats.record_non_finite(xd);
        return x;
    }
    let r = quant::Quantizer::new(f)
        .from_f64_counted(xd, stats)
        .unwrap();
    T::from_raw(r, f)
}

fn same_bits<T: FakeQuantElem + PartialEq + std::fmt::Debug>(a: T, b: T) -> bool {
    a == b || (a.to_f64().is_nan() && b.to_f64().is_nan())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn f64_tensors_match_the_scalar_path(
        (f, xs) in any_format(64).prop_flat_map(|f| (Just(f), values_for(f, 200)))
    ) {
        let t = Tensor::from_slice(&xs);
        let (q, stats) = fake_quant(&t, &f, None);
        let got: Vec<f64> = Vec::try_from(&q).unwrap();
        let mut want_stats = QuantStats::default();
        for (x, g) in xs.iter().zip(&got) {
            let w = scalar_fake_quant(*x, &f, &mut want_stats);
            prop_assert!(same_bits(w, *g) && w.to_bits() == g.to_bits() || (w.is_nan() && g.is_nan()),
                "{} = {:e}: tensor {:e}, scalar {:e}", f, x, g, w);
        }
        prop_assert_eq!(stats, want_stats);
    }

    #[test]
    fn f32_tensors_match_the_scalar_path(
        (f, xs) in any_format(64).prop_flat_map(|f| (Just(f), values_for(f, 200)))
    ) {
        // Inputs are f32 values; outputs are the scalar grid value rounded once to f32
        // (exact when the code has at most 24 significant bits).
        let xs32: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
        let t = Tensor::from_slice(&xs32);
        let (q, stats) = fake_quant(&t, &f, None);
        let got: Vec<f32> = Vec::try_from(&q).unwrap();
        let mut want_stats = QuantStats::default();
        for (x, g) in xs32.iter().zip(&got) {
            let w = scalar_fake_quant(*x, &f, &mut want_stats);
            prop_assert!(w.to_bits() == g.to_bits() || (w.is_nan() && g.is_nan()),
                "{} = {:e}: tensor {:e}, scalar {:e}", f, x, g, w);
            if x.is_finite() && f.width <= 24 && g.is_finite() && g.abs() >= f32::MIN_POSITIVE {
                // The grid value itself is exact in f32 here.
                let r = from_f64(*x as f64, &f).unwrap();
                prop_assert_eq!(*g as f64, to_f64(r, &f));
            }
        }
        prop_assert_eq!(stats, want_stats);
    }

    #[test]
    fn exact_linear_equals_golden_gemm(
        xf in any_format(32), wf in any_format(32), bf in any_format(32), out in any_format(64),
        m in 1usize..5, k in 1usize..40, n in 1usize..5, seed in any::<u64>(), with_bias in any::<bool>(),
    ) {
        let codes = |f: &FxFormat, len: usize, salt: u64| -> Vec<i64> {
            let mut s = StochasticSource::new(seed ^ salt);
            let any = f.with_modes(Rounding::Trn, Overflow::Wrap);
            // Codes the format can hold (SAT_SYM never holds its most negative code).
            let hold = |c: i64| if f.signed && f.overflow == Overflow::SatSym && c == f.raw_min() { c + 1 } else { c };
            (0..len).map(|_| hold(quant::cast(s.next_word() as i64, &FxFormat::signed(64, 64).unwrap(), &any))).collect()
        };
        let (xc, wc, bc) = (codes(&xf, m * k, 1), codes(&wf, k * n, 2), codes(&bf, n, 3));
        let vals = |c: &[i64], f: &FxFormat| c.iter().map(|&r| to_f64(r, f)).collect::<Vec<f64>>();
        let x = Tensor::from_slice(&vals(&xc, &xf)).view([m as i64, k as i64]);
        let w = Tensor::from_slice(&vals(&wc, &wf)).view([k as i64, n as i64]);
        let b = Tensor::from_slice(&vals(&bc, &bf));
        let bias = with_bias.then_some((&b, &bf));
        let (y, stats) = exact_linear(&x, &xf, &w, &wf, bias, &out);
        let (want, want_stats) = golden_gemm_with_stats(
            &xc, &xf, &wc, &wf, with_bias.then_some((bc.as_slice(), &bf)), m, k, n, &out);
        let got: Vec<f64> = Vec::try_from(y.view(-1)).unwrap();
        for (g, r) in got.iter().zip(&want) {
            prop_assert_eq!(g.to_bits(), to_f64(*r, &out).to_bits());
        }
        prop_assert_eq!(stats, want_stats);
    }
}

/// Codes of `f` from a seeded source, a quarter of them at the format's extremes (so
/// accumulators reach their bound and outputs saturate or wrap).
fn extreme_codes(f: &FxFormat, len: usize, seed: u64) -> Vec<i64> {
    let mut s = StochasticSource::new(seed);
    let any = f.with_modes(Rounding::Trn, Overflow::Wrap);
    let lo = if f.signed && f.overflow == Overflow::SatSym {
        f.raw_min() + 1
    } else {
        f.raw_min()
    };
    (0..len)
        .map(|_| {
            let word = s.next_word();
            match word % 8 {
                0 => lo,
                1 => f.raw_max(),
                _ => quant::cast((word >> 3) as i64, &FxFormat::signed(64, 64).unwrap(), &any)
                    .clamp(lo, f.raw_max()),
            }
        })
        .collect()
}

fn any_narrow_format() -> impl Strategy<Value = FxFormat> {
    (any::<bool>(), 2..=32u32, -8i32..40, 0..7usize, 0..4usize).prop_map(|(s, w, i, q, o)| {
        FxFormat::new(s, w, i, Rounding::ALL[q], Overflow::ALL[o]).unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The GEMM the training path uses (one f64 GEMM where `f64_gemm_is_exact`, limbs
    /// otherwise) against the golden integer GEMM: widths 2..32, k up to 4096, outputs
    /// narrow enough to saturate and wrap.
    #[test]
    fn exact_linear_equals_golden_gemm_up_to_k_4096(
        xf in any_narrow_format(), wf in any_narrow_format(), bf in any_narrow_format(),
        out in any_narrow_format(), m in 1usize..4, k in 1usize..=4096, n in 1usize..4,
        seed in any::<u64>(), with_bias in any::<bool>(),
    ) {
        let (xc, wc, bc) = (
            extreme_codes(&xf, m * k, seed ^ 1),
            extreme_codes(&wf, k * n, seed ^ 2),
            extreme_codes(&bf, n, seed ^ 3),
        );
        let vals = |c: &[i64], f: &FxFormat| c.iter().map(|&r| to_f64(r, f)).collect::<Vec<f64>>();
        let x = Tensor::from_slice(&vals(&xc, &xf)).view([m as i64, k as i64]);
        let w = Tensor::from_slice(&vals(&wc, &wf)).view([k as i64, n as i64]);
        let b = Tensor::from_slice(&vals(&bc, &bf));
        let bias = with_bias.then_some((&b, &bf));
        let (y, stats) = exact_linear(&x, &xf, &w, &wf, bias, &out);
        let (want, want_stats) = golden_gemm_with_stats(
            &xc, &xf, &wc, &wf, with_bias.then_some((bc.as_slice(), &bf)), m, k, n, &out);
        let got: Vec<f64> = Vec::try_from(y.view(-1)).unwrap();
        for (g, r) in got.iter().zip(&want) {
            prop_assert_eq!(g.to_bits(), to_f64(*r, &out).to_bits(), "{} x {} k={} -> {}", xf, wf, k, out);
        }
        prop_assert_eq!(stats, want_stats);
    }
}

#[test]
fn the_f64_bound_is_tight_enough_to_matter_and_safe_at_its_edge() {
    let f16: FxFormat = "ap_fixed<16,6>".parse().unwrap();
    let f32_: FxFormat = "ap_fixed<32,8>".parse().unwrap();
    // 16-bit operands: 15 + 15 + log2(k) bits.
    assert!(quant::f64_gemm_is_exact(&f16, &f16, 1 << 23, None));
    assert!(!quant::f64_gemm_is_exact(&f16, &f16, (1 << 23) + 1, None));
    // FXP32 weights with 16-bit activations need limbs beyond k = 2^7.
    assert!(quant::f64_gemm_is_exact(&f16, &f32_, 128, None));
    assert!(!quant::f64_gemm_is_exact(&f16, &f32_, 400, None));
    // A bias on a finer grid than the products widens the sum.
    let fine: FxFormat = "ap_fixed<32,-20>".parse().unwrap();
    assert!(!quant::f64_gemm_is_exact(&f16, &f16, 256, Some(&fine)));
    // At the edge (|acc| = 2^53 exactly) a plain f64 GEMM still equals the golden one.
    let u: FxFormat = "ap_ufixed<26,26,AP_TRN,AP_WRAP>".parse().unwrap();
    let wide: FxFormat = "ap_ufixed<64,64,AP_TRN,AP_WRAP>".parse().unwrap();
    assert!(quant::f64_gemm_is_exact(&u, &u, 2, None));
    let top = u.raw_max();
    let x = Tensor::from_slice(&[to_f64(top, &u), 1.0]).view([1, 2]);
    let w = Tensor::from_slice(&[to_f64(top, &u), 3.0]).view([2, 1]);
    let (y, _) = exact_linear(&x, &u, &w, &u, None, &wide);
    let want = quant::golden_gemm(&[top, 1], &u, &[top, 3], &u, None, 1, 2, 1, &wide);
    assert_eq!(from_f64(y.double_value(&[0, 0]), &wide).unwrap(), want[0]);
}

#[test]
fn exact_linear_is_exact_where_a_float_gemm_is_not() {
    // 32-bit operands, k = 64: products need 64 bits, beyond f64's 53.
    let f: FxFormat = "ap_fixed<32,16>".parse().unwrap();
    let out: FxFormat = "ap_fixed<64,40,AP_RND_CONV,AP_SAT>".parse().unwrap();
    let (m, k, n) = (2usize, 64usize, 3usize);
    let mut s = StochasticSource::new(5);
    let mut code = || (s.next_word() as i64) >> 32;
    let xc: Vec<i64> = (0..m * k).map(|_| code()).collect();
    let wc: Vec<i64> = (0..k * n).map(|_| code()).collect();
    let to_t = |c: &[i64], r: i64, cols: i64| {
        Tensor::from_slice(&c.iter().map(|&v| to_f64(v, &f)).collect::<Vec<f64>>()).view([r, cols])
    };
    let x = to_t(&xc, m as i64, k as i64);
    let w = to_t(&wc, k as i64, n as i64);
    let (y, _) = exact_linear(&x, &f, &w, &f, None, &out);
    let want = quant::golden_gemm(&xc, &f, &wc, &f, None, m, k, n, &out);
    let got: Vec<f64> = Vec::try_from(y.view(-1)).unwrap();
    assert_eq!(
        got,
        want.iter().map(|&r| to_f64(r, &out)).collect::<Vec<f64>>()
    );
    // A plain f64 GEMM rounds somewhere: the exact path is doing real work here.
    let plain: Vec<f64> = Vec::try_from(x.matmul(&w).view(-1)).unwrap();
    let plain_codes: Vec<i64> = plain.iter().map(|&v| from_f64(v, &out).unwrap()).collect();
    assert_ne!(plain_codes, want);
}

#[test]
fn exact_linear_marks_outputs_of_non_finite_inputs() {
    let f: FxFormat = "ap_fixed<8,4>".parse().unwrap();
    let x = Tensor::from_slice(&[1.0f32, f32::NAN, 0.5, 0.25]).view([2, 2]);
    let w = Tensor::from_slice(&[1.0f32, 2.0, 0.5, f32::INFINITY]).view([2, 2]);
    let (y, stats) = exact_linear(&x, &f, &w, &f, None, &f);
    let got: Vec<f32> = Vec::try_from(y.view(-1)).unwrap();
    assert!(got[0].is_nan() && got[1].is_nan() && got[3].is_nan()); // row 0, column 1
    assert_eq!(got[2], 0.5 * 1.0 + 0.25 * 0.5);
    assert_eq!((stats.nan, stats.inf, stats.elements), (1, 1, 4));
}

#[test]
fn fake_quant_counts_saturations_and_non_finite_and_passes_them_through() {
    let f: FxFormat = "ap_fixed<8,4,AP_RND_CONV,AP_SAT>".parse().unwrap();
    let x = Tensor::from_slice(&[0.3f32, 100.0, -100.0, f32::NAN, f32::INFINITY, 7.96875]);
    let (q, stats) = fake_quant(&x, &f, None);
    let got: Vec<f32> = Vec::try_from(&q).unwrap();
    assert_eq!(got[0], 0.3125);
    assert_eq!((got[1], got[2]), (7.9375, -8.0));
    assert!(got[3].is_nan() && got[4] == f32::INFINITY);
    assert_eq!(got[5], 7.9375); // rounds up to 8.0, which saturates
    assert_eq!(
        stats,
        QuantStats {
            elements: 6,
            saturated: 3,
            wrapped: 0,
            nan: 1,
            inf: 1
        }
    );
    let w = f.with_modes(Rounding::Trn, Overflow::Wrap);
    let (q, stats) = fake_quant(&Tensor::from_slice(&[9.0f64]), &w, None);
    assert_eq!(Vec::<f64>::try_from(&q).unwrap(), vec![-7.0]);
    assert_eq!(stats.wrapped, 1);
}

#[test]
fn large_tensors_split_across_threads_match_the_serial_scalar_path() {
    let f: FxFormat = "ap_fixed<12,3,AP_RND_INF,AP_SAT_SYM>".parse().unwrap();
    let n = 200_004;
    let xs: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.0137).sin() * 6.0).collect();
    let (q, stats) = fake_quant(&Tensor::from_slice(&xs).view([7, -1]), &f, None);
    assert_eq!(q.size(), vec![7, n as i64 / 7]);
    let got: Vec<f32> = Vec::try_from(q.view(-1)).unwrap();
    let mut want_stats = QuantStats::default();
    for (x, g) in xs.iter().zip(&got) {
        assert_eq!(scalar_fake_quant(*x, &f, &mut want_stats), *g);
    }
    assert_eq!(stats, want_stats);
    assert!(stats.saturated > 0);
    // Non-contiguous input (a transpose) gives the transposed result.
    let t = Tensor::from_slice(&xs[..6000]).view([60, 100]);
    let (qt, _) = fake_quant(&t.tr(), &f, None);
    let (qn, _) = fake_quant(&t, &f, None);
    assert!(qt.equal(&qn.tr()));
}

#[test]
fn stochastic_tensors_are_seeded_and_match_the_scalar_stream() {
    let f: FxFormat = "ap_fixed<10,2,AP_STOCHASTIC,AP_SAT>".parse().unwrap();
    let xs: Vec<f64> = (0..70_000)
        .map(|i| ((i as f64) * 0.01).cos() * 1.7)
        .collect();
    let t = Tensor::from_slice(&xs);
    let run = |seed| {
        let mut rng = StochasticSource::new(seed);
        let (q, _) = fake_quant(&t, &f, Some(&mut rng));
        (Vec::<f64>::try_from(&q).unwrap(), rng)
    };
    let (a, rng_after) = run(9);
    let (b, _) = run(9);
    assert_eq!(a, b);
    assert_ne!(a, run(10).0);
    assert_eq!(rng_after.counter(), xs.len() as u64);
    // Element i uses word i of the stream, as the scalar path drawing in order.
    let mut rng = StochasticSource::new(9);
    for (x, g) in xs.iter().zip(&a) {
        let r = from_f64_stochastic(*x, &f, &mut rng).unwrap();
        assert_eq!(to_f64(r, &f), *g);
    }
    // Unbiased: the mean error is far below one LSB.
    let err: f64 = xs.iter().zip(&a).map(|(x, q)| q - x).sum::<f64>() / xs.len() as f64;
    assert!(err.abs() < 0.01 * f.lsb(), "mean error {err}");
    // The f32 path draws the same words.
    let x32: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
    let mut r1 = StochasticSource::new(4);
    let (q32, _) = fake_quant(&Tensor::from_slice(&x32), &f, Some(&mut r1));
    let mut r2 = StochasticSource::new(4);
    let got: Vec<f32> = Vec::try_from(&q32).unwrap();
    for (x, g) in x32.iter().zip(&got) {
        let r = from_f64_stochastic(*x as f64, &f, &mut r2).unwrap();
        assert_eq!(to_f64(r, &f) as f32, *g);
    }
}

#[test]
fn straight_through_gradient_is_one_inside_and_zero_where_saturated() {
    let f: FxFormat = "ap_fixed<6,3,AP_RND,AP_SAT>".parse().unwrap();
    let x = Tensor::from_slice(&[0.3f32, 3.95, 5.0, -4.0, -4.2, f32::NAN]).set_requires_grad(true);
    let (q, stats) = fake_quant_ste(&x, &f);
    let (plain, _) = fake_quant(&x, &f, None);
    let a: Vec<f32> = Vec::try_from(&q.detach()).unwrap();
    let b: Vec<f32> = Vec::try_from(&plain).unwrap();
    for (u, v) in a.iter().zip(&b) {
        assert!(u.to_bits() == v.to_bits() || (u.is_nan() && v.is_nan()));
    }
    (q.narrow(0, 0, 5) * Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0]))
        .sum(Kind::Float)
        .backward();
    let g: Vec<f32> = Vec::try_from(&x.grad()).unwrap();
    // 3.95 rounds to 4.0 > max 3.875: saturated. -4.0 is the minimum: inside.
    assert_eq!(g, vec![1.0, 0.0, 0.0, 4.0, 0.0, 0.0]);
    assert_eq!(stats.saturated, 3);
    assert_eq!(stats.nan, 1);
}

#[test]
fn half_precision_tensors_go_through_f32() {
    let f: FxFormat = "ap_fixed<8,4,AP_RND_CONV,AP_SAT>".parse().unwrap();
    let x = Tensor::from_slice(&[0.3f32, 9.0]).to_kind(Kind::Half);
    let (q, stats) = fake_quant(&x, &f, None);
    assert_eq!(q.kind(), Kind::Half);
    let got: Vec<f32> = Vec::try_from(&q.to_kind(Kind::Float)).unwrap();
    assert_eq!(got, vec![0.3125, 7.9375]);
    assert_eq!(stats.saturated, 1);
}

/// The affine quantizer's formula evaluated directly, element by element, in f64:
/// floor(x / delta) + z clamped to [0, 2^n - 1], then (Q - z) * delta.
fn affine_formula(x: f64, q: &quant::AffineQuantizer) -> (f64, bool) {
    let raw = (x / q.delta()).floor() as i64 + q.zero_point();
    let code = raw.clamp(0, q.code_max());
    ((code - q.zero_point()) as f64 * q.delta(), code != raw)
}

#[test]
fn affine_tensors_equal_the_formula_in_f64_f32_and_onto_a_grid() {
    use quant::tensor::affine_fake_quant;
    let q = quant::AffineQuantizer::from_range(16, -1.75, 6.5).unwrap();
    // Quotients far from integers (1/3 of a step off), so the f64 division floors right.
    let xs: Vec<f64> = (-6000..6000)
        .map(|i| (i as f64 + 1.0 / 3.0) * q.delta() * 7.0)
        .chain([f64::NAN, f64::INFINITY])
        .collect();
    let (y, stats) = affine_fake_quant(&Tensor::from_slice(&xs), &q, None);
    assert_eq!(y.kind(), Kind::Double);
    let got: Vec<f64> = Vec::try_from(&y).unwrap();
    let mut sat = 0;
    for (&x, &g) in xs.iter().zip(&got).take(xs.len() - 2) {
        let (want, s) = affine_formula(x, &q);
        assert_eq!(g, want, "{x}");
        sat += s as u64;
    }
    assert!(got[xs.len() - 2].is_nan() && got[xs.len() - 1] == f64::INFINITY);
    assert_eq!(
        (stats.elements, stats.saturated, stats.nan, stats.inf),
        (xs.len() as u64, sat, 1, 1)
    );
    assert!(sat > 0);
    // f32 tensors: the same values rounded once to f32; onto a grid: then that grid.
    let x32 = Tensor::from_slice(&xs[..12_000]).to_kind(Kind::Float);
    let (y32, _) = affine_fake_quant(&x32, &q, None);
    let f: FxFormat = "ap_fixed<32,16,AP_RND_CONV,AP_SAT>".parse().unwrap();
    let (yg, _) = affine_fake_quant(&x32, &q, Some(&f));
    let xv: Vec<f32> = Vec::try_from(&x32).unwrap();
    let v32: Vec<f32> = Vec::try_from(&y32).unwrap();
    let vg: Vec<f32> = Vec::try_from(&yg).unwrap();
    for ((&x, &a), &b) in xv.iter().zip(&v32).zip(&vg) {
        let (want, _) = affine_formula(x as f64, &q);
        assert_eq!(a, want as f32, "{x}");
        assert_eq!(b, to_f64(from_f64(want, &f).unwrap(), &f) as f32, "{x}");
    }
}
