//! Native ports of Gymnasium's continuous classic-control tasks.
//!
//! Both reproduce Gymnasium 1.x's arithmetic, including where NumPy computes in float32
//! (a float32 action combined with a Python float stays float32 under NumPy 2's
//! promotion rules) and where it computes in float64. Given the same start state and
//! actions they produce the same observations, rewards and flags as Python Gymnasium.
//! Initial states are drawn from the same distributions, but from a ChaCha8 RNG, not
//! NumPy's PCG64, so a given seed yields a different (equally distributed) start.

mod mountain_car;
mod pendulum;

pub use mountain_car::MountainCarContinuous;
pub use pendulum::Pendulum;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The RNG a native env draws its initial states from, seeded as Gymnasium seeds
/// `np_random`: `reset(Some(seed))` reseeds, `reset(None)` continues, and an env never
/// seeded starts from OS entropy.
#[derive(Debug, Clone)]
pub(crate) struct EnvRng(ChaCha8Rng);

impl EnvRng {
    pub(crate) fn from_entropy() -> Self {
        Self(ChaCha8Rng::from_entropy())
    }

    pub(crate) fn reseed(&mut self, seed: Option<u64>) {
        if let Some(s) = seed {
            self.0 = ChaCha8Rng::seed_from_u64(s);
        }
    }

    /// NumPy's `uniform(low, high)`: `low + (high - low) * U[0, 1)`.
    pub(crate) fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.0.gen::<f64>()
    }
}

pub(crate) fn check_state(id: &str, state: &[f64], len: usize) -> Result<(), crate::EnvError> {
    if state.len() != len {
        return Err(crate::EnvError::InvalidState {
            id: id.to_string(),
            reason: format!("expected {len} values, got {}", state.len()),
        });
    }
    if let Some(v) = state.iter().find(|v| !v.is_finite()) {
        return Err(crate::EnvError::InvalidState {
            id: id.to_string(),
            reason: format!("non-finite value {v}"),
        });
    }
    Ok(())
}
