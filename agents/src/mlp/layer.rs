//! One fully connected layer: its views into the network's flat tensors, its formats,
//! the statistics and range observers of its casts, the forward caches, and the
//! documented read API the rest of the workspace uses. Only this crate changes a layer.

use quant::tensor::{QuantStats, StochasticSource};
use quant::AffineQuantizer;
use tch::Tensor;

use super::Activation;
use crate::cast::{affine_cast_into, cast_into, observe_into, RangeTrack};
use crate::params::LayerParams;
use crate::precision::{LayerFormats, TensorClass};

/// One fully connected layer and what it saw. Read through its methods; only this
/// crate changes a layer (formats through `Mlp::update_formats`, counters through the
/// trainer).
pub struct Layer {
    /// Stable name, `<network>.fc<i>` (1-based), e.g. `critic1.fc2`.
    pub(super) name: String,
    pub(super) in_dim: usize,
    pub(super) out_dim: usize,
    pub(super) activation: Activation,
    pub(super) formats: LayerFormats,
    /// Cast statistics per class since the last `take_stats`.
    pub(super) stats: [QuantStats; 9],
    /// Range observers per class (fed when the network's `observe` flag is on).
    pub(super) ranges: [RangeTrack; 9],
    /// FIXAR's affine quantizer per class, set by the QAT schedule (`crate::schedule`):
    /// where present it replaces the class's cast (its values land on the class's format).
    pub(super) affine: [Option<AffineQuantizer>; 9],
    pub(super) w_off: usize,
    pub(super) b_off: usize,
    pub(super) w: Tensor,
    pub(super) b: Tensor,
    pub(super) gw: Tensor,
    pub(super) gb: Tensor,
    pub(super) w32: Option<(Tensor, Tensor)>,
    pub(super) act_scale: Option<(Tensor, Tensor)>,
    // Forward caches for the backward: input, pre-activation, output (and f32 input).
    pub(super) x: Option<Tensor>,
    pub(super) x32: Option<Tensor>,
    pub(super) z: Option<Tensor>,
    pub(super) a: Option<Tensor>,
}

impl Layer {
    /// A layer (in, out) whose weights start at `off` in the flat parameters (bias
    /// right after them); tensors are attached by `Mlp::rebuild_views`.
    pub(super) fn new(
        name: String,
        (in_dim, out_dim): (usize, usize),
        activation: Activation,
        formats: LayerFormats,
        off: usize,
    ) -> Self {
        Layer {
            name,
            in_dim,
            out_dim,
            activation,
            formats,
            stats: Default::default(),
            ranges: Default::default(),
            affine: [None; 9],
            w_off: off,
            b_off: off + in_dim * out_dim,
            w: Tensor::new(),
            b: Tensor::new(),
            gw: Tensor::new(),
            gb: Tensor::new(),
            w32: None,
            act_scale: None,
            x: None,
            x32: None,
            z: None,
            a: None,
        }
    }

    /// A cast known to be the identity: counted and observed, not computed.
    pub(super) fn pass(&mut self, class: TensorClass, x: Tensor, observe: bool) -> Tensor {
        let i = class.index();
        if self.affine[i].is_some() {
            // Not the identity under an affine quantizer.
            return self.cast_affine(class, x, observe);
        }
        if observe {
            observe_into(&mut self.ranges[i], &x);
        }
        self.stats[i].elements += x.numel() as u64;
        x
    }

    pub(super) fn cast(
        &mut self,
        class: TensorClass,
        x: Tensor,
        observe: bool,
        source: &mut StochasticSource,
    ) -> Tensor {
        let i = class.index();
        if self.affine[i].is_some() {
            return self.cast_affine(class, x, observe);
        }
        let track = if observe {
            Some(&mut self.ranges[i])
        } else {
            None
        };
        cast_into(
            self.formats.get(class),
            x,
            &mut self.stats[i],
            track,
            source,
        )
    }

    /// The schedule's affine cast of `class` (see `affine`), counted and observed.
    fn cast_affine(&mut self, class: TensorClass, x: Tensor, observe: bool) -> Tensor {
        let i = class.index();
        let q = self.affine[i].expect("an affine quantizer at this class");
        let track = observe.then_some(&mut self.ranges[i]);
        affine_cast_into(&q, self.formats.get(class), x, &mut self.stats[i], track)
    }

    /// Stable name, `<network>.fc<i>` (1-based), e.g. `critic1.fc2`: the QAT ladder,
    /// export and reports key on it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Inputs (rows of the weight matrix).
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Outputs (columns of the weight matrix).
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// The nonlinearity after the pre-activation cast.
    pub fn activation(&self) -> &Activation {
        &self.activation
    }

    /// The format of every tensor class (`None`: float). Changed through
    /// `Mlp::update_formats`, which recasts the stored weights.
    pub fn formats(&self) -> &LayerFormats {
        &self.formats
    }

    /// The affine quantizer the QAT schedule put at `class`, if any: it casts that class
    /// instead of the class's format (the dequantized value lands on that format).
    pub fn affine(&self, class: TensorClass) -> Option<&AffineQuantizer> {
        self.affine[class.index()].as_ref()
    }

    /// Puts (or with `None` removes) an affine quantizer at `class` (the schedule's
    /// switch and checkpoint loads).
    pub(crate) fn set_affine(&mut self, class: TensorClass, q: Option<AffineQuantizer>) {
        self.affine[class.index()] = q;
    }

