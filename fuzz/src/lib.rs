//! The fuzz driver of fixar's parser harnesses (`quant/tests/fuzz.rs`,
//! `envs/tests/fuzz.rs`, the bridge's `wire` unit tests, `agents/tests/fuzz.rs`).
//!
//! A harness names a target and gives a check: a function that feeds one input to the
//! parser and everything that reads its result, and returns normally whatever the
//! input. The driver draws inputs with proptest (a fixed seed per target and batch, so
//! every run is reproducible): a seed from the target's committed corpus
//! (`fuzz/corpus/<target>/`) or the harness's own, mutated by up to eight edits
//! (bit flips, interesting bytes, deletions, duplications, insertions of the target's
//! tokens, splices of two seeds, truncations). A panic, or an input that takes more
//! than [`SLOW`] of CPU time (CPU time: the machine is shared, and a descheduled test is
//! not a hang), fails the test, and proptest shrinks it to a small failing input before
//! reporting it; an abort or a crash ends the process, which fails the test too. The
//! check says whether the parser accepted the input, and the run reports how many did
//! (a harness whose inputs all bounce off the first check tests little).
//!
//! Budget: `FIXAR_FUZZ_SECS=<s>` runs a target for that long (the long runs of
//! `scripts/fuzz`); otherwise `FIXAR_FUZZ_CASES` inputs (default [`DEFAULT_CASES`], the
//! short run of the test suite). Each run prints `fuzz <target>: <n> inputs ...`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// Inputs per target in the test suite's short run.
pub const DEFAULT_CASES: u64 = 400;
/// An input taking longer than this counts as a hang.
pub const SLOW: Duration = Duration::from_secs(5);
/// Inputs per proptest batch (each batch has its own seed).
const BATCH: u32 = 256;

/// One edit of a seed input.
#[derive(Clone, Debug)]
enum Edit {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Delete(usize, usize),
    Duplicate(usize, usize),
    InsertToken(usize, usize),
    Splice(usize, usize),
    Truncate(usize),
}

/// Bytes that often sit at edges: zero, one, sign bits, all ones, digits, quotes,
/// brackets, separators.
const INTERESTING: &[u8] = b"\x00\x01\x7f\x80\xff09-.,\"'<>[]{}=:\n e";

fn edit() -> impl Strategy<Value = Edit> {
    let at = any::<usize>();
    prop_oneof![
        (at, 0u8..8).prop_map(|(i, b)| Edit::FlipBit(i, b)),
        (at, prop::sample::select(INTERESTING)).prop_map(|(i, b)| Edit::SetByte(i, b)),
        (at, 1usize..16).prop_map(|(i, n)| Edit::Delete(i, n)),
        (at, 1usize..32).prop_map(|(i, n)| Edit::Duplicate(i, n)),
        (at, any::<usize>()).prop_map(|(i, t)| Edit::InsertToken(i, t)),
        (at, any::<usize>()).prop_map(|(i, s)| Edit::Splice(i, s)),
        at.prop_map(Edit::Truncate),
    ]
}

fn apply(mut b: Vec<u8>, edits: &[Edit], seeds: &[Vec<u8>], tokens: &[Vec<u8>]) -> Vec<u8> {
    for e in edits {
        let pos = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match *e {
            Edit::FlipBit(i, bit) if !b.is_empty() => {
                let n = b.len();
                b[i % n] ^= 1 << bit;
            }
            Edit::SetByte(i, v) if !b.is_empty() => {
                let n = b.len();
                b[i % n] = v;
            }
            Edit::Delete(i, n) => {
                let at = pos(i, b.len());
                let end = (at + n).min(b.len());
                b.drain(at..end);
            }
            Edit::Duplicate(i, n) => {
                let at = pos(i, b.len());
                let end = (at + n).min(b.len());
                let part = b[at..end].to_vec();
                b.splice(at..at, part);
            }
            Edit::InsertToken(i, t) if !tokens.is_empty() => {
                let at = pos(i, b.len());
                b.splice(at..at, tokens[t % tokens.len()].iter().copied());
            }
            Edit::Splice(i, s) => {
                let other = &seeds[s % seeds.len()];
                let at = pos(i, b.len());
                let from = pos(i, other.len());
                b.truncate(at);
                b.extend_from_slice(&other[from..]);
            }
            Edit::Truncate(i) => {
                let at = pos(i, b.len());
                b.truncate(at);
            }
            _ => {}
        }
    }
    b
}

