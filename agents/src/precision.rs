//! Which number format every tensor of every layer uses: tensor classes, per-layer
//! formats, the presets (`float32`, `fxp32`, `fxp16`) and the config's per-class spec.
//!
//! A format of `None` means "float": no cast at that point (the tensor stays in the
//! storage float type, f32 or f64). A `Some(FxFormat)` is a cast through `quant` with
//! the format's rounding and overflow.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use quant::{FxFormat, Overflow, Rounding};
use serde::{Deserialize, Serialize};

/// A tensor class, format or preset name that does not parse; the message names the
/// value and what was expected.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PrecisionError {
    #[error("unknown tensor class `{name}`; expected one of {expected}")]
    UnknownClass { name: String, expected: String },
    #[error("`{value}` is neither `float32` nor an ap_fixed format: {source}")]
    BadFormat {
        value: String,
        source: quant::FormatError,
    },
    #[error("unknown precision `{0}`; expected float32, fxp32 or fxp16")]
    UnknownPreset(String),
}

/// The places in a layer's datapath where a value is cast into a format
/// (`../shared/design/numerics.md`, "Fixed-point training").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorClass {
    /// The network's input (observation, or observation + action for a critic); only
    /// the first layer casts it. Later layers take the previous layer's activations.
    Input,
    Weight,
    Bias,
    /// z = x W + b, after the accumulation.
    Preact,
    /// a = act(z); the layer's output.
    Activation,
    /// Back-propagated errors: delta_z (after act') and delta_x (after W^T).
    Error,
    /// Weight and bias gradients: x^T delta_z and the batch sum of delta_z.
    Grad,
    /// Optimizer state: Adam's first moment m and its root second moment s = sqrt(v),
    /// or SGD's momentum buffer. Both Adam states have the magnitude of a gradient, which
    /// is why one format fits them (see the crate docs on Adam).
    OptState,
    /// The step subtracted from a parameter.
    Update,
}

impl TensorClass {
    pub const ALL: [TensorClass; 9] = [
        TensorClass::Input,
        TensorClass::Weight,
        TensorClass::Bias,
        TensorClass::Preact,
        TensorClass::Activation,
        TensorClass::Error,
        TensorClass::Grad,
        TensorClass::OptState,
        TensorClass::Update,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TensorClass::Input => "input",
            TensorClass::Weight => "weight",
            TensorClass::Bias => "bias",
            TensorClass::Preact => "preact",
            TensorClass::Activation => "activation",
            TensorClass::Error => "error",
            TensorClass::Grad => "grad",
            TensorClass::OptState => "opt_state",
            TensorClass::Update => "update",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for TensorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TensorClass {
    type Err = PrecisionError;
    fn from_str(s: &str) -> Result<Self, PrecisionError> {
        TensorClass::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = TensorClass::ALL.iter().map(|c| c.name()).collect();
                PrecisionError::UnknownClass {
                    name: s.to_string(),
                    expected: names.join(", "),
                }
            })
    }
}

/// The format of every tensor class of one layer; `None` = float (no cast).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerFormats(pub [Option<FxFormat>; 9]);

impl LayerFormats {
    /// Every class float.
    pub fn float() -> Self {
        LayerFormats([None; 9])
    }

    pub fn get(&self, class: TensorClass) -> Option<FxFormat> {
        self.0[class.index()]
    }

    pub fn set(&mut self, class: TensorClass, fmt: Option<FxFormat>) {
        self.0[class.index()] = fmt;
    }

    pub fn is_all_float(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// Every class's format as its config spelling (`float32` or the HLS type), in
    /// [`TensorClass::ALL`] order: how checkpoints and rung records store formats.
    pub fn to_strings(&self) -> Vec<String> {
        TensorClass::ALL
            .iter()
            .map(|&c| FormatValue(self.get(c)).to_string())
            .collect()
    }

    /// The inverse of [`LayerFormats::to_strings`]; missing trailing classes are float.
    pub fn from_strings(v: &[String]) -> Result<Self, PrecisionError> {
        let mut f = LayerFormats::float();
        for (c, s) in TensorClass::ALL.iter().zip(v) {
            f.set(*c, s.parse::<FormatValue>()?.0);
        }
        Ok(f)
    }

    /// The widest fixed-point width in use, 0 when all float.
    pub fn max_width(&self) -> u32 {
        self.0.iter().flatten().map(|f| f.width).max().unwrap_or(0)
    }
}

/// The formats of every layer, by stable layer name (`actor.fc1`, `critic2_target.fc3`).
pub type FormatTable = BTreeMap<String, LayerFormats>;
/// An observed range (`max |x|`, or another observer's) per layer and tensor class.
pub type RangeTable = BTreeMap<String, BTreeMap<TensorClass, f64>>;

/// One class's format in a config: `"float32"` or an HLS spelling such as
/// `"ap_fixed<32,8,AP_RND_CONV,AP_SAT>"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatValue(pub Option<FxFormat>);

impl FromStr for FormatValue {
    type Err = PrecisionError;
    fn from_str(s: &str) -> Result<Self, PrecisionError> {
        let t = s.trim();
        if t == "float32" || t == "float" {
            return Ok(FormatValue(None));
        }
        FxFormat::from_str(t)
            .map(|f| FormatValue(Some(f)))
            .map_err(|source| PrecisionError::BadFormat {
                value: t.to_string(),
                source,
            })
    }
}

impl fmt::Display for FormatValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("float32"),
            Some(x) => write!(f, "{x}"),
        }
    }
}

