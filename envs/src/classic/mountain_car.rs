//! MountainCarContinuous-v0: drive an underpowered car up a hill.
//!
//! Gymnasium's implementation mixes NumPy float32 scalars, NumPy float64 scalars and
//! Python floats, and which one a variable holds changes from step to step (the state
//! is float64 after `reset` and float32 after every `step`; a clipped action or speed
//! becomes a Python float). NumPy 2 computes `float32 op python-float` in float32 and
//! `float32 op float64` in float64. [`Num`] tracks that type so every operation rounds
//! where Gymnasium's does.

use super::{check_state, EnvRng};
use crate::{BoxSpace, Env, EnvError, StepOutcome};

const ID: &str = "MountainCarContinuous-v0";
const MIN_ACTION: f64 = -1.0;
const MAX_ACTION: f64 = 1.0;
const MIN_POSITION: f64 = -1.2;
const MAX_POSITION: f64 = 0.6;
const MAX_SPEED: f64 = 0.07;
const GOAL_POSITION: f64 = 0.45;
const GOAL_VELOCITY: f64 = 0.0;
const POWER: f64 = 0.0015;

/// Which Python type holds a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    /// `numpy.float32`
    F32,
    /// `numpy.float64`
    F64,
    /// A Python `float`/`int` ("weak": takes the NumPy operand's precision).
    Py,
}

/// A scalar together with its Python type; arithmetic follows NumPy 2 promotion.
#[derive(Clone, Copy, Debug)]
struct Num {
    v: f64,
    ty: Ty,
}

impl Num {
    const fn py(v: f64) -> Self {
        Self { v, ty: Ty::Py }
    }

    fn result_ty(self, o: Self) -> Ty {
        match (self.ty, o.ty) {
            (Ty::F64, _) | (_, Ty::F64) => Ty::F64,
            (Ty::F32, _) | (_, Ty::F32) => Ty::F32,
            _ => Ty::Py,
        }
    }

    fn arith(self, o: Self, f64_op: fn(f64, f64) -> f64, f32_op: fn(f32, f32) -> f32) -> Self {
        let ty = self.result_ty(o);
        let v = if ty == Ty::F32 {
            f64::from(f32_op(self.v as f32, o.v as f32))
        } else {
            f64_op(self.v, o.v)
        };
        Self { v, ty }
    }

    fn add(self, o: Self) -> Self {
        self.arith(o, |a, b| a + b, |a, b| a + b)
    }
    fn sub(self, o: Self) -> Self {
        self.arith(o, |a, b| a - b, |a, b| a - b)
    }
    fn mul(self, o: Self) -> Self {
        self.arith(o, |a, b| a * b, |a, b| a * b)
    }

    /// Comparison in the promoted precision (`np.float32(-1.2) == -1.2` is True).
    fn cmp(self, o: Self) -> Option<std::cmp::Ordering> {
        if self.result_ty(o) == Ty::F32 {
            (self.v as f32).partial_cmp(&(o.v as f32))
        } else {
            self.v.partial_cmp(&o.v)
        }
    }
    fn gt(self, o: Self) -> bool {
        self.cmp(o) == Some(std::cmp::Ordering::Greater)
    }
    fn lt(self, o: Self) -> bool {
        self.cmp(o) == Some(std::cmp::Ordering::Less)
    }
    fn eq(self, o: Self) -> bool {
        self.cmp(o) == Some(std::cmp::Ordering::Equal)
    }
    fn ge(self, o: Self) -> bool {
        matches!(
            self.cmp(o),
            Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
        )
    }
}

/// Gymnasium's `Continuous_MountainCarEnv` (without its `TimeLimit`; [`crate::make`]
/// adds the registered 999 steps). State `[position, velocity]`.
#[derive(Debug, Clone)]
pub struct MountainCarContinuous {
    state: Option<[f64; 2]>,
    /// float64 right after a reset, float32 after a step.
    state_ty: Ty,
    rng: EnvRng,
    obs_space: BoxSpace,
    act_space: BoxSpace,
}

impl Default for MountainCarContinuous {
    fn default() -> Self {
        Self::new()
    }
}

impl MountainCarContinuous {
    pub fn new() -> Self {
        Self {
            state: None,
            state_ty: Ty::F64,
            rng: EnvRng::from_entropy(),
            obs_space: BoxSpace::new(
                vec![MIN_POSITION as f32, -MAX_SPEED as f32],
                vec![MAX_POSITION as f32, MAX_SPEED as f32],
            ),
            act_space: BoxSpace::uniform(1, MIN_ACTION as f32, MAX_ACTION as f32),
        }
    }

    fn write_obs(state: [f64; 2], obs: &mut [f32]) {
        obs[0] = state[0] as f32;
        obs[1] = state[1] as f32;
    }

    fn start(&mut self, state: [f64; 2], obs: &mut [f32]) {
        self.state = Some(state);
        self.state_ty = Ty::F64;
        Self::write_obs(state, obs);
    }
}

