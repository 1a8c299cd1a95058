//! Interop with the `gymnasium-rs` crate (0.1).
//!
//! - [`GymRsAdapter`]: any of our [`Env`]s as a `gymnasium_rs::core::Env<Array1<f32>,
//!   Array1<f32>>`.
//! - [`FromGymRs::continuous`]: a gymnasium-rs env with Box spaces as one of ours.
//! - [`Discretize`] ([`FromGymRs::discretized`]): a gymnasium-rs env with a
//!   `Discrete(n)` action space as one of ours
//!   with a one-dimensional continuous action in `[-1, 1]`, so a continuous-action agent
//!   (DDPG, TD3) can train on it. The interval is cut into `n` equal bins and the bin
//!   holding the (clipped) action is the discrete action: for CartPole (`n = 2`) a
//!   negative action pushes the cart left (0), zero or positive pushes right (1).
//!   [`discretized_cartpole`] builds gymnasium-rs's CartPole this way with CartPole-v1's
//!   500-step time limit; it is registered as `gymnasium-rs/CartPole-v1`.
//!
//! gymnasium-rs's trait has no error channel: when [`GymRsAdapter::step`] gets an invalid
//! action it returns the previous observation, a NaN reward, `terminated = true` and the
//! error text under `info["error"]`. gymnasium-rs seeds are `i32`; our `u64` seeds are
//! folded to their low 32 bits. Its CartPole returns reward 0 (not 1) on the terminating
//! step. Stepping through gymnasium-rs allocates (it returns owned arrays and maps).

use std::collections::HashMap;
use std::marker::PhantomData;

use gymnasium_ndarray::Array1;
use gymnasium_rs::core::{Env as GymEnv, Info, Options, Reward, Space};
use gymnasium_rs::envs::cartpole::CartPole;

use crate::{BoxSpace, Env, EnvError, StepOutcome, TimeLimit};

/// The registry id of gymnasium-rs's CartPole behind [`Discretize`].
pub const CARTPOLE_ID: &str = "gymnasium-rs/CartPole-v1";

fn to_gym_space(space: &BoxSpace) -> Space {
    Space::Box {
        low: Array1::from(space.low.clone()),
        high: Array1::from(space.high.clone()),
    }
}

fn from_gym_box(id: &str, what: &str, space: Space) -> Result<BoxSpace, EnvError> {
    match space {
        Space::Box { low, high } => Ok(BoxSpace::new(low.to_vec(), high.to_vec())),
        Space::Discrete(n) => Err(EnvError::Config(format!(
            "{id}: the {what} space is Discrete({n}), not a Box (for Discrete actions use \
             envs::interop::Discretize)"
        ))),
    }
}

fn fold_seed(seed: u64) -> i32 {
    seed as u32 as i32
}

/// One of our envs seen through gymnasium-rs's `Env` trait.
pub struct GymRsAdapter<E> {
    env: E,
    obs: Vec<f32>,
}

impl<E: Env> GymRsAdapter<E> {
    pub fn new(env: E) -> Self {
        let dim = env.observation_space().dim();
        Self {
            env,
            obs: vec![0.0; dim],
        }
    }

    pub fn into_inner(self) -> E {
        self.env
    }

    fn error_info(e: &EnvError) -> Info {
        let mut info = Info::new();
        info.insert("error".into(), serde_json::Value::String(e.to_string()));
        info
    }
}

impl<E: Env> GymEnv<Array1<f32>, Array1<f32>> for GymRsAdapter<E> {
    fn observation_space(&self) -> Space {
        to_gym_space(self.env.observation_space())
    }

    fn action_space(&self) -> Space {
        to_gym_space(self.env.action_space())
    }

    fn reset(&mut self, seed: Option<i32>, _options: Options) -> (Array1<f32>, Info) {
        // Seeds are reinterpreted as u32 so negative i32 seeds stay distinct.
        let seed = seed.map(|s| u64::from(s as u32));
        match self.env.reset(seed, &mut self.obs) {
            Ok(()) => (Array1::from(self.obs.clone()), Info::new()),
            Err(e) => (Array1::from(self.obs.clone()), Self::error_info(&e)),
        }
    }

    fn step(&mut self, action: Array1<f32>) -> (Array1<f32>, Reward, bool, bool, Info) {
        let act = action.to_vec();
        match self.env.step(&act, &mut self.obs) {
            Ok(o) => (
                Array1::from(self.obs.clone()),
                o.reward as Reward,
                o.terminated,
                o.truncated,
                Info::new(),
            ),
            Err(e) => (
                Array1::from(self.obs.clone()),
                Reward::NAN,
                true,
                false,
                Self::error_info(&e),
            ),
        }
    }

    fn render(&self) -> Option<gymnasium_ndarray::Array3<u8>> {
        None
    }

    fn close(&mut self) {}
}

fn copy_obs(
    id: &str,
    space: &BoxSpace,
    src: &Array1<f32>,
    obs: &mut [f32],
) -> Result<(), EnvError> {
    space.check_obs_buffer(id, obs)?;
    if src.len() != obs.len() {
        return Err(EnvError::ObservationLength {
            id: id.to_string(),
            expected: obs.len(),
            got: src.len(),
        });
    }
    obs.iter_mut().zip(src.iter()).for_each(|(o, s)| *o = *s);
    Ok(())
}

