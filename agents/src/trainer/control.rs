//! The verbs the QAT ladder, export and benches use on a trainer: read its formats
//! and ranges, set formats, reset the range observers, switch the training mode or the
//! learning rate, train a number of steps, project the actor's weights onto
//! multiplier-free codes. Callers outside this crate change a trainer only through
//! these, so the trainer keeps its invariants (a format change recasts the stored
//! weights; a checkpoint records whatever the verbs changed).

use crate::dpg::Agent;
use crate::optim::OptimizerConfig;
use crate::pow2::{MultiplierCount, Pow2Codebook, Pow2Error};
use crate::precision::{FormatTable, RangeTable, TensorClass, TrainMode};
use crate::qat::ObserverKind;

use super::{TrainError, Trainer};
use crate::config::TrainConfig;

impl Trainer {
    /// Makes [`Trainer::run`] stop at the next episode boundary once `flag` is set
    /// (e.g. by a SIGUSR1 handler when a cluster preempts the job): it writes a
    /// checkpoint there and returns `Ok(None)`, so a resume continues exactly where it
    /// stopped and equals an uninterrupted run.
    pub fn stop_when(&mut self, flag: &'static std::sync::atomic::AtomicBool) {
        self.stop = Some(flag);
    }

    /// The run's configuration (as the checkpoint records it).
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The run seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The agent, read only (its networks, layers, formats, statistics).
    pub fn agent(&self) -> &dyn Agent {
        self.agent.as_ref()
    }

    /// The deterministic action of the current policy (no exploration noise).
    pub fn act(&mut self, obs: &[f32], action: &mut [f32]) {
        self.agent.act(obs, action);
    }

    /// Every layer's formats over all networks (online and target), by layer name.
    pub fn formats(&self) -> FormatTable {
        self.agent
            .networks()
            .iter()
            .flat_map(|n| {
                n.layers()
                    .iter()
                    .map(|l| (l.name().to_string(), *l.formats()))
            })
            .collect()
    }

    /// Sets the formats of every layer named in `table` (stored weights are recast).
    /// A learned binary point keeps its integer bits (`Mlp::update_formats`), and a
    /// target network keeps its online network's learned formats.
    pub fn set_formats(&mut self, table: &FormatTable) {
        for net in self.agent.networks_mut() {
            net.update_formats(|name, f| {
                if let Some(new) = table.get(name) {
                    *f = *new;
                }
            });
        }
        self.sync_learned_targets();
    }

    /// The observed range of every layer and class by observer `kind` (0 = never
    /// observed). A target network sees only the forward of its predictions; where it
    /// observed nothing, its online twin's range stands in (their weights track each
    /// other).
    pub fn ranges(&self, kind: ObserverKind) -> RangeTable {
        let mut out = RangeTable::new();
        for net in self.agent.networks() {
            for l in net.layers() {
                let m = out.entry(l.name().to_string()).or_default();
                for c in TensorClass::ALL {
                    let r = &l.ranges()[c.index()];
                    let v = match kind {
                        ObserverKind::Max => r.max_abs.range(),
                        ObserverKind::Ema => r.ema.range(),
                        ObserverKind::P999 => r.percentile.range(),
                    };
                    m.insert(c, v);
                }
            }
        }
        let names: Vec<String> = out.keys().cloned().collect();
        for name in names {
            let Some((net, layer)) = name.split_once('.') else {
                continue;
            };
            let Some(online) = net.strip_suffix("_target") else {
                continue;
            };
            if let Some(src) = out.get(&format!("{online}.{layer}")).cloned() {
                let dst = out.get_mut(&name).expect("present");
                for (c, v) in dst.iter_mut() {
                    if *v == 0.0 {
                        *v = src.get(c).copied().unwrap_or(0.0);
                    }
                }
            }
        }
        out
    }

    /// Fresh range observers on every layer, fed on every update from now on.
    pub fn reset_range_observers(&mut self) {
        for net in self.agent.networks_mut() {
            net.reset_ranges();
        }
        self.cfg.range_every = 1;
    }

    /// Feed the range observers on every `every`-th update (0 = never).
    pub fn set_range_every(&mut self, every: u64) {
        self.cfg.range_every = every;
    }

