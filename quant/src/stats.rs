//! Counting what casts did: saturations, wraps and non-finite inputs.

/// What the overflow step did to one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clip {
    /// The rounded value was representable.
    None,
    /// Clamped (SAT, SAT_SYM) or zeroed (SAT_ZERO).
    Saturated,
    /// Reduced modulo 2^W (WRAP).
    Wrapped,
}

/// Per-call counts of a quantization: elements seen, how many saturated or wrapped, and
/// how many NaN / infinite inputs (which are counted, never turned into numbers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuantStats {
    pub elements: u64,
    pub saturated: u64,
    pub wrapped: u64,
    pub nan: u64,
    pub inf: u64,
}

impl QuantStats {
    /// Adds another call's counts to these.
    pub fn merge(&mut self, other: &QuantStats) {
        self.elements += other.elements;
        self.saturated += other.saturated;
        self.wrapped += other.wrapped;
        self.nan += other.nan;
        self.inf += other.inf;
    }

    /// Counts one finite value and what its overflow step did.
    #[inline]
    pub fn record(&mut self, clip: Clip) {
        self.elements += 1;
        match clip {
            Clip::None => {}
            Clip::Saturated => self.saturated += 1,
            Clip::Wrapped => self.wrapped += 1,
        }
    }

    /// Counts one non-finite input.
    #[inline]
    pub fn record_non_finite(&mut self, x: f64) {
        self.elements += 1;
        if x.is_nan() {
            self.nan += 1;
        } else {
            self.inf += 1;
        }
    }

    /// Saturated plus wrapped elements.
    pub fn clipped(&self) -> u64 {
        self.saturated + self.wrapped
    }

    /// Fraction of elements that saturated or wrapped (0 when empty).
    pub fn clip_rate(&self) -> f64 {
        if self.elements == 0 {
            0.0
        } else {
            self.clipped() as f64 / self.elements as f64
        }
    }
}
