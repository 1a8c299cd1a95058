//! The evaluation policy integer hardware would run: the trained actor's stored codes
//! through [`DeployedActor::infer_raw`], the golden integer inference that every export
//! reproduces bit for bit. The trainer's deterministic evaluation episodes act through
//! it, so every return reported for a fixed-point actor is the return of the exported
//! actor.

use quant::{AccumulatorCast, FxFormat, Quantizer};

use super::{DeployError, DeployedActor, DeployedLayer, TanhTable};
use crate::mlp::{Activation, Mlp};

/// Magnitude bits of a code: |code| <= 2^(width - 1) signed, < 2^width unsigned.
fn mag_bits(f: &FxFormat) -> u32 {
    f.width - f.signed as u32
}

fn ceil_log2(k: usize) -> u32 {
    usize::BITS - k.saturating_sub(1).leading_zeros()
}

/// One layer's products as integer-hardware sums, precomputed from its codes: each
/// output's weights contiguous, summed in i64 where every partial sum provably fits
/// (one pass, or two over 16-bit limbs of the weights recombined in i128), else by
/// `quant::golden_gemm`. Then the same exact cast as `golden_gemm`.
struct LayerPlan {
    /// Weights by output: `w_t[j * in_dim + k]`; with `limbs`, the low 16-bit limbs.
    w_t: Vec<i64>,
    /// With limbs: the high parts (`w >> 16`, signed), by output.
    w_hi: Option<Vec<i64>>,
    /// Neither i64 route fits: the golden GEMM.
    golden: bool,
    /// Every partial sum is an integer below 2^53: the codes as f64 (`w_f`, by output)
    /// and an f64 dot product in any order, exact.
    w_f: Option<Vec<f64>>,
    cast: AccumulatorCast,
}

impl LayerPlan {
    fn new(x: &FxFormat, l: &DeployedLayer) -> Self {
        let (k, n) = (l.in_dim, l.out_dim);
        let grow = ceil_log2(k);
        let by_output = |f: &dyn Fn(i64) -> i64| -> Vec<i64> {
            let mut t = vec![0i64; k * n];
            for kk in 0..k {
                for j in 0..n {
                    t[j * k + kk] = f(l.weight[kk * n + j]);
                }
            }
            t
        };
        let (one, split) = (
            mag_bits(x) + mag_bits(&l.weight_fmt) + grow <= 62,
            mag_bits(x) + 17 + grow <= 62,
        );
        let (w_t, w_hi) = if one || !split {
            (by_output(&|w| w), None)
        } else {
            (by_output(&|w| w & 0xffff), Some(by_output(&|w| w >> 16)))
        };
        let exact_f64 = mag_bits(x) + mag_bits(&l.weight_fmt) + grow <= 53;
        LayerPlan {
            w_f: exact_f64.then(|| w_t.iter().map(|&w| w as f64).collect()),
            w_t,
            w_hi,
            golden: !one && !split,
            cast: AccumulatorCast::new(
                x,
                &l.weight_fmt,
                Some((&l.bias, &l.bias_fmt)),
                &l.preact_fmt,
            ),
        }
    }

    /// Pre-activation codes of `l` for input codes `x` in format `xf`.
    fn preact(&self, x: &[i64], xf: &FxFormat, l: &DeployedLayer) -> Vec<i64> {
        if self.golden {
            return l.golden_preact(x, xf);
        }
        if let Some(w_f) = &self.w_f {
            let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            return w_f
                .chunks_exact(l.in_dim.max(1))
                .enumerate()
                .map(|(j, w)| self.cast.cast(dot_f64(w, &xf) as i128, j))
                .collect();
        }
        let dot = |w: &[i64]| -> i64 { w.iter().zip(x).map(|(a, b)| a * b).sum() };
        self.w_t
            .chunks_exact(l.in_dim.max(1))
            .enumerate()
            .map(|(j, lo)| {
                let acc = match &self.w_hi {
                    None => dot(lo) as i128,
                    Some(hi) => {
                        let hi = &hi[j * l.in_dim..(j + 1) * l.in_dim];
                        ((dot(hi) as i128) << 16) + dot(lo) as i128
                    }
                };
                self.cast.cast(acc, j)
            })
            .collect()
    }
}

