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
//!
//! This module holds the network's public face: the `Mlp` type, construction, formats,
//! range observers and statistics, the optimizer step and soft update, and the dispatch
//! to one of three numeric paths, each in its own module:
//! - `fixed`: tensor fixed point, an explicit cast on libtorch tensors at every point
//!   (`fast` f32 or `exact` integer GEMMs; the only path that observes ranges);
//! - `fused`: the same values through the slice kernels of `crate::fused` (pure fixed
//!   point, `fast` GEMMs, not observing), the hot path;
//! - `qat`: quantization-aware training, autograd over a float master copy with
//!   `fake_quant_ste` at the casts.
//!
//! `layer` holds [`Layer`] and its read API; `mismatch` measures how often `fast` and
//! `exact` GEMMs cast differently ([`fast_exact_mismatch`]). The optimizer never sees an
//! `Mlp`: `step` lends it a `ParamView` (`crate::params`), so `optim` does not depend
//! on this module.

mod fixed;
mod fused;
mod layer;
mod mismatch;
mod qat;

use quant::tensor::{fake_quant, QuantStats, StochasticSource};
use quant::{AffineQuantizer, FxFormat};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

pub use crate::cast::{RangeTrack, RANGE_EMA_DECAY, RANGE_QUANTILE};
pub use layer::Layer;
pub use mismatch::{fast_exact_mismatch, LayerMismatch};

use crate::learned_point::LearnedPoints;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::params::ParamView;
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
    name: String,
    layers: Vec<Layer>,
    optimizer: Option<Optimizer>,
    /// Feed the range observers during the next forward/backward/update calls.
    observe: bool,
    kind: Kind,
    /// The GEMM emulation in use (`fast` or `exact`; `auto` decided, see `gemm_setting`).
    gemm: Gemm,
    /// As configured (may be `auto`).
    gemm_setting: Gemm,
    mode: TrainMode,
    params: Tensor,
    grads: Tensor,
    /// f32 copy of `params` for fast GEMMs when storage is f64 (layers view into it).
    params32: Option<Tensor>,
    source: StochasticSource,
    qat_input: Option<Tensor>,
    qat_output: Option<Tensor>,
    /// The learned binary points (`crate::learned_point`), trained in QAT mode.
    learned: Option<LearnedPoints>,
    /// Their gradient-recording leaf in the last training forward.
    qat_points: Option<Tensor>,
    /// Use the fused kernels (`fused`) where they apply; off only to test them
    /// against the unfused path.
    fused: bool,
}

/// Storage type for `layers`: f64 when some format is wider than f32's 24-bit
/// significand, else f32.
fn storage_kind(layers: &[Layer]) -> Kind {
    let widest = layers.iter().map(|l| l.formats.max_width()).max();
    if widest.unwrap_or(0) > 24 {
        Kind::Double
    } else {
        Kind::Float
    }
}

