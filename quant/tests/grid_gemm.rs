//! `grid_gemm` (the integer kernel of the exact training path) against an i128 reference
//! over random formats of at most 16 bits, tile and block edges, both layouts of each
//! operand and extreme codes (every |partial sum| at its bound).

use proptest::prelude::*;
use quant::{grid_gemm, grid_gemm_available, to_f64, FxFormat, GridOperand, Overflow, Rounding};

/// Formats whose codes are i16 values: signed widths 2..=16, unsigned 1..=15.
fn code16_format() -> impl Strategy<Value = FxFormat> {
    (any::<bool>(), 1..=16u32, -8i32..30).prop_map(|(s, w, i)| {
        let (s, w) = if s {
            (true, w.max(2))
        } else {
            (false, w.min(15))
        };
        FxFormat::new(s, w, i, Rounding::Trn, Overflow::Wrap).unwrap()
    })
}

/// Codes of `f`, a quarter of them at its extremes.
fn codes(f: &FxFormat, len: usize, seed: u64) -> Vec<i64> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            match s % 8 {
                0 => f.raw_min(),
                1 => f.raw_max(),
                _ => f.raw_min() + (s >> 3) as i64 % (f.raw_max() - f.raw_min() + 1),
            }
        })
        .collect()
}

/// `data` for a `rows x cols` operand from its row-major codes: memory row-major, or the
/// transpose (`cols x rows` row-major) when `trans`.
fn memory(c: &[i64], f: &FxFormat, rows: usize, cols: usize, trans: bool) -> Vec<f64> {
    let mut v = vec![0.0; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let at = if trans { j * rows + i } else { i * cols + j };
            v[at] = to_f64(c[i * cols + j], f);
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn grid_gemm_is_the_exact_product(
        xf in code16_format(), wf in code16_format(),
        m in 1usize..40, k in prop_oneof![1usize..12, 250usize..=600, Just(4096usize)], n in 1usize..70,
        xt in any::<bool>(), wt in any::<bool>(), with_bias in any::<bool>(), seed in any::<u64>(),
    ) {
        prop_assume!(grid_gemm_available());
        let (m, n) = if k == 4096 { (m.min(7), n.min(35)) } else { (m, n) };
        let (xc, wc) = (codes(&xf, m * k, seed ^ 1), codes(&wf, k * n, seed ^ 2));
        let xd = memory(&xc, &xf, m, k, xt);
        let wd = memory(&wc, &wf, k, n, wt);
        let bias: Vec<f64> = (0..n).map(|j| j as f64 * 0.375 - 3.0).collect();
        let x = GridOperand { data: &xd, rows: m, cols: k, trans: xt, frac_bits: xf.frac_bits() };
        let w = GridOperand { data: &wd, rows: k, cols: n, trans: wt, frac_bits: wf.frac_bits() };
        let mut out = vec![f64::NAN; m * n];
        prop_assert!(grid_gemm(x, w, with_bias.then_some(bias.as_slice()), &mut out));
        let scale = 2f64.powi(-(xf.frac_bits() + wf.frac_bits()));
        for i in 0..m {
            for j in 0..n {
                let s: i128 = (0..k).map(|kk| xc[i * k + kk] as i128 * wc[kk * n + j] as i128).sum();
                let want = s as f64 * scale + if with_bias { bias[j] } else { 0.0 };
                prop_assert_eq!(out[i * n + j].to_bits(), want.to_bits(),
                    "{}x{}x{} ({} x {}) at ({}, {})", m, k, n, xf, wf, i, j);
            }
        }
    }
}

#[test]
fn codes_outside_16_bits_or_off_the_grid_fall_back() {
    if !grid_gemm_available() {
        return;
    }
    let ones = vec![1.0; 6];
    let w = GridOperand {
        data: &ones,
        rows: 3,
        cols: 2,
        trans: false,
        frac_bits: 0,
    };
    // An unsigned 16-bit code above 2^15 - 1, a value between grid points, NaN.
    for bad in [40000.0, 0.5, f64::NAN] {
        let xd = [1.0, bad, 2.0];
        let x = GridOperand {
            data: &xd,
            rows: 1,
            cols: 3,
            trans: false,
            frac_bits: 0,
        };
        assert!(!grid_gemm(x, w, None, &mut [0.0; 2]), "{bad}");
    }
}
