//! The native ports reproduce Python Gymnasium 1.4.0's recorded episodes
//! (`$FIXAR_SHARED_DIR/testdata/gymnasium/classic_control.json`).

use envs::reference::{self, ReferenceFile, DEFAULT_TOLERANCE};
use envs::{make_native, registered_ids};

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
