//! The simulator's update engine: steps the weight memory's port through a parameter
//! pass cycle by cycle. Each beat of `port_bits / 32` weight words is read, goes through
//! the update pipeline (optimizer or soft-update arithmetic, [`UPDATE_PIPELINE`] cycles)
//! and is written back; the port does one access a cycle, reads first while the FIFO of
//! beats in flight has room, writes of finished beats otherwise. Cycles while the
//! network's weight-gradient GEMMs stream (`window`) are free port cycles, so the pass
//! hides there and only the rest is exposed.

use std::collections::VecDeque;

/// Cycles from a beat's read to its result being ready to write.
pub const UPDATE_PIPELINE: u64 = 8;
/// Beats in flight between their read and their write.
const FIFO: u64 = UPDATE_PIPELINE + 1;

/// What stepping one pass produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PassRun {
    /// Port accesses (busy cycles).
    pub port_cycles: u64,
    /// Cycles from the first read to the last write.
    pub elapsed_cycles: u64,
    /// Of `elapsed_cycles`, those after the window.
    pub exposed_cycles: u64,
}

/// Steps a pass of `reads` beat reads, each written back once, consuming `window`.
pub(crate) fn run_pass(reads: u64, window: &mut u64) -> PassRun {
    let (mut done_reads, mut writes) = (0u64, 0u64);
    let mut ready: VecDeque<u64> = VecDeque::new();
    let mut cycle = 0u64;
    let mut busy = 0u64;
    while writes < reads {
        if done_reads < reads && done_reads - writes < FIFO {
            ready.push_back(cycle + UPDATE_PIPELINE);
            done_reads += 1;
            busy += 1;
        } else if ready.front().is_some_and(|&r| r <= cycle) {
            ready.pop_front();
            writes += 1;
            busy += 1;
        }
        cycle += 1;
    }
    let hidden = cycle.min(*window);
    *window -= hidden;
    PassRun {
        port_cycles: busy,
        elapsed_cycles: cycle,
        exposed_cycles: cycle - hidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_pass_keeps_the_port_busy_every_cycle_and_a_short_one_waits_for_the_pipeline() {
        for reads in [1u64, 2, 7, 8, 9, 10, 17, 100, 1001] {
            let mut w = 0;
            let r = run_pass(reads, &mut w);
            assert_eq!(r.port_cycles, 2 * reads);
            assert_eq!(
                r.elapsed_cycles,
                (2 * reads).max(reads + UPDATE_PIPELINE),
                "{reads}"
            );
            assert_eq!(r.exposed_cycles, r.elapsed_cycles);
        }
    }

    #[test]
    fn a_window_hides_the_pass_up_to_its_length_and_is_consumed() {
        let mut w = 150;
        let r = run_pass(100, &mut w);
        assert_eq!((r.exposed_cycles, w), (50, 0));
        let mut w = 500;
        let r = run_pass(200, &mut w);
        assert_eq!((r.exposed_cycles, w), (0, 100));
    }
}
