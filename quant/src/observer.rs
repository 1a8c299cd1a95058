//! Range observers (max |x|, EMA of per-batch max |x|, a high percentile of |x|) and the
//! rule from a range to integer bits (numerics.md): `I = ceil(log2(max|x|)) + 1`, at
//! least 1, plus optional headroom.

use crate::format::{FormatError, FxFormat, Overflow, Rounding, MAX_ABS_INT_BITS};

/// What a [`RangeObserver`] reports as the range.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RangeKind {
    /// The largest |x| ever observed.
    MaxAbs,
    /// Exponential moving average of each batch's max |x| (`ema = decay*ema +
    /// (1-decay)*batch_max`, starting at the first batch's max).
    Ema { decay: f64 },
    /// The `q`-quantile (0..=1) of |x| over everything observed, from a histogram whose
    /// bins never straddle a power of two: the reported value is the upper edge of the
    /// quantile's bin (at most 1/16 octave above it), so it implies the same integer bits
    /// as the exact quantile.
    Percentile { q: f64 },
}

/// Histogram bins over positive f32 bit patterns: 2^19 patterns per bin = 16 bins per
/// octave. Bin `i` holds (edge(i), edge(i+1)] where edge(i) = f32::from_bits(i << 19).
const BIN_SHIFT: u32 = 19;
const BINS: usize = (0x7f80_0000u32 >> BIN_SHIFT) as usize;

/// Tracks the range of a tensor class (per layer) over training.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RangeObserver {
    kind: RangeKind,
    max_abs: f64,
    ema: Option<f64>,
    zeros: u64,
    histogram: Vec<u64>,
    finite: u64,
    non_finite: u64,
}

impl RangeObserver {
    /// # Panics
    /// If an EMA decay or a quantile lies outside [0, 1].
    pub fn new(kind: RangeKind) -> Self {
        match kind {
            RangeKind::Ema { decay } => assert!(
                (0.0..=1.0).contains(&decay),
                "EMA decay {decay} outside [0, 1]"
            ),
            RangeKind::Percentile { q } => {
                assert!((0.0..=1.0).contains(&q), "quantile {q} outside [0, 1]")
            }
            RangeKind::MaxAbs => {}
        }
        RangeObserver {
            kind,
            max_abs: 0.0,
            ema: None,
            zeros: 0,
            histogram: match kind {
                RangeKind::Percentile { .. } => vec![0; BINS],
                _ => Vec::new(),
            },
            finite: 0,
            non_finite: 0,
        }
    }

    pub fn kind(&self) -> RangeKind {
        self.kind
    }

    /// Observes a batch. NaN and infinities are counted apart and do not move the range.
    pub fn observe_slice(&mut self, xs: &[f32]) {
        let mut batch_max = 0.0f32;
        let mut finite = 0u64;
        for &x in xs {
            let a = x.abs();
            if a.is_finite() {
                finite += 1;
                batch_max = batch_max.max(a);
                if !self.histogram.is_empty() {
                    match a.to_bits() {
                        0 => self.zeros += 1,
                        bits => self.histogram[((bits - 1) >> BIN_SHIFT) as usize] += 1,
                    }
                }
            }
        }
        self.non_finite += xs.len() as u64 - finite;
        if finite == 0 {
            return;
        }
        self.finite += finite;
        let batch_max = batch_max as f64;
        self.max_abs = self.max_abs.max(batch_max);
        if let RangeKind::Ema { decay } = self.kind {
            self.ema = Some(match self.ema {
                None => batch_max,
                Some(e) => decay * e + (1.0 - decay) * batch_max,
            });
        }
    }

    /// The current range (0 before any finite observation).
    pub fn range(&self) -> f64 {
        match self.kind {
            RangeKind::MaxAbs => self.max_abs,
            RangeKind::Ema { .. } => self.ema.unwrap_or(0.0),
            RangeKind::Percentile { q } => self.percentile(q),
        }
    }

