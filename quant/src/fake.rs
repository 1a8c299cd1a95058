//! Fake quantization of float slices: every element moved onto a format's grid (rounding,
//! then overflow) and written back as a float, in one pass, with per-call counts. The
//! tensor path runs this kernel on libtorch's memory.
//!
//! Each output equals the scalar path's value, `to_f64(from_f64(x))`, rounded once to the
//! element type (exact whenever the type holds the grid value: always for f64 and width
//! <= 53, for f32 when the code has at most 24 significant bits). NaN and infinities are
//! counted and passed through unchanged.

use rayon::prelude::*;

use crate::exact::from_f64_exact_clip;
use crate::format::{FxFormat, Rounding};
use crate::grid::{has_direct_rounding, Real, SatGrid, Screen};
use crate::quantizer::{with_rounding, FloatGrid, Quantizer};
use crate::stats::{Clip, QuantStats};
use crate::stochastic::{StochasticBlock, StochasticSource};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// Float element types the kernel handles (f32, f64); sealed.
pub trait FakeQuantElem: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The type is f32 (its slices may be reinterpreted as `[f32]`).
    #[doc(hidden)]
    const IS_F32: bool;
    fn to_f64(self) -> f64;
    /// The nearest element to the exact double `v`.
    fn from_f64(v: f64) -> Self;
    /// The nearest element to the value of `raw` in `fmt` (one rounding, outside the
    /// element's subnormal range).
    fn from_raw(raw: i64, fmt: &FxFormat) -> Self;
}

impl FakeQuantElem for f64 {
    const IS_F32: bool = false;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    fn from_raw(raw: i64, fmt: &FxFormat) -> Self {
        crate::to_f64(raw, fmt)
    }
}

impl FakeQuantElem for f32 {
    const IS_F32: bool = true;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn from_raw(raw: i64, fmt: &FxFormat) -> Self {
        let v = fmt.raw_value(raw);
        if v.unsigned_abs() < 1 << 53 {
            // Exact double, then one rounding to f32.
            crate::to_f64(raw, fmt) as f32
        } else {
            // One rounding of the code to f32, then an exact power-of-two scaling.
            crate::exact::scale_pow2(v as f32 as f64, -(fmt.frac_bits() as i64)) as f32
        }
    }
}

/// Elements per parallel task: large enough that the split costs nothing measurable.
const CHUNK: usize = 1 << 15;

/// Fake-quantizes `xs` into `out` (same length) with `fmt`; STOCHASTIC formats draw one
/// word per element from `rng` (round to nearest-even without one). Parallel over chunks;
/// the result does not depend on the thread count.
pub fn fake_quant_slice<T: FakeQuantElem>(
    xs: &[T],
    out: &mut [T],
    fmt: &FxFormat,
    rng: Option<&mut StochasticSource>,
) -> QuantStats {
    fake_quant_slice_masked(xs, out, None, fmt, rng)
}

/// [`fake_quant_slice`] of f32 inputs into f64 outputs: `out[i]` is the f64 result
/// for the (exact) double `xs[i] as f64`, without a separate conversion pass. Same
/// values, counts and stochastic draws as converting first.
pub fn fake_quant_slice_widen(
    xs: &[f32],
    out: &mut [f64],
    fmt: &FxFormat,
    rng: Option<&mut StochasticSource>,
) -> QuantStats {
    assert_eq!(
        xs.len(),
        out.len(),
        "fake_quant: input and output lengths differ"
    );
    let q = Quantizer::new(fmt);
    let stochastic = rng.is_some() && fmt.rounding == crate::Rounding::Stochastic;
    match q.grid() {
        Some(g) if g.saturates_all_finite() && !stochastic => {
            let (g64, _) = g.saturating();
            saturating_dispatch(g64, fmt.rounding, xs, out, NoMask)
        }
        _ => {
            let mut rng = rng;
            let mut total = QuantStats::default();
            let mut buf = [0f64; 1024];
            for (x, o) in xs.chunks(1024).zip(out.chunks_mut(1024)) {
                let b = &mut buf[..x.len()];
                for (b, &v) in b.iter_mut().zip(x) {
                    *b = v as f64;
                }
                total.merge(&fake_quant_slice(b, o, fmt, rng.as_deref_mut()));
            }
            total
        }
    }
}

