//! The `c` target: a dependency-free C99 header + source doing integer-only inference,
//! and its test bench `tb.c`.
//!
//! Codes are stored in native widths and each layer sums in the narrowest integer its
//! formats prove exact ([`super::native`]: `int32_t`, two `int32_t` input limbs, `int64_t`,
//! or the 128-bit emulation of [`C_WIDE_RUNTIME`] only where even `int64_t` cannot be
//! proven); each layer is a function of plain loops over contiguous arrays with constant
//! sizes ([`Layout`]: blocks of 64 outputs, outer products or inner products), which
//! compilers vectorize. Each cast reproduces the format's rounding and overflow mode bit
//! for bit in a function of its own without branches ([`cast_function`]), so the loops
//! of casts vectorize too. Tanh layers look their output up in the threshold tables of
//! [`super::tanh`].

use std::fmt::Write as _;

use quant::{FxFormat, Overflow, Rounding};

use super::native::{int32_input_limit, max_code, Accumulation, CInt, LayerPlan};
use super::shift_add::ShiftAddLayer;
use super::{activation_label, AccSpec, DeployedActor, DeployedLayer, TanhTable};
use crate::mlp::Activation;

/// The README's line on building and running the bench.
pub(crate) const BUILD_LINE: &str =
    "\nBuild and check: `cc -std=c99 -O2 -o tb tb.c fixar_actor.c && ./tb vectors.txt` (for speed on the build machine: `-O3 -march=native`)\n";

/// The names of the files [`sources`] returns, in its order.
pub const FILES: [&str; 3] = ["fixar_actor.h", "fixar_actor.c", "tb.c"];

/// Header, source and test bench for `actor` with its tanh tables.
pub fn sources(actor: &DeployedActor, tables: &[Option<Vec<TanhTable>>]) -> [String; 3] {
    [
        header(actor),
        source(actor, tables),
        C_TESTBENCH.to_string(),
    ]
}

fn mode_c(r: Rounding) -> &'static str {
    match r {
        Rounding::Trn => "FX_TRN",
        Rounding::TrnZero => "FX_TRN_ZERO",
        Rounding::Rnd => "FX_RND",
        Rounding::RndZero => "FX_RND_ZERO",
        Rounding::RndMinInf => "FX_RND_MIN_INF",
        Rounding::RndInf => "FX_RND_INF",
        Rounding::RndConv | Rounding::Stochastic => "FX_RND_CONV",
    }
}

fn overflow_c(o: Overflow) -> &'static str {
    match o {
        Overflow::Wrap => "FX_WRAP",
        Overflow::Sat => "FX_SAT",
        Overflow::SatZero => "FX_SAT_ZERO",
        Overflow::SatSym => "FX_SAT_SYM",
    }
}

/// `fx_cast(v, <shift>, W, signed, Q, O)` arguments for a cast from `from_frac` bits.
fn cast_args(from_frac: i32, to: &FxFormat) -> String {
    format!(
        "{}, {}, {}, {}, {}",
        from_frac - to.frac_bits(),
        to.width,
        to.signed as i32,
        mode_c(to.rounding),
        overflow_c(to.overflow)
    )
}

/// `static const <ty> <name>[n] = {...};` with 64-bit literals valid in C99 and C++.
pub(crate) fn int_array(out: &mut String, ty: &str, name: &str, values: &[i64]) {
    let _ = write!(
        out,
        "static const {ty} {name}[{}] = {{",
        values.len().max(1)
    );
    for (i, v) in values.iter().enumerate() {
        if i % 8 == 0 {
            out.push_str("\n    ");
        }
        if *v == i64::MIN {
            out.push_str("(-9223372036854775807LL - 1), ");
        } else {
            let _ = write!(out, "{v}LL, ");
        }
    }
    if values.is_empty() {
        out.push('0');
    }
    out.push_str("\n};\n");
}

