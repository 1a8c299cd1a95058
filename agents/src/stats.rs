//! The few statistics results are reported with, in one place: mean and population
//! standard deviation (agents.md's rule across seeds and episodes), the sample standard
//! deviation where a table says so, the median of timing rounds, and min/max that keep
//! a NaN (a NaN return must show in a band, not vanish from it: `f64::min` drops NaN).

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
}
