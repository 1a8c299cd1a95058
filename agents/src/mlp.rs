//! The fixed-point MLP: fully connected layers on tch with an explicit forward, backward
//! and update and a cast into its format at every point `numerics.md` lists.
//!
//! Layout: a layer computes `z = x W + b` with `x` (batch x in), `W` (in x out), `b`
//! (out), so the forward is one `addmm`. All parameters of a network live in one flat
//! tensor (`W1, b1, W2, b2, ...`) and all gradients in another, so that float-mode
//! optimizer steps and soft target updates are a handful of tch calls per network.
//!
//! Storage is f32, or f64 when some format is wider than 24 bits (a 32-bit fixed-point
//! value does not fit f32's 24-bit significand; f64 holds it exactly). In `fast` GEMM
//! mode with f64 storage, each layer keeps an f32 shadow of `W` and `b`, the GEMM runs
//! in f32 and its result is cast into the pre-activation format.

use quant::tensor::{exact_linear, fake_quant, fake_quant_ste, QuantStats, StochasticSource};
use quant::{FxFormat, RangeKind, RangeObserver};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::fused::{self, Store};
use crate::optim::Optimizer;
use crate::precision::{layer_name, Gemm, LayerFormats, PrecisionSpec, TensorClass, TrainMode};

/// A layer's nonlinearity.
#[derive(Clone, Debug, PartialEq)]
pub enum Activation {
    Relu,
    Identity,
    /// `tanh(z) * scale + offset` per output: the actor's output scaled to the action
    /// bounds (scale = (high - low) / 2, offset = (high + low) / 2).
    Tanh {
        scale: Vec<f32>,
        offset: Vec<f32>,
    },
}

/// Range observers of one tensor class of one layer: max |x| since the start, an EMA of
/// the per-observation max |x|, and a high percentile of |x|.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RangeTrack {
    pub max_abs: RangeObserver,
    pub ema: RangeObserver,
    pub percentile: RangeObserver,
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
        }
    }
}

impl RangeTrack {
    fn observe(&mut self, xs: &[f32]) {
        self.max_abs.observe_slice(xs);
        self.ema.observe_slice(xs);
        self.percentile.observe_slice(xs);
    }
}

/// One fully connected layer and what it saw.
pub struct Layer {
    /// Stable name, `<network>.fc<i>` (1-based), e.g. `critic1.fc2`.
    pub name: String,
    pub in_dim: usize,
    pub out_dim: usize,
    pub activation: Activation,
    pub formats: LayerFormats,
    /// Cast statistics per class since the last `take_stats`.
    pub stats: [QuantStats; 9],
    /// Range observers per class (fed when the network's `observe` flag is on).
    pub ranges: [RangeTrack; 9],
    pub(crate) w_off: usize,
    pub(crate) b_off: usize,
    pub(crate) w: Tensor,
    pub(crate) b: Tensor,
    gw: Tensor,
    gb: Tensor,
    w32: Option<(Tensor, Tensor)>,
    act_scale: Option<(Tensor, Tensor)>,
    // Forward caches for the backward: input, pre-activation, output (and f32 input).
    x: Option<Tensor>,
    x32: Option<Tensor>,
    z: Option<Tensor>,
    a: Option<Tensor>,
}

/// Where a non-finite value appeared: the place the error message names.
#[derive(Clone, Debug, PartialEq)]
pub struct NonFinite {
    pub layer: String,
    pub class: TensorClass,
    pub nan: u64,
    pub inf: u64,
}

/// A multi-layer perceptron with its optimizer (none for target networks).
pub struct Mlp {
    /// `actor`, `critic1`, `actor_target`, ...
    pub name: String,
    pub layers: Vec<Layer>,
    pub optimizer: Option<Optimizer>,
    /// Feed the range observers during the next forward/backward/update calls.
    pub observe: bool,
    pub(crate) kind: Kind,
    gemm: Gemm,
    mode: TrainMode,
    pub(crate) params: Tensor,
    pub(crate) grads: Tensor,
    /// f32 copy of `params` for fast GEMMs when storage is f64 (layers view into it).
    params32: Option<Tensor>,
    pub(crate) source: StochasticSource,
    qat_input: Option<Tensor>,
    qat_output: Option<Tensor>,
    /// Use the fused kernels (`crate::fused`) where they apply; off only to test them
    /// against the unfused path.
    fused: bool,
}

