//! The tensor path (feature `torch`): fake quantization of libtorch tensors with the
//! scalar path's rounding and overflow, a straight-through variant for QAT, FIXAR's affine
//! activation quantizer, and an exact fixed-point linear layer.
//!
//! Tensors are processed on the CPU in one fused pass over their memory (other devices
//! are copied to the CPU and back). f32 and f64 are native; f16/bf16 go through f32.

use tch::{Device, Kind, Tensor};

use crate::affine::AffineQuantizer;
use crate::fake::{fake_quant_slice_masked, FakeQuantElem};
use crate::format::FxFormat;
use crate::gemm::{accumulator_bits, finish_i128, golden_gemm_with_stats, Bias};
use crate::quantizer::Quantizer;
pub use crate::stats::QuantStats;
pub use crate::stochastic::StochasticSource;

fn on_cpu_contiguous(x: &Tensor) -> Tensor {
    x.detach().to_device(Device::Cpu).contiguous()
}

/// Runs the kernel on a CPU, contiguous tensor of kind f32/f64.
fn run_kernel(
    xc: &Tensor,
    fmt: &FxFormat,
    rng: Option<&mut StochasticSource>,
    want_mask: bool,
) -> (Tensor, Option<Tensor>, QuantStats) {
    let out = xc.empty_like();
    let mask = want_mask.then(|| Tensor::empty(xc.size(), (Kind::Bool, Device::Cpu)));
    let n = xc.numel();
    fn go<T: FakeQuantElem>(
        xc: &Tensor,
        out: &Tensor,
        mask: Option<&Tensor>,
        n: usize,
        fmt: &FxFormat,
        rng: Option<&mut StochasticSource>,
    ) -> QuantStats {
        // SAFETY: `xc` and `out` are contiguous CPU tensors of element type T with n
        // elements (`out` freshly allocated, so not aliasing `xc`); `mask` is a fresh
        // contiguous Bool tensor of n one-byte elements, 0 or 1 as Rust's bool.
        unsafe {
            let xs = std::slice::from_raw_parts(xc.data_ptr() as *const T, n);
            let os = std::slice::from_raw_parts_mut(out.data_ptr() as *mut T, n);
            let ms = mask.map(|m| std::slice::from_raw_parts_mut(m.data_ptr() as *mut bool, n));
            fake_quant_slice_masked(xs, os, ms, fmt, rng)
        }
    }
    let stats = if n == 0 {
        QuantStats::default()
    } else {
        match xc.kind() {
            Kind::Float => go::<f32>(xc, &out, mask.as_ref(), n, fmt, rng),
            Kind::Double => go::<f64>(xc, &out, mask.as_ref(), n, fmt, rng),
            k => unreachable!("kind {k:?} is converted before the kernel"),
        }
    };
    (out, mask, stats)
}

/// Quantizes on the CPU in f32/f64 and returns values of `x`'s kind on `x`'s device.
fn fake_quant_impl(
    x: &Tensor,
    fmt: &FxFormat,
    rng: Option<&mut StochasticSource>,
    want_mask: bool,
) -> (Tensor, Option<Tensor>, QuantStats) {
    let kind = x.kind();
    if matches!(kind, Kind::Float | Kind::Double) && x.device() == Device::Cpu && x.is_contiguous()
    {
        // Already what the kernel reads (the output is a fresh tensor outside autograd):
        // no conversion calls, which cost more than the kernel on small tensors.
        return run_kernel(x, fmt, rng, want_mask);
    }
    let work_kind = match kind {
        Kind::Float | Kind::Double => kind,
        Kind::Half | Kind::BFloat16 => Kind::Float,
        k => panic!("fake_quant: tensor kind {k:?} is not a floating-point kind"),
    };
    let xc = on_cpu_contiguous(x).to_kind(work_kind);
    let (out, mask, stats) = run_kernel(&xc, fmt, rng, want_mask);
    let device = x.device();
    (
        out.to_kind(kind).to_device(device),
        mask.map(|m| m.to_device(device)),
        stats,
    )
}

