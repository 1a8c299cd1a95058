//! Building an agent from a config, and saving and restoring its whole state
//! (parameters, formats, optimizer state, stochastic-rounding sources, cast statistics,
//! range observers, the QAT schedule's affine quantizers, learned binary points) in a
//! checkpoint.

use envs::BoxSpace;
use quant::tensor::QuantStats;
use quant::AffineQuantizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{derive_seed, SALT_INIT, SALT_QUANT};
use crate::checkpoint::{CheckpointError, CheckpointReader, CheckpointWriter};
use crate::config::{Algo, TrainConfig};
use crate::ddpg::{Ddpg, DdpgParams};
use crate::dpg::{Agent, NetSpec};
use crate::learned_point::LearnedPoints;
use crate::mlp::RangeTrack;
use crate::precision::{LayerFormats, TensorClass};
use crate::td3::{Td3, Td3Params};

/// Builds the agent a config describes, for `env`'s spaces, with weights from `seed`.
pub fn build_agent(cfg: &TrainConfig, obs: &BoxSpace, act: &BoxSpace, seed: u64) -> Box<dyn Agent> {
    let spec = net_spec(cfg, obs, act);
    let precision = cfg.precision_spec();
    let mut init = ChaCha8Rng::seed_from_u64(derive_seed(seed, SALT_INIT, 0));
    let qseed = derive_seed(seed, SALT_QUANT, 0);
    match cfg.algo {
        Algo::Td3 => {
            let p = Td3Params {
                gamma: cfg.gamma,
                tau: cfg.tau,
                policy_noise: cfg.policy_noise,
                noise_clip: cfg.noise_clip,
                policy_frequency: cfg.policy_frequency,
            };
            Box::new(Td3::new(&spec, p, &precision, &mut init, qseed))
        }
        Algo::Ddpg => {
            let p = DdpgParams {
                gamma: cfg.gamma,
                tau: cfg.tau,
                policy_frequency: cfg.policy_frequency,
            };
            Box::new(Ddpg::new(&spec, p, &precision, &mut init, qseed))
        }
    }
}

fn net_spec(cfg: &TrainConfig, obs: &BoxSpace, act: &BoxSpace) -> NetSpec {
    NetSpec {
        obs_dim: obs.low.len(),
        act_dim: act.low.len(),
        hidden: cfg.hidden.clone(),
        action_low: act.low.clone(),
        action_high: act.high.clone(),
        actor_optimizer: cfg.actor_optimizer(),
        critic_optimizer: cfg.critic_optimizer(),
    }
}

/// Writes every network (parameters, formats, optimizer state, stochastic-rounding
/// source, cast statistics, range observers) and the update counter.
pub fn save_agent(agent: &dyn Agent, w: &mut CheckpointWriter) -> Result<(), CheckpointError> {
    w.meta("agent.algo", agent.algo())?;
    w.meta("agent.updates", agent.updates())?;
    for net in agent.networks() {
        let p = format!("net.{}", net.name());
        w.tensor(&format!("{p}.params"), net.params())?;
        w.meta(&format!("{p}.source"), net.stochastic_source())?;
        let formats: Vec<Vec<String>> = net
            .layers()
            .iter()
            .map(|l| l.formats().to_strings())
            .collect();
        w.meta(&format!("{p}.formats"), formats)?;
        let stats: Vec<[QuantStats; 9]> = net.layers().iter().map(|l| *l.stats()).collect();
        w.meta(&format!("{p}.stats"), stats)?;
        let ranges: Vec<&[RangeTrack; 9]> = net.layers().iter().map(|l| l.ranges()).collect();
        w.meta(&format!("{p}.ranges"), ranges)?;
        // The QAT schedule's affine quantizers per layer and class (format version 3).
        let affine: Vec<Vec<Option<&AffineQuantizer>>> = net
            .layers()
            .iter()
            .map(|l| TensorClass::ALL.iter().map(|&c| l.affine(c)).collect())
            .collect();
        w.meta(&format!("{p}.affine"), affine)?;
        // Learned binary points (QAT's `learned` strategy), when the network has them.
        if let Some(lp) = net.learned_points() {
            w.meta(&format!("{p}.learned"), lp)?;
        }
        if let Some(opt) = net.optimizer() {
            w.meta(&format!("{p}.opt.t"), opt.t)?;
            w.tensor(&format!("{p}.opt.m"), opt.first_moment())?;
            w.tensor(&format!("{p}.opt.s"), opt.root_second_moment())?;
        }
    }
    Ok(())
}