    fn percentile(&self, q: f64) -> f64 {
        if self.finite == 0 {
            return 0.0;
        }
        // The smallest value v with at least ceil(q * n) observations <= v.
        let rank = ((q * self.finite as f64).ceil() as u64).max(1);
        let mut seen = self.zeros;
        if seen >= rank {
            return 0.0;
        }
        for (i, &c) in self.histogram.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return f32::from_bits(((i as u32) + 1) << BIN_SHIFT) as f64;
            }
        }
        self.max_abs
    }

    /// Finite values observed.
    pub fn observed(&self) -> u64 {
        self.finite
    }

    /// NaN and infinite values seen (ignored for the range).
    pub fn non_finite(&self) -> u64 {
        self.non_finite
    }

    /// [`int_bits_for_range`] of the current range.
    pub fn int_bits(&self, width: u32, headroom: i32) -> i32 {
        int_bits_for_range(self.range(), width, headroom)
    }

    /// The signed format of `width` bits that the rule picks for the current range.
    pub fn format(
        &self,
        width: u32,
        headroom: i32,
        rounding: Rounding,
        overflow: Overflow,
    ) -> Result<FxFormat, FormatError> {
        FxFormat::new(
            true,
            width,
            self.int_bits(width, headroom),
            rounding,
            overflow,
        )
    }
}

/// The signed range of a tensor class: the smallest and largest finite value observed
/// (what an asymmetric quantizer such as [`AffineQuantizer`](crate::AffineQuantizer) is
/// built on; [`RangeObserver`] tracks magnitudes only). NaN and infinities are ignored.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MinMaxObserver {
    min: f64,
    max: f64,
    finite: u64,
}

impl Default for MinMaxObserver {
    fn default() -> Self {
        MinMaxObserver {
            min: 0.0,
            max: 0.0,
            finite: 0,
        }
    }
}

impl MinMaxObserver {
    /// Observes a batch.
    pub fn observe_slice(&mut self, xs: &[f32]) {
        let (mut lo, mut hi, mut n) = (f32::INFINITY, f32::NEG_INFINITY, 0u64);
        for &x in xs {
            if x.is_finite() {
                lo = lo.min(x);
                hi = hi.max(x);
                n += 1;
            }
        }
        if n == 0 {
            return;
        }
        if self.finite == 0 {
            (self.min, self.max) = (lo as f64, hi as f64);
        } else {
            self.min = self.min.min(lo as f64);
            self.max = self.max.max(hi as f64);
        }
        self.finite += n;
    }

    /// `(min, max)` of everything observed; `None` before any finite value.
    pub fn range(&self) -> Option<(f64, f64)> {
        (self.finite > 0).then_some((self.min, self.max))
    }

    /// Finite values observed.
    pub fn observed(&self) -> u64 {
        self.finite
    }
}

/// `ceil(log2(v))` for finite `v > 0`, exactly (no floating-point log).
fn ceil_log2_f64(v: f64) -> i64 {
    let (_, m, e) = crate::exact::decompose(v);
    // v = m * 2^e with m > 0; bring m to 53 significant bits for subnormals.
    let top = 63 - m.leading_zeros() as i64; // v in [2^(e+top), 2^(e+top+1))
    let power_of_two = m.is_power_of_two();
    e + top + (!power_of_two) as i64
}

