//! Built-in hardware presets and the device table, embedded from `accel-model/presets/`
//! so the binary works from any directory; user TOML files in the same format (optionally
//! `base = "<preset>"` to override a few fields of a built-in one).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::hw::{
    Buffers, Device, HostParams, HwConfig, IntraLayerSplit, OptimizerMemory, Parallelism,
    PowerParams, ResourceCosts, WeightMemory,
};
use crate::resources::ComponentResources;
use crate::workload::Workload;

const DEVICES: &str = include_str!("../presets/devices.toml");

/// (name, TOML text) of every built-in preset.
const PRESETS: &[(&str, &str)] = &[
    ("fixar-u50", include_str!("../presets/fixar-u50.toml")),
    (
        "cleanrl-td3-u50",
        include_str!("../presets/cleanrl-td3-u50.toml"),
    ),
    ("zcu102", include_str!("../presets/zcu102.toml")),
    ("ultra96-v2", include_str!("../presets/ultra96-v2.toml")),
];

/// The published figures a preset is compared with (never an input to the model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub source: String,
    /// Accelerator-only training IPS, the same at every batch in `batches`.
    pub accelerator_training_ips: f64,
    pub batches: Vec<usize>,
    /// System training IPS at `headline_batch`.
    pub system_training_ips: f64,
    pub headline_batch: usize,
    /// The system's speed-up over the CPU-GPU system across batch sizes (low, high).
    pub speedup_vs_cpu_gpu: [f64; 2],
    pub training_utilization: f64,
    pub power_w: f64,
    pub ips_per_watt: f64,
    /// The "peak performance" a comparison table lists for the design.
    pub table_peak_ips: f64,
    /// Resources per component and the total (`name = "total"`).
    pub resources: Vec<ComponentResources>,
}

/// A loaded preset: the hardware, the workload it comes with (if any), and why each
/// assumed number is what it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    pub description: String,
    pub hw: HwConfig,
    pub workload: Option<Workload>,
    /// Parameter -> the reason for its value.
    pub assumptions: BTreeMap<String, String>,
    /// Parameter -> the one published figure it is fitted to (and how).
    pub fitted: BTreeMap<String, String>,
    pub reference: Option<Reference>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresetFile {
    #[serde(default)]
    #[allow(dead_code)]
    base: Option<String>,
    name: String,
    description: String,
    device: String,
    cores: usize,
    pe_rows: usize,
    pe_cols: usize,
    clock_mhz: f64,
    parallelism: Parallelism,
    #[serde(default)]
    intra_layer_split: IntraLayerSplit,
    #[serde(default)]
    offchip_gbps: Option<f64>,
    weight_memory: WeightMemory,
    optimizer_memory: OptimizerMemory,
    buffers: Buffers,
    power: PowerParams,
    resources: ResourceCosts,
    host: HostParams,
    #[serde(default)]
    workload: Option<Workload>,
    #[serde(default)]
    assumptions: BTreeMap<String, String>,
    #[serde(default)]
    fitted: BTreeMap<String, String>,
    #[serde(default)]
    reference: Option<Reference>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFile {
    device: Vec<Device>,
}

fn parse_value(text: &str, origin: &str) -> Result<toml::Value, ModelError> {
    let v: toml::Value = toml::from_str(text).map_err(|e| ModelError::Parse {
        origin: origin.to_string(),
        message: e.to_string(),
    })?;
    reject_negative(&v, "")?;
    Ok(v)
}

/// Negative integers would otherwise surface as serde's "expected usize"; name the key.
fn reject_negative(v: &toml::Value, path: &str) -> Result<(), ModelError> {
    match v {
        toml::Value::Integer(i) if *i < 0 => {
            Err(ModelError::invalid(path, i, "must not be negative"))
        }
        toml::Value::Table(t) => {
            for (k, x) in t {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                reject_negative(x, &p)?;
            }
            Ok(())
        }
        toml::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                reject_negative(x, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Every device in the embedded table.
pub fn devices() -> Vec<Device> {
    let v = parse_value(DEVICES, "presets/devices.toml").expect("embedded device table parses");
    let f: DeviceFile = v.try_into().expect("embedded device table matches Device");
    f.device
}

/// The device with this id (`alveo-u50`, `zcu102`, `ultra96-v2`).
pub fn device(id: &str) -> Result<Device, ModelError> {
    let all = devices();
    let names = all
        .iter()
        .map(|d| d.id.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    all.iter()
        .find(|d| d.id == id)
        .cloned()
        .ok_or_else(|| ModelError::UnknownDevice(id.to_string(), names))
}

/// Names of the built-in presets.
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}

fn builtin_value(name: &str) -> Result<toml::Value, ModelError> {
    let text = PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| ModelError::UnknownPreset(name.to_string(), preset_names().join(", ")))?;
    parse_value(text, &format!("presets/{name}.toml"))
}

/// Overlays `over` on `base`, table by table.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Parses a preset document; `base = "<built-in>"` fills the fields it does not set.
pub fn parse(text: &str, origin: &str) -> Result<Preset, ModelError> {
    let mut v = parse_value(text, origin)?;
    if let Some(base) = v.get("base").and_then(|b| b.as_str()).map(str::to_string) {
        let mut b = builtin_value(&base)?;
        // The base's reference figures and reasons belong to the base, not to a modified copy.
        if let Some(t) = b.as_table_mut() {
            t.remove("reference");
            t.remove("assumptions");
            t.remove("fitted");
        }
        merge(&mut b, v);
        v = b;
    }
    let f: PresetFile = v
        .try_into()
        .map_err(|e: toml::de::Error| ModelError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
    let device = device(&f.device)?;
    let hw = HwConfig {
        name: f.name,
        offchip_gbps: f.offchip_gbps.unwrap_or(device.offchip_gbps),
        device,
        cores: f.cores,
        pe_rows: f.pe_rows,
        pe_cols: f.pe_cols,
        clock_mhz: f.clock_mhz,
        parallelism: f.parallelism,
        intra_layer_split: f.intra_layer_split,
        weight_memory: f.weight_memory,
        optimizer_memory: f.optimizer_memory,
        buffers: f.buffers,
        power: f.power,
        resources: f.resources,
        host: f.host,
    };
    hw.validate()?;
    if let Some(w) = &f.workload {
        w.validate()?;
    }
    Ok(Preset {
        description: f.description,
        hw,
        workload: f.workload,
        assumptions: f.assumptions,
        fitted: f.fitted,
        reference: f.reference,
    })
}

/// A built-in preset by name, or a TOML file by path.
pub fn load(name_or_path: &str) -> Result<Preset, ModelError> {
    if let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == name_or_path) {
        return parse(text, &format!("presets/{name_or_path}.toml"));
    }
    let path = std::path::Path::new(name_or_path);
    if path.extension().is_some_and(|e| e == "toml") || path.exists() {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Parse {
            origin: name_or_path.to_string(),
            message: e.to_string(),
        })?;
        return parse(&text, name_or_path);
    }
    Err(ModelError::UnknownPreset(
        name_or_path.to_string(),
        preset_names().join(", "),
    ))
}