/// Moves every element of `x` onto `fmt`'s grid (rounding, then overflow) and returns the
/// values in `x`'s kind, with per-call counts. STOCHASTIC formats draw one word per
/// element from `rng` (nearest-even without one); other modes leave `rng` untouched.
///
/// Values equal the scalar path's `to_f64(from_f64(x))` for every finite element,
/// rounded once to the kind when the grid value is not representable in it (f32 with
/// codes of more than 24 significant bits). NaN and infinities are passed through and
/// counted in `nan`/`inf`, never turned into numbers. The result does not require grad.
///
/// # Panics
/// If `x` is not a floating-point tensor.
pub fn fake_quant(
    x: &Tensor,
    fmt: &FxFormat,
    rng: Option<&mut StochasticSource>,
) -> (Tensor, QuantStats) {
    let (out, _, stats) = fake_quant_impl(x, fmt, rng, false);
    (out, stats)
}

/// [`fake_quant`] with a straight-through gradient: d out / d x is 1 where the element
/// was representable after rounding and 0 where it saturated or wrapped (and at NaN or
/// infinite inputs). The forward values are exactly [`fake_quant`]'s. STOCHASTIC formats
/// round to nearest-even here; use [`fake_quant`] with a source for stochastic rounding.
///
/// # Panics
/// If `x` is not a floating-point tensor.
pub fn fake_quant_ste(x: &Tensor, fmt: &FxFormat) -> (Tensor, QuantStats) {
    if !x.requires_grad() {
        return fake_quant(x, fmt, None);
    }
    let (q, mask, stats) = fake_quant_impl(x, fmt, None, true);
    let mask = mask.expect("mask requested");
    // z - z.detach() is +0 in value and carries d/dx = mask; adding +0 leaves every
    // quantized value (never -0) unchanged.
    let z = x.where_self(&mask, &x.zeros_like());
    (q + (&z - z.detach()), stats)
}

/// FIXAR's affine activation quantizer on a tensor: every finite element becomes
/// [`AffineQuantizer`]'s dequantized value `(Q - z) * delta`, represented in `onto` when
/// given (see [`AffineQuantizer::fake_quant_slice`]), in `x`'s kind on `x`'s device, with
/// the call's counts (saturated codes, NaN/Inf passed through and counted). The result
/// does not require grad; values equal the scalar path's for every element.
///
/// # Panics
/// If `x` is not a floating-point tensor.
pub fn affine_fake_quant(
    x: &Tensor,
    q: &AffineQuantizer,
    onto: Option<&FxFormat>,
) -> (Tensor, QuantStats) {
    let kind = x.kind();
    let work_kind = match kind {
        Kind::Float | Kind::Double => kind,
        Kind::Half | Kind::BFloat16 => Kind::Float,
        k => panic!("affine_fake_quant: tensor kind {k:?} is not a floating-point kind"),
    };
    let xc = on_cpu_contiguous(x).to_kind(work_kind);
    let out = xc.empty_like();
    let n = xc.numel();
    fn go<T: FakeQuantElem>(
        xc: &Tensor,
        out: &Tensor,
        n: usize,
        q: &AffineQuantizer,
        onto: Option<&FxFormat>,
    ) -> QuantStats {
        // SAFETY: `xc` and `out` are contiguous CPU tensors of element type T with n
        // elements; `out` is freshly allocated, so it does not alias `xc`.
        unsafe {
            let xs = std::slice::from_raw_parts(xc.data_ptr() as *const T, n);
            let os = std::slice::from_raw_parts_mut(out.data_ptr() as *mut T, n);
            q.fake_quant_slice(xs, os, onto)
        }
    }
    let stats = match (n, work_kind) {
        (0, _) => QuantStats::default(),
        (_, Kind::Float) => go::<f32>(&xc, &out, n, q, onto),
        _ => go::<f64>(&xc, &out, n, q, onto),
    };
    (out.to_kind(kind).to_device(x.device()), stats)
}

/// Codes of a tensor's values in `fmt` (values off the grid are rounded with `fmt`'s
/// mode); `None` marks NaN / infinities, counted in `stats`.
fn tensor_codes(t: &Tensor, fmt: &FxFormat, stats: &mut QuantStats) -> Vec<Option<i64>> {
    let v: Vec<f64> = Vec::try_from(on_cpu_contiguous(t).to_kind(Kind::Double).view(-1))
        .expect("f64 tensor to Vec");
    let q = Quantizer::new(fmt);
    v.iter()
        .map(|&x| match q.from_f64(x) {
            Ok(c) => Some(c),
            Err(_) => {
                stats.nan += x.is_nan() as u64;
                stats.inf += x.is_infinite() as u64;
                None
            }
        })
        .collect()
}

