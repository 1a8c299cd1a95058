//! Fuzzing the `ap_fixed` format-string parser (what configs, `--set` and checkpoints
//! feed it) with the workspace's fuzz driver (`fuzz/`): no input panics, hangs or
//! aborts, and every format it accepts prints back to itself and converts values
//! within its range. Long runs: `scripts/fuzz`.

use std::str::FromStr;

use quant::FxFormat;
use quant::{from_f64_exact, to_f64};

const TOKENS: &[&[u8]] = &[
    b"ap_fixed<",
    b"ap_ufixed<",
    b">",
    b",",
    b"AP_RND_CONV",
    b"AP_SAT_SYM",
    b"AP_STOCHASTIC",
    b"AP_WRAP",
    b"-",
    b"64",
    b"65",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"0",
    b"\xc3\xa9",
];

#[test]
fn ap_fixed_format_strings() {
    fuzzkit::fuzz("ap_fixed", &fuzzkit::corpus("ap_fixed"), TOKENS, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        let Ok(f) = FxFormat::from_str(&text) else {
            return false;
        };
        let shown = f.to_string();
        assert_eq!(FxFormat::from_str(&shown).unwrap(), f, "{shown}");
        let (lo, hi) = (f.min_value(), f.max_value());
        assert!(lo <= hi && f.lsb() > 0.0, "{shown}");
        // Raw codes compare by value (an unsigned 64-bit format's largest code is the
        // bit pattern of u64::MAX, documented on `raw_max`).
        let codes = f.raw_value(f.raw_min())..=f.raw_value(f.raw_max());
        assert!(!codes.is_empty(), "{shown}");
        for x in [lo, hi, 0.0, f.lsb()] {
            if let Ok(raw) = from_f64_exact(x, &f) {
                assert!(codes.contains(&f.raw_value(raw)), "{shown}: {x}");
                let _ = to_f64(raw, &f);
            }
        }
        true
    });
}
