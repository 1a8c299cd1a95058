//! Sweeps over cores, PE array shape, precision, batch, clock and parallelism, evaluated
//! in parallel with rayon, and the Pareto front of accelerator training IPS vs IPS/W.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::hw::{HwConfig, Parallelism};
use crate::plan::Plan;
use crate::workload::{Precision, Workload};

/// The values each axis takes; an axis left out of a spec keeps the base value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepSpec {
    pub cores: Vec<usize>,
    pub arrays: Vec<(usize, usize)>,
    pub precisions: Vec<Precision>,
    pub batches: Vec<usize>,
    pub clocks_mhz: Vec<f64>,
    pub modes: Vec<Parallelism>,
}

/// One combination of the swept axes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DesignPoint {
    pub cores: usize,
    pub array: (usize, usize),
    pub precision: Precision,
    pub batch: usize,
    pub clock_mhz: f64,
    pub parallelism: Parallelism,
}

/// One evaluated design point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    #[serde(flatten)]
    pub point: DesignPoint,
    pub fits: bool,
    /// Why it does not fit (resources, board power) or could not be built (memory).
    pub problem: Option<String>,
    pub accelerator_training_ips: Option<f64>,
    pub system_training_ips: Option<f64>,
    pub inference_ips: Option<f64>,
    pub power_w: Option<f64>,
    pub ips_per_watt: Option<f64>,
    pub training_utilization: Option<f64>,
    pub dsp: u64,
}

fn list<T>(
    field: &str,
    text: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, ModelError> {
    text.split(',')
        .map(|v| {
            parse(v.trim()).ok_or_else(|| {
                ModelError::invalid(format!("sweep.{field}"), v.trim(), "not a valid value")
            })
        })
        .collect()
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(v: &str) -> Option<T> {
    v.parse::<T>().ok().filter(|x| *x > T::default())
}

impl SweepSpec {
    /// The base configuration alone (every axis one value).
    pub fn single(w: &Workload, hw: &HwConfig) -> SweepSpec {
        SweepSpec {
            cores: vec![hw.cores],
            arrays: vec![(hw.pe_rows, hw.pe_cols)],
            precisions: vec![w.precision],
            batches: vec![w.batch],
            clocks_mhz: vec![hw.clock_mhz],
            modes: vec![hw.parallelism],
        }
    }

    /// The default sweep of a report: cores 1-8 in every mode at both precisions, and
    /// 8x8 / 16x16 / 32x32 arrays.
    pub fn default_for(w: &Workload, hw: &HwConfig) -> SweepSpec {
        SweepSpec {
            cores: vec![1, 2, 3, 4, 5, 6, 8],
            arrays: vec![(8, 8), (16, 16), (32, 32)],
            precisions: vec![Precision::Fxp16, Precision::Fxp32],
            modes: Parallelism::ALL.to_vec(),
            ..SweepSpec::single(w, hw)
        }
    }

    /// Parses `cores=1,2,4;array=8x8,16x16;precision=16,32;batch=64,256;clock=200,300;mode=adaptive`
    /// on top of the base configuration (axes not named keep the base value).
    pub fn parse(text: &str, w: &Workload, hw: &HwConfig) -> Result<SweepSpec, ModelError> {
        let mut spec = SweepSpec::single(w, hw);
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, values) = part.split_once('=').ok_or_else(|| {
                ModelError::invalid(
                    "sweep",
                    part,
                    "expected axis=v1,v2,... (axes: cores, array, precision, batch, clock, mode)",
                )
            })?;
            match key.trim() {
                "cores" => spec.cores = list("cores", values, positive::<usize>)?,
                "array" => {
                    spec.arrays = list("array", values, |v| {
                        let (r, c) = v.split_once('x')?;
                        Some((positive::<usize>(r)?, positive::<usize>(c)?))
                    })?
                }
                "precision" => spec.precisions = list("precision", values, Precision::parse)?,
                "batch" => spec.batches = list("batch", values, positive::<usize>)?,
                "clock" => {
                    spec.clocks_mhz = list("clock", values, |v| {
                        positive::<f64>(v).filter(|x| x.is_finite())
                    })?
                }
                "mode" => spec.modes = list("mode", values, Parallelism::parse)?,
                other => {
                    return Err(ModelError::invalid(
                        "sweep",
                        other,
                        "unknown axis (axes: cores, array, precision, batch, clock, mode)",
                    ))
                }
            }
        }
        Ok(spec)
    }

    /// Every combination, in axis order.
    pub fn points(&self) -> Vec<DesignPoint> {
        let mut out = Vec::new();
        for &c in &self.cores {
            for &a in &self.arrays {
                for &p in &self.precisions {
                    for &b in &self.batches {
                        for &f in &self.clocks_mhz {
                            for &m in &self.modes {
                                out.push(DesignPoint {
                                    cores: c,
                                    array: a,
                                    precision: p,
                                    batch: b,
                                    clock_mhz: f,
                                    parallelism: m,
                                });
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Evaluates every point in parallel (one plan per precision x batch).
    pub fn run(&self, w: &Workload, hw: &HwConfig) -> Vec<SweepPoint> {
        self.points()
            .into_par_iter()
            .map(|point| {
                let DesignPoint {
                    cores,
                    array,
                    precision,
                    batch,
                    clock_mhz,
                    parallelism,
                } = point;
                let wl = Workload {
                    precision,
                    batch,
                    ..w.clone()
                };
                let cfg = HwConfig {
                    cores,
                    pe_rows: array.0,
                    pe_cols: array.1,
                    clock_mhz,
                    parallelism,
                    ..hw.clone()
                };
                let mut out = SweepPoint {
                    point,
                    fits: false,
                    problem: None,
                    accelerator_training_ips: None,
                    system_training_ips: None,
                    inference_ips: None,
                    power_w: None,
                    ips_per_watt: None,
                    training_utilization: None,
                    dsp: 0,
                };
                match Plan::new(&wl).estimate(&cfg) {
                    Ok(e) => {
                        out.fits = e.fit.fits;
                        out.dsp = e.resources.dsp;
                        if !e.fit.exceeded.is_empty() {
                            out.problem = Some(e.fit.exceeded.join(", "));
                        }
                        if let Some(p) = e.performance {
                            out.accelerator_training_ips = Some(p.accelerator_training_ips);
                            out.system_training_ips = Some(p.system_training_ips);
                            out.inference_ips = Some(p.inference_ips);
                            out.power_w = Some(p.power_w);
                            out.ips_per_watt = Some(p.ips_per_watt);
                            out.training_utilization = Some(p.training_utilization);
                        }
                    }
                    Err(e) => out.problem = Some(e.to_string()),
                }
                out
            })
            .collect()
    }
}

/// Indices of the fitting points no other fitting point beats in both accelerator
/// training IPS and IPS/W, sorted by IPS.
pub fn pareto_front(points: &[SweepPoint]) -> Vec<usize> {
    let perf: Vec<(usize, f64, f64)> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, p.accelerator_training_ips?, p.ips_per_watt?)))
        .collect();
    let mut front: Vec<(usize, f64, f64)> = perf
        .iter()
        .copied()
        .filter(|&(_, ips, eff)| {
            !perf
                .iter()
                .any(|&(_, i2, e2)| i2 >= ips && e2 >= eff && (i2 > ips || e2 > eff))
        })
        .collect();
    front.sort_by(|a, b| a.1.total_cmp(&b.1));
    front.dedup_by(|a, b| a.1 == b.1 && a.2 == b.2);
    front.into_iter().map(|f| f.0).collect()
}
