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
use crate::format::FxFormat;
use crate::format::Rounding;
use crate::quantizer::{with_rounding, FloatGrid, Quantizer};
use crate::stats::{Clip, QuantStats};
use crate::stochastic::{StochasticBlock, StochasticSource};

/// Float element types the kernel handles (f32, f64).
pub trait FakeQuantElem: Copy + Send + Sync + 'static {
    fn to_f64(self) -> f64;
    /// The nearest element to the exact double `v`.
    fn from_f64(v: f64) -> Self;
    /// The nearest element to the value of `raw` in `fmt` (one rounding, outside the
    /// element's subnormal range).
    fn from_raw(raw: i64, fmt: &FxFormat) -> Self;
}

impl FakeQuantElem for f64 {
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
        (Some(g), None) if g.saturates_all_finite() => match mask {
            Some(m) => with_rounding!(q.format().rounding, |r| saturating_chunk(g, r, xs, out, m)),
            None => with_rounding!(q.format().rounding, |r| {
                saturating_chunk(g, r, xs, out, NoMask)
            }),
        },
        _ => general_chunk(q, block, start, xs, out, mask),
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

impl MaskSink for &mut [bool] {
    #[inline(always)]
    fn set(&mut self, i: usize, inside: bool) {
        self[i] = inside;
    }
}

/// The hot loop: saturating modes on the float route, no random words. Branch-free:
/// non-finite inputs are quantized as 0 and then selected away, counts are sums.
#[inline(always)]
fn saturating_chunk<T: FakeQuantElem>(
    g: &FloatGrid,
    rounding: Rounding,
    xs: &[T],
    out: &mut [T],
    mut mask: impl MaskSink,
) -> QuantStats {
    let inv_scale = g.inv_scale();
    let (mut clipped_n, mut non_finite, mut nan) = (0u64, 0u64, 0u64);
    for (i, (o, &x)) in out.iter_mut().zip(xs).enumerate() {
        let xd = x.to_f64();
        let finite = xd.is_finite();
        let (c, clipped) = g.code_saturating(if finite { xd } else { 0.0 }, rounding, None);
        // `+ 0.0` turns a -0.0 code into +0.0, as the integer code 0 reads back.
        let v = T::from_f64((c + 0.0) * inv_scale);
        *o = if finite { v } else { x };
        clipped_n += clipped as u64;
        non_finite += !finite as u64;
        nan += xd.is_nan() as u64;
        mask.set(i, finite & !clipped);
    }
    QuantStats {
        elements: xs.len() as u64,
        saturated: clipped_n,
        wrapped: 0,
        nan,
        inf: non_finite - nan,
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
