//! The MLP's explicit backward against libtorch autograd, its exact mode against quant's
//! golden integer GEMM, and the fast/exact mismatch measurement.

use agents::mlp::{fast_exact_mismatch, Activation, Mlp};
use agents::precision::{FormatValue, Gemm, PrecisionSpec, Preset, TensorClass};
use quant::FxFormat;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

fn net(preset: Preset, gemm: Gemm, sizes: &[usize]) -> Mlp {
    let mut spec = PrecisionSpec::preset(preset);
    spec.gemm = gemm;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let out = Activation::Tanh {
        scale: vec![2.0; sizes[sizes.len() - 1]],
        offset: vec![0.5; sizes[sizes.len() - 1]],
    };
    Mlp::new("actor", sizes, out, &spec, &mut rng, 9)
}

/// Standard normal samples from a per-call ChaCha stream (libtorch's global generator
/// is shared by tests running in parallel, so it would not give reproducible data).
fn randn(rows: i64, cols: i64, seed: u64, kind: Kind) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    agents::dpg::standard_normal(&mut rng, rows, cols).to_kind(kind)
}

fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).abs().max().double_value(&[]);
    diff / b.abs().max().double_value(&[]).max(1e-30)
}

#[test]
fn float_gradients_equal_libtorch_autograd_within_1e_5() {
    let sizes = [5, 32, 24, 3];
    let mut m = net(Preset::Float32, Gemm::Fast, &sizes);
    let x = randn(16, 5, 1, Kind::Float);
    let delta = randn(16, 3, 2, Kind::Float);
    let y = m.forward(&x);
    let dx = m.backward(&delta, true, true).unwrap();

    // The same network through autograd.
    let p = m.params().detach().copy().set_requires_grad(true);
    let xin = x.copy().set_requires_grad(true);
    let mut h = xin.shallow_clone();
    let mut off = 0i64;
    for (i, w) in sizes.windows(2).enumerate() {
        let (k, n) = (w[0] as i64, w[1] as i64);
        let wt = p.narrow(0, off, k * n).view([k, n]);
        let b = p.narrow(0, off + k * n, n);
        off += k * n + n;
        let z = h.matmul(&wt) + b;
        h = if i + 2 == sizes.len() {
            z.tanh() * 2.0 + 0.5
        } else {
            z.relu()
        };
    }
    assert!(max_rel(&y, &h.detach()) < 1e-6);
    (&h * &delta).sum(Kind::Float).backward();
    let (gp, gx) = (p.grad(), xin.grad());
    let rel = max_rel(m.grads(), &gp);
    assert!(rel < 1e-5, "parameter gradients differ by {rel:e} relative");
    let rel = max_rel(&dx, &gx);
    assert!(rel < 1e-5, "input gradients differ by {rel:e} relative");
    // Per layer too, so a small layer cannot hide behind a large one.
    let mut off = 0i64;
    for l in m.layers() {
        let n = (l.in_dim() * l.out_dim()) as i64;
        let rel = max_rel(
            l.weight_grad(),
            &gp.narrow(0, off, n)
                .view([l.in_dim() as i64, l.out_dim() as i64]),
        );
        assert!(rel < 1e-5, "{}: {rel:e}", l.name());
        off += n + l.out_dim() as i64;
    }
}

fn codes(t: &Tensor, f: &FxFormat) -> Vec<i64> {
    let v: Vec<f64> = Vec::try_from(t.to_kind(Kind::Double).contiguous().view([-1])).unwrap();
    v.iter()
        .map(|&x| {
            let r = quant::from_f64(x, f).unwrap();
            assert_eq!(quant::to_f64(r, f), x, "{x} not on the grid of {f}");
            r
        })
        .collect()
}

