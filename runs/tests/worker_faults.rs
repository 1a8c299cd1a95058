//! `fixar train` on a Gymnasium (MuJoCo) env whose Python worker fails: killed, hung
//! (no answer) or answering garbage, at a reset or in the middle of an episode. The
//! worker is the real one, run behind a fault-injecting proxy given as `FIXAR_PYTHON`.
//! Training must stop within the bridge's timeout (`FIXAR_BRIDGE_TIMEOUT`) with exit 1
//! and an error naming the env and the seed, leave no worker process behind (counted
//! in /proc), and leave a run directory that resumes to the end with a healthy worker.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use agents::config::TrainConfig;
use common::{fixar, tiny_config, workspace, Run, Scratch};

const ENV: &str = "InvertedPendulum-v5";
/// The bridge's answer timeout these tests set.
const TIMEOUT_S: f64 = 3.0;

/// The proxy: starts the real worker (same arguments) and forwards frames both ways;
/// at the `n`-th request of kind `op` (`R` reset, `S` step) of `FIXAR_TEST_FAULT` =
/// `kind:op:n` it kills the worker and itself (`kill`), stops answering (`hang`), or
/// answers a well-framed body of garbage (`garbage`), after touching the file
/// `FIXAR_TEST_FAULT_MARK`. It dies with fixar and its worker with it
/// (PR_SET_PDEATHSIG); the worker watches the proxy as its parent.
const PROXY: &str = r#"
import ctypes, os, signal, struct, subprocess, sys, threading, time
kind, op, n = os.environ["FIXAR_TEST_FAULT"].split(":")
n = int(n)
libc = ctypes.CDLL(None)
libc.prctl(1, signal.SIGKILL)  # die with fixar, as the worker does
# argv: -c SOURCE id kwargs parent_pid spin; the worker watches its parent: us.
args = sys.argv[1:]
args[4] = str(os.getpid())
child = subprocess.Popen([sys.executable] + args, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, bufsize=0,
                         preexec_fn=lambda: libc.prctl(1, signal.SIGKILL))
out = sys.stdout.fileno()
def answers():
    while True:
        b = os.read(child.stdout.fileno(), 65536)
        if not b:
            os._exit(0)
        os.write(out, b)
threading.Thread(target=answers, daemon=True).start()
inp = sys.stdin.buffer
def read(k):
    b = inp.read(k)
    if len(b) < k:
        child.kill()
        os._exit(0)
    return b
seen = 0
while True:
    head = read(5)
    body = read(struct.unpack("<I", head[1:5])[0])
    if chr(head[0] & 0x7F) == op:
        seen += 1
        if seen == n:
            open(os.environ["FIXAR_TEST_FAULT_MARK"], "w").close()
            if kind == "kill":
                child.kill()
                os._exit(1)
            if kind == "hang":
                time.sleep(3600)
            if kind == "garbage":
                os.write(out, struct.pack("<I", 9) + b"\x07garbage!")
                continue
    child.stdin.write(head + body)
"#;

/// The processes whose environment holds `tag` (the proxy and its worker inherit it).
fn tagged_processes(tag: &str) -> Vec<u32> {
    let needle = format!("FIXAR_TEST_FAULT_TAG={tag}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

fn config(d: &Scratch) -> PathBuf {
    d.write_config(
        "faults.toml",
        &TrainConfig {
            env_id: ENV.into(),
            total_timesteps: 800,
            learning_starts: 100,
            hidden: vec![8, 8],
            eval_every: 400,
            eval_episodes: 1,
            log_every: 100,
            checkpoint_every: 50,
            ..tiny_config()
        },
    )
}

/// Trains with the proxy injecting `fault`; checks the error, the timing, that no
/// process is left, and that the run resumes to the end with the real worker.
fn stops_cleanly(name: &str, fault: &str) {
    let d = Scratch::new(name);
    let python = workspace().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "no project Python at {}",
        python.display()
    );
    let proxy = d.write("proxy.py", &format!("#!{}\n{PROXY}", python.display()));
    std::fs::set_permissions(&proxy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = config(&d);
    let out = d.join("run");
    let mark = d.join("fault-injected");
    let tag = format!("{}-{name}", std::process::id());
    let ran = fixar()
        .args(["train", "--config", cfg.to_str().unwrap(), "--seeds", "5"])
        .args(["--out", out.to_str().unwrap()])
        .env("FIXAR_PYTHON", &proxy)
        .env("FIXAR_BRIDGE_TIMEOUT", TIMEOUT_S.to_string())
        .env("FIXAR_TEST_FAULT", fault)
        .env("FIXAR_TEST_FAULT_MARK", &mark)
        .env("FIXAR_TEST_FAULT_TAG", &tag)
        .run();
    let ended = SystemTime::now();
    let injected = std::fs::metadata(&mark)
        .unwrap_or_else(|_| panic!("{fault}: the fault was never injected: {}", ran.stderr))
        .modified()
        .unwrap();
    let took = ended.duration_since(injected).unwrap_or_default();
    assert_eq!(ran.code, Some(1), "{fault}: {}", ran.stderr);
    let err = &ran.stderr;
    assert!(
        err.contains(ENV) && err.contains("seed 5") && !err.contains("panicked"),
        "{fault}: the error names neither env nor seed: {err}"
    );
    assert!(
        took < Duration::from_secs_f64(TIMEOUT_S + 5.0),
        "{fault}: stopped {took:?} after the fault (timeout {TIMEOUT_S} s)"
    );
    let t = Instant::now();
    while !tagged_processes(&tag).is_empty() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        tagged_processes(&tag),
        Vec::<u32>::new(),
        "{fault}: worker processes left behind"
    );
    let seed = out.join("seed_5");
    assert!(
        seed.join("checkpoint.bin").is_file(),
        "{fault}: no checkpoint"
    );
    assert!(!out.join("summary.json").exists());
    // The last checkpoint is valid: the run resumes with a healthy worker and finishes.
    let resumed = fixar()
        .args(["train", "--resume", out.to_str().unwrap()])
        .run_ok();
    assert!(resumed.stdout.contains("final_eval_return_mean"));
    eprintln!(
        "{fault}: stopped {took:?} after the fault: {}",
        last_line(err)
    );
}

fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("")
}

#[test]
fn worker_killed_at_a_reset() {
    stops_cleanly("kill-reset", "kill:R:12");
}

#[test]
fn worker_killed_mid_episode() {
    stops_cleanly("kill-step", "kill:S:300");
}

#[test]
fn worker_hung_at_a_reset() {
    stops_cleanly("hang-reset", "hang:R:12");
}

#[test]
fn worker_hung_mid_episode() {
    stops_cleanly("hang-step", "hang:S:300");
}

#[test]
fn worker_answering_garbage_at_a_reset() {
    stops_cleanly("garbage-reset", "garbage:R:12");
}

#[test]
fn worker_answering_garbage_mid_episode() {
    stops_cleanly("garbage-step", "garbage:S:300");
}

#[test]
fn a_bridge_timeout_that_is_not_seconds_is_a_usage_error() {
    for bad in ["abc", "0", "-1", "inf"] {
        let o = fixar()
            .args(["info"])
            .env("FIXAR_BRIDGE_TIMEOUT", bad)
            .run();
        assert_eq!(o.code, Some(2), "{bad}: {}", o.stderr);
        assert!(o.stderr.contains("FIXAR_BRIDGE_TIMEOUT"), "{}", o.stderr);
    }
}
