//! The Python Gymnasium bridge against the real `gymnasium[mujoco]` in the project's
//! venv: MuJoCo stepping, ground-truth replay through the bridge, error paths (unknown
//! id, killed worker, hung worker) and clean-up.

use std::time::{Duration, Instant};

use envs::bridge::{self, BridgeConfig, BridgedEnv, Wait};
use envs::reference::{self, DEFAULT_TOLERANCE};
use envs::{make, Env, EnvError, VecEnv};

fn process_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[test]
fn mujoco_inverted_pendulum_steps_through_the_bridge() {
    let mut env = make("InvertedPendulum-v5").expect("bridged env");
    assert_eq!(env.observation_space().dim(), 4);
    assert_eq!(env.action_space().dim(), 1);
    assert_eq!(env.action_space().high, vec![3.0]);
    assert_eq!(env.max_episode_steps(), Some(1000));
    let (mut a, mut b) = ([0.0f32; 4], [0.0f32; 4]);
    env.reset(Some(3), &mut a).unwrap();
    env.reset(Some(3), &mut b).unwrap();
    assert_eq!(a, b, "Gymnasium seeding is deterministic");
    // Pushing constantly one way topples the pole: v5 pays 1 per step in which the pole
    // is still up, 0 on the terminating step.
    let mut steps = 0;
    let mut total = 0.0;
    loop {
        let out = env.step(&[3.0], &mut a).unwrap();
        steps += 1;
        total += out.reward;
        if out.terminated || out.truncated {
            assert!(out.terminated && steps < 200, "steps {steps}");
            break;
        }
    }
    assert_eq!(total, (steps - 1) as f64);
    assert!(a[1].abs() > 0.2, "pole angle at termination {a:?}");
    // Bad input is rejected on the Rust side, the worker stays usable.
    assert!(matches!(
        env.step(&[f32::NAN], &mut a),
        Err(EnvError::NonFiniteAction { .. })
    ));
    assert!(matches!(
        env.step(&[0.0, 0.0], &mut a),
        Err(EnvError::ActionLength { .. })
    ));
    env.reset(None, &mut a).unwrap();
    env.step(&[0.0], &mut a).unwrap();
}

#[test]
fn bridged_gymnasium_reproduces_the_reference_file() {
    // The bridge's reset_to_state + step path against the recorded ground truth: checks
    // the protocol carries actions, rewards, flags and observations without loss.
    let dir = std::env::var("FIXAR_SHARED_DIR").unwrap_or_else(|_| env!("FIXAR_SHARED_DIR").into());
    let text =
        std::fs::read_to_string(format!("{dir}/testdata/gymnasium/classic_control.json")).unwrap();
    let file = reference::parse(&text).unwrap();
    for id in ["Pendulum-v1", "MountainCarContinuous-v0"] {
        let mut env = BridgedEnv::new(id, &BridgeConfig::default()).unwrap();
        let ep = file.episodes.iter().position(|e| e.env == id).unwrap();
        let r = reference::replay_on(&mut env, &file.episodes[ep], ep, DEFAULT_TOLERANCE);
        assert!(r.passed, "{r:?}");
    }
}

#[test]
fn unknown_id_shows_gymnasium_message_and_native_ids() {
    let err = make("NoSuchEnv-v0").err().expect("unknown id fails");
    let msg = err.to_string();
    assert!(matches!(err, EnvError::UnknownId { .. }), "{msg}");
    assert!(msg.contains("doesn't exist"), "Gymnasium's message: {msg}");
    for id in envs::registered_ids() {
        assert!(msg.contains(id), "{msg}");
    }
}

#[test]
fn killed_worker_is_an_error_naming_the_env_not_a_hang() {
    let cfg = BridgeConfig {
        step_timeout: Duration::from_secs(20),
        ..BridgeConfig::default()
    };
    let mut env = BridgedEnv::new("InvertedPendulum-v5", &cfg).unwrap();
    let mut obs = [0.0f32; 4];
    env.reset(Some(0), &mut obs).unwrap();
    // SAFETY: killing our own child process.
    unsafe { libc::kill(env.worker_pid() as i32, libc::SIGKILL) };
    let t = Instant::now();
    let err = env.step(&[0.0], &mut obs).expect_err("dead worker");
    assert!(t.elapsed() < Duration::from_secs(10));
    let msg = err.to_string();
    assert!(matches!(err, EnvError::WorkerDied { .. }), "{msg}");
    assert!(msg.contains("InvertedPendulum-v5"), "{msg}");
    // Later calls fail fast too.
    assert!(env.reset(None, &mut obs).is_err());
}