/// As [`fake_quant_slice`]; also writes `mask[i] = true` where the element was finite and
/// representable after rounding (no saturation or wrap), the straight-through region.
pub(crate) fn fake_quant_slice_masked<T: FakeQuantElem>(
    xs: &[T],
    out: &mut [T],
    mask: Option<&mut [bool]>,
    fmt: &FxFormat,
    rng: Option<&mut StochasticSource>,
) -> QuantStats {
    assert_eq!(
        xs.len(),
        out.len(),
        "fake_quant: input and output lengths differ"
    );
    let q = Quantizer::new(fmt);
    let block = match rng {
        Some(r) if fmt.rounding == crate::Rounding::Stochastic => {
            Some(r.take_block(xs.len() as u64))
        }
        _ => None,
    };
    let run = |start: usize, xs: &[T], out: &mut [T], mask: Option<&mut [bool]>| {
        chunk_kernel(&q, block.as_ref(), start, xs, out, mask)
    };
    let mut mask = mask;
    if let Some(m) = &mask {
        assert_eq!(m.len(), xs.len(), "fake_quant: mask length differs");
    }
    if xs.len() <= CHUNK {
        return run(0, xs, out, mask.as_deref_mut());
    }
    let parts: Vec<QuantStats> = match mask {
        Some(m) => xs
            .par_chunks(CHUNK)
            .zip(out.par_chunks_mut(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .enumerate()
            .map(|(i, ((x, o), m))| run(i * CHUNK, x, o, Some(m)))
            .collect(),
        None => xs
            .par_chunks(CHUNK)
            .zip(out.par_chunks_mut(CHUNK))
            .enumerate()
            .map(|(i, (x, o))| run(i * CHUNK, x, o, None))
            .collect(),
    };
    let mut total = QuantStats::default();
    for p in &parts {
        total.merge(p);
    }
    total
}

#[inline(always)]
fn chunk_kernel<T: FakeQuantElem>(
    q: &Quantizer,
    block: Option<&StochasticBlock>,
    start: usize,
    xs: &[T],
    out: &mut [T],
    mask: Option<&mut [bool]>,
) -> QuantStats {
    match (q.grid(), block) {
        (Some(g), None) if g.saturates_all_finite() => {
            let rounding = q.format().rounding;
            match mask {
                Some(m) => saturating_elems(g, rounding, xs, out, m),
                None => saturating_elems(g, rounding, xs, out, NoMask),
            }
        }
        (Some(g), Some(b)) if g.saturates_all_finite() => {
            // Stochastic rounding on a saturating grid: the same per-element arithmetic
            // as `general_chunk` (`SatGrid::code` in f64 with word `start + i`), in a
            // branch-free loop.
            let (g64, _) = g.saturating();
            match mask {
                Some(m) => stochastic_dispatch(g64, b, start, xs, out, m),
                None => stochastic_dispatch(g64, b, start, xs, out, NoMask),
            }
        }
        _ => general_chunk(q, block, start, xs, out, mask),
    }
}

/// `stochastic_chunk` compiled for AVX-512 (with DQ) or AVX2 where the CPU has them.
fn stochastic_dispatch<T: FakeQuantElem, M: MaskSink>(
    g: &SatGrid<f64>,
    block: &StochasticBlock,
    start: usize,
    xs: &[T],
    out: &mut [T],
    mask: M,
) -> QuantStats {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512dq")
        && std::is_x86_feature_detected!("avx512vl")
    {
        // SAFETY: the CPU supports these features.
        return unsafe { stochastic_avx512(g, block, start, xs, out, mask) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2.
        return unsafe { stochastic_avx2(g, block, start, xs, out, mask) };
    }
    stochastic_chunk(g, block, start, xs, out, mask)
}

macro_rules! stochastic_with_features {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name<T: FakeQuantElem, M: MaskSink>(
            g: &SatGrid<f64>,
            block: &StochasticBlock,
            start: usize,
            xs: &[T],
            out: &mut [T],
            mask: M,
        ) -> QuantStats {
            stochastic_chunk(g, block, start, xs, out, mask)
        }
    };
}

stochastic_with_features!(stochastic_avx512, "avx512f,avx512dq,avx512vl,avx2");
stochastic_with_features!(stochastic_avx2, "avx2");

/// Stochastic rounding onto a saturating grid, computed in f64 as `general_chunk`
/// computes it; non-finite inputs pass through and are counted.
#[inline(always)]
fn stochastic_chunk<T: FakeQuantElem, M: MaskSink>(
    g: &SatGrid<f64>,
    block: &StochasticBlock,
    start: usize,
    xs: &[T],
    out: &mut [T],
    mut mask: M,
) -> QuantStats {
    let (mut clipped_n, mut non_finite, mut nan) = (0u32, 0u32, 0u32);
    for (i, (o, &x)) in out.iter_mut().zip(xs).enumerate() {
        let xr = x.to_f64();
        let finite = xr.is_finite();
        let random = block.word((start + i) as u64);
        let (c, clipped) = g.code(
            if finite { xr } else { 0.0 },
            Rounding::Stochastic,
            Some(random),
        );
        let v = T::from_f64((c + 0.0) * g.inv_scale);
        *o = if finite { v } else { x };
        let clipped = clipped & finite;
        clipped_n += clipped as u32;
        non_finite += !finite as u32;
        nan += xr.is_nan() as u32;
        mask.set(i, finite & !clipped);
    }
    QuantStats {
        elements: xs.len() as u64,
        saturated: clipped_n as u64,
        wrapped: 0,
        nan: nan as u64,
        inf: (non_finite - nan) as u64,
    }
}

/// Picks the precision of the saturating loop: f32 data on a grid f32 computes exactly
/// stays in f32, everything else is computed in f64.
fn saturating_elems<T: FakeQuantElem, M: MaskSink>(
    g: &FloatGrid,
    rounding: Rounding,
    xs: &[T],
    out: &mut [T],
    mask: M,
) -> QuantStats {
    let (g64, g32) = g.saturating();
    match g32 {
        Some(g32) if T::IS_F32 => {
            // SAFETY: IS_F32 holds only for f32 (the trait is sealed), so these are the
            // same slices with their own type.
            let (xs, out) = unsafe {
                (
                    std::slice::from_raw_parts(xs.as_ptr() as *const f32, xs.len()),
                    std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut f32, out.len()),
                )
            };
            saturating_dispatch(g32, rounding, xs, out, mask)
        }
        _ => saturating_dispatch(g64, rounding, xs, out, mask),
    }
}

/// Runs the saturating loop compiled for AVX-512 or AVX2 where the CPU has them, else
/// for the baseline; the arithmetic (no FMA contraction) and so the results are the same.
fn saturating_dispatch<U: Lane<R>, T: Lane<R> + PassFrom<U>, R: Real, M: MaskSink>(
    g: &SatGrid<R>,
    rounding: Rounding,
    xs: &[U],
    out: &mut [T],
    mask: M,
) -> QuantStats {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU supports AVX-512 F and BW.
        return unsafe { saturating_avx512(g, rounding, xs, out, mask) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2.
        return unsafe { saturating_avx2(g, rounding, xs, out, mask) };
    }
    with_rounding!(rounding, |r| saturating_chunk(g, r, xs, out, mask))
}

/// The saturating loop compiled with extra target features (the body is the same).
macro_rules! saturating_with_features {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name<U: Lane<R>, T: Lane<R> + PassFrom<U>, R: Real, M: MaskSink>(
            g: &SatGrid<R>,
            rounding: Rounding,
            xs: &[U],
            out: &mut [T],
            mask: M,
        ) -> QuantStats {
            if has_direct_rounding(rounding) {
                return with_rounding!(rounding, |r| saturating_screened(g, r, xs, out, mask));
            }
            with_rounding!(rounding, |r| saturating_chunk(g, r, xs, out, mask))
        }
    };
}