/// Splits codes into limbs of at most `bits` magnitude bits each (low limbs unsigned,
/// the top limb signed): `code = sum(limb_i << shift_i)`.
fn limbs(codes: &[i128], split: bool) -> Vec<(Vec<f64>, u32)> {
    if !split {
        return vec![(codes.iter().map(|&c| c as f64).collect(), 0)];
    }
    vec![
        (codes.iter().map(|&c| (c & 0xffff) as f64).collect(), 0),
        (codes.iter().map(|&c| (c >> 16) as f64).collect(), 16),
    ]
}

/// Exact integer `x W` through f64 GEMMs on limbs small enough that every product and
/// sum is an integer below 2^53 (so any summation order is exact); `None` if widths or
/// k are too large for that.
fn limb_gemm(
    xc: &[i128],
    xf: &FxFormat,
    wc: &[i128],
    wf: &FxFormat,
    (m, k, n): (usize, usize, usize),
) -> Option<Vec<i128>> {
    let lk = crate::gemm::ceil_log2(k);
    let (wx, ww) = (xf.width, wf.width);
    let (split_x, split_w) = if accumulator_bits(xf, wf, k) <= 53 {
        (false, false)
    } else if wx <= 32 && 16 + ww + lk <= 53 {
        (true, false)
    } else if ww <= 32 && wx + 16 + lk <= 53 {
        (false, true)
    } else if wx <= 32 && ww <= 32 && 32 + lk <= 53 {
        (true, true)
    } else {
        return None;
    };
    let xl = limbs(xc, split_x);
    let wl = limbs(wc, split_w);
    let mut acc = vec![0i128; m * n];
    for (xv, xs) in &xl {
        let xt = Tensor::from_slice(xv).view([m as i64, k as i64]);
        for (wv, ws) in &wl {
            let wt = Tensor::from_slice(wv).view([k as i64, n as i64]);
            let part: Vec<f64> = Vec::try_from(xt.matmul(&wt).view(-1)).expect("f64 GEMM result");
            for (a, p) in acc.iter_mut().zip(&part) {
                *a += (*p as i128) << (xs + ws);
            }
        }
    }
    Some(acc)
}

/// `x w (+ b)` for f64 CPU matrices of grid values (`x`'s at `x_frac` fractional bits,
/// `w`'s at `w_frac`): through [`grid_gemm`](crate::grid_gemm)'s integer kernel where it
/// applies (codes of at most 16 bits, each operand contiguous or the transpose of a
/// contiguous matrix, AVX-512 VNNI), else libtorch's f64 GEMM. Both give the exact
/// product wherever the f64 GEMM is exact (`f64_gemm_is_exact`), so the result is the
/// same either way there; the kernel runs at about f32 GEMM speed.
///
/// # Panics
/// If the shapes do not form a product.
pub fn grid_mm(x: &Tensor, x_frac: i32, w: &Tensor, w_frac: i32, b: Option<&Tensor>) -> Tensor {
    let torch = || {
        GRID_MM_CALLS.with(|c| c.set((c.get().0, c.get().1 + 1)));
        match b {
            Some(b) => b.addmm(x, w),
            None => x.mm(w),
        }
    };
    let cpu_f64 = |t: &Tensor| t.kind() == Kind::Double && t.device() == Device::Cpu;
    if !(cpu_f64(x) && cpu_f64(w) && b.is_none_or(|b| cpu_f64(b) && b.is_contiguous()))
        || x.dim() != 2
        || w.dim() != 2
        || !crate::grid_gemm_available()
    {
        return torch();
    }
    // Row-major (false) or the transpose of a contiguous matrix (true).
    let layout = |t: &Tensor| {
        if t.is_contiguous() {
            Some(false)
        } else if t.tr().is_contiguous() {
            Some(true)
        } else {
            None
        }
    };
    let (Some(xt), Some(wt)) = (layout(x), layout(w)) else {
        return torch();
    };
    let (xs, ws) = (x.size(), w.size());
    assert_eq!(
        xs[1], ws[0],
        "grid_mm: shapes {xs:?} x {ws:?} do not multiply"
    );
    let (m, k, n) = (xs[0] as usize, xs[1] as usize, ws[1] as usize);
    let out = Tensor::empty([m as i64, n as i64], (Kind::Double, Device::Cpu));
    // SAFETY: x, w (and b) are CPU f64 tensors whose memory is m*k, k*n (n) contiguous
    // values from data_ptr (row-major or transposed, checked above); `out` is fresh.
    let done = unsafe {
        let xd = std::slice::from_raw_parts(x.data_ptr() as *const f64, m * k);
        let wd = std::slice::from_raw_parts(w.data_ptr() as *const f64, k * n);
        let bd = b.map(|b| std::slice::from_raw_parts(b.data_ptr() as *const f64, n));
        let od = std::slice::from_raw_parts_mut(out.data_ptr() as *mut f64, m * n);
        let xo = crate::GridOperand {
            data: xd,
            rows: m,
            cols: k,
            trans: xt,
            frac_bits: x_frac,
        };
        let wo = crate::GridOperand {
            data: wd,
            rows: k,
            cols: n,
            trans: wt,
            frac_bits: w_frac,
        };
        crate::grid_gemm(xo, wo, bd, od)
    };
    if done {
        GRID_MM_CALLS.with(|c| c.set((c.get().0 + 1, c.get().1)));
        out
    } else {
        torch()
    }
}