#[test]
fn exact_mode_equals_golden_integer_gemm_forward_and_backward() {
    for preset in [Preset::Fxp32, Preset::Fxp16] {
        let sizes = [4usize, 24, 16, 2];
        let mut spec_net = net(preset, Gemm::Exact, &sizes);
        // Round to nearest in the GEMM outputs (stochastic rounding is not a GEMM property).
        spec_net.update_formats(|_, f| {
            for c in TensorClass::ALL {
                if let Some(x) = f.get(c) {
                    f.set(
                        c,
                        Some(x.with_modes(quant::Rounding::RndConv, quant::Overflow::Sat)),
                    );
                }
            }
        });
        // The unfused path keeps every layer's caches for inspection; the fused `exact`
        // path equals it bit for bit (`fused_kernels_equal_the_unfused_path_bit_for_bit`).
        spec_net.set_fused(false);
        let m = &mut spec_net;
        let x = randn(8, 4, 3, Kind::Double) * 3.0;
        let y = m.forward(&x);
        assert_eq!(y.size(), [8, 2]);
        let mut x_fmt = m.layers()[0].formats().get(TensorClass::Input).unwrap();
        for l in m.layers() {
            let f = |c| l.formats().get(c).unwrap();
            let (wf, bf, zf) = (
                f(TensorClass::Weight),
                f(TensorClass::Bias),
                f(TensorClass::Preact),
            );
            let xin = l.cached_input().unwrap();
            let z = l.cached_preact().unwrap();
            let golden = quant::golden_gemm(
                &codes(xin, &x_fmt),
                &x_fmt,
                &codes(l.weight(), &wf),
                &wf,
                Some((&codes(l.bias(), &bf), &bf)),
                8,
                l.in_dim(),
                l.out_dim(),
                &zf,
            );
            assert_eq!(codes(z, &zf), golden, "{preset:?} {} forward", l.name());
            x_fmt = f(TensorClass::Activation);
        }
        // Backward through the identity-free tanh output: check the last layer's weight
        // gradient x^T dz and input error dz W^T against the golden GEMM.
        let last = m.layers().len() - 1;
        let xin = m.layers()[last].cached_input().unwrap().shallow_clone();
        let z = m.layers()[last].cached_preact().unwrap().shallow_clone();
        let ef = m.layers()[last].formats().get(TensorClass::Error).unwrap();
        let gf = m.layers()[last].formats().get(TensorClass::Grad).unwrap();
        let xf = m.layers()[last - 1]
            .formats()
            .get(TensorClass::Activation)
            .unwrap();
        let delta = quant::tensor::fake_quant(&(randn(8, 2, 4, Kind::Double) * 0.01), &ef, None).0;
        let _dx0 = m.backward(&delta, true, true).unwrap();
        // dz = cast_E(delta * 2 (1 - tanh^2 z)), as the layer computes it.
        let dz = quant::tensor::fake_quant(
            &(Tensor::tanh_backward(&(&delta * 2.0), &z.tanh())),
            &ef,
            None,
        )
        .0;
        let golden_gw = quant::golden_gemm(
            &codes(&xin.tr().contiguous(), &xf),
            &xf,
            &codes(&dz, &ef),
            &ef,
            None,
            16,
            8,
            2,
            &gf,
        );
        assert_eq!(
            codes(m.layers()[last].weight_grad(), &gf),
            golden_gw,
            "{preset:?} weight gradient"
        );
        assert!(golden_gw.iter().any(|&c| c != 0));
    }
}

#[test]
fn fast_and_exact_differ_rarely_and_mismatch_is_reported_per_layer() {
    let m = net(Preset::Fxp32, Gemm::Fast, &[3, 64, 64, 1]);
    let x = randn(64, 3, 5, Kind::Double) * 2.0;
    let d = randn(64, 1, 6, Kind::Double) * 0.01;
    let mm = fast_exact_mismatch(&m, &x, &d).unwrap();
    assert_eq!(
        mm.iter().map(|l| l.layer.as_str()).collect::<Vec<_>>(),
        ["actor.fc1", "actor.fc2", "actor.fc3"]
    );
    for l in &mm {
        assert!(l.elements[0] > 0 && l.elements[1] > 0);
        assert!((0.0..=1.0).contains(&l.preact) && (0.0..=1.0).contains(&l.grad));
    }
    assert!(mm[0].error.is_nan() && mm[2].error.is_finite());
    // fxp32 (Q16.16 pre-activations of magnitude ~1..10): f32 keeps 20+ fraction bits,
    // so fast and exact differ only near rounding ties.
    assert!(
        mm.iter().all(|l| l.preact < 0.05 && l.grad < 0.05),
        "{mm:?}"
    );
    // With 30 fraction bits no f32 GEMM can land on the right code: most differ.
    let mut fine = net(Preset::Fxp32, Gemm::Fast, &[3, 64, 64, 1]);
    let f30: FormatValue = "ap_fixed<32,2,AP_RND_CONV,AP_SAT>".parse().unwrap();
    fine.update_formats(|_, f| f.set(TensorClass::Preact, f30.0));
    let mm_fine = fast_exact_mismatch(&fine, &(&x * 0.05), &d).unwrap();
    assert!(mm_fine[1].preact > 0.5, "{mm_fine:?}");
    let _ = FormatValue(None);
}