saturating_with_features!(saturating_avx512, "avx512f,avx512bw,avx512vl,avx2");
saturating_with_features!(saturating_avx2, "avx2");

/// Elements of type `Self` computed in precision `R`.
trait Lane<R: Real>: FakeQuantElem {
    /// Exact.
    fn widen(self) -> R;
    /// Nearest.
    fn narrow(r: R) -> Self;
}

impl<T: FakeQuantElem> Lane<f64> for T {
    #[inline(always)]
    fn widen(self) -> f64 {
        self.to_f64()
    }
    #[inline(always)]
    fn narrow(r: f64) -> T {
        T::from_f64(r)
    }
}

impl Lane<f32> for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
    #[inline(always)]
    fn narrow(r: f32) -> f32 {
        r
    }
}

/// How a non-finite input is written to the output type: unchanged for the same type,
/// converted (exact) from f32 to f64.
trait PassFrom<U> {
    fn pass_from(u: U) -> Self;
}

impl<T: FakeQuantElem> PassFrom<T> for T {
    #[inline(always)]
    fn pass_from(u: T) -> T {
        u
    }
}

impl PassFrom<f32> for f64 {
    #[inline(always)]
    fn pass_from(u: f32) -> f64 {
        u as f64
    }
}

/// Where the straight-through mask goes (nowhere for plain fake quantization).
trait MaskSink {
    fn set(&mut self, i: usize, inside: bool);
}

