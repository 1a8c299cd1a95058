//! Multiplier-free weights (QFX's "limited ones" mode): every weight becomes the nearest
//! value of its fixed-point format that is a sum of at most `k` signed powers of two, so
//! each weight × activation product is `k` shifts and `k - 1` adds instead of a multiply.
//!
//! In raw-code units a value `r · lsb` is a sum of at most `k` signed powers of two
//! exactly when the non-adjacent form (NAF, the canonical signed-digit form) of the
//! integer `r` has at most `k` non-zero digits: the NAF has the fewest non-zero digits of
//! all signed-digit forms. [`Pow2Codebook`] enumerates those codes once per (format, k)
//! — a few hundred thousand at most for the widths and `k` used here — and projects by
//! binary search, so the projection is the exact nearest such code, not a greedy one.
//! Ties go to the code of smaller magnitude. Values beyond the format's range go to the
//! nearest code inside it (saturation).
//!
//! ```no_run
//! use agents::pow2::Pow2Codebook;
//! let fmt = quant::FxFormat::signed(8, 2).unwrap(); // lsb = 1/64
//! let book = Pow2Codebook::new(&fmt, 2).unwrap();
//! // 0.7 = 44.8 lsb; the nearest code with <= 2 signed powers of two is 48 = 32 + 16.
//! assert_eq!(book.project(0.7), 48.0 / 64.0);
//! ```

use quant::FxFormat;
use tch::{Kind, Tensor};

/// More codes than this means a format/`k` pair this projection was not built for.
pub const MAX_CODEBOOK: usize = 1 << 23;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pow2Error {
    #[error("multiplier-free weights need k >= 1 signed powers of two (got k = 0)")]
    NoTerms,
    #[error("multiplier-free weights support widths up to 32 bits (got {0})")]
    Width(u32),
    #[error("{fmt} with k = {k} has more than {MAX_CODEBOOK} codes; use a smaller k")]
    TooLarge { fmt: String, k: u32 },
    #[error("{layer}: {source}")]
    InLayer {
        layer: String,
        source: Box<Pow2Error>,
    },
}

impl Pow2Error {
    /// The same error, naming the layer it happened in.
    pub fn in_layer(self, layer: &str) -> Pow2Error {
        Pow2Error::InLayer {
            layer: layer.to_string(),
            source: Box::new(self),
        }
    }
}

/// The number of non-zero digits of `r`'s non-adjacent form: the fewest signed powers of
/// two that sum to `r`.
pub fn signed_digit_count(r: i64) -> u32 {
    let mut n = r as i128;
    let mut count = 0;
    while n != 0 {
        if n & 1 != 0 {
            // Digit +1 when n = 1 mod 4, -1 when n = 3 mod 4 (that makes the next digit 0).
            let d = 2 - n.rem_euclid(4);
            n -= d;
            count += 1;
        }
        n >>= 1;
    }
    count
}

/// The non-adjacent form of `r`: its non-zero signed digits as (position, negative),
/// lowest first; `r = Σ ±2^position` with the fewest terms ([`signed_digit_count`]).
pub fn signed_digits(r: i64) -> Vec<(u32, bool)> {
    let mut n = r as i128;
    let mut out = Vec::new();
    let mut pos = 0;
    while n != 0 {
        if n & 1 != 0 {
            let d = 2 - n.rem_euclid(4);
            n -= d;
            out.push((pos, d < 0));
        }
        n >>= 1;
        pos += 1;
    }
    out
}

/// Every code of a format whose value is a sum of at most `k` signed powers of two,
/// sorted, for nearest-value projection.
#[derive(Clone, Debug)]
pub struct Pow2Codebook {
    fmt: FxFormat,
    terms: u32,
    codes: Vec<i64>,
}

