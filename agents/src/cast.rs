//! The counted cast every numeric path shares: a value cast into its tensor class's
//! format (or passed through when the class is float), its elements, saturations, wraps,
//! NaN and Inf added to the layer's statistics, its magnitudes fed to the layer's range
//! observers when observing. Used by the network's paths (`crate::mlp`) and by the
//! optimizer's segment casts (`crate::params`), so neither needs the other.

use quant::tensor::{affine_fake_quant, fake_quant, QuantStats, StochasticSource};
use quant::{AffineQuantizer, FxFormat, MinMaxObserver, RangeKind, RangeObserver};
use tch::{Kind, Tensor};

/// Range observers of one tensor class of one layer: max |x| since the start, an EMA of
/// the per-observation max |x|, a high percentile of |x|, and the signed min/max since
/// the start (what the QAT schedule's affine quantizer is built on; absent from
/// checkpoints older than format version 3, read as nothing observed).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RangeTrack {
    pub max_abs: RangeObserver,
    pub ema: RangeObserver,
    pub percentile: RangeObserver,
    #[serde(default)]
    pub min_max: MinMaxObserver,
}

/// EMA decay and percentile of every `RangeTrack` (one place, so reports can say it).
pub const RANGE_EMA_DECAY: f64 = 0.99;
pub const RANGE_QUANTILE: f64 = 0.999;

impl Default for RangeTrack {
    fn default() -> Self {
        RangeTrack {
            max_abs: RangeObserver::new(RangeKind::MaxAbs),
            ema: RangeObserver::new(RangeKind::Ema {
                decay: RANGE_EMA_DECAY,
            }),
            percentile: RangeObserver::new(RangeKind::Percentile { q: RANGE_QUANTILE }),
            min_max: MinMaxObserver::default(),
        }
    }
}

impl RangeTrack {
    fn observe(&mut self, xs: &[f32]) {
        self.max_abs.observe_slice(xs);
        self.ema.observe_slice(xs);
        self.percentile.observe_slice(xs);
        self.min_max.observe_slice(xs);
    }
}

/// Casts `x` into `fmt` (or passes it through when float), counting into `stats` and
/// feeding `track` when observing. NaN/Inf are counted by quant on the fixed path and
/// here on the float path only when observing (the float path is checked by the
/// caller's loss test).
pub(crate) fn cast_into(
    fmt: Option<FxFormat>,
    x: Tensor,
    stats: &mut QuantStats,
    track: Option<&mut RangeTrack>,
    source: &mut StochasticSource,
) -> Tensor {
    if let Some(track) = track {
        observe_into(track, &x);
    }
    match fmt {
        None => x,
        Some(f) => {
            let rng = (f.rounding == quant::Rounding::Stochastic).then_some(source);
            let (y, st) = fake_quant(&x, &f, rng);
            stats.merge(&st);
            y
        }
    }
}

/// The QAT schedule's affine cast: `x` through `q`, its dequantized values represented in
/// `onto` (the class's format; float when `None`), counted into `stats`, observed into
/// `track` when observing (before the cast, as `cast_into` does).
pub(crate) fn affine_cast_into(
    q: &AffineQuantizer,
    onto: Option<FxFormat>,
    x: Tensor,
    stats: &mut QuantStats,
    track: Option<&mut RangeTrack>,
) -> Tensor {
    if let Some(track) = track {
        observe_into(track, &x);
    }
    let (y, st) = affine_fake_quant(&x, q, onto.as_ref());
    stats.merge(&st);
    y
}

/// Feeds `x`'s magnitudes to `track` (as f32, the observers' element type).
pub(crate) fn observe_into(track: &mut RangeTrack, x: &Tensor) {
    if x.kind() == Kind::Float
        && x.device() == tch::Device::Cpu
        && x.is_contiguous()
        && x.numel() > 0
    {
        // Read in place (no copy): the float path's tensors usually are this already.
        // SAFETY: a contiguous CPU f32 tensor of numel() elements, only read here.
        let v = unsafe { std::slice::from_raw_parts(x.data_ptr() as *const f32, x.numel()) };
        track.observe(v);
        return;
    }
    let v: Vec<f32> = Vec::try_from(x.detach().to_kind(Kind::Float).flatten(0, -1))
        .expect("a float tensor converts to Vec<f32>");
    track.observe(&v);
}
