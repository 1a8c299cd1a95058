//! fixar-u50 against FIXAR's published figures: the model's own numbers (nothing read
//! from `[reference]` feeds the model) within the tolerances issue #19 sets, and the
//! preset's bookkeeping of what is fitted and what is assumed.

use accel_model::presets::{self, Preset};
use accel_model::{estimate, MacAccounting, Performance, Workload};

fn u50() -> Preset {
    presets::load("fixar-u50").unwrap()
}

fn perf_at(p: &Preset, batch: usize, accounting: MacAccounting) -> Performance {
    let w = Workload {
        batch,
        accounting,
        ..p.workload.clone().unwrap()
    };
    let e = estimate(&w, &p.hw).unwrap();
    assert!(e.fit.fits, "{:?}", e.fit.exceeded);
    e.performance.unwrap()
}

fn within(model: f64, paper: f64, tol: f64) -> bool {
    ((model - paper) / paper).abs() <= tol
}

#[test]
fn fixar_u50_is_the_papers_design_two_cores_of_16x16_at_164_mhz_with_a_512_bit_port() {
    let p = u50();
    assert_eq!(p.hw.cores, 2);
    assert_eq!((p.hw.pe_rows, p.hw.pe_cols), (16, 16));
    assert_eq!(p.hw.clock_mhz, 164.0);
    assert_eq!(p.hw.weight_memory.port_bits, 512);
    assert_eq!(p.hw.host.env_ms, 2.0);
    let w = p.workload.as_ref().unwrap();
    assert_eq!((w.obs_dim, w.act_dim), (17, 6));
    assert_eq!(
        (w.actor_hidden.clone(), w.critic_hidden.clone()),
        (vec![400, 300], vec![400, 300])
    );
}

#[test]
fn accelerator_ips_and_utilization_match_the_paper_from_batch_128_and_miss_at_64_by_the_known_gap()
{
    let p = u50();
    let r = p.reference.clone().unwrap();
    for &b in &r.batches {
        let perf = perf_at(&p, b, p.workload.as_ref().unwrap().accounting);
        // Batch 64: the paper's mappings leave the model 14% under the paper's flat
        // figure (preset assumption `batch_64`); held to that gap so it cannot grow.
        let (ips_tol, util_tol) = if b == 64 { (0.15, 0.13) } else { (0.10, 0.1) };
        assert!(
            within(
                perf.accelerator_training_ips,
                r.accelerator_training_ips,
                ips_tol
            ),
            "batch {b}: {} vs {}",
            perf.accelerator_training_ips,
            r.accelerator_training_ips
        );
        assert!(
            (perf.training_utilization - r.training_utilization).abs() <= util_tol,
            "batch {b}: utilization {}",
            perf.training_utilization
        );
    }
    assert!(p.assumptions.contains_key("batch_64"));
}

#[test]
fn splitting_intra_layer_gemms_by_outputs_closes_the_batch_64_gap_to_within_10_percent() {
    let mut p = u50();
    p.hw.intra_layer_split = accel_model::IntraLayerSplit::Outputs;
    let r = p.reference.clone().unwrap();
    let perf = perf_at(&p, 64, p.workload.as_ref().unwrap().accounting);
    assert!(
        within(
            perf.accelerator_training_ips,
            r.accelerator_training_ips,
            0.10
        ),
        "{}",
        perf.accelerator_training_ips
    );
}

#[test]
fn system_ips_and_power_are_within_tolerance_and_ips_per_watt_misses_by_the_known_gap() {
    let p = u50();
    let r = p.reference.clone().unwrap();
    let perf = perf_at(
        &p,
        r.headline_batch,
        p.workload.as_ref().unwrap().accounting,
    );
    assert!(
        within(perf.system_training_ips, r.system_training_ips, 0.10),
        "{}",
        perf.system_training_ips
    );
    assert!(within(perf.power_w, r.power_w, 0.15), "{}", perf.power_w);
    // With the bottom-up LUT count the card draws less than 20.4 W (power coefficients
    // not re-tuned, preset assumption `power`), so IPS/W lands above the paper's 2,638.0,
    // outside the 10%: held to that honest gap so it cannot grow unnoticed.
    assert!(perf.power_w < r.power_w, "{}", perf.power_w);
    assert!(
        perf.ips_per_watt > r.ips_per_watt && within(perf.ips_per_watt, r.ips_per_watt, 0.20),
        "{}",
        perf.ips_per_watt
    );
    assert_eq!(perf.training_ips, perf.system_training_ips);
    assert!(
        (perf.ips_per_watt - perf.accelerator_training_ips / perf.power_w).abs() < 1e-9,
        "IPS/W is accelerator IPS over card power"
    );
}

