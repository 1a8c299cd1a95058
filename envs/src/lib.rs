//! Gymnasium-compatible continuous-control environments: native Rust ports and a bridge
//! to Python Gymnasium for the rest.
//!
//! - [`Env`]: Gymnasium's `reset(seed)` / `step(action)` semantics over float32 slices
//!   the caller owns (stepping a native env allocates nothing).
//! - [`make`]: Gymnasium ids with Gymnasium's defaults (the [`TimeLimit`] from the
//!   registration). Native ports: `Pendulum-v1`, `MountainCarContinuous-v0` (matching
//!   Gymnasium 1.x to float rounding, see [`classic`]), and `gymnasium-rs/CartPole-v1`
//!   (gymnasium-rs's CartPole behind a discretizing action wrapper, see [`interop`]).
//!   Every other id goes to the Python Gymnasium bridge ([`bridge`]), e.g. the MuJoCo
//!   tasks `HalfCheetah-v5`, `Hopper-v5`.
//! - [`VecEnv`]: N copies stepped in parallel with auto-reset.
//! - [`reference`](mod@reference): replaying recorded Gymnasium trajectories (`fixar env check`).

pub mod bridge;
pub mod classic;
mod error;
pub mod interop;
pub mod reference;
mod registry;
mod space;
mod time_limit;
mod vec_env;

pub use classic::{MountainCarContinuous, Pendulum};
pub use error::EnvError;
pub use registry::{make, make_native, registered_ids};
pub use space::BoxSpace;
pub use time_limit::TimeLimit;
pub use vec_env::{VecEnv, VecStep};

/// What one `step` returns besides the observation (Gymnasium's `reward, terminated,
/// truncated`; `info` is not carried).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    pub reward: f64,
    /// The MDP reached a terminal state (do not bootstrap).
    pub terminated: bool,
    /// The episode was cut short, e.g. by the time limit (bootstrap from the last obs).
    pub truncated: bool,
}

impl StepOutcome {
    /// The episode is over (terminated or truncated): reset before stepping again.
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// A Gymnasium environment with Box observation and action spaces. Observations and
/// actions are float32 slices owned by the caller; their lengths must equal the
/// spaces' dimensions (else [`EnvError::ObservationLength`] / [`EnvError::ActionLength`]).
pub trait Env: Send {
    /// The Gymnasium id, e.g. `"Pendulum-v1"`.
    fn id(&self) -> &str;
    fn observation_space(&self) -> &BoxSpace;
    fn action_space(&self) -> &BoxSpace;
    /// The time limit after which `step` sets `truncated` (None: no limit).
    fn max_episode_steps(&self) -> Option<u32>;
    /// Reset; `seed` as in Gymnasium (Some reseeds the env's RNG, None continues it).
    /// Writes the first observation.
    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) -> Result<(), EnvError>;
    /// One step (the [`TimeLimit`] wrapper sets `truncated`). Writes the next observation.
    /// Actions outside the action space are clipped as Gymnasium clips them; a wrong
    /// length or a NaN/Inf element is an error.
    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Result<StepOutcome, EnvError>;

    /// Starts an episode from a given physical state instead of a random one (what
    /// Gymnasium's `env.unwrapped.state` holds right after `reset`: Pendulum
    /// `[theta, theta_dot]`, MountainCar `[position, velocity]`) and writes the
    /// observation `reset` would have returned. Resets the time limit.
    fn reset_to_state(&mut self, state: &[f64], obs: &mut [f32]) -> Result<(), EnvError> {
        let _ = (state, obs);
        Err(EnvError::Unsupported {
            id: self.id().to_string(),
            operation: "reset_to_state",
        })
    }

    /// The current physical state in the layout `reset_to_state` takes (a bridged env
    /// asks its worker: MuJoCo `qpos ++ qvel`, classic control `unwrapped.state`).
    fn state(&mut self) -> Result<Vec<f64>, EnvError> {
        Err(EnvError::Unsupported {
            id: self.id().to_string(),
            operation: "state",
        })
    }

    /// Split-phase stepping for envs that compute elsewhere (the Python bridge): sends
    /// the action and returns `Ok(true)` without waiting; [`Env::step_wait`] collects
    /// the result. The default returns `Ok(false)`: no split phase, use `step`.
    /// [`VecEnv`] uses this to step all bridged copies at once.
    fn step_start(&mut self, action: &[f32]) -> Result<bool, EnvError> {
        let _ = action;
        Ok(false)
    }

    /// Completes a step begun by a `step_start` that returned `Ok(true)`.
    fn step_wait(&mut self, obs: &mut [f32]) -> Result<StepOutcome, EnvError> {
        let _ = obs;
        Err(EnvError::Unsupported {
            id: self.id().to_string(),
            operation: "step_wait without step_start",
        })
    }
}

impl<E: Env + ?Sized> Env for Box<E> {
    fn id(&self) -> &str {
        (**self).id()
    }
    fn observation_space(&self) -> &BoxSpace {
        (**self).observation_space()
    }
    fn action_space(&self) -> &BoxSpace {
        (**self).action_space()
    }
    fn max_episode_steps(&self) -> Option<u32> {
        (**self).max_episode_steps()
    }
    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) -> Result<(), EnvError> {
        (**self).reset(seed, obs)
    }
    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Result<StepOutcome, EnvError> {
        (**self).step(action, obs)
    }
    fn reset_to_state(&mut self, state: &[f64], obs: &mut [f32]) -> Result<(), EnvError> {
        (**self).reset_to_state(state, obs)
    }
    fn state(&mut self) -> Result<Vec<f64>, EnvError> {
        (**self).state()
    }
    fn step_start(&mut self, action: &[f32]) -> Result<bool, EnvError> {
        (**self).step_start(action)
    }
    fn step_wait(&mut self, obs: &mut [f32]) -> Result<StepOutcome, EnvError> {
        (**self).step_wait(obs)
    }
}