/// What a tanh table depends on: the formats around it and the column's scale and offset.
type TanhKey = Vec<(FxFormat, FxFormat, Vec<f32>, Vec<f32>)>;

/// A fixed-point actor as exact integer inference, with its tanh tables.
pub struct ExactPolicy {
    actor: DeployedActor,
    tanh: Vec<Option<Vec<TanhTable>>>,
    key: TanhKey,
    input: Quantizer,
    plans: Vec<LayerPlan>,
}

/// A dot product of integers held in f64 whose every partial sum is below 2^53 (so any
/// order is exact), in eight independent lanes the compiler vectorizes.
fn dot_f64(w: &[f64], x: &[f64]) -> f64 {
    let mut acc = [0f64; 8];
    let (wc, xc) = (w.chunks_exact(8), x.chunks_exact(8));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        for i in 0..8 {
            acc[i] += a[i] * b[i];
        }
    }
    let tail: f64 = wr.iter().zip(xr).map(|(a, b)| a * b).sum();
    acc.iter().sum::<f64>() + tail
}

fn plans(actor: &DeployedActor) -> Vec<LayerPlan> {
    let mut x = actor.input_fmt;
    actor
        .layers
        .iter()
        .map(|l| {
            let p = LayerPlan::new(&x, l);
            x = l.act_fmt;
            p
        })
        .collect()
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
            plans: plans(&actor),
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
        self.plans = plans(&actor);
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
        let out = self.infer_raw(&codes);
        let fmt = self.actor.output_fmt();
        for (a, &r) in action.iter_mut().zip(&out) {
            *a = quant::to_f64(r, &fmt) as f32;
        }
    }

    /// [`DeployedActor::infer_raw`] computed with the precomputed plans (the same codes,
    /// tested): raw input codes in, raw action codes out.
    pub fn infer_raw(&self, x: &[i64]) -> Vec<i64> {
        self.actor.infer_with(x, &self.tanh, |i, l, cur, cur_fmt| {
            self.plans[i].preact(cur, cur_fmt, l)
        })
    }

    /// The deployed actor this policy runs.
    pub fn actor(&self) -> &DeployedActor {
        &self.actor
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::precision::{PrecisionSpec, Preset};

    /// The plans (one i64 pass, 16-bit weight limbs, golden) give `infer_raw`'s codes.
    #[test]
    fn planned_inference_equals_the_golden_inference() {
        let mut wide = PrecisionSpec::preset(Preset::Fxp32);
        wide.formats.all.input = Some("ap_fixed<32,16>".parse().unwrap());
        let mut routes = std::collections::BTreeSet::new();
        for spec in [PrecisionSpec::preset(Preset::Fxp16), wide] {
            let out = Activation::Tanh {
                scale: vec![1.5; 3],
                offset: vec![0.25; 3],
            };
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let net = Mlp::new("actor", &[5, 300, 64, 3], out, &spec, &mut rng, 1);
            let p = ExactPolicy::new(&net).unwrap();
            for plan in &p.plans {
                routes.insert((plan.golden, plan.w_hi.is_some(), plan.w_f.is_some()));
            }
            let tables = p.actor.tanh_tables().unwrap();
            for _ in 0..50 {
                let obs: Vec<f32> = (0..5).map(|_| rng.gen_range(-20.0..20.0)).collect();
                let x: Vec<i64> = obs
                    .iter()
                    .map(|&v| quant::from_f64(v as f64, &p.actor.input_fmt).unwrap())
                    .collect();
                assert_eq!(p.infer_raw(&x), p.actor.infer_raw(&x, &tables));
            }
        }
        // The f64 and limb routes ran (the golden route needs inputs wider than 32 bits or
        // k >= 2^14, beyond what the export accepts).
        assert!(routes.contains(&(false, false, true)), "{routes:?}");
        assert!(routes.contains(&(false, true, false)), "{routes:?}");
    }
}
