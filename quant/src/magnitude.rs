//! Unsigned magnitudes of exact intermediate values: `u128` for nearly everything, a
//! limb vector for the rare sums whose operands' binary points are far apart (or
//! accumulations of 64-bit products), and what quantization needs from them: bit length,
//! low bits, and a right shift that reports the discarded fraction.

use std::cmp::Ordering;

/// The discarded fraction of a right shift, `(top + e) / 2^64` with `e` in (0, 1) when
/// `sticky` and `e = 0` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub top: u64,
    pub sticky: bool,
}

const HALF: u64 = 1 << 63;

impl Dropped {
    #[cfg(test)]
    pub const NONE: Dropped = Dropped {
        top: 0,
        sticky: false,
    };

    pub fn is_zero(self) -> bool {
        self.top == 0 && !self.sticky
    }
    pub fn is_half(self) -> bool {
        self.top == HALF && !self.sticky
    }
    pub fn above_half(self) -> bool {
        self.top > HALF || (self.top == HALF && self.sticky)
    }
    /// A uniform 64-bit word `u` is below the fraction: probability = the fraction
    /// (to within 2^-64).
    pub fn exceeds(self, u: u64) -> bool {
        u < self.top || (u == self.top && self.sticky)
    }
}

/// An unsigned integer that quantization can shift and inspect.
pub(crate) trait Magnitude: Sized {
    fn is_zero(&self) -> bool;
    fn bit_len(&self) -> u64;
    fn low_u128(&self) -> u128;
    /// `floor(self / 2^sh)` for `sh >= 1`, and the discarded fraction.
    fn shr_dropped(&self, sh: u64) -> (Self, Dropped);
    /// `self + 1`; never called on a value that would overflow.
    fn plus_one(self) -> Self;
}

impl Magnitude for u128 {
    fn is_zero(&self) -> bool {
        *self == 0
    }
    fn bit_len(&self) -> u64 {
        (128 - self.leading_zeros()) as u64
    }
    fn low_u128(&self) -> u128 {
        *self
    }
    fn shr_dropped(&self, sh: u64) -> (Self, Dropped) {
        let q = if sh >= 128 { 0 } else { *self >> sh };
        // Bits [sh - 64, sh) of self form the top word of the fraction.
        let dropped = if sh < 64 {
            Dropped {
                top: (*self << (64 - sh)) as u64,
                sticky: false,
            }
        } else {
            let lo = sh - 64;
            if lo >= 128 {
                Dropped {
                    top: 0,
                    sticky: *self != 0,
                }
            } else {
                Dropped {
                    top: (*self >> lo) as u64,
                    sticky: lo > 0 && (*self & ((1u128 << lo) - 1)) != 0,
                }
            }
        };
        (q, dropped)
    }
    fn plus_one(self) -> Self {
        self + 1
    }
}

/// An arbitrary-width unsigned integer: little-endian 64-bit limbs without trailing zero
/// limbs (so zero is the empty vector).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WideUint(Vec<u64>);

impl WideUint {
    pub fn from_u128(v: u128) -> Self {
        let mut w = WideUint(vec![v as u64, (v >> 64) as u64]);
        w.trim();
        w
    }

    /// From a two's complement value held in `limbs` (little-endian), as magnitude and
    /// sign.
    pub fn from_twos_complement(mut limbs: Vec<u64>) -> (bool, Self) {
        let neg = limbs.last().is_some_and(|&l| (l as i64) < 0);
        if neg {
            let mut carry = true;
            for l in limbs.iter_mut() {
                let (v, c) = (!*l).overflowing_add(carry as u64);
                *l = v;
                carry = c;
            }
        }
        let mut w = WideUint(limbs);
        w.trim();
        (neg, w)
    }

    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    fn limb(&self, i: usize) -> u64 {
        self.0.get(i).copied().unwrap_or(0)
    }

    /// Bits [lo, lo + 64) (zero beyond the top).
    fn word_at(&self, lo: u64) -> u64 {
        let (i, b) = ((lo / 64) as usize, lo % 64);
        if b == 0 {
            self.limb(i)
        } else {
            (self.limb(i) >> b) | (self.limb(i + 1) << (64 - b))
        }
    }

    /// Any bit below position `lo` set.
    fn any_below(&self, lo: u64) -> bool {
        let (i, b) = ((lo / 64) as usize, lo % 64);
        self.0.iter().take(i).any(|&l| l != 0) || (b > 0 && (self.limb(i) << (64 - b)) != 0)
    }

    pub fn shl(&self, sh: u64) -> Self {
        if self.0.is_empty() {
            return self.clone();
        }
        let (whole, b) = ((sh / 64) as usize, sh % 64);
        let mut out = vec![0u64; whole];
        out.reserve(self.0.len() + 1);
        let mut carry = 0u64;
        for &l in &self.0 {
            if b == 0 {
                out.push(l);
            } else {
                out.push((l << b) | carry);
                carry = l >> (64 - b);
            }
        }
        out.push(carry);
        let mut w = WideUint(out);
        w.trim();
        w
    }