    /// What casts `class`: the affine quantizer's spelling, else the format's
    /// (`float32` or the HLS spelling); the `format` column of `quant.csv`.
    pub fn cast_label(&self, class: TensorClass) -> String {
        match self.affine(class) {
            Some(q) => q.to_string(),
            None => crate::precision::FormatValue(self.formats.get(class)).to_string(),
        }
    }

    /// Cast statistics per class (indexed by `TensorClass::index`) since the last
    /// `Mlp::take_stats`.
    pub fn stats(&self) -> &[QuantStats; 9] {
        &self.stats
    }

    /// Range observers per class (indexed by `TensorClass::index`), fed while the
    /// network observes.
    pub fn ranges(&self) -> &[RangeTrack; 9] {
        &self.ranges
    }

    /// Restores counters saved with the network (a checkpoint load).
    pub(crate) fn restore_counters(&mut self, stats: [QuantStats; 9], ranges: [RangeTrack; 9]) {
        self.stats = stats;
        self.ranges = ranges;
    }

    /// Fresh range observers (nothing observed yet).
    pub(super) fn reset_ranges(&mut self) {
        self.ranges = Default::default();
    }

    /// This layer's part of a [`ParamView`]: its segments, formats and counters.
    pub(super) fn param_slots(&mut self) -> LayerParams<'_> {
        LayerParams {
            weight: (self.w_off, self.in_dim * self.out_dim),
            bias: (self.b_off, self.out_dim),
            formats: self.formats,
            stats: &mut self.stats,
            ranges: &mut self.ranges,
        }
    }

    /// The weight (in x out) and bias (out) tensors: views into the network's flat
    /// parameters, holding values on their formats' grids.
    pub fn weight(&self) -> &Tensor {
        &self.w
    }

    /// See [`Layer::weight`].
    pub fn bias(&self) -> &Tensor {
        &self.b
    }

    /// The input and pre-activation cached by the last training forward (None after
    /// the backward consumed them). On the fused path a hidden ReLU layer whose ReLU
    /// backward the layer above computes keeps no pre-activation (the mask comes from
    /// its f32 activation), and with f64 storage a layer fed by such a layer caches its
    /// input as the f32 GEMM operand only (`cached_input` is then an undefined tensor).
    pub fn cached_input(&self) -> Option<&Tensor> {
        self.x.as_ref()
    }

    /// See [`Layer::cached_input`].
    pub fn cached_preact(&self) -> Option<&Tensor> {
        self.z.as_ref()
    }

    /// The last gradients (views into the network's flat gradient tensor).
    pub fn weight_grad(&self) -> &Tensor {
        &self.gw
    }

    /// See [`Layer::weight_grad`].
    pub fn bias_grad(&self) -> &Tensor {
        &self.gb
    }

    /// Cast statistics since the last call, then zeroes them.
    pub(crate) fn take_stats(&mut self) -> [QuantStats; 9] {
        std::mem::take(&mut self.stats)
    }

    /// `cast(act(z))` into the activation format. With `exact` a tanh layer computes
    /// `tanh(z) * scale + offset` as the exported threshold table does (`deploy::tanh`):
    /// Rust's f64 `tanh`, one f64 multiply and one add, cast from f64, so the training
    /// forward acts exactly as the exported actor; otherwise libtorch's tanh in the
    /// storage type.
    pub(super) fn activate_cast(
        &mut self,
        z: &Tensor,
        exact: bool,
        observe: bool,
        source: &mut StochasticSource,
    ) -> Tensor {
        match (&self.activation, exact) {
            (Activation::Tanh { scale, offset }, true) => {
                let zs: Vec<f64> =
                    Vec::try_from(z.to_kind(tch::Kind::Double).contiguous().view(-1))
                        .expect("f64 pre-activations");
                let cols = self.out_dim.max(1);
                let t: Vec<f64> = zs
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v.tanh() * scale[i % cols] as f64 + offset[i % cols] as f64)
                    .collect();
                let t = Tensor::from_slice(&t).view(z.size().as_slice());
                self.cast(TensorClass::Activation, t, observe, source)
                    .to_kind(z.kind())
            }
            _ => {
                let a = self.act_forward(z);
                self.cast(TensorClass::Activation, a, observe, source)
            }
        }
    }

    pub(super) fn act_forward(&self, z: &Tensor) -> Tensor {
        match (&self.activation, &self.act_scale) {
            (Activation::Relu, _) => z.relu(),
            (Activation::Identity, _) => z.shallow_clone(),
            (Activation::Tanh { .. }, Some((s, o))) => (z.tanh() * s).g_add_(o),
            (Activation::Tanh { .. }, None) => unreachable!("tanh layers carry scale tensors"),
        }
    }

    /// delta_z = delta_a * act'(z) (before the cast).
    pub(super) fn act_backward(&self, delta_a: &Tensor, z: &Tensor) -> Tensor {
        match (&self.activation, &self.act_scale) {
            (Activation::Relu, _) => z.threshold_backward(delta_a, 0.0),
            (Activation::Identity, _) => delta_a.shallow_clone(),
            (Activation::Tanh { .. }, Some((s, _))) => {
                Tensor::tanh_backward(&(delta_a * s), &z.tanh())
            }
            (Activation::Tanh { .. }, None) => unreachable!("tanh layers carry scale tensors"),
        }
    }
}