impl Env for MountainCarContinuous {
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
        let position = self.rng.uniform(-0.6, -0.4);
        self.start([position, 0.0], obs);
        Ok(())
    }

    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Result<StepOutcome, EnvError> {
        self.act_space.check_action(ID, action)?;
        self.obs_space.check_obs_buffer(ID, obs)?;
        let state = self
            .state
            .ok_or_else(|| EnvError::ResetNeeded { id: ID.into() })?;
        let mut position = Num {
            v: state[0],
            ty: self.state_ty,
        };
        let mut velocity = Num {
            v: state[1],
            ty: self.state_ty,
        };
        let a = Num {
            v: f64::from(action[0]),
            ty: Ty::F32,
        };
        // force = min(max(a, -1.0), 1.0): Python's builtins keep the float32 action
        // unless a bound wins, which is then a Python float.
        let lo = Num::py(MIN_ACTION);
        let hi = Num::py(MAX_ACTION);
        let mut force = if lo.gt(a) { lo } else { a };
        if hi.lt(force) {
            force = hi;
        }
        // velocity += force * power - 0.0025 * math.cos(3 * position)
        let hill = Num::py(0.0025 * Num::py(3.0).mul(position).v.cos());
        velocity = velocity.add(force.mul(Num::py(POWER)).sub(hill));
        if velocity.gt(Num::py(MAX_SPEED)) {
            velocity = Num::py(MAX_SPEED);
        }
        if velocity.lt(Num::py(-MAX_SPEED)) {
            velocity = Num::py(-MAX_SPEED);
        }
        position = position.add(velocity);
        if position.gt(Num::py(MAX_POSITION)) {
            position = Num::py(MAX_POSITION);
        }
        if position.lt(Num::py(MIN_POSITION)) {
            position = Num::py(MIN_POSITION);
        }
        if position.eq(Num::py(MIN_POSITION)) && velocity.lt(Num::py(0.0)) {
            velocity = Num::py(0.0);
        }
        let terminated = position.ge(Num::py(GOAL_POSITION)) && velocity.ge(Num::py(GOAL_VELOCITY));
        // The reward uses the unclipped action: math.pow(action[0], 2) * 0.1 in float64.
        let bonus = if terminated { 100.0 } else { 0.0 };
        let reward = bonus - a.v * a.v * 0.1;
        // self.state = np.array([position, velocity], dtype=np.float32)
        let next = [f64::from(position.v as f32), f64::from(velocity.v as f32)];
        self.state = Some(next);
        self.state_ty = Ty::F32;
        Self::write_obs(next, obs);
        Ok(StepOutcome {
            reward,
            terminated,
            truncated: false,
        })
    }

    fn reset_to_state(&mut self, state: &[f64], obs: &mut [f32]) -> Result<(), EnvError> {
        check_state(ID, state, 2)?;
        self.obs_space.check_obs_buffer(ID, obs)?;
        self.start([state[0], state[1]], obs);
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
    fn numpy_promotion_rules() {
        let f32v = Num {
            v: f64::from(0.1f32),
            ty: Ty::F32,
        };
        // float32 op python float stays float32
        let r = f32v.mul(Num::py(POWER));
        assert_eq!(r.ty, Ty::F32);
        assert_eq!(r.v, f64::from(0.1f32 * (POWER as f32)));
        // float64 op float32 is float64
        let r = Num {
            v: 0.5,
            ty: Ty::F64,
        }
        .add(f32v);
        assert_eq!(r.ty, Ty::F64);
        assert_eq!(r.v, 0.5 + f64::from(0.1f32));
        // np.float32(-1.2) == -1.2 in NumPy 2
        let p = Num {
            v: f64::from(-1.2f32),
            ty: Ty::F32,
        };
        assert!(p.eq(Num::py(-1.2)) && !p.lt(Num::py(-1.2)));
        assert!(Num::py(f64::from(-1.2f32)).lt(Num::py(-1.2)));
    }

    #[test]
    fn reset_distribution_and_clipping() {
        let mut env = MountainCarContinuous::new();
        let mut obs = [0.0f32; 2];
        for seed in 0..200 {
            env.reset(Some(seed), &mut obs).unwrap();
            assert!((-0.6..-0.4).contains(&obs[0]) && obs[1] == 0.0, "{obs:?}");
        }
        // An action beyond the bound moves the car like the bound, but costs its square.
        let mut a = MountainCarContinuous::new();
        let mut b = MountainCarContinuous::new();
        let (mut oa, mut ob) = ([0.0f32; 2], [0.0f32; 2]);
        a.reset_to_state(&[-0.5, 0.0], &mut oa).unwrap();
        b.reset_to_state(&[-0.5, 0.0], &mut ob).unwrap();
        let ra = a.step(&[5.0], &mut oa).unwrap();
        let rb = b.step(&[1.0], &mut ob).unwrap();
        assert_eq!(oa, ob);
        assert!((ra.reward + 2.5).abs() < 1e-12 && (rb.reward + 0.1).abs() < 1e-12);
    }
}
