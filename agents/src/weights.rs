//! `weights.safetensors` beside a seed's `checkpoint.bin`: the online networks' weights
//! (actor and critics, not the targets) in the safetensors format, for Python, PyTorch
//! and the hardware flows to load without fixar.
//!
//! Per layer `L` (`actor.fc1`, `critic1.fc3`, ...):
//! - `L.weight` `[out, in]` (`torch.nn.Linear`'s layout) and `L.bias` `[out]`: F64, the
//!   exact values the network computes with;
//! - `L.weight.codes`, `L.bias.codes`: the raw two's-complement codes of their formats
//!   (I32 when every code fits 32 bits, else I64): value = code * 2^-(W - I); absent for a
//!   class kept in float;
//! - for the tanh output layer `L.tanh_scale`, `L.tanh_offset` `[out]` (F32): the action
//!   is `cast(tanh(z) * scale + offset)`.
//!
//! The metadata (string to string) says per layer `L.activation` (`relu`, `tanh`,
//! `identity`) and the `ap_fixed` format (or `float`) of `L.input`, `L.weight`, `L.bias`,
//! `L.preact` (the one cast of the exact `x W^T + b`) and `L.activation.format`; and
//! `networks` (comma-separated), `<net>.layers`, `layout`, and what the caller adds
//! (algorithm, env, seed, step, precision).

use std::collections::HashMap;

use quant::FxFormat;
use safetensors::{Dtype, SafeTensorError};

use crate::dpg::Agent;
use crate::export::{export_network, ExportError, LayerExport};

/// Why the weights could not be written as safetensors.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("network `{network}`")]
    Export {
        network: String,
        #[source]
        source: ExportError,
    },
    #[error("safetensors")]
    Format(#[from] SafeTensorError),
}

/// What `layout` in the metadata says.
const LAYOUT: &str = "weight [out, in] as torch.nn.Linear; y = cast_preact(x W^T + b) summed \
    exactly, then the activation cast; codes: value = code * 2^-(W-I) of the ap_fixed<W,I> \
    format in '<tensor>.format'";

fn format_name(f: Option<FxFormat>) -> String {
    f.map_or("float".into(), |f| f.to_string())
}

/// One tensor's dtype, shape and little-endian bytes.
struct Owned {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Owned {
    fn f64s(shape: Vec<usize>, v: &[f64]) -> Self {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Owned {
            dtype: Dtype::F64,
            shape,
            bytes,
        }
    }

    fn f32s(v: &[f32]) -> Self {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Owned {
            dtype: Dtype::F32,
            shape: vec![v.len()],
            bytes,
        }
    }

    /// I32 when every code fits, else I64.
    fn codes(shape: Vec<usize>, v: &[i64]) -> Self {
        if v.iter().all(|&c| i32::try_from(c).is_ok()) {
            let bytes = v.iter().flat_map(|&c| (c as i32).to_le_bytes()).collect();
            Owned {
                dtype: Dtype::I32,
                shape,
                bytes,
            }
        } else {
            let bytes = v.iter().flat_map(|c| c.to_le_bytes()).collect();
            Owned {
                dtype: Dtype::I64,
                shape,
                bytes,
            }
        }
    }
}

/// Row-major `rows x cols` to row-major `cols x rows`.
fn transpose<T: Copy>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| v[r * cols + c]))
        .collect()
}

/// The safetensors file of `agent`'s online networks, with `info` added to the metadata.
pub fn safetensors_bytes(
    agent: &dyn Agent,
    info: &[(&str, String)],
) -> Result<Vec<u8>, WeightsError> {
    let mut nets = Vec::new();
    for net in agent.networks() {
        if net.name().ends_with("_target") {
            continue;
        }
        let layers = export_network(net).map_err(|source| WeightsError::Export {
            network: net.name().to_string(),
            source,
        })?;
        nets.push((net.name().to_string(), layers));
    }
    Ok(layers_safetensors(&nets, info)?)
}