struct NoMask;

impl MaskSink for NoMask {
    #[inline(always)]
    fn set(&mut self, _: usize, _: bool) {}
}

impl<M: MaskSink> MaskSink for &mut M {
    #[inline(always)]
    fn set(&mut self, i: usize, inside: bool) {
        (**self).set(i, inside);
    }
}

impl MaskSink for &mut [bool] {
    #[inline(always)]
    fn set(&mut self, i: usize, inside: bool) {
        self[i] = inside;
    }
}

/// The hot loop: saturating modes on the float route, no random words. Branch-free
/// (vectorizes): non-finite inputs are quantized as 0 and then selected away, counts
/// are sums.
#[inline(always)]
fn saturating_chunk<U: Lane<R>, T: Lane<R> + PassFrom<U>, R: Real>(
    g: &SatGrid<R>,
    rounding: Rounding,
    xs: &[U],
    out: &mut [T],
    mut mask: impl MaskSink,
) -> QuantStats {
    let (mut clipped_n, mut non_finite, mut nan) = (0u32, 0u32, 0u32);
    for (i, (o, &x)) in out.iter_mut().zip(xs).enumerate() {
        let xr = x.widen();
        let finite = xr.is_finite();
        let (c, clipped) = g.code(if finite { xr } else { R::ZERO }, rounding, None);
        // `+ 0` turns a -0 code into +0, as the integer code 0 reads back.
        let v = T::narrow((c + R::ZERO) * g.inv_scale);
        *o = if finite { v } else { T::pass_from(x) };
        clipped_n += clipped as u32;
        non_finite += !finite as u32;
        nan += xr.is_nan() as u32;
        mask.set(i, finite & !clipped);
    }
    QuantStats {
        elements: xs.len() as u64,
        saturated: clipped_n as u64,
        wrapped: 0,
        nan: nan as u64,
        inf: (non_finite - nan) as u64,
    }
}

/// [`saturating_chunk`] for the modes one rounding instruction computes, with the
/// instruction (`SatGrid::code_direct`) and without the per-element handling of
/// non-finite inputs: None when the chunk holds one (`out` and the mask are then
/// garbage, and the caller runs [`saturating_chunk`] over it). About half the
/// instructions per element; only called where the rounding instruction exists (the
/// AVX2/AVX-512 builds), as the baseline x86-64 target would call libm per element.
#[inline(always)]
fn saturating_chunk_direct<U: Lane<R>, T: Lane<R> + PassFrom<U>, R: Real>(
    g: &SatGrid<R>,
    rounding: Rounding,
    xs: &[U],
    out: &mut [T],
    mut mask: impl MaskSink,
) -> Option<QuantStats> {
    let mut clipped_n = 0u32;
    let mut all_finite = true;
    for (i, (o, &x)) in out.iter_mut().zip(xs).enumerate() {
        let xr = x.widen();
        all_finite &= xr.is_finite();
        let (c, clipped) = g.code_direct(xr, rounding)?;
        // `+ 0` turns a -0 code into +0, as the integer code 0 reads back.
        *o = T::narrow((c + R::ZERO) * g.inv_scale);
        clipped_n += clipped as u32;
        mask.set(i, !clipped);
    }
    all_finite.then_some(QuantStats {
        elements: xs.len() as u64,
        saturated: clipped_n as u64,
        ..QuantStats::default()
    })
}

