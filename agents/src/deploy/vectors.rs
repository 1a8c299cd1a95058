//! Test vectors shipped with every export: deterministic inputs covering the input format
//! and the raw outputs the golden integer inference gives for them (`vectors.txt`).

use quant::{Overflow, Rounding};

use super::{DeployedActor, TanhTable};

/// Deterministic test inputs covering the input format: mostly values of typical
/// observation size, plus the extremes of the format.
pub fn test_inputs(actor: &DeployedActor, count: usize, seed: u64) -> Vec<Vec<i64>> {
    let f = actor.input_fmt;
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let span = (f.raw_max() as i128 - f.raw_min() as i128 + 1) as u128;
    (0..count)
        .map(|i| {
            (0..actor.obs_dim())
                .map(|_| match i {
                    0 => f.raw_min(),
                    1 => f.raw_max(),
                    2 => 0,
                    _ if i % 4 == 3 => {
                        (f.raw_min() as i128 + (next() as u128 % span) as i128) as i64
                    }
                    _ => {
                        // Typical observations: |x| up to about 8.
                        let v = ((next() >> 11) as f64 / (1u64 << 53) as f64) * 16.0 - 8.0;
                        quant::from_f64(v, &f.with_modes(Rounding::RndConv, Overflow::Sat))
                            .expect("finite")
                    }
                })
                .collect()
        })
        .collect()
}

/// Seed of the exported test inputs (fixed, so an export is reproducible).
pub(super) const VECTOR_SEED: u64 = 0x5eed;

/// `vectors.txt`: a header line `count obs_dim act_dim`, then per vector the raw input
/// codes followed by the expected raw output codes.
pub(crate) fn vectors_txt(
    actor: &DeployedActor,
    tables: &[Option<Vec<TanhTable>>],
    count: usize,
) -> String {
    let inputs = test_inputs(actor, count, VECTOR_SEED);
    let mut text = format!("{} {} {}\n", inputs.len(), actor.obs_dim(), actor.act_dim());
    for x in &inputs {
        let y = actor.infer_raw(x, tables);
        let line: Vec<String> = x.iter().chain(y.iter()).map(|v| v.to_string()).collect();
        text.push_str(&line.join(" "));
        text.push('\n');
    }
    text
}
