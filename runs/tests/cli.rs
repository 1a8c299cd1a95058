//! The binary itself: finds libtorch through its rpath from any directory, reports
//! libtorch 2.11.0, and exits 2 on usage errors.

mod common;

use common::{fixar, Run};

#[test]
fn fixar_info_runs_from_any_directory_without_ld_library_path() {
    let out = fixar().arg("info").run_ok().stdout;
    assert!(out.contains("libtorch: 2.11.0"), "{out}");
    assert!(out.contains("tch: 0.24"), "{out}");
}

#[test]
fn unknown_subcommands_and_flags_exit_2_with_usage() {
    for args in [&["frobnicate"][..], &["--bogus"][..], &[][..]] {
        let o = fixar().args(args).run();
        assert_eq!(o.code, Some(2), "{args:?}");
        assert!(o.stderr.contains("Usage"), "{args:?}");
    }
    let o = fixar().arg("--version").run();
    assert!(o.success() && o.stdout.starts_with("fixar "));
}

#[test]
fn a_bad_bridge_wait_mode_is_a_usage_error_naming_the_variable() {
    let rollout = |wait: &str| {
        fixar()
            .args(["env", "rollout", "--env", "Pendulum-v1", "--seed", "0"])
            .args(["--steps", "2"])
            .env("FIXAR_BRIDGE_WAIT", wait)
            .run()
    };
    let o = rollout("spinny");
    assert_eq!(o.code, Some(2));
    let err = o.stderr;
    assert!(
        err.contains("FIXAR_BRIDGE_WAIT") && err.contains("spinny"),
        "{err}"
    );
    let o = rollout("block");
    assert!(o.success(), "{}", o.stderr);
}

#[test]
fn bad_bench_td3_arguments_exit_2_naming_the_flag() {
    for (args, flag) in [
        (&["--precision", "fxp7"][..], "--precision"),
        (&["--threads", "0"][..], "--threads"),
        (&["--peer-updates", "0"][..], "--peer-updates"),
        (&["--rounds", "0"][..], "--rounds"),
        (&["--gemm", "slow"][..], "--gemm"),
    ] {
        let o = fixar().args(["bench", "td3"]).args(args).run();
        assert_eq!(o.code, Some(2), "{args:?}");
        let err = &o.stderr;
        assert!(err.contains(flag), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}: nothing measured");
    }
}

#[test]
fn bench_td3_prints_roofline_lines_only_when_it_measures_them() {
    for roofline in ["false", "true"] {
        let out = fixar()
            .args(["bench", "td3", "--precision", "float32", "--updates", "4"])
            .args(["--rounds", "2", "--peer", "false", "--roofline", roofline])
            .run_ok()
            .stdout;
        let value = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .map(|v| v.parse::<f64>().unwrap())
        };
        assert!(
            value("updates_per_s").is_some_and(|v| v.is_finite() && v > 0.0),
            "{out}"
        );
        for name in ["gemm_gflops", "roofline_fraction"] {
            let v = value(name);
            if roofline == "true" {
                assert!(v.is_some_and(|v| v.is_finite() && v > 0.0), "{name}: {out}");
            } else {
                assert!(v.is_none(), "{name} printed without the probe: {out}");
            }
        }
    }
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    // The reader hangs up before fixar prints (it loads libtorch first): its first line
    // meets a closed pipe, as under `fixar info | head -0`.
    let o = fixar().arg("info").run_stdout_closed();
    let err = &o.stderr;
    assert_eq!(o.code, Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
