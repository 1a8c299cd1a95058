//! `fixar accel` end to end: the JSON the issue names, the files and plots it writes, an
//! agent config as the workload, and exit code 2 on bad input.

mod common;

use agents::config::TrainConfig;
use agents::precision::Preset;
use common::{fixar, tiny_config, workspace, Run, Scratch};

#[test]
fn fixar_u50_json_has_the_figures_the_paper_comparison_and_writes_report_and_plots() {
    let out = Scratch::new("u50");
    let j = fixar()
        .args(["accel", "--hw", "fixar-u50", "--format", "json"])
        .args(["--cpu-seconds", "0", "--out"])
        .arg(out.path())
        .run_ok()
        .json();
    for key in ["training_ips", "inference_ips", "power_w", "ips_per_watt"] {
        assert!(j[key].as_f64().unwrap() > 0.0, "{key}");
    }
    assert!(j["training_ips_definition"]
        .as_str()
        .unwrap()
        .contains("batch / iteration time"));
    let c = &j["calibration"];
    assert!(c["training_ips_error_pct"].as_f64().unwrap().abs() < 10.0);
    assert!(c["ips_per_watt_error_pct"].as_f64().unwrap().abs() < 10.0);
    assert_eq!(c["paper_training_ips"].as_f64().unwrap(), 25293.3);
    let rows = j["precisions"].as_array().unwrap();
    let ips = |p: &str| {
        rows.iter().find(|r| r["precision"] == p).unwrap()["training_ips"]
            .as_f64()
            .unwrap()
    };
    assert!(ips("fxp16") > ips("fxp32"));
    for c in j["simulator_checks"].as_array().unwrap() {
        assert_eq!(c["simulated_cycles"], c["analytic_cycles"], "{c}");
        assert_eq!(c["bit_exact"], true, "{c}");
    }
    assert_eq!(j["simulator_checks"].as_array().unwrap().len(), 2);
    for f in ["report.md", "report.json"] {
        assert!(out.join(f).exists(), "{f}");
    }
    for stem in [
        "ips_vs_cores_fxp16",
        "ips_vs_cores_fxp32",
        "ipsw_vs_bits",
        "cycles_per_phase",
        "pareto",
    ] {
        for ext in ["png", "svg"] {
            let p = out.join(format!("{stem}.{ext}"));
            assert!(
                std::fs::metadata(&p)
                    .map(|m| m.len() > 1000)
                    .unwrap_or(false),
                "{}",
                p.display()
            );
        }
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("## Against the paper") && md.contains("inference IPS = actions per second")
    );
}

#[test]
fn an_agent_config_sets_the_workload_and_the_cpu_side_is_measured() {
    let out = Scratch::new("agent");
    let j = fixar()
        .arg("accel")
        .arg("--agent")
        .arg(workspace().join("runs/configs/td3_pendulum.toml"))
        .args([
            "--hw",
            "cleanrl-td3-u50",
            "--format",
            "json",
            "--cpu-seconds",
            "0.2",
        ])
        .args(["--sweep", "cores=1,2;mode=adaptive", "--out"])
        .arg(out.path())
        .run_ok()
        .json();
    assert!(
        j["workload"]
            .as_str()
            .unwrap()
            .contains("TD3 actor 3-256-256-1"),
        "{}",
        j["workload"]
    );
    // float32 config -> estimated at FXP32, and said so.
    assert_eq!(j["precision"], "fxp32");
    assert!(j["notes"].to_string().contains("float32"));
    assert!(
        j["calibration"].is_null(),
        "the paper comparison is only for the preset's own workload"
    );
    assert!(j["cpu"]["training_ips"].as_f64().unwrap() > 0.0);
    assert!(j["speedup_vs_cpu"].as_f64().unwrap() > 0.0);
    assert_eq!(j["sweep"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_input_exits_2_naming_what_is_wrong() {
    let out = Scratch::new("bad");
    let dir = out.to_str().unwrap();
    let wide = out.write_config(
        "wide.toml",
        &TrainConfig {
            hidden: vec![8192, 8192],
            precision: Preset::Fxp16,
            ..tiny_config()
        },
    );
    let zero = out.write("zero.toml", "base = \"fixar-u50\"\nclock_mhz = 0.0\n");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--hw", "no-such-preset"], "unknown hardware preset"),
        (vec!["--hw", zero.to_str().unwrap()], "hw.clock_mhz"),
        (
            vec!["--agent", wide.to_str().unwrap()],
            "workload.actor_hidden",
        ),
        (vec!["--sweep", "cores=0"], "sweep.cores"),
        (vec!["--cpu-watts=-3"], "--cpu-watts"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["accel", "--cpu-seconds", "0", "--out", dir];
        args.extend(extra.iter().copied());
        let o = fixar().args(&args).run();
        assert_eq!(o.code, Some(2), "{extra:?}: {}", o.stderr);
        assert!(o.stderr.contains(needle), "{extra:?}: {}", o.stderr);
    }
}