/// `static const <ty> *const <t>[]` and `<c>[]` pointing at the per-column threshold and
/// code arrays `<t><j><suffix>`, `<c><j><suffix>` of one tanh layer, and their lengths
/// `static const int <n>[]`.
pub(crate) fn tanh_index(
    out: &mut String,
    ty: &str,
    [t, c, n]: [&str; 3],
    suffix: &str,
    tables: &[TanhTable],
) {
    let list = |name: &str| {
        (0..tables.len())
            .map(|j| format!("{name}{j}{suffix}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let lens: Vec<String> = tables
        .iter()
        .map(|t| t.thresholds.len().to_string())
        .collect();
    let _ = writeln!(
        out,
        "static const {ty} *const {t}[] = {{{}}};\nstatic const {ty} *const {c}[] = {{{}}};\nstatic const int {n}[] = {{{}}};",
        list(t),
        list(c),
        lens.join(", ")
    );
}

fn header(actor: &DeployedActor) -> String {
    format!(
        "/* Quantized actor exported by fixar from {origin}. Integer-only inference. */\n#ifndef FIXAR_ACTOR_H\n#define FIXAR_ACTOR_H\n#include <stdint.h>\n\n#define FIXAR_ACTOR_OBS_DIM {obs}\n#define FIXAR_ACTOR_ACT_DIM {act}\n/* Input codes: {inf}; output codes: {outf}. value = raw * 2^(I-W). */\n#define FIXAR_ACTOR_INPUT_FRAC_BITS {inb}\n#define FIXAR_ACTOR_OUTPUT_FRAC_BITS {outb}\ntypedef {obs_t} fixar_obs_t;\ntypedef {act_t} fixar_action_t;\n\n/* obs: FIXAR_ACTOR_OBS_DIM raw codes; action: FIXAR_ACTOR_ACT_DIM raw codes (written). */\nvoid fixar_actor_infer(const fixar_obs_t *obs, fixar_action_t *action);\n\n#endif\n",
        origin = actor.origin,
        obs = actor.obs_dim(),
        act = actor.act_dim(),
        inf = actor.input_fmt,
        outf = actor.output_fmt(),
        inb = actor.input_fmt.frac_bits(),
        outb = actor.output_fmt().frac_bits(),
        obs_t = CInt::holding(&actor.input_fmt).name(),
        act_t = CInt::holding(&actor.output_fmt()).name(),
    )
}

/// `out_dim x in_dim` (each output's weights contiguous, for the inner product loop) from
/// the row-major `in_dim x out_dim` codes.
fn transposed(l: &DeployedLayer) -> Vec<i64> {
    (0..l.out_dim)
        .flat_map(|j| (0..l.in_dim).map(move |i| l.weight[i * l.out_dim + j]))
        .collect()
}

/// Outputs per block of a [`blocked`] layer: four 16-lane `int32_t` vectors.
const BLOCK: usize = 64;

/// Whether layer `l` (inputs `x_t`, weights `w_t`) sums in `int32_t` lanes over blocks
/// of [`BLOCK`] outputs: 16-bit codes, an `int32_t` plan, an even K and whole blocks.
fn blocked(l: &DeployedLayer, plan: &LayerPlan, x_t: CInt, w_t: CInt) -> bool {
    matches!(
        plan.accumulation,
        Accumulation::Int32 | Accumulation::Int32Limbs { .. }
    ) && x_t == CInt::I16
        && w_t == CInt::I16
        && l.in_dim.is_multiple_of(2)
        && l.out_dim.is_multiple_of(BLOCK)
}

/// Fewest outputs for which a layer that is not [`blocked`] sums as outer products: a
/// 16-lane `int32_t` vector.
const OUTER_MIN: usize = 16;

/// How a layer's weights are laid out and its products summed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// [`blocked_weights`], summed by `fx_block_dot1`/`fx_block_dot2`.
    Blocked,
    /// Row-major `in_dim x out_dim` (the weights as they are): input by input, each
    /// input's products added to all outputs' sums at once, a loop over contiguous
    /// outputs that compilers vectorize without horizontal sums.
    Outer,
    /// [`transposed`]: one inner product per output.
    Dot,
}

/// The layout of layer `l` fed with `in_fmt` on `plan`. A layer with two input limbs and
/// a per-call check keeps one layout for both of its routes.
fn layout(l: &DeployedLayer, in_fmt: &FxFormat, plan: &LayerPlan) -> Layout {
    if blocked(l, plan, CInt::holding(in_fmt), CInt::holding(&l.weight_fmt)) {
        return Layout::Blocked;
    }
    let one_pass = match plan.accumulation {
        Accumulation::Int32 | Accumulation::Int64 => true,
        Accumulation::Int32Limbs { .. } => {
            int32_input_limit(l).is_some_and(|m| m >= max_code(in_fmt))
        }
        Accumulation::Wide => false,
    };
    if one_pass && l.out_dim >= OUTER_MIN {
        Layout::Outer
    } else {
        Layout::Dot
    }
}

/// The weights of a [`blocked`] layer as `[block][i / 2][output in block][i % 2]`: for
/// each pair of inputs, the pair's two weights of each of the block's outputs side by
/// side, so one multiply-add of 16-bit pairs into `int32_t` lanes (`vpdpwssd`) adds both
/// products to 16 outputs at once.
fn blocked_weights(l: &DeployedLayer) -> Vec<i64> {
    let (k, n) = (l.in_dim, l.out_dim);
    (0..n / BLOCK)
        .flat_map(|b| {
            (0..k / 2).flat_map(move |p| {
                (0..BLOCK).flat_map(move |t| {
                    (0..2).map(move |h| l.weight[(2 * p + h) * n + b * BLOCK + t])
                })
            })
        })
        .collect()
}

/// `2^s` as a C `int64_t` literal (`s` in 0..=62).
fn pow2_literal(s: i32) -> String {
    format!("{}LL", 1i64 << s)
}

/// The statements that sum row `w` of the weights against `x` and leave the aligned
/// accumulator (bias included) in `acc`, as `plan` proves it fits.
fn accumulate(li: usize, l: &DeployedLayer, plan: &LayerPlan) -> String {
    let k = l.in_dim;
    let (ps, bs) = (plan.product_shift, plan.bias_shift);
    let sum = match plan.accumulation {
        Accumulation::Wide => {
            return format!(
                "        fx128 acc = fx128_shl(fx128_from(L{li}_B[j]), {bs});\n        for (i = 0; i < {k}; ++i)\n            acc = fx128_add(acc, fx128_shl(fx128_from((int64_t)x[i] * w[i]), {ps}));\n"
            )
        }
        Accumulation::Int32 => format!(
            "        int32_t s = 0;\n        for (i = 0; i < {k}; ++i)\n            s += (int32_t)x[i] * w[i];\n"
        ),
        Accumulation::Int32Limbs { low_bits } => format!(
            "        int32_t s_lo = 0, s_hi = 0;\n        int64_t s;\n        for (i = 0; i < {k}; ++i) {{\n            s_lo += (int32_t)x_lo[i] * w[i];\n            s_hi += (int32_t)x_hi[i] * w[i];\n        }}\n        s = (int64_t)s_hi * {} + s_lo;\n",
            pow2_literal(low_bits as i32)
        ),
        Accumulation::Int64 => format!(
            "        int64_t s = 0;\n        for (i = 0; i < {k}; ++i)\n            s += (int64_t)x[i] * w[i];\n"
        ),
    };
    let term = |v: &str, shift: i32| match shift {
        0 => format!("(int64_t){v}"),
        s => format!("(int64_t){v} * {}", pow2_literal(s)),
    };
    format!(
        "{sum}        int64_t acc = {} + {};\n",
        term("s", ps),
        term(&format!("L{li}_B[j]"), bs)
    )
}

/// `static inline int64_t <name>(int64_t v)`: the HLS assignment of `v` (`shift` more
/// fraction bits than `to`, within the plan's native bound) to `to`, quantization then
/// overflow (`quant::cast`), specialized to `to`'s width and modes and written without
/// branches, so that a loop of casts over a
/// layer's outputs vectorizes. Rounding adds the mode's offset before the floor shift
/// (round up exactly when the dropped bits reach 2^shift): `v`'s sign and the floor's
/// lowest bit come from unsigned shifts.
fn cast_function(name: &str, shift: i32, to: &FxFormat) -> String {
    let mut s = format!("static inline int64_t {name}(int64_t v) {{\n");
    if shift <= 0 {
        let r = match shift {
            0 => "v".to_string(),
            sh => format!("v * {}", pow2_literal(-sh)),
        };
        let _ = writeln!(s, "    int64_t r = {r};");
    } else {
        let neg = "(int64_t)((uint64_t)v >> 63)";
        let half = 1i64 << (shift - 1);
        let offset = match to.rounding {
            Rounding::Trn => "0".to_string(),
            Rounding::TrnZero => format!(
                "(int64_t)(((uint64_t)0 - ((uint64_t)v >> 63)) & {}ULL)",
                (1u64 << shift) - 1
            ),
            Rounding::Rnd => format!("{half}LL"),
            Rounding::RndZero => format!("{}LL + {neg}", half - 1),
            Rounding::RndMinInf => format!("{}LL", half - 1),
            Rounding::RndInf => format!("{half}LL - {neg}"),
            Rounding::RndConv | Rounding::Stochastic => {
                format!("{}LL + (int64_t)(((uint64_t)v >> {shift}) & 1u)", half - 1)
            }
        };
        let _ = writeln!(s, "    int64_t r = fx_floor_shr(v + ({offset}), {shift});");
    }
    let w = to.width;
    let (mut mn, mx) = if to.signed {
        (-(1i64 << (w - 1)), (1i64 << (w - 1)) - 1)
    } else {
        (0, (1i64 << w) - 1)
    };
    if to.overflow == Overflow::SatSym && to.signed {
        mn = -mx;
    }
    match to.overflow {
        Overflow::Sat | Overflow::SatSym => {
            let _ = write!(
                s,
                "    r = r < {mn}LL ? {mn}LL : r;\n    r = r > {mx}LL ? {mx}LL : r;\n"
            );
        }
        Overflow::SatZero => {
            let _ = write!(
                s,
                "    r = r < {mn}LL ? 0 : r;\n    r = r > {mx}LL ? 0 : r;\n"
            );
        }
        Overflow::Wrap => {
            let _ = writeln!(
                s,
                "    r = (int64_t)((uint64_t)r & {}ULL);",
                (1u64 << w) - 1
            );
            if to.signed {
                let _ = writeln!(s, "    r = r > {mx}LL ? r - {}LL : r;", 1i64 << w);
            }
        }
    }
    s.push_str("    return r;\n}\n");
    s
}

/// Layer `li`'s specialized casts ([`cast_function`]): `fixar_cast<li>_z` of the
/// accumulator into the pre-activation format and `fixar_cast<li>_a` of the
/// pre-activation into the activation format, each where its plan runs it on `int64_t`.
fn cast_functions(li: usize, l: &DeployedLayer, in_fmt: &FxFormat, plan: &LayerPlan) -> String {
    let mut s = String::new();
    if plan.native_preact_cast {
        let acc_frac = AccSpec::of(in_fmt, l).frac;
        s.push_str(&cast_function(
            &format!("fixar_cast{li}_z"),
            acc_frac - l.preact_fmt.frac_bits(),
            &l.preact_fmt,
        ));
    }
    if plan.native_act_cast && !matches!(l.activation, Activation::Tanh { .. }) {
        s.push_str(&cast_function(
            &format!("fixar_cast{li}_a"),
            l.preact_fmt.frac_bits() - l.act_fmt.frac_bits(),
            &l.act_fmt,
        ));
    }
    s
}

/// A cast on the 128-bit emulation of `value` (an `int64_t` expression, or the `fx128`
/// accumulator when `wide_value`) from `from_frac` fraction bits into `to`, for a cast
/// whose bound `int64_t` cannot be proven to hold (else [`cast_function`]).
fn wide_cast(value: &str, wide_value: bool, from_frac: i32, to: &FxFormat) -> String {
    let args = cast_args(from_frac, to);
    if wide_value {
        format!("fx_cast({value}, {args})")
    } else {
        format!("fx_cast(fx128_from({value}), {args})")
    }
}

/// The expressions of output `j`'s pre-activation cast (of `acc`, the 128-bit
/// emulation's when `wide`) and of its activation (of `z`).
fn preact_and_act(
    li: usize,
    l: &DeployedLayer,
    in_fmt: &FxFormat,
    plan: &LayerPlan,
    wide: bool,
) -> (String, String) {
    let acc_frac = AccSpec::of(in_fmt, l).frac;
    // A native pre-activation cast implies a native accumulation ([`LayerPlan::of`]).
    let z = if plan.native_preact_cast {
        format!("fixar_cast{li}_z(acc)")
    } else {
        wide_cast("acc", wide, acc_frac, &l.preact_fmt)
    };
    let act_cast = |v: &str| {
        if plan.native_act_cast {
            format!("fixar_cast{li}_a({v})")
        } else {
            wide_cast(v, false, l.preact_fmt.frac_bits(), &l.act_fmt)
        }
    };
    let act = match &l.activation {
        Activation::Relu => act_cast("z > 0 ? z : 0"),
        Activation::Identity => act_cast("z"),
        Activation::Tanh { .. } => {
            format!("fx_table(L{li}_TANH_T[j], L{li}_TANH_C[j], L{li}_TANH_N[j], z)")
        }
    };
    (z, act)
}

/// `static void fixar_layer<li>(x, y)`: one layer on its native types. A layer whose
/// formats need two input limbs checks each call's `max|x|` against its weights' bound
/// ([`int32_input_limit`]) and sums in one `int32_t` pass when it holds.
fn layer_function(li: usize, l: &DeployedLayer, in_fmt: &FxFormat, plan: &LayerPlan) -> String {
    let limit = match plan.accumulation {
        Accumulation::Int32Limbs { .. } => int32_input_limit(l),
        _ => None,
    };
    let layout = layout(l, in_fmt, plan);
    let Some(limit) = limit else {
        return layer_function_named(li, "", l, in_fmt, plan, layout);
    };
    let single = LayerPlan {
        accumulation: Accumulation::Int32,
        ..*plan
    };
    if limit >= max_code(in_fmt) {
        // Every input code is within the bound: one pass, no check.
        return layer_function_named(li, "", l, in_fmt, &single, layout);
    }
    let x_t = CInt::holding(in_fmt).name();
    let y_t = CInt::holding(&l.act_fmt).name();
    let k = l.in_dim;
    format!(
        "{}{}static void fixar_layer{li}(const {x_t} *restrict x, {y_t} *restrict y) {{\n    /* max|x| * max_j sum_i |W[i][j]| <= INT32_MAX bounds every partial sum: one int32 pass */\n    int i;\n    int64_t m = 0;\n    for (i = 0; i < {k}; ++i) {{\n        int64_t a = x[i] < 0 ? -(int64_t)x[i] : (int64_t)x[i];\n        m = a > m ? a : m;\n    }}\n    if (m <= {limit}LL)\n        fixar_layer{li}_int32(x, y);\n    else\n        fixar_layer{li}_limbs(x, y);\n}}\n",
        layer_function_named(li, "_int32", l, in_fmt, &single, layout),
        layer_function_named(li, "_limbs", l, in_fmt, plan, layout),
    )
}

/// [`layer_function`] on `plan` as written with its weights in `layout`, named
/// `fixar_layer<li><suffix>`.
fn layer_function_named(
    li: usize,
    suffix: &str,
    l: &DeployedLayer,
    in_fmt: &FxFormat,
    plan: &LayerPlan,
    layout: Layout,
) -> String {
    let (k, n) = (l.in_dim, l.out_dim);
    let x_t = CInt::holding(in_fmt).name();
    let y_t = CInt::holding(&l.act_fmt).name();
    let w_t = CInt::holding(&l.weight_fmt).name();
    let wide = plan.accumulation == Accumulation::Wide;
    let mut s = format!(
        "static void fixar_layer{li}{suffix}(const {x_t} *restrict x, {y_t} *restrict y) {{\n    int i, j;\n"
    );
    if let Accumulation::Int32Limbs { low_bits } = plan.accumulation {
        // x = x_hi * 2^L + x_lo with 0 <= x_lo < 2^L: the unsigned conversion keeps the
        // two's-complement bits, and x - x_lo is an exact multiple of 2^L.
        let _ = write!(
            s,
            "    {x_t} x_lo[{k}], x_hi[{k}];\n    for (i = 0; i < {k}; ++i) {{\n        x_lo[i] = ({x_t})((uint32_t)x[i] & {mask}u);\n        x_hi[i] = ({x_t})((x[i] - x_lo[i]) / {div});\n    }}\n",
            mask = (1u64 << low_bits) - 1,
            div = 1u64 << low_bits,
        );
    }
    let (z, act) = preact_and_act(li, l, in_fmt, plan, wide);
    if layout == Layout::Blocked {
        let _ = write!(
            s,
            "    for (jb = 0; jb < {n}; jb += {BLOCK}) {{\n        int32_t {sums};\n        {dot};\n        for (t = 0; t < {BLOCK}; ++t) {{\n            j = jb + t;\n{acc}            int64_t z = {z};\n            y[j] = ({y_t})({act});\n        }}\n    }}\n}}\n",
            dot = match plan.accumulation {
                Accumulation::Int32Limbs { .. } => {
                    format!("fx_block_dot2(L{li}_W + jb * {k}, x_lo, x_hi, {}, s_lo, s_hi)", k / 2)
                }
                _ => format!("fx_block_dot1(L{li}_W + jb * {k}, x, {}, s_lo)", k / 2),
            },
            sums = match plan.accumulation {
                Accumulation::Int32Limbs { .. } => format!("s_lo[{BLOCK}], s_hi[{BLOCK}]"),
                _ => format!("s_lo[{BLOCK}]"),
            },
            acc = block_sum(li, plan),
        );
        // The input loop of the limb split is the only use of `i` here.
        let vars = match plan.accumulation {
            Accumulation::Int32Limbs { .. } => "i, j, jb, t",
            _ => "j, jb, t",
        };
        return s.replace("    int i, j;\n", &format!("    int {vars};\n"));
    }
    if layout == Layout::Outer {
        let s_t = match plan.accumulation {
            Accumulation::Int64 => "int64_t",
            _ => "int32_t",
        };
        let term = |v: &str, shift: i32| match shift {
            0 => format!("(int64_t){v}"),
            sh => format!("(int64_t){v} * {}", pow2_literal(sh)),
        };
        let _ = write!(
            s,
            "    {s_t} s[{n}];\n    for (j = 0; j < {n}; ++j)\n        s[j] = 0;\n    for (i = 0; i < {k}; ++i) {{\n        const {w_t} *w = L{li}_W + i * {n};\n        {s_t} xi = x[i];\n        for (j = 0; j < {n}; ++j)\n            s[j] += xi * w[j];\n    }}\n    for (j = 0; j < {n}; ++j) {{\n        int64_t acc = {} + {};\n        int64_t z = {z};\n        y[j] = ({y_t})({act});\n    }}\n}}\n",
            term("s[j]", plan.product_shift),
            term(&format!("L{li}_B[j]"), plan.bias_shift),
        );
        return s;
    }
    let _ = write!(
        s,
        "    for (j = 0; j < {n}; ++j) {{\n        const {w_t} *w = L{li}_W + j * {k};\n{acc}        int64_t z = {z};\n        y[j] = ({y_t})({act});\n    }}\n}}\n",
        acc = accumulate(li, l, plan),
    );
    s
}

/// The statements of a [`blocked`] layer that combine output `t`'s lane sums (`s_lo`,
/// and `s_hi` for input limbs) and its bias into `acc`.
fn block_sum(li: usize, plan: &LayerPlan) -> String {
    let s = match plan.accumulation {
        Accumulation::Int32Limbs { low_bits } => format!(
            "(int64_t)s_hi[t] * {} + s_lo[t]",
            pow2_literal(low_bits as i32)
        ),
        _ => "(int64_t)s_lo[t]".to_string(),
    };
    let term = |v: String, shift: i32| match shift {
        0 => v,
        sh => format!("({v}) * {}", pow2_literal(sh)),
    };
    format!(
        "            int64_t acc = {} + {};\n",
        term(s, plan.product_shift),
        term(format!("(int64_t)L{li}_B[j]"), plan.bias_shift)
    )
}

/// `static void fixar_layer<li>(x, y)` without multiplications: each output's
/// accumulator is a literal plus the offset inputs shifted by the weights' signed
/// digits ([`ShiftAddLayer`]), the same integer the multiplying layer forms.
fn shift_add_function(
    li: usize,
    l: &DeployedLayer,
    in_fmt: &FxFormat,
    plan: &LayerPlan,
    sa: &ShiftAddLayer,
) -> String {
    let (k, n) = (l.in_dim, l.out_dim);
    let x_t = CInt::holding(in_fmt).name();
    let y_t = CInt::holding(&l.act_fmt).name();
    let (z, act) = preact_and_act(li, l, in_fmt, plan, false);
    let mut s = format!(
        "static void fixar_layer{li}(const {x_t} *restrict x, {y_t} *restrict y) {{
    int i, j;
    int64_t u[{k}], acc, z;
    /* u = x - ({off}) >= 0: left shifts of non-negative values only. */
    for (i = 0; i < {k}; ++i)
        u[i] = (int64_t)x[i] - ({off}LL);
",
        off = sa.input_offset,
    );
    for (j, o) in sa.outputs.iter().enumerate().take(n) {
        let _ = write!(
            s,
            "    j = {j};
    acc = {}LL",
            o.constant
        );
        for (t, &(i, shift, neg)) in o.terms.iter().enumerate() {
            if t % 6 == 0 {
                s.push_str(
                    "
        ",
                );
            } else {
                s.push(' ');
            }
            let op = if neg { '-' } else { '+' };
            match shift {
                0 => {
                    let _ = write!(s, "{op} u[{i}]");
                }
                sh => {
                    let _ = write!(s, "{op} (u[{i}] << {sh})");
                }
            }
        }
        let _ = write!(
            s,
            ";
    z = {z};
    y[j] = ({y_t})({act});
"
        );
    }
    s.push_str(
        "}
",
    );
    s
}

/// How a layer's sums run, for the comment above it (`limit`: its weights' bound on
/// `max|x|` for one `int32` pass, see [`layer_function`]).
fn plan_label(p: &LayerPlan, limit: Option<i128>, in_fmt: &FxFormat) -> String {
    let sums = match (p.accumulation, limit) {
        (Accumulation::Int32Limbs { .. }, Some(m)) if m >= max_code(in_fmt) => {
            "int32 sums (the weights bound every input code)".to_string()
        }
        (Accumulation::Int32Limbs { low_bits }, Some(m)) => format!(
            "int32 sums where max|x| <= {m} (the weights' bound), else two input limbs (low {low_bits} bits) combined in int64"
        ),
        (Accumulation::Int32Limbs { low_bits }, None) => {
            format!("int32 sums of two input limbs (low {low_bits} bits) combined in int64")
        }
        (Accumulation::Int32, _) => "int32 sums".to_string(),
        (Accumulation::Int64, _) => "int64 sums".to_string(),
        (Accumulation::Wide, _) => "128-bit emulated sums".to_string(),
    };
    format!("{sums}; |products| <= {} by the formats", p.sum_bound)
}

/// The comment above a layer: its shape, formats, and how it sums (`how`).
fn layer_comment(l: &DeployedLayer, how: &str) -> String {
    format!(
        "\n/* layer {}: {}x{}, W {}, b {}, z {}, a = {} {}; {how} */\n",
        l.name,
        l.in_dim,
        l.out_dim,
        l.weight_fmt,
        l.bias_fmt,
        l.preact_fmt,
        activation_label(&l.activation),
        l.act_fmt,
    )
}

/// Layer `li`'s tanh threshold and code arrays and their index, if it has tables.
fn tanh_tables_c(s: &mut String, li: usize, table: Option<&[TanhTable]>) {
    let Some(ts) = table else {
        return;
    };
    for (j, t) in ts.iter().enumerate() {
        int_array(s, "int64_t", &format!("L{li}_TANH_T{j}"), &t.thresholds);
        int_array(s, "int64_t", &format!("L{li}_TANH_C{j}"), &t.codes);
    }
    tanh_index(
        s,
        "int64_t",
        [
            &format!("L{li}_TANH_T"),
            &format!("L{li}_TANH_C"),
            &format!("L{li}_TANH_N"),
        ],
        "",
        ts,
    );
}

fn source(actor: &DeployedActor, tables: &[Option<Vec<TanhTable>>]) -> String {
    let mut s = format!(
        "/* Generated by fixar from {}: do not edit. */\n#include \"fixar_actor.h\"\n\n",
        actor.origin
    );
    let mut in_fmt = actor.input_fmt;
    let plans: Vec<LayerPlan> = actor
        .layers
        .iter()
        .map(|l| {
            let p = LayerPlan::of(&in_fmt, l);
            in_fmt = l.act_fmt;
            p
        })
        .collect();
    s.push_str(&runtime(actor.shift_add));
    if plans.iter().any(LayerPlan::needs_wide) {
        s.push_str(C_WIDE_RUNTIME);
    }
    let shift_add = if actor.shift_add {
        actor.shift_add_layers().ok()
    } else {
        None
    };
    let mut in_fmt = actor.input_fmt;
    for (li, ((l, table), plan)) in actor.layers.iter().zip(tables).zip(&plans).enumerate() {
        if let Some(sa) = shift_add.as_ref().map(|v| &v[li]) {
            let terms: usize = sa.outputs.iter().map(|o| o.terms.len()).sum();
            s.push_str(&layer_comment(
                l,
                &format!(
                    "multiplier-free: {terms} shifts and adds of the offset inputs on int64_t (|terms| < 2^{})",
                    sa.bits - 1
                ),
            ));
            tanh_tables_c(&mut s, li, table.as_deref());
            s.push_str(&cast_functions(li, l, &in_fmt, plan));
            s.push_str(&shift_add_function(li, l, &in_fmt, plan, sa));
            in_fmt = l.act_fmt;
            continue;
        }
        s.push_str(&layer_comment(
            l,
            &plan_label(plan, int32_input_limit(l), &in_fmt),
        ));
        int_array(
            &mut s,
            CInt::holding(&l.weight_fmt).name(),
            &format!("L{li}_W"),
            &match layout(l, &in_fmt, plan) {
                Layout::Blocked => blocked_weights(l),
                Layout::Outer => l.weight.clone(),
                Layout::Dot => transposed(l),
            },
        );
        int_array(
            &mut s,
            CInt::holding(&l.bias_fmt).name(),
            &format!("L{li}_B"),
            &l.bias,
        );
        tanh_tables_c(&mut s, li, table.as_deref());
        s.push_str(&cast_functions(li, l, &in_fmt, plan));
        s.push_str(&layer_function(li, l, &in_fmt, plan));
        in_fmt = l.act_fmt;
    }
    s.push_str("\nvoid fixar_actor_infer(const fixar_obs_t *obs, fixar_action_t *action) {\n");
    let last = actor.layers.len() - 1;
    for (li, l) in actor.layers.iter().enumerate().take(last) {
        let _ = writeln!(
            s,
            "    {} a{li}[{}];",
            CInt::holding(&l.act_fmt).name(),
            l.out_dim
        );
    }
    for li in 0..=last {
        let x = if li == 0 {
            "obs".to_string()
        } else {
            format!("a{}", li - 1)
        };
        let y = if li == last {
            "action".to_string()
        } else {
            format!("a{li}")
        };
        let _ = writeln!(s, "    fixar_layer{li}({x}, {y});");
    }
    s.push_str("}\n");
    s
}

/// Integer-only helpers of the C target on `int64_t`: the floor shift of the casts (each
/// layer's casts are its own functions, [`cast_function`]), the blocked dot products and
/// the tanh table lookup. Right shifts of negative numbers are done on complements and
/// wrapped codes sign-extended by subtraction, so nothing relies on
/// implementation-defined behaviour.
pub const C_RUNTIME: &str = r#"#if defined(__AVX512F__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define FX_VNNI 1
#endif

/* floor(v / 2^s) for 0 < s <= 62. */
static inline int64_t fx_floor_shr(int64_t v, int s) { return v < 0 ? ~(~v >> s) : v >> s; }

/* The 64 outputs of one block of weights w (blocked: [i / 2][output][i % 2]) summed in
   int32_t lanes over `pairs` input pairs of x into s; fx_block_dot2 sums two input limbs
   against the same weights. Each lane adds a subset of its output's products, which the
   layer's plan bounds within int32_t, so the lanes never wrap. With AVX-512 VNNI, one
   vpdpwssd adds a pair of products to 16 outputs; the 4 (8) accumulators are
   independent chains. */
#ifdef FX_VNNI
static inline __m512i fx_pair(const int16_t *x) {
    return _mm512_set1_epi32((int32_t)((uint32_t)(uint16_t)x[0] | ((uint32_t)(uint16_t)x[1] << 16)));
}
#endif

static inline void fx_block_dot1(const int16_t *w, const int16_t *x, int pairs, int32_t *s) {
    int p, t;
#ifdef FX_VNNI
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (p = 0; p < pairs; ++p, w += 128) {
        __m512i xp = fx_pair(x + 2 * p);
        a0 = _mm512_dpwssd_epi32(a0, xp, _mm512_loadu_si512((const void *)w));
        a1 = _mm512_dpwssd_epi32(a1, xp, _mm512_loadu_si512((const void *)(w + 32)));
        a2 = _mm512_dpwssd_epi32(a2, xp, _mm512_loadu_si512((const void *)(w + 64)));
        a3 = _mm512_dpwssd_epi32(a3, xp, _mm512_loadu_si512((const void *)(w + 96)));
    }
    _mm512_storeu_si512((void *)s, a0);
    _mm512_storeu_si512((void *)(s + 16), a1);
    _mm512_storeu_si512((void *)(s + 32), a2);
    _mm512_storeu_si512((void *)(s + 48), a3);
    (void)t;
#else
    for (t = 0; t < 64; ++t) s[t] = 0;
    for (p = 0; p < pairs; ++p, w += 128)
        for (t = 0; t < 64; ++t)
            s[t] += (int32_t)x[2 * p] * w[2 * t] + (int32_t)x[2 * p + 1] * w[2 * t + 1];
#endif
}

static inline void fx_block_dot2(const int16_t *w, const int16_t *x_lo, const int16_t *x_hi, int pairs, int32_t *s_lo, int32_t *s_hi) {
    int p, t;
#ifdef FX_VNNI
    __m512i l0 = _mm512_setzero_si512(), l1 = l0, l2 = l0, l3 = l0, h0 = l0, h1 = l0, h2 = l0, h3 = l0;
    for (p = 0; p < pairs; ++p, w += 128) {
        __m512i xl = fx_pair(x_lo + 2 * p), xh = fx_pair(x_hi + 2 * p);
        __m512i w0 = _mm512_loadu_si512((const void *)w), w1 = _mm512_loadu_si512((const void *)(w + 32));
        __m512i w2 = _mm512_loadu_si512((const void *)(w + 64)), w3 = _mm512_loadu_si512((const void *)(w + 96));
        l0 = _mm512_dpwssd_epi32(l0, xl, w0); h0 = _mm512_dpwssd_epi32(h0, xh, w0);
        l1 = _mm512_dpwssd_epi32(l1, xl, w1); h1 = _mm512_dpwssd_epi32(h1, xh, w1);
        l2 = _mm512_dpwssd_epi32(l2, xl, w2); h2 = _mm512_dpwssd_epi32(h2, xh, w2);
        l3 = _mm512_dpwssd_epi32(l3, xl, w3); h3 = _mm512_dpwssd_epi32(h3, xh, w3);
    }
    _mm512_storeu_si512((void *)s_lo, l0); _mm512_storeu_si512((void *)(s_lo + 16), l1);
    _mm512_storeu_si512((void *)(s_lo + 32), l2); _mm512_storeu_si512((void *)(s_lo + 48), l3);
    _mm512_storeu_si512((void *)s_hi, h0); _mm512_storeu_si512((void *)(s_hi + 16), h1);
    _mm512_storeu_si512((void *)(s_hi + 32), h2); _mm512_storeu_si512((void *)(s_hi + 48), h3);
    (void)t;
#else
    for (t = 0; t < 64; ++t) s_lo[t] = s_hi[t] = 0;
    for (p = 0; p < pairs; ++p, w += 128)
        for (t = 0; t < 64; ++t) {
            s_lo[t] += (int32_t)x_lo[2 * p] * w[2 * t] + (int32_t)x_lo[2 * p + 1] * w[2 * t + 1];
            s_hi[t] += (int32_t)x_hi[2 * p] * w[2 * t] + (int32_t)x_hi[2 * p + 1] * w[2 * t + 1];
        }
#endif
}

/* Step function: codes[i] for inputs in [thr[i], thr[i+1]). */
static inline int64_t fx_table(const int64_t *thr, const int64_t *codes, int n, int64_t z) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (thr[mid] <= z) lo = mid + 1; else hi = mid;
    }
    return codes[lo > 0 ? lo - 1 : 0];
}
"#;

