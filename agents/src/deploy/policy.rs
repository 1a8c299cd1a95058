//! The evaluation policy integer hardware would run: the trained actor's stored codes
//! through [`DeployedActor::infer_raw`], the golden integer inference that every export
//! reproduces bit for bit. The trainer's deterministic evaluation episodes act through
//! it, so every return reported for a fixed-point actor is the return of the exported
//! actor.

use quant::{FxFormat, Quantizer};

use super::{DeployError, DeployedActor, TanhTable};
use crate::mlp::{Activation, Mlp};

/// What a tanh table depends on: the formats around it and the column's scale and offset.
type TanhKey = Vec<(FxFormat, FxFormat, Vec<f32>, Vec<f32>)>;

/// A fixed-point actor as exact integer inference, with its tanh tables.
pub struct ExactPolicy {
    actor: DeployedActor,
    tanh: Vec<Option<Vec<TanhTable>>>,
    key: TanhKey,
    input: Quantizer,
}

fn tanh_key(actor: &DeployedActor) -> TanhKey {
    actor
        .layers
        .iter()
        .filter_map(|l| match &l.activation {
            Activation::Tanh { scale, offset } => {
                Some((l.preact_fmt, l.act_fmt, scale.clone(), offset.clone()))
            }
            _ => None,
        })
        .collect()
}

impl ExactPolicy {
    /// The policy of `net` (an actor whose every datapath tensor is fixed point, in a
    /// format the export supports; otherwise the export's own error says why not).
    pub fn new(net: &Mlp) -> Result<Self, DeployError> {
        let actor = DeployedActor::from_actor(net.name().to_string(), net)?;
        actor.validate()?;
        let tanh = actor.tanh_tables()?;
        Ok(ExactPolicy {
            key: tanh_key(&actor),
            input: Quantizer::new(&actor.input_fmt),
            actor,
            tanh,
        })
    }

    /// Reads `net`'s current codes (after training steps); the tanh tables are rebuilt
    /// only when a format or a tanh parameter changed.
    pub fn update(&mut self, net: &Mlp) -> Result<(), DeployError> {
        let actor = DeployedActor::from_actor(net.name().to_string(), net)?;
        actor.validate()?;
        let key = tanh_key(&actor);
        if key != self.key {
            self.tanh = actor.tanh_tables()?;
            self.key = key;
        }
        self.input = Quantizer::new(&actor.input_fmt);
        self.actor = actor;
        Ok(())
    }

    /// The action for one observation: the input cast into the actor's input format
    /// (the export's input conversion), integer inference, the output codes' values.
    /// A non-finite observation gives NaN actions (no code holds it).
    pub fn act(&self, obs: &[f32], action: &mut [f32]) {
        let codes: Option<Vec<i64>> = obs
            .iter()
            .map(|&v| self.input.from_f64(v as f64).ok())
            .collect();
        let Some(codes) = codes else {
            action.fill(f32::NAN);
            return;
        };
        let out = self.actor.infer_raw(&codes, &self.tanh);
        let fmt = self.actor.output_fmt();
        for (a, &r) in action.iter_mut().zip(&out) {
            *a = quant::to_f64(r, &fmt) as f32;
        }
    }

    /// The deployed actor this policy runs.
    pub fn actor(&self) -> &DeployedActor {
        &self.actor
    }
}
