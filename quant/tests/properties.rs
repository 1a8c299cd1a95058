//! Properties of the scalar path over random formats and values (proptest).

use proptest::prelude::*;
use quant::{
    add, cast, from_f64, from_f64_exact, from_f64_stochastic, mul, sub, to_f64, FxFormat, Overflow,
    Rounding, StochasticSource,
};

fn format_with(
    widths: std::ops::RangeInclusive<u32>,
    int_bits: std::ops::Range<i32>,
    roundings: &'static [Rounding],
    overflows: &'static [Overflow],
) -> impl Strategy<Value = FxFormat> {
    (
        any::<bool>(),
        widths,
        int_bits,
        0..roundings.len(),
        0..overflows.len(),
    )
        .prop_map(move |(s, w, i, q, o)| {
            FxFormat::new(s, w, i, roundings[q], overflows[o]).unwrap()
        })
}

/// HLS's seven modes (`Rounding::ALL` lists them first, then STOCHASTIC).
const HLS_ROUNDINGS: &[Rounding] = Rounding::ALL.split_at(7).0;

fn any_format() -> impl Strategy<Value = FxFormat> {
    format_with(1..=64, -40..100, &Rounding::ALL, &Overflow::ALL)
}

/// Doubles that stress a format: ties and near-ties on its grid, values around its range
/// edges, and arbitrary finite doubles.
fn values_for(fmt: FxFormat) -> impl Strategy<Value = f64> {
    let lsb = fmt.lsb();
    let span = 2f64.powi(fmt.width.min(60) as i32 + 1);
    prop_oneof![
        // Grid points, exact ties and random fractions, inside and somewhat beyond range.
        (
            -span..span,
            prop_oneof![Just(0.0), Just(0.5), Just(-0.5), 0.0..1.0f64]
        )
            .prop_map(move |(k, f)| (k.trunc() + f) * lsb),
        // Arbitrary finite doubles.
        any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("finite", |x| x.is_finite()),
        // Small magnitudes in units of the LSB.
        (-8.0..8.0f64).prop_map(move |u| u * lsb),
    ]
}

fn format_and_values(
    fmt: impl Strategy<Value = FxFormat>,
) -> impl Strategy<Value = (FxFormat, Vec<f64>)> {
    fmt.prop_flat_map(|f| (Just(f), prop::collection::vec(values_for(f), 1..48)))
}

/// The signed numeric value of a code.
fn val(raw: i64, f: &FxFormat) -> i128 {
    f.raw_value(raw)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn float_route_is_bit_identical_to_integer_path((f, xs) in format_and_values(any_format())) {
        for x in xs {
            prop_assert_eq!(from_f64(x, &f), from_f64_exact(x, &f), "{} = {:e}", f, x);
        }
    }

    #[test]
    fn float_route_formats_are_bit_identical_to_integer_path(
        (f, xs) in format_and_values(format_with(1..=50, -10..50, HLS_ROUNDINGS, &Overflow::ALL))
    ) {
        prop_assert!(quant::Quantizer::new(&f).has_float_route() || f.frac_bits() < -900);
        for x in xs {
            prop_assert_eq!(from_f64(x, &f), from_f64_exact(x, &f), "{} = {:e}", f, x);
        }
    }

    #[test]
    fn quantizing_twice_equals_once((f, xs) in format_and_values(format_with(1..=53, -40..100, &Rounding::ALL, &Overflow::ALL))) {
        for x in xs {
            let r = from_f64(x, &f).unwrap();
            // The grid value is exact in f64 for widths up to 53 (in f64's normal range).
            let v = to_f64(r, &f);
            prop_assert_eq!(from_f64(v, &f).unwrap(), r, "{} = {:e}", f, x);
            prop_assert_eq!(cast(r, &f, &f), r);
        }
    }

    #[test]
    fn rounding_is_monotone_under_sat(
        (f, mut xs) in format_and_values(format_with(1..=64, -40..100, HLS_ROUNDINGS, &[Overflow::Sat]))
    ) {
        xs.sort_by(f64::total_cmp);
        let codes: Vec<i128> = xs.iter().map(|&x| val(from_f64(x, &f).unwrap(), &f)).collect();
        for w in codes.windows(2) {
            prop_assert!(w[0] <= w[1], "{}: {:?}", f, codes);
        }
    }

    #[test]
    fn sat_sym_never_yields_the_most_negative_code(
        (f, xs) in format_and_values(format_with(1..=64, -40..100, &Rounding::ALL, &[Overflow::SatSym]))
    ) {
        let f = FxFormat { signed: true, ..f };
        for &x in &xs {
            let r = from_f64(x, &f).unwrap();
            prop_assert_ne!(r, f.raw_min(), "{} = {:e}", f, x);
            let any = FxFormat::signed(f.width, f.int_bits).unwrap();
            let m = from_f64(x, &any).unwrap();
            for out in [cast(m, &any, &f), add(m, &any, m, &any, &f), sub(m, &any, m, &any, &f), mul(m, &any, m, &any, &f)] {
                prop_assert_ne!(out, f.raw_min());
            }
        }
    }

    #[test]
    fn wrap_is_modular(
        (f, xs) in format_and_values(format_with(1..=64, -40..60, &Rounding::ALL, &[Overflow::Wrap]))
    ) {
        // The same LSB with 64 more integer bits never overflows for these inputs: the
        // wrapped code is that code modulo 2^W.
        let wide = FxFormat::new(true, 64, f.int_bits + (64 - f.width as i32), f.rounding, Overflow::Sat).unwrap();
        for x in xs {
            let r = from_f64(x, &f).unwrap();
            let big = from_f64(x, &wide).unwrap();
            if big == wide.raw_min() || big == wide.raw_max() {
                continue; // out of even the wide range
            }
            let modulus = 1i128 << f.width;
            prop_assert_eq!(
                (val(r, &f) - big as i128).rem_euclid(modulus), 0,
                "{} = {:e}: {} vs {}", f, x, r, big
            );
            prop_assert_eq!(cast(big, &wide, &f), r);
        }
    }

    #[test]
    fn ops_equal_exact_intermediate_then_cast(
        fa in format_with(1..=24, -8..24, HLS_ROUNDINGS, &Overflow::ALL),
        fb in format_with(1..=24, -8..24, HLS_ROUNDINGS, &Overflow::ALL),
        out in any_format(),
        a_bits in any::<i64>(), b_bits in any::<i64>(),
    ) {
        // Codes of <= 24 bits: sums and products fit exactly in a 64-bit format with the
        // finer LSB, and casting that to `out` must equal the direct operation.
        let (a, b) = (quant::cast(a_bits, &fa, &fa), quant::cast(b_bits, &fb, &fb));
        let fr = fa.frac_bits().max(fb.frac_bits());
        let sum_fmt = FxFormat::signed(64, 64 - fr).unwrap();
        let prod_fmt = FxFormat::signed(64, 64 - (fa.frac_bits() + fb.frac_bits())).unwrap();
        let ea = cast(a, &fa, &sum_fmt);
        let eb = cast(b, &fb, &sum_fmt);
        let s = add(ea, &sum_fmt, eb, &sum_fmt, &sum_fmt);
        prop_assert_eq!(add(a, &fa, b, &fb, &out), cast(s, &sum_fmt, &out));
        let d = sub(ea, &sum_fmt, eb, &sum_fmt, &sum_fmt);
        prop_assert_eq!(sub(a, &fa, b, &fb, &out), cast(d, &sum_fmt, &out));
        let p = val(a, &fa) * val(b, &fb);
        prop_assert_eq!(mul(a, &fa, b, &fb, &out), cast(p as i64, &prod_fmt, &out));
        prop_assert_eq!(mul(a, &fa, b, &fb, &out), mul(b, &fb, a, &fa, &out));
    }

    #[test]
    fn grid_values_convert_back_to_their_code(f in format_with(1..=53, -40..100, &Rounding::ALL, &Overflow::ALL), bits in any::<i64>()) {
        let r = cast(bits, &FxFormat::signed(64, 64 - f.frac_bits()).unwrap(), &f.with_modes(Rounding::Trn, Overflow::Wrap));
        // SAT_SYM treats the most negative code as overflow, so only it may not come back.
        let want = if f.signed && f.overflow == Overflow::SatSym && r == f.raw_min() { r + 1 } else { r };
        prop_assert_eq!(from_f64(to_f64(r, &f), &f), Ok(want));
    }
}

