//! Fused slice kernels for the fixed-point training hot path (`fast` GEMMs, pure
//! fixed-point mode, no range observation): each kernel reads a GEMM result or the flat
//! optimizer tensors once and writes every tensor the unfused sequence of tch ops would
//! have produced, with the casts done by `quant::fake_quant_slice` on L1-sized chunks.
//!
//! They compute exactly what the unfused path computes, element for element:
//! - casts are quant's slice kernel, which is elementwise (a chunked call equals one call
//!   over the whole slice; stochastic words are counter-based, so consecutive chunks draw
//!   the same words as one call);
//! - f32 -> f64 conversion is exact, f64 -> f32 rounds to nearest even as libtorch's;
//! - ReLU is libtorch's `clamp_min(z, 0)` (`max(0, z)`: NaN stays NaN) and its backward
//!   `threshold_backward` (`z <= 0 ? 0 : delta`);
//! - libtorch's `lerp` with a small scalar weight is `fma(w, end - self, self)` (its
//!   vectorised and scalar loops both contract to one FMA); `square`, scalar `mul`,
//!   `add_scalar`, `div` and `sub` are single IEEE operations with the scalar rounded to
//!   the tensor's type; Adam's `sqrt` is IEEE's correctly rounded root, which the unfused
//!   step's libtorch `sqrt_` gives for f64 (its vector square-root instruction; the
//!   tests below would catch a libtorch that rounds otherwise).
//!
//! `agents/tests/mlp.rs` and `optim::tests` check the fused path against the unfused one
//! bit for bit (values, statistics and stochastic-source counters). The kernels know
//! neither the network nor the optimizer: `mlp::fused` and `optim` hand them slices.

use std::ops::{Add, Div, Mul, Sub};

use quant::{fake_quant_slice, FakeQuantElem, FxFormat, QuantStats, StochasticSource};
use tch::{Kind, Tensor};

/// Elements per chunk: four chunk buffers of f64 stay in L1.
const CH: usize = 1024;

/// A storage float type (f32 or f64).
pub(crate) trait Store:
    FakeQuantElem
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
{
    const KIND: Kind;
    const ZERO: Self;
    /// Significand bits (with the implicit one).
    const MANTISSA: u32;
    /// +0 where `zero` holds, else the value, as a bit mask. Write the result to another
    /// buffer than the one read: an in-place update compiles to masked stores, slow on
    /// AMD cores.
    fn zero_if(self, zero: bool) -> Self;
    /// The scalar as libtorch applies it to a tensor of this type.
    fn of_scalar(x: f64) -> Self;
    fn fma(a: Self, b: Self, c: Self) -> Self;
    /// The correctly rounded square root (IEEE 754), as libtorch's `sqrt`.
    fn sqrt(self) -> Self;
    /// `dst = cast(src as Self)` (the conversion is exact for both types).
    fn cast_f32(
        src: &[f32],
        dst: &mut [Self],
        fmt: &FxFormat,
        rng: Option<&mut StochasticSource>,
    ) -> QuantStats;
    /// `dst = cast(src)` from f64 values (exact GEMM results): into f64 directly, into
    /// f32 through f64 and one rounding of the grid value, as quant does for f32.
    fn cast_f64(
        src: &[f64],
        dst: &mut [Self],
        fmt: &FxFormat,
        rng: Option<&mut StochasticSource>,
    ) -> QuantStats;
    /// `dst = cast(self's slice)` into storage of type `T` (dispatch on the source type:
    /// a GEMM result is f32 on the `fast` path, f64 on the `exact` one).
    fn cast_to<T: Store>(
        src: &[Self],
        dst: &mut [T],
        fmt: &FxFormat,
        rng: Option<&mut StochasticSource>,
    ) -> QuantStats;
}