/// The committed corpus of `target`: every file in `fuzz/corpus/<target>/`.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// `fuzz/corpus/<target>`.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// What a run did.
#[derive(Clone, Copy, Debug)]
pub struct Ran {
    pub inputs: u64,
    /// Inputs the parser accepted.
    pub accepted: u64,
    pub secs: f64,
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// An input as text for a failure message, at most 600 characters of it.
fn shown(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(input);
    let cut: String = text.chars().take(600).collect();
    if cut.len() < text.len() {
        format!("{cut:?}... ({} bytes)", input.len())
    } else {
        format!("{cut:?}")
    }
}

/// The budget of this run: a duration (`FIXAR_FUZZ_SECS`) or a number of inputs.
fn budget() -> (Option<Duration>, u64) {
    let secs = std::env::var("FIXAR_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok());
    let cases = std::env::var("FIXAR_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    match secs {
        Some(s) => (Some(Duration::from_secs_f64(s)), u64::MAX),
        None => (None, cases),
    }
}

/// Fuzzes `check` with mutations of `seeds` (the corpus plus the harness's own) and
/// `tokens` (fragments of the format: keys, keywords, numbers), within the budget.
/// Panics, with the shrunk input, when an input panics or hangs in `check`.
pub fn fuzz(
    target: &str,
    seeds: &[Vec<u8>],
    tokens: &[&[u8]],
    check: impl Fn(&[u8]) -> bool,
) -> Ran {
    assert!(!seeds.is_empty(), "fuzz {target}: no seed inputs");
    let tokens: Vec<Vec<u8>> = tokens.iter().map(|t| t.to_vec()).collect();
    let (time, cases) = budget();
    let start = Instant::now();
    let mut inputs = 0u64;
    let accepted = std::cell::Cell::new(0u64);
    let strategy = (0..seeds.len(), prop::collection::vec(edit(), 0..8));
    let mut batch = 0u64;
    while inputs < cases && time.is_none_or(|t| start.elapsed() < t) {
        let n = BATCH.min((cases - inputs).min(u64::from(BATCH)) as u32);
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&batch.to_le_bytes());
        for (i, b) in target.bytes().enumerate().take(24) {
            seed[8 + i] = b;
        }
        let config = Config {
            cases: n,
            failure_persistence: None,
            max_shrink_iters: 4096,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        let result = runner.run(&strategy, |(s, edits)| {
            let input = apply(seeds[s].clone(), &edits, seeds, &tokens);
            let t = thread_cpu_time();
            accepted.set(accepted.get() + u64::from(check(&input)));
            let took = thread_cpu_time().saturating_sub(t);
            if took > SLOW {
                return Err(TestCaseError::fail(format!(
                    "took {took:?} of CPU time (a hang): {}",
                    shown(&input)
                )));
            }
            Ok(())
        });
        if let Err(e) = result {
            let e = e.to_string();
            let e: String = e.chars().take(2000).collect();
            panic!("fuzz {target}: batch {batch} failed after {inputs} good inputs: {e}");
        }
        inputs += u64::from(n);
        batch += 1;
    }
    let ran = Ran {
        inputs,
        accepted: accepted.get(),
        secs: start.elapsed().as_secs_f64(),
    };
    println!(
        "fuzz {target}: {} inputs ({} accepted) in {:.1} s, no panic, hang or abort",
        ran.inputs, ran.accepted, ran.secs
    );
    ran
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;

    #[test]
    fn edits_stay_in_bounds_and_change_inputs() {
        let seeds = vec![b"ap_fixed<16,6>".to_vec(), Vec::new()];
        let tokens = vec![b"AP_SAT".to_vec()];
        let mut changed = 0;
        let mut runner = TestRunner::deterministic();
        for _ in 0..2000 {
            let (s, edits) = (0..seeds.len(), prop::collection::vec(edit(), 0..8))
                .new_tree(&mut runner)
                .unwrap()
                .current();
            let out = apply(seeds[s].clone(), &edits, &seeds, &tokens);
            changed += usize::from(out != seeds[s]);
        }
        assert!(changed > 1000, "{changed}");
    }

    #[test]
    #[should_panic(expected = "fuzz demo")]
    fn a_panicking_parser_fails_the_run() {
        fuzz("demo", &[b"12345".to_vec()], &[], |b| {
            assert!(!b.contains(&b'9'), "found a 9");
            true
        });
    }
}