#[test]
fn stochastic_rounding_is_seeded_and_unbiased() {
    let f: FxFormat = "ap_fixed<8,4,AP_STOCHASTIC,AP_SAT>".parse().unwrap();
    let draw = |seed| {
        let mut rng = StochasticSource::new(seed);
        (0..20_000)
            .map(|_| from_f64_stochastic(0.3 * f.lsb() + 1.0, &f, &mut rng).unwrap())
            .collect::<Vec<i64>>()
    };
    let a = draw(11);
    assert_eq!(a, draw(11));
    assert_ne!(a, draw(12));
    // 1.0 + 0.3 LSB: 16 with probability 0.7, 17 with probability 0.3.
    assert!(a.iter().all(|&r| r == 16 || r == 17));
    let up = a.iter().filter(|&&r| r == 17).count() as f64 / a.len() as f64;
    assert!((up - 0.3).abs() < 0.015, "P(up) = {up}");
    // Negative values: magnitude up (toward -inf) with the magnitude's fraction.
    let mut rng = StochasticSource::new(3);
    let neg: Vec<i64> = (0..20_000)
        .map(|_| from_f64_stochastic(-(1.0 + 0.25 * f.lsb()), &f, &mut rng).unwrap())
        .collect();
    let down = neg.iter().filter(|&&r| r == -17).count() as f64 / neg.len() as f64;
    assert!((down - 0.25).abs() < 0.015, "P(down) = {down}");
    // Without a source, STOCHASTIC rounds to nearest-even.
    assert_eq!(from_f64(1.5 * f.lsb(), &f), Ok(2));
}

#[test]
fn non_finite_inputs_are_errors_on_the_exact_path() {
    let f: FxFormat = "ap_fixed<16,6,AP_RND_CONV,AP_SAT>".parse().unwrap();
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(from_f64(x, &f).is_err());
        assert!(from_f64_exact(x, &f).is_err());
        let msg = from_f64(x, &f).unwrap_err().to_string();
        assert!(msg.contains("no fixed-point value"), "{msg}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn slice_conversion_equals_per_value_conversion((f, xs) in format_and_values(any_format())) {
        let q = quant::Quantizer::new(&f);
        let mut out = vec![0i64; xs.len()];
        let stats = q.from_f64_slice(&xs, &mut out).unwrap();
        let mut want = quant::QuantStats::default();
        for (x, o) in xs.iter().zip(&out) {
            prop_assert_eq!(Ok(*o), q.from_f64_counted(*x, &mut want));
            prop_assert_eq!(Ok(*o), from_f64_exact(*x, &f));
        }
        prop_assert_eq!(stats, want);
        let mut bad = xs.clone();
        bad.push(f64::NAN);
        out.push(0);
        prop_assert!(q.from_f64_slice(&bad, &mut out).is_err());
    }
}