impl Serialize for FormatValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for FormatValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Formats for some classes (the rest unchanged): one table of the config's `[formats]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<FormatValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<FormatValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<FormatValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preact: Option<FormatValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<FormatValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<FormatValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad: Option<FormatValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_state: Option<FormatValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<FormatValue>,
}

impl ClassSpec {
    fn entries(&self) -> [(TensorClass, Option<FormatValue>); 9] {
        [
            (TensorClass::Input, self.input),
            (TensorClass::Weight, self.weight),
            (TensorClass::Bias, self.bias),
            (TensorClass::Preact, self.preact),
            (TensorClass::Activation, self.activation),
            (TensorClass::Error, self.error),
            (TensorClass::Grad, self.grad),
            (TensorClass::OptState, self.opt_state),
            (TensorClass::Update, self.update),
        ]
    }

    /// Overwrites the classes this spec names.
    pub fn apply(&self, to: &mut LayerFormats) {
        for (class, v) in self.entries() {
            if let Some(v) = v {
                to.set(class, v.0);
            }
        }
    }

    /// A spec naming every class of `f`.
    pub fn from_formats(f: &LayerFormats) -> Self {
        let v = |c| Some(FormatValue(f.get(c)));
        ClassSpec {
            input: v(TensorClass::Input),
            weight: v(TensorClass::Weight),
            bias: v(TensorClass::Bias),
            preact: v(TensorClass::Preact),
            activation: v(TensorClass::Activation),
            error: v(TensorClass::Error),
            grad: v(TensorClass::Grad),
            opt_state: v(TensorClass::OptState),
            update: v(TensorClass::Update),
        }
    }
}

/// The config's `[formats]` table: per-class formats for every layer, then per network
/// (`actor`, `critic` = both critics, `critic1`, `actor_target`, ...), then per layer
/// (`critic1.fc3`), each overriding the one before, all on top of the preset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatsConfig {
    #[serde(flatten)]
    pub all: ClassSpec,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, ClassSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub layers: BTreeMap<String, ClassSpec>,
}

/// How GEMMs in fixed-point layers are emulated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gemm {
    /// f32 GEMM on the grid values, then the cast (differs from `exact` only near
    /// rounding ties; see `mlp::fast_exact_mismatch`).
    #[default]
    Fast,
    /// `quant::exact_linear`: what integer hardware computes, bit for bit (one f64 GEMM
    /// where that is exact, limbs where not).
    Exact,
    /// Per network: `exact` where every forward and error GEMM is exact as one f64 GEMM
    /// (`Mlp::exact_in_f64`: every preset and schedule of 16 bits or fewer), where it
    /// runs at 0.59x the `fast` rate or better; `fast` elsewhere (FXP32). The default of
    /// a training config.
    Auto,
}

/// Pure fixed-point training or quantization-aware training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainMode {
    /// Explicit forward/backward/update with a cast at every point; the weights live in
    /// their format (no float master copy).
    #[default]
    Fixed,
    /// QAT: a float master copy of the weights; the forward casts weights, biases,
    /// inputs, pre-activations and activations with `quant::fake_quant_ste`, and
    /// libtorch autograd back-propagates through the straight-through estimator. The
    /// error, gradient, optimizer-state and update classes are not cast in this mode.
    Qat,
}