#[test]
fn resources_are_bottom_up_dsp_bram_uram_within_15_percent_and_luts_short_by_the_known_gap() {
    let p = u50();
    let r = p.reference.clone().unwrap();
    let total = r.resources.iter().find(|c| c.name == "total").unwrap();
    let e = estimate(p.workload.as_ref().unwrap(), &p.hw).unwrap();
    let m = &e.resources;
    for (name, model, paper) in [
        ("DSP", m.dsp, total.dsp),
        ("BRAM", m.bram36, total.bram36),
        ("URAM", m.uram, total.uram),
    ] {
        assert!(
            within(model as f64, paper as f64, 0.15),
            "{name}: {model} vs {paper}"
        );
    }
    // LUTs from operand widths (nothing read from Table I) come out about 28% under
    // Table I's 508.1K: the PEs and control carry overhead the paper does not break down
    // (preset assumption `lut_ff`). Held to that gap.
    let lut = m.lut as f64 / total.lut as f64;
    assert!(
        (0.65..0.85).contains(&lut),
        "LUT {} vs {}",
        m.lut,
        total.lut
    );
    let comp = |name: &str| m.components.iter().find(|x| x.name == name).unwrap();
    let paper = |name: &str| r.resources.iter().find(|x| x.name == name).unwrap();
    // The Adam engine and the memory muxes land near Table I; the PEs well under it.
    for name in ["optimizer", "on-chip memory"] {
        let (mm, pp) = (comp(name).lut, paper(name).lut);
        assert!(within(mm as f64, pp as f64, 0.15), "{name}: {mm} vs {pp}");
    }
    assert!(comp("PEs").lut < paper("PEs").lut / 2 + paper("PEs").lut / 10);
    // Every Table I component has a model counterpart; the shell's three rows are one
    // platform row (their sum is a reference row too).
    let shell = ["kernel interface", "HBM interface", "PCIe DMA"];
    for c in r.resources.iter().filter(|c| c.name != "total") {
        let name = if shell.contains(&c.name.as_str()) {
            "platform (static region)"
        } else {
            c.name.as_str()
        };
        assert!(
            m.components.iter().any(|x| x.name == name),
            "{} missing",
            c.name
        );
    }
    let sum: u64 = shell.iter().map(|n| paper(n).lut).sum();
    assert_eq!(paper("platform (static region)").lut, sum);
}

#[test]
fn the_paper_ips_follows_the_autograd_accounting_not_the_minimal_one() {
    let p = u50();
    let r = p.reference.clone().unwrap();
    let err = |a| {
        let perf = perf_at(&p, r.headline_batch, a);
        (perf.accelerator_training_ips - r.accelerator_training_ips).abs()
    };
    assert!(err(MacAccounting::Autograd) < err(MacAccounting::Minimal));
    let macs = perf_at(&p, 256, MacAccounting::Autograd).macs_per_sample;
    assert!((1.35e6..1.45e6).contains(&macs), "{macs}");
}

#[test]
fn at_most_two_parameters_are_fitted_each_naming_its_paper_figure() {
    let p = u50();
    assert!(
        !p.fitted.is_empty() && p.fitted.len() <= 2,
        "{:?}",
        p.fitted
    );
    for (k, why) in &p.fitted {
        assert!(
            why.contains("Fitted to") || why.contains("by the paper's"),
            "{k}: {why}"
        );
    }
    for key in [
        "headline_batch",
        "precision",
        "update_overlap",
        "power",
        "lut_ff",
    ] {
        assert!(p.assumptions.contains_key(key), "no reason for {key}");
    }
}
