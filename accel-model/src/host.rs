//! The system around the accelerator: one training time step on the host (the
//! environment on the CPU, the accelerator runtime's per-batch overhead, the batch's
//! transfer over the host link) and on the card (action inference and one training
//! iteration), one after the other, as FIXAR's time breakdown (its Fig. 10) describes.

use serde::{Deserialize, Serialize};

use crate::hw::HwConfig;

/// One time step, s.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeStep {
    /// Environment step on the CPU.
    pub env_s: f64,
    /// The runtime's fixed per-batch overhead (buffer allocation, launch, synchronisation).
    pub runtime_s: f64,
    /// The replay batch over the host link.
    pub link_s: f64,
    /// Action inference and the training iteration on the accelerator.
    pub accelerator_s: f64,
    pub total_s: f64,
}

/// The time step around an accelerator iteration of `accelerator_s` that trains on a
/// batch of `batch_bytes`.
pub fn time_step(hw: &HwConfig, batch_bytes: u64, accelerator_s: f64) -> TimeStep {
    let h = &hw.host;
    let env_s = 1e-3 * h.env_ms;
    let runtime_s = 1e-3 * h.runtime_ms;
    let link_s = batch_bytes as f64 / (h.link_gbps * 1e9);
    TimeStep {
        env_s,
        runtime_s,
        link_s,
        accelerator_s,
        total_s: env_s + runtime_s + link_s + accelerator_s,
    }
}