/// A gymnasium-rs env as one of ours. With `A = Array1<f32>` (a Box action space) the
/// action passes through; with `A = i32` (a `Discrete(n)` action space, see
/// [`Discretize`]) our one-dimensional action in `[-1, 1]` picks one of `n` bins.
pub struct FromGymRs<G, A = Array1<f32>> {
    inner: G,
    id: String,
    obs_space: BoxSpace,
    act_space: BoxSpace,
    /// Number of discrete actions (unused for Box actions).
    bins: i32,
    started: bool,
    _action: PhantomData<fn() -> A>,
}

/// gymnasium-rs's CartPole-style envs (`Discrete(n)` actions) driven by one continuous
/// action (see the module docs).
pub type Discretize<G> = FromGymRs<G, i32>;

/// How our float32 action becomes a gymnasium-rs action.
pub trait GymRsAction: Sized {
    fn from_continuous(action: &[f32], bins: i32) -> Self;
}

impl GymRsAction for Array1<f32> {
    fn from_continuous(action: &[f32], _bins: i32) -> Self {
        Array1::from(action.to_vec())
    }
}

impl GymRsAction for i32 {
    fn from_continuous(action: &[f32], bins: i32) -> Self {
        bin_of(action[0], bins)
    }
}

/// The bin of width `2 / bins` in `[-1, 1]` holding the clipped action (1.0 falls in
/// the last bin): for two bins, negative → 0, zero or positive → 1.
pub fn bin_of(action: f32, bins: i32) -> i32 {
    let a = f64::from(action.clamp(-1.0, 1.0));
    let b = ((a + 1.0) / 2.0 * f64::from(bins)).floor() as i32;
    b.min(bins - 1)
}

impl<G, A> FromGymRs<G, A>
where
    G: GymEnv<Array1<f32>, A> + Send,
{
    fn build(id: String, inner: G, act_space: BoxSpace, bins: i32) -> Result<Self, EnvError> {
        let obs_space = from_gym_box(&id, "observation", inner.observation_space())?;
        Ok(Self {
            inner,
            id,
            obs_space,
            act_space,
            bins,
            started: false,
            _action: PhantomData,
        })
    }

    pub fn inner(&self) -> &G {
        &self.inner
    }
}

impl<G: GymEnv<Array1<f32>, Array1<f32>> + Send> FromGymRs<G> {
    /// A Box-action env; fails when a space is not a Box.
    pub fn continuous(id: impl Into<String>, inner: G) -> Result<Self, EnvError> {
        let id = id.into();
        let act_space = from_gym_box(&id, "action", inner.action_space())?;
        Self::build(id, inner, act_space, 0)
    }
}

impl<G: GymEnv<Array1<f32>, i32> + Send> FromGymRs<G, i32> {
    /// A `Discrete(n)`-action env behind the binning; fails unless `n >= 1` and the
    /// observation space is a Box.
    pub fn discretized(id: impl Into<String>, inner: G) -> Result<Self, EnvError> {
        let id = id.into();
        let bins = match inner.action_space() {
            Space::Discrete(n) if n >= 1 => n,
            other => {
                return Err(EnvError::Config(format!(
                    "{id}: Discretize needs a Discrete(n >= 1) action space, got {other:?}"
                )))
            }
        };
        Self::build(id, inner, BoxSpace::uniform(1, -1.0, 1.0), bins)
    }

    /// The discrete action a continuous action maps to.
    pub fn bin_of(&self, action: f32) -> i32 {
        bin_of(action, self.bins)
    }
}

impl<G, A> Env for FromGymRs<G, A>
where
    G: GymEnv<Array1<f32>, A> + Send,
    A: GymRsAction,
{
    fn id(&self) -> &str {
        &self.id
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
        let (o, _) = self.inner.reset(seed.map(fold_seed), HashMap::new());
        copy_obs(&self.id, &self.obs_space, &o, obs)?;
        self.started = true;
        Ok(())
    }
    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Result<StepOutcome, EnvError> {
        self.act_space.check_action(&self.id, action)?;
        if !self.started {
            return Err(EnvError::ResetNeeded {
                id: self.id.clone(),
            });
        }
        let (o, reward, terminated, truncated, _) =
            self.inner.step(A::from_continuous(action, self.bins));
        copy_obs(&self.id, &self.obs_space, &o, obs)?;
        Ok(StepOutcome {
            reward: f64::from(reward),
            terminated,
            truncated,
        })
    }
}

/// gymnasium-rs's CartPole with a continuous action in `[-1, 1]` (negative: push left,
/// otherwise right) and CartPole-v1's 500-step time limit.
pub fn discretized_cartpole() -> TimeLimit<Discretize<CartPole>> {
    let env = Discretize::discretized(CARTPOLE_ID, CartPole::new())
        .expect("gymnasium-rs CartPole has Discrete(2) actions and Box observations");
    TimeLimit::new(env, 500)
}
