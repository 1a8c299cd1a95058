//! An exact GEMM of grid values on 16-bit integer codes (AVX-512 VNNI).
//!
//! [`grid_gemm`] computes `x w (+ b)` for f64 operands whose values are integer codes of
//! at most 16 bits scaled by a power of two (values on a fixed-point grid of <= 16 bits),
//! exactly: the codes are multiplied with `vpdpwssd` (pairs of i16 products summed into
//! i32 lanes), the weight-side codes split into an unsigned low byte and a signed high
//! byte so that every i32 partial sum over a block of 256 products is below 2^31, and the
//! blocks are combined in f64, where every sum stays an integer below 2^53. The result is
//! the exact product rounded once to f64 (once more when the bias is added), so it equals
//! an f64 GEMM of the same values wherever that GEMM is exact (e.g. the `exact` training
//! path's GEMMs, `quant::f64_gemm_is_exact`), and it runs at about the rate of an f32
//! GEMM instead of an f64 one.
//!
//! Nothing is assumed about the inputs: the conversion to codes checks that every value
//! times its `2^frac_bits` is an integer in `[-2^15, 2^15)` (NaN and infinities fail), and
//! [`grid_gemm`] returns `false` (leaving `out` unspecified) when one is not, when the CPU
//! lacks AVX-512 VNNI, or when `k` or the scale leave the proven range; the caller then
//! computes the product another way.

/// One operand of [`grid_gemm`]: `rows x cols` values read from `data`, row-major
/// (`trans == false`, `data` is `rows x cols`) or as the transpose of a row-major
/// `cols x rows` array (`trans == true`), each value `code * 2^-frac_bits`.
#[derive(Clone, Copy, Debug)]
pub struct GridOperand<'a> {
    pub data: &'a [f64],
    pub rows: usize,
    pub cols: usize,
    pub trans: bool,
    pub frac_bits: i32,
}

impl<'a> GridOperand<'a> {
    /// A row-major `rows x cols` operand.
    pub fn row_major(data: &'a [f64], rows: usize, cols: usize, frac_bits: i32) -> Self {
        GridOperand {
            data,
            rows,
            cols,
            trans: false,
            frac_bits,
        }
    }
}

/// Depth limit: every |sum of products| is at most k * 2^30, below 2^53.
const MAX_K: usize = 1 << 22;

