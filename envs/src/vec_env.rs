//! N copies of an environment stepped together, with auto-reset.

use rayon::prelude::*;

use crate::{bridge, make, registered_ids, BoxSpace, Env, EnvError, StepOutcome};

/// Native copies are stepped on rayon's pool when there are at least this many; below,
/// the hand-off costs more than a native step (tens of nanoseconds).
const DEFAULT_PARALLEL_THRESHOLD: usize = 16;

/// N copies of one environment. Observations, actions and final observations are
/// row-major `N × dim` float32 buffers.
///
/// - Seeds: [`VecEnv::reset`] with seed `s` resets copy `i` with seed `s + i` (wrapping),
///   as Gymnasium's vector envs do; later auto-resets continue each copy's RNG.
/// - Auto-reset ("same step"): when copy `i` ends an episode (terminated or truncated),
///   its terminal observation is saved in [`VecEnv::final_observations`] and the copy is
///   reset at once, so [`VecEnv::observations`] always holds observations to act on.
/// - Parallelism: copies with a split-phase step (Python bridge workers) all start
///   their step before any is awaited, so the worker processes run concurrently;
///   native copies are stepped with rayon (from [`VecEnv::set_parallel_threshold`]
///   copies up, default 16; fewer run inline, which is faster).
pub struct VecEnv {
    envs: Vec<Box<dyn Env>>,
    obs: Vec<f32>,
    final_obs: Vec<f32>,
    outcomes: Vec<StepOutcome>,
    remote: Vec<bool>,
    obs_dim: usize,
    act_dim: usize,
    parallel_threshold: usize,
    needs_reset: bool,
}

/// One native copy's share of a step: (env, obs row), (action row, (outcome, remote)).
type LocalJob<'a> = (
    (&'a mut Box<dyn Env>, &'a mut [f32]),
    (&'a [f32], (&'a mut StepOutcome, &'a bool)),
);

fn step_local(((env, o), (act, (out, remote))): LocalJob<'_>) -> Result<(), EnvError> {
    if !*remote {
        *out = env.step(act, o)?;
    }
    Ok(())
}

/// The copies' results after [`VecEnv::step`]; borrows the vector env's buffers.
pub struct VecStep<'a> {
    /// Next observations (`N × obs_dim`), already reset for copies whose episode ended.
    pub obs: &'a [f32],
    /// Per copy: reward and flags of this step.
    pub outcomes: &'a [StepOutcome],
    /// Per copy: the terminal observation when `outcomes[i].done()`, else stale.
    pub final_obs: &'a [f32],
}

impl VecEnv {
    /// `n` copies of `id` as [`make`] makes them: native, else bridged with one Python
    /// worker per copy (all workers start concurrently).
    pub fn new(id: &str, n: usize) -> Result<Self, EnvError> {
        let envs = if registered_ids().contains(&id) {
            (0..n).map(|_| make(id)).collect::<Result<Vec<_>, _>>()?
        } else {
            bridge::make_many(id, n, &bridge::BridgeConfig::default())?
                .into_iter()
                .map(|e| Box::new(e) as Box<dyn Env>)
                .collect()
        };
        Self::from_envs(envs)
    }

    /// Copies built by the caller; they must share ids and spaces.
    pub fn from_envs(envs: Vec<Box<dyn Env>>) -> Result<Self, EnvError> {
        let first = envs
            .first()
            .ok_or_else(|| EnvError::Config("a vector env needs at least one copy".into()))?;
        for e in &envs[1..] {
            if e.id() != first.id()
                || e.observation_space() != first.observation_space()
                || e.action_space() != first.action_space()
            {
                return Err(EnvError::Config(format!(
                    "vector env copies differ: {} vs {}",
                    first.id(),
                    e.id()
                )));
            }
        }
        let n = envs.len();
        let obs_dim = first.observation_space().dim();
        let act_dim = first.action_space().dim();
        Ok(Self {
            obs: vec![0.0; n * obs_dim],
            final_obs: vec![0.0; n * obs_dim],
            outcomes: vec![
                StepOutcome {
                    reward: 0.0,
                    terminated: false,
                    truncated: false
                };
                n
            ],
            remote: vec![false; n],
            envs,
            obs_dim,
            act_dim,
            parallel_threshold: DEFAULT_PARALLEL_THRESHOLD,
            needs_reset: true,
        })
    }

