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
use crate::quantizer::Quantizer;
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
    mut mask: Option<&mut [bool]>,
) -> QuantStats {
    let fmt = q.format();
    let mut stats = QuantStats {
        elements: xs.len() as u64,
        ..QuantStats::default()
    };
    let (mut saturated, mut wrapped, mut non_finite) = (0u64, 0u64, 0u64);
    for (i, (o, &x)) in out.iter_mut().zip(xs).enumerate() {
        let xd = x.to_f64();
        let random = block.map(|b| b.word((start + i) as u64));
        let clip = if !xd.is_finite() {
            non_finite += 1;
            stats.nan += xd.is_nan() as u64;
            *o = x;
            None
        } else if let Some((c, clip)) = q.grid().and_then(|g| g.code(xd, random)) {
            // `+ 0.0` turns a -0.0 code into +0.0, as the integer code 0 reads back.
            *o = T::from_f64((c + 0.0) * q.grid().map_or(0.0, |g| g.inv_scale()));
            Some(clip)
        } else {
            let (raw, clip) = from_f64_exact_clip(xd, fmt, random).expect("finite input");
            *o = T::from_raw(raw, fmt);
            Some(clip)
        };
        saturated += (clip == Some(Clip::Saturated)) as u64;
        wrapped += (clip == Some(Clip::Wrapped)) as u64;
        if let Some(m) = mask.as_deref_mut() {
            m[i] = clip == Some(Clip::None);
        }
    }
    stats.saturated = saturated;
    stats.wrapped = wrapped;
    stats.inf = non_finite - stats.nan;
    stats
}