#[test]
fn qat_forward_equals_fixed_forward_and_float_qat_gradients_equal_explicit_ones() {
    // Fixed-point forward vs QAT forward on the same (on-grid) weights.
    let fixed = &mut net(Preset::Fxp16, Gemm::Fast, &[3, 16, 16, 2]);
    let mut qat = net(Preset::Fxp16, Gemm::Fast, &[3, 16, 16, 2]);
    qat.set_numerics(Gemm::Fast, agents::TrainMode::Qat);
    qat.load_params(fixed.params());
    let x = randn(8, 3, 7, Kind::Float) * 2.0;
    let yf = fixed.forward(&x);
    let yq = qat.forward(&x);
    assert!(
        yf.equal(&yq),
        "QAT forward differs from the fixed-point forward"
    );
    let d = randn(8, 2, 8, Kind::Float) * 0.01;
    let dx = qat.backward(&d, true, true).unwrap();
    assert_eq!(dx.size(), [8, 3]);
    assert!(qat.grads().abs().sum(Kind::Double).double_value(&[]) > 0.0);
    assert!(qat.grads().isfinite().all().int64_value(&[]) == 1);

    // All formats float: QAT (autograd) and explicit backward give the same gradients.
    let mut a = net(Preset::Float32, Gemm::Fast, &[3, 16, 16, 2]);
    let mut b = net(Preset::Float32, Gemm::Fast, &[3, 16, 16, 2]);
    b.set_numerics(Gemm::Fast, agents::TrainMode::Qat);
    b.load_params(a.params());
    let _ = a.forward(&x);
    let _ = b.forward(&x);
    let da = a.backward(&d, true, true).unwrap();
    let db = b.backward(&d, true, true).unwrap();
    assert!(max_rel(a.grads(), b.grads()) < 1e-6);
    assert!(max_rel(&da, &db) < 1e-6);
}

#[test]
fn exported_codes_read_back_to_the_trained_values_with_their_formats() {
    let m = net(Preset::Fxp16, Gemm::Fast, &[3, 8, 2]);
    let layers = agents::export::export_network(&m).unwrap();
    assert_eq!(layers.len(), 2);
    for (e, l) in layers.iter().zip(m.layers()) {
        let wf = e.weight_format.unwrap();
        assert_eq!(e.weight_codes.len(), l.in_dim() * l.out_dim());
        for (c, v) in e.weight_codes.iter().zip(&e.weight_values) {
            assert_eq!(quant::to_f64(*c, &wf), *v);
        }
        assert_eq!(e.bias_codes.len(), l.out_dim());
    }
    // Layer 1's input format is layer 0's activation format.
    assert_eq!(layers[1].formats.input, layers[0].formats.activation);
    assert_eq!(layers[1].activation, "tanh");
    assert_eq!(layers[1].tanh_scale, vec![2.0, 2.0]);
    // A float network exports values without codes.
    let f = agents::export::export_network(&net(Preset::Float32, Gemm::Fast, &[3, 4, 1])).unwrap();
    assert!(
        f[0].weight_codes.is_empty()
            && f[0].weight_format.is_none()
            && f[0].weight_values.len() == 12
    );
}

fn bits(t: &Tensor) -> Vec<u64> {
    let v: Vec<f64> = Vec::try_from(t.to_kind(Kind::Double).contiguous().view(-1)).unwrap();
    v.iter().map(|x| x.to_bits()).collect()
}

