//! A [`DeployedActor`] from a trained actor network or a checkpoint directory: the
//! network's stored codes and formats, refused when any datapath tensor is in float.

use std::path::Path;

use quant::{FxFormat, Rounding};

use super::{DeployError, DeployedActor, DeployedLayer};
use crate::checkpoint::CheckpointReader;
use crate::config::TrainConfig;
use crate::mlp::Mlp;
use crate::precision::TensorClass;

impl DeployedActor {
    /// Loads the trained actor of a checkpoint directory (one holding `checkpoint.bin`)
    /// and converts it to raw codes; `origin` names the directory, algorithm and env.
    pub fn load(dir: &Path) -> Result<Self, DeployError> {
        let path = dir.join(crate::layout::CHECKPOINT);
        let checkpoint = |source| DeployError::Checkpoint {
            path: path.clone(),
            source,
        };
        let reader = CheckpointReader::read(&path).map_err(checkpoint)?;
        let cfg: TrainConfig = reader.meta("config").map_err(checkpoint)?;
        let seed: u64 = reader.meta("seed").map_err(checkpoint)?;
        let env = envs::make(&cfg.env_id)?;
        let mut agent =
            crate::trainer::build_agent(&cfg, env.observation_space(), env.action_space(), seed);
        crate::trainer::load_agent(agent.as_mut(), &reader).map_err(checkpoint)?;
        let origin = format!(
            "{} ({} on {})",
            dir.display(),
            format!("{:?}", cfg.algo).to_uppercase(),
            cfg.env_id
        );
        Self::from_actor(origin, agent.actor())
    }

    /// From a trained actor network; every datapath tensor must be fixed point.
    pub fn from_actor(origin: String, net: &Mlp) -> Result<Self, DeployError> {
        let need = |f: Option<FxFormat>, layer: &str, class| {
            f.ok_or_else(|| DeployError::FloatTensor {
                layer: layer.into(),
                class,
            })
        };
        // Parameters are stored codes, never cast at inference: the rounding that
        // produced them (stochastic, in training) has no hardware meaning.
        let stored = |f: FxFormat| match f.rounding {
            Rounding::Stochastic => f.with_modes(Rounding::Trn, f.overflow),
            _ => f,
        };
        for layer in net.layers() {
            if let Some(class) = TensorClass::ALL
                .into_iter()
                .find(|&c| layer.affine(c).is_some())
            {
                return Err(DeployError::Affine {
                    layer: layer.name().to_string(),
                    class,
                });
            }
        }
        let exported = crate::export::export_network(net)?;
        let first = exported.first().ok_or(DeployError::NoLayers)?;
        let input_fmt = need(first.formats.input, &first.name, TensorClass::Input)?;
        let layers = exported
            .into_iter()
            .zip(net.layers())
            .map(|(l, layer)| {
                Ok(DeployedLayer {
                    weight_fmt: stored(need(l.weight_format, &l.name, TensorClass::Weight)?),
                    bias_fmt: stored(need(l.bias_format, &l.name, TensorClass::Bias)?),
                    preact_fmt: need(l.formats.preact, &l.name, TensorClass::Preact)?,
                    act_fmt: need(l.formats.activation, &l.name, TensorClass::Activation)?,
                    activation: layer.activation().clone(),
                    weight: l.weight_codes,
                    bias: l.bias_codes,
                    name: l.name,
                    in_dim: l.in_dim,
                    out_dim: l.out_dim,
                })
            })
            .collect::<Result<Vec<_>, DeployError>>()?;
        Ok(DeployedActor {
            origin,
            input_fmt,
            layers,
            shift_add: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::mlp::Activation;
    use crate::precision::{PrecisionSpec, Preset};

    fn actor(preset: Preset) -> Mlp {
        let out = Activation::Tanh {
            scale: vec![2.0],
            offset: vec![0.5],
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let spec = PrecisionSpec::preset(preset);
        Mlp::new("actor", &[3, 8, 1], out, &spec, &mut rng, 9)
    }

    #[test]
    fn a_fixed_point_actor_deploys_with_its_own_activations_and_stored_rounding() {
        let net = actor(Preset::Fxp16);
        let d = DeployedActor::from_actor("test".into(), &net).unwrap();
        d.validate().unwrap();
        assert_eq!(d.layers.len(), 2);
        assert_eq!(d.layers[0].activation, Activation::Relu);
        assert_eq!(&d.layers[1].activation, net.layers()[1].activation());
        // fxp16 rounds weights stochastically in training; stored codes are not rounded again.
        assert_eq!(d.layers[0].weight_fmt.rounding, Rounding::Trn);
        assert_eq!(
            d.input_fmt,
            net.layers()[0].formats().get(TensorClass::Input).unwrap()
        );
    }

    #[test]
    fn a_float_actor_is_refused_naming_the_layer_and_class() {
        let e = DeployedActor::from_actor("test".into(), &actor(Preset::Float32)).unwrap_err();
        assert!(
            matches!(&e, DeployError::FloatTensor { layer, class: TensorClass::Input } if layer == "actor.fc1"),
            "{e}"
        );
    }
}
