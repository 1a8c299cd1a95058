//! Gymnasium's `TimeLimit` wrapper.

use crate::{BoxSpace, Env, EnvError, StepOutcome};

/// Sets `truncated` once `max_episode_steps` steps have been taken since the last reset,
/// exactly as Gymnasium's `TimeLimit` (`elapsed >= max` after incrementing).
#[derive(Debug)]
pub struct TimeLimit<E> {
    env: E,
    max_episode_steps: u32,
    elapsed: u32,
}

impl<E: Env> TimeLimit<E> {
    pub fn new(env: E, max_episode_steps: u32) -> Self {
        Self {
            env,
            max_episode_steps,
            elapsed: 0,
        }
    }

    /// Steps taken since the last reset.
    pub fn elapsed_steps(&self) -> u32 {
        self.elapsed
    }

    pub fn inner(&self) -> &E {
        &self.env
    }

    pub fn inner_mut(&mut self) -> &mut E {
        &mut self.env
    }

    pub fn into_inner(self) -> E {
        self.env
    }

    fn count(&mut self, mut out: StepOutcome) -> StepOutcome {
        self.elapsed = self.elapsed.saturating_add(1);
        if self.elapsed >= self.max_episode_steps {
            out.truncated = true;
        }
        out
    }
}

impl<E: Env> Env for TimeLimit<E> {
    fn id(&self) -> &str {
        self.env.id()
    }
    fn observation_space(&self) -> &BoxSpace {
        self.env.observation_space()
    }
    fn action_space(&self) -> &BoxSpace {
        self.env.action_space()
    }
    fn max_episode_steps(&self) -> Option<u32> {
        Some(self.max_episode_steps)
    }
    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) -> Result<(), EnvError> {
        self.elapsed = 0;
        self.env.reset(seed, obs)
    }
    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Result<StepOutcome, EnvError> {
        let out = self.env.step(action, obs)?;
        Ok(self.count(out))
    }
    fn reset_to_state(&mut self, state: &[f64], obs: &mut [f32]) -> Result<(), EnvError> {
        self.elapsed = 0;
        self.env.reset_to_state(state, obs)
    }
    fn state(&mut self) -> Result<Vec<f64>, EnvError> {
        self.env.state()
    }
    fn step_start(&mut self, action: &[f32]) -> Result<bool, EnvError> {
        self.env.step_start(action)
    }
    fn step_wait(&mut self, obs: &mut [f32]) -> Result<StepOutcome, EnvError> {
        let out = self.env.step_wait(obs)?;
        Ok(self.count(out))
    }
}
