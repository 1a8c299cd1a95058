//! `fixar pipeline`: one command from nothing to a report. Trains the agent at `fxp32`,
//! walks the QAT ladder from it, estimates the accelerator at FXP32 and at the chosen
//! width, measures the software on this CPU, and writes `report.md` and a self-contained
//! `report.html` into the run directory.
//!
//! Layout of a pipeline directory (`out`):
//! ```text
//! out/                 the fxp32 training run (config.toml, run.json, seed_*/, summary.json,
//!                      learning_curve.png/.svg)
//! out/qat/             the ladder (qat.csv, qat.md, formats.json, chosen.json, reward_vs_bits.*)
//! out/accel/           the accelerator estimate (report.md, report.json, plots)
//! out/report.md, out/report.html
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use agents::layout;
use agents::pipeline::{accel_datapath, PipelineError, PipelineSpec};
use anyhow::{Context, Result};
use clap::Parser;

use crate::failure::config_error;
use crate::report::{Report, Section, Table};

/// `fixar pipeline` arguments.
#[derive(clap::Args, Debug)]
pub struct PipelineArgs {
    /// The pipeline file (see runs/configs/pipeline_pendulum.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Output directory (overrides the file's `out`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing run in the output directory.
    #[arg(long)]
    pub force: bool,
}

/// Wraps the `fixar qat` flags so the pipeline parses them exactly as the CLI does.
#[derive(Parser)]
struct QatCli {
    #[command(flatten)]
    args: crate::qat::QatArgs,
}

fn set_strings(set: &BTreeMap<String, toml::Value>) -> Vec<String> {
    set.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Runs the whole pipeline; returns the report paths.
pub fn run(args: &PipelineArgs) -> Result<ExitCode> {
    let spec =
        PipelineSpec::load(&args.config).map_err(|e: PipelineError| config_error(e.to_string()))?;
    let train_path = spec.train_path(&args.config);
    let out = args.out.clone().unwrap_or_else(|| spec.out_dir());
    // Check every stage's input before anything is created.
    let mut sets = set_strings(&spec.set);
    sets.push("precision=\"fxp32\"".into());
    let (cfg, resolved) =
        agents::config::load(Some(&train_path), &sets).map_err(crate::failure::usage)?;
    let seeds = crate::train::parse_seeds(&spec.seeds)?;
    let mut qat_argv: Vec<String> = vec![
        "qat".into(),
        "--from".into(),
        out.display().to_string(),
        "--widths".into(),
        spec.qat.widths.clone(),
        "--strategy".into(),
        spec.qat.strategy.clone(),
        "--tolerance".into(),
        spec.qat.tolerance.to_string(),
        "--steps".into(),
        spec.qat.steps.to_string(),
        "--profile-steps".into(),
        spec.qat.profile_steps.to_string(),
    ];
    if let Some(e) = spec.qat.episodes {
        qat_argv.extend(["--episodes".into(), e.to_string()]);
    }
    qat_argv.extend(spec.qat.extra_args.iter().cloned());
    let qat_args = QatCli::try_parse_from(&qat_argv)
        .map_err(|e| {
            config_error(format!(
                "pipeline file {}: [qat]: {e}",
                args.config.display()
            ))
        })?
        .args;
    accel_model::presets::load(&spec.accel.hw).map_err(|e| {
        config_error(format!(
            "pipeline file {}: [accel] hw: {e}",
            args.config.display()
        ))
    })?;
    crate::rundir::check_fresh(&out, args.force)?;
    if args.force {
        crate::rundir::clear_run(&out)?;
        let _ = std::fs::remove_dir_all(out.join("qat"));
        let _ = std::fs::remove_dir_all(out.join("accel"));
    }

    // 1. Train at fxp32.
    let t0 = Instant::now();
    let mut info = crate::rundir::RunInfo {
        seeds: seeds.clone(),
        config_source: Some(train_path.display().to_string()),
        sets: sets.clone(),
        config_crc32: None,
        cpu: None,
        branched_from: None,
    };
    crate::rundir::create(&out, &resolved, &mut info)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "pipeline 1/3: training {} seeds at fxp32 into {}",
        seeds.len(),
        out.display()
    );
    let summary = crate::train::train_seeds(&cfg, &seeds, &out, seeds.len().min(cpus), true)?;
    let train_s = t0.elapsed().as_secs_f64();

    // 2. QAT ladder.
    let t1 = Instant::now();
    eprintln!(
        "pipeline 2/3: QAT ladder {} ({})",
        spec.qat.widths, spec.qat.strategy
    );
    let plan = qat_args.plan()?;
    let qat = crate::qat::execute(&plan)?;
    let qat_s = t1.elapsed().as_secs_f64();

    // 3. Accelerator at the chosen precision (FXP16 datapath for widths up to 16).
    let t2 = Instant::now();
    eprintln!("pipeline 3/3: accelerator estimate on {}", spec.accel.hw);
    let datapath = accel_datapath(qat.outcome.chosen.as_ref().map(|c| c.width));
    let accel_cfg = agents::config::TrainConfig {
        precision: datapath,
        ..cfg.clone()
    };
    let accel_cfg_path = out.join(layout::ACCEL_AGENT);
    crate::rundir::write_atomic(&accel_cfg_path, toml::to_string_pretty(&accel_cfg)?)?;
    let accel_dir = out.join("accel");
    let accel = crate::accel::produce(&crate::accel::AccelArgs {
        agent: Some(accel_cfg_path.clone()),
        hw: spec.accel.hw.clone(),
        sweep: None,
        format: crate::accel::Format::Json,
        out: Some(accel_dir.clone()),
        cpu_watts: spec.accel.cpu_watts,
        cpu_seconds: spec.accel.cpu_seconds,
        pow2_terms: None,
        pe_bits: None,
        host: Default::default(),
    })?;
    let accel_s = t2.elapsed().as_secs_f64();

    let report = build_report(
        &spec,
        &out,
        &summary,
        &qat,
        &accel,
        &accel_dir,
        [train_s, qat_s, accel_s],
    )?;
    let (md, html) = report.write(&out, layout::REPORT_STEM)?;
    println!("report: {}", md.display());
    println!("report_html: {}", html.display());
    Ok(ExitCode::SUCCESS)
}