    /// Native copies are stepped on rayon's pool when there are at least `n` of them.
    pub fn set_parallel_threshold(&mut self, n: usize) {
        self.parallel_threshold = n.max(1);
    }

    pub fn num_envs(&self) -> usize {
        self.envs.len()
    }
    pub fn id(&self) -> &str {
        self.envs[0].id()
    }
    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }
    pub fn act_dim(&self) -> usize {
        self.act_dim
    }
    pub fn observation_space(&self) -> &BoxSpace {
        self.envs[0].observation_space()
    }
    pub fn action_space(&self) -> &BoxSpace {
        self.envs[0].action_space()
    }
    pub fn max_episode_steps(&self) -> Option<u32> {
        self.envs[0].max_episode_steps()
    }
    /// Current observations, `N × obs_dim`.
    pub fn observations(&self) -> &[f32] {
        &self.obs
    }
    /// Terminal observations of the copies whose episode ended in the last step.
    pub fn final_observations(&self) -> &[f32] {
        &self.final_obs
    }
    /// Outcomes of the last step.
    pub fn outcomes(&self) -> &[StepOutcome] {
        &self.outcomes
    }
    /// The copies themselves (e.g. to read a copy's state).
    pub fn envs_mut(&mut self) -> &mut [Box<dyn Env>] {
        &mut self.envs
    }

    /// Resets every copy: copy `i` with `seed + i` (or continuing its RNG when `None`).
    /// Returns the first observations.
    pub fn reset(&mut self, seed: Option<u64>) -> Result<&[f32], EnvError> {
        let d = self.obs_dim;
        self.envs
            .par_iter_mut()
            .zip(self.obs.par_chunks_mut(d))
            .enumerate()
            .try_for_each(|(i, (env, o))| env.reset(seed.map(|s| s.wrapping_add(i as u64)), o))?;
        self.needs_reset = false;
        Ok(&self.obs)
    }

    /// Steps every copy with its row of `actions` (`N × act_dim`), auto-resetting the
    /// copies whose episode ends.
    pub fn step(&mut self, actions: &[f32]) -> Result<VecStep<'_>, EnvError> {
        if self.needs_reset {
            return Err(EnvError::ResetNeeded {
                id: self.id().to_string(),
            });
        }
        let (n, d, a) = (self.envs.len(), self.obs_dim, self.act_dim);
        if actions.len() != n * a {
            return Err(EnvError::ActionLength {
                id: format!("{} (vector of {n})", self.id()),
                expected: n * a,
                got: actions.len(),
            });
        }
        // A failure below leaves copies mid-episode in unknown states: reset required.
        self.needs_reset = true;
        // 1. Start every split-phase (bridged) copy so the workers run concurrently. A
        //    single copy steps synchronously (a bridged one then runs on this CPU).
        let mut any_local = 0usize;
        if n == 1 {
            self.remote[0] = false;
            self.outcomes[0] = self.envs[0].step(actions, &mut self.obs[..d])?;
        } else {
            for (i, env) in self.envs.iter_mut().enumerate() {
                self.remote[i] = env.step_start(&actions[i * a..(i + 1) * a])?;
                any_local += usize::from(!self.remote[i]);
            }
        }
        // 2. Step native copies meanwhile.
        if any_local >= self.parallel_threshold {
            self.envs
                .par_iter_mut()
                .zip(self.obs.par_chunks_mut(d))
                .zip(
                    actions
                        .par_chunks(a)
                        .zip(self.outcomes.par_iter_mut().zip(self.remote.par_iter())),
                )
                .try_for_each(step_local)?;
        } else if any_local > 0 {
            self.envs
                .iter_mut()
                .zip(self.obs.chunks_mut(d))
                .zip(
                    actions
                        .chunks(a)
                        .zip(self.outcomes.iter_mut().zip(self.remote.iter())),
                )
                .try_for_each(step_local)?;
        }
        // 3. Collect the split-phase copies.
        for (i, env) in self.envs.iter_mut().enumerate() {
            if self.remote[i] {
                self.outcomes[i] = env.step_wait(&mut self.obs[i * d..(i + 1) * d])?;
            }
        }
        // 4. Auto-reset finished copies, keeping their terminal observation.
        for i in 0..n {
            if self.outcomes[i].done() {
                self.final_obs[i * d..(i + 1) * d].copy_from_slice(&self.obs[i * d..(i + 1) * d]);
                self.envs[i].reset(None, &mut self.obs[i * d..(i + 1) * d])?;
            }
        }
        self.needs_reset = false;
        Ok(VecStep {
            obs: &self.obs,
            outcomes: &self.outcomes,
            final_obs: &self.final_obs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::make_native;

    fn vec_of(id: &str, n: usize) -> VecEnv {
        VecEnv::from_envs((0..n).map(|_| make_native(id).unwrap()).collect()).unwrap()
    }

    #[test]
    fn copies_are_seeded_seed_plus_index_and_auto_reset_keeps_final_obs() {
        let n = 3;
        let mut v = vec_of("Pendulum-v1", n);
        assert!(v.step(&[0.0; 3]).is_err(), "step before reset");
        v.reset(Some(10)).unwrap();
        let mut single = make_native("Pendulum-v1").unwrap();
        let mut o = [0.0f32; 3];
        for i in 0..n {
            single.reset(Some(10 + i as u64), &mut o).unwrap();
            assert_eq!(&v.observations()[i * 3..(i + 1) * 3], &o);
        }
        // Reference: copy 1 alone, same seed, same actions.
        single.reset(Some(11), &mut o).unwrap();
        let actions: Vec<f32> = (0..n).map(|i| 0.5 * i as f32 - 0.5).collect();
        for t in 0..200 {
            let r = single.step(&actions[1..2], &mut o).unwrap();
            let s = v.step(&actions).unwrap();
            assert_eq!(s.outcomes[1], r);
            if t < 199 {
                assert!(!s.outcomes.iter().any(|x| x.done()));
                assert_eq!(&s.obs[3..6], &o);
            } else {
                assert!(s.outcomes.iter().all(|x| x.truncated && !x.terminated));
                assert_eq!(&s.final_obs[3..6], &o);
                assert_ne!(&s.obs[3..6], &o, "copy was reset");
            }
        }
        // After the auto-reset the episode continues for another 200 steps.
        let s = v.step(&actions).unwrap();
        assert!(!s.outcomes.iter().any(|x| x.done()));
    }

    #[test]
    fn parallel_and_inline_stepping_agree_and_bad_actions_are_errors() {
        let n = 6;
        let mut a = vec_of("MountainCarContinuous-v0", n);
        let mut b = vec_of("MountainCarContinuous-v0", n);
        a.set_parallel_threshold(1);
        b.set_parallel_threshold(1000);
        a.reset(Some(5)).unwrap();
        b.reset(Some(5)).unwrap();
        for t in 0..300 {
            let acts: Vec<f32> = (0..n)
                .map(|i| ((t * 7 + i * 13) % 11) as f32 / 5.0 - 1.0)
                .collect();
            let ra = a.step(&acts).unwrap().outcomes.to_vec();
            let rb = b.step(&acts).unwrap().outcomes.to_vec();
            assert_eq!(ra, rb);
            assert_eq!(a.observations(), b.observations());
        }
        assert!(matches!(
            a.step(&[0.0; 5]),
            Err(EnvError::ActionLength { .. })
        ));
        let mut acts = vec![0.0; n];
        acts[4] = f32::NAN;
        assert!(matches!(
            a.step(&acts),
            Err(EnvError::NonFiniteAction { .. })
        ));
        assert!(VecEnv::from_envs(vec![]).is_err());
        let mixed = vec![
            make_native("Pendulum-v1").unwrap(),
            make_native("MountainCarContinuous-v0").unwrap(),
        ];
        assert!(VecEnv::from_envs(mixed).is_err());
    }
}