impl Pow2Codebook {
    pub fn new(fmt: &FxFormat, k: u32) -> Result<Self, Pow2Error> {
        if k == 0 {
            return Err(Pow2Error::NoTerms);
        }
        if fmt.width > 32 {
            return Err(Pow2Error::Width(fmt.width));
        }
        let (lo, hi) = (fmt.raw_min(), fmt.raw_max());
        // A code in range has a NAF no longer than width + 1 digits.
        let positions = fmt.width + 1;
        let mut codes = vec![0i64];
        let mut frontier = vec![(0i64, positions)]; // (partial sum, next position is below this)
        for _ in 0..k {
            let mut next = Vec::new();
            for &(sum, below) in &frontier {
                for p in 0..below {
                    for sign in [1i64, -1] {
                        next.push((sum + sign * (1i64 << p), p));
                    }
                }
            }
            codes.extend(next.iter().map(|&(s, _)| s));
            if codes.len() > 4 * MAX_CODEBOOK {
                return Err(Pow2Error::TooLarge {
                    fmt: fmt.to_string(),
                    k,
                });
            }
            frontier = next;
        }
        codes.retain(|&c| (lo..=hi).contains(&c));
        codes.sort_unstable();
        codes.dedup();
        if codes.len() > MAX_CODEBOOK {
            return Err(Pow2Error::TooLarge {
                fmt: fmt.to_string(),
                k,
            });
        }
        Ok(Pow2Codebook {
            fmt: *fmt,
            terms: k,
            codes,
        })
    }

    pub fn format(&self) -> &FxFormat {
        &self.fmt
    }

    pub fn terms(&self) -> u32 {
        self.terms
    }

    /// The allowed raw codes, ascending.
    pub fn codes(&self) -> &[i64] {
        &self.codes
    }

    /// The allowed code nearest to `x` (ties to the smaller magnitude; NaN gives 0).
    pub fn project_raw(&self, x: f64) -> i64 {
        if x.is_nan() {
            return 0;
        }
        let t = x / self.fmt.lsb();
        let i = self.codes.partition_point(|&c| (c as f64) < t);
        let above = self.codes.get(i).copied();
        let below = i.checked_sub(1).map(|j| self.codes[j]);
        match (below, above) {
            (Some(b), Some(a)) => {
                let (db, da) = (t - b as f64, a as f64 - t);
                if db < da || (db == da && b.abs() <= a.abs()) {
                    b
                } else {
                    a
                }
            }
            (Some(b), None) => b,
            (None, Some(a)) => a,
            (None, None) => 0,
        }
    }

    /// The value of [`Self::project_raw`].
    pub fn project(&self, x: f64) -> f64 {
        quant::to_f64(self.project_raw(x), &self.fmt)
    }

    /// Projects every element of a float tensor (any shape); returns the projected
    /// tensor (same kind and device) and the shift-add count of its elements.
    pub fn project_tensor(&self, w: &Tensor) -> (Tensor, MultiplierCount) {
        let flat: Vec<f64> = Vec::<f64>::try_from(w.to_kind(Kind::Double).flatten(0, -1))
            .expect("a float tensor converts to Vec<f64>");
        let mut count = MultiplierCount::default();
        let out: Vec<f64> = flat
            .iter()
            .map(|&x| {
                let r = self.project_raw(x);
                count.add_weight(r);
                quant::to_f64(r, &self.fmt)
            })
            .collect();
        let t = Tensor::from_slice(&out)
            .reshape(w.size())
            .to_kind(w.kind())
            .to_device(w.device());
        (t, count)
    }
}

/// What a layer's weight × activation products cost per inference (one input row).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MultiplierCount {
    /// Weight × activation products (one per weight).
    pub products: u64,
    /// Products whose weight is 0: nothing to compute.
    pub zero_weights: u64,
    /// Shifts: one per signed power of two over all weights.
    pub shifts: u64,
    /// Adds combining a weight's shifted terms (terms - 1 per non-zero weight).
    pub shift_adds: u64,
    /// Products that still need a hardware multiplier (weights not projected).
    pub multiplications: u64,
}

impl MultiplierCount {
    fn add_weight(&mut self, raw: i64) {
        self.products += 1;
        let n = signed_digit_count(raw) as u64;
        if n == 0 {
            self.zero_weights += 1;
        } else {
            self.shifts += n;
            self.shift_adds += n - 1;
        }
    }

    /// A layer left with ordinary weights: every product is a multiplication.
    pub fn dense(products: u64) -> Self {
        MultiplierCount {
            products,
            multiplications: products,
            ..Default::default()
        }
    }