/// A named starting point for every class of every layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    Float32,
    Fxp32,
    Fxp16,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Float32, Preset::Fxp32, Preset::Fxp16];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Float32 => "float32",
            Preset::Fxp32 => "fxp32",
            Preset::Fxp16 => "fxp16",
        }
    }

    /// The formats of layer `layer` (e.g. `critic1.fc3`, `last` = it is the network's
    /// output layer) of network `network` under this preset.
    ///
    /// `fxp32`: 32-bit signed everywhere, round to nearest even (`AP_RND_CONV`) and
    /// saturate (`AP_SAT`). The binary points are fixed defaults chosen from the value
    /// ranges of TD3/DDPG on Pendulum and MuJoCo tasks (observations and activations
    /// stay below 2^15, Q values below 2^15, weights below 2^7, errors below 2^3, gradients
    /// and Adam states below 2^7, steps below 2^-5): Q16.16 for inputs, pre-activations
    /// and activations, Q8.24 weights and biases, Q4.28 errors, Q8.24 gradients and
    /// optimizer state, Q-4.36 updates. The lead's QAT ladder narrows them from the
    /// observed ranges (`Agent::range_report`).
    ///
    /// `fxp16`: the same at 16 bits, with stochastic rounding on weights so that
    /// steps below one LSB survive on average: Q6.10 inputs, Q8.8 pre-activations and
    /// activations (Q12.4 on a critic's output layer, which holds returns in the
    /// hundreds), Q2.14 weights, Q4.12 biases, Q1.15 errors, Q4.12 gradients and
    /// optimizer state, Q-6.22 updates. A uniform 16-bit start, not a tuned one.
    pub fn layer_formats(self, network: &str, last: bool) -> LayerFormats {
        let q = |w: u32, i: i32, r: Rounding| {
            Some(
                FxFormat::new(true, w, i, r, Overflow::Sat)
                    .expect("preset formats are valid by construction"),
            )
        };
        let n = Rounding::RndConv;
        let critic_out = last && network.starts_with("critic");
        let mut f = LayerFormats::float();
        match self {
            Preset::Float32 => {}
            Preset::Fxp32 => {
                f.set(TensorClass::Input, q(32, 16, n));
                f.set(TensorClass::Weight, q(32, 8, n));
                f.set(TensorClass::Bias, q(32, 8, n));
                f.set(TensorClass::Preact, q(32, 16, n));
                f.set(TensorClass::Activation, q(32, 16, n));
                f.set(TensorClass::Error, q(32, 4, n));
                f.set(TensorClass::Grad, q(32, 8, n));
                f.set(TensorClass::OptState, q(32, 8, n));
                f.set(TensorClass::Update, q(32, -4, n));
            }
            Preset::Fxp16 => {
                let z = if critic_out { 12 } else { 8 };
                f.set(TensorClass::Input, q(16, 6, n));
                f.set(TensorClass::Weight, q(16, 2, Rounding::Stochastic));
                f.set(TensorClass::Bias, q(16, 4, Rounding::Stochastic));
                f.set(TensorClass::Preact, q(16, z, n));
                f.set(TensorClass::Activation, q(16, z, n));
                f.set(TensorClass::Error, q(16, 1, n));
                f.set(TensorClass::Grad, q(16, 4, n));
                f.set(TensorClass::OptState, q(16, 4, n));
                f.set(TensorClass::Update, q(16, -6, n));
            }
        }
        f
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = PrecisionError;
    fn from_str(s: &str) -> Result<Self, PrecisionError> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| PrecisionError::UnknownPreset(s.to_string()))
    }
}

/// Everything that decides the numerics of a run: the preset, the overrides, the GEMM
/// emulation and the training mode.
#[derive(Clone, Debug, PartialEq)]
pub struct PrecisionSpec {
    pub preset: Preset,
    pub formats: FormatsConfig,
    pub gemm: Gemm,
    pub mode: TrainMode,
}

impl PrecisionSpec {
    pub fn preset(preset: Preset) -> Self {
        PrecisionSpec {
            preset,
            formats: FormatsConfig::default(),
            gemm: Gemm::Fast,
            mode: TrainMode::Fixed,
        }
    }

    /// The resolved formats of layer `index` (0-based; `n_layers` in the network) of
    /// `network`: preset, then `[formats]`, then `[formats.networks.<name>]` (a target
    /// network `x_target` first takes `x`'s entries, `critic1`/`critic2` first take
    /// `critic`'s), then `[formats.layers."<network>.fc<i>"]` (same inheritance).
    pub fn resolve(&self, network: &str, index: usize, n_layers: usize) -> LayerFormats {
        let last = index + 1 == n_layers;
        let mut f = self.preset.layer_formats(network, last);
        self.formats.all.apply(&mut f);
        let chain = network_chain(network);
        for n in &chain {
            if let Some(spec) = self.formats.networks.get(n) {
                spec.apply(&mut f);
            }
        }
        for n in &chain {
            if let Some(spec) = self.formats.layers.get(&layer_name(n, index)) {
                spec.apply(&mut f);
            }
        }
        f
    }

