//! `fixar accel` end to end: the JSON the issue names, the files and plots it writes, an
//! agent config as the workload, and exit code 2 on bad input.

mod common;

use std::path::Path;

use common::{workspace, Scratch};

/// `fixar ARGS` from the workspace root (the tests name configs and presets by their
/// repository paths).
fn fixar(args: &[&str]) -> std::process::Output {
    common::fixar()
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("fixar runs")
}

fn tmp(name: &str) -> Scratch {
    Scratch::new(name)
}

fn within(model: f64, paper: f64, tol: f64) -> bool {
    ((model - paper) / paper).abs() <= tol
}

/// `fixar accel ARGS --format json --out OUT`: its JSON (the run must succeed).
fn accel_json(args: &[&str], out: &Path) -> serde_json::Value {
    let mut all = vec!["accel", "--format", "json", "--out", out.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = fixar(&all);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn u50_json(batch: Option<usize>, out: &Path) -> serde_json::Value {
    let b = batch.map(|b| b.to_string());
    let mut args = vec![
        "accel",
        "--hw",
        "fixar-u50",
        "--format",
        "json",
        "--cpu-seconds",
        "0",
        "--sweep",
        "cores=1,2;mode=adaptive",
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(b) = &b {
        args.extend(["--batch", b.as_str()]);
    }
    let o = fixar(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn fixar_u50_json_reproduces_the_papers_figures_within_the_issues_tolerances_but_the_known_misses()
{
    let out = tmp("u50");
    for batch in [64, 128, 256, 512] {
        let j = u50_json(Some(batch), &out);
        assert_eq!(j["clock_mhz"].as_f64(), Some(164.0));
        assert_eq!(j["cores"].as_u64(), Some(2));
        assert_eq!(j["batch"].as_u64(), Some(batch as u64));
        // Batch 64 misses by a known 14% with the paper's mappings (preset assumption
        // `batch_64`); held to that gap.
        let (ips_tol, util_tol) = if batch == 64 {
            (0.15, 0.13)
        } else {
            (0.10, 0.1)
        };
        let acc = j["accelerator_training_ips"].as_f64().unwrap();
        assert!(within(acc, 53826.8, ips_tol), "batch {batch}: {acc}");
        let util = j["training_utilization"].as_f64().unwrap();
        assert!((util - 0.924).abs() <= util_tol, "batch {batch}: {util}");
        assert!(j["fitted"].as_object().unwrap().len() <= 2);
    }
    // The headline batch is the preset's own.
    let j = u50_json(None, &out);
    assert_eq!(j["paper"]["headline_batch"], j["batch"]);
    let sys = j["system_training_ips"].as_f64().unwrap();
    assert!(within(sys, 25293.3, 0.10), "{sys}");
    assert_eq!(
        j["training_ips"].as_f64(),
        Some(sys),
        "training_ips aliases system"
    );
    let power = j["power_w"].as_f64().unwrap();
    assert!(within(power, 20.4, 0.15), "{power}");
    let eff = j["ips_per_watt"].as_f64().unwrap();
    // Above 2,638.0 by a known gap: bottom-up LUTs, power coefficients not re-tuned
    // (preset assumption `power`).
    assert!(eff > 2638.0 && within(eff, 2638.0, 0.20), "{eff}");
    let acc = j["accelerator_training_ips"].as_f64().unwrap();
    assert!((eff - acc / power).abs() < 1e-6 * eff);
    let r = &j["resources"];
    // LUTs bottom up: about 28% under Table I (preset assumption `lut_ff`).
    let lut = r["lut"].as_f64().unwrap();
    assert!((0.65..0.85).contains(&(lut / 508100.0)), "lut: {lut}");
    for (key, paper) in [("dsp", 2302.0), ("bram36", 774.0), ("uram", 128.0)] {
        let m = r[key].as_f64().unwrap();
        assert!(within(m, paper, 0.15), "{key}: {m} vs {paper}");
    }
    let fitted = j["fitted"].as_object().unwrap();
    assert!(!fitted.is_empty() && fitted.len() <= 2, "{fitted:?}");
    assert!(j["assumptions"].as_object().unwrap().len() >= 5);
    for key in [
        "accelerator_training_ips_definition",
        "system_training_ips_definition",
    ] {
        assert!(j[key].as_str().unwrap().contains("batch /"), "{key}");
    }
    assert!(j["training_ips_definition"]
        .as_str()
        .unwrap()
        .contains("alias"));
    // The paper table holds every figure the issue names.
    let rows = j["paper"]["rows"].as_array().unwrap();
    for needle in [
        "accelerator IPS, batch 64",
        "system IPS",
        "card power",
        "IPS/W",
        "Table I total DSP",
    ] {
        assert!(
            rows.iter()
                .any(|r| r["figure"].as_str().unwrap().starts_with(needle)),
            "{needle}"
        );
    }
    assert_eq!(j["paper"]["table_peak_ips"].as_f64(), Some(38779.8));
    // The simulator ran every phase and agrees with the analytic model.
    let checks = j["simulator_checks"].as_array().unwrap();
    assert_eq!(checks.len(), 11);
    for c in checks {
        assert_eq!(c["simulated_cycles"], c["analytic_cycles"], "{c}");
        assert_eq!(c["simulated_port_cycles"], c["analytic_port_cycles"], "{c}");
        assert_eq!(c["bit_exact"], true, "{c}");
    }
    for f in ["report.md", "report.json"] {
        assert!(out.join(f).exists(), "{f}");
    }
    for stem in [
        "ips_vs_batch",
        "time_breakdown",
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
    assert!(md.contains("## Paper vs model") && md.contains("inference IPS = actions per second"));
    assert!(md.contains("## Fitted parameters of the preset"));
}

#[test]
fn env_ms_changes_the_system_ips_and_not_the_accelerators() {
    let out = tmp("envms");
    let run = |ms: &str| {
        let o = fixar(&[
            "accel",
            "--format",
            "json",
            "--cpu-seconds",
            "0",
            "--sweep",
            "cores=2",
            "--env-ms",
            ms,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (
            j["accelerator_training_ips"].as_f64().unwrap(),
            j["system_training_ips"].as_f64().unwrap(),
            j["time_step"]["env_s"].as_f64().unwrap(),
        )
    };
    let (a2, s2, e2) = run("2");
    let (a0, s0, e0) = run("0.5");
    assert_eq!(a2, a0);
    assert!(s0 > s2, "{s0} <= {s2}");
    assert_eq!((e2, e0), (0.002, 0.0005));
}

#[test]
fn an_agent_config_sets_the_workload_and_the_cpu_side_is_measured() {
    let out = tmp("agent");
    let o = fixar(&[
        "accel",
        "--agent",
        "runs/configs/td3_pendulum.toml",
        "--hw",
        "cleanrl-td3-u50",
        "--format",
        "json",
        "--cpu-seconds",
        "0.2",
        "--sweep",
        "cores=1,2;mode=adaptive",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
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
    let out = tmp("bad");
    let dir = out.to_str().unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let wide = out.join("wide.toml");
    std::fs::write(
        &wide,
        "algo = \"td3\"\nenv_id = \"Pendulum-v1\"\nhidden = [8192, 8192]\nprecision = \"fxp16\"\n",
    )
    .unwrap();
    let zero = out.join("zero.toml");
    std::fs::write(&zero, "base = \"fixar-u50\"\nclock_mhz = 0.0\n").unwrap();
    let unknown = out.join("unknown.toml");
    std::fs::write(
        &unknown,
        "base = \"fixar-u50\"\n[weight_memory]\nwrite_bits = 16\n",
    )
    .unwrap();
    let port = out.join("port.toml");
    std::fs::write(
        &port,
        "base = \"fixar-u50\"\n[weight_memory]\nport_bits = 1024\n",
    )
    .unwrap();
    let big = out.join("big.toml");
    std::fs::write(&big, "base = \"fixar-u50\"\ncores = 8\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--hw", "no-such-preset"], "unknown hardware preset"),
        (vec!["--hw", zero.to_str().unwrap()], "hw.clock_mhz"),
        (vec!["--hw", unknown.to_str().unwrap()], "write_bits"),
        (
            vec!["--hw", port.to_str().unwrap()],
            "hw.weight_memory.port_bits",
        ),
        (vec!["--hw", big.to_str().unwrap()], "does not fit"),
        (vec!["--batch", "0"], "--batch"),
        (vec!["--env-ms=-1"], "--env-ms"),
        (
            vec!["--agent", wide.to_str().unwrap()],
            "workload.actor_hidden",
        ),
        (vec!["--sweep", "cores=0"], "sweep.cores"),
        (vec!["--cpu-watts=-3"], "--cpu-watts"),
        (vec!["--pow2-terms", "0"], "--pow2-terms must be between 1"),
        (vec!["--pow2-terms", "-2"], "got -2"),
        (
            vec!["--pow2-terms", "9", "--pe-bits", "8,8"],
            "PE weight width (8), got 9",
        ),
        (vec!["--pow2-terms", "2", "--pe-bits", "8"], "--pe-bits `8`"),
        (vec!["--pe-bits", "8,8"], "--pe-bits needs --pow2-terms"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["accel", "--cpu-seconds", "0", "--out", dir];
        args.extend(extra.iter().copied());
        let o = fixar(&args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{extra:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(needle),
            "{extra:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn a_shift_add_pe_trades_every_pe_dsp_for_luts_at_the_same_inference_rate() {
    let out = tmp("shift-add");
    let j = accel_json(
        &[
            "--cpu-seconds",
            "0",
            "--sweep",
            "cores=1",
            "--pow2-terms",
            "2",
            "--pe-bits",
            "8,8",
        ],
        &out,
    );
    let c = &j["shift_add"];
    let (m, s) = (&c["multiplying"], &c["shift_add"]);
    let pes = c["pes"].as_u64().unwrap();
    let u = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    // An 8 x 8 product fits one DSP48E2: two per PE, none in the shift-add PE.
    assert_eq!((u(m, "pe_dsp"), u(s, "pe_dsp")), (2, 0));
    assert_eq!(u(m, "dsp") - u(s, "dsp"), 2 * pes);
    assert!(u(s, "lut") > u(m, "lut") && u(s, "pe_lut") > u(m, "pe_lut"));
    assert_eq!(m["inference_ips"], s["inference_ips"]);
    assert!(s["inference_power_w"].as_f64().unwrap() > 0.0);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Multiplier-free PE: 8-bit weights of at most 2 signed powers of two"));
    // Without the flag the report has no such section.
    let j = u50_json(None, &out);
    assert!(j.get("shift_add").is_none());
}
