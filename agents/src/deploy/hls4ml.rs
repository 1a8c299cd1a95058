//! The hand-off to hls4ml: the actor's per-layer precisions in hls4ml's own config
//! schema, its weights, and a script that builds the hls4ml model from them.
//!
//! `hls4ml_config.json` is the conversion config hls4ml documents (its YAML
//! configuration, here as JSON, which YAML reads too): `Backend`, `IOType`,
//! `ProjectName`, `OutputDir`, `InputShape`, and `HLSConfig` with `Model` (what
//! `hls4ml.utils.config_from_pytorch_model` writes: `Precision`, `ReuseFactor`,
//! `ChannelsLastConversion`, `Strategy`, ...) and `LayerName` -> layer -> `Precision` -> `weight`, `bias`,
//! `result` (and `accum`) as `ap_fixed<W,I,Q,O>` strings. The layers are named as the
//! PyTorch module `build_hls4ml.py` builds traces them: the input `obs`, the dense layers
//! `fc1`.. (result: our pre-activation format; accum: an accumulator wide enough that the
//! sum is exact, as in the golden GEMM), their activations `fc1_relu`.. (result: our
//! activation format).
//!
//! hls4ml has no layer for the action squashing `cast(tanh(z) * scale + offset)`: its
//! `fcN_tanh` is hls4ml's table tanh into our output format, and the scale and offset per
//! action (in `weights.safetensors` and the README) are applied after it. Every layer
//! before it is bit-exact with fixar's integer inference (`layers.txt` holds fixar's
//! codes per layer for the test vectors, which `build_hls4ml.py --check` compares with
//! hls4ml's C++ simulation).

use std::fmt::Write;

use serde_json::json;

use super::{AccSpec, DeployError, DeployedActor, TanhTable};
use crate::export::{ActivationFormats, LayerExport};
use crate::mlp::Activation;

/// The weights file of the export.
pub const WEIGHTS: &str = "weights.safetensors";

/// How the export's README says to build it.
pub const BUILD_LINE: &str = "\nBuild the hls4ml model (needs `pip install hls4ml torch safetensors pyyaml`) and check it against fixar's per-layer codes in hls4ml's C++ simulation:\n\n```sh\npython build_hls4ml.py --check\n```\n\nWithout `--check` it writes the HLS project to `OutputDir` of `hls4ml_config.json`.\n";

const SCRIPT: &str = include_str!("build_hls4ml.py");

/// The name hls4ml gives a layer: its module name in the traced PyTorch model (`fc1`
/// of `actor.fc1`).
pub fn layer_name(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

fn activation_name(a: &Activation) -> &'static str {
    match a {
        Activation::Relu => "relu",
        Activation::Identity => "identity",
        Activation::Tanh { .. } => "tanh",
    }
}

/// The hls4ml conversion config of `actor` (see the module docs).
pub fn config(actor: &DeployedActor) -> serde_json::Value {
    let mut layers = serde_json::Map::new();
    layers.insert(
        "obs".into(),
        json!({ "Precision": { "result": actor.input_fmt.to_string() } }),
    );
    let mut x = actor.input_fmt;
    for l in &actor.layers {
        let name = layer_name(&l.name);
        let acc = AccSpec::of(&x, l);
        layers.insert(
            name.into(),
            json!({ "Precision": {
                "weight": l.weight_fmt.to_string(),
                "bias": l.bias_fmt.to_string(),
                "result": l.preact_fmt.to_string(),
                "accum": format!("ap_fixed<{},{}>", acc.bits, acc.int_bits),
            }}),
        );
        layers.insert(
            format!("{name}_{}", activation_name(&l.activation)),
            json!({ "Precision": { "result": l.act_fmt.to_string() } }),
        );
        x = l.act_fmt;
    }
    json!({
        "Backend": "Vitis",
        "IOType": "io_parallel",
        "ProjectName": "fixar_actor",
        "OutputDir": "hls4ml_prj",
        "InputShape": [[actor.obs_dim()]],
        "HLSConfig": {
            // The keys hls4ml.utils.config_from_pytorch_model writes; without
            // ChannelsLastConversion hls4ml keeps torch's [out, in] weights as its [in, out].
            "Model": {
                "Precision": { "default": actor.input_fmt.to_string() },
                "ReuseFactor": 1,
                "ChannelsLastConversion": "full",
                "TransposeOutputs": false,
                "Strategy": "Latency",
                "BramFactor": 1_000_000_000,
                "TraceOutput": false,
            },
            "LayerName": layers,
        },
    })
}

