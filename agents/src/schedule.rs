//! FIXAR's in-training QAT schedule (paper, Algorithm 1; `../shared/design/accelerator.md`,
//! "The QAT schedule"): one run trains at its configured precision (FXP32 in the paper)
//! until env step `delay`, while the range observers track each layer's signed min/max
//! of the scheduled classes; at step `delay` the ranges are frozen, `bits`-bit
//! quantizers are derived from them per network and layer, and from then on those
//! classes are cast by them. Every other class keeps its precision to the end.
//!
//! Quantizers ([`ScheduleQuantizer`]):
//! - `affine`: FIXAR's asymmetric quantizer with a zero point ([`quant::AffineQuantizer`])
//!   on the frozen `[min, max]`. The dequantized value `(Q - z) * delta` is represented in
//!   the class's own format (FXP32's Q16.16 for activations), so the next layer's GEMM,
//!   fast or exact, reads one well-defined fixed-point value.
//! - `ap_fixed`: our dynamic fixed-point variant: a signed `bits`-bit `ap_fixed` whose
//!   binary point fits `max(|min|, |max|)`, derived by the QAT ladder's rule
//!   ([`crate::qat::derive::derive_layer`]; a class already at most `bits` wide keeps its
//!   format). It is an ordinary format change, so the fused kernels still apply.
//!
//! Every network is scheduled: the online actor and critics and their target networks,
//! as the accelerator runs all of them on one datapath. Each layer's quantizer comes from
//! its own network's observations (a target network observes the forwards of its
//! predictions); a target layer that observed nothing takes its online twin's range.
//!
//! The trainer switches right after the update of env step `delay` (so the evaluation
//! and the metrics/quant rows at step `delay` already see the new quantizers), always
//! writes a log row at that step, and checkpoints the switched state (formats, and the
//! affine quantizers in checkpoint format version 3), so a run resumed on either side of
//! the delay equals an uninterrupted one.

use std::collections::BTreeMap;
use std::fmt;

use quant::{AffineQuantizer, MinMaxObserver};
use serde::{Deserialize, Serialize};

use crate::precision::{LayerFormats, TensorClass};
use crate::qat::derive::derive_layer;
use crate::qat::Rung;

/// What the scheduled classes switch to at the delay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleQuantizer {
    /// No schedule: the run keeps its precision.
    #[default]
    None,
    /// FIXAR's asymmetric quantizer (`quant::AffineQuantizer`).
    Affine,
    /// A signed `ap_fixed` with the binary point from the range.
    ApFixed,
}

impl ScheduleQuantizer {
    pub fn name(self) -> &'static str {
        match self {
            ScheduleQuantizer::None => "none",
            ScheduleQuantizer::Affine => "affine",
            ScheduleQuantizer::ApFixed => "ap_fixed",
        }
    }
}

impl fmt::Display for ScheduleQuantizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The classes a schedule may switch: the forward casts every numeric path makes
/// through a layer's cast (activations, and the network input at the first layer).
pub const SCHEDULABLE: [TensorClass; 2] = [TensorClass::Activation, TensorClass::Input];

/// The config's `[schedule]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// `none` (default: no schedule), `affine` or `ap_fixed`.
    pub quantizer: ScheduleQuantizer,
    /// The env step at which the classes switch (required with a quantizer; at most
    /// `total_timesteps`, above `learning_starts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<u64>,
    /// Width of the quantizers, 2..=32.
    pub bits: u32,
    /// The classes switched (`activation`, `input`).
    pub classes: Vec<TensorClass>,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            quantizer: ScheduleQuantizer::None,
            delay: None,
            bits: 16,
            classes: vec![TensorClass::Activation],
        }
    }
}

impl ScheduleConfig {
    pub fn is_default(&self) -> bool {
        *self == ScheduleConfig::default()
    }

    /// Whether a quantizer is configured.
    pub fn is_on(&self) -> bool {
        self.quantizer != ScheduleQuantizer::None
    }

    /// The step the schedule switches at (None when off).
    pub fn switch_step(&self) -> Option<u64> {
        self.delay.filter(|_| self.is_on())
    }

    /// `affine16`, `ap_fixed16`: what the metrics' `schedule` column says at the switch.
    pub fn label(&self) -> String {
        format!("{}{}", self.quantizer, self.bits)
    }

