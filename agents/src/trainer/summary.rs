//! What a multi-seed run reports (`summary.json`): each seed's result and the final
//! eval return across seeds (mean and population std, agents.md's rule; the IQM with its
//! 95% stratified-bootstrap interval, rliable's statistic), and the seed
//! lists users write (`0..5`, `0,3,7`, `2`).

use serde::{Deserialize, Serialize};

use super::SeedResult;
use crate::config::TrainConfig;

/// Mean and standard deviation (population, ddof 0) over seeds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AcrossSeeds {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl AcrossSeeds {
    pub fn of(xs: &[f64]) -> Self {
        let (mean, std) = crate::stats::mean_std(xs).unwrap_or((f64::NAN, f64::NAN));
        AcrossSeeds {
            mean,
            std,
            n: xs.len(),
        }
    }
}

/// `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub algo: String,
    pub env_id: String,
    pub precision: String,
    pub gemm: String,
    pub mode: String,
    pub total_timesteps: u64,
    pub eval_episodes: u32,
    /// Per seed: final eval return (mean over the last evaluation's episodes), steps,
    /// updates, wall time, updates/s.
    pub seeds: Vec<SeedResult>,
    /// Across seeds: mean and std (ddof 0) of the final eval returns.
    pub final_eval_return: AcrossSeeds,
    /// Across seeds: the interquartile mean of the final eval returns with its 95%
    /// stratified-bootstrap percentile interval (`stats::iqm_ci`); absent when a return
    /// is not finite (and in files written before it existed).
    #[serde(default)]
    pub final_eval_return_iqm: Option<crate::stats::Estimate>,
    pub libtorch_threads_per_seed: i32,
    pub parallel_seeds: usize,
}

impl Summary {
    /// The summary of `seeds` trained from `cfg`, `parallel_seeds` at a time with one
    /// libtorch thread each.
    pub fn of(cfg: &TrainConfig, seeds: Vec<SeedResult>, parallel_seeds: usize) -> Summary {
        let finals: Vec<f64> = seeds.iter().map(|r| r.final_eval_return).collect();
        Summary {
            algo: format!("{:?}", cfg.algo).to_lowercase(),
            env_id: cfg.env_id.clone(),
            precision: cfg.precision.to_string(),
            gemm: format!("{:?}", cfg.gemm).to_lowercase(),
            mode: format!("{:?}", cfg.mode).to_lowercase(),
            total_timesteps: cfg.total_timesteps,
            eval_episodes: cfg.eval_episodes,
            seeds,
            final_eval_return: AcrossSeeds::of(&finals),
            final_eval_return_iqm: crate::stats::iqm_ci(&finals),
            libtorch_threads_per_seed: 1,
            parallel_seeds,
        }
    }
}

/// A seed list that does not parse; the message quotes it and says why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{spec}: {why} (expected e.g. 0..5, 0,3,7 or 2)")]
pub struct SeedsError {
    pub spec: String,
    pub why: &'static str,
}

/// `0..5` (0 to 4), `0,3,7` or `2`; empty lists and repeated seeds are refused.
pub fn parse_seeds(s: &str) -> Result<Vec<u64>, SeedsError> {
    let bad = |why| SeedsError {
        spec: s.to_string(),
        why,
    };
    let seeds: Vec<u64> = if let Some((a, b)) = s.split_once("..") {
        let a: u64 = a.trim().parse().map_err(|_| bad("not a range"))?;
        let b: u64 = b.trim().parse().map_err(|_| bad("not a range"))?;
        (a..b).collect()
    } else {
        s.split(',')
            .map(|x| x.trim().parse::<u64>().map_err(|_| bad("not a seed list")))
            .collect::<Result<_, _>>()?
    };
    if seeds.is_empty() {
        return Err(bad("no seeds"));
    }
    let mut sorted = seeds.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != seeds.len() {
        return Err(bad("a seed appears twice"));
    }
    Ok(seeds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn across_seeds_is_mean_and_population_std() {
        let a = AcrossSeeds::of(&[-100.0, -200.0]);
        assert_eq!((a.mean, a.std, a.n), (-150.0, 50.0, 2));
    }

    #[test]
    fn seed_lists_say_what_is_wrong() {
        assert_eq!(parse_seeds("1..4").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_seeds("1,1").unwrap_err().why, "a seed appears twice");
        assert_eq!(parse_seeds("4..4").unwrap_err().why, "no seeds");
        assert_eq!(parse_seeds("x").unwrap_err().why, "not a seed list");
    }
}