/// The actor's layers as `weights.safetensors` holds them (values from the codes).
fn layer_exports(actor: &DeployedActor) -> Vec<LayerExport> {
    let mut input = actor.input_fmt;
    actor
        .layers
        .iter()
        .map(|l| {
            let values = |codes: &[i64], f| codes.iter().map(|&c| quant::to_f64(c, f)).collect();
            let (tanh_scale, tanh_offset) = match &l.activation {
                Activation::Tanh { scale, offset } => (scale.clone(), offset.clone()),
                _ => (Vec::new(), Vec::new()),
            };
            let formats = ActivationFormats {
                input: Some(input),
                preact: Some(l.preact_fmt),
                activation: Some(l.act_fmt),
            };
            input = l.act_fmt;
            LayerExport {
                name: l.name.clone(),
                in_dim: l.in_dim,
                out_dim: l.out_dim,
                activation: activation_name(&l.activation).into(),
                tanh_scale,
                tanh_offset,
                weight_format: Some(l.weight_fmt),
                weight_values: values(&l.weight, &l.weight_fmt),
                weight_codes: l.weight.clone(),
                bias_format: Some(l.bias_fmt),
                bias_values: values(&l.bias, &l.bias_fmt),
                bias_codes: l.bias.clone(),
                formats,
            }
        })
        .collect()
}

/// `weights.safetensors` of the actor (`crate::weights`' layout, network `actor`).
pub fn weights(actor: &DeployedActor) -> Result<Vec<u8>, DeployError> {
    let nets = [("actor".to_string(), layer_exports(actor))];
    let info = [("origin", actor.origin.clone())];
    Ok(crate::weights::layers_safetensors(&nets, &info)?)
}

/// `layers.txt`: per test vector and layer, fixar's pre-activation and activation codes,
/// one line each: `<vector> <layer> preact|activation <codes...>`.
fn layers_txt(actor: &DeployedActor, tables: &[Option<Vec<TanhTable>>], count: usize) -> String {
    let mut s = String::new();
    for (i, x) in super::test_inputs(actor, count, super::vectors::VECTOR_SEED)
        .iter()
        .enumerate()
    {
        for (l, (z, a)) in actor.layers.iter().zip(actor.infer_layers(x, tables)) {
            for (kind, codes) in [("preact", z), ("activation", a)] {
                let codes: Vec<String> = codes.iter().map(i64::to_string).collect();
                let _ = writeln!(s, "{i} {} {kind} {}", layer_name(&l.name), codes.join(" "));
            }
        }
    }
    s
}

/// The target's text files: the config, the build script and `layers.txt`.
pub fn sources(
    actor: &DeployedActor,
    tables: &[Option<Vec<TanhTable>>],
    vectors: usize,
) -> Vec<(&'static str, String)> {
    let config = serde_json::to_string_pretty(&config(actor)).expect("JSON of strings");
    vec![
        ("hls4ml_config.json", config + "\n"),
        ("build_hls4ml.py", SCRIPT.to_string()),
        ("layers.txt", layers_txt(actor, tables, vectors)),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::synthetic::synthetic_actor;
    use super::*;

    #[test]
    fn config_names_every_layer_with_its_formats_in_hls4mls_schema() {
        let actor = synthetic_actor(4);
        let c = config(&actor);
        let layers = c["HLSConfig"]["LayerName"].as_object().unwrap();
        assert_eq!(
            layers["obs"]["Precision"]["result"],
            actor.input_fmt.to_string()
        );
        let mut x = actor.input_fmt;
        for l in &actor.layers {
            let name = layer_name(&l.name);
            let p = &layers[name]["Precision"];
            assert_eq!(p["weight"], l.weight_fmt.to_string());
            assert_eq!(p["bias"], l.bias_fmt.to_string());
            assert_eq!(p["result"], l.preact_fmt.to_string());
            let acc: quant::FxFormat = p["accum"].as_str().unwrap().parse().unwrap();
            assert!(acc.frac_bits() >= l.weight_fmt.frac_bits() + x.frac_bits());
            assert!(acc.frac_bits() >= l.bias_fmt.frac_bits());
            let act = format!("{name}_{}", activation_name(&l.activation));
            assert_eq!(layers[&act]["Precision"]["result"], l.act_fmt.to_string());
            x = l.act_fmt;
        }
        assert_eq!(layers.len(), 1 + 2 * actor.layers.len());
        assert_eq!(c["InputShape"][0][0], actor.obs_dim());
    }
}