impl Store for f64 {
    const KIND: Kind = Kind::Double;
    const ZERO: f64 = 0.0;
    const MANTISSA: u32 = 53;
    #[inline(always)]
    fn zero_if(self, zero: bool) -> f64 {
        f64::from_bits(self.to_bits() & !(zero as u64).wrapping_neg())
    }
    #[inline(always)]
    fn of_scalar(x: f64) -> f64 {
        x
    }
    #[inline(always)]
    fn fma(a: f64, b: f64, c: f64) -> f64 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }
    #[inline(always)]
    fn cast_f32(
        src: &[f32],
        dst: &mut [f64],
        fmt: &FxFormat,
        rng: Option<&mut StochasticSource>,
    ) -> QuantStats {
        quant::fake_quant_slice_widen(src, dst, fmt, rng)
    }
    #[inline(always)]
    fn cast_f64(
        src: &[f64],
        dst: &mut [f64],
        fmt: &FxFormat,
        rng: Option<&mut StochasticSource>,
    ) -> QuantStats {
        fake_quant_slice(src, dst, fmt, rng)
    }
    #[inline(always)]
    fn cast_to<T: Store>(
        src: &[f64],
        dst: &mut [T],
        fmt: &FxFormat,
        rng: Option<&mut StochasticSource>,
    ) -> QuantStats {
        T::cast_f64(src, dst, fmt, rng)
    }
}

impl Store for f32 {
    const KIND: Kind = Kind::Float;
    const ZERO: f32 = 0.0;
    const MANTISSA: u32 = 24;

    #[inline(always)]
    fn zero_if(self, zero: bool) -> f32 {
        f32::from_bits(self.to_bits() & !(zero as u32).wrapping_neg())
    }
    #[inline(always)]
    fn of_scalar(x: f64) -> f32 {
        x as f32
    }
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn cast_f32(
        src: &[f32],
        dst: &mut [f32],
        fmt: &FxFormat,
        rng: Option<&mut StochasticSource>,
    ) -> QuantStats {
        fake_quant_slice(src, dst, fmt, rng)
    }
    fn cast_f64(
        src: &[f64],
        dst: &mut [f32],
        fmt: &FxFormat,
        mut rng: Option<&mut StochasticSource>,
    ) -> QuantStats {
        let mut stats = QuantStats::default();
        let mut buf = [0f64; CH];
        for (x, o) in src.chunks(CH).zip(dst.chunks_mut(CH)) {
            let b = &mut buf[..x.len()];
            stats.merge(&fake_quant_slice(x, b, fmt, rng.as_deref_mut()));
            for (o, &v) in o.iter_mut().zip(b.iter()) {
                *o = v as f32;
            }
        }
        stats
    }
    #[inline(always)]
    fn cast_to<T: Store>(
        src: &[f32],
        dst: &mut [T],
        fmt: &FxFormat,
        rng: Option<&mut StochasticSource>,
    ) -> QuantStats {
        T::cast_f32(src, dst, fmt, rng)
    }
}

/// The elements of a contiguous CPU tensor of `T`'s kind.
///
/// # Safety
/// The caller must not create a mutable slice of the same memory while this one lives.
pub(crate) unsafe fn slice<T: Store>(t: &Tensor) -> &[T] {
    check::<T>(t);
    std::slice::from_raw_parts(t.data_ptr() as *const T, t.numel())
}

/// The elements of a contiguous CPU tensor of `T`'s kind, writable.
///
/// # Safety
/// The caller must hold no other slice of the same memory while this one lives.
#[allow(clippy::mut_from_ref)]
pub(crate) unsafe fn slice_mut<T: Store>(t: &Tensor) -> &mut [T] {
    check::<T>(t);
    std::slice::from_raw_parts_mut(t.data_ptr() as *mut T, t.numel())
}

fn check<T: Store>(t: &Tensor) {
    assert!(
        t.kind() == T::KIND && t.device() == tch::Device::Cpu && t.is_contiguous(),
        "fused kernel: expected a contiguous CPU {:?} tensor, got {:?} {:?}",
        T::KIND,
        t.kind(),
        t.device()
    );
}