/// The fused kernels (pure fixed point, fast GEMMs, no range observation) against the
/// unfused tch sequence they replace: forward (training and target), backward with
/// parameter and input gradients, Adam steps and soft updates must agree bit for bit,
/// with the same cast counts and stochastic-source counters.
#[test]
fn fused_kernels_equal_the_unfused_path_bit_for_bit() {
    use agents::optim::OptimizerConfig;
    let _ng = tch::no_grad_guard();
    // fxp32 (f64 storage with its f32 shadow), fxp16 (f32 storage, stochastic weights),
    // and fxp16 with saturating errors in a non-holding error format.
    let mut custom = PrecisionSpec::preset(Preset::Fxp16);
    custom.formats.all.error = Some("ap_fixed<16,2,AP_RND,AP_SAT>".parse().unwrap());
    custom.formats.all.preact = Some("ap_fixed<16,3,AP_RND_CONV,AP_SAT>".parse().unwrap());
    // `exact` GEMMs in f64: fxp16 and the custom formats (f32 storage, f64 GEMM copy of
    // the weights), and 24-bit activations with 32-bit errors (f64 storage), whose
    // weight-gradient products (23 + 31 + 6 bits) take the limb path.
    let exact = |mut s: PrecisionSpec| {
        s.gemm = Gemm::Exact;
        s
    };
    let mut wide_grads = exact(PrecisionSpec::preset(Preset::Fxp16));
    wide_grads.formats.all.error = Some("ap_fixed<32,4>".parse().unwrap());
    wide_grads.formats.all.preact = Some("ap_fixed<24,8>".parse().unwrap());
    wide_grads.formats.all.activation = Some("ap_fixed<24,8>".parse().unwrap());
    // 24-bit errors on f32 storage: the bias gradient's column sums need f64.
    let mut wide_errors = exact(PrecisionSpec::preset(Preset::Fxp16));
    wide_errors.formats.all.error = Some("ap_fixed<24,2>".parse().unwrap());
    // FIXAR's schedule after the delay: fxp32 with 16-bit affine activation quantizers
    // on ranges narrow enough that codes saturate on both sides (not the identity on
    // ReLU outputs: small positive values go to 0).
    let specs = [
        PrecisionSpec::preset(Preset::Fxp32),
        wide_errors,
        PrecisionSpec::preset(Preset::Fxp32),
        PrecisionSpec::preset(Preset::Fxp16),
        custom.clone(),
        exact(PrecisionSpec::preset(Preset::Fxp16)),
        exact(custom),
        wide_grads,
    ];
    for (k, spec) in specs.into_iter().enumerate() {
        let with_affine = k == 0;
        let build = |fused: bool, name: &str, out: Activation| {
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let sizes = [5, 64, 48, if name == "actor" { 2 } else { 1 }];
            let mut m = Mlp::new(name, &sizes, out, &spec, &mut rng, 11)
                .with_optimizer(OptimizerConfig::adam(3e-3));
            m.set_fused(fused);
            let ranges = [(-0.3, 1.2), (-0.05, 0.8), (-1.5, 1.0)];
            if with_affine {
                for (i, &(lo, hi)) in ranges.iter().enumerate() {
                    let q = quant::AffineQuantizer::from_range(16, lo, hi).unwrap();
                    m.set_affine(i, TensorClass::Activation, Some(q));
                }
            }
            if spec.gemm == Gemm::Exact {
                // The fused path really runs: every forward and error GEMM is exact in f64.
                assert!(m.exact_in_f64(), "{name}: {:?}", spec.formats);
            }
            let mut t = m.target_copy(&format!("{name}_target"), &spec, 12);
            t.set_fused(fused);
            assert_eq!(m.runs_fused(), fused, "{name}: {:?}", spec.formats);
            if with_affine {
                for (i, &(_, hi)) in ranges.iter().enumerate() {
                    let q = quant::AffineQuantizer::from_range(16, hi - 1.0, hi).unwrap();
                    t.set_affine(i, TensorClass::Activation, Some(q));
                }
            }
            assert_eq!(t.runs_fused(), fused, "{name}_target: {:?}", spec.formats);
            (m, t)
        };
        let tanh = Activation::Tanh {
            scale: vec![2.0; 2],
            offset: vec![0.5; 2],
        };
        let mut runs = Vec::new();
        for fused in [false, true] {
            let (mut actor, mut actor_t) = build(fused, "actor", tanh.clone());
            let (mut critic, mut critic_t) = build(fused, "critic1", Activation::Identity);
            let mut trace: Vec<Vec<u64>> = Vec::new();
            for step in 0..4u64 {
                let x = randn(37, 5, 100 + step, Kind::Float) * 3.0;
                let y = actor.forward(&x);
                let yt = actor_t.predict(&x);
                let d = randn(37, 2, 200 + step, Kind::Float) * 0.05;
                let d = actor.cast_at(2, TensorClass::Error, d.to_kind(actor.kind()));
                let dx = actor.backward(&d, true, true).unwrap();
                actor.step();
                let q = critic.forward(&x);
                let qt = critic_t.predict(&x);
                let dq = critic.cast_at(2, TensorClass::Error, (&q - 1.0) * 0.1);
                assert!(critic.backward(&dq, true, false).is_none());
                critic.step();
                let _ = critic.forward(&x);
                let di = critic.backward(&dq, false, true).unwrap();
                actor_t.soft_update_from(&actor, 0.05);
                critic_t.soft_update_from(&critic, 0.05);
                for t in [&y, &yt, &dx, &q, &qt, &di] {
                    trace.push(bits(t));
                }
                for n in [&actor, &critic, &actor_t, &critic_t] {
                    trace.push(bits(n.params()));
                    trace.push(bits(n.grads()));
                    trace.push(vec![n.stochastic_source().counter()]);
                    for l in n.layers() {
                        trace.push(
                            l.stats()
                                .iter()
                                .flat_map(|s| [s.elements, s.saturated, s.wrapped, s.nan, s.inf])
                                .collect(),
                        );
                    }
                }
                for n in [&actor, &critic] {
                    let o = n.optimizer().unwrap();
                    trace.push(bits(o.first_moment()));
                    trace.push(bits(o.root_second_moment()));
                }
            }
            if with_affine {
                // The affine casts saturate (both paths count the same, compared above).
                let act = TensorClass::Activation.index();
                for n in [&actor, &critic, &actor_t, &critic_t] {
                    let sat: u64 = n.layers().iter().map(|l| l.stats()[act].saturated).sum();
                    assert!(sat > 0, "{}: no affine saturation", n.name());
                }
            }
            runs.push(trace);
        }
        assert_eq!(runs[0].len(), runs[1].len());
        for (i, (a, b)) in runs[0].iter().zip(&runs[1]).enumerate() {
            assert!(
                a == b,
                "{:?} {:?}: trace entry {i} differs",
                spec.preset,
                spec.gemm
            );
        }
    }
}