    /// Trains `steps` more env steps with no evaluation and no checkpoint on the way
    /// (the config's `total_timesteps` moves to the new end).
    pub fn train_steps(&mut self, steps: u64) -> Result<(), TrainError> {
        self.cfg.total_timesteps = self.step() + steps;
        self.cfg.eval_every = u64::MAX;
        self.cfg.checkpoint_every = u64::MAX / 2;
        self.run(None, &mut |_| {})?;
        Ok(())
    }

    /// Switches every network's training mode (and the config, so checkpoints carry
    /// it): `Qat` keeps a float master copy; `Fixed` rounds it onto the formats.
    pub fn set_mode(&mut self, mode: TrainMode) {
        if self.cfg.mode == mode {
            return;
        }
        self.cfg.mode = mode;
        for net in self.agent.networks_mut() {
            let g = net.gemm();
            net.set_numerics(g, mode);
        }
    }

    /// One learning rate for every network from now on.
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.cfg.learning_rate = lr;
        self.cfg.actor_learning_rate = None;
        self.cfg.critic_learning_rate = None;
        for net in self.agent.networks_mut() {
            if let Some(opt) = net.optimizer_mut() {
                match &mut opt.config {
                    OptimizerConfig::Adam { lr: l, .. } | OptimizerConfig::Sgd { lr: l, .. } => {
                        *l = lr
                    }
                }
            }
        }
    }

    /// Projects the actor's weights onto the nearest codes of their format with at most
    /// `k` signed powers of two (`crate::pow2`); returns the actor's multiplier count
    /// (layers without a fixed-point weight format keep their multiplications).
    pub fn project_actor_pow2(&mut self, k: u32) -> Result<MultiplierCount, Pow2Error> {
        let actor = self.agent.actor_mut();
        let mut total = MultiplierCount::default();
        let _g = tch::no_grad_guard();
        for l in actor.layers() {
            let n = (l.in_dim() * l.out_dim()) as u64;
            match l.formats().get(TensorClass::Weight) {
                Some(f) => {
                    let book = Pow2Codebook::new(&f, k).map_err(|e| e.in_layer(l.name()))?;
                    let (p, c) = book.project_tensor(l.weight());
                    l.weight().shallow_clone().copy_(&p);
                    total.merge(&c);
                }
                None => total.merge(&MultiplierCount::dense(n)),
            }
        }
        let flat = actor.params().copy();
        actor.load_params(&flat);
        Ok(total)
    }
}

/// The online network a target network (`<name>_target`) follows.
fn online_of(target: &str) -> Option<&str> {
    target.strip_suffix("_target")
}

impl Trainer {
    /// Starts learning the binary points of every online network's fixed-point casts
    /// (`crate::learned_point`) at their current formats, stepped by Adam with step `lr`
    /// on every update of QAT-mode training; the target networks follow. Points that
    /// already exist (a later rung, a resumed run) are kept as they are: returns whether
    /// any network started fresh. `metrics.csv` gains one column per point
    /// (`<layer>.<class>.int_bits`, the continuous `s`), empty on the rows before.
    pub fn learn_binary_points(&mut self, lr: f64) -> Result<bool, TrainError> {
        let mut fresh = false;
        for net in self.agent.networks_mut() {
            if net.optimizer().is_some() {
                fresh |= net.learn_binary_points(lr);
            }
        }
        self.sync_learned_targets();
        if fresh {
            let header = self.metrics_header();
            self.rec.widen(super::record::METRICS, &header)?;
        }
        Ok(fresh)
    }

    /// Every target network takes its online network's learned formats.
    pub(super) fn sync_learned_targets(&mut self) {
        let mut nets = self.agent.networks_mut();
        for i in 0..nets.len() {
            let Some(online) = online_of(nets[i].name()).map(str::to_string) else {
                continue;
            };
            let Some(j) = nets.iter().position(|n| n.name() == online) else {
                continue;
            };
            let (a, b) = nets.split_at_mut(i.max(j));
            let (target, src) = if i > j {
                (&mut *b[0], &*a[j])
            } else {
                (&mut *a[i], &*b[0])
            };
            target.follow_learned(src);
        }
    }

    /// Every learned binary point: (layer name, class, continuous integer bits `s`), in
    /// network then layer order (empty when none is learned).
    pub fn learned_points(&self) -> Vec<(String, TensorClass, f64)> {
        let mut out = Vec::new();
        for net in self.agent.networks() {
            if let Some(lp) = net.learned_points() {
                for p in &lp.points {
                    let name = net.layers()[p.layer].name().to_string();
                    out.push((name, p.class, p.s));
                }
            }
        }
        out
    }
}