/// Whether [`grid_gemm`] can run on this CPU.
pub fn grid_gemm_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out = a b (+ bias)` (`out` row-major `a.rows x b.cols`, `bias` of `b.cols`), exact
/// products and sums rounded once to f64 (see the module docs). Returns `false`, with
/// `out` unspecified, where it does not apply: no AVX-512 VNNI, a value of `a` or `b` not
/// an integer code in `[-2^15, 2^15)` at its `frac_bits`, `k >= 2^22`, or a scale
/// `2^-(frac_a + frac_b)` outside `[2^-900, 2^900]`.
///
/// # Panics
/// If the shapes do not form a product or a slice's length does not match its shape.
pub fn grid_gemm(
    a: GridOperand<'_>,
    b: GridOperand<'_>,
    bias: Option<&[f64]>,
    out: &mut [f64],
) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(
        b.rows, k,
        "grid_gemm: {}x{} times {}x{}",
        a.rows, a.cols, b.rows, b.cols
    );
    assert_eq!(
        a.data.len(),
        m * k,
        "grid_gemm: a holds {} values",
        a.data.len()
    );
    assert_eq!(
        b.data.len(),
        k * n,
        "grid_gemm: b holds {} values",
        b.data.len()
    );
    assert_eq!(
        out.len(),
        m * n,
        "grid_gemm: out holds {} values",
        out.len()
    );
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "grid_gemm: bias holds {} values", bias.len());
    }
    let shift = a.frac_bits as i64 + b.frac_bits as i64;
    if !grid_gemm_available() || k >= MAX_K || shift.abs() > 900 {
        return false;
    }
    if m == 0 || n == 0 {
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the CPU has every feature the kernels are compiled for (checked above).
        unsafe { avx512::run(a, b, bias, out, pow2(-shift)) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// 2^e for |e| <= 1000, exactly.
fn pow2(e: i64) -> f64 {
    let mut v = 1.0f64;
    let step = if e >= 0 {
        2.0f64.powi(100)
    } else {
        2.0f64.powi(-100)
    };
    let mut left = e.abs();
    while left >= 100 {
        v *= step;
        left -= 100;
    }
    v * if e >= 0 {
        2.0f64.powi(left as i32)
    } else {
        2.0f64.powi(-(left as i32))
    }
}

/// The codes of `data` at `frac_bits` into `dst`, or `None` if one is not an integer in
/// `[-2^15, 2^15)` (scalar reference of the AVX-512 conversion, used for tails).
fn code_of(v: f64, scale: f64) -> Option<i16> {
    let s = v * scale;
    (s == s.trunc() && (-32768.0..32768.0).contains(&s)).then_some(s as i16)
}

/// A pair of codes as one little-endian word (`lo` in the low half), the unit `vpdpwssd`
/// multiplies.
fn word(lo: i16, hi: i16) -> i32 {
    (lo as u16 as u32 | (hi as u16 as u32) << 16) as i32
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{code_of, word, GridOperand};
    use std::arch::x86_64::*;

    /// Columns per panel of `b` (two registers of 16 i32 lanes).
    const NR: usize = 32;
    /// Rows of `a` per tile (6 x 2 columns x 2 limbs = 24 accumulators).
    const MR: usize = 6;
    /// Pairs of k per block: 256 products of a 16-bit code and a limb (|.| < 2^23) sum
    /// below 2^31.
    const KB: usize = 128;

    /// Converts `src` to codes at `scale` (`dst[i] = src[i] * scale`), `false` if a value
    /// is not an integer in `[-2^15, 2^15)`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn to_codes(src: &[f64], scale: f64, dst: &mut [i16]) -> bool {
        let n = src.len();
        let sc = _mm512_set1_pd(scale);
        let lo = _mm256_set1_epi32(-32768);
        let hi = _mm256_set1_epi32(32767);
        let mut ok: u8 = 0xff;
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm512_mul_pd(_mm512_loadu_pd(src.as_ptr().add(i)), sc);
            let t = _mm512_cvttpd_epi32(v);
            let back = _mm512_cvtepi32_pd(t);
            let same = _mm512_cmp_pd_mask::<_CMP_EQ_OQ>(back, v);
            let in_range = _mm256_cmpge_epi32_mask(t, lo) & _mm256_cmple_epi32_mask(t, hi);
            ok &= same & in_range;
            _mm_storeu_si128(
                dst.as_mut_ptr().add(i) as *mut __m128i,
                _mm256_cvtepi32_epi16(t),
            );
            i += 8;
        }
        if ok != 0xff {
            return false;
        }
        for j in i..n {
            match code_of(src[j], scale) {
                Some(c) => dst[j] = c,
                None => return false,
            }
        }
        true
    }

    /// Interleaves rows `r0` and `r1` (None: zeros) of 16-bit codes into words
    /// `out[c] = word(r0[c], r1[c])`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn interleave(r0: &[i16], r1: Option<&[i16]>, out: &mut [i32]) {
        let n = r0.len();
        // Word c of the low half takes element c of r0 and c of r1 (index 32 + c).
        let idx_lo = _mm512_set_epi16(
            47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6, 37, 5, 36,
            4, 35, 3, 34, 2, 33, 1, 32, 0,
        );
        let idx_hi = _mm512_set_epi16(
            63, 31, 62, 30, 61, 29, 60, 28, 59, 27, 58, 26, 57, 25, 56, 24, 55, 23, 54, 22, 53, 21,
            52, 20, 51, 19, 50, 18, 49, 17, 48, 16,
        );
        let mut c = 0;
        while c < n {
            let len = (n - c).min(32);
            let mask: __mmask32 = if len == 32 { !0 } else { (1u32 << len) - 1 };
            let a = _mm512_maskz_loadu_epi16(mask, r0.as_ptr().add(c));
            let b = match r1 {
                Some(r1) => _mm512_maskz_loadu_epi16(mask, r1.as_ptr().add(c)),
                None => _mm512_setzero_si512(),
            };
            let w0 = _mm512_permutex2var_epi16(a, idx_lo, b);
            let w1 = _mm512_permutex2var_epi16(a, idx_hi, b);
            let m0: __mmask16 = if len >= 16 { !0 } else { (1u16 << len) - 1 };
            let m1: __mmask16 = if len >= 32 {
                !0
            } else if len > 16 {
                (1u16 << (len - 16)) - 1
            } else {
                0
            };
            _mm512_mask_storeu_epi32(out.as_mut_ptr().add(c), m0, w0);
            _mm512_mask_storeu_epi32(out.as_mut_ptr().add(c + 16), m1, w1);
            c += 32;
        }
    }

    /// `a`'s words into `w`: `(stride of a row, stride of a pair)`, word `(i, p)`
    /// pairing `a[i][2p]` and `a[i][2p + 1]` (0 past k); `None` if a value is not a
    /// code. `codes` is scratch.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn a_words(
        a: &GridOperand<'_>,
        scale: f64,
        w: &mut Vec<i32>,
        codes: &mut Vec<i16>,
    ) -> Option<(usize, usize)> {
        let (m, k) = (a.rows, a.cols);
        let kp = k.div_ceil(2);
        fit(w, m * kp);
        if !a.trans {
            // Row i's codes, padded to an even length, are its words.
            // SAFETY (of the view): i32 storage seen as twice as many i16.
            let codes = std::slice::from_raw_parts_mut(w.as_mut_ptr() as *mut i16, 2 * m * kp);
            for i in 0..m {
                let row = &mut codes[2 * i * kp..][..2 * kp];
                if !to_codes(&a.data[i * k..(i + 1) * k], scale, &mut row[..k]) {
                    return None;
                }
                if k % 2 == 1 {
                    row[k] = 0;
                }
            }
            Some((kp, 1))
        } else {
            // `data` is k x m: pair p interleaves the codes of memory rows 2p and 2p + 1.
            fit(codes, k * m);
            if !to_codes(a.data, scale, codes) {
                return None;
            }
            for p in 0..kp {
                let r0 = &codes[2 * p * m..(2 * p + 1) * m];
                let r1 = (2 * p + 1 < k).then(|| &codes[(2 * p + 1) * m..(2 * p + 2) * m]);
                interleave(r0, r1, &mut w[p * m..(p + 1) * m]);
            }
            Some((1, m))
        }
    }

    /// Splits 32 words (two registers) into limb registers: low bytes (unsigned) and high
    /// bytes (signed) of every 16-bit code, stored as `[lo0, lo1, hi0, hi1]`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn store_limbs(w0: __m512i, w1: __m512i, dst: *mut i32) {
        let byte = _mm512_set1_epi16(0xff);
        _mm512_storeu_si512(dst as *mut _, _mm512_and_si512(w0, byte));
        _mm512_storeu_si512(dst.add(16) as *mut _, _mm512_and_si512(w1, byte));
        _mm512_storeu_si512(dst.add(32) as *mut _, _mm512_srai_epi16::<8>(w0));
        _mm512_storeu_si512(dst.add(48) as *mut _, _mm512_srai_epi16::<8>(w1));
    }

    /// `b`'s panels into `panels`: for each block of NR columns and each pair p, 2 x NR
    /// words (low limbs, then high limbs; columns past n are 0). `words` is scratch.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn b_panels(
        codes: &[i16],
        (k, n, trans): (usize, usize, bool),
        panels: &mut [i32],
        words: &mut Vec<i32>,
    ) {
        let kp = k.div_ceil(2);
        let nb = n.div_ceil(NR);
        if trans && k % 2 == 0 {
            // `codes` is n x k with k even: column j's pair p is the aligned 32-bit word
            // j*k/2 + p, gathered 16 columns at a time.
            let base = codes.as_ptr() as *const i32;
            let kw = (k / 2) as i32;
            let lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
            for blk in 0..nb {
                let half = |h: usize| {
                    let j0 = blk * NR + h * 16;
                    let valid = n.saturating_sub(j0).min(16);
                    let mask = if valid == 16 {
                        !0
                    } else {
                        ((1u32 << valid) - 1) as __mmask16
                    };
                    let idx = _mm512_mullo_epi32(
                        _mm512_add_epi32(lanes, _mm512_set1_epi32(j0 as i32)),
                        _mm512_set1_epi32(kw),
                    );
                    (mask, idx)
                };
                let ((m0, i0), (m1, i1)) = (half(0), half(1));
                for p in 0..kp {
                    let off = _mm512_set1_epi32(p as i32);
                    let z = _mm512_setzero_si512();
                    let w0 =
                        _mm512_mask_i32gather_epi32::<4>(z, m0, _mm512_add_epi32(i0, off), base);
                    let w1 =
                        _mm512_mask_i32gather_epi32::<4>(z, m1, _mm512_add_epi32(i1, off), base);
                    store_limbs(w0, w1, panels.as_mut_ptr().add((blk * kp + p) * 2 * NR));
                }
            }
            return;
        }
        words.clear();
        words.resize(nb * NR, 0);
        for p in 0..kp {
            if !trans {
                // `codes` is k x n: interleave rows 2p and 2p + 1.
                let r0 = &codes[2 * p * n..(2 * p + 1) * n];
                let r1 = (2 * p + 1 < k).then(|| &codes[(2 * p + 1) * n..(2 * p + 2) * n]);
                interleave(r0, r1, &mut words[..n]);
            } else {
                // `codes` is n x k (k odd): column j's pair is codes j*k + 2p, 2p + 1.
                for (j, w) in words[..n].iter_mut().enumerate() {
                    let row = &codes[j * k..(j + 1) * k];
                    let hi = if 2 * p + 1 < k { row[2 * p + 1] } else { 0 };
                    *w = word(row[2 * p], hi);
                }
            }
            for blk in 0..nb {
                let src = words.as_ptr().add(blk * NR);
                let w0 = _mm512_loadu_si512(src as *const _);
                let w1 = _mm512_loadu_si512(src.add(16) as *const _);
                store_limbs(w0, w1, panels.as_mut_ptr().add((blk * kp + p) * 2 * NR));
            }
        }
    }

    /// `acc + dot pairs(a, b)` as one `vpdpwssd`: through `asm!` because LLVM otherwise
    /// splits some of them into `vpmaddwd` + `vpaddd` (twice the instructions).
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn dpwssd(acc: &mut __m512i, a: __m512i, b: __m512i) {
        // SAFETY: a register-only instruction of a feature this function is compiled with.
        unsafe {
            std::arch::asm!(
                "vpdpwssd {acc}, {a}, {b}",
                acc = inout(zmm_reg) *acc,
                a = in(zmm_reg) a,
                b = in(zmm_reg) b,
                options(pure, nomem, nostack),
            );
        }
    }

    /// Where a tile's sums go: `out` at row stride `ld`, `cols` (1..=NR) columns; the
    /// first block of k stores, later ones add; the last scales and adds the bias.
    struct Dst {
        out: *mut f64,
        ld: usize,
        cols: usize,
        first: bool,
        last: Option<(f64, *const f64)>,
    }

    /// One tile: rows `R` over pairs `[0, np)`, `a` at word (row 0, pair 0) of the tile,
    /// `b` at the panel's pair 0; its exact integer sums go to `dst`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn tile<const R: usize>(
        a: *const i32,
        (si, sp): (usize, usize),
        b: *const i32,
        np: usize,
        dst: &Dst,
    ) {
        let z = _mm512_setzero_si512();
        let mut lo = [[z; 2]; R];
        let mut hi = [[z; 2]; R];
        for p in 0..np {
            let bp = b.add(p * 2 * NR);
            let bl0 = _mm512_loadu_si512(bp as *const _);
            let bl1 = _mm512_loadu_si512(bp.add(16) as *const _);
            let bh0 = _mm512_loadu_si512(bp.add(32) as *const _);
            let bh1 = _mm512_loadu_si512(bp.add(48) as *const _);
            let ap = a.add(p * sp);
            for r in 0..R {
                let av = _mm512_set1_epi32(*ap.add(r * si));
                dpwssd(&mut lo[r][0], av, bl0);
                dpwssd(&mut lo[r][1], av, bl1);
                dpwssd(&mut hi[r][0], av, bh0);
                dpwssd(&mut hi[r][1], av, bh1);
            }
        }
        let s = _mm512_set1_pd(256.0);
        let mask = |q: usize| -> __mmask8 {
            let c = dst.cols.saturating_sub(q * 8).min(8);
            ((1u16 << c) - 1) as __mmask8
        };
        for r in 0..R {
            let row = dst.out.add(r * dst.ld);
            for h in 0..2 {
                let (l, u) = (lo[r][h], hi[r][h]);
                let halves = [
                    (_mm512_castsi512_si256(l), _mm512_castsi512_si256(u)),
                    (
                        _mm512_extracti64x4_epi64::<1>(l),
                        _mm512_extracti64x4_epi64::<1>(u),
                    ),
                ];
                for (e, (l8, u8)) in halves.into_iter().enumerate() {
                    let q = 2 * h + e;
                    let mk = mask(q);
                    if mk == 0 {
                        continue;
                    }
                    // hi * 256 + lo: integers below 2^39, exact; running sums stay below 2^53.
                    let mut v = _mm512_fmadd_pd(_mm512_cvtepi32_pd(u8), s, _mm512_cvtepi32_pd(l8));
                    let at = row.add(q * 8);
                    if !dst.first {
                        v = _mm512_add_pd(v, _mm512_maskz_loadu_pd(mk, at));
                    }
                    if let Some((scale, bias)) = dst.last {
                        v = _mm512_mul_pd(v, _mm512_set1_pd(scale));
                        if !bias.is_null() {
                            v = _mm512_add_pd(v, _mm512_maskz_loadu_pd(mk, bias.add(q * 8)));
                        }
                    }
                    _mm512_mask_storeu_pd(at, mk, v);
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn run(
        a: GridOperand<'_>,
        b: GridOperand<'_>,
        bias: Option<&[f64]>,
        out: &mut [f64],
        scale: f64,
    ) -> bool {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        SCRATCH.with_borrow_mut(|s| {
            let Some((si, sp)) = a_words(&a, super::pow2(a.frac_bits as i64), &mut s.aw, &mut s.ac)
            else {
                return false;
            };
            fit(&mut s.bc, k * n);
            if !to_codes(b.data, super::pow2(b.frac_bits as i64), &mut s.bc) {
                return false;
            }
            let kp = k.div_ceil(2);
            fit(&mut s.panels, n.div_ceil(NR) * kp * 2 * NR);
            b_panels(&s.bc, (k, n, b.trans), &mut s.panels, &mut s.words);
            tiles(&s.aw, (si, sp), &s.panels, (m, k, n), bias, out, scale);
            true
        })
    }

    /// Buffers reused by every product of a thread (contents are stale between calls:
    /// each is written before it is read).
    #[derive(Default)]
    struct Scratch {
        aw: Vec<i32>,
        ac: Vec<i16>,
        bc: Vec<i16>,
        panels: Vec<i32>,
        words: Vec<i32>,
    }

    thread_local! {
        static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
    }

    /// Makes `v` exactly `len` long (new elements zero, old ones stale).
    fn fit<T: Copy + Default>(v: &mut Vec<T>, len: usize) {
        v.resize(len, T::default());
    }

    /// Every tile of the product from `a`'s words and `b`'s panels into `out`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn tiles(
        aw: &[i32],
        (si, sp): (usize, usize),
        panels: &[i32],
        (m, k, n): (usize, usize, usize),
        bias: Option<&[f64]>,
        out: &mut [f64],
        scale: f64,
    ) {
        let kp = k.div_ceil(2);
        for blk in 0..n.div_ceil(NR) {
            let cols = (n - blk * NR).min(NR);
            let panel = panels.as_ptr().add(blk * kp * 2 * NR);
            let mut i0 = 0;
            while i0 < m {
                let rows = (m - i0).min(MR);
                let mut p0 = 0;
                loop {
                    let np = (kp - p0).min(KB);
                    let dst = Dst {
                        out: out.as_mut_ptr().add(i0 * n + blk * NR),
                        ld: n,
                        cols,
                        first: p0 == 0,
                        last: (p0 + np == kp).then(|| {
                            (
                                scale,
                                bias.map_or(std::ptr::null(), |b| b[blk * NR..].as_ptr()),
                            )
                        }),
                    };
                    let ap = aw.as_ptr().add(i0 * si + p0 * sp);
                    let bp = panel.add(p0 * 2 * NR);
                    match rows {
                        6 => tile::<6>(ap, (si, sp), bp, np, &dst),
                        5 => tile::<5>(ap, (si, sp), bp, np, &dst),
                        4 => tile::<4>(ap, (si, sp), bp, np, &dst),
                        3 => tile::<3>(ap, (si, sp), bp, np, &dst),
                        2 => tile::<2>(ap, (si, sp), bp, np, &dst),
                        _ => tile::<1>(ap, (si, sp), bp, np, &dst),
                    }
                    p0 += np;
                    if p0 >= kp {
                        break;
                    }
                }
                i0 += rows;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact reference in i128 from the codes.
    fn reference(a: &GridOperand, b: &GridOperand, bias: Option<&[f64]>) -> Vec<f64> {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let at = |i: usize, kk: usize| {
            if a.trans {
                a.data[kk * m + i]
            } else {
                a.data[i * k + kk]
            }
        };
        let bt = |kk: usize, j: usize| {
            if b.trans {
                b.data[j * k + kk]
            } else {
                b.data[kk * n + j]
            }
        };
        let (sa, sb) = (pow2(a.frac_bits as i64), pow2(b.frac_bits as i64));
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: i128 = (0..k)
                    .map(|kk| (at(i, kk) * sa) as i128 * (bt(kk, j) * sb) as i128)
                    .sum();
                let v = s as f64 * pow2(-(a.frac_bits as i64 + b.frac_bits as i64));
                out[i * n + j] = v + bias.map_or(0.0, |bb| bb[j]);
            }
        }
        out
    }

    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *state >> 33
    }

    #[test]
    fn extreme_codes_and_shapes_match_the_exact_sum() {
        if !grid_gemm_available() {
            return;
        }
        let mut s = 7u64;
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 3, 33),
            (13, 257, 31),
            (6, 512, 64),
            (5, 4096, 17),
            (64, 17, 400),
        ] {
            for trans in 0..4 {
                // Every code at an extreme (-2^15 or 2^15 - 1) in one case, random otherwise.
                let extreme = trans == 3;
                let mut gen = |len: usize| -> Vec<f64> {
                    (0..len)
                        .map(|_| {
                            let c = if extreme {
                                if lcg(&mut s) & 1 == 0 {
                                    -32768
                                } else {
                                    32767
                                }
                            } else {
                                (lcg(&mut s) % 65536) as i64 - 32768
                            };
                            c as f64 * 2f64.powi(-10)
                        })
                        .collect()
                };
                let ad = gen(m * k);
                let bd = gen(k * n);
                let a = GridOperand {
                    data: &ad,
                    rows: m,
                    cols: k,
                    trans: trans & 1 == 1,
                    frac_bits: 10,
                };
                let b = GridOperand {
                    data: &bd,
                    rows: k,
                    cols: n,
                    trans: trans & 2 == 2,
                    frac_bits: 10,
                };
                let bias: Vec<f64> = (0..n).map(|j| j as f64 * 0.25).collect();
                let mut out = vec![f64::NAN; m * n];
                assert!(grid_gemm(a, b, Some(&bias), &mut out));
                assert_eq!(
                    out,
                    reference(&a, &b, Some(&bias)),
                    "{m}x{k}x{n} trans {trans}"
                );
            }
        }
    }

    #[test]
    fn values_off_the_grid_or_range_are_refused() {
        if !grid_gemm_available() {
            return;
        }
        let ok = vec![1.0; 16];
        for bad in [
            0.5 * 2f64.powi(-4),
            32768.0 * 2f64.powi(-4),
            f64::NAN,
            f64::INFINITY,
        ] {
            let mut ad = vec![1.0; 16];
            ad[13] = bad;
            let a = GridOperand::row_major(&ad, 4, 4, 4);
            let b = GridOperand::row_major(&ok, 4, 4, 4);
            assert!(!grid_gemm(a, b, None, &mut [0.0; 16]), "{bad}");
        }
        let ad = vec![-2048.0; 16];
        let a = GridOperand::row_major(&ad, 4, 4, 4);
        let b = GridOperand::row_major(&ok, 4, 4, 4);
        let mut out = [0.0; 16];
        assert!(grid_gemm(a, b, None, &mut out), "-2^15 is a code");
        assert!(out.iter().all(|&v| v == -8192.0));
    }
}
