//! A network's parameters as an optimizer step or a soft update sees them: the flat
//! parameter and gradient tensors (and the f32 shadow of the parameters), which numeric
//! path the network is on, and per layer where its weight and bias segments lie with
//! the formats, cast statistics and range observers of that layer.
//!
//! `Mlp::param_view` lends one for the length of a step; the optimizer (`crate::optim`)
//! works on this view alone and so never sees the network type.

use quant::tensor::{QuantStats, StochasticSource};
use tch::{Kind, Tensor};

use crate::cast::{cast_into, RangeTrack};
use crate::fused::Segment;
use crate::precision::{LayerFormats, TensorClass, TrainMode};

/// The parameters of one network, borrowed from it for one step.
pub(crate) struct ParamView<'a> {
    /// All parameters, flat (`W1, b1, W2, b2, ...`, W row-major in x out).
    pub params: &'a mut Tensor,
    /// All gradients, laid out like `params`.
    pub grads: &'a Tensor,
    /// The f32 copy of `params` kept for fast GEMMs on f64 storage.
    pub shadow: Option<&'a mut Tensor>,
    /// Storage float type of `params` and `grads`.
    pub kind: Kind,
    pub mode: TrainMode,
    /// No layer casts anything.
    pub float: bool,
    /// The network's fused kernels apply (see `Mlp::fusable`).
    pub fusable: bool,
    /// Feed the range observers.
    pub observe: bool,
    pub source: &'a mut StochasticSource,
    pub layers: Vec<LayerParams<'a>>,
}

/// One layer's part of a [`ParamView`].
pub(crate) struct LayerParams<'a> {
    /// Offset and length of the weights in the flat tensors.
    pub weight: (usize, usize),
    /// Offset and length of the bias (right after the weights).
    pub bias: (usize, usize),
    pub formats: LayerFormats,
    pub stats: &'a mut [QuantStats; 9],
    pub ranges: &'a mut [RangeTrack; 9],
}

impl ParamView<'_> {
    /// The f32 shadow must follow every parameter change: one conversion of the flat
    /// tensor.
    pub fn refresh_shadow(&mut self) {
        if let Some(p32) = self.shadow.as_deref_mut() {
            p32.copy_(self.params);
        }
    }

    /// Casts every layer's weight and bias segment of the flat `src` into `dst` (same
    /// layout): with `class` the layer's format of that class, with `None` the segment's
    /// own class (weight or bias).
    pub fn cast_segments(&mut self, class: Option<TensorClass>, src: &Tensor, dst: &Tensor) {
        let observe = self.observe;
        for l in &mut self.layers {
            let segments = [(TensorClass::Weight, l.weight), (TensorClass::Bias, l.bias)];
            for (own, (off, len)) in segments {
                let (off, len) = (off as i64, len as i64);
                let c = class.unwrap_or(own);
                let i = c.index();
                let q = cast_into(
                    l.formats.get(c),
                    src.narrow(0, off, len),
                    &mut l.stats[i],
                    observe.then_some(&mut l.ranges[i]),
                    self.source,
                );
                dst.narrow(0, off, len).copy_(&q);
            }
        }
    }
}

/// Every layer's weight and bias segment of the flat tensors with their formats and
/// counters (fusable networks only: every class is fixed point).
pub(crate) fn segments<'a>(layers: &'a mut [LayerParams<'_>]) -> Vec<Segment<'a>> {
    let f = |l: &LayerParams, c: TensorClass| l.formats.get(c).expect("fusable");
    let mut segs = Vec::with_capacity(2 * layers.len());
    for l in layers {
        let (opt, update) = (f(l, TensorClass::OptState), f(l, TensorClass::Update));
        let (w, b) = (f(l, TensorClass::Weight), f(l, TensorClass::Bias));
        let stats: *mut [QuantStats; 9] = &mut *l.stats;
        let parts = [
            (l.weight, w, TensorClass::Weight),
            (l.bias, b, TensorClass::Bias),
        ];
        for ((off, len), own, c) in parts {
            segs.push(Segment::new(off, len, own, opt, update, stats, c.index()));
        }
    }
    segs
}