/// Restores what `save_agent` wrote into an agent built from the same config.
pub fn load_agent(agent: &mut dyn Agent, r: &CheckpointReader) -> Result<(), CheckpointError> {
    let algo: String = r.meta("agent.algo")?;
    if algo != agent.algo() {
        return Err(CheckpointError::Mismatch(format!(
            "checkpoint holds a {algo} agent, the config a {}",
            agent.algo()
        )));
    }
    agent.set_updates(r.meta("agent.updates")?);
    for net in agent.networks_mut() {
        let net_name = net.name().to_string();
        let p = format!("net.{net_name}");
        let formats: Vec<Vec<String>> = r.meta(&format!("{p}.formats"))?;
        if formats.len() != net.layers().len() {
            return Err(CheckpointError::Mismatch(format!(
                "checkpoint network `{}` has {} layers, expected {}",
                net.name(),
                formats.len(),
                net.layers().len()
            )));
        }
        let mut parsed = Vec::new();
        for layer in &formats {
            parsed.push(LayerFormats::from_strings(layer).map_err(|e| {
                CheckpointError::Mismatch(format!("network `{}`: {e}", net.name()))
            })?);
        }
        let mut it = parsed.into_iter();
        net.update_formats(|_, f| *f = it.next().expect("one format set per layer"));
        let params = r.tensor(&format!("{p}.params"))?.reshape([-1]);
        if params.numel() != net.params().numel() {
            return Err(CheckpointError::Mismatch(format!(
                "checkpoint network `{}` has {} parameters, expected {}",
                net.name(),
                params.numel(),
                net.params().numel()
            )));
        }
        net.load_params(&params);
        net.set_stochastic_source(r.meta(&format!("{p}.source"))?);
        let stats: Vec<[QuantStats; 9]> = r.meta(&format!("{p}.stats"))?;
        let ranges: Vec<[RangeTrack; 9]> = r.meta(&format!("{p}.ranges"))?;
        for ((l, s), rg) in net.layers_mut().iter_mut().zip(stats).zip(ranges) {
            l.restore_counters(s, rg);
        }
        // Older checkpoints (versions 1 and 2) hold no affine quantizers.
        let key = format!("{p}.affine");
        let affine: Vec<Vec<Option<AffineQuantizer>>> = match r.has_meta(&key) {
            true => r.meta(&key)?,
            false => Vec::new(),
        };
        for (i, l) in net.layers_mut().iter_mut().enumerate() {
            for (j, &c) in TensorClass::ALL.iter().enumerate() {
                let q = affine.get(i).and_then(|v| v.get(j)).copied().flatten();
                l.set_affine(c, q);
            }
        }
        let key = format!("{p}.learned");
        let learned: Option<LearnedPoints> = match r.has_meta(&key) {
            true => Some(r.meta(&key)?),
            false => None,
        };
        net.set_learned_points(learned);
        if let Some(opt) = net.optimizer_mut() {
            let t = r.meta(&format!("{p}.opt.t"))?;
            let mut moments = Vec::new();
            for (key, ours) in [("m", opt.first_moment()), ("s", opt.root_second_moment())] {
                let m = r.tensor(&format!("{p}.opt.{key}"))?;
                if m.numel() != ours.numel() {
                    return Err(CheckpointError::Mismatch(format!(
                        "checkpoint network `{}` has {} optimizer moments `{key}`, expected {}",
                        net_name,
                        m.numel(),
                        ours.numel()
                    )));
                }
                moments.push(m.reshape(ours.size()));
            }
            opt.load(t, &moments[0], &moments[1]);
        }
    }
    Ok(())
}