/// Elements per sub-chunk of the screened route (a sub-chunk holding a saturated or
/// non-finite element is redone by the saturating loops).
const SCREEN_CHUNK: usize = 256;

/// The modes one rounding instruction computes, in three tiers per sub-chunk: the
/// screened loop ([`Screen`]: scale, round, one range test; in f32 for f32 inputs where
/// that is exact), then for a sub-chunk it rejects [`saturating_chunk_direct`] (saturates,
/// no non-finite handling), then [`saturating_chunk`]. Every tier computes the same values,
/// counts and mask; only the instructions per element differ.
#[inline(always)]
fn saturating_screened<U: Lane<R>, T: Lane<R> + PassFrom<U>, R: Real, M: MaskSink>(
    g: &SatGrid<R>,
    rounding: Rounding,
    xs: &[U],
    out: &mut [T],
    mut mask: M,
) -> QuantStats {
    let screen32 = g.screen32.filter(|_| U::IS_F32);
    let screen = g.screen();
    let mut stats = QuantStats::default();
    for (c, (x, o)) in xs
        .chunks(SCREEN_CHUNK)
        .zip(out.chunks_mut(SCREEN_CHUNK))
        .enumerate()
    {
        let mut sub = Offset(&mut mask, c * SCREEN_CHUNK);
        let inside = match &screen32 {
            Some(s) if T::IS_F32 => screened_chunk(s, rounding, x, o),
            Some(s) => {
                // Full-width f32 vectors first, then one widening pass (the compiler
                // otherwise runs the f32 arithmetic at the f64 vector length).
                let mut tmp = [0f32; SCREEN_CHUNK];
                let tmp = &mut tmp[..x.len()];
                let inside = screened_chunk(s, rounding, x, tmp);
                for (o, &v) in o.iter_mut().zip(tmp.iter()) {
                    *o = T::from_f64(v as f64);
                }
                inside
            }
            None => screened_chunk(&screen, rounding, x, o),
        };
        let st = if inside {
            for i in 0..x.len() {
                sub.set(i, true);
            }
            QuantStats {
                elements: x.len() as u64,
                ..QuantStats::default()
            }
        } else {
            match saturating_chunk_direct(g, rounding, x, o, &mut sub) {
                Some(st) => st,
                None => saturating_chunk(g, rounding, x, o, sub),
            }
        };
        stats.merge(&st);
    }
    stats
}

/// The screened loop: `out[i]` = the grid value of `xs[i]` computed in S, true when every
/// element is inside the range (finite and not saturated); `out` is garbage otherwise.
/// S = f32 only for f32 inputs (the conversions then fold away).
#[inline(always)]
fn screened_chunk<U: FakeQuantElem, T: FakeQuantElem, S: Real>(
    s: &Screen<S>,
    rounding: Rounding,
    xs: &[U],
    out: &mut [T],
) -> bool {
    // An or-reduction in integers of the float's width (no mask narrowing per vector).
    let mut outside = S::Bits::default();
    for (o, &x) in out.iter_mut().zip(xs) {
        let (r, inside) = s.code(S::of_f64(x.to_f64()), rounding);
        outside = outside | S::bit(!inside);
        // `+ 0` turns a -0 code into +0, as the integer code 0 reads back.
        *o = T::from_f64(((r + S::ZERO) * s.inv_scale).to_f64());
    }
    outside == S::Bits::default()
}

/// A mask sink seen from element `.1` on.
struct Offset<'a, M>(&'a mut M, usize);

impl<M: MaskSink> MaskSink for Offset<'_, M> {
    #[inline(always)]
    fn set(&mut self, i: usize, inside: bool) {
        self.0.set(self.1 + i, inside);
    }
}

