//! The trained actor as integer hardware needs it: per layer, weights and biases as raw
//! two's-complement codes with their `FxFormat`s, and the input, pre-activation and
//! activation formats of the datapath.

use quant::FxFormat;
use serde::Serialize;
use tch::Kind;

use crate::mlp::{Activation, Mlp};
use crate::precision::TensorClass;

/// One layer of an exported network. `weight_codes` is row-major (in x out): the code of
/// `W[i][j]` at `i * out_dim + j`. Codes are empty for a class kept in float; the
/// `*_values` carry the float values in every case.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerExport {
    pub name: String,
    pub in_dim: usize,
    pub out_dim: usize,
    /// `relu`, `identity`, or `tanh` (then `tanh_scale`/`tanh_offset` map to the action bounds).
    pub activation: String,
    pub tanh_scale: Vec<f32>,
    pub tanh_offset: Vec<f32>,
    pub weight_format: Option<FxFormat>,
    pub weight_codes: Vec<i64>,
    pub weight_values: Vec<f64>,
    pub bias_format: Option<FxFormat>,
    pub bias_codes: Vec<i64>,
    pub bias_values: Vec<f64>,
    pub formats: ActivationFormats,
}

/// The formats values flow through in a layer's forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ActivationFormats {
    /// Format of the layer's input x (layer 0: the network input format; later layers:
    /// the previous layer's activation format).
    pub input: Option<FxFormat>,
    pub preact: Option<FxFormat>,
    pub activation: Option<FxFormat>,
}

/// Per layer of `net`: its name and activation-path formats.
pub fn activation_formats(net: &Mlp) -> Vec<(String, ActivationFormats)> {
    let mut input = net.layers()[0].formats().get(TensorClass::Input);
    net.layers()
        .iter()
        .map(|l| {
            let f = ActivationFormats {
                input,
                preact: l.formats().get(TensorClass::Preact),
                activation: l.formats().get(TensorClass::Activation),
            };
            input = f.activation;
            (l.name().to_string(), f)
        })
        .collect()
}

/// Why a layer's stored values have no raw codes in their format.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{layer} {class}")]
    NotFinite {
        layer: String,
        class: TensorClass,
        #[source]
        source: quant::QuantError,
    },
    /// Stored values are on their format's grid; one that is not means the tensor was
    /// written without its cast.
    #[error("{layer} {class}: value {value} is not on the grid of {format}")]
    OffGrid {
        layer: String,
        class: TensorClass,
        value: f64,
        format: FxFormat,
    },
}

fn codes(
    values: &[f64],
    fmt: Option<FxFormat>,
    layer: &str,
    class: TensorClass,
) -> Result<Vec<i64>, ExportError> {
    let Some(f) = fmt else { return Ok(Vec::new()) };
    values
        .iter()
        .map(|&v| {
            let raw = quant::from_f64(v, &f).map_err(|source| ExportError::NotFinite {
                layer: layer.into(),
                class,
                source,
            })?;
            if quant::to_f64(raw, &f) != v {
                return Err(ExportError::OffGrid {
                    layer: layer.into(),
                    class,
                    value: v,
                    format: f,
                });
            }
            Ok(raw)
        })
        .collect()
}

/// Exports every layer of `net` (normally the trained actor: `agent.actor()`).
pub fn export_network(net: &Mlp) -> Result<Vec<LayerExport>, ExportError> {
    let acts = activation_formats(net);
    net.layers()
        .iter()
        .zip(acts)
        .map(|(l, (_, formats))| {
            let to_vec = |t: &tch::Tensor| -> Vec<f64> {
                Vec::try_from(t.detach().to_kind(Kind::Double).contiguous().view([-1]))
                    .expect("float tensor")
            };
            let (wv, bv) = (to_vec(l.weight()), to_vec(l.bias()));
            let (wf, bf) = (
                l.formats().get(TensorClass::Weight),
                l.formats().get(TensorClass::Bias),
            );
            let (activation, tanh_scale, tanh_offset) = match l.activation() {
                Activation::Relu => ("relu", vec![], vec![]),
                Activation::Identity => ("identity", vec![], vec![]),
                Activation::Tanh { scale, offset } => ("tanh", scale.clone(), offset.clone()),
            };
            Ok(LayerExport {
                name: l.name().to_string(),
                in_dim: l.in_dim(),
                out_dim: l.out_dim(),
                activation: activation.into(),
                tanh_scale,
                tanh_offset,
                weight_format: wf,
                weight_codes: codes(&wv, wf, l.name(), TensorClass::Weight)?,
                weight_values: wv,
                bias_format: bf,
                bias_codes: codes(&bv, bf, l.name(), TensorClass::Bias)?,
                bias_values: bv,
                formats,
            })
        })
        .collect()
}