    /// The problems of this table in a config with these other keys, each naming the
    /// key and the value (see `TrainConfig::validate`).
    pub fn problems(
        &self,
        total_timesteps: u64,
        learning_starts: u64,
        range_every: u64,
        qat_mode: bool,
    ) -> Vec<String> {
        let mut bad = Vec::new();
        if !(2..=32).contains(&self.bits) {
            bad.push(format!(
                "`schedule.bits` must be in 2..=32, got {}",
                self.bits
            ));
        }
        for c in &self.classes {
            if !SCHEDULABLE.contains(c) {
                bad.push(format!(
                    "`schedule.classes`: `{c}` cannot be scheduled; expected activation or input"
                ));
            }
        }
        if !self.is_on() {
            return bad;
        }
        if self.classes.is_empty() {
            bad.push("`schedule.classes` must name at least one class".into());
        }
        match self.delay {
            None => bad.push(format!(
                "`schedule.delay` is required with `schedule.quantizer = \"{}\"`",
                self.quantizer
            )),
            Some(d) if d > total_timesteps => bad.push(format!(
                "`schedule.delay` = {d} is beyond `total_timesteps` = {total_timesteps}"
            )),
            Some(d) if d <= learning_starts => bad.push(format!(
                "`schedule.delay` = {d} must be above `learning_starts` = {learning_starts}: \
                 ranges are observed during updates"
            )),
            Some(_) => {}
        }
        if range_every == 0 {
            bad.push(
                "`range_every` = 0 observes no ranges, which `schedule.quantizer` needs".into(),
            );
        }
        if qat_mode && self.quantizer == ScheduleQuantizer::Affine {
            bad.push("`schedule.quantizer = \"affine\"` needs `mode = \"fixed\"`".into());
        }
        bad
    }
}

/// Why quantizers could not be derived at the delay.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "schedule at step {step}: layer `{layer}` class `{class}` observed no range before the \
         delay (ranges are observed every `range_every` updates)"
    )]
    NoRange {
        step: u64,
        layer: String,
        class: TensorClass,
    },
    #[error("schedule at step {step}: layer `{layer}` class `{class}`: {reason}")]
    Derive {
        step: u64,
        layer: String,
        class: TensorClass,
        reason: String,
    },
}

/// The observed signed range of every layer and scheduled class, by layer name; a target
/// layer without observations takes its online twin's.
pub type MinMaxTable = BTreeMap<String, BTreeMap<TensorClass, MinMaxObserver>>;

/// A layer's switch: its new formats (for `ap_fixed`) and affine quantizers per class.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSwitch {
    pub formats: LayerFormats,
    pub affine: Vec<(TensorClass, AffineQuantizer)>,
}

/// The observed `(min, max)` of `layer`'s `class`, or its online twin's.
fn observed(table: &MinMaxTable, layer: &str, class: TensorClass) -> Option<(f64, f64)> {
    let own = table
        .get(layer)
        .and_then(|m| m.get(&class))
        .and_then(MinMaxObserver::range);
    own.or_else(|| {
        let (net, fc) = layer.split_once('.')?;
        let online = format!("{}.{fc}", net.strip_suffix("_target")?);
        table.get(&online)?.get(&class)?.range()
    })
}