/// The integer bits (sign included) for a signed format that must hold `max_abs`:
/// `ceil(log2(max_abs)) + 1`, at least 1, plus `headroom` (numerics.md). `width` is the
/// target width; the rule does not cap I by it (I > W gives an LSB above 1), and the
/// result is clamped to ±[`MAX_ABS_INT_BITS`]. A range that is an exact power of two
/// `2^e` gets `e + 1` bits, whose maximum is one LSB short of it (saturates by one LSB),
/// as the rule says. A non-finite range takes the largest value.
///
/// # Panics
/// If `width` is outside 1..=64.
pub fn int_bits_for_range(max_abs: f64, width: u32, headroom: i32) -> i32 {
    assert!((1..=64).contains(&width), "width {width} outside 1..=64");
    let base = if max_abs.is_nan() || max_abs == f64::INFINITY {
        1025
    } else if max_abs > 0.0 {
        (ceil_log2_f64(max_abs) + 1).max(1)
    } else {
        1
    };
    (base + headroom as i64).clamp(-(MAX_ABS_INT_BITS as i64), MAX_ABS_INT_BITS as i64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_bits_follow_the_numerics_rule() {
        assert_eq!(int_bits_for_range(3.0, 16, 0), 3); // ceil(log2 3) = 2
        assert_eq!(int_bits_for_range(4.0, 16, 0), 3); // exact power: 2 + 1
        assert_eq!(int_bits_for_range(4.000001, 16, 0), 4);
        assert_eq!(int_bits_for_range(0.3, 16, 0), 1); // at least 1
        assert_eq!(int_bits_for_range(0.0, 16, 0), 1);
        assert_eq!(int_bits_for_range(3.0, 16, 2), 5); // headroom
        assert_eq!(int_bits_for_range(1000.0, 8, 0), 11); // not capped by width
        assert_eq!(int_bits_for_range(5e-324, 8, 0), 1);
        assert_eq!(int_bits_for_range(f64::MAX, 8, 0), MAX_ABS_INT_BITS);
        assert_eq!(ceil_log2_f64(5e-324), -1074);
        assert_eq!(ceil_log2_f64(0.75), 0);
    }

    /// NaN compares false with everything: a NaN range must not fall through to the
    /// "at least 1" branch and pass as a tiny range.
    #[test]
    fn a_nan_or_infinite_range_takes_the_widest_integer_part() {
        for range in [f64::NAN, -f64::NAN, f64::INFINITY] {
            assert_eq!(
                int_bits_for_range(range, 16, 0),
                MAX_ABS_INT_BITS,
                "{range}"
            );
            assert_eq!(
                int_bits_for_range(range, 16, 2),
                MAX_ABS_INT_BITS,
                "{range}"
            );
        }
    }

    #[test]
    fn observers_track_max_ema_and_percentile() {
        let mut m = RangeObserver::new(RangeKind::MaxAbs);
        m.observe_slice(&[1.0, -3.5, f32::NAN]);
        m.observe_slice(&[2.0]);
        assert_eq!((m.range(), m.non_finite(), m.observed()), (3.5, 1, 3));
        assert_eq!(m.int_bits(8, 0), 3);

        let mut e = RangeObserver::new(RangeKind::Ema { decay: 0.5 });
        e.observe_slice(&[4.0]);
        e.observe_slice(&[-2.0]);
        assert_eq!(e.range(), 3.0);

        let mut p = RangeObserver::new(RangeKind::Percentile { q: 0.99 });
        let xs: Vec<f32> = (1..=1000).map(|i| i as f32 / 100.0).collect(); // 0.01..10
        p.observe_slice(&xs);
        p.observe_slice(&[1e6]); // one outlier does not move the 99th percentile
        let r = p.range();
        assert!((9.9..=9.9 * 1.05).contains(&r), "p99 {r}");
        assert_eq!(p.int_bits(16, 0), int_bits_for_range(9.9, 16, 0));
        let f = p.format(16, 1, Rounding::RndConv, Overflow::Sat).unwrap();
        assert_eq!(f.int_bits, 6);
    }

    #[test]
    fn min_max_tracks_signed_extremes_and_ignores_non_finite_values() {
        let mut m = MinMaxObserver::default();
        assert_eq!(m.range(), None);
        m.observe_slice(&[f32::NAN, f32::INFINITY]);
        assert_eq!(m.range(), None);
        m.observe_slice(&[0.5, 2.0]);
        assert_eq!(m.range(), Some((0.5, 2.0)));
        m.observe_slice(&[-1.25, f32::NEG_INFINITY, 1.0]);
        assert_eq!(m.range(), Some((-1.25, 2.0)));
        assert_eq!(m.observed(), 4);
    }

    #[test]
    fn percentile_bins_keep_powers_of_two_at_upper_edges() {
        let mut p = RangeObserver::new(RangeKind::Percentile { q: 1.0 });
        p.observe_slice(&[4.0, 0.0]);
        assert_eq!(p.range(), 4.0);
        p.observe_slice(&[4.0001]);
        assert!(p.range() > 4.0 && int_bits_for_range(p.range(), 8, 0) == 4);
        let mut z = RangeObserver::new(RangeKind::Percentile { q: 0.5 });
        z.observe_slice(&[0.0, 0.0, 0.0, 1.0]);
        assert_eq!(z.range(), 0.0);
    }
}