/// Adam in fxp32 when the gradient is a few LSBs: m keeps one LSB of its Q8.24 state
/// while s = sqrt(v) rounds to 0. The divider's epsilon is then one LSB of the state
/// format (1e-8 is not representable there), so the step stays Adam's usual size,
/// lr / bc1 (bias correction 0.1 at t = 1), instead of saturating the update format.
#[test]
fn fixed_point_adam_step_stays_near_lr_when_the_root_moment_rounds_to_zero() {
    use agents::optim::OptimizerConfig;
    let lr = 3e-4;
    let lsb = 2f64.powi(-24);
    for fused in [false, true] {
        let mut m =
            net(Preset::Fxp32, Gemm::Fast, &[3, 8, 2]).with_optimizer(OptimizerConfig::adam(lr));
        m.set_fused(fused);
        let before = m.params().copy();
        let _ = m.grads().shallow_clone().fill_(10.0 * lsb);
        m.step();
        let opt = m.optimizer().unwrap();
        assert_eq!(opt.first_moment().max().double_value(&[]), lsb);
        assert_eq!(opt.root_second_moment().abs().max().double_value(&[]), 0.0);
        let step = (&before - m.params()).abs();
        let (lo, hi) = (step.min().double_value(&[]), step.max().double_value(&[]));
        assert!(
            (lo - 10.0 * lr).abs() < 1e-6 && (hi - 10.0 * lr).abs() < 1e-6,
            "fused {fused}: steps in [{lo}, {hi}], expected {}",
            10.0 * lr
        );
    }
}

#[test]
fn fused_exact_16_bit_gemms_all_run_on_the_integer_kernel() {
    let mut m = net(Preset::Fxp16, Gemm::Exact, &[4, 24, 16, 2]);
    assert!(m.runs_fused());
    let before = quant::tensor::grid_mm_counts();
    let x = randn(8, 4, 5, Kind::Float);
    let y = m.forward(&x);
    m.backward(&(y * 0.25), true, true);
    let (kernel, torch) = quant::tensor::grid_mm_counts();
    // Three forward products, three weight gradients, three error products.
    let (kernel, torch) = (kernel - before.0, torch - before.1);
    assert_eq!(kernel + torch, 9, "every exact GEMM goes through grid_mm");
    if quant::grid_gemm_available() {
        assert_eq!(
            (kernel, torch),
            (9, 0),
            "a 16-bit GEMM fell back to libtorch"
        );
    }
}