/// `, IQM -140.2 (95% CI -152.0 to -131.9)`, or nothing without an estimate.
fn iqm_text(e: Option<&agents::stats::Estimate>) -> String {
    e.map_or(String::new(), |e| {
        format!(
            ", IQM {:.1} (95% CI {:.1} to {:.1})",
            e.estimate, e.ci_low, e.ci_high
        )
    })
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.digits$}"))
}

fn build_report(
    spec: &PipelineSpec,
    out: &Path,
    summary: &crate::train::Summary,
    qat: &crate::qat::QatReport,
    accel: &crate::accel::AccelReport,
    accel_dir: &Path,
    seconds: [f64; 3],
) -> Result<Report> {
    let mut sections = Vec::new();
    let f = summary.final_eval_return;
    sections.push(Section::new("Summary").text(format!(
        "{} on {} trained at `fxp32` for {} environment steps over {} seed(s): final eval return {:.1} ± {:.1}{}. QAT chose **{}**. Accelerator preset `{}`. Stage times: training {:.0} s, QAT {:.0} s, accelerator {:.0} s.",
        summary.algo.to_uppercase(),
        summary.env_id,
        summary.total_timesteps,
        f.n,
        f.mean,
        f.std,
        iqm_text(summary.final_eval_return_iqm.as_ref()),
        match &qat.outcome.chosen {
            Some(c) => format!("{} bits ({}; mean return {:.1} ± {:.1})", c.width, c.strategy.name(), c.mean_return, c.std_return),
            None => "no width (no rung stayed within tolerance)".into(),
        },
        spec.accel.hw,
        seconds[0],
        seconds[1],
        seconds[2]
    )));

    let mut t = Table::new(&[
        "seed",
        "final eval return",
        "eval std",
        "env steps",
        "updates",
        "wall time (s)",
        "updates/s",
    ]);
    for s in &summary.seeds {
        t.row(vec![
            s.seed.to_string(),
            format!("{:.1}", s.final_eval_return),
            format!("{:.1}", s.final_eval_std),
            s.steps.to_string(),
            s.updates.to_string(),
            format!("{:.1}", s.wall_time_s),
            format!("{:.1}", s.updates_per_s),
        ]);
    }
    sections.push(
        Section::new("Training at fxp32")
            .text(format!(
                "Final eval return of a seed: mean over {} deterministic evaluation episodes at the last evaluation; across seeds mean ± std (population) and the interquartile mean with its 95% stratified-bootstrap interval (rliable's statistics; the learning curve's band is that interval at every evaluation). Precision `{}`, GEMM `{}`, mode `{}`; {} libtorch thread per seed, {} seed(s) in parallel.",
                summary.eval_episodes, summary.precision, summary.gemm, summary.mode, summary.libtorch_threads_per_seed, summary.parallel_seeds
            ))
            .table(t)
            .figure(out.join(format!("{}.png", crate::rundir::CURVE)), "Learning curve: eval return vs environment steps"),
    );

    let mut qt = Table::new(&[
        "strategy",
        "width (bits)",
        "mean return",
        "std",
        "seeds",
        "status",
        "IQM",
        "IQM CI low",
        "IQM CI high",
        "P(rung > ref)",
        "P CI low",
        "P CI high",
    ]);
    for r in csv_rows(&qat.paths.csv())? {
        qt.row(r);
    }
    let mut qsec = Section::new("QAT ladder: reward vs bit width")
        .text(format!(
            "Reference `{}`: {:.1} ± {:.1}{} over {} seed(s). A rung holds when its mean return is within the tolerance ({}); the chosen width is the narrowest rung that holds. IQM: the mean of the middle 50% of the seeds' returns; P(rung > ref): the probability that a seed of the rung returns more than a seed of the reference (ties count one half); CI: 95% percentile interval of {} stratified-bootstrap replicates over seeds, as rliable computes them. Details: `qat/qat.md`.",
            qat.outcome.reference.label,
            qat.outcome.reference.mean,
            qat.outcome.reference.std,
            iqm_text(qat.outcome.reference.iqm_ci().as_ref()),
            qat.outcome.reference.seeds,
            spec.qat.tolerance,
            agents::stats::BOOTSTRAP_REPS
        ))
        .table(qt)
        .figure(qat.paths.plot_stem().with_extension("png"), "IQM eval return against bit width per strategy; bands: 95% bootstrap CIs");
    if let Some(c) = &qat.outcome.chosen {
        let mut ft = Table::new(&["layer", "class", "format"]);
        for (layer, spec) in &c.actor_formats {
            if let serde_json::Value::Object(m) = serde_json::to_value(spec)? {
                for (class, v) in m {
                    ft.row(vec![
                        layer.clone(),
                        class,
                        format!("`{}`", v.as_str().unwrap_or_default()),
                    ]);
                }
            }
        }
        qsec = qsec
            .text(format!(
                "Chosen formats of the actor at {} bits ({}, seed {}; checkpoint `{}`):",
                c.width,
                c.strategy.name(),
                c.seed,
                c.checkpoint.display()
            ))
            .table(ft);
    }
    sections.push(qsec);

    let mut at = Table::new(&[
        "datapath",
        "accelerator training IPS",
        "system training IPS",
        "inference IPS",
        "power (W)",
        "IPS/W",
        "fits",
    ]);
    for p in &accel.precisions {
        at.row(vec![
            format!("{:?}", p.precision).to_uppercase(),
            fmt_opt(p.accelerator_training_ips, 1),
            fmt_opt(p.training_ips, 1),
            fmt_opt(p.inference_ips, 1),
            fmt_opt(p.power_w, 2),
            fmt_opt(p.ips_per_watt, 1),
            p.fits.to_string(),
        ]);
    }
    let mut asec = Section::new("Accelerator estimate").text(format!(
        "Preset `{}` ({}): {}. The chosen width runs on the {} datapath (FIXAR's PEs do one FXP32 or two FXP16 MACs per cycle; widths up to 16 bits use FXP16). Full report: `accel/report.md`.",
        accel.estimate.hw,
        accel.estimate.device,
        accel.preset_description,
        accel_datapath(qat.outcome.chosen.as_ref().map(|c| c.width)).name().to_uppercase()
    ));
    asec = asec.table(at);
    if let Some(c) = &accel.calibration {
        asec = asec.text(format!(
            "Calibration against the paper ({}): training IPS {:.1} vs {:.1} ({:+.1}%), IPS/W {:.1} vs {:.1} ({:+.1}%) — the preset's own workload.",
            c.source,
            c.model_training_ips,
            c.paper_training_ips,
            c.training_ips_error_pct,
            c.model_ips_per_watt,
            c.paper_ips_per_watt,
            c.ips_per_watt_error_pct
        ));
    }
    for plot in &accel.plots {
        let png = PathBuf::from(plot).with_extension("png");
        let png = if png.is_absolute() || png.exists() {
            png
        } else {
            accel_dir.join(png)
        };
        if png.exists() {
            let caption = png
                .file_stem()
                .map(|s| s.to_string_lossy().replace('_', " "))
                .unwrap_or_default();
            asec = asec.figure(png, caption);
        }
    }
    sections.push(asec);

    let mut ssec = Section::new("Software on this CPU");
    let ups: Vec<f64> = summary.seeds.iter().map(|s| s.updates_per_s).collect();
    ssec = ssec.text(format!(
        "Training at fxp32 here: {:.1} gradient updates/s per seed (mean over seeds; wall time including env steps and evaluation; {} libtorch thread per seed).",
        ups.iter().sum::<f64>() / ups.len().max(1) as f64,
        summary.libtorch_threads_per_seed
    ));
    match &accel.cpu {
        Some(cpu) => {
            ssec = ssec.text(format!(
                "Measured software IPS: {:.1} samples/s ({} thread(s); {}). CPU power {:.1} W ({}), so {:.2} IPS/W.{}",
                cpu.training_ips,
                cpu.threads,
                cpu.measured,
                cpu.power_w,
                cpu.power_source,
                cpu.ips_per_watt,
                cpu.emulated_fixed_point_ips
                    .map(|x| format!(" With fixed point emulated: {x:.1} samples/s."))
                    .unwrap_or_default()
            ));
            ssec = ssec.text(format!(
                "Estimated accelerator vs this CPU: {}x the training IPS, {}x the IPS/W.",
                fmt_opt(accel.speedup_vs_cpu, 1),
                fmt_opt(accel.efficiency_ratio_vs_cpu, 1)
            ));
        }
        None => ssec = ssec.text("The CPU side was not measured (`[accel] cpu_seconds = 0`)."),
    }
    sections.push(ssec);

    sections.push(
        Section::new("Definitions")
            .text(accel_model::ACCELERATOR_IPS_DEFINITION.to_string())
            .text(accel_model::SYSTEM_IPS_DEFINITION.to_string())
            .text(accel_model::TRAINING_IPS_DEFINITION.to_string())
            .text(accel_model::INFERENCE_IPS_DEFINITION.to_string())
            .text("Final eval return: the mean return of the deterministic policy (no exploration noise) over the evaluation episodes of the last evaluation, on an environment instance separate from training.")
            .text("Gradient updates/s: critic updates per second of wall time (the actor and targets update every `policy_frequency`-th)."),
    );
    Ok(Report {
        title: format!("fixar pipeline: {}", spec.name),
        sections,
    })
}

fn csv_rows(path: &Path) -> Result<Vec<Vec<String>>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    r.records()
        .map(|rec| Ok(rec?.iter().map(String::from).collect()))
        .collect()
}