/// Casts `dst.len()` values chunk by chunk into `dst`: `pre(start, buf, old)` writes
/// the values before the cast into `buf` (`old` is `dst`'s chunk before the cast),
/// `post(start, chunk)` may rewrite `dst`'s chunk after it. Counts go to `stats`.
#[inline(always)]
fn cast_into<T: Store>(
    dst: &mut [T],
    fmt: &FxFormat,
    mut rng: Option<&mut StochasticSource>,
    stats: &mut QuantStats,
    mut pre: impl FnMut(usize, &mut [T], &[T]),
    mut post: impl FnMut(usize, &mut [T]),
) {
    let mut a = [T::ZERO; CH];
    for (c, chunk) in dst.chunks_mut(CH).enumerate() {
        let (start, len) = (c * CH, chunk.len());
        pre(start, &mut a[..len], chunk);
        let st = fake_quant_slice(&a[..len], chunk, fmt, rng.as_deref_mut());
        stats.merge(&st);
        post(start, chunk);
    }
}

/// `dst = cast(src)` from GEMM results (f32 or f64), chunk by chunk; `post(start,
/// chunk)` may rewrite each cast chunk of `dst` while it is in L1.
#[inline(always)]
fn cast_gemm_chunked<G: Store, T: Store>(
    src: &[G],
    dst: &mut [T],
    fmt: &FxFormat,
    mut rng: Option<&mut StochasticSource>,
    stats: &mut QuantStats,
    mut post: impl FnMut(usize, &mut [T]),
) {
    for (c, (x, chunk)) in src.chunks(CH).zip(dst.chunks_mut(CH)).enumerate() {
        stats.merge(&G::cast_to(x, chunk, fmt, rng.as_deref_mut()));
        post(c * CH, chunk);
    }
}

/// Runs `f` compiled for AVX-512 (or AVX2 + FMA) where the CPU has it. Only IEEE
/// operations without implicit contraction run inside, so the results are the same.
#[inline(always)]
fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has these features.
            return unsafe { run_avx512(f) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has these features.
            return unsafe { run_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// The source to hand a cast: only stochastic formats draw words.
fn rng_for<'a>(
    fmt: &FxFormat,
    source: &'a mut StochasticSource,
) -> Option<&'a mut StochasticSource> {
    (fmt.rounding == quant::Rounding::Stochastic).then_some(source)
}

/// Forward after the GEMM (its result `z32` in f32 or f64): `z = cast(z32)` into `z`;
/// with `relu`, also `a = max(0, z)` into `a` and its f32 rounding into `a32`.
pub(crate) fn preact<G: Store, T: Store>(
    z32: &[G],
    fmt: &FxFormat,
    source: &mut StochasticSource,
    stats: &mut QuantStats,
    z: &mut [T],
    mut relu: Option<(&mut [T], Option<&mut [G]>)>,
) {
    simd(
        #[inline(always)]
        || {
            cast_gemm_chunked(z32, z, fmt, rng_for(fmt, source), stats, |s, q| {
                if let Some((a, a32)) = relu.as_mut() {
                    let a = &mut a[s..s + q.len()];
                    for (o, &v) in a.iter_mut().zip(q.iter()) {
                        // max(0, v) as the vector instruction computes it: NaN passes.
                        *o = if v < T::ZERO { T::ZERO } else { v };
                    }
                    if let Some(a32) = a32.as_deref_mut() {
                        for (o, &v) in a32[s..s + q.len()].iter_mut().zip(a.iter()) {
                            *o = G::of_scalar(v.to_f64());
                        }
                    }
                }
            })
        },
    )
}

