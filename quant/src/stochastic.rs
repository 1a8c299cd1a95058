//! A seeded, counter-based source of random words for stochastic rounding: word `i` of
//! seed `s` is a pure function of `(s, i)`, so the same seed gives the same bits whatever
//! the thread split, and the state (seed, counter) serialises into checkpoints.

/// Seeded counter-based generator (SplitMix64 finaliser over a seed-keyed counter).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StochasticSource {
    seed: u64,
    counter: u64,
}

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl StochasticSource {
    /// A source at counter 0.
    pub fn new(seed: u64) -> Self {
        StochasticSource { seed, counter: 0 }
    }

    /// The seed this source was built from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// How many words have been drawn.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// The next word.
    pub fn next_word(&mut self) -> u64 {
        let w = self.word(self.counter);
        self.counter += 1;
        w
    }

    /// Reserves `n` consecutive words and returns a view of them (for parallel use:
    /// word `i` of the block is `block.word(i)`).
    pub fn take_block(&mut self, n: u64) -> StochasticBlock {
        let block = StochasticBlock {
            key: mix64(self.seed),
            start: self.counter,
        };
        self.counter += n;
        block
    }

    fn word(&self, index: u64) -> u64 {
        StochasticBlock {
            key: mix64(self.seed),
            start: 0,
        }
        .word(index)
    }
}

/// A reserved run of words from a [`StochasticSource`].
#[derive(Clone, Copy, Debug)]
pub struct StochasticBlock {
    key: u64,
    start: u64,
}

impl StochasticBlock {
    /// Word `i` of the block.
    #[inline]
    pub fn word(&self, i: u64) -> u64 {
        mix64(
            self.key
                .wrapping_add((self.start.wrapping_add(i)).wrapping_mul(GAMMA)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_words_and_blocks_continue_the_stream() {
        let mut a = StochasticSource::new(7);
        let mut b = StochasticSource::new(7);
        let wa: Vec<u64> = (0..5).map(|_| a.next_word()).collect();
        let block = b.take_block(5);
        let wb: Vec<u64> = (0..5).map(|i| block.word(i)).collect();
        assert_eq!(wa, wb);
        assert_eq!(a.next_word(), b.next_word());
        assert_ne!(StochasticSource::new(8).next_word(), wa[0]);
    }

    #[test]
    fn words_are_roughly_uniform() {
        let block = StochasticSource::new(1).take_block(1 << 16);
        let n = 1u64 << 16;
        let ones: u64 = (0..n).map(|i| block.word(i).count_ones() as u64).sum();
        let mean = ones as f64 / n as f64;
        assert!((mean - 32.0).abs() < 0.1, "mean popcount {mean}");
        let below_half = (0..n).filter(|&i| block.word(i) < 1 << 63).count() as f64;
        assert!((below_half / n as f64 - 0.5).abs() < 0.01);
    }
}
