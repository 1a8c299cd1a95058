//! gymnasium-rs interop: adapters both ways, and gymnasium-rs's CartPole made trainable
//! for a continuous-action agent by the discretizing action wrapper.

use std::collections::HashMap;

use envs::interop::{
    bin_of, discretized_cartpole, Discretize, FromGymRs, GymRsAdapter, CARTPOLE_ID,
};
use envs::{make, Env, EnvError, Pendulum, TimeLimit};
use gymnasium_ndarray::Array1;
use gymnasium_rs::core::{Env as GymEnv, Space};
use gymnasium_rs::wrappers::timelimit::TimeLimitWrapper;
use rand::{Rng, SeedableRng};

#[test]
fn our_env_runs_under_gymnasium_rs_wrappers_and_round_trips() {
    let mut adapter = GymRsAdapter::new(TimeLimit::new(Pendulum::new(), 200));
    match GymEnv::action_space(&adapter) {
        Space::Box { low, high } => assert_eq!((low[0], high[0]), (-2.0, 2.0)),
        other => panic!("{other:?}"),
    }
    {
        // gymnasium-rs's own TimeLimit wrapper drives our env.
        let mut limited = TimeLimitWrapper::new(&mut adapter, 7);
        let (obs, _) = limited.reset(Some(3), HashMap::new());
        assert_eq!(obs.len(), 3);
        let mut steps = 0;
        loop {
            let (_, r, _, truncated, info) = limited.step(Array1::from(vec![0.5f32]));
            assert!(r <= 0.0 && info.is_empty());
            steps += 1;
            if truncated {
                break;
            }
        }
        assert_eq!(steps, 7);
    }
    // Invalid actions cannot be errors in gymnasium-rs's trait: NaN reward + info.
    let (_, r, terminated, _, info) = GymEnv::step(&mut adapter, Array1::from(vec![0.0f32, 1.0]));
    assert!(r.is_nan() && terminated && info["error"].as_str().unwrap().contains("action has 2"));

    // Back into ours: same observations as the native env, rewards to f32 precision.
    let mut back = FromGymRs::continuous(
        "Pendulum-v1 via gymnasium-rs",
        GymRsAdapter::new(Pendulum::new()),
    )
    .unwrap();
    let mut direct = Pendulum::new();
    let (mut a, mut b) = ([0.0f32; 3], [0.0f32; 3]);
    back.reset(Some(11), &mut a).unwrap();
    direct.reset(Some(11), &mut b).unwrap();
    assert_eq!(a, b);
    for t in 0..50 {
        let act = [(t as f32 * 0.37).sin() * 2.5];
        let ra = back.step(&act, &mut a).unwrap();
        let rb = direct.step(&act, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(ra.reward, f64::from(rb.reward as f32));
    }
    assert!(matches!(
        back.step(&[f32::INFINITY], &mut a),
        Err(EnvError::NonFiniteAction { .. })
    ));
}

#[test]
fn discretizing_wrapper_bins_continuous_actions() {
    assert_eq!(bin_of(-0.3, 2), 0);
    assert_eq!(bin_of(-1e-7, 2), 0);
    assert_eq!(bin_of(0.0, 2), 1);
    assert_eq!(bin_of(1.0, 2), 1);
    assert_eq!(bin_of(7.0, 2), 1);
    assert_eq!(bin_of(-7.0, 2), 0);
    assert_eq!(bin_of(-1.0, 3), 0);
    assert_eq!(bin_of(0.0, 3), 1);
    assert_eq!(bin_of(0.9, 3), 2);
    let cp = Discretize::discretized("cp", gymnasium_rs::envs::cartpole::CartPole::new()).unwrap();
    assert_eq!((cp.bin_of(-0.5), cp.bin_of(0.5)), (0, 1));
    assert_eq!(cp.action_space().dim(), 1);
}

/// Mean return of the deterministic continuous policy `a = tanh(w · obs)`.
fn mean_return(env: &mut dyn Env, w: &[f32; 4], episodes: u64, seed: u64) -> f64 {
    let mut obs = [0.0f32; 4];
    let mut total = 0.0;
    for e in 0..episodes {
        env.reset(Some(seed + e), &mut obs).unwrap();
        loop {
            let a = [w.iter().zip(&obs).map(|(w, o)| w * o).sum::<f32>().tanh()];
            let out = env.step(&a, &mut obs).unwrap();
            total += out.reward;
            if out.done() {
                break;
            }
        }
    }
    total / episodes as f64
}

#[test]
fn cartpole_is_trainable_by_a_continuous_action_agent() {
    let mut env = make(CARTPOLE_ID).unwrap();
    assert_eq!(env.max_episode_steps(), Some(500));
    assert_eq!(env.action_space().low, vec![-1.0]);
    assert_eq!(env.observation_space().dim(), 4);
    let mut direct = discretized_cartpole();
    assert_eq!(direct.id(), CARTPOLE_ID);

    // Random continuous actions: CartPole falls within a few dozen steps.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut obs = [0.0f32; 4];
    let mut random_total = 0.0;
    for e in 0..20 {
        env.reset(Some(e), &mut obs).unwrap();
        loop {
            let out = env.step(&[rng.gen_range(-1.0..1.0)], &mut obs).unwrap();
            random_total += out.reward;
            if out.done() {
                break;
            }
        }
    }
    let random_mean = random_total / 20.0;
    assert!(random_mean < 60.0, "random policy {random_mean}");

    // A continuous-action learner (hill climbing on a tanh-linear policy, the simplest
    // deterministic-policy agent) learns to balance through the wrapper.
    let mut best = [0.0f32; 4];
    let mut best_score = mean_return(direct.inner_mut(), &best, 3, 100);
    let mut scale = 1.0f32;
    for it in 0..60 {
        let cand: [f32; 4] = std::array::from_fn(|i| best[i] + scale * rng.gen_range(-1.0..1.0));
        let score = mean_return(&mut direct, &cand, 3, 100 + 3 * it);
        if score >= best_score {
            best = cand;
            best_score = score;
            scale = (scale * 0.9).max(0.1);
        }
        if best_score >= 499.0 {
            break;
        }
    }
    let trained = mean_return(env.as_mut(), &best, 10, 10_000);
    assert!(
        trained >= 400.0,
        "trained policy {trained} (random {random_mean}), w {best:?}"
    );
}