/// Forward of a hidden ReLU layer whose pre-activation and storage activation nobody
/// keeps (target networks, lean layers): only `a32 = G(max(0, cast(z32)))`, the next
/// GEMM's operand in the GEMM's type `G` (f32 on the `fast` path, f64 = storage on the
/// `exact` one). Up to 50 bits the grid value is an f64, so its f32 rounding is the f32
/// cast's own result (quant rounds once to the element type) and ReLU commutes with
/// that rounding (monotone, 0 stays 0): the cast then goes straight into `a32`.
pub(crate) fn preact_relu<T: Store, G: Store>(
    z32: &[G],
    fmt: &FxFormat,
    source: &mut StochasticSource,
    stats: &mut QuantStats,
    a32: &mut [G],
) {
    simd(
        #[inline(always)]
        || {
            let mut rng = rng_for(fmt, source);
            if fmt.width <= 50 {
                let mut q = [G::ZERO; CH];
                for (x, o) in z32.chunks(CH).zip(a32.chunks_mut(CH)) {
                    let q = &mut q[..x.len()];
                    stats.merge(&fake_quant_slice(x, q, fmt, rng.as_deref_mut()));
                    for (o, &v) in o.iter_mut().zip(q.iter()) {
                        // max(0, v), NaN passing (from another buffer: see `error`).
                        *o = v.zero_if(v < G::ZERO);
                    }
                }
                return;
            }
            let mut q = [T::ZERO; CH];
            for (x, o) in z32.chunks(CH).zip(a32.chunks_mut(CH)) {
                let q = &mut q[..x.len()];
                stats.merge(&G::cast_to(x, q, fmt, rng.as_deref_mut()));
                for (o, &v) in o.iter_mut().zip(q.iter()) {
                    *o = G::of_scalar((if v < T::ZERO { T::ZERO } else { v }).to_f64());
                }
            }
        },
    )
}

/// `dst = cast(src)` (a GEMM result, f32 or f64, into storage), e.g. weight gradients
/// straight into the flat gradient tensor.
pub(crate) fn cast_gemm_into<G: Store, T: Store>(
    src: &[G],
    fmt: &FxFormat,
    source: &mut StochasticSource,
    stats: &mut QuantStats,
    dst: &mut [T],
) {
    simd(
        #[inline(always)]
        || cast_gemm_chunked(src, dst, fmt, rng_for(fmt, source), stats, |_, _| {}),
    )
}

/// `dst = cast(src)` between slices of the storage type, e.g. bias-gradient sums
/// straight into the flat gradient tensor (what `Layer::cast` and a copy compute, without
/// the tensor calls).
pub(crate) fn cast_into_storage<T: Store>(
    src: &[T],
    fmt: &FxFormat,
    source: &mut StochasticSource,
    stats: &mut QuantStats,
    dst: &mut [T],
) {
    stats.merge(&fake_quant_slice(src, dst, fmt, rng_for(fmt, source)));
}

/// Where the error kernel's results go (any subset).
pub(crate) struct ErrorOut<'a, T, G> {
    /// The errors in storage.
    pub d: Option<&'a mut [T]>,
    /// Their f32 rounding (the next GEMMs' operand).
    pub d32: Option<&'a mut [G]>,
    /// The sums down each column of a row-major matrix with `.1` columns: the layer
    /// below's bias gradient before its cast. Only where [`sums_are_exact`] holds, so
    /// that any order of addition (libtorch's reduction's included) gives these values.
    pub col_sums: Option<(&'a mut [T], usize)>,
}

/// Whether sums of `rows` values of `fmt`'s grid are exact in `T` in any order: every
/// partial sum is an integer multiple of the LSB below `rows * 2^(width - 1)` LSBs.
pub(crate) fn sums_are_exact<T: Store>(fmt: &FxFormat, rows: usize) -> bool {
    let grow = usize::BITS - rows.saturating_sub(1).leading_zeros();
    fmt.width - 1 + grow <= T::MANTISSA
}