/// Every other case: WRAP, stochastic rounding, inputs that need the integer path.
fn general_chunk<T: FakeQuantElem>(
    q: &Quantizer,
    block: Option<&StochasticBlock>,
    start: usize,
    xs: &[T],
    out: &mut [T],
    mut mask: Option<&mut [bool]>,
) -> QuantStats {
    let fmt = q.format();
    let grid = q.grid();
    let inv_scale = grid.map_or(0.0, |g| g.inv_scale());
    let wraps = fmt.overflow == crate::Overflow::Wrap;
    let mut stats = QuantStats {
        elements: xs.len() as u64,
        ..QuantStats::default()
    };
    for (i, (o, &x)) in out.iter_mut().zip(xs).enumerate() {
        let xd = x.to_f64();
        let random = block.map(|b| b.word((start + i) as u64));
        let ok = if !xd.is_finite() {
            stats.nan += xd.is_nan() as u64;
            stats.inf += xd.is_infinite() as u64;
            *o = x;
            false
        } else if let Some((c, clipped)) = grid.and_then(|g| g.code(xd, random)) {
            *o = T::from_f64((c + 0.0) * inv_scale);
            stats.saturated += (clipped & !wraps) as u64;
            stats.wrapped += (clipped & wraps) as u64;
            !clipped
        } else {
            let (raw, clip) = from_f64_exact_clip(xd, fmt, random).expect("finite input");
            *o = T::from_raw(raw, fmt);
            stats.saturated += (clip == Clip::Saturated) as u64;
            stats.wrapped += (clip == Clip::Wrapped) as u64;
            clip == Clip::None
        };
        if let Some(m) = mask.as_deref_mut() {
            m[i] = ok;
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Overflow, StochasticSource};

    /// Inputs around a format's grid: ties, near-ties, range edges, specials.
    fn inputs(fmt: &FxFormat, n: usize) -> Vec<f32> {
        let mut rng = StochasticSource::new(fmt.width as u64 * 131 + fmt.int_bits as u64);
        let span = (fmt.raw_max() as f64) * 1.3 + 2.0;
        let mut xs: Vec<f32> = (0..n)
            .map(|_| {
                let w = rng.next_word();
                let k = ((w >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * span;
                let frac = [0.0, 0.5, 0.25, 0.4999, 0.5001][(w % 5) as usize];
                ((k.trunc() + frac) * fmt.lsb()) as f32
            })
            .collect();
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            f32::MAX,
            -f32::MAX,
        ]);
        xs
    }

    #[test]
    fn f32_f64_simd_and_baseline_routes_equal_the_scalar_path() {
        for w in [1u32, 2, 8, 16, 22, 23, 40] {
            for q in &Rounding::ALL[..7] {
                for o in [Overflow::Sat, Overflow::SatZero, Overflow::SatSym] {
                    let fmt = FxFormat::new(w % 2 == 0, w, w as i32 / 2, *q, o).unwrap();
                    let xs = inputs(&fmt, 3000);
                    let want: Vec<f32> = xs
                        .iter()
                        .map(|&x| match crate::from_f64(x as f64, &fmt) {
                            Ok(r) => f32::from_raw(r, &fmt),
                            Err(_) => x,
                        })
                        .collect();
                    let mut got = vec![0f32; xs.len()];
                    let stats = fake_quant_slice(&xs, &mut got, &fmt, None);
                    let g = FloatGrid::new(&fmt).unwrap();
                    let (g64, _) = g.saturating();
                    let mut base = vec![0f32; xs.len()];
                    with_rounding!(*q, |r| saturating_chunk(g64, r, &xs, &mut base, NoMask));
                    let mut avx2 = base.clone();
                    #[cfg(target_arch = "x86_64")]
                    if std::is_x86_feature_detected!("avx2") {
                        // SAFETY: the CPU supports AVX2.
                        unsafe { saturating_avx2(g64, *q, &xs, &mut avx2, NoMask) };
                    }
                    let mut x64 = vec![0f64; xs.len()];
                    let xs64: Vec<f64> = xs.iter().map(|&x| x as f64).collect();
                    fake_quant_slice(&xs64, &mut x64, &fmt, None);
                    for i in 0..xs.len() {
                        let same = |a: f32, b: f32| {
                            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
                        };
                        assert!(
                            same(got[i], want[i]),
                            "{fmt} {}: {} vs {}",
                            xs[i],
                            got[i],
                            want[i]
                        );
                        assert!(same(base[i], want[i]), "{fmt} {} baseline", xs[i]);
                        assert!(same(avx2[i], want[i]), "{fmt} {} avx2", xs[i]);
                        if w <= 24 {
                            assert!(same(x64[i] as f32, want[i]), "{fmt} {} f64", xs[i]);
                        }
                    }
                    assert_eq!(
                        (stats.nan, stats.inf, stats.elements),
                        (1, 2, xs.len() as u64)
                    );
                }
            }
        }
    }

    /// The AVX2/AVX-512 loops (which take the rounding-instruction route for RndConv,
    /// Trn and TrnZero when a chunk is all finite) against the baseline loop: values,
    /// straight-through mask and counts, for chunks with and without specials, f32 and
    /// f64 precision, widening included.
    #[test]
    fn rounding_instruction_route_equals_the_baseline_loop() {
        type Kernel<U, T, R> = fn(&SatGrid<R>, Rounding, &[U], &mut [T], &mut [bool]) -> QuantStats;
        fn check<U: Lane<R> + Copy, T: Lane<R> + PassFrom<U>, R: Real>(
            g: &SatGrid<R>,
            q: Rounding,
            xs: &[U],
            fmt: &FxFormat,
            kernels: &[(&str, Kernel<U, T, R>)],
        ) {
            let mut want = vec![T::narrow(R::ZERO); xs.len()];
            let mut want_mask = vec![false; xs.len()];
            let want_stats = with_rounding!(q, |r| saturating_chunk(
                g,
                r,
                xs,
                &mut want,
                &mut want_mask[..]
            ));
            for (name, k) in kernels {
                let mut got = vec![T::narrow(R::ZERO); xs.len()];
                let mut mask = vec![true; xs.len()];
                let stats = k(g, q, xs, &mut got, &mut mask);
                assert_eq!(stats, want_stats, "{fmt} {name}");
                assert_eq!(mask, want_mask, "{fmt} {name}");
                for (a, b) in got.iter().zip(&want) {
                    let (a, b) = (a.to_f64(), b.to_f64());
                    assert!(
                        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                        "{fmt} {name}: {a} vs {b}"
                    );
                }
            }
        }
        #[allow(unused_mut)]
        fn kernels<U: Lane<R>, T: Lane<R> + PassFrom<U>, R: Real>(
        ) -> Vec<(&'static str, Kernel<U, T, R>)> {
            let mut k: Vec<(&'static str, Kernel<U, T, R>)> = Vec::new();
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY (both): listed only when the CPU has the features.
                    k.push(("avx2", |g, q, x, o, m| unsafe {
                        saturating_avx2(g, q, x, o, m)
                    }));
                }
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                {
                    k.push(("avx512", |g, q, x, o, m| unsafe {
                        saturating_avx512(g, q, x, o, m)
                    }));
                }
            }
            k
        }
        for w in [2u32, 8, 16, 23, 32, 40] {
            for q in &Rounding::ALL[..7] {
                for o in [Overflow::Sat, Overflow::SatZero, Overflow::SatSym] {
                    let fmt = FxFormat::new(w % 2 == 0, w, w as i32 / 3, *q, o).unwrap();
                    let g = FloatGrid::new(&fmt).unwrap();
                    let (g64, g32) = g.saturating();
                    let mut all = inputs(&fmt, 2000);
                    let specials = all.split_off(2000);
                    // All finite (the instruction route), then one special mid-chunk.
                    let mut mixed = all.clone();
                    mixed[777] = specials[(w as usize) % 3];
                    // Only in-range values (the screened route takes every sub-chunk),
                    // then one saturated value in the second sub-chunk.
                    let edge = fmt.raw_max() as f64 * fmt.lsb() * 0.9;
                    let low_edge = fmt.raw_min() as f64 * fmt.lsb() * 0.9;
                    let inside: Vec<f32> = all
                        .iter()
                        .copied()
                        .filter(|&x| {
                            let v = x as f64 * 1.25;
                            v <= edge && v >= low_edge && (x >= 0.0 || fmt.signed)
                        })
                        .collect();
                    let mut one_out = inside.clone();
                    one_out[300] = (edge * 4.0) as f32;
                    // The screen itself, for the modes it serves: it accepts an in-range
                    // sub-chunk and rejects one holding a saturated value.
                    let mut o = vec![0f64; SCREEN_CHUNK];
                    let head = &inside[..SCREEN_CHUNK];
                    let direct = has_direct_rounding(*q);
                    if direct {
                        assert!(screened_chunk(&g64.screen(), *q, head, &mut o), "{fmt}");
                        let out = &one_out[256..512];
                        assert!(!screened_chunk(&g64.screen(), *q, out, &mut o), "{fmt}");
                    }
                    if direct && w >= 23 {
                        let s32 = g64.screen32.expect("f32 screen for wide formats");
                        assert!(screened_chunk(&s32, *q, head, &mut o), "{fmt}");
                    }
                    for xs in [&all, &mixed, &inside, &one_out] {
                        let xs64: Vec<f64> = xs.iter().map(|&x| x as f64 * 1.25).collect();
                        check::<f32, f64, f64>(g64, *q, xs, &fmt, &kernels());
                        check::<f64, f64, f64>(g64, *q, &xs64, &fmt, &kernels());
                        check::<f32, f32, f64>(g64, *q, xs, &fmt, &kernels());
                        if let Some(g32) = g32 {
                            check::<f32, f32, f32>(g32, *q, xs, &fmt, &kernels());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn widening_f32_to_f64_equals_converting_first() {
        let formats = [
            "ap_fixed<32,16,AP_RND_CONV,AP_SAT>",
            "ap_fixed<32,4,AP_TRN,AP_SAT_SYM>",
            "ap_fixed<16,2,AP_RND,AP_WRAP>",
            "ap_ufixed<12,3,AP_RND_INF,AP_SAT_ZERO>",
        ];
        for spelling in formats {
            let fmt: FxFormat = spelling.parse().unwrap();
            let stoch = fmt.with_modes(Rounding::Stochastic, fmt.overflow);
            for f in [fmt, stoch] {
                let xs = inputs(&f, 5000);
                let wide: Vec<f64> = xs.iter().map(|&x| x as f64).collect();
                let mut want = vec![0f64; xs.len()];
                let mut got = vec![0f64; xs.len()];
                let (mut r1, mut r2) = (StochasticSource::new(5), StochasticSource::new(5));
                let s1 = fake_quant_slice(&wide, &mut want, &f, Some(&mut r1));
                let s2 = fake_quant_slice_widen(&xs, &mut got, &f, Some(&mut r2));
                assert_eq!(s1, s2, "{f}");
                assert_eq!(r1, r2, "{f}");
                for (a, b) in want.iter().zip(&got) {
                    assert!(
                        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                        "{f}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn stochastic_saturating_loop_equals_the_general_path() {
        for spelling in [
            "ap_fixed<16,2,AP_RND_CONV,AP_SAT>",
            "ap_fixed<16,4,AP_RND_CONV,AP_SAT_SYM>",
            "ap_fixed<32,8,AP_RND_CONV,AP_SAT_ZERO>",
            "ap_ufixed<10,3,AP_RND_CONV,AP_SAT>",
        ] {
            let f: FxFormat = spelling.parse().unwrap();
            let f = f.with_modes(Rounding::Stochastic, f.overflow);
            let q = Quantizer::new(&f);
            assert!(q.grid().unwrap().saturates_all_finite());
            let xs = inputs(&f, 4000);
            let xs64: Vec<f64> = xs.iter().map(|&x| x as f64).collect();
            let block = StochasticSource::new(9).take_block(xs.len() as u64);
            let (mut a, mut b) = (vec![0f32; xs.len()], vec![0f32; xs.len()]);
            let (mut ma, mut mb) = (vec![false; xs.len()], vec![false; xs.len()]);
            let sa = general_chunk(&q, Some(&block), 17, &xs, &mut a, Some(&mut ma));
            let sb = chunk_kernel(&q, Some(&block), 17, &xs, &mut b, Some(&mut mb));
            assert_eq!(sa, sb, "{f}");
            assert_eq!(ma, mb, "{f}");
            let (mut a64, mut b64) = (vec![0f64; xs.len()], vec![0f64; xs.len()]);
            let sa = general_chunk(&q, Some(&block), 3, &xs64, &mut a64, None);
            let sb = chunk_kernel(&q, Some(&block), 3, &xs64, &mut b64, None);
            assert_eq!(sa, sb, "{f}");
            for i in 0..xs.len() {
                let same32 = a[i].to_bits() == b[i].to_bits() || (a[i].is_nan() && b[i].is_nan());
                let same64 =
                    a64[i].to_bits() == b64[i].to_bits() || (a64[i].is_nan() && b64[i].is_nan());
                assert!(same32 && same64, "{f} {}: {} vs {}", xs[i], a[i], b[i]);
            }
        }
    }
}
