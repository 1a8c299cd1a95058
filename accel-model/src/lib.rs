//! A model of FIXAR's adaptive-parallelism accelerator (Yang, Hong, Kim, DAC 2021):
//! throughput (IPS) and efficiency (IPS/W) of an actor-critic agent's training and
//! action inference on N AAP cores of configurable fixed-point PEs, for a chosen
//! parallelism setting, precision and FPGA.
//!
//! Two levels that must agree: [`analytic`] (closed-form cycles, for sweeps of hundreds
//! of thousands of design points a second) and [`sim`] (steps the PE array cycle by cycle
//! on raw integers with `quant`'s arithmetic; its outputs equal `quant::golden_gemm` bit
//! for bit and its cycles equal the analytic model's).
//!
//! Not for: training agents (that is `agents`), or timing a real FPGA. Pure Rust: this
//! crate never links libtorch (`quant` with default features off).
//!
//! ```
//! use accel_model::{estimate, presets, Workload, Precision};
//! let preset = presets::load("fixar-u50").unwrap();
//! let w = Workload::cleanrl_td3("Pendulum-v1", 3, 1, Precision::Fxp16);
//! let e = estimate(&w, &preset.hw).unwrap();
//! let perf = e.performance.expect("fits the U50");
//! assert!(perf.accelerator_training_ips > perf.system_training_ips);
//! assert!(perf.ips_per_watt > 0.0);
//! ```
//!
//! Definitions printed with every figure: [`ACCELERATOR_IPS_DEFINITION`],
//! [`SYSTEM_IPS_DEFINITION`] (and its alias [`TRAINING_IPS_DEFINITION`]),
//! [`INFERENCE_IPS_DEFINITION`], [`UTILIZATION_DEFINITION`], [`IPS_PER_WATT_DEFINITION`].

pub mod analytic;
pub mod error;
pub mod estimate;
pub mod host;
pub mod hw;
pub mod paper;
pub mod plan;
pub mod power;
pub mod presets;
pub mod resources;
pub mod shift_add;
pub mod sim;
mod sim_update;
pub mod study;
pub mod sweep;
pub mod workload;

pub use analytic::{ArrayGeom, Mapping};
pub use error::ModelError;
pub use estimate::{
    estimate, Estimate, Performance, PhaseReport, ACCELERATOR_IPS_DEFINITION,
    INFERENCE_IPS_DEFINITION, IPS_PER_WATT_DEFINITION, SYSTEM_IPS_DEFINITION,
    TRAINING_IPS_DEFINITION, UTILIZATION_DEFINITION,
};
pub use host::TimeStep;
pub use hw::{Device, HwConfig, IntraLayerSplit, Parallelism};
pub use plan::{Phase, Plan};
pub use power::PowerBreakdown;
pub use resources::{ComponentResources, Fit, Resources};
pub use shift_add::{PeComparison, PeSide};
pub use workload::{Algo, MacAccounting, Optimizer, Precision, Workload};