    pub fn add(&self, other: &Self) -> Self {
        let n = self.0.len().max(other.0.len());
        let mut out = Vec::with_capacity(n + 1);
        let mut carry = false;
        for i in 0..n {
            let (s1, c1) = self.limb(i).overflowing_add(other.limb(i));
            let (s2, c2) = s1.overflowing_add(carry as u64);
            out.push(s2);
            carry = c1 || c2;
        }
        out.push(carry as u64);
        let mut w = WideUint(out);
        w.trim();
        w
    }

    /// `self - other`, requiring `self >= other`.
    pub fn sub(&self, other: &Self) -> Self {
        debug_assert!(self.cmp_mag(other) != Ordering::Less);
        let mut out = Vec::with_capacity(self.0.len());
        let mut borrow = false;
        for i in 0..self.0.len() {
            let (d1, b1) = self.limb(i).overflowing_sub(other.limb(i));
            let (d2, b2) = d1.overflowing_sub(borrow as u64);
            out.push(d2);
            borrow = b1 || b2;
        }
        let mut w = WideUint(out);
        w.trim();
        w
    }

    pub fn cmp_mag(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }
}

impl Magnitude for WideUint {
    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }
    fn bit_len(&self) -> u64 {
        match self.0.last() {
            None => 0,
            Some(&top) => 64 * (self.0.len() as u64 - 1) + (64 - top.leading_zeros() as u64),
        }
    }
    fn low_u128(&self) -> u128 {
        self.limb(0) as u128 | ((self.limb(1) as u128) << 64)
    }
    fn shr_dropped(&self, sh: u64) -> (Self, Dropped) {
        let (whole, b) = ((sh / 64) as usize, sh % 64);
        let q: Vec<u64> = (whole..self.0.len())
            .map(|i| {
                if b == 0 {
                    self.0[i]
                } else {
                    (self.0[i] >> b) | (self.limb(i + 1) << (64 - b))
                }
            })
            .collect();
        let mut q = WideUint(q);
        q.trim();
        let dropped = if sh < 64 {
            Dropped {
                top: self.limb(0) << (64 - sh),
                sticky: false,
            }
        } else {
            Dropped {
                top: self.word_at(sh - 64),
                sticky: self.any_below(sh - 64),
            }
        };
        (q, dropped)
    }
    fn plus_one(self) -> Self {
        self.add(&WideUint::from_u128(1))
    }
}

/// A magnitude that is usually a `u128` and occasionally wide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Mag {
    Small(u128),
    Wide(WideUint),
}

impl Mag {
    pub fn to_wide(&self) -> WideUint {
        match self {
            Mag::Small(v) => WideUint::from_u128(*v),
            Mag::Wide(w) => w.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_and_u128_shifts_agree_on_quotient_and_dropped_fraction() {
        let vals = [
            0u128,
            1,
            3,
            (1 << 64) + 5,
            u128::MAX >> 1,
            0x8000_0000_0000_0000_0000_0000_0000_0001,
            u128::MAX,
        ];
        for &v in &vals {
            let w = WideUint::from_u128(v);
            assert_eq!(w.bit_len(), v.bit_len());
            for sh in [
                1u64, 2, 31, 63, 64, 65, 100, 127, 128, 129, 191, 192, 193, 300,
            ] {
                let (q1, d1) = v.shr_dropped(sh);
                let (q2, d2) = w.shr_dropped(sh);
                assert_eq!((q1, d1), (q2.low_u128(), d2), "v={v:#x} sh={sh}");
                assert_eq!(q2.bit_len(), q1.bit_len());
            }
        }
    }

    #[test]
    fn wide_arithmetic_matches_u128_where_it_fits() {
        let a = WideUint::from_u128(0xffff_ffff_ffff_ffff_ffff);
        let b = WideUint::from_u128(0x1_0000_0000_0001);
        assert_eq!(
            a.add(&b).low_u128(),
            0xffff_ffff_ffff_ffff_ffff + 0x1_0000_0000_0001
        );
        assert_eq!(
            a.sub(&b).low_u128(),
            0xffff_ffff_ffff_ffff_ffff - 0x1_0000_0000_0001
        );
        assert_eq!(a.shl(12).low_u128(), 0xffff_ffff_ffff_ffff_ffff << 12);
        let big = a.shl(200);
        assert_eq!(big.bit_len(), 280);
        let (q, d) = big.shr_dropped(200);
        assert_eq!((q, d), (a.clone(), Dropped::NONE));
        assert_eq!(big.sub(&big), WideUint::from_u128(0));
        let (neg, m) = WideUint::from_twos_complement(vec![u64::MAX - 4, u64::MAX]);
        assert!(neg);
        assert_eq!(m.low_u128(), 5);
    }
}