/// Whether every value of `inner` is a value of `outer` (so casting from `inner` into
/// `outer` is the identity). Both must be fixed point.
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
        let mut flat = Vec::new();
        for i in 0..n_layers {
            let (k, n) = (sizes[i], sizes[i + 1]);
            let bound = 1.0 / (k as f64).sqrt();
            flat.extend((0..k * n + n).map(|_| rng.gen_range(-bound..bound)));
        }
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
        Self::assemble(
            name,
            layers,
            Tensor::from_slice(&flat),
            precision,
            stochastic_seed,
        )
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
        let params = self.params.detach().copy();
        Self::assemble(name, layers, params, precision, stochastic_seed)
    }

    /// A network of `layers` over the flat `params` (converted to the storage type the
    /// widest format needs), without optimizer: views attached, weights and biases cast
    /// into their formats.
    fn assemble(
        name: &str,
        layers: Vec<Layer>,
        params: Tensor,
        precision: &PrecisionSpec,
        stochastic_seed: u64,
    ) -> Self {
        let kind = storage_kind(&layers);
        let params = params.to_kind(kind);
        let mut net = Mlp {
            name: name.to_string(),
            layers,
            optimizer: None,
            observe: false,
            kind,
            gemm: precision.gemm,
            gemm_setting: precision.gemm,
            mode: precision.mode,
            grads: params.zeros_like(),
            params,
            params32: None,
            source: StochasticSource::new(stochastic_seed),
            qat_input: None,
            qat_output: None,
            learned: None,
            qat_points: None,
            fused: true,
        };
        net.resolve_gemm();
        net.rebuild_views();
        net.cast_params();
        net
    }

    /// `actor`, `critic1`, `actor_target`, ...
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layers, input side first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    pub(crate) fn layers_mut(&mut self) -> &mut [Layer] {
        &mut self.layers
    }

    /// Puts (or with `None` removes) an affine quantizer at `class` of layer `layer`, as
    /// the QAT schedule's switch does (`Layer::affine`).
    ///
    /// # Panics
    /// If `layer` is out of range.
    pub fn set_affine(&mut self, layer: usize, class: TensorClass, q: Option<AffineQuantizer>) {
        self.layers[layer].set_affine(class, q);
    }

    /// This network with a fresh `config` optimizer over its parameters (online
    /// networks; target networks have none).
    pub fn with_optimizer(mut self, config: OptimizerConfig) -> Self {
        self.optimizer = Some(Optimizer::new(config, self.params.numel(), self.kind));
        self
    }

    /// The optimizer and its state (None for target networks).
    pub fn optimizer(&self) -> Option<&Optimizer> {
        self.optimizer.as_ref()
    }

    pub(crate) fn optimizer_mut(&mut self) -> Option<&mut Optimizer> {
        self.optimizer.as_mut()
    }

    /// Feed the range observers during the next forward/backward/update calls.
    pub(crate) fn set_observe(&mut self, on: bool) {
        self.observe = on;
    }

    /// Every layer's cast statistics since the last call (input side first), then
    /// zeroes them.
    pub fn take_stats(&mut self) -> Vec<[QuantStats; 9]> {
        self.layers.iter_mut().map(Layer::take_stats).collect()
    }

    /// Fresh range observers on every layer.
    pub(crate) fn reset_ranges(&mut self) {
        self.layers.iter_mut().for_each(Layer::reset_ranges);
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
        // The GEMMs' copy of the parameters where their type is not the storage's: f32
        // for `fast` GEMMs on f64 storage, f64 for `exact` GEMMs on f32 storage (exact
        // there, see `exact_in_f64`); unfused `exact` GEMMs read the storage.
        let shadow = match (self.gemm, self.kind) {
            (Gemm::Fast, Kind::Double) => Some(Kind::Float),
            (Gemm::Exact, Kind::Float) if !self.is_float() => Some(Kind::Double),
            _ => None,
        };
        self.params32 = shadow.map(|k| self.params.to_kind(k));
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
    /// Learned binary points win: a class whose binary point is learned keeps
    /// `round(s)` integer bits in whatever format `f` gives it.
    pub fn update_formats(&mut self, mut f: impl FnMut(&str, &mut LayerFormats)) {
        for l in &mut self.layers {
            f(&l.name, &mut l.formats);
        }
        self.impose_learned();
        self.after_format_change();
    }

    /// Writes the learned points' integer bits into the layers' formats; whether any
    /// changed.
    fn impose_learned(&mut self) -> bool {
        let Some(lp) = &self.learned else {
            return false;
        };
        let mut formats: Vec<LayerFormats> = self.layers.iter().map(|l| l.formats).collect();
        let changed = lp.impose(&mut formats);
        for (l, f) in self.layers.iter_mut().zip(formats) {
            l.formats = f;
        }
        changed
    }

    /// The learned binary points, if this network learns them.
    pub fn learned_points(&self) -> Option<&LearnedPoints> {
        self.learned.as_ref()
    }

    /// Makes the binary points of this network's casts trainable from their current
    /// formats (`LearnedPoints::of`), or with `Some(points)` restores saved ones (a
    /// checkpoint); `None` stops learning them (formats stay as they are).
    pub(crate) fn set_learned_points(&mut self, points: Option<LearnedPoints>) {
        self.learned = points;
        if self.impose_learned() {
            self.after_format_change();
        }
    }

    /// Starts learning the binary points of every fixed-point cast at its current format,
    /// with Adam step `lr` (no-op when they are already learned: only the start of a
    /// ladder sets them from formats).
    pub(crate) fn learn_binary_points(&mut self, lr: f64) -> bool {
        if self.learned.is_some() {
            return false;
        }
        let formats: Vec<LayerFormats> = self.layers.iter().map(|l| l.formats).collect();
        self.learned = Some(LearnedPoints::of(&formats, lr));
        true
    }

    /// Takes the formats of `online`'s learned casts (a target network follows its online
    /// network's binary points).
    pub(crate) fn follow_learned(&mut self, online: &Mlp) {
        let Some(lp) = &online.learned else {
            return;
        };
        let mut changed = false;
        for p in &lp.points {
            let (Some(src), Some(dst)) = (online.layers.get(p.layer), self.layers.get_mut(p.layer))
            else {
                continue;
            };
            let f = src.formats.get(p.class);
            if dst.formats.get(p.class) != f && f.is_some() {
                dst.formats.set(p.class, f);
                changed = true;
            }
        }
        if changed {
            self.after_format_change();
        }
    }

    /// Switches GEMM emulation and training mode.
    pub fn set_numerics(&mut self, gemm: Gemm, mode: TrainMode) {
        self.gemm_setting = gemm;
        self.mode = mode;
        self.after_format_change();
    }

    /// `gemm_setting` with `auto` decided for the current formats.
    fn resolve_gemm(&mut self) {
        self.gemm = match self.gemm_setting {
            Gemm::Auto if !self.is_float() && self.exact_in_f64() => Gemm::Exact,
            Gemm::Auto => Gemm::Fast,
            g => g,
        };
    }

    fn after_format_change(&mut self) {
        self.resolve_gemm();
        let kind = storage_kind(&self.layers);
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
    fn refresh_shadows(&mut self) {
        if let Some(p32) = &mut self.params32 {
            p32.copy_(&self.params);
        }
    }

    /// The parameters as an optimizer step or a soft update sees them, lent for the
    /// length of that step.
    fn param_view(&mut self) -> ParamView<'_> {
        let (float, fusable) = (self.is_float(), self.fusable());
        ParamView {
            params: &mut self.params,
            grads: &self.grads,
            shadow: self.params32.as_mut(),
            kind: self.kind,
            mode: self.mode,
            float,
            fusable,
            observe: self.observe,
            source: &mut self.source,
            layers: self.layers.iter_mut().map(Layer::param_slots).collect(),
        }
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

    /// Whether the fused kernels apply: pure fixed point, every class of every layer
    /// fixed point, affine quantizers (the QAT schedule's) on activations only, no range
    /// observation, and either `fast` GEMMs (f32 storage, or f64 storage with its f32
    /// shadow) or `exact` GEMMs that f64 computes exactly (see [`Mlp::exact_in_f64`]).
    fn fusable(&self) -> bool {
        self.fused
            && !self.observe
            && self.mode == TrainMode::Fixed
            && self
                .layers
                .iter()
                .all(|l| l.formats.0.iter().all(Option::is_some))
            && self.layers.iter().all(|l| {
                l.affine
                    .iter()
                    .enumerate()
                    .all(|(i, q)| q.is_none() || i == TensorClass::Activation.index())
            })
            && match (self.gemm, self.kind) {
                (Gemm::Fast, Kind::Float) => self.params32.is_none(),
                (Gemm::Fast, Kind::Double) => self.params32.is_some(),
                (Gemm::Exact, Kind::Float) => self.params32.is_some() && self.exact_in_f64(),
                (Gemm::Exact, Kind::Double) => self.params32.is_none() && self.exact_in_f64(),
                _ => false,
            }
    }

    /// Whether every forward and error GEMM of this network is exact as one f64 GEMM
    /// on the stored grid values (`quant::f64_gemm_is_exact` on its formats and depth),
    /// with deterministic rounding on the GEMM outputs (the exact path rounds them
    /// without drawing stochastic words) and every hidden identity layer's incoming
    /// error already on its own error grid (the exact path reads it on that grid).
    /// Then the fused kernels compute `exact` training in f64, bit for bit what
    /// `quant::exact_linear` computes; weight-gradient products depend on the batch
    /// and are checked per call. This holds for every 16-bit preset.
    pub fn exact_in_f64(&self) -> bool {
        let n = self.layers.len();
        let fmt = |l: &Layer, c| l.formats.get(c);
        self.layers.iter().enumerate().all(|(i, l)| {
            let xf = if i == 0 {
                fmt(l, TensorClass::Input)
            } else {
                fmt(&self.layers[i - 1], TensorClass::Activation)
            };
            let (Some(xf), Some(wf), Some(bf), Some(ef)) = (
                xf,
                fmt(l, TensorClass::Weight),
                fmt(l, TensorClass::Bias),
                fmt(l, TensorClass::Error),
            ) else {
                return false;
            };
            let deterministic = [TensorClass::Preact, TensorClass::Error, TensorClass::Grad]
                .iter()
                .all(|&c| fmt(l, c).is_some_and(|f| f.rounding != quant::Rounding::Stochastic));
            let identity_ok = l.activation != Activation::Identity
                || i + 1 == n
                || holds(Some(ef), fmt(&self.layers[i + 1], TensorClass::Error));
            deterministic
                && identity_ok
                && quant::f64_gemm_is_exact(&xf, &wf, l.in_dim, Some(&bf))
                && quant::f64_gemm_is_exact(&ef, &wf, l.out_dim, None)
        })
    }

    /// Whether the next forward and backward take the fused kernels (see `set_fused`).
    pub fn runs_fused(&self) -> bool {
        self.fusable()
    }

    /// Turns the fused kernels off (or back on): for tests that compare both paths.
    #[doc(hidden)]
    pub fn set_fused(&mut self, on: bool) {
        self.fused = on;
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

    /// One optimizer step on the current gradients (panics on a target network).
    pub fn step(&mut self) {
        let mut opt = self
            .optimizer
            .take()
            .expect("step on a network without optimizer");
        opt.step(self.param_view());
        self.optimizer = Some(opt);
        let moved = self.learned.as_mut().is_some_and(LearnedPoints::step);
        if moved && self.impose_learned() {
            self.after_format_change();
        }
    }

    /// Polyak averaging: self = self + tau (online - self), cast into this network's
    /// weight and bias formats.
    pub fn soft_update_from(&mut self, online: &Mlp, tau: f64) {
        let _g = tch::no_grad_guard();
        self.follow_learned(online);
        if self.is_float() || self.mode == TrainMode::Qat {
            let src = online.params.detach().to_kind(self.kind);
            let _ = self.params.lerp_(&src, tau);
        } else if self.fusable() && tau.abs() < 0.5 {
            let src = online.params.detach().to_kind(self.kind).contiguous();
            match self.kind {
                Kind::Double => self.soft_update_fused::<f64, f32>(&src, tau),
                _ => self.soft_update_fused::<f32, f64>(&src, tau),
            }
            // The fused kernel wrote the f32 shadow itself.
            return;
        } else {
            let src = online.params.detach().to_kind(self.kind);
            let mixed = self.params.lerp(&src, tau);
            let params = self.params.shallow_clone();
            self.param_view().cast_segments(None, &mixed, &params);
        }
        self.refresh_shadows();
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
