//! Fuzzing the reference-trajectory reader (`fixar env check`'s input) with the
//! workspace's fuzz driver (`fuzz/`): every input is parsed, and every episode that
//! parses is validated and replayed on the native env it names; no input panics, hangs
//! or aborts, and an episode with a NaN never passes. The bridge's frames are fuzzed
//! beside their decoders (`envs/src/bridge/wire.rs`). Long runs: `scripts/fuzz`.

use envs::reference::{parse, replay_on};

const TOKENS: &[&[u8]] = &[
    b"\"env\":",
    b"\"Pendulum-v1\"",
    b"\"MountainCarContinuous-v0\"",
    b"\"initial_state\":",
    b"\"actions\":",
    b"\"obs\":",
    b"\"rewards\":",
    b"\"terminated\":",
    b"\"truncated\":",
    b"[]",
    b"[1e308,-1e308]",
    b"NaN",
    b"1e999",
    b"true",
    b"null",
    b"-0.0",
    b"[[0.5],[0.5]]",
];

#[test]
fn reference_trajectory_files() {
    fuzzkit::fuzz(
        "trajectory",
        &fuzzkit::corpus("trajectory"),
        TOKENS,
        |bytes| {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return false;
            };
            let Ok(file) = parse(text) else {
                return false;
            };
            for (i, ep) in file.episodes.iter().enumerate() {
                // Native envs only: an unknown id would start a Gymnasium worker per input.
                let Ok(mut env) = envs::make_native(&ep.env) else {
                    continue;
                };
                let rep = replay_on(env.as_mut(), ep, i, 1e-6);
                let nan = ep.rewards.iter().any(|r| r.is_nan())
                    || ep.obs.iter().flatten().any(|o| o.is_nan());
                assert!(!(rep.passed && nan), "an episode with a NaN passed");
                assert!(rep.passed || rep.error.is_some() || rep.steps == ep.actions.len());
            }
            true
        },
    );
}
