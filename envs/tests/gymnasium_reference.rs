//! The native ports reproduce Python Gymnasium 1.4.0's recorded episodes
//! (`$FIXAR_SHARED_DIR/testdata/gymnasium/classic_control.json`).

use envs::reference::{self, ReferenceFile, DEFAULT_TOLERANCE};
use envs::{make_native, registered_ids, BoxSpace, Env, EnvError, StepOutcome};

fn load() -> ReferenceFile {
    let dir = std::env::var("FIXAR_SHARED_DIR").unwrap_or_else(|_| env!("FIXAR_SHARED_DIR").into());
    let path = std::path::Path::new(&dir).join("testdata/gymnasium/classic_control.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    reference::parse(&text).expect("reference file parses")
}

#[test]
fn every_recorded_episode_matches_within_1e5_with_identical_flags() {
    let file = load();
    assert!(file.episodes.len() >= 2);
    let reports = reference::replay_file(&file, DEFAULT_TOLERANCE);
    for r in &reports {
        assert!(r.passed, "episode {} ({}): {:?}", r.index, r.env, r);
        assert_eq!(r.steps, file.episodes[r.index].actions.len());
    }
    let summary = reference::summarize(&reports);
    let ids: Vec<&str> = summary.iter().map(|s| s.env.as_str()).collect();
    assert!(ids.contains(&"Pendulum-v1") && ids.contains(&"MountainCarContinuous-v0"));
    // The file exercises the time limits and termination of both envs.
    for ep in &file.episodes {
        let last = ep.actions.len() - 1;
        assert!(ep.terminated[last] || ep.truncated[last]);
    }
    for s in &summary {
        assert!(
            s.max_obs_dev <= DEFAULT_TOLERANCE && s.max_reward_dev <= DEFAULT_TOLERANCE,
            "{s:?}"
        );
    }
}

#[test]
fn replay_detects_a_perturbed_recording() {
    let mut file = load();
    let ep = &mut file.episodes[0];
    ep.obs[5][0] += 1e-4;
    let r = reference::replay_on(
        make_native(&ep.env).unwrap().as_mut(),
        ep,
        0,
        DEFAULT_TOLERANCE,
    );
    assert!(!r.passed && r.max_obs_dev > 9e-5, "{r:?}");

    let mut file = load();
    let ep = &mut file.episodes[1];
    let n = ep.truncated.len();
    ep.truncated[n - 1] = false;
    let r = reference::replay_on(
        make_native(&ep.env).unwrap().as_mut(),
        ep,
        1,
        DEFAULT_TOLERANCE,
    );
    assert_eq!(r.first_flag_mismatch, Some(n - 1));
    assert!(!r.passed);

    let mut file = load();
    let ep = &mut file.episodes[2];
    ep.rewards.pop();
    let r = reference::replay_on(
        make_native(&ep.env).unwrap().as_mut(),
        ep,
        2,
        DEFAULT_TOLERANCE,
    );
    assert!(r.error.is_some() && !r.passed);
}

#[test]
fn clipping_uses_gymnasium_float_types() {
    // Out-of-range actions are in the recordings; a float64 reimplementation that clips
    // in float64 throughout drifts away. Check two hand cases directly as well.
    let mut env = make_native("Pendulum-v1").unwrap();
    let mut obs = [0.0f32; 3];
    let mut obs2 = [0.0f32; 3];
    env.reset_to_state(&[0.3, -0.2], &mut obs).unwrap();
    let big = env.step(&[7.5], &mut obs).unwrap();
    env.reset_to_state(&[0.3, -0.2], &mut obs2).unwrap();
    let bound = env.step(&[2.0], &mut obs2).unwrap();
    assert_eq!(obs, obs2);
    assert_eq!(big.reward, bound.reward);
    assert!(registered_ids().contains(&"Pendulum-v1"));
}

/// Wraps an env and turns one observation element or one reward into NaN, as a broken
/// port or a diverging MuJoCo worker would.
struct Poisoned {
    inner: Box<dyn Env>,
    /// Steps since reset (0: the reset's observation).
    step: usize,
    /// (step, Some(element)) poisons that observation element, (step, None) the reward.
    at: (usize, Option<usize>),
}

impl Env for Poisoned {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn observation_space(&self) -> &BoxSpace {
        self.inner.observation_space()
    }
    fn action_space(&self) -> &BoxSpace {
        self.inner.action_space()
    }
    fn max_episode_steps(&self) -> Option<u32> {
        self.inner.max_episode_steps()
    }
    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) -> Result<(), EnvError> {
        self.step = 0;
        self.inner.reset(seed, obs)?;
        self.poison(obs, None);
        Ok(())
    }
    fn reset_to_state(&mut self, state: &[f64], obs: &mut [f32]) -> Result<(), EnvError> {
        self.step = 0;
        self.inner.reset_to_state(state, obs)?;
        self.poison(obs, None);
        Ok(())
    }
    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Result<StepOutcome, EnvError> {
        self.step += 1;
        let mut out = self.inner.step(action, obs)?;
        self.poison(obs, Some(&mut out.reward));
        Ok(out)
    }
}

impl Poisoned {
    fn poison(&self, obs: &mut [f32], reward: Option<&mut f64>) {
        match (self.at, reward) {
            ((s, Some(i)), _) if s == self.step => obs[i] = f32::NAN,
            ((s, None), Some(r)) if s == self.step => *r = f64::NAN,
            _ => {}
        }
    }
}

#[test]
fn a_nan_observation_or_reward_fails_the_check_and_the_error_says_where() {
    let file = load();
    let ep = &file.episodes[0];
    assert!(ep.actions.len() > 7);
    for (at, want) in [
        ((0, Some(1)), "after reset: observation element 1 is NaN"),
        ((5, Some(2)), "at step 4: observation element 2 is NaN"),
        ((7, None), "at step 6: the reward is NaN"),
    ] {
        let mut env = Poisoned {
            inner: make_native(&ep.env).unwrap(),
            step: 0,
            at,
        };
        // Even an infinite tolerance does not let a NaN through.
        for tolerance in [DEFAULT_TOLERANCE, f64::INFINITY] {
            let r = reference::replay_on(&mut env, ep, 0, tolerance);
            assert!(!r.passed, "{at:?}: {r:?}");
            let error = r.error.as_deref().unwrap_or_default();
            assert!(error.starts_with(want), "{at:?}: {error}");
            let dev = if at.1.is_some() {
                r.max_obs_dev
            } else {
                r.max_reward_dev
            };
            assert!(dev.is_nan(), "{at:?}: {r:?}");
            let summary = reference::summarize(&[r]);
            assert_eq!(summary[0].passed, 0);
        }
    }
}

#[test]
fn a_nan_in_the_recording_fails_the_check_too() {
    let mut file = load();
    file.episodes[0].obs[3][0] = f64::NAN;
    file.episodes[1].rewards[2] = f64::NAN;
    let reports = reference::replay_file(&file, f64::INFINITY);
    let (obs, reward) = (&reports[0], &reports[1]);
    assert!(!obs.passed && !reward.passed);
    assert!(
        obs.error
            .as_deref()
            .unwrap_or_default()
            .contains("at step 2: observation element 0 is NaN (ours ")
            && obs
                .error
                .as_deref()
                .unwrap_or_default()
                .ends_with("recorded NaN)"),
        "{obs:?}"
    );
    assert!(
        reward
            .error
            .as_deref()
            .unwrap_or_default()
            .starts_with("at step 2: the reward is NaN"),
        "{reward:?}"
    );
    assert!(reports[2..].iter().all(|r| r.passed));
}