/// [`C_RUNTIME`], without the blocked dot products (the only weight multiplications in
/// it) when every layer is multiplier-free.
fn runtime(shift_add: bool) -> String {
    let block = C_RUNTIME.find("/* The 64 outputs of one block");
    let table = C_RUNTIME.find("/* Step function:");
    match (shift_add, block, table) {
        (true, Some(a), Some(b)) => format!("{}{}", &C_RUNTIME[..a], &C_RUNTIME[b..]),
        _ => C_RUNTIME.to_string(),
    }
}

/// The 128-bit emulation, emitted only for layers whose sums or casts `int64_t` cannot be
/// proven to hold ([`LayerPlan`]): a two-limb accumulator and the cast from it, with the
/// rounding and overflow modes as run-time arguments.
pub const C_WIDE_RUNTIME: &str = r#"
enum { FX_TRN, FX_TRN_ZERO, FX_RND, FX_RND_ZERO, FX_RND_MIN_INF, FX_RND_INF, FX_RND_CONV };
enum { FX_WRAP, FX_SAT, FX_SAT_ZERO, FX_SAT_SYM };

/* Whether quantization mode q rounds floor(v / 2^s) up, from v's sign, whether the
   dropped bits are non-zero, above or at half an LSB, and the floor's lowest bit. */
