//! Exploration noise added to the deterministic action while collecting experience.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// Gaussian (CleanRL's TD3/DDPG) or Ornstein-Uhlenbeck (the DDPG paper) noise, in units
/// of the action scale (half the action range) per dimension.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExplorationNoise {
    Gaussian {
        std: f64,
    },
    /// dx = theta (0 - x) dt + sigma sqrt(dt) N(0, 1); reset to 0 at every episode start.
    OrnsteinUhlenbeck {
        theta: f64,
        sigma: f64,
        dt: f64,
        state: Vec<f64>,
    },
}

impl ExplorationNoise {
    /// Clears the OU state at an episode start.
    pub fn reset(&mut self) {
        if let ExplorationNoise::OrnsteinUhlenbeck { state, .. } = self {
            state.iter_mut().for_each(|x| *x = 0.0);
        }
    }

    /// Whether `self` (read from a checkpoint) is the same kind as `fresh` (made from the
    /// config) with a state of the same size and finite parameters.
    pub fn fits(&self, fresh: &ExplorationNoise) -> bool {
        match (self, fresh) {
            (Self::Gaussian { std }, Self::Gaussian { .. }) => std.is_finite(),
            (
                Self::OrnsteinUhlenbeck {
                    theta,
                    sigma,
                    dt,
                    state,
                },
                Self::OrnsteinUhlenbeck { state: fresh, .. },
            ) => {
                state.len() == fresh.len()
                    && [*theta, *sigma, *dt].iter().all(|v| v.is_finite())
                    && *dt >= 0.0
            }
            _ => false,
        }
    }

    /// Adds noise to `action` (scaled by `scale` per dimension) and clips it to [low, high].
    pub fn perturb(
        &mut self,
        action: &mut [f32],
        scale: &[f32],
        low: &[f32],
        high: &[f32],
        rng: &mut ChaCha8Rng,
    ) {
        for (i, a) in action.iter_mut().enumerate() {
            let n: f64 = rng.sample(StandardNormal);
            let e = match self {
                ExplorationNoise::Gaussian { std } => *std * n,
                ExplorationNoise::OrnsteinUhlenbeck {
                    theta,
                    sigma,
                    dt,
                    state,
                } => {
                    let x = &mut state[i];
                    *x += *theta * (0.0 - *x) * *dt + *sigma * dt.sqrt() * n;
                    *x
                }
            };
            *a = (*a + (e * scale[i] as f64) as f32).clamp(low[i], high[i]);
        }
    }
}