thread_local! {
    /// This thread's [`grid_mm`] products: (on the integer kernel, on libtorch).
    static GRID_MM_CALLS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// How many of this thread's [`grid_mm`] products ran on the integer kernel and how many
/// went to libtorch's GEMM, so far (tests and benches check the kernel is not bypassed).
pub fn grid_mm_counts() -> (u64, u64) {
    GRID_MM_CALLS.with(|c| c.get())
}

/// [`exact_linear`] through one f64 GEMM on the grid values, where
/// [`f64_gemm_is_exact`](crate::f64_gemm_is_exact) proves every product and partial sum
/// exact and every input is finite (`None` otherwise, for the limb path to take over):
/// the GEMM result is then the exact accumulator, and its cast is the exact cast.
fn f64_linear(
    x: &Tensor,
    xf: &FxFormat,
    w: &Tensor,
    wf: &FxFormat,
    b: Option<(&Tensor, &FxFormat)>,
    out: &FxFormat,
) -> Option<(Tensor, QuantStats)> {
    let k = x.size()[1] as usize;
    // Outputs wider than 53 bits are not all f64 values (the limb path rounds their f32
    // results once from the code).
    if out.width > 53 || !crate::f64_gemm_is_exact(xf, wf, k, b.map(|(_, f)| f)) {
        return None;
    }
    // Onto the grids in f64 (inputs off the grid round with their format's mode, as
    // their codes do on the other path).
    let on_grid = |t: &Tensor, f: &FxFormat| {
        let (q, st) = fake_quant(&t.to_kind(Kind::Double), f, None);
        (st.nan == 0 && st.inf == 0).then_some(q)
    };
    let xq = on_grid(x, xf)?;
    let wq = on_grid(w, wf)?;
    let bq = match b {
        Some((bt, bf)) => Some(on_grid(bt, bf)?),
        None => None,
    };
    let acc = grid_mm(&xq, xf.frac_bits(), &wq, wf.frac_bits(), bq.as_ref());
    let (y, stats) = fake_quant(&acc, out, None);
    // One rounding from the grid value (exact in f64 here) to x's kind.
    Some((y.to_kind(x.kind()).to_device(x.device()), stats))
}

/// `cast(x w + b)` computed exactly, as integer hardware would: `x` (m×k) and `w` (k×n)
/// hold values on the grids of `xf` and `wf` (off-grid values are first rounded with
/// their format's mode), `b` (n) on its format's. Returns values of `out`'s grid in
/// `x`'s kind (m×n) and the counts of the output cast. Chosen per call from the formats
/// and k: one f64 GEMM on the grid values where [`f64_gemm_is_exact`](crate::f64_gemm_is_exact)
/// holds (e.g. every 16-bit GEMM of a network), else f64 GEMMs on 16-bit limbs of the
/// codes (exact, recombined in i128) up to 32 bits; wider formats use
/// [`golden_gemm`](crate::golden_gemm).
/// Outputs whose row of `x`, column of `w` or bias is NaN/infinite
/// are NaN, and those inputs are counted in `nan`/`inf`.
///
/// # Panics
/// If the shapes do not form a product (x m×k, w k×n, b n) or the kind is not floating.
pub fn exact_linear(
    x: &Tensor,
    xf: &FxFormat,
    w: &Tensor,
    wf: &FxFormat,
    b: Option<(&Tensor, &FxFormat)>,
    out: &FxFormat,
) -> (Tensor, QuantStats) {
    let (xs, ws) = (x.size(), w.size());
    assert!(
        xs.len() == 2 && ws.len() == 2 && xs[1] == ws[0],
        "exact_linear: shapes {xs:?} x {ws:?} do not multiply"
    );
    let (m, k, n) = (xs[0] as usize, xs[1] as usize, ws[1] as usize);
    if let Some(b) = b {
        assert_eq!(b.0.size(), vec![n as i64], "exact_linear: bias shape");
    }
    if let Some(done) = f64_linear(x, xf, w, wf, b, out) {
        return done;
    }
    let mut stats = QuantStats::default();
    let xc = tensor_codes(x, xf, &mut stats);
    let wc = tensor_codes(w, wf, &mut stats);
    let bc = b.map(|(bt, bf)| {
        assert_eq!(bt.size(), vec![n as i64], "exact_linear: bias shape");
        (tensor_codes(bt, bf, &mut stats), bf)
    });
    let bad_row: Vec<bool> = (0..m)
        .map(|i| xc[i * k..(i + 1) * k].iter().any(Option::is_none))
        .collect();
    let bad_col: Vec<bool> = (0..n)
        .map(|j| {
            (0..k).any(|kk| wc[kk * n + j].is_none())
                || bc.as_ref().is_some_and(|(c, _)| c[j].is_none())
        })
        .collect();
    let zero = |c: &[Option<i64>]| c.iter().map(|v| v.unwrap_or(0)).collect::<Vec<i64>>();
    let (xr, wr) = (zero(&xc), zero(&wc));
    let br = bc.as_ref().map(|(c, bf)| (zero(c), *bf));
    let xi: Vec<i128> = xr.iter().map(|&r| xf.raw_value(r)).collect();
    let wi: Vec<i128> = wr.iter().map(|&r| wf.raw_value(r)).collect();
    let (codes, cast_stats) = match limb_gemm(&xi, xf, &wi, wf, (m, k, n)) {
        Some(acc) => {
            let bias = br.as_ref().map(|(bv, bf)| Bias::new(bv, bf));
            let acc_exp = -(xf.frac_bits() as i64 + wf.frac_bits() as i64);
            let mut s = QuantStats::default();
            let codes: Vec<i64> = acc
                .iter()
                .enumerate()
                .map(|(idx, &a)| {
                    let (r, clip) =
                        finish_i128(a, acc_exp, bias.as_ref().map(|bb| (bb, idx % n)), out);
                    s.record(clip);
                    r
                })
                .collect();
            (codes, s)
        }
        None => golden_gemm_with_stats(
            &xr,
            xf,
            &wr,
            wf,
            br.as_ref().map(|(bv, bf)| (bv.as_slice(), *bf)),
            m,
            k,
            n,
            out,
        ),
    };
    stats.merge(&cast_stats);
    let values: Vec<f64> = codes
        .iter()
        .enumerate()
        .map(|(idx, &r)| {
            if bad_row[idx / n.max(1)] || bad_col[idx % n.max(1)] {
                f64::NAN
            } else {
                crate::to_f64(r, out)
            }
        })
        .collect();
    let kind = x.kind();
    let y = if kind == Kind::Float {
        // One rounding from the code, not through f64, for codes wider than 53 bits.
        let v32: Vec<f32> = codes
            .iter()
            .zip(&values)
            .map(|(&r, &v)| {
                if v.is_nan() {
                    f32::NAN
                } else {
                    f32::from_raw(r, out)
                }
            })
            .collect();
        Tensor::from_slice(&v32)
    } else {
        Tensor::from_slice(&values).to_kind(kind)
    };
    (y.view([m as i64, n as i64]).to_device(x.device()), stats)
}