static inline int fx_round_up(int q, int neg, int nz, int gt, int tie, int odd) {
    switch (q) {
    case FX_TRN: return 0;
    case FX_TRN_ZERO: return neg && nz;
    case FX_RND: return gt || tie;
    case FX_RND_ZERO: return gt || (tie && neg);
    case FX_RND_MIN_INF: return gt;
    case FX_RND_INF: return gt || (tie && !neg);
    default: return gt || (tie && odd);
    }
}

typedef struct { uint64_t lo; uint64_t hi; } fx128; /* two's complement */

static fx128 fx128_from(int64_t v) { fx128 r; r.lo = (uint64_t)v; r.hi = v < 0 ? ~(uint64_t)0 : 0; return r; }
static int fx128_neg_p(fx128 a) { return (a.hi >> 63) != 0; }
static fx128 fx128_add(fx128 a, fx128 b) { fx128 r; r.lo = a.lo + b.lo; r.hi = a.hi + b.hi + (r.lo < a.lo); return r; }
static fx128 fx128_not(fx128 a) { a.lo = ~a.lo; a.hi = ~a.hi; return a; }
static fx128 fx128_neg(fx128 a) { return fx128_add(fx128_not(a), fx128_from(1)); }
static fx128 fx128_sub(fx128 a, fx128 b) { return fx128_add(a, fx128_neg(b)); }
static int fx128_eq(fx128 a, fx128 b) { return a.lo == b.lo && a.hi == b.hi; }
static int fx128_lt(fx128 a, fx128 b) { /* signed */
    int na = fx128_neg_p(a), nb = fx128_neg_p(b);
    if (na != nb) return na;
    return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo);
}
static fx128 fx128_shl(fx128 a, int s) { /* 0 <= s < 128 */
    fx128 r;
    if (s == 0) return a;
    if (s >= 64) { r.hi = a.lo << (s - 64); r.lo = 0; }
    else { r.hi = (a.hi << s) | (a.lo >> (64 - s)); r.lo = a.lo << s; }
    return r;
}
static fx128 fx128_shr_logical(fx128 a, int s) { /* 0 <= s < 128 */
    fx128 r;
    if (s == 0) return a;
    if (s >= 64) { r.lo = a.hi >> (s - 64); r.hi = 0; }
    else { r.lo = (a.lo >> s) | (a.hi << (64 - s)); r.hi = a.hi >> s; }
    return r;
}
static fx128 fx128_floor_shr(fx128 a, int s) { /* floor(a / 2^s) */
    if (fx128_neg_p(a)) return fx128_not(fx128_shr_logical(fx128_not(a), s));
    return fx128_shr_logical(a, s);
}
static fx128 fx128_pow2(int s) { return fx128_shl(fx128_from(1), s); }