#[test]
fn hung_worker_times_out_and_is_killed() {
    let cfg = BridgeConfig {
        step_timeout: Duration::from_millis(700),
        ..BridgeConfig::default()
    };
    let mut env = BridgedEnv::new("InvertedPendulum-v5", &cfg).unwrap();
    let pid = env.worker_pid();
    let mut obs = [0.0f32; 4];
    env.reset(Some(0), &mut obs).unwrap();
    // SAFETY: stopping our own child process.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let t = Instant::now();
    let err = env.step(&[0.0], &mut obs).expect_err("stopped worker");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let msg = err.to_string();
    assert!(matches!(err, EnvError::WorkerTimeout { .. }), "{msg}");
    assert!(msg.contains("InvertedPendulum-v5"), "{msg}");
    assert!(
        !process_exists(pid),
        "timed-out worker was killed and reaped"
    );
}

#[test]
fn workers_exit_on_drop_and_when_their_stdin_closes() {
    let env = BridgedEnv::new("InvertedPendulum-v5", &BridgeConfig::default()).unwrap();
    let pid = env.worker_pid();
    assert!(process_exists(pid));
    drop(env);
    assert!(!process_exists(pid));

    // A parent that dies closes the worker's stdin: the worker must leave by itself.
    let mut child = std::process::Command::new(bridge::python_executable())
        .arg("-c")
        .arg(bridge::WORKER_SCRIPT)
        .arg("Pendulum-v1")
        .arg("{}")
        .arg(std::process::id().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "worker did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn vector_env_of_bridged_copies_matches_single_copies() {
    let n = 2;
    let copies = bridge::make_many("InvertedPendulum-v5", n, &BridgeConfig::default()).unwrap();
    let mut v = VecEnv::from_envs(
        copies
            .into_iter()
            .map(|e| Box::new(e) as Box<dyn Env>)
            .collect(),
    )
    .unwrap();
    v.reset(Some(40)).unwrap();
    let mut single = BridgedEnv::new("InvertedPendulum-v5", &BridgeConfig::default()).unwrap();
    let mut o = [0.0f32; 4];
    single.reset(Some(41), &mut o).unwrap();
    assert_eq!(&v.observations()[4..8], &o);
    let actions = [0.5f32, -0.4];
    for _ in 0..30 {
        let r = single.step(&actions[1..], &mut o).unwrap();
        let s = v.step(&actions).unwrap();
        assert_eq!(s.outcomes[1], r);
        if r.done() {
            assert_eq!(&s.final_obs[4..8], &o);
            break;
        }
        assert_eq!(&s.obs[4..8], &o);
    }
}

#[test]
fn recorded_mujoco_episode_replays_exactly_from_its_state() {
    // Record HalfCheetah through the bridge, round-trip it through JSON, and replay it
    // from the recorded qpos/qvel in a fresh worker: chaotic dynamics expose any bit
    // lost on the way (JSON float parsing, protocol, state restore).
    use rand::{Rng, SeedableRng};
    let mut env = BridgedEnv::new("HalfCheetah-v5", &BridgeConfig::default()).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let ep = reference::record(&mut env, 7, 400, |_, a| {
        a.iter_mut().for_each(|x| *x = rng.gen_range(-1.2..1.2))
    })
    .unwrap();
    assert_eq!(ep.actions.len(), 400);
    assert_eq!(ep.initial_state.len(), 18, "qpos (9) ++ qvel (9)");
    let file = reference::ReferenceFile {
        generator: None,
        episodes: vec![ep],
    };
    let text = serde_json::to_string(&file).unwrap();
    let back = reference::parse(&text).unwrap();
    let reports = reference::replay_file(&back, 0.0);
    assert!(reports[0].passed, "{:?}", reports[0]);
}

fn caller_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain bits; the kernel writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(r, 0);
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

#[test]
fn synchronous_steps_run_the_worker_on_the_callers_cpu_and_split_steps_release_it() {
    let blocking = BridgeConfig {
        wait: Wait::Block,
        ..BridgeConfig::default()
    };
    let mut env = BridgedEnv::new("InvertedPendulum-v5", &blocking).unwrap();
    let mine = caller_cpus();
    let initial = env.worker_cpus().unwrap();
    assert_eq!(
        initial, mine,
        "the worker inherits the spawning thread's CPUs"
    );
    let mut o = [0.0f32; 4];
    env.reset(Some(3), &mut o).unwrap();
    for _ in 0..5 {
        env.step(&[0.1], &mut o).unwrap();
        // The caller's own mask is restored after every call...
        assert_eq!(caller_cpus(), mine);
        // ...and the worker stays pinned to one of the caller's CPUs.
        let pinned = env.worker_cpus().unwrap();
        assert_eq!(pinned.len(), 1, "worker CPUs {pinned:?}");
        assert!(mine.contains(&pinned[0]));
    }
    // Split steps (how a VecEnv runs copies concurrently) give the CPUs back.
    assert!(env.step_start(&[0.1]).unwrap());
    assert_eq!(env.worker_cpus().unwrap(), initial);
    env.step_wait(&mut o).unwrap();

    // Switched off: the worker keeps the CPUs it started with.
    let cfg = BridgeConfig {
        co_locate: false,
        ..blocking
    };
    let mut free = BridgedEnv::new("InvertedPendulum-v5", &cfg).unwrap();
    free.reset(Some(3), &mut o).unwrap();
    free.step(&[0.1], &mut o).unwrap();
    assert_eq!(free.worker_cpus().unwrap(), initial);
}

/// Steps `env` with `actions` from seed 5, sleeping `pause` between steps; returns the
/// observations and rewards as bits and how many answers were spun for.
fn stepped(env: &mut BridgedEnv, actions: &[f32], pause: Duration) -> (Vec<u64>, usize) {
    let mut o = [0.0f32; 4];
    env.reset(Some(5), &mut o).unwrap();
    let (mut bits, mut spun) = (Vec::new(), 0);
    for a in actions {
        std::thread::sleep(pause);
        let out = env.step(&[*a], &mut o).unwrap();
        bits.extend(o.iter().map(|v| u64::from(v.to_bits())));
        bits.push(out.reward.to_bits());
        spun += usize::from(env.spun_for_last_answer());
        if out.done() {
            env.reset(None, &mut o).unwrap();
        }
    }
    (bits, spun)
}

#[test]
fn tight_loops_spin_slow_loops_sleep_co_located_and_both_give_the_same_steps() {
    let actions: Vec<f32> = (0..60)
        .map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5)
        .collect();
    let cfg = |wait| BridgeConfig {
        wait,
        ..BridgeConfig::default()
    };
    let mut spinning = BridgedEnv::new("InvertedPendulum-v5", &cfg(Wait::Spin)).unwrap();
    let mut blocking = BridgedEnv::new("InvertedPendulum-v5", &cfg(Wait::Block)).unwrap();
    let initial = spinning.worker_cpus().unwrap();

    let (tight, spun) = stepped(&mut spinning, &actions, Duration::ZERO);
    let (reference, never) = stepped(&mut blocking, &actions, Duration::ZERO);
    assert_eq!(tight, reference, "spinning changes nothing but the waiting");
    assert_eq!(never, 0, "Wait::Block never spins");
    // The first steps after reset set the rhythm; a preempted gap may skip a few more.
    assert!(spun >= actions.len() / 2, "spun for {spun} of 60 answers");
    if spinning.spun_for_last_answer() {
        assert_eq!(
            spinning.worker_cpus().unwrap(),
            initial,
            "a spinning worker is not pinned to the caller's CPU"
        );
    }

    // A step every 2 ms (a gradient update between steps): no spinning, co-located.
    let (slow, spun) = stepped(&mut spinning, &actions[..10], Duration::from_millis(2));
    assert_eq!(slow[..], reference[..slow.len()]);
    assert_eq!(spun, 0, "a slow loop does not spin");
    assert_eq!(spinning.worker_cpus().unwrap().len(), 1, "co-located");
}

#[test]
fn a_python_that_does_not_exist_is_an_error_naming_it_with_the_os_error_as_source() {
    let cfg = BridgeConfig {
        python: Some("/nonexistent/fixar-python".into()),
        ..BridgeConfig::default()
    };
    let err = BridgedEnv::new("InvertedPendulum-v5", &cfg)
        .err()
        .expect("no such Python");
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "InvertedPendulum-v5: Python Gymnasium bridge: cannot start Python `/nonexistent/fixar-python`: "
        ),
        "{msg}"
    );
    let source = std::error::Error::source(&err).expect("the spawn error is kept");
    let io = source
        .downcast_ref::<std::io::Error>()
        .expect("an io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
}