    /// Names in `[formats.networks]` / `[formats.layers]` that match no network or layer
    /// of an agent with these networks (a config typo otherwise silently does nothing).
    pub fn unknown_names(&self, networks: &[(&str, usize)]) -> Vec<String> {
        let mut known_nets: Vec<String> = Vec::new();
        let mut known_layers: Vec<String> = Vec::new();
        for (net, n) in networks {
            for c in network_chain(net) {
                for i in 0..*n {
                    known_layers.push(layer_name(&c, i));
                }
                known_nets.push(c);
            }
        }
        let mut bad: Vec<String> = self
            .formats
            .networks
            .keys()
            .filter(|k| !known_nets.contains(k))
            .map(|k| format!("formats.networks.{k}"))
            .collect();
        bad.extend(
            self.formats
                .layers
                .keys()
                .filter(|k| !known_layers.contains(k))
                .map(|k| format!("formats.layers.\"{k}\"")),
        );
        bad
    }
}

/// `actor.fc1` for layer 0 of `actor`: the stable names the QAT ladder and reports use.
pub fn layer_name(network: &str, index: usize) -> String {
    format!("{network}.fc{}", index + 1)
}

/// The names a network inherits formats from, most general first:
/// `critic2_target` -> [critic, critic2, critic_target, critic2_target].
fn network_chain(network: &str) -> Vec<String> {
    let (base, target) = match network.strip_suffix("_target") {
        Some(b) => (b, true),
        None => (network, false),
    };
    let family = base.trim_end_matches(|c: char| c.is_ascii_digit());
    let mut chain = Vec::new();
    if family != base {
        chain.push(family.to_string());
    }
    chain.push(base.to_string());
    if target {
        if family != base {
            chain.push(format!("{family}_target"));
        }
        chain.push(network.to_string());
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_chain_runs_from_family_to_target() {
        assert_eq!(
            network_chain("critic2_target"),
            ["critic", "critic2", "critic_target", "critic2_target"]
        );
        assert_eq!(network_chain("actor"), ["actor"]);
        assert_eq!(network_chain("actor_target"), ["actor", "actor_target"]);
    }

    #[test]
    fn layer_overrides_beat_network_overrides_beat_class_overrides() {
        let mut spec = PrecisionSpec::preset(Preset::Fxp32);
        let f8: FormatValue = "ap_fixed<8,3,AP_RND,AP_SAT>".parse().unwrap();
        let f12: FormatValue = "ap_fixed<12,4>".parse().unwrap();
        spec.formats.all.weight = Some(f8);
        spec.formats.networks.insert(
            "critic".into(),
            ClassSpec {
                weight: Some(f12),
                ..Default::default()
            },
        );
        spec.formats.layers.insert(
            "critic2.fc3".into(),
            ClassSpec {
                weight: Some(FormatValue(None)),
                ..Default::default()
            },
        );
        assert_eq!(spec.resolve("actor", 0, 3).get(TensorClass::Weight), f8.0);
        assert_eq!(
            spec.resolve("critic1", 0, 3).get(TensorClass::Weight),
            f12.0
        );
        assert_eq!(
            spec.resolve("critic2_target", 2, 3)
                .get(TensorClass::Weight),
            None
        );
        assert_eq!(
            spec.resolve("critic2", 1, 3).get(TensorClass::Weight),
            f12.0
        );
        assert!(spec
            .unknown_names(&[("critic1", 3), ("critic2", 3)])
            .is_empty());
        spec.formats
            .layers
            .insert("critic3.fc1".into(), ClassSpec::default());
        assert_eq!(
            spec.unknown_names(&[("critic1", 3), ("critic2", 3)]),
            ["formats.layers.\"critic3.fc1\""]
        );
    }

    #[test]
    fn float32_preset_is_all_float_and_fxp_presets_have_their_width() {
        assert!(Preset::Float32.layer_formats("actor", false).is_all_float());
        assert_eq!(Preset::Fxp32.layer_formats("actor", false).max_width(), 32);
        assert_eq!(Preset::Fxp16.layer_formats("critic1", true).max_width(), 16);
        let v: FormatValue = "float32".parse().unwrap();
        assert_eq!(v.0, None);
        assert!("fixed<3>".parse::<FormatValue>().is_err());
    }
}
