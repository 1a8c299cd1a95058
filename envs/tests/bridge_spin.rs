//! `Wait::Auto` (the default) in a process of its own: the count of envs in tight loops
//! is process-wide, so envs of other tests must not share it.

use std::time::Duration;

use envs::bridge::{BridgeConfig, BridgedEnv, Wait};
use envs::Env;

fn tight_steps(env: &mut BridgedEnv, n: usize) -> usize {
    let mut o = [0.0f32; 4];
    env.reset(Some(1), &mut o).unwrap();
    (0..n)
        .filter(|i| {
            let out = env.step(&[(*i % 5) as f32 * 0.2 - 0.4], &mut o).unwrap();
            if out.done() {
                env.reset(None, &mut o).unwrap();
            }
            env.spun_for_last_answer()
        })
        .count()
}

/// With `cpus` CPUs, a loop that may spin only with `needed` of them spun for at least
/// half of its 60 answers, or (below that) for none.
fn expect_spins(spun: usize, cpus: usize, needed: usize) {
    if cpus >= needed {
        assert!(spun >= 30, "{cpus} CPUs: spun for {spun} of 60 answers");
    } else {
        assert_eq!(spun, 0, "{cpus} CPUs: spinning needs {needed}");
    }
}

#[test]
fn auto_spins_a_tight_loop_when_caller_and_worker_can_have_a_cpu_each() {
    let cfg = BridgeConfig {
        wait: Wait::Auto,
        ..BridgeConfig::default()
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut env = BridgedEnv::new("InvertedPendulum-v5", &cfg).unwrap();
    // One CPU: spinning would only delay the worker.
    expect_spins(tight_steps(&mut env, 60), cpus, 2);

    // A second env in a tight loop while the first still counts as in one: both fit
    // only with four CPUs.
    let mut other = BridgedEnv::new("InvertedPendulum-v5", &cfg).unwrap();
    expect_spins(tight_steps(&mut other, 60), cpus, 4);

    // The first env's loop ends with a long gap: the second may spin again.
    let mut o = [0.0f32; 4];
    std::thread::sleep(Duration::from_millis(2));
    env.step(&[0.0], &mut o).unwrap();
    drop(env);
    expect_spins(tight_steps(&mut other, 60), cpus, 2);
}
