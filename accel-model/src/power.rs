//! Card power from the bottom up: the FPGA's static power, the off-chip memory and host
//! link powered on, the board's own consumers, clocked logic (LUTs and FFs at the clock),
//! and the events of an iteration (MACs, on-chip words, off-chip bytes), all drawn
//! through the board's regulators. What a board utility (`xbutil`) reads for the card.

use serde::{Deserialize, Serialize};

use crate::hw::HwConfig;

/// Where a card's power goes, W.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PowerBreakdown {
    pub fpga_static_w: f64,
    pub memory_w: f64,
    pub host_link_w: f64,
    pub board_w: f64,
    /// LUTs and FFs toggling at the clock (with routing and clock tree).
    pub logic_w: f64,
    /// MACs, on-chip RAM words and off-chip bytes of the work, averaged over its time.
    pub activity_w: f64,
    /// Lost in the board's regulators.
    pub regulator_w: f64,
    pub total_w: f64,
}

/// Average card power of a design with `(luts, ffs)` while the accelerator does `event_j`
/// of dynamic work in `seconds`.
pub fn card_power(hw: &HwConfig, logic: (u64, u64), event_j: f64, seconds: f64) -> PowerBreakdown {
    let p = &hw.power;
    let (lut, ff) = logic;
    let logic_w =
        1e-6 * hw.clock_mhz * (lut as f64 * p.lut_uw_per_mhz + ff as f64 * p.ff_uw_per_mhz);
    let activity_w = if seconds > 0.0 {
        event_j / seconds
    } else {
        0.0
    };
    let delivered = p.fpga_static_w + p.memory_w + p.host_link_w + p.board_w + logic_w + activity_w;
    let total_w = delivered / p.regulator_efficiency;
    PowerBreakdown {
        fpga_static_w: p.fpga_static_w,
        memory_w: p.memory_w,
        host_link_w: p.host_link_w,
        board_w: p.board_w,
        logic_w,
        activity_w,
        regulator_w: total_w - delivered,
        total_w,
    }
}