/// Backward error: `d = cast(dx32)`; with `relu_z` (the layer below's pre-activation,
/// or its activation: both are <= 0 at the same elements), `d = z <= 0 ? 0 : d` (that
/// layer's ReLU backward, whose cast is the identity); then `out`'s parts. The cast
/// goes to an L1 buffer and every later step reads one buffer and writes another (a
/// masked update in place compiles to masked stores, slow on AMD cores).
pub(crate) fn error<G: Store, T: Store, Z: Store>(
    dx32: &[G],
    fmt: &FxFormat,
    source: &mut StochasticSource,
    stats: &mut QuantStats,
    relu_z: Option<&[Z]>,
    mut out: ErrorOut<'_, T, G>,
) {
    simd(
        #[inline(always)]
        || {
            let mut rng = rng_for(fmt, source);
            let (mut cast, mut masked) = ([T::ZERO; CH], [T::ZERO; CH]);
            if let Some((sums, _)) = out.col_sums.as_mut() {
                sums.fill(T::ZERO);
            }
            for (c, x) in dx32.chunks(CH).enumerate() {
                let (s, n) = (c * CH, x.len());
                let b = &mut cast[..n];
                stats.merge(&G::cast_to(x, b, fmt, rng.as_deref_mut()));
                let v: &[T] = match relu_z {
                    Some(z) => {
                        let m = &mut masked[..n];
                        for ((o, &bv), &zz) in m.iter_mut().zip(b.iter()).zip(&z[s..]) {
                            *o = bv.zero_if(zz <= Z::ZERO);
                        }
                        m
                    }
                    None => b,
                };
                if let Some(d) = out.d.as_deref_mut() {
                    d[s..s + n].copy_from_slice(v);
                }
                if let Some(d32) = out.d32.as_deref_mut() {
                    for (o, &e) in d32[s..s + n].iter_mut().zip(v) {
                        *o = G::of_scalar(e.to_f64());
                    }
                }
                if let Some((sums, cols)) = out.col_sums.as_mut() {
                    // Runs of consecutive columns, each added to its sums in one loop.
                    let (mut k, mut col) = (0, s % *cols);
                    while k < n {
                        let run = (*cols - col).min(n - k);
                        for (acc, &e) in sums[col..col + run].iter_mut().zip(&v[k..k + run]) {
                            *acc = *acc + e;
                        }
                        k += run;
                        col = 0;
                    }
                }
            }
        },
    )
}

/// `lerp(a, b, w)` as libtorch computes it (one FMA), for |w| < 0.5.
#[inline(always)]
fn lerp_small<T: Store>(a: T, b: T, w: T) -> T {
    T::fma(w, b - a, a)
}

/// A segment of a network's flat parameters: offset, length and its own (weight or
/// bias) format, plus the optimizer formats of its layer.
pub(crate) struct Segment<'a> {
    pub off: usize,
    pub len: usize,
    pub own: FxFormat,
    pub opt: FxFormat,
    pub update: FxFormat,
    /// Counts per class of the segment's layer (indexed by `TensorClass::index`),
    /// shared by the layer's two segments.
    stats: *mut [QuantStats; 9],
    pub own_class: usize,
    _layers: std::marker::PhantomData<&'a mut [QuantStats; 9]>,
}

impl<'a> Segment<'a> {
    /// `stats` must point at counters that outlive `'a` and that nothing else touches
    /// while the segment lives (segments of the same layer share them).
    pub fn new(
        off: usize,
        len: usize,
        own: FxFormat,
        opt: FxFormat,
        update: FxFormat,
        stats: *mut [QuantStats; 9],
        own_class: usize,
    ) -> Self {
        Segment {
            off,
            len,
            own,
            opt,
            update,
            stats,
            own_class,
            _layers: std::marker::PhantomData,
        }
    }

    /// The counters of `class` (one borrow at a time).
    fn stats(&mut self, class: usize) -> &mut QuantStats {
        // SAFETY: see `new`; the borrow ends before any other segment's is taken.
        unsafe { &mut (*self.stats)[class] }
    }
}