/// The switch of every layer of `current` (formats by layer name) at step `step`.
pub fn derive_switch(
    cfg: &ScheduleConfig,
    step: u64,
    current: &BTreeMap<String, LayerFormats>,
    ranges: &MinMaxTable,
) -> Result<BTreeMap<String, LayerSwitch>, ScheduleError> {
    let mut out = BTreeMap::new();
    for (layer, formats) in current {
        let mut sw = LayerSwitch {
            formats: *formats,
            affine: Vec::new(),
        };
        for &class in &cfg.classes {
            let (lo, hi) =
                observed(ranges, layer, class).ok_or_else(|| ScheduleError::NoRange {
                    step,
                    layer: layer.clone(),
                    class,
                })?;
            let err = |reason: String| ScheduleError::Derive {
                step,
                layer: layer.clone(),
                class,
                reason,
            };
            match cfg.quantizer {
                ScheduleQuantizer::None => {}
                ScheduleQuantizer::Affine => {
                    let q = AffineQuantizer::from_range(cfg.bits, lo, hi)
                        .map_err(|e| err(e.to_string()))?;
                    sw.affine.push((class, q));
                }
                ScheduleQuantizer::ApFixed => {
                    let m = BTreeMap::from([(class, lo.abs().max(hi.abs()))]);
                    sw.formats = derive_layer(
                        layer,
                        &sw.formats,
                        Some(&m),
                        &Rung::uniform(cfg.bits),
                        0,
                        &[class],
                    )
                    .map_err(|e| err(e.to_string()))?;
                }
            }
        }
        out.insert(layer.clone(), sw);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precision::Preset;

    fn observer(xs: &[f32]) -> MinMaxObserver {
        let mut m = MinMaxObserver::default();
        m.observe_slice(xs);
        m
    }

    #[test]
    fn affine_and_ap_fixed_switches_come_from_the_observed_ranges() {
        let fxp32 = Preset::Fxp32.layer_formats("actor", false);
        let current = BTreeMap::from([
            ("actor.fc1".to_string(), fxp32),
            ("actor_target.fc1".to_string(), fxp32),
        ]);
        let mut ranges = MinMaxTable::new();
        ranges.insert(
            "actor.fc1".into(),
            BTreeMap::from([(TensorClass::Activation, observer(&[-0.5, 3.0, 6.0]))]),
        );
        let mut cfg = ScheduleConfig {
            quantizer: ScheduleQuantizer::Affine,
            delay: Some(10),
            ..Default::default()
        };
        let sw = derive_switch(&cfg, 10, &current, &ranges).unwrap();
        let want = AffineQuantizer::from_range(16, -0.5, 6.0).unwrap();
        for l in ["actor.fc1", "actor_target.fc1"] {
            // The target observed nothing: its online twin's range stands in.
            assert_eq!(sw[l].affine, vec![(TensorClass::Activation, want)], "{l}");
            assert_eq!(sw[l].formats, fxp32);
        }
        cfg.quantizer = ScheduleQuantizer::ApFixed;
        let sw = derive_switch(&cfg, 10, &current, &ranges).unwrap();
        let a = sw["actor.fc1"]
            .formats
            .get(TensorClass::Activation)
            .unwrap();
        assert_eq!((a.width, a.int_bits), (16, 4)); // 6 needs 3 integer bits + sign
        assert!(sw["actor.fc1"].affine.is_empty());
        assert_eq!(
            sw["actor.fc1"].formats.get(TensorClass::Weight),
            fxp32.get(TensorClass::Weight)
        );
        ranges.clear();
        let e = derive_switch(&cfg, 10, &current, &ranges).unwrap_err();
        assert!(e.to_string().contains("actor.fc1"), "{e}");
    }

    /// A forward through layers carrying affine quantizers equals the paper's formula
    /// evaluated directly on each layer's pre-activation, with the value on the
    /// activation format's grid; saturated codes are counted.
    #[test]
    fn a_forward_casts_activations_by_the_affine_formula() {
        use crate::mlp::{Activation, Mlp};
        use crate::precision::PrecisionSpec;
        use rand::SeedableRng;
        use tch::{Kind, Tensor};

        let spec = PrecisionSpec::preset(Preset::Fxp32);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut net = Mlp::new(
            "critic",
            &[3, 8, 6, 2],
            Activation::Identity,
            &spec,
            &mut rng,
            1,
        );
        // Ranges narrower than the activations, so that codes saturate on both sides.
        let ranges = [(0.0, 0.4), (-0.1, 0.2), (-0.3, 0.05)];
        for (l, &(lo, hi)) in net.layers_mut().iter_mut().zip(&ranges) {
            let q = AffineQuantizer::from_range(16, lo, hi).unwrap();
            l.set_affine(TensorClass::Activation, Some(q));
        }
        let x =
            Tensor::from_slice(&[0.5f64, -1.0, 2.0, 1.5, 0.25, -0.75, -2.0, 1.0, 0.0]).view([3, 3]);
        let y = net.forward(&x);
        let stats = net.take_stats();
        let n = net.layers().len();
        assert_eq!(stats.len(), n);
        let mut all_sat = 0;
        for (i, st) in stats.iter().enumerate() {
            let l = &net.layers()[i];
            let q = l.affine(TensorClass::Activation).unwrap();
            let fmt = l.formats().get(TensorClass::Activation).unwrap();
            let z: Vec<f64> = Vec::try_from(l.cached_preact().unwrap().view([-1])).unwrap();
            let got = match i + 1 < n {
                true => net.layers()[i + 1].cached_input().unwrap().shallow_clone(),
                false => y.shallow_clone(),
            };
            let got: Vec<f64> = Vec::try_from(got.to_kind(Kind::Double).view([-1])).unwrap();
            let (mut sat, top) = (0, (1i64 << 16) - 1);
            for (&zv, &g) in z.iter().zip(&got) {
                let a = if l.activation() == &Activation::Relu {
                    zv.max(0.0)
                } else {
                    zv
                };
                let raw = (a / q.delta()).floor() as i64 + q.zero_point();
                let code = raw.clamp(0, top);
                sat += (code != raw) as u64;
                let want = quant::quantize((code - q.zero_point()) as f64 * q.delta(), &fmt);
                assert_eq!(g, want.unwrap(), "{} at z = {zv}", l.name());
            }
            let st = st[TensorClass::Activation.index()];
            assert_eq!(
                (st.elements, st.saturated),
                (z.len() as u64, sat),
                "{}",
                l.name()
            );
            all_sat += sat;
        }
        assert!(all_sat > 0);
    }

    #[test]
    fn problems_name_the_key_and_the_value() {
        let on = ScheduleConfig {
            quantizer: ScheduleQuantizer::Affine,
            delay: Some(2000),
            bits: 40,
            classes: vec![TensorClass::Weight],
        };
        let p = on.problems(1000, 100, 10, true).join("; ");
        for want in [
            "`schedule.bits` must be in 2..=32, got 40",
            "`weight` cannot be scheduled",
            "`schedule.delay` = 2000 is beyond `total_timesteps` = 1000",
            "needs `mode = \"fixed\"`",
        ] {
            assert!(p.contains(want), "{want}: {p}");
        }
        let p = ScheduleConfig {
            delay: Some(50),
            ..on.clone()
        }
        .problems(1000, 100, 0, false)
        .join("; ");
        assert!(p.contains("above `learning_starts` = 100") && p.contains("`range_every`"));
        let p = ScheduleConfig { delay: None, ..on }.problems(1000, 100, 10, false);
        assert!(p.iter().any(|m| m.contains("`schedule.delay` is required")));
        assert!(ScheduleConfig::default()
            .problems(10, 100, 0, true)
            .is_empty());
    }
}
