//! The trained actor as integer hardware needs it: per layer, weights and biases as raw
//! two's-complement codes with their `FxFormat`s, and the input, pre-activation and
//! activation formats of the datapath.

use quant::FxFormat;
use serde::Serialize;
use tch::Kind;

use crate::mlp::{Activation, Mlp};
use crate::precision::TensorClass;

/// One layer of an exported network. `weight_codes` is row-major (in x out): the code of
/// W[i][j] at `i * out_dim + j`. Codes are empty for a class kept in float; the
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
    let mut input = net.layers[0].formats.get(TensorClass::Input);
    net.layers
        .iter()
        .map(|l| {
            let f = ActivationFormats {
                input,
                preact: l.formats.get(TensorClass::Preact),
                activation: l.formats.get(TensorClass::Activation),
            };
            input = f.activation;
            (l.name.clone(), f)
        })
        .collect()
}

fn codes(values: &[f64], fmt: Option<FxFormat>, what: &str) -> Result<Vec<i64>, String> {
    let Some(f) = fmt else { return Ok(Vec::new()) };
    values
        .iter()
        .map(|&v| {
            let raw = quant::from_f64(v, &f).map_err(|e| format!("{what}: {e}"))?;
            // Stored values are on the grid, so the code must give them back exactly.
            if quant::to_f64(raw, &f) != v {
                return Err(format!("{what}: value {v} is not on the grid of {f}"));
            }
            Ok(raw)
        })
        .collect()
}

/// Exports every layer of `net` (normally the trained actor: `agent.actor()`).
pub fn export_network(net: &Mlp) -> Result<Vec<LayerExport>, String> {
    let acts = activation_formats(net);
    net.layers
        .iter()
        .zip(acts)
        .map(|(l, (_, formats))| {
            let to_vec = |t: &tch::Tensor| -> Vec<f64> {
                Vec::try_from(t.detach().to_kind(Kind::Double).contiguous().view([-1]))
                    .expect("float tensor")
            };
            let (wv, bv) = (to_vec(l.weight()), to_vec(l.bias()));
            let (wf, bf) = (
                l.formats.get(TensorClass::Weight),
                l.formats.get(TensorClass::Bias),
            );
            let (activation, tanh_scale, tanh_offset) = match &l.activation {
                Activation::Relu => ("relu", vec![], vec![]),
                Activation::Identity => ("identity", vec![], vec![]),
                Activation::Tanh { scale, offset } => ("tanh", scale.clone(), offset.clone()),
            };
            Ok(LayerExport {
                name: l.name.clone(),
                in_dim: l.in_dim,
                out_dim: l.out_dim,
                activation: activation.into(),
                tanh_scale,
                tanh_offset,
                weight_format: wf,
                weight_codes: codes(&wv, wf, &format!("{} weights", l.name))?,
                weight_values: wv,
                bias_format: bf,
                bias_codes: codes(&bv, bf, &format!("{} biases", l.name))?,
                bias_values: bv,
                formats,
            })
        })
        .collect()
}