/* Assigns v (a value with `shift` more fraction bits than the target) to a target of
   `width` bits: quantization first, then overflow, as HLS ap_fixed does. */
static int64_t fx_cast(fx128 v, int shift, int width, int is_signed, int q, int o) {
    fx128 r, mx, mn;
    if (shift <= 0) {
        r = fx128_shl(v, -shift);
    } else {
        int neg = fx128_neg_p(v);
        fx128 fl = fx128_floor_shr(v, shift);
        fx128 rem = fx128_sub(v, fx128_shl(fl, shift));
        fx128 half = fx128_pow2(shift - 1);
        int nz = !(rem.lo == 0 && rem.hi == 0);
        int up = fx_round_up(q, neg, nz, fx128_lt(half, rem), fx128_eq(rem, half), (int)(fl.lo & 1u));
        r = up ? fx128_add(fl, fx128_from(1)) : fl;
    }
    if (is_signed) { mx = fx128_sub(fx128_pow2(width - 1), fx128_from(1)); mn = fx128_neg(fx128_pow2(width - 1)); }
    else { mx = fx128_sub(fx128_pow2(width), fx128_from(1)); mn = fx128_from(0); }
    if (o == FX_SAT_SYM && is_signed) mn = fx128_neg(mx);
    if (fx128_lt(r, mn) || fx128_lt(mx, r)) {
        switch (o) {
        case FX_SAT: case FX_SAT_SYM: r = fx128_lt(r, mn) ? mn : mx; break;
        case FX_SAT_ZERO: r = fx128_from(0); break;
        default: { /* wrap: keep the low `width` bits */
            uint64_t mask = width >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << width) - 1);
            uint64_t bits = r.lo & mask;
            if (is_signed && width < 64 && ((bits >> (width - 1)) & 1u)) return (int64_t)(bits | ~mask);
            return (int64_t)bits;
        }
        }
    }
    return (int64_t)r.lo;
}
"#;

