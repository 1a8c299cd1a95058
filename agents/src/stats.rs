//! The few statistics results are reported with, in one place: mean and population
//! standard deviation (agents.md's rule across seeds and episodes), the sample standard
//! deviation where a table says so, the median of timing rounds, and min/max that keep
//! a NaN (a NaN return must show in a band, not vanish from it: `f64::min` drops NaN);
//! and the aggregate statistics the RL community asks of a claim across seeds, as rliable
//! defines them: the interquartile mean with a 95% stratified-bootstrap percentile
//! interval, and the probability of improvement (P(X > Y), ties counting one half).
//! Every bootstrap fixar reports draws from one fixed seed; the draws can also be fed in
//! (`stratified_bootstrap`'s `draw`), which is how `agents/tests/rliable.rs` replays
//! numpy's own draws and matches rliable's intervals exactly.

/// Mean and population standard deviation (ddof 0); `None` for no values.
pub fn mean_std(xs: &[f64]) -> Option<(f64, f64)> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
    Some((m, v.sqrt()))
}

/// Mean and sample standard deviation (ddof 1; 0 for one value); NaN mean for none.
pub fn mean_sample_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The median (mean of the middle two for an even count); NaN for none.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The smallest and largest value; NaN for both when any value is NaN (or none are
/// given: (inf, -inf)).
pub fn min_max(xs: &[f64]) -> (f64, f64) {
    if xs.iter().any(|x| x.is_nan()) {
        return (f64::NAN, f64::NAN);
    }
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

// ---------------------------------------------------------------------------------------
// rliable's aggregate statistics (Agarwal et al., "Deep RL at the Edge of the Statistical
// Precipice", and google-research/rliable): the interquartile mean with a stratified
// bootstrap percentile confidence interval, and the probability of improvement.

/// Bootstrap replications: rliable's default for `get_interval_estimates`.
pub const BOOTSTRAP_REPS: usize = 50_000;
/// Coverage of the confidence intervals: rliable's default.
pub const CONFIDENCE: f64 = 0.95;
/// The fixed seed of every bootstrap fixar reports, so a file is reproducible.
pub const BOOTSTRAP_SEED: u64 = 0x5EED_B007;

/// Scipy's `trim_mean(xs, proportion)`: cut `floor(proportion * n)` values from each end
/// of the sorted values and average the rest. `None` for no values or a proportion that
/// leaves none (scipy raises); NaN when any value is NaN.
pub fn trim_mean(xs: &[f64], proportion: f64) -> Option<f64> {
    let n = xs.len();
    let cut = (proportion * n as f64).floor() as usize;
    if n == 0 || 2 * cut >= n {
        return None;
    }
    if xs.iter().any(|x| x.is_nan()) {
        return Some(f64::NAN);
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let kept = &v[cut..n - cut];
    Some(kept.iter().sum::<f64>() / kept.len() as f64)
}

/// The interquartile mean (rliable's `aggregate_iqm`): the mean of the middle 50%,
/// `trim_mean(xs, 0.25)`. With fewer than 4 values nothing is cut (the plain mean).
pub fn iqm(xs: &[f64]) -> Option<f64> {
    trim_mean(xs, 0.25)
}

/// The IQM of runs on several tasks (`tasks[t]` = the runs of task t), over all runs and
/// tasks together as rliable's `aggregate_iqm` (`axis=None`) computes it.
pub fn iqm_of_tasks(tasks: &[Vec<f64>]) -> Option<f64> {
    iqm(&tasks.concat())
}

/// numpy's `percentile(sorted, 100 * q)` with its default linear interpolation; `sorted`
/// ascending and not empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let t = h - lo as f64;
    let (a, b) = (sorted[lo], sorted[hi]);
    // numpy's `_lerp`: from the nearer end, so t = 1 gives b exactly.
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

/// Draws one resample of `tasks` (rliable's `StratifiedBootstrap` without task bootstrap):
/// every task's runs are drawn with replacement from that task's runs. `draw(n)` gives an
/// index in `0..n`; the draws come in the order of numpy's `choice(n, (n, T))` (run-major,
/// then task), the order rliable consumes them, so recorded numpy draws replay exactly.
fn resample_into(tasks: &[Vec<f64>], out: &mut [Vec<f64>], draw: &mut impl FnMut(usize) -> usize) {
    let rows = tasks.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..rows {
        for (runs, resampled) in tasks.iter().zip(out.iter_mut()) {
            if let Some(slot) = resampled.get_mut(i) {
                *slot = runs[draw(runs.len())];
            }
        }
    }
}

/// A point estimate with its bootstrap confidence interval, and how it was bootstrapped.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Estimate {
    pub estimate: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// Interval coverage (0.95).
    pub confidence: f64,
    pub reps: usize,
    pub seed: u64,
}

/// The `confidence` percentile interval of bootstrap replicates (arch's `percentile`
/// method, which rliable uses): the `(1 - c) / 2` and `1 - (1 - c) / 2` percentiles.
pub fn percentile_interval(mut replicates: Vec<f64>, confidence: f64) -> (f64, f64) {
    replicates.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    (
        percentile(&replicates, tail),
        percentile(&replicates, 1.0 - tail),
    )
}

/// `reps` values of `stat` on stratified resamples of `tasks`, the draws from `draw`.
pub fn stratified_bootstrap(
    tasks: &[Vec<f64>],
    stat: impl Fn(&[Vec<f64>]) -> f64,
    reps: usize,
    draw: &mut impl FnMut(usize) -> usize,
) -> Vec<f64> {
    let mut sample = tasks.to_vec();
    (0..reps)
        .map(|_| {
            resample_into(tasks, &mut sample, draw);
            stat(&sample)
        })
        .collect()
}

/// `reps` values of `stat(x, y)` on independent stratified resamples of `x` and `y`
/// (rliable's `StratifiedIndependentBootstrap`: per replicate x's draws, then y's).
pub fn independent_bootstrap(
    x: &[Vec<f64>],
    y: &[Vec<f64>],
    stat: impl Fn(&[Vec<f64>], &[Vec<f64>]) -> f64,
    reps: usize,
    draw: &mut impl FnMut(usize) -> usize,
) -> Vec<f64> {
    let (mut sx, mut sy) = (x.to_vec(), y.to_vec());
    (0..reps)
        .map(|_| {
            resample_into(x, &mut sx, draw);
            resample_into(y, &mut sy, draw);
            stat(&sx, &sy)
        })
        .collect()
}

/// The seeded index source of fixar's bootstraps (ChaCha8 from [`BOOTSTRAP_SEED`]).
pub fn seeded_draws(seed: u64) -> impl FnMut(usize) -> usize {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    move |n| rng.gen_range(0..n)
}

fn all_finite(tasks: &[Vec<f64>]) -> bool {
    !tasks.is_empty()
        && tasks
            .iter()
            .all(|t| !t.is_empty() && t.iter().all(|x| x.is_finite()))
}

/// The IQM of `tasks` with its 95% stratified-bootstrap percentile interval
/// ([`BOOTSTRAP_REPS`] replicates, [`BOOTSTRAP_SEED`]). `None` for no runs or a task
/// without runs; a non-finite return is refused too (`None`), so callers pass the runs
/// that finished.
pub fn iqm_ci_tasks(tasks: &[Vec<f64>]) -> Option<Estimate> {
    if !all_finite(tasks) {
        return None;
    }
    let stat = |s: &[Vec<f64>]| iqm_of_tasks(s).unwrap_or(f64::NAN);
    let reps = stratified_bootstrap(
        tasks,
        stat,
        BOOTSTRAP_REPS,
        &mut seeded_draws(BOOTSTRAP_SEED),
    );
    let (ci_low, ci_high) = percentile_interval(reps, CONFIDENCE);
    Some(Estimate {
        estimate: stat(tasks),
        ci_low,
        ci_high,
        confidence: CONFIDENCE,
        reps: BOOTSTRAP_REPS,
        seed: BOOTSTRAP_SEED,
    })
}

/// [`iqm_ci_tasks`] for the runs of one task (e.g. the seeds of one training run).
pub fn iqm_ci(runs: &[f64]) -> Option<Estimate> {
    iqm_ci_tasks(&[runs.to_vec()])
}

/// rliable's `probability_of_improvement(x, y)`: per task P(X > Y) = the Mann-Whitney U
/// of x over y divided by `nx * ny` (each pair x > y counts 1, a tie 0.5), and exactly
/// 0.5 when the two tasks' runs are identical arrays; averaged over tasks. `None` when
/// the task counts differ or a task has no runs.
pub fn probability_of_improvement(x: &[Vec<f64>], y: &[Vec<f64>]) -> Option<f64> {
    if x.len() != y.len() || x.is_empty() || x.iter().chain(y).any(Vec::is_empty) {
        return None;
    }
    let per_task = x.iter().zip(y).map(|(xs, ys)| {
        if xs == ys {
            return 0.5;
        }
        let u: f64 = xs
            .iter()
            .flat_map(|a| {
                ys.iter().map(move |b| match a.partial_cmp(b) {
                    Some(std::cmp::Ordering::Greater) => 1.0,
                    Some(std::cmp::Ordering::Equal) => 0.5,
                    _ => 0.0,
                })
            })
            .sum();
        u / (xs.len() * ys.len()) as f64
    });
    Some(per_task.sum::<f64>() / x.len() as f64)
}

/// P(X > Y) with its 95% independent stratified-bootstrap percentile interval (fixed
/// seed, [`BOOTSTRAP_REPS`] replicates). `None` as [`probability_of_improvement`], or
/// when a return is not finite.
pub fn probability_of_improvement_ci(x: &[Vec<f64>], y: &[Vec<f64>]) -> Option<Estimate> {
    if !all_finite(x) || !all_finite(y) {
        return None;
    }
    let estimate = probability_of_improvement(x, y)?;
    let stat = |a: &[Vec<f64>], b: &[Vec<f64>]| probability_of_improvement(a, b).unwrap();
    let reps = independent_bootstrap(
        x,
        y,
        stat,
        BOOTSTRAP_REPS,
        &mut seeded_draws(BOOTSTRAP_SEED),
    );
    let (ci_low, ci_high) = percentile_interval(reps, CONFIDENCE);
    Some(Estimate {
        estimate,
        ci_low,
        ci_high,
        confidence: CONFIDENCE,
        reps: BOOTSTRAP_REPS,
        seed: BOOTSTRAP_SEED,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nan_shows_in_min_max_instead_of_vanishing() {
        assert_eq!(min_max(&[1.0, -2.0, 3.0]), (-2.0, 3.0));
        let (lo, hi) = min_max(&[1.0, f64::NAN, 3.0]);
        assert!(lo.is_nan() && hi.is_nan());
        // What the plain fold would have said.
        assert_eq!(
            [1.0, f64::NAN, 3.0]
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min),
            1.0
        );
    }

    #[test]
    fn population_and_sample_deviations_and_medians() {
        assert_eq!(mean_std(&[-100.0, -200.0]), Some((-150.0, 50.0)));
        assert_eq!(mean_std(&[]), None);
        let (m, s) = mean_sample_std(&[1.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((s - 2f64.sqrt()).abs() < 1e-15);
        assert_eq!(mean_sample_std(&[5.0]), (5.0, 0.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
    #[test]
    fn trimmed_means_follow_scipy() {
        // scipy.stats.trim_mean(range(20), 0.1) == 9.5; cuts floor(0.25 n) from each end.
        let r: Vec<f64> = (0..20).map(f64::from).collect();
        assert_eq!(trim_mean(&r, 0.1), Some(9.5));
        assert_eq!(iqm(&[8.0, 1.0, 7.0, 2.0, 6.0, 3.0, 5.0, 4.0]), Some(4.5));
        assert_eq!(iqm(&[100.0, 1.0, 2.0, 3.0, -50.0]), Some(2.0));
        assert_eq!(iqm(&[1.0, 2.0, 6.0]), Some(3.0));
        assert_eq!(iqm(&[]), None);
        assert_eq!(trim_mean(&[1.0, 2.0], 0.5), None);
        assert!(iqm(&[1.0, f64::NAN, 3.0, 4.0]).unwrap().is_nan());
        assert_eq!(iqm_of_tasks(&[vec![1.0, 9.0], vec![3.0, 4.0]]), Some(3.5));
    }

    #[test]
    fn percentiles_interpolate_linearly_like_numpy() {
        // numpy.percentile([1, 2, 3, 4], [2.5, 97.5]) == [1.075, 3.925]
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!((percentile(&v, 0.025) - 1.075).abs() < 1e-12);
        assert!((percentile(&v, 0.975) - 3.925).abs() < 1e-12);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 4.0);
        assert_eq!(percentile(&[7.0], 0.3), 7.0);
    }

    #[test]
    fn probability_of_improvement_counts_ties_as_half() {
        let p = probability_of_improvement(&[vec![1.0, 2.0, 3.0]], &[vec![1.0, 1.0, 2.0]]);
        assert_eq!(p, Some(6.5 / 9.0));
        assert_eq!(
            probability_of_improvement(&[vec![5.0, 6.0]], &[vec![5.0, 6.0]]),
            Some(0.5)
        );
        assert_eq!(
            probability_of_improvement(&[vec![9.0]], &[vec![1.0]]),
            Some(1.0)
        );
        // Averaged over tasks.
        let p = probability_of_improvement(&[vec![9.0], vec![0.0]], &[vec![1.0], vec![1.0]]);
        assert_eq!(p, Some(0.5));
        assert_eq!(probability_of_improvement(&[vec![]], &[vec![1.0]]), None);
    }

    #[test]
    fn resamples_consume_draws_run_major_per_task() {
        // numpy's choice(n, (n, T)) fills row by row: run 0 of every task, then run 1, ...
        let tasks = vec![vec![10.0, 20.0], vec![30.0, 40.0]];
        let script = [1usize, 0, 1, 1];
        let mut k = 0;
        let mut draw = |n: usize| {
            assert_eq!(n, 2);
            k += 1;
            script[k - 1]
        };
        let reps = stratified_bootstrap(&tasks, |s| s[0][0] + 1000.0 * s[1][1], 1, &mut draw);
        // task 0 = [20, 20] (draws 1, 1), task 1 = [30, 40] (draws 0, 1).
        assert_eq!(reps, vec![20.0 + 40_000.0]);
    }

    #[test]
    fn bootstrap_intervals_are_seeded_and_bracket_the_estimate() {
        let runs = [-150.0, -140.0, -400.0, -145.0, -160.0];
        let a = iqm_ci(&runs).unwrap();
        assert_eq!(Some(a), iqm_ci(&runs));
        assert_eq!(a.estimate, (-150.0 - 145.0 - 160.0) / 3.0);
        assert!(a.ci_low <= a.estimate && a.estimate <= a.ci_high, "{a:?}");
        assert!(a.ci_low >= -400.0 && a.ci_high <= -140.0 && a.ci_low < a.ci_high);
        assert_eq!(
            (a.reps, a.confidence, a.seed),
            (BOOTSTRAP_REPS, 0.95, BOOTSTRAP_SEED)
        );
        let one = iqm_ci(&[-3.0]).unwrap();
        assert_eq!((one.estimate, one.ci_low, one.ci_high), (-3.0, -3.0, -3.0));
        assert_eq!(iqm_ci(&[1.0, f64::NAN]), None);
        let p =
            probability_of_improvement_ci(&[vec![5.0, 6.0, 7.0]], &[vec![1.0, 2.0, 6.0]]).unwrap();
        assert!(p.ci_low <= p.estimate && p.estimate <= p.ci_high && p.ci_high <= 1.0);
    }
}
