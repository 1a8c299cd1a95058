//! Gymnasium's `Box` space restricted to what continuous control needs: per-dimension
//! float32 bounds.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::EnvError;

/// A box `[low, high]` of float32 vectors; `dim = low.len()`. Bounds may be infinite
/// (MuJoCo observation spaces are unbounded).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BoxSpace {
    pub low: Vec<f32>,
    pub high: Vec<f32>,
}

impl BoxSpace {
    /// A box from per-dimension bounds. Panics if the lengths differ or `low > high`
    /// somewhere (a programming error, not a run-time condition).
    pub fn new(low: Vec<f32>, high: Vec<f32>) -> Self {
        assert_eq!(low.len(), high.len(), "BoxSpace bounds differ in length");
        assert!(
            low.iter().zip(&high).all(|(l, h)| l <= h),
            "BoxSpace low > high"
        );
        Self { low, high }
    }

    /// `dim` dimensions, all with the same bounds.
    pub fn uniform(dim: usize, low: f32, high: f32) -> Self {
        Self::new(vec![low; dim], vec![high; dim])
    }

    /// Number of dimensions.
    pub fn dim(&self) -> usize {
        self.low.len()
    }

    /// Whether `x` has the right length and lies inside the bounds.
    pub fn contains(&self, x: &[f32]) -> bool {
        x.len() == self.dim()
            && x.iter()
                .zip(self.low.iter().zip(&self.high))
                .all(|(v, (l, h))| *v >= *l && *v <= *h)
    }

    /// Whether every bound is finite (a uniform sample exists).
    pub fn is_bounded(&self) -> bool {
        self.low.iter().chain(&self.high).all(|b| b.is_finite())
    }

    /// Clips `x` into the box in place, elementwise in float32 (what `np.clip` does to a
    /// float32 array with this space's bounds).
    pub fn clip(&self, x: &mut [f32]) {
        for (v, (l, h)) in x.iter_mut().zip(self.low.iter().zip(&self.high)) {
            *v = v.max(*l).min(*h);
        }
    }

    /// Writes a uniform sample into `out`. Unbounded dimensions draw from a standard
    /// normal (shifted when bounded on one side), as Gymnasium's `Box.sample` does.
    pub fn sample_into<R: Rng + ?Sized>(&self, rng: &mut R, out: &mut [f32]) {
        for (o, (l, h)) in out.iter_mut().zip(self.low.iter().zip(&self.high)) {
            let (l, h) = (*l as f64, *h as f64);
            let v = match (l.is_finite(), h.is_finite()) {
                (true, true) => l + (h - l) * rng.gen::<f64>(),
                (true, false) => l + exponential(rng),
                (false, true) => h - exponential(rng),
                (false, false) => standard_normal(rng),
            };
            *o = v as f32;
        }
    }

    /// Checks an action against this space: right length, every element finite.
    /// Out-of-range values pass (environments clip them as Gymnasium does).
    pub fn check_action(&self, id: &str, action: &[f32]) -> Result<(), EnvError> {
        if action.len() != self.dim() {
            return Err(EnvError::ActionLength {
                id: id.to_string(),
                expected: self.dim(),
                got: action.len(),
            });
        }
        if let Some((index, value)) = action.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(EnvError::NonFiniteAction {
                id: id.to_string(),
                index,
                value: *value,
            });
        }
        Ok(())
    }

    /// Checks that an observation buffer has this space's dimension.
    pub fn check_obs_buffer(&self, id: &str, obs: &[f32]) -> Result<(), EnvError> {
        if obs.len() != self.dim() {
            return Err(EnvError::ObservationLength {
                id: id.to_string(),
                expected: self.dim(),
                got: obs.len(),
            });
        }
        Ok(())
    }
}

/// Box-Muller from two uniforms; no allocation.
fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn exponential<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    -(1.0 - rng.gen::<f64>()).ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn check_action_rejects_wrong_length_and_non_finite() {
        let s = BoxSpace::uniform(2, -1.0, 1.0);
        assert!(s.check_action("X", &[0.0, 5.0]).is_ok());
        assert!(matches!(
            s.check_action("X", &[0.0]),
            Err(EnvError::ActionLength {
                expected: 2,
                got: 1,
                ..
            })
        ));
        assert!(matches!(
            s.check_action("X", &[0.0, f32::NAN]),
            Err(EnvError::NonFiniteAction { index: 1, .. })
        ));
        assert!(s.check_action("X", &[f32::NEG_INFINITY, 0.0]).is_err());
    }

    #[test]
    fn samples_lie_in_bounded_boxes_and_clip_projects() {
        let s = BoxSpace::new(vec![-2.0, 0.0], vec![2.0, 0.5]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut x = [0.0f32; 2];
        for _ in 0..1000 {
            s.sample_into(&mut rng, &mut x);
            assert!(s.contains(&x), "{x:?}");
        }
        let mut y = [3.0f32, -1.0];
        s.clip(&mut y);
        assert_eq!(y, [2.0, 0.0]);
        let u = BoxSpace::uniform(3, f32::NEG_INFINITY, f32::INFINITY);
        let mut z = [0.0f32; 3];
        u.sample_into(&mut rng, &mut z);
        assert!(z.iter().all(|v| v.is_finite()));
        assert!(!u.is_bounded() && s.is_bounded());
    }
}