/// The safetensors file of exported networks (name, layers), with `info` added to the
/// metadata (see the module docs).
pub fn layers_safetensors(
    nets: &[(String, Vec<LayerExport>)],
    info: &[(&str, String)],
) -> Result<Vec<u8>, SafeTensorError> {
    let mut tensors: Vec<(String, Owned)> = Vec::new();
    let mut meta: HashMap<String, String> = info
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    meta.insert("layout".into(), LAYOUT.into());
    let mut networks = Vec::new();
    for (net, layers) in nets {
        networks.push(net.clone());
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        meta.insert(format!("{net}.layers"), names.join(","));
        for l in layers {
            let n = &l.name;
            let (rows, cols) = (l.in_dim, l.out_dim);
            let shape = vec![cols, rows];
            tensors.push((
                format!("{n}.weight"),
                Owned::f64s(shape.clone(), &transpose(&l.weight_values, rows, cols)),
            ));
            tensors.push((format!("{n}.bias"), Owned::f64s(vec![cols], &l.bias_values)));
            if l.weight_format.is_some() {
                let codes = transpose(&l.weight_codes, rows, cols);
                tensors.push((format!("{n}.weight.codes"), Owned::codes(shape, &codes)));
            }
            if l.bias_format.is_some() {
                let codes = Owned::codes(vec![cols], &l.bias_codes);
                tensors.push((format!("{n}.bias.codes"), codes));
            }
            if l.activation == "tanh" {
                tensors.push((format!("{n}.tanh_scale"), Owned::f32s(&l.tanh_scale)));
                tensors.push((format!("{n}.tanh_offset"), Owned::f32s(&l.tanh_offset)));
            }
            meta.insert(format!("{n}.activation"), l.activation.clone());
            for (class, f) in [
                ("input", l.formats.input),
                ("weight", l.weight_format),
                ("bias", l.bias_format),
                ("preact", l.formats.preact),
                ("activation", l.formats.activation),
            ] {
                meta.insert(format!("{n}.{class}.format"), format_name(f));
            }
        }
    }
    meta.insert("networks".into(), networks.join(","));
    let views = tensors
        .iter()
        .map(|(name, t)| {
            let view = safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes)?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>, SafeTensorError>>()?;
    safetensors::tensor::serialize(views, Some(meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;
    use crate::precision::Preset;

    #[test]
    fn holds_every_online_layer_with_codes_that_equal_the_values() {
        let cfg = TrainConfig {
            hidden: vec![8, 4],
            precision: Preset::Fxp16,
            ..Default::default()
        };
        let env = envs::make(&cfg.env_id).unwrap();
        let agent =
            crate::trainer::build_agent(&cfg, env.observation_space(), env.action_space(), 3);
        let bytes = safetensors_bytes(agent.as_ref(), &[("seed", "3".into())]).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().as_ref().unwrap();
        assert_eq!(meta["networks"], "actor,critic1,critic2");
        assert_eq!(meta["seed"], "3");
        assert_eq!(meta["actor.fc3.activation"], "tanh");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let obs = env.observation_space().low.len();
        let w = st.tensor("actor.fc1.weight").unwrap();
        assert_eq!((w.dtype(), w.shape()), (Dtype::F64, &[8, obs][..]));
        let c = st.tensor("actor.fc1.weight.codes").unwrap();
        assert_eq!((c.dtype(), c.shape()), (Dtype::I32, &[8, obs][..]));
        let f: FxFormat = meta["actor.fc1.weight.format"].parse().unwrap();
        for (v, c) in w.data().chunks(8).zip(c.data().chunks(4)) {
            let v = f64::from_le_bytes(v.try_into().unwrap());
            let c = i32::from_le_bytes(c.try_into().unwrap());
            assert_eq!(quant::to_f64(c as i64, &f), v);
        }
        assert!(st.tensor("actor_target.fc1.weight").is_err());
        assert_eq!(st.tensor("critic2.fc3.bias.codes").unwrap().shape(), &[1]);
    }
}