/// Fused Adam, one pass over every segment, chunk by chunk in L1:
/// `m = cast_opt(lerp(m, g, 1 - beta1))`, `s = cast_opt(sqrt(lerp(s^2, g^2, 1 - beta2)))`
/// (IEEE's correctly rounded root, the value libtorch's `sqrt_` gives the unfused step),
/// `u = cast_update((m c1) / (s c2 + eps))` with `eps = eps_of(opt)` per segment (the
/// optimizer's epsilon for that segment's state format), `p = cast_own(p - u)` and the
/// f32 shadow of `p`. Both lerp weights must be below 0.5, and the optimizer-state and update
/// formats must not round stochastically (the caller checks): the parameter casts are
/// then the only ones drawing words, in segment and element order as the unfused step.
#[allow(clippy::too_many_arguments)]
pub(crate) fn adam_step<T: Store, S: Store>(
    segs: &mut [Segment<'_>],
    g: &[T],
    m: &mut [T],
    s: &mut [T],
    p: &mut [T],
    mut p32: Option<&mut [S]>,
    (w1, w2): (f64, f64),
    (c1, c2): (f64, f64),
    eps_of: &dyn Fn(FxFormat) -> f64,
    source: &mut StochasticSource,
    (opt_class, update_class): (usize, usize),
) {
    assert!(w1.abs() < 0.5 && w2.abs() < 0.5, "lerp weights below 0.5");
    let (w1, w2) = (T::of_scalar(w1), T::of_scalar(w2));
    let (c1, c2) = (T::of_scalar(c1), T::of_scalar(c2));
    simd(
        #[inline(always)]
        || {
            let (mut a, mut u) = ([T::ZERO; CH], [T::ZERO; CH]);
            for seg in segs.iter_mut() {
                let (opt, update, own) = (seg.opt, seg.update, seg.own);
                assert!(
                    opt.rounding != quant::Rounding::Stochastic
                        && update.rounding != quant::Rounding::Stochastic,
                    "fused Adam: deterministic optimizer formats"
                );
                let eps = T::of_scalar(eps_of(opt));
                let r = seg.off..seg.off + seg.len;
                let mut p32 = p32.as_deref_mut().map(|x| &mut x[r.clone()]);
                let chunks = g[r.clone()]
                    .chunks(CH)
                    .zip(m[r.clone()].chunks_mut(CH))
                    .zip(s[r.clone()].chunks_mut(CH))
                    .zip(p[r].chunks_mut(CH));
                for (c, (((g, m), s), p)) in chunks.enumerate() {
                    let n = g.len();
                    let (a, u) = (&mut a[..n], &mut u[..n]);
                    for ((b, &mv), &gv) in a.iter_mut().zip(m.iter()).zip(g) {
                        *b = lerp_small(mv, gv, w1);
                    }
                    seg.stats(opt_class)
                        .merge(&fake_quant_slice(a, m, &opt, None));
                    for ((b, &sv), &gv) in a.iter_mut().zip(s.iter()).zip(g) {
                        *b = Store::sqrt(lerp_small(sv * sv, gv * gv, w2));
                    }
                    seg.stats(opt_class)
                        .merge(&fake_quant_slice(a, s, &opt, None));
                    for ((b, &mv), &sv) in a.iter_mut().zip(m.iter()).zip(s.iter()) {
                        *b = (mv * c1) / (sv * c2 + eps);
                    }
                    seg.stats(update_class)
                        .merge(&fake_quant_slice(a, u, &update, None));
                    for ((b, &pv), &uv) in a.iter_mut().zip(p.iter()).zip(u.iter()) {
                        *b = pv - uv;
                    }
                    let class = seg.own_class;
                    let st = fake_quant_slice(a, p, &own, rng_for(&own, source));
                    seg.stats(class).merge(&st);
                    if let Some(p32) = p32.as_deref_mut() {
                        for (o, &v) in p32[c * CH..c * CH + n].iter_mut().zip(p.iter()) {
                            *o = S::of_scalar(v.to_f64());
                        }
                    }
                }
            }
        },
    )
}

/// Adam on all-float flat tensors, the part before the square root: `m = lerp(m, g, w1)`
/// and `s = lerp(s^2, g^2, w2)` (each lerp one FMA), as `Optimizer::step_float`'s tch
/// calls compute them. The root stays libtorch's `sqrt_`: its f32 root is not always the
/// correctly rounded one (1 ulp off on some inputs), and the float path keeps its values.
pub(crate) fn adam_moments_float<T: Store>(
    g: &[T],
    m: &mut [T],
    s: &mut [T],
    (w1, w2): (f64, f64),
) {
    assert!(w1.abs() < 0.5 && w2.abs() < 0.5, "lerp weights below 0.5");
    assert!(m.len() == g.len() && s.len() == g.len());
    let (w1, w2) = (T::of_scalar(w1), T::of_scalar(w2));
    simd(
        #[inline(always)]
        || {
            for ((&gv, mv), sv) in g.iter().zip(m.iter_mut()).zip(s.iter_mut()) {
                *mv = lerp_small(*mv, gv, w1);
                *sv = lerp_small(*sv * *sv, gv * gv, w2);
            }
        },
    )
}

/// Adam on all-float flat tensors after the root: `p = p + m / (s * k + e)` (a multiply,
/// an add, `addcdiv`'s value 1 leaving the quotient), as `step_float`'s tch calls.
pub(crate) fn adam_apply_float<T: Store>(m: &[T], s: &[T], p: &mut [T], (k, e): (f64, f64)) {
    assert!(s.len() == m.len() && p.len() == m.len());
    let (k, e) = (T::of_scalar(k), T::of_scalar(e));
    simd(
        #[inline(always)]
        || {
            for ((&mv, &sv), pv) in m.iter().zip(s).zip(p) {
                *pv = *pv + mv / (sv * k + e);
            }
        },
    )
}

/// Polyak averaging of one segment: `p = cast_own(lerp(p, src, tau))` and the f32
/// shadow. `tau` must be below 0.5.
pub(crate) fn soft_update<T: Store, S: Store>(
    seg: &mut Segment<'_>,
    src: &[T],
    p: &mut [T],
    p32: Option<&mut [S]>,
    tau: f64,
    source: &mut StochasticSource,
) {
    assert!(tau.abs() < 0.5, "lerp weight below 0.5");
    let tau = T::of_scalar(tau);
    let r = seg.off..seg.off + seg.len;
    let src = &src[r.clone()];
    let mut p32 = p32.map(|x| &mut x[r.clone()]);
    let (own, class) = (seg.own, seg.own_class);
    simd(
        #[inline(always)]
        || {
            cast_into(
                &mut p[r],
                &own,
                rng_for(&own, source),
                seg.stats(class),
                |st, buf: &mut [T], old| {
                    for ((b, &pv), &sv) in buf.iter_mut().zip(old).zip(&src[st..]) {
                        *b = lerp_small(pv, sv, tau);
                    }
                },
                |st, q| {
                    if let Some(p32) = p32.as_deref_mut() {
                        for (o, &v) in p32[st..st + q.len()].iter_mut().zip(q.iter()) {
                            *o = S::of_scalar(v.to_f64());
                        }
                    }
                },
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(width: u32) -> FxFormat {
        FxFormat::new(
            true,
            width,
            8,
            quant::Rounding::RndConv,
            quant::Overflow::Sat,
        )
        .unwrap()
    }

    /// The bound: `rows` values of at most 2^(width-1) LSBs sum below 2^MANTISSA LSBs.
    #[test]
    fn column_sums_are_exact_up_to_the_significand() {
        assert!(sums_are_exact::<f64>(&fmt(32), 256));
        assert!(sums_are_exact::<f64>(&fmt(48), 64));
        assert!(!sums_are_exact::<f64>(&fmt(49), 64));
        assert!(!sums_are_exact::<f64>(&fmt(48), 65));
        assert!(sums_are_exact::<f32>(&fmt(17), 256));
        assert!(!sums_are_exact::<f32>(&fmt(18), 256));
        assert!(sums_are_exact::<f32>(&fmt(24), 1));
        // At the bound the extreme column still sums exactly in either order.
        let f = fmt(48);
        let max = f.raw_max() as f64 * f.lsb();
        let lsb = f.lsb();
        let col: Vec<f64> = (0..64)
            .map(|i| if i % 2 == 0 { max } else { max - lsb })
            .collect();
        let fwd: f64 = col.iter().sum();
        let rev: f64 = col.iter().rev().sum();
        assert_eq!(fwd, rev);
        assert_eq!(fwd, 32.0 * max + 32.0 * (max - lsb));
    }
}