/// Casts `x` into `fmt` (or passes it through when float), counting into `stats` and
/// feeding `track` when observing. NaN/Inf are counted by quant on the fixed path and
/// here on the float path only when observing (the float path is checked by the
/// caller's loss test).
fn cast_into(
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

fn observe_into(track: &mut RangeTrack, x: &Tensor) {
    let v: Vec<f32> = Vec::try_from(x.detach().to_kind(Kind::Float).flatten(0, -1))
        .expect("a float tensor converts to Vec<f32>");
    track.observe(&v);
}

fn storage_kind(spec_widths: u32) -> Kind {
    if spec_widths > 24 {
        Kind::Double
    } else {
        Kind::Float
    }
}

/// Whether every value of `inner` is a value of `outer` (so casting from `inner` into
/// `outer` is the identity). Both must be fixed point.
/// Whether `layer`'s ReLU backward is fused into `above`'s error kernel (`backward_fused`)
/// with the mask read from `layer`'s f32 activation instead of its pre-activation: the
/// error cast of `layer` is then the identity, and `f32(max(0, z)) <= 0` exactly when
/// `z <= 0` (NaN passes both) because every positive pre-activation is at least one LSB,
/// 2^-F, which f32 keeps non-zero for F < 149.
fn relu_backward_from_activation(layer: &Layer, above: &Layer) -> bool {
    let pre = layer.formats.get(TensorClass::Preact);
    layer.activation == Activation::Relu
        && holds(
            layer.formats.get(TensorClass::Error),
            above.formats.get(TensorClass::Error),
        )
        && holds(layer.formats.get(TensorClass::Activation), pre)
        && pre.is_some_and(|f| f.frac_bits() < 149)
}

fn holds(outer: Option<FxFormat>, inner: Option<FxFormat>) -> bool {
    match (outer, inner) {
        (Some(o), Some(i)) => {
            // SAT_SYM never produces the most negative code: only a wider or equally
            // symmetric inner format stays inside it.
            let sym_ok = o.overflow != quant::Overflow::SatSym
                || i.overflow == quant::Overflow::SatSym
                || o.int_bits > i.int_bits;
            o.signed == i.signed
                && o.frac_bits() >= i.frac_bits()
                && o.int_bits >= i.int_bits
                && sym_ok
        }
        _ => false,
    }
}

impl Layer {
    /// A layer (in, out) whose weights start at `off` in the flat parameters (bias
    /// right after them); tensors are attached by `Mlp::rebuild_views`.
    fn new(
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
    fn pass(&mut self, class: TensorClass, x: Tensor, observe: bool) -> Tensor {
        let i = class.index();
        if observe {
            observe_into(&mut self.ranges[i], &x);
        }
        self.stats[i].elements += x.numel() as u64;
        x
    }

    pub(crate) fn cast(
        &mut self,
        class: TensorClass,
        x: Tensor,
        observe: bool,
        source: &mut StochasticSource,
    ) -> Tensor {
        let i = class.index();
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

    /// The weight (in x out) and bias (out) tensors: views into the network's flat
    /// parameters, holding values on their formats' grids.
    pub fn weight(&self) -> &Tensor {
        &self.w
    }

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

    pub fn cached_preact(&self) -> Option<&Tensor> {
        self.z.as_ref()
    }

    /// The last gradients (views into the network's flat gradient tensor).
    pub fn weight_grad(&self) -> &Tensor {
        &self.gw
    }

    pub fn bias_grad(&self) -> &Tensor {
        &self.gb
    }

    /// Cast statistics since the last call, then zeroes them.
    pub fn take_stats(&mut self) -> [QuantStats; 9] {
        std::mem::take(&mut self.stats)
    }

    fn act_forward(&self, z: &Tensor) -> Tensor {
        match (&self.activation, &self.act_scale) {
            (Activation::Relu, _) => z.relu(),
            (Activation::Identity, _) => z.shallow_clone(),
            (Activation::Tanh { .. }, Some((s, o))) => (z.tanh() * s).g_add_(o),
            (Activation::Tanh { .. }, None) => unreachable!("tanh layers carry scale tensors"),
        }
    }

    /// delta_z = delta_a * act'(z) (before the cast).
    fn act_backward(&self, delta_a: &Tensor, z: &Tensor) -> Tensor {
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

impl Mlp {
    /// A network `name` with layer sizes `sizes` (input, hidden..., output), ReLU on the
    /// hidden layers and `output` on the last, initialised like PyTorch's `nn.Linear`
    /// (weights and biases uniform in +-1/sqrt(fan_in)) from `rng`, then cast into the
    /// weight and bias formats.
    pub fn new(
        name: &str,
        sizes: &[usize],
        output: Activation,
        precision: &PrecisionSpec,
        rng: &mut ChaCha8Rng,
        stochastic_seed: u64,
    ) -> Self {
        assert!(sizes.len() >= 2, "an MLP needs input and output sizes");
        let n_layers = sizes.len() - 1;
        let formats: Vec<LayerFormats> = (0..n_layers)
            .map(|i| precision.resolve(name, i, n_layers))
            .collect();
        let kind = storage_kind(
            formats
                .iter()
                .map(LayerFormats::max_width)
                .max()
                .unwrap_or(0),
        );
        let mut flat = Vec::new();
        for i in 0..n_layers {
            let (k, n) = (sizes[i], sizes[i + 1]);
            let bound = 1.0 / (k as f64).sqrt();
            flat.extend((0..k * n + n).map(|_| rng.gen_range(-bound..bound)));
        }
        let params = Tensor::from_slice(&flat).to_kind(kind);
        let grads = params.zeros_like();
        let mut layers = Vec::with_capacity(n_layers);
        let mut off = 0;
        for i in 0..n_layers {
            let (k, n) = (sizes[i], sizes[i + 1]);
            let activation = if i + 1 == n_layers {
                output.clone()
            } else {
                Activation::Relu
            };
            layers.push(Layer::new(
                layer_name(name, i),
                (k, n),
                activation,
                formats[i],
                off,
            ));
            off += k * n + n;
        }
        let mut net = Mlp {
            name: name.to_string(),
            layers,
            optimizer: None,
            observe: false,
            kind,
            gemm: precision.gemm,
            mode: precision.mode,
            params,
            grads,
            params32: None,
            source: StochasticSource::new(stochastic_seed),
            qat_input: None,
            qat_output: None,
            fused: true,
        };
        net.rebuild_views();
        net.cast_params();
        net
    }

    /// A copy of this network under another name (`actor` -> `actor_target`), with the
    /// target's own formats from `precision` and no optimizer.
    pub fn target_copy(&self, name: &str, precision: &PrecisionSpec, stochastic_seed: u64) -> Self {
        let n = self.layers.len();
        let mut layers = Vec::with_capacity(n);
        for (i, l) in self.layers.iter().enumerate() {
            layers.push(Layer::new(
                layer_name(name, i),
                (l.in_dim, l.out_dim),
                l.activation.clone(),
                precision.resolve(name, i, n),
                l.w_off,
            ));
        }
        let kind = storage_kind(
            layers
                .iter()
                .map(|l| l.formats.max_width())
                .max()
                .unwrap_or(0),
        );
        let params = self.params.detach().to_kind(kind).copy();
        let mut net = Mlp {
            name: name.to_string(),
            layers,
            optimizer: None,
            observe: false,
            kind,
            gemm: precision.gemm,
            mode: precision.mode,
            grads: params.zeros_like(),
            params,
            params32: None,
            source: StochasticSource::new(stochastic_seed),
            qat_input: None,
            qat_output: None,
            fused: true,
        };
        net.rebuild_views();
        net.cast_params();
        net
    }

    /// Storage float type of parameters and activations (f32, or f64 for > 24-bit formats).
    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn gemm(&self) -> Gemm {
        self.gemm
    }

    pub fn mode(&self) -> TrainMode {
        self.mode
    }

    pub fn in_dim(&self) -> usize {
        self.layers[0].in_dim
    }

    pub fn out_dim(&self) -> usize {
        self.layers.last().expect("at least one layer").out_dim
    }

    /// All parameters as one flat tensor (`W1, b1, W2, b2, ...`, W row-major in x out).
    pub fn params(&self) -> &Tensor {
        &self.params
    }

    /// All gradients, laid out like `params`.
    pub fn grads(&self) -> &Tensor {
        &self.grads
    }

    pub fn stochastic_source(&self) -> &StochasticSource {
        &self.source
    }

    pub fn set_stochastic_source(&mut self, source: StochasticSource) {
        self.source = source;
    }

    /// True when no layer casts anything: the plain float path (fewest tch calls).
    pub fn is_float(&self) -> bool {
        self.layers.iter().all(|l| l.formats.is_all_float())
    }

    fn rebuild_views(&mut self) {
        let shadow = self.kind == Kind::Double && self.gemm == Gemm::Fast;
        self.params32 = shadow.then(|| self.params.to_kind(Kind::Float));
        for l in &mut self.layers {
            let (k, n) = (l.in_dim as i64, l.out_dim as i64);
            l.w = self.params.narrow(0, l.w_off as i64, k * n).view([k, n]);
            l.b = self.params.narrow(0, l.b_off as i64, n);
            l.gw = self.grads.narrow(0, l.w_off as i64, k * n).view([k, n]);
            l.gb = self.grads.narrow(0, l.b_off as i64, n);
            l.w32 = self.params32.as_ref().map(|p| {
                (
                    p.narrow(0, l.w_off as i64, k * n).view([k, n]),
                    p.narrow(0, l.b_off as i64, n),
                )
            });
            l.act_scale = match &l.activation {
                Activation::Tanh { scale, offset } => Some((
                    Tensor::from_slice(scale).to_kind(self.kind),
                    Tensor::from_slice(offset).to_kind(self.kind),
                )),
                _ => None,
            };
            l.x = None;
            l.x32 = None;
            l.z = None;
            l.a = None;
        }
        if let Some(opt) = &mut self.optimizer {
            opt.convert(self.kind);
        }
    }

    /// Casts the stored weights and biases into their formats (after init, a format
    /// change or a load). In QAT mode the master copy stays float.
    fn cast_params(&mut self) {
        if self.mode == TrainMode::Qat {
            return;
        }
        let _g = tch::no_grad_guard();
        for l in &mut self.layers {
            for class in [TensorClass::Weight, TensorClass::Bias] {
                let Some(f) = l.formats.get(class) else {
                    continue;
                };
                let t = if class == TensorClass::Weight {
                    &l.w
                } else {
                    &l.b
                };
                let rng = (f.rounding == quant::Rounding::Stochastic).then_some(&mut self.source);
                let (q, st) = fake_quant(t, &f, rng);
                l.stats[class.index()].merge(&st);
                let mut dst = t.shallow_clone();
                dst.copy_(&q);
            }
        }
        self.refresh_shadows();
    }

    /// Sets new formats for some layers at run time (QAT ladder): `f(layer_name,
    /// formats)` edits each layer's formats in place. The stored weights are recast
    /// into the new weight/bias formats (pure fixed-point mode) and the storage type
    /// follows the widest format.
    pub fn update_formats(&mut self, mut f: impl FnMut(&str, &mut LayerFormats)) {
        for l in &mut self.layers {
            f(&l.name, &mut l.formats);
        }
        self.after_format_change();
    }

    /// Switches GEMM emulation and training mode.
    pub fn set_numerics(&mut self, gemm: Gemm, mode: TrainMode) {
        self.gemm = gemm;
        self.mode = mode;
        self.after_format_change();
    }

    fn after_format_change(&mut self) {
        let kind = storage_kind(
            self.layers
                .iter()
                .map(|l| l.formats.max_width())
                .max()
                .unwrap_or(0),
        );
        if kind != self.kind {
            self.kind = kind;
            self.params = self.params.detach().to_kind(kind);
            self.grads = self.grads.to_kind(kind);
        }
        self.rebuild_views();
        self.cast_params();
    }

    /// Overwrites the parameters (a checkpoint load or a target copy), then recasts.
    pub fn load_params(&mut self, flat: &Tensor) {
        let _g = tch::no_grad_guard();
        self.params.copy_(&flat.to_kind(self.kind));
        self.refresh_shadows();
    }

    /// The f32 copy of the parameters (fast GEMMs on f64 storage) must follow every
    /// parameter change: one conversion of the flat tensor.
    pub(crate) fn refresh_shadows(&mut self) {
        if let Some(p32) = &mut self.params32 {
            p32.copy_(&self.params);
        }
    }

    pub(crate) fn params_mut(&mut self) -> &mut Tensor {
        &mut self.params
    }

    /// Casts `x` at layer `layer`'s `class` (for values the algorithm computes outside
    /// the layers: TD targets into the critic's output pre-activation format, loss
    /// gradients into its output error format).
    pub fn cast_at(&mut self, layer: usize, class: TensorClass, x: Tensor) -> Tensor {
        let observe = self.observe;
        let l = &mut self.layers[layer];
        l.cast(class, x, observe, &mut self.source)
    }

    /// Training forward: caches what the backward needs. `x` is (batch x in) in any
    /// float kind; the result is (batch x out) in the storage kind.
    pub fn forward(&mut self, x: &Tensor) -> Tensor {
        match self.mode {
            TrainMode::Fixed => {
                let _g = tch::no_grad_guard();
                self.forward_fixed(x, true)
            }
            TrainMode::Qat => self.forward_qat(x),
        }
    }

    /// Forward without caches (target networks): same casts, statistics recorded.
    pub fn predict(&mut self, x: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        match self.mode {
            TrainMode::Fixed => self.forward_fixed(x, false),
            TrainMode::Qat => self.forward_qat_nograd(x),
        }
    }

    /// Inference forward (acting, evaluation): same casts, no caches, no statistics.
    pub fn infer(&mut self, x: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        if self.mode == TrainMode::Qat {
            return self.forward_qat_nograd(x);
        }
        let saved: Vec<_> = self.layers.iter().map(|l| l.stats).collect();
        let observe = std::mem::replace(&mut self.observe, false);
        let y = self.forward_fixed(x, false);
        self.observe = observe;
        for (l, s) in self.layers.iter_mut().zip(saved) {
            l.stats = s;
        }
        y
    }

    /// Whether the fused kernels apply: pure fixed point with `fast` GEMMs, every class
    /// of every layer fixed point, no range observation, f32 storage or f64 storage with
    /// its f32 shadow.
    pub(crate) fn fusable(&self) -> bool {
        self.fused
            && !self.observe
            && self.mode == TrainMode::Fixed
            && self.gemm == Gemm::Fast
            && self
                .layers
                .iter()
                .all(|l| l.formats.0.iter().all(Option::is_some))
            && match self.kind {
                Kind::Float => self.params32.is_none(),
                Kind::Double => self.params32.is_some(),
                _ => false,
            }
    }

    /// Turns the fused kernels off (or back on): for tests that compare both paths.
    #[doc(hidden)]
    pub fn set_fused(&mut self, on: bool) {
        self.fused = on;
    }

    /// The f32 shadow of the flat parameters (fast GEMMs on f64 storage).
    pub(crate) fn params32(&self) -> Option<&Tensor> {
        self.params32.as_ref()
    }

    fn forward_fixed(&mut self, x: &Tensor, cache: bool) -> Tensor {
        if self.fusable() {
            return match self.kind {
                Kind::Double => self.forward_fused::<f64>(x, cache),
                _ => self.forward_fused::<f32>(x, cache),
            };
        }
        let observe = self.observe;
        let kind = self.kind;
        let gemm = self.gemm;
        let first_fmt = self.layers[0].formats.get(TensorClass::Input);
        let mut h = {
            let l0 = &mut self.layers[0];
            l0.cast(
                TensorClass::Input,
                x.to_kind(kind),
                observe,
                &mut self.source,
            )
        };
        let mut x_fmt = first_fmt;
        for l in &mut self.layers {
            let pre_fmt = l.formats.get(TensorClass::Preact);
            let (w_fmt, b_fmt) = (
                l.formats.get(TensorClass::Weight),
                l.formats.get(TensorClass::Bias),
            );
            let mut x32 = None;
            let z = match (gemm, x_fmt, w_fmt, b_fmt, pre_fmt) {
                (Gemm::Exact, Some(xf), Some(wf), Some(bf), Some(zf)) => {
                    let (z, st) = exact_linear(&h, &xf, &l.w, &wf, Some((&l.b, &bf)), &zf);
                    if observe {
                        // The exact path casts inside; observe the float GEMM for ranges.
                        observe_into(
                            &mut l.ranges[TensorClass::Preact.index()],
                            &l.b.addmm(&h, &l.w),
                        );
                    }
                    l.stats[TensorClass::Preact.index()].merge(&st);
                    z
                }
                _ => {
                    let z = match &l.w32 {
                        Some((w32, b32)) => {
                            let h32 = h.to_kind(Kind::Float);
                            let z = b32.addmm(&h32, w32).to_kind(kind);
                            x32 = Some(h32);
                            z
                        }
                        None => l.b.addmm(&h, &l.w),
                    };
                    l.cast(TensorClass::Preact, z, observe, &mut self.source)
                }
            };
            let a = l.act_forward(&z);
            // ReLU and identity map grid values of the pre-activation format onto
            // themselves; when the activation format holds every such value the cast is
            // the identity and is skipped (counted, observed, not computed).
            let a = if !matches!(l.activation, Activation::Tanh { .. })
                && holds(l.formats.get(TensorClass::Activation), pre_fmt)
            {
                l.pass(TensorClass::Activation, a, observe)
            } else {
                l.cast(TensorClass::Activation, a, observe, &mut self.source)
            };
            if cache {
                l.x = Some(h);
                l.x32 = x32;
                l.z = Some(z);
                l.a = Some(a.shallow_clone());
            }
            x_fmt = l.formats.get(TensorClass::Activation);
            h = a;
        }
        h
    }

    /// `forward_fixed` with the fused kernels (see `fusable`); the same values, counts
    /// and stochastic draws.
    fn forward_fused<T: Store>(&mut self, x: &Tensor, cache: bool) -> Tensor {
        let kind = self.kind;
        let shadow = self.params32.is_some();
        let opts = (kind, tch::Device::Cpu);
        let mut h = {
            let l0 = &mut self.layers[0];
            l0.cast(TensorClass::Input, x.to_kind(kind), false, &mut self.source)
        };
        // The f32 operand of the next GEMM (the storage itself without a shadow).
        let mut h32: Option<Tensor> = None;
        let n_layers = self.layers.len();
        // Hidden ReLU layers whose ReLU backward the layer above fuses into its error
        // kernel (see `backward_fused`) need neither their pre-activation nor their
        // storage activation there: the mask comes from the f32 activation.
        let lean: Vec<bool> = (0..n_layers)
            .map(|i| {
                i + 1 < n_layers
                    && relu_backward_from_activation(&self.layers[i], &self.layers[i + 1])
            })
            .collect();
        for (idx, l) in self.layers.iter_mut().enumerate() {
            let z32 = match &l.w32 {
                Some((w32, b32)) => {
                    let x32 = h32.take().unwrap_or_else(|| h.to_kind(Kind::Float));
                    let z32 = b32.addmm(&x32, w32);
                    h32 = Some(x32);
                    z32
                }
                None => l.b.addmm(&h, &l.w),
            };
            let z32 = z32.contiguous();
            let n = z32.numel();
            let pre = l.formats.get(TensorClass::Preact).expect("fusable");
            let act_fmt = l.formats.get(TensorClass::Activation);
            let passes =
                !matches!(l.activation, Activation::Tanh { .. }) && holds(act_fmt, Some(pre));
            let relu = passes && l.activation == Activation::Relu;
            if relu && idx + 1 < n_layers && (!cache || lean[idx]) {
                // Nothing keeps this layer's pre-activation or f64 activation (target
                // networks, or a lean layer): only the f32 operand of the next GEMM is
                // written (the storage itself when it is f32).
                if cache {
                    l.x = Some(std::mem::replace(&mut h, Tensor::new()));
                    l.x32 = if l.w32.is_some() { h32.take() } else { None };
                    l.z = None;
                    l.a = None;
                }
                let a32 = Tensor::empty(z32.size(), (Kind::Float, tch::Device::Cpu));
                // SAFETY: z32 and a32 are distinct fresh contiguous tensors.
                unsafe {
                    let st = &mut l.stats[TensorClass::Preact.index()];
                    let z32s = std::slice::from_raw_parts(z32.data_ptr() as *const f32, n);
                    let a32s = fused::slice_mut::<f32>(&a32);
                    fused::preact_relu_f32::<T>(z32s, &pre, &mut self.source, st, a32s);
                }
                l.stats[TensorClass::Activation.index()].elements += n as u64;
                if shadow {
                    h = Tensor::new();
                    h32 = Some(a32);
                } else {
                    h = a32;
                    h32 = None;
                }
                continue;
            }
            let z = Tensor::empty(z32.size(), opts);
            let (a, a32) = if relu {
                let a = Tensor::empty(z32.size(), opts);
                let a32 =
                    shadow.then(|| Tensor::empty(z32.size(), (Kind::Float, tch::Device::Cpu)));
                (Some(a), a32)
            } else {
                (None, None)
            };
            // SAFETY: z32, z, a and a32 are distinct fresh contiguous CPU tensors.
            unsafe {
                let st = &mut l.stats[TensorClass::Preact.index()];
                let zs = fused::slice_mut::<T>(&z);
                let act = match (&a, &a32) {
                    (Some(a), a32) => Some((
                        fused::slice_mut::<T>(a),
                        a32.as_ref().map(|t| fused::slice_mut::<f32>(t)),
                    )),
                    _ => None,
                };
                let z32s = std::slice::from_raw_parts(z32.data_ptr() as *const f32, n);
                fused::preact(z32s, &pre, &mut self.source, st, zs, act);
            }
            let a = if passes {
                l.stats[TensorClass::Activation.index()].elements += n as u64;
                a.unwrap_or_else(|| l.act_forward(&z))
            } else {
                let a = l.act_forward(&z);
                l.cast(TensorClass::Activation, a, false, &mut self.source)
            };
            let x_in = std::mem::replace(&mut h, a.shallow_clone());
            let x32_in = std::mem::replace(&mut h32, a32);
            if cache {
                l.x = Some(x_in);
                l.x32 = if l.w32.is_some() { x32_in } else { None };
                l.z = Some(z);
                l.a = Some(a);
            }
        }
        h
    }

    /// Explicit backward from `delta_out` = dL/d(output) (batch x out, already on the
    /// output layer's error grid: see `cast_at`). With `param_grads`, writes every
    /// layer's weight and bias gradients (cast into the gradient format); with
    /// `input_grad`, returns dL/d(input) (cast into layer 0's error format).
    pub fn backward(
        &mut self,
        delta_out: &Tensor,
        param_grads: bool,
        input_grad: bool,
    ) -> Option<Tensor> {
        match self.mode {
            TrainMode::Fixed => {
                let _g = tch::no_grad_guard();
                self.backward_fixed(delta_out, param_grads, input_grad)
            }
            TrainMode::Qat => self.backward_qat(delta_out, param_grads, input_grad),
        }
    }

    fn backward_fixed(
        &mut self,
        delta_out: &Tensor,
        param_grads: bool,
        input_grad: bool,
    ) -> Option<Tensor> {
        if self.fusable() {
            return match self.kind {
                Kind::Double => self.backward_fused::<f64>(delta_out, param_grads, input_grad),
                _ => self.backward_fused::<f32>(delta_out, param_grads, input_grad),
            };
        }
        let observe = self.observe;
        let kind = self.kind;
        let gemm = self.gemm;
        let n = self.layers.len();
        let mut d = delta_out.to_kind(kind);
        for i in (0..n).rev() {
            let x_fmt = if i == 0 {
                self.layers[0].formats.get(TensorClass::Input)
            } else {
                self.layers[i - 1].formats.get(TensorClass::Activation)
            };
            // The incoming delta_a is on the error grid of the layer above (or of this
            // layer, for the output layer: the caller casts the loss gradient there).
            let d_fmt = self.layers[(i + 1).min(n - 1)]
                .formats
                .get(TensorClass::Error);
            let l = &mut self.layers[i];
            let z = l.z.take().expect("backward needs a training forward first");
            let x = l.x.take().expect("backward needs a training forward first");
            let x32 = l.x32.take();
            let dz = match l.activation {
                Activation::Identity => d,
                // ReLU' is 0 or 1: a grid value stays on its grid (identity cast skipped).
                Activation::Relu if holds(l.formats.get(TensorClass::Error), d_fmt) => {
                    let dz = l.act_backward(&d, &z);
                    l.pass(TensorClass::Error, dz, observe)
                }
                _ => {
                    let dz = l.act_backward(&d, &z);
                    l.cast(TensorClass::Error, dz, observe, &mut self.source)
                }
            };
            let e_fmt = l.formats.get(TensorClass::Error);
            let g_fmt = l.formats.get(TensorClass::Grad);
            let w_fmt = l.formats.get(TensorClass::Weight);
            let exact = match (gemm, x_fmt, e_fmt, g_fmt, w_fmt) {
                (Gemm::Exact, Some(xf), Some(ef), Some(gf), Some(wf)) => Some((xf, ef, gf, wf)),
                _ => None,
            };
            let dz32 = (l.w32.is_some() && exact.is_none()).then(|| dz.to_kind(Kind::Float));
            if param_grads {
                let (gw, gb) = match exact {
                    Some((xf, ef, gf, _)) => {
                        let (gw, s1) = exact_linear(&x.tr().contiguous(), &xf, &dz, &ef, None, &gf);
                        let ones = Tensor::ones([1, dz.size()[0]], (kind, dz.device()));
                        let one = FxFormat::new(true, 2, 2, gf.rounding, gf.overflow)
                            .expect("ap_fixed<2,2> holds 1 exactly");
                        let (gb, s2) = exact_linear(&ones, &one, &dz, &ef, None, &gf);
                        if observe {
                            observe_into(&mut l.ranges[TensorClass::Grad.index()], &x.tr().mm(&dz));
                        }
                        let st = &mut l.stats[TensorClass::Grad.index()];
                        st.merge(&s1);
                        st.merge(&s2);
                        (gw, gb.view([-1]))
                    }
                    None => match (&x32, &dz32) {
                        (Some(x32), Some(dz32)) => {
                            let gw = x32.tr().mm(dz32).to_kind(kind);
                            let gb = dz.sum_dim_intlist([0i64].as_slice(), false, kind);
                            (
                                l.cast(TensorClass::Grad, gw, observe, &mut self.source),
                                l.cast(TensorClass::Grad, gb, observe, &mut self.source),
                            )
                        }
                        _ if l.formats.get(TensorClass::Grad).is_none() && !observe => {
                            // Float gradients: straight into the flat gradient buffer.
                            let _ = x.tr().mm_out(&l.gw, &dz);
                            let _ = dz.sum_intlist_out(&l.gb, [0i64].as_slice(), false, kind);
                            (Tensor::new(), Tensor::new())
                        }
                        _ => {
                            let gw = x.tr().mm(&dz);
                            let gb = dz.sum_dim_intlist([0i64].as_slice(), false, kind);
                            (
                                l.cast(TensorClass::Grad, gw, observe, &mut self.source),
                                l.cast(TensorClass::Grad, gb, observe, &mut self.source),
                            )
                        }
                    },
                };
                if gw.defined() {
                    l.gw.copy_(&gw);
                    l.gb.copy_(&gb);
                }
            }
            if i == 0 && !input_grad {
                return None;
            }
            let dx = match exact {
                Some((_, ef, _, wf)) => {
                    let (dx, st) = exact_linear(&dz, &ef, &l.w.tr().contiguous(), &wf, None, &ef);
                    let l = &mut self.layers[i];
                    if observe {
                        observe_into(&mut l.ranges[TensorClass::Error.index()], &dz.mm(&l.w.tr()));
                    }
                    l.stats[TensorClass::Error.index()].merge(&st);
                    dx
                }
                None => {
                    let dx = match (&self.layers[i].w32, &dz32) {
                        (Some((w32, _)), Some(dz32)) => dz32.mm(&w32.tr()).to_kind(kind),
                        _ => dz.mm(&self.layers[i].w.tr()),
                    };
                    // delta_x belongs to the layer below (its delta_a), cast in this
                    // layer's error format.
                    let l = &mut self.layers[i];
                    l.cast(TensorClass::Error, dx, observe, &mut self.source)
                }
            };
            d = dx;
        }
        Some(d)
    }

    /// `backward_fixed` with the fused kernels (see `fusable`); the same values, counts
    /// and stochastic draws.
    fn backward_fused<T: Store>(
        &mut self,
        delta_out: &Tensor,
        param_grads: bool,
        input_grad: bool,
    ) -> Option<Tensor> {
        let kind = self.kind;
        let shadow = self.params32.is_some();
        let opts = (kind, tch::Device::Cpu);
        let n = self.layers.len();
        let mut d = delta_out.to_kind(kind);
        // (delta_z, its f32 rounding, its column sums) of the layer below, when the error
        // kernel above already applied that layer's ReLU backward. With the f32 shadow
        // delta_z itself is only kept when its column sums (the bias gradient) are not.
        let mut ready: Option<(Tensor, Option<Tensor>, Option<Tensor>)> = None;
        for i in (0..n).rev() {
            let d_fmt = self.layers[(i + 1).min(n - 1)]
                .formats
                .get(TensorClass::Error);
            let (below, rest) = self.layers.split_at_mut(i);
            let l = &mut rest[0];
            let z = l.z.take();
            let x = l.x.take().expect("backward needs a training forward first");
            let x32 = l.x32.take();
            let (dz, dz32, dz_sums) = match ready.take() {
                Some(r) => r,
                None => {
                    let z = z.expect("backward needs a training forward first");
                    let dz = match l.activation {
                        Activation::Identity => d,
                        Activation::Relu if holds(l.formats.get(TensorClass::Error), d_fmt) => {
                            let dz = l.act_backward(&d, &z);
                            l.pass(TensorClass::Error, dz, false)
                        }
                        _ => {
                            let dz = l.act_backward(&d, &z);
                            l.cast(TensorClass::Error, dz, false, &mut self.source)
                        }
                    };
                    let dz32 = shadow.then(|| dz.to_kind(Kind::Float));
                    (dz, dz32, None)
                }
            };
            let dzg = dz32.as_ref().unwrap_or(&dz);
            if param_grads {
                let xg = x32.as_ref().unwrap_or(&x);
                let gw32 = xg.tr().mm(dzg).contiguous();
                let gf = l.formats.get(TensorClass::Grad).expect("fusable");
                // SAFETY: gw32 is a fresh tensor; l.gw is a contiguous view into the flat
                // gradients that nothing else reads or writes here.
                unsafe {
                    let src =
                        std::slice::from_raw_parts(gw32.data_ptr() as *const f32, gw32.numel());
                    let dst = fused::slice_mut::<T>(&l.gw);
                    let st = &mut l.stats[TensorClass::Grad.index()];
                    fused::cast_f32_into(src, &gf, &mut self.source, st, dst);
                }
                let gb =
                    dz_sums.unwrap_or_else(|| dz.sum_dim_intlist([0i64].as_slice(), false, kind));
                // SAFETY: gb is a fresh tensor; l.gb is a contiguous view into the flat
                // gradients that nothing else reads or writes here.
                unsafe {
                    let st = &mut l.stats[TensorClass::Grad.index()];
                    let (src, dst) = (fused::slice::<T>(&gb), fused::slice_mut::<T>(&l.gb));
                    fused::cast_into_storage(src, &gf, &mut self.source, st, dst);
                }
            }
            if i == 0 && !input_grad {
                return None;
            }
            let dx32 = match &l.w32 {
                Some((w32, _)) => dzg.mm(&w32.tr()),
                None => dz.mm(&l.w.tr()),
            }
            .contiguous();
            let ef = l.formats.get(TensorClass::Error).expect("fusable");
            // The layer below's ReLU backward fuses in when its error cast is the identity
            // (its delta_a arrives on this layer's error grid).
            let relu_below = below.last_mut().filter(|b| {
                b.activation == Activation::Relu
                    && holds(b.formats.get(TensorClass::Error), Some(ef))
            });
            // The ReLU mask: the layer below's pre-activation when it kept one, else its
            // activation in f32 (this layer's GEMM operand; zero exactly where the
            // pre-activation is <= 0, see `relu_backward_from_activation`).
            let a32 = x32.as_ref().unwrap_or(&x);
            let size = dx32.size();
            let (rows, cols) = (size[0] as usize, size[1] as usize);
            // The layer below's bias gradient from the kernel's column sums where they are
            // exact (then equal to libtorch's sum); its errors in storage only where
            // something reads them (no shadow: the GEMM operand; else the inexact sum).
            let sums = relu_below.is_some() && param_grads && fused::sums_are_exact::<T>(&ef, rows);
            let keep = relu_below.is_none() || !shadow || (param_grads && !sums);
            let out = keep.then(|| Tensor::empty(size.as_slice(), opts));
            let out32 = (relu_below.is_some() && shadow)
                .then(|| Tensor::empty(size.as_slice(), (Kind::Float, tch::Device::Cpu)));
            let out_sums = sums.then(|| Tensor::empty([cols as i64], opts));
            let m = dx32.numel();
            // SAFETY: dx32, out, out32 and out_sums are distinct fresh tensors; the layer
            // below's cached pre-activation or this layer's input is only read.
            unsafe {
                let src = std::slice::from_raw_parts(dx32.data_ptr() as *const f32, m);
                let st = &mut l.stats[TensorClass::Error.index()];
                let o = fused::ErrorOut {
                    d: out.as_ref().map(|t| fused::slice_mut::<T>(t)),
                    d32: out32.as_ref().map(|t| fused::slice_mut::<f32>(t)),
                    col_sums: out_sums.as_ref().map(|t| (fused::slice_mut::<T>(t), cols)),
                };
                match relu_below.as_ref().map(|b| b.z.as_ref()) {
                    Some(Some(z)) => {
                        let zb = Some(fused::slice::<T>(z));
                        fused::error(src, &ef, &mut self.source, st, zb, o)
                    }
                    Some(None) => {
                        let ab = Some(fused::slice::<f32>(a32));
                        fused::error(src, &ef, &mut self.source, st, ab, o)
                    }
                    None => fused::error::<T, T>(src, &ef, &mut self.source, st, None, o),
                }
            }
            let out = out.unwrap_or_default();
            match relu_below {
                Some(b) => {
                    b.stats[TensorClass::Error.index()].elements += m as u64;
                    ready = Some((out, out32, out_sums));
                    d = Tensor::new();
                }
                None => d = out,
            }
        }
        Some(d)
    }

    fn forward_qat(&mut self, x: &Tensor) -> Tensor {
        let input = x.to_kind(self.kind).detach().set_requires_grad(true);
        let y = self.qat_graph(&input, true);
        self.qat_input = Some(input);
        self.qat_output = Some(y.shallow_clone());
        y.detach()
    }

    fn forward_qat_nograd(&mut self, x: &Tensor) -> Tensor {
        self.qat_graph(&x.to_kind(self.kind), false)
    }

    /// The QAT forward as an autograd graph over the float master copy, with
    /// `fake_quant_ste` at the input, weights, biases, pre-activations and activations.
    fn qat_graph(&mut self, input: &Tensor, record: bool) -> Tensor {
        let params = if record {
            self.params.set_requires_grad(true)
        } else {
            self.params.detach()
        };
        let observe = self.observe && record;
        let ste = |l: &mut Layer, class: TensorClass, t: Tensor| -> Tensor {
            if observe {
                observe_into(&mut l.ranges[class.index()], &t);
            }
            match l.formats.get(class) {
                None => t,
                Some(f) => {
                    let (y, st) = fake_quant_ste(&t, &f);
                    if record {
                        l.stats[class.index()].merge(&st);
                    }
                    y
                }
            }
        };
        let mut h = ste(
            &mut self.layers[0],
            TensorClass::Input,
            input.shallow_clone(),
        );
        for l in &mut self.layers {
            let (k, n) = (l.in_dim as i64, l.out_dim as i64);
            let w = params.narrow(0, l.w_off as i64, k * n).view([k, n]);
            let b = params.narrow(0, l.b_off as i64, n);
            let w = ste(l, TensorClass::Weight, w);
            let b = ste(l, TensorClass::Bias, b);
            let z = ste(l, TensorClass::Preact, b.addmm(&h, &w));
            let a = l.act_forward(&z);
            h = ste(l, TensorClass::Activation, a);
        }
        h
    }

    fn backward_qat(
        &mut self,
        delta_out: &Tensor,
        param_grads: bool,
        input_grad: bool,
    ) -> Option<Tensor> {
        let out = self
            .qat_output
            .take()
            .expect("backward needs a training forward first");
        let input = self
            .qat_input
            .take()
            .expect("backward needs a training forward first");
        let loss = (out * delta_out.to_kind(self.kind).detach()).sum(self.kind);
        let mut wrt = Vec::new();
        if param_grads {
            wrt.push(self.params.shallow_clone());
        }
        if input_grad {
            wrt.push(input.shallow_clone());
        }
        if wrt.is_empty() {
            return None;
        }
        let g = Tensor::run_backward(&[&loss], &wrt, false, false);
        let _ng = tch::no_grad_guard();
        let mut g = g.into_iter();
        if param_grads {
            let gp = g.next().expect("one gradient per input");
            self.grads.copy_(&gp);
        }
        self.params = self.params.detach();
        self.rebuild_param_views_only();
        if input_grad {
            g.next()
        } else {
            None
        }
    }

    fn rebuild_param_views_only(&mut self) {
        for l in &mut self.layers {
            let (k, n) = (l.in_dim as i64, l.out_dim as i64);
            l.w = self.params.narrow(0, l.w_off as i64, k * n).view([k, n]);
            l.b = self.params.narrow(0, l.b_off as i64, n);
        }
    }

    /// One optimizer step on the current gradients (panics on a target network).
    pub fn step(&mut self) {
        let mut opt = self
            .optimizer
            .take()
            .expect("step on a network without optimizer");
        opt.step(self);
        self.optimizer = Some(opt);
    }

    /// Polyak averaging: self = self + tau (online - self), cast into this network's
    /// weight and bias formats.
    pub fn soft_update_from(&mut self, online: &Mlp, tau: f64) {
        let _g = tch::no_grad_guard();
        if self.is_float() || self.mode == TrainMode::Qat {
            let src = online.params.detach().to_kind(self.kind);
            let _ = self.params.lerp_(&src, tau);
        } else if self.fusable() && tau.abs() < 0.5 {
            let src = online.params.detach().to_kind(self.kind).contiguous();
            match self.kind {
                Kind::Double => self.soft_update_fused::<f64>(&src, tau),
                _ => self.soft_update_fused::<f32>(&src, tau),
            }
            // The fused kernel wrote the f32 shadow itself.
            return;
        } else {
            let src = online.params.detach().to_kind(self.kind);
            let mixed = self.params.lerp(&src, tau);
            let params = self.params.shallow_clone();
            crate::optim::cast_segments(self, None, &mixed, &params);
        }
        self.refresh_shadows();
    }

    /// `soft_update_from`'s fixed-point branch with the fused kernel (see `fusable`).
    fn soft_update_fused<T: Store>(&mut self, src: &Tensor, tau: f64) {
        let params = self.params.shallow_clone();
        let p32 = self.params32.as_ref().map(Tensor::shallow_clone);
        let source = &mut self.source;
        let segs = crate::optim::segments(&mut self.layers);
        // SAFETY: `src` is the online network's parameters (or a conversion of them),
        // never this network's; params and its shadow are distinct contiguous tensors,
        // each sliced once.
        unsafe {
            let src = fused::slice::<T>(src);
            let p = fused::slice_mut::<T>(&params);
            let mut p32 = p32.as_ref().map(|t| fused::slice_mut::<f32>(t));
            for mut seg in segs {
                fused::soft_update(&mut seg, src, p, p32.as_deref_mut(), tau, source);
            }
        }
    }

    /// Whether any cast met NaN or Inf since the last `take_stats` (cheap: counters only).
    pub fn has_non_finite_casts(&self) -> bool {
        self.layers
            .iter()
            .any(|l| l.stats.iter().any(|s| s.nan > 0 || s.inf > 0))
    }

    /// The first layer and class whose casts met NaN or Inf since the last
    /// `take_stats`, else the first layer whose parameters are non-finite.
    pub fn find_non_finite(&self) -> Option<NonFinite> {
        for l in &self.layers {
            for class in TensorClass::ALL {
                let s = &l.stats[class.index()];
                if s.nan > 0 || s.inf > 0 {
                    return Some(NonFinite {
                        layer: l.name.clone(),
                        class,
                        nan: s.nan,
                        inf: s.inf,
                    });
                }
            }
        }
        let _g = tch::no_grad_guard();
        let check = |t: &Tensor| -> (u64, u64) {
            let nan = t.isnan().sum(Kind::Int64).int64_value(&[]) as u64;
            let inf = t.isinf().sum(Kind::Int64).int64_value(&[]) as u64;
            (nan, inf)
        };
        for l in &self.layers {
            let probes: [(TensorClass, Option<&Tensor>); 6] = [
                (TensorClass::Weight, Some(&l.w)),
                (TensorClass::Bias, Some(&l.b)),
                (TensorClass::Preact, l.z.as_ref()),
                (TensorClass::Activation, l.a.as_ref()),
                (TensorClass::Grad, Some(&l.gw)),
                (TensorClass::Grad, Some(&l.gb)),
            ];
            for (class, t) in probes {
                if let Some(t) = t {
                    let (nan, inf) = check(t);
                    if nan + inf > 0 {
                        return Some(NonFinite {
                            layer: l.name.clone(),
                            class,
                            nan,
                            inf,
                        });
                    }
                }
            }
        }
        None
    }
}

/// How often the `fast` GEMM emulation's cast differs from the `exact` one, per layer
/// and GEMM point, on the same inputs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LayerMismatch {
    pub layer: String,
    /// Fraction of pre-activations (z = x W + b) that differ.
    pub preact: f64,
    /// Fraction of weight-gradient entries (x^T dz) that differ.
    pub grad: f64,
    /// Fraction of back-propagated errors (dz W^T) that differ (NaN for layer 0, which
    /// needs no input error).
    pub error: f64,
    /// Elements compared at the three points.
    pub elements: [u64; 3],
}

fn differ(a: &Tensor, b: &Tensor) -> (u64, u64) {
    let n = a.numel() as u64;
    let d = a
        .ne_tensor(&b.to_kind(a.kind()))
        .sum(Kind::Int64)
        .int64_value(&[]) as u64;
    (d, n)
}

/// `fmt` with round-to-nearest-even in place of stochastic rounding: stochastic bits
/// would differ between the two paths, so the GEMM emulation is compared without them.
fn deterministic(fmt: FxFormat) -> FxFormat {
    if fmt.rounding == quant::Rounding::Stochastic {
        fmt.with_modes(quant::Rounding::RndConv, fmt.overflow)
    } else {
        fmt
    }
}

fn quantize_plain(x: Tensor, fmt: FxFormat) -> Tensor {
    fake_quant(&x, &deterministic(fmt), None).0
}

/// For every layer of `net` (all of whose input, weight, bias, pre-activation,
/// activation, error and gradient classes must be fixed point), runs the exact forward
/// on `x` and the exact backward from `delta_out`, and at each of the three GEMM points
/// also computes the `fast` result (f32 GEMM on the same grid values, then the same
/// cast), counting the elements where the two casts differ. Leaves `net` unchanged.
pub fn fast_exact_mismatch(
    net: &Mlp,
    x: &Tensor,
    delta_out: &Tensor,
) -> Result<Vec<LayerMismatch>, String> {
    let _g = tch::no_grad_guard();
    let kind = net.kind;
    let need = |l: &Layer, c: TensorClass| {
        l.formats.get(c).ok_or_else(|| {
            format!(
                "{}: class {c} is float; fast/exact mismatch needs fixed point",
                l.name
            )
        })
    };
    let mut h = quantize_plain(x.to_kind(kind), need(&net.layers[0], TensorClass::Input)?);
    let mut x_fmt = need(&net.layers[0], TensorClass::Input)?;
    let mut saved = Vec::new();
    let mut out = Vec::new();
    let f32_of = |t: &Tensor| t.to_kind(Kind::Float);
    for l in &net.layers {
        let (wf, bf, zf, af) = (
            need(l, TensorClass::Weight)?,
            need(l, TensorClass::Bias)?,
            need(l, TensorClass::Preact)?,
            need(l, TensorClass::Activation)?,
        );
        let zf = deterministic(zf);
        let (z, _) = exact_linear(&h, &x_fmt, &l.w, &wf, Some((&l.b, &bf)), &zf);
        let z_fast = quantize_plain(
            f32_of(&l.b).addmm(&f32_of(&h), &f32_of(&l.w)).to_kind(kind),
            zf,
        );
        let (d, n) = differ(&z, &z_fast);
        out.push(LayerMismatch {
            layer: l.name.clone(),
            preact: d as f64 / n as f64,
            grad: 0.0,
            error: f64::NAN,
            elements: [n, 0, 0],
        });
        let a = quantize_plain(l.act_forward(&z), af);
        saved.push((h, x_fmt, z));
        x_fmt = af;
        h = a;
    }
    let last = net.layers.len() - 1;
    let mut d = quantize_plain(
        delta_out.to_kind(kind),
        need(&net.layers[last], TensorClass::Error)?,
    );
    for (i, l) in net.layers.iter().enumerate().rev() {
        let (xi, xf, z) = &saved[i];
        let (ef, gf, wf) = (
            need(l, TensorClass::Error)?,
            need(l, TensorClass::Grad)?,
            need(l, TensorClass::Weight)?,
        );
        let gf = deterministic(gf);
        let ef = deterministic(ef);
        let dz = match l.activation {
            Activation::Identity => d,
            _ => quantize_plain(l.act_backward(&d, z), ef),
        };
        let (gw, _) = exact_linear(&xi.tr().contiguous(), xf, &dz, &ef, None, &gf);
        let gw_fast = quantize_plain(f32_of(xi).tr().mm(&f32_of(&dz)).to_kind(kind), gf);
        let (dg, ng) = differ(&gw, &gw_fast);
        out[i].grad = dg as f64 / ng as f64;
        out[i].elements[1] = ng;
        if i == 0 {
            break;
        }
        let (dx, _) = exact_linear(&dz, &ef, &l.w.tr().contiguous(), &wf, None, &ef);
        let dx_fast = quantize_plain(f32_of(&dz).mm(&f32_of(&l.w).tr()).to_kind(kind), ef);
        let (de, ne) = differ(&dx, &dx_fast);
        out[i].error = de as f64 / ne as f64;
        out[i].elements[2] = ne;
        d = dx;
    }
    Ok(out)
}
