//! The trainer's side of the QAT schedule (`crate::schedule`): at env step `delay`,
//! freeze the observed ranges, derive the quantizers and switch every network's
//! scheduled classes. The switched state lives in the layers (formats, affine
//! quantizers), which checkpoints carry.

use crate::schedule::{derive_switch, MinMaxTable};

use super::{TrainError, Trainer};

impl Trainer {
    /// Whether the schedule switches at env step `step`.
    pub(super) fn schedule_switches_at(&self, step: u64) -> bool {
        self.cfg.schedule.switch_step() == Some(step)
    }

    /// Derives the quantizers from the ranges observed so far and switches the
    /// scheduled classes of every network (online and target); logs the result.
    pub(super) fn switch_schedule(&mut self) -> Result<(), TrainError> {
        let sched = self.cfg.schedule.clone();
        let mut ranges = MinMaxTable::new();
        for net in self.agent.networks() {
            for l in net.layers() {
                let m = ranges.entry(l.name().to_string()).or_default();
                for &c in &sched.classes {
                    m.insert(c, l.ranges()[c.index()].min_max);
                }
            }
        }
        let switch = derive_switch(&sched, self.st.step, &self.formats(), &ranges)?;
        for net in self.agent.networks_mut() {
            net.update_formats(|name, f| {
                if let Some(sw) = switch.get(name) {
                    *f = sw.formats;
                }
            });
            for l in net.layers_mut() {
                let Some(sw) = switch.get(l.name()) else {
                    continue;
                };
                for &(c, q) in &sw.affine {
                    l.set_affine(c, Some(q));
                }
                for &c in &sched.classes {
                    tracing::info!(
                        step = self.st.step,
                        layer = l.name(),
                        class = %c,
                        range = ?ranges[l.name()][&c].range(),
                        "schedule: {}",
                        l.cast_label(c)
                    );
                }
            }
        }
        Ok(())
    }
}