/// The test bench: runs `fixar_actor_infer` on `vectors.txt` and compares raw outputs.
pub const C_TESTBENCH: &str = r#"/* Test bench: runs the exported actor on vectors.txt and compares raw outputs. */
#include <stdio.h>
#include <stdlib.h>
#include "fixar_actor.h"

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "vectors.txt";
    FILE *f = fopen(path, "r");
    long n, in_dim, out_dim, t, i;
    long passed = 0, failed = 0;
    fixar_obs_t x[FIXAR_ACTOR_OBS_DIM] = {0};
    fixar_action_t got[FIXAR_ACTOR_ACT_DIM] = {0};
    long long want[FIXAR_ACTOR_ACT_DIM] = {0};
    if (!f) { fprintf(stderr, "cannot open %s\n", path); return 2; }
    if (fscanf(f, "%ld %ld %ld", &n, &in_dim, &out_dim) != 3 || in_dim != FIXAR_ACTOR_OBS_DIM || out_dim != FIXAR_ACTOR_ACT_DIM) {
        fprintf(stderr, "%s: bad header\n", path); return 2;
    }
    for (t = 0; t < n; ++t) {
        int ok = 1;
        for (i = 0; i < in_dim; ++i) { long long v; if (fscanf(f, "%lld", &v) != 1) { fprintf(stderr, "short file\n"); return 2; } x[i] = (fixar_obs_t)v; }
        for (i = 0; i < out_dim; ++i) { long long v; if (fscanf(f, "%lld", &v) != 1) { fprintf(stderr, "short file\n"); return 2; } want[i] = v; }
        fixar_actor_infer(x, got);
        for (i = 0; i < out_dim; ++i) ok &= got[i] == want[i];
        if (ok) ++passed;
        else {
            if (failed < 5) {
                fprintf(stderr, "vector %ld: mismatch", t);
                for (i = 0; i < out_dim; ++i) fprintf(stderr, " got %lld want %lld;", (long long)got[i], want[i]);
                fprintf(stderr, "\n");
            }
            ++failed;
        }
    }
    fclose(f);
    printf("%ld passed, %ld failed\n", passed, failed);
    return failed ? 1 : 0;
}
"#;

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::super::synthetic::{
        run_bench, scratch, synthetic_actor, synthetic_pow2_actor, synthetic_wide_actor,
    };
    use super::super::{export, Target};

    fn corrupt_first_output(dir: &Path) {
        let path = dir.join("vectors.txt");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let mut fields: Vec<i64> = lines[4].split(' ').map(|v| v.parse().unwrap()).collect();
        *fields.last_mut().unwrap() += 1;
        lines[4] = fields
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn c_export_compiles_with_the_system_compiler_and_matches_the_golden_path() {
        let actors = [1u64, 2, 3]
            .map(|seed| (format!("c{seed}"), synthetic_actor(seed)))
            .into_iter()
            .chain([4u64, 5].map(|seed| (format!("wide{seed}"), synthetic_wide_actor(seed))));
        for (name, actor) in actors {
            let dir = scratch(&name);
            let summary = export(&actor, Target::C, &dir, 400).unwrap();
            assert_eq!(summary.vectors, 400);
            // The vectorizing build too: nothing in the code may lean on undefined behaviour.
            for opt in [vec!["-O2"], vec!["-O3", "-march=native"]] {
                let mut cc = Command::new("cc");
                cc.args(["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"])
                    .args(&opt)
                    .args(["-o", "tb", "tb.c", "fixar_actor.c"]);
                let (ok, stdout) = run_bench(&dir, &mut cc);
                assert!(
                    ok && stdout.trim() == "400 passed, 0 failed",
                    "{name} {opt:?}: {stdout}"
                );
            }
            corrupt_first_output(&dir);
            let run = Command::new(dir.join("tb"))
                .arg("vectors.txt")
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                !run.status.success(),
                "a wrong expected value must fail the bench"
            );
            assert!(String::from_utf8_lossy(&run.stdout).contains("399 passed, 1 failed"));
        }
    }

    #[test]
    fn each_layer_sums_on_the_route_its_formats_prove_and_only_wide_layers_pull_in_the_emulation() {
        let narrow = super::source(
            &synthetic_actor(1),
            &synthetic_actor(1).tanh_tables().unwrap(),
        );
        assert_eq!(narrow.matches("int32 sums;").count(), 2, "{narrow}");
        assert_eq!(narrow.matches("int64 sums;").count(), 1);
        assert!(!narrow.contains("fx128"), "no layer needs the emulation");
        assert_eq!(narrow.matches("fx_block_dot1(L1_W").count(), 1, "{narrow}");
        assert!(narrow.contains("static const int16_t L1_W[1024]"));
        // 16 outputs or more, not blocked: outer products (fc1 in int32, the wide
        // actor's fc2 in int64); fewer: one inner product per output (fc3).
        assert!(narrow.contains("        int32_t xi = x[i];\n        for (j = 0; j < 16; ++j)"));
        assert!(
            narrow.contains("const int32_t *w = L2_W + j * 64;"),
            "{narrow}"
        );
        assert!(!narrow.contains("fx_cast64") && narrow.contains("fixar_cast1_a(z > 0 ? z : 0)"));
        let actor = synthetic_wide_actor(4);
        let wide = super::source(&actor, &actor.tanh_tables().unwrap());
        for label in [
            "else two input limbs",
            "int64 sums;",
            "128-bit emulated sums;",
        ] {
            assert_eq!(wide.matches(label).count(), 1, "{label}");
        }
        assert!(wide.contains("typedef struct { uint64_t lo; uint64_t hi; } fx128;"));
        assert!(wide.contains("        int64_t xi = x[i];\n        for (j = 0; j < 16; ++j)"));
        assert_eq!(wide.matches("fx_block_dot2(L0_W").count(), 1);
        // ... and its one-pass route where the call's inputs allow it; the golden bench
        // (`c_export_compiles_with_the_system_compiler_and_matches_the_golden_path`)
        // takes both routes.
        assert_eq!(wide.matches("fx_block_dot1(L0_W").count(), 1, "{wide}");
        let limit = super::int32_input_limit(&actor.layers[0]).unwrap();
        assert!(wide.contains(&format!("if (m <= {limit}LL)")));
        let inputs =
            super::super::vectors::test_inputs(&actor, 400, super::super::vectors::VECTOR_SEED);
        let max = |x: &Vec<i64>| x.iter().map(|v| v.unsigned_abs() as i128).max().unwrap();
        let one = inputs.iter().filter(|x| max(x) <= limit).count();
        assert!(
            one > 0 && one < inputs.len(),
            "{one} of 400 vectors in one pass"
        );
        // Weights small enough for every input code: one pass, no check, no limbs.
        let mut small = synthetic_wide_actor(4);
        for w in &mut small.layers[0].weight {
            *w /= 64;
        }
        let src = super::source(&small, &small.tanh_tables().unwrap());
        assert!(!src.contains("fixar_layer0_limbs") && !src.contains("fx_block_dot2(L0_W"));
        assert_eq!(src.matches("fx_block_dot1(L0_W").count(), 1);
    }

    /// Every specialized cast ([`super::cast_function`]) against the golden cast
    /// (`quant::exact::cast`): each rounding and overflow mode, signed and unsigned
    /// targets of 2 to 32 bits, shifts that add fraction bits, keep them, or drop 1 to 62,
    /// on values across the native range: ties and their neighbours, the saturation
    /// bounds, the range's ends and random magnitudes of every size. Compiled with the
    /// same flags as the bench, at `-O2` and vectorizing.
    #[test]
    fn each_specialized_cast_equals_the_golden_cast() {
        use quant::{FxFormat, Overflow, Rounding};
        use std::fmt::Write as _;
        let mut state = 0x5eed_u64;
        let mut draw = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state
        };
        let (mut fns, mut table, mut names) = (String::new(), String::new(), Vec::new());
        let mut cases = 0usize;
        // HLS's seven rounding modes (stochastic rounding deploys as AP_RND_CONV).
        for &rounding in &Rounding::ALL[..7] {
            for overflow in Overflow::ALL {
                for (signed, width) in [(true, 2), (true, 16), (true, 32), (false, 3), (false, 32)]
                {
                    for shift in [-7, 0, 1, 2, 14, 37, 62] {
                        let to = FxFormat::new(signed, width, 3, rounding, overflow).unwrap();
                        let from = FxFormat::new(
                            true,
                            64,
                            64 - (to.frac_bits() + shift),
                            Rounding::Trn,
                            Overflow::Wrap,
                        )
                        .unwrap();
                        let name = format!("fc{}", names.len());
                        fns.push_str(&super::cast_function(&name, shift, &to));
                        let limit: i64 = if shift >= 0 {
                            1 << 62
                        } else {
                            (1 << 62) >> -shift
                        };
                        let mut values = vec![0, 1, -1, limit, -limit, limit - 1, 1 - limit];
                        let step = if shift > 0 { 1i64 << shift } else { 1 };
                        let half = step / 2;
                        for code in [to.raw_min(), to.raw_max(), 0, 1, -1, 5, -6] {
                            for extra in [0, 1, 2] {
                                let base = (code + extra).checked_mul(step);
                                for d in [0, 1, -1, half, half - 1, half + 1, -half, -half - 1] {
                                    if let Some(v) = base.and_then(|b| b.checked_add(d)) {
                                        values.push(v);
                                    }
                                }
                            }
                        }
                        for _ in 0..40 {
                            let bits = draw() % 63;
                            let v = (draw() >> 1) as i64 >> (62 - bits);
                            values.push(if draw() % 2 == 0 { v } else { -v });
                        }
                        for v in values
                            .into_iter()
                            .filter(|v| v.unsigned_abs() <= limit as u64)
                        {
                            let want = quant::cast(v, &from, &to);
                            let _ = writeln!(table, "    {{{}, {v}LL, {want}LL}},", names.len());
                            cases += 1;
                        }
                        names.push(name);
                    }
                }
            }
        }
        let src = format!(
            "#include <stdint.h>\n#include <stdio.h>\n{}{fns}\ntypedef int64_t (*fx_fn)(int64_t);\nstatic const fx_fn FNS[] = {{{}}};\nstatic const struct {{ int f; int64_t v, want; }} CASES[] = {{\n{table}}};\nint main(void) {{\n    long i, n = (long)(sizeof CASES / sizeof CASES[0]), bad = 0;\n    for (i = 0; i < n; ++i) {{\n        int64_t got = FNS[CASES[i].f](CASES[i].v);\n        if (got != CASES[i].want) {{\n            if (bad < 5) printf(\"fc%d(%lld): got %lld want %lld\\n\", CASES[i].f, (long long)CASES[i].v, (long long)got, (long long)CASES[i].want);\n            ++bad;\n        }}\n    }}\n    printf(\"%ld cases, %ld wrong\\n\", n, bad);\n    return bad != 0;\n}}\n",
            super::runtime(false),
            names.join(", "),
        );
        let dir = scratch("casts");
        std::fs::write(dir.join("casts.c"), src).unwrap();
        for opt in [vec!["-O2"], vec!["-O3", "-march=native"]] {
            let out = Command::new("cc")
                .args(["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"])
                .args(&opt)
                .args(["-o", "casts", "casts.c"])
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let run = Command::new(dir.join("casts")).output().unwrap();
            let stdout = String::from_utf8_lossy(&run.stdout);
            assert!(
                run.status.success() && stdout.trim() == format!("{cases} cases, 0 wrong"),
                "{opt:?}: {stdout}"
            );
        }
        assert!(cases > 40_000, "{cases}");
    }

    /// The multiplications in the generated layer functions: every `*` outside comments
    /// and pointer declarations (`*restrict`, `*w`).
    pub(crate) fn multiplications_in(src: &str, start: &str) -> usize {
        let mut count = 0;
        let mut rest = src;
        while let Some(at) = rest.find(start) {
            let body = &rest[at..];
            let end = body.find("\n}\n").map_or(body.len(), |e| e + 3);
            let mut code = body[..end].to_string();
            while let (Some(a), Some(b)) = (code.find("/*"), code.find("*/")) {
                code.replace_range(a..b + 2, "");
            }
            let code = code.replace("*restrict", "").replace(" *w", "");
            count += code.matches('*').count();
            rest = &body[end..];
        }
        count
    }

    #[test]
    fn multiplier_free_c_multiplies_no_weight_compiles_cleanly_and_matches_the_golden_path() {
        for seed in [1u64, 3] {
            let actor = synthetic_pow2_actor(seed, 2);
            let mut multiplying = actor.clone();
            multiplying.shift_add = false;
            let dirs = [
                (scratch(&format!("sa{seed}")), &actor),
                (scratch(&format!("sa-mul{seed}")), &multiplying),
            ];
            for (dir, a) in &dirs {
                export(a, Target::C, dir, 300).unwrap();
                let mut cc = Command::new("cc");
                cc.args([
                    "-std=c99",
                    "-Wall",
                    "-Wextra",
                    "-pedantic",
                    "-Werror",
                    "-O2",
                ])
                .args(["-o", "tb", "tb.c", "fixar_actor.c"]);
                let (ok, stdout) = run_bench(dir, &mut cc);
                assert!(
                    ok && stdout.trim() == "300 passed, 0 failed",
                    "seed {seed} shift-add {}: {stdout}",
                    a.shift_add
                );
            }
            let src = std::fs::read_to_string(dirs[0].0.join("fixar_actor.c")).unwrap();
            let mul = std::fs::read_to_string(dirs[1].0.join("fixar_actor.c")).unwrap();
            // The scan finds the multiplying code's products, and none in the shift-add code.
            assert!(multiplications_in(&mul, "static void fixar_layer") >= 3);
            assert_eq!(
                multiplications_in(&src, "static void fixar_layer"),
                0,
                "{src}"
            );
            assert!(!src.contains("_W["), "no weight array is left");
            assert!(!src.contains("fx_block_dot") && mul.contains("fx_block_dot1"));
            // One shift-and-add term per signed digit of each weight.
            // (each layer's declaration and offset loop name `u[` twice more)
            let terms = src.matches("u[").count() - 2 * actor.layers.len();
            assert_eq!(terms as u64, actor.op_counts(true).shifts);
        }
    }
}