    pub fn merge(&mut self, o: &MultiplierCount) {
        self.products += o.products;
        self.zero_weights += o.zero_weights;
        self.shifts += o.shifts;
        self.shift_adds += o.shift_adds;
        self.multiplications += o.multiplications;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fewest signed powers of two summing to r, by breadth-first search over sums.
    fn min_terms_brute(r: i64, max_pos: u32) -> u32 {
        let mut level = std::collections::HashSet::from([0i64]);
        for n in 0..8 {
            if level.contains(&r) {
                return n;
            }
            let mut next = std::collections::HashSet::new();
            for &s in &level {
                for p in 0..=max_pos {
                    next.insert(s + (1 << p));
                    next.insert(s - (1 << p));
                }
            }
            level = next;
        }
        u32::MAX
    }

    #[test]
    fn signed_digit_count_is_the_fewest_signed_powers_of_two() {
        for r in -300i64..=300 {
            assert_eq!(signed_digit_count(r), min_terms_brute(r, 10), "r = {r}");
        }
    }

    #[test]
    fn signed_digits_sum_to_the_code_and_are_the_fewest() {
        for r in -3000i64..=3000 {
            let d = signed_digits(r);
            let sum: i64 = d
                .iter()
                .map(|&(p, neg)| if neg { -(1i64 << p) } else { 1i64 << p })
                .sum();
            assert_eq!(sum, r);
            assert_eq!(d.len() as u32, signed_digit_count(r), "r = {r}");
        }
        assert_eq!(signed_digits(i64::MIN).len(), 1);
    }

    #[test]
    fn codebook_holds_exactly_the_in_range_codes_with_at_most_k_terms() {
        for (w, i) in [(6u32, 2i32), (8, 0), (9, 4)] {
            let fmt = FxFormat::signed(w, i).unwrap();
            for k in 1..=3 {
                let book = Pow2Codebook::new(&fmt, k).unwrap();
                let expect: Vec<i64> = (fmt.raw_min()..=fmt.raw_max())
                    .filter(|&r| signed_digit_count(r) <= k)
                    .collect();
                assert_eq!(book.codes(), &expect[..], "{fmt} k={k}");
            }
        }
    }

    #[test]
    fn projection_is_the_nearest_code_with_at_most_k_terms() {
        let fmt = FxFormat::signed(8, 3).unwrap(); // lsb 1/32, range [-4, 4)
        for k in 1..=3 {
            let book = Pow2Codebook::new(&fmt, k).unwrap();
            let allowed: Vec<i64> = (fmt.raw_min()..=fmt.raw_max())
                .filter(|&r| signed_digit_count(r) <= k)
                .collect();
            for j in -2000..=2000 {
                let x = j as f64 * 0.00297; // sweeps past both ends of the range
                let r = book.project_raw(x);
                assert!(signed_digit_count(r) <= k);
                let t = x / fmt.lsb();
                let best = allowed
                    .iter()
                    .map(|&c| (c as f64 - t).abs())
                    .fold(f64::INFINITY, f64::min);
                assert_eq!((r as f64 - t).abs(), best, "x={x} k={k} got {r}");
            }
        }
    }

    #[test]
    fn tensor_projection_counts_shifts_and_leaves_no_multiplications() {
        let fmt = FxFormat::signed(16, 2).unwrap();
        let book = Pow2Codebook::new(&fmt, 2).unwrap();
        let w = Tensor::from_slice(&[0.0f32, 0.75, -0.3, 1.0, 1e-6]).reshape([5, 1]);
        let (p, c) = book.project_tensor(&w);
        assert_eq!(p.size(), vec![5, 1]);
        let v = Vec::<f32>::try_from(p.flatten(0, -1)).unwrap();
        assert_eq!(v[0], 0.0);
        assert_eq!(v[1], 0.75); // 1 - 1/4
        assert_eq!(v[3], 1.0);
        assert_eq!(v[4], 0.0); // below half an lsb (2^-14)
        assert_eq!(c.products, 5);
        assert_eq!(c.zero_weights, 2);
        assert_eq!(c.multiplications, 0);
        assert!(c.shifts <= 2 * 3);
        assert_eq!(c.shift_adds, c.shifts - 3);
    }

    #[test]
    fn module_example_holds() {
        let fmt = FxFormat::signed(8, 2).unwrap();
        let book = Pow2Codebook::new(&fmt, 2).unwrap();
        assert_eq!(book.project(0.7), 48.0 / 64.0);
    }

    #[test]
    fn bad_k_and_widths_are_refused() {
        let f = FxFormat::signed(16, 2).unwrap();
        assert_eq!(Pow2Codebook::new(&f, 0).unwrap_err(), Pow2Error::NoTerms);
        let f40 = FxFormat::signed(40, 2).unwrap();
        assert_eq!(
            Pow2Codebook::new(&f40, 2).unwrap_err(),
            Pow2Error::Width(40)
        );
    }
}
