//! Pendulum-v1: swing a pendulum up and keep it upright with a bounded torque.

use super::{check_state, EnvRng};
use crate::{BoxSpace, Env, EnvError, StepOutcome};

const ID: &str = "Pendulum-v1";
const MAX_SPEED: f64 = 8.0;
const MAX_TORQUE: f32 = 2.0;
const DT: f64 = 0.05;
const MASS: f64 = 1.0;
const LENGTH: f64 = 1.0;

/// Gymnasium's `PendulumEnv` (without its `TimeLimit`; [`crate::make`] adds the
/// registered 200 steps). State `[theta, theta_dot]` in float64; observation
/// `[cos theta, sin theta, theta_dot]` rounded to float32.
#[derive(Debug, Clone)]
pub struct Pendulum {
    g: f64,
    state: Option<[f64; 2]>,
    rng: EnvRng,
    obs_space: BoxSpace,
    act_space: BoxSpace,
}

impl Default for Pendulum {
    fn default() -> Self {
        Self::new()
    }
}

impl Pendulum {
    /// Gravity 10.0, Gymnasium's default.
    pub fn new() -> Self {
        Self::with_gravity(10.0)
    }

    /// Gymnasium's `g` argument.
    pub fn with_gravity(g: f64) -> Self {
        let high = vec![1.0, 1.0, MAX_SPEED as f32];
        Self {
            g,
            state: None,
            rng: EnvRng::from_entropy(),
            obs_space: BoxSpace::new(high.iter().map(|h| -h).collect(), high),
            act_space: BoxSpace::uniform(1, -MAX_TORQUE, MAX_TORQUE),
        }
    }

    fn write_obs(state: [f64; 2], obs: &mut [f32]) {
        let [th, thdot] = state;
        obs[0] = th.cos() as f32;
        obs[1] = th.sin() as f32;
        obs[2] = thdot as f32;
    }
}

/// NumPy's float `%` (floor modulo: the result takes the divisor's sign).
fn floor_mod(a: f64, b: f64) -> f64 {
    let m = a % b;
    if m == 0.0 {
        0.0f64.copysign(b)
    } else if (b < 0.0) != (m < 0.0) {
        m + b
    } else {
        m
    }
}

/// Wraps an angle into `[-pi, pi)` as Gymnasium's `angle_normalize`.
fn angle_normalize(x: f64) -> f64 {
    use std::f64::consts::PI;
    floor_mod(x + PI, 2.0 * PI) - PI
}

impl Env for Pendulum {
    fn id(&self) -> &str {
        ID
    }
    fn observation_space(&self) -> &BoxSpace {
        &self.obs_space
    }
    fn action_space(&self) -> &BoxSpace {
        &self.act_space
    }
    fn max_episode_steps(&self) -> Option<u32> {
        None
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) -> Result<(), EnvError> {
        self.obs_space.check_obs_buffer(ID, obs)?;
        self.rng.reseed(seed);
        let th = self
            .rng
            .uniform(-std::f64::consts::PI, std::f64::consts::PI);
        let thdot = self.rng.uniform(-1.0, 1.0);
        self.state = Some([th, thdot]);
        Self::write_obs([th, thdot], obs);
        Ok(())
    }

    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Result<StepOutcome, EnvError> {
        self.act_space.check_action(ID, action)?;
        self.obs_space.check_obs_buffer(ID, obs)?;
        let [th, thdot] = self
            .state
            .ok_or_else(|| EnvError::ResetNeeded { id: ID.into() })?;
        // np.clip on the float32 action: stays float32.
        let u: f32 = action[0].clamp(-MAX_TORQUE, MAX_TORQUE);
        // `0.001 * u**2` is float32 arithmetic (a Python float meets a float32 scalar);
        // the angle and speed terms are float64.
        let torque_cost = (0.001f64 as f32) * (u * u);
        let th_n = angle_normalize(th);
        let costs = th_n * th_n + 0.1 * (thdot * thdot) + f64::from(torque_cost);
        // `3.0 / (m l^2) * u` is float32 too; the gravity term is float64.
        let gravity_coef = 3.0 * self.g / (2.0 * LENGTH);
        let torque_coef = (3.0 / (MASS * LENGTH * LENGTH)) as f32;
        let accel = gravity_coef * th.sin() + f64::from(torque_coef * u);
        let newthdot = (thdot + accel * DT).clamp(-MAX_SPEED, MAX_SPEED);
        let newth = th + newthdot * DT;
        self.state = Some([newth, newthdot]);
        Self::write_obs([newth, newthdot], obs);
        Ok(StepOutcome {
            reward: -costs,
            terminated: false,
            truncated: false,
        })
    }

    fn reset_to_state(&mut self, state: &[f64], obs: &mut [f32]) -> Result<(), EnvError> {
        check_state(ID, state, 2)?;
        self.obs_space.check_obs_buffer(ID, obs)?;
        let s = [state[0], state[1]];
        self.state = Some(s);
        Self::write_obs(s, obs);
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<f64>, EnvError> {
        self.state
            .map(|s| s.to_vec())
            .ok_or_else(|| EnvError::ResetNeeded { id: ID.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn angle_normalize_matches_numpy_floor_modulo() {
        use std::f64::consts::PI;
        assert_eq!(angle_normalize(0.0), 0.0);
        assert!((angle_normalize(3.0 * PI / 2.0) + PI / 2.0).abs() < 1e-12);
        assert!((angle_normalize(-3.0 * PI / 2.0) - PI / 2.0).abs() < 1e-12);
        assert_eq!(angle_normalize(PI), -PI);
        assert_eq!(floor_mod(-1.0, 3.0), 2.0);
        assert_eq!(floor_mod(1.0, -3.0), -2.0);
        assert!(floor_mod(-3.0, 3.0) == 0.0 && floor_mod(-3.0, 3.0).is_sign_positive());
    }

    #[test]
    fn reset_draws_gymnasium_initial_distribution_and_is_deterministic_per_seed() {
        let mut env = Pendulum::new();
        let mut a = [0.0f32; 3];
        let mut b = [0.0f32; 3];
        env.reset(Some(7), &mut a).unwrap();
        let s7 = env.state().unwrap();
        env.reset(Some(7), &mut b).unwrap();
        assert_eq!(a, b);
        env.reset(Some(8), &mut b).unwrap();
        assert_ne!(a, b);
        assert_eq!(s7.len(), 2);
        for seed in 0..500 {
            env.reset(Some(seed), &mut a).unwrap();
            let s = env.state().unwrap();
            assert!(s[0].abs() <= std::f64::consts::PI && s[1].abs() <= 1.0);
        }
    }
}
