//! `fixar export`: the quantized actor leaves the tool as code hardware people use.
//!
//! Two targets, one structure:
//! - `c`: a dependency-free C99 header + source doing integer-only inference. Products of
//!   raw codes are exact in 64 bits (every width ≤ 32), sums are accumulated exactly in a
//!   two-limb 128-bit accumulator, and each cast reproduces the format's rounding and
//!   overflow mode bit for bit.
//! - `hls`: HLS C++ with one `ap_fixed` typedef per tensor and an accumulator type wide
//!   enough to be exact, so the HLS assignment semantics do the same casts.
//!
//! Both come with test vectors (inputs and the expected raw outputs computed by `quant`'s
//! golden integer path, [`DeployedActor::infer_raw`]) and a test bench (`tb.c`, `tb.cpp`)
//! that prints `N passed, M failed` and exits non-zero on any mismatch.
//!
//! The output layer's `a = cast(tanh(z) * scale + offset)` (the agent's action squashing,
//! per output column) is exported as a threshold table: the output code is a step function
//! of the input code, so the table lists, for every output code, the smallest input code
//! that produces it (computed with `quant::from_f64` on the double-precision `tanh`). That
//! is exact by construction and integer-only, but it needs one entry per output code: an
//! output format with more than [`MAX_TANH_FRAC_BITS`] fraction bits is refused.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use quant::{FxFormat, Overflow, Rounding};
use serde::{Deserialize, Serialize};

use crate::failure::config_error;

/// Largest fraction width of a tanh output format that the exporter tabulates
/// (2^(F+1) + 1 table entries).
pub const MAX_TANH_FRAC_BITS: i32 = 20;

/// Activation after a layer's pre-activation cast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    Tanh,
    Identity,
}

/// One fully connected layer with raw integer parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeployedLayer {
    pub name: String,
    pub in_dim: usize,
    pub out_dim: usize,
    /// Row-major `in_dim x out_dim` (y = x W + b), raw codes of `weight_fmt`.
    pub weight: Vec<i64>,
    pub weight_fmt: FxFormat,
    pub bias: Vec<i64>,
    pub bias_fmt: FxFormat,
    /// Format of z = x W + b (one cast after exact accumulation).
    pub preact_fmt: FxFormat,
    pub activation: Activation,
    /// For tanh layers: a = cast(tanh(z) * scale[j] + offset[j]) per output column j.
    pub tanh_scale: Vec<f64>,
    pub tanh_offset: Vec<f64>,
    /// Format of act(z).
    pub act_fmt: FxFormat,
}

/// A quantized actor as the hardware runs it: raw codes and formats only.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeployedActor {
    /// Where it came from (run directory, rung), for the generated file headers.
    pub origin: String,
    pub input_fmt: FxFormat,
    pub layers: Vec<DeployedLayer>,
}

/// Export target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    C,
    Hls,
}

/// One tanh table: `codes[i]` is the output for inputs in `[thresholds[i], thresholds[i+1])`.
#[derive(Clone, Debug, PartialEq)]
pub struct TanhTable {
    pub thresholds: Vec<i64>,
    pub codes: Vec<i64>,
}

/// The tabulated `cast(tanh(z) * scale + offset)` from `in_fmt` codes to `out_fmt` codes
/// (see the module docs); `scale` must be positive.
pub fn tanh_table(
    in_fmt: &FxFormat,
    out_fmt: &FxFormat,
    scale: f64,
    offset: f64,
) -> Result<TanhTable> {
    if !(scale > 0.0 && scale.is_finite() && offset.is_finite()) {
        bail!("tanh scale {scale} and offset {offset}: the scale must be positive and both finite");
    }
    if out_fmt.frac_bits() > MAX_TANH_FRAC_BITS {
        bail!(
            "tanh output format {out_fmt} has {} fraction bits; the exported tanh table needs one entry per output code, so at most {MAX_TANH_FRAC_BITS} fraction bits are supported (export a narrower QAT rung)",
            out_fmt.frac_bits()
        );
    }
    if out_fmt.rounding == Rounding::Stochastic {
        bail!("tanh output format {out_fmt} rounds stochastically; deployed inference needs a deterministic rounding mode");
    }
    // Rounding only (no overflow) is monotone in the input: find its steps by binary
    // search, then apply the output format's overflow to each step's code.
    let int_bits = quant::int_bits_for_range(scale + offset.abs(), 64, 2);
    let unbounded = FxFormat::new(
        true,
        (out_fmt.frac_bits() + int_bits).clamp(2, 64) as u32,
        int_bits,
        out_fmt.rounding,
        Overflow::Sat,
    )?;
    let rounded = |z: i64| -> i64 {
        let t = quant::to_f64(z, in_fmt).tanh() * scale + offset;
        quant::from_f64(t, &unbounded).expect("tanh is finite")
    };
    let final_code = |r: i64| quant::cast(r, &unbounded, out_fmt);
    let (lo, hi) = (in_fmt.raw_min(), in_fmt.raw_max());
    let mut thresholds = vec![lo];
    let mut steps = vec![rounded(lo)];
    let last = rounded(hi);
    while *steps.last().unwrap() < last {
        let cur = *steps.last().unwrap();
        // Smallest z in (prev, hi] with rounded(z) > cur.
        let (mut a, mut b) = (*thresholds.last().unwrap(), hi);
        while b - a > 1 {
            let mid = a + (b - a) / 2;
            if rounded(mid) > cur {
                b = mid;
            } else {
                a = mid;
            }
        }
        thresholds.push(b);
        steps.push(rounded(b));
    }
    let codes = steps.into_iter().map(final_code).collect();
    Ok(TanhTable { thresholds, codes })
}

impl TanhTable {
    pub fn lookup(&self, z: i64) -> i64 {
        let i = self.thresholds.partition_point(|t| *t <= z);
        self.codes[i.saturating_sub(1)]
    }
}

impl DeployedActor {
    pub fn obs_dim(&self) -> usize {
        self.layers.first().map_or(0, |l| l.in_dim)
    }

    pub fn act_dim(&self) -> usize {
        self.layers.last().map_or(0, |l| l.out_dim)
    }

    pub fn output_fmt(&self) -> FxFormat {
        self.layers.last().expect("validated").act_fmt
    }

    /// Checks shapes and that every format is one the exported code computes exactly.
    pub fn validate(&self) -> Result<()> {
        if self.layers.is_empty() {
            bail!("the actor has no layers");
        }
        let check_fmt = |what: &str, f: &FxFormat| -> Result<()> {
            if f.rounding == Rounding::Stochastic {
                bail!(
                    "{what}: {f} rounds stochastically; export needs a deterministic rounding mode"
                );
            }
            let max_w = if f.signed { 32 } else { 31 };
            if f.width > max_w {
                bail!(
                    "{what}: {f} is wider than the {max_w} bits the exported integer code supports"
                );
            }
            Ok(())
        };
        check_fmt("input", &self.input_fmt)?;
        let mut dim = self.obs_dim();
        for l in &self.layers {
            if l.in_dim != dim {
                bail!(
                    "layer {}: input size {} does not follow the previous output size {dim}",
                    l.name,
                    l.in_dim
                );
            }
            if l.weight.len() != l.in_dim * l.out_dim || l.bias.len() != l.out_dim {
                bail!(
                    "layer {}: parameter sizes do not match {}x{}",
                    l.name,
                    l.in_dim,
                    l.out_dim
                );
            }
            for (what, f) in [
                ("weights", &l.weight_fmt),
                ("biases", &l.bias_fmt),
                ("pre-activations", &l.preact_fmt),
                ("activations", &l.act_fmt),
            ] {
                check_fmt(&format!("layer {} {what}", l.name), f)?;
            }
            let acc = AccSpec::of_layer(l, self.layer_input_fmt(l));
            if acc.bits > 126 {
                bail!("layer {}: exact accumulation needs {} bits, more than the 126 the exported code holds", l.name, acc.bits);
            }
            if l.activation == Activation::Tanh
                && (l.tanh_scale.len() != l.out_dim || l.tanh_offset.len() != l.out_dim)
            {
                bail!(
                    "layer {}: tanh needs one scale and offset per output ({})",
                    l.name,
                    l.out_dim
                );
            }
            dim = l.out_dim;
        }
        Ok(())
    }

    fn layer_input_fmt(&self, layer: &DeployedLayer) -> FxFormat {
        let idx = self
            .layers
            .iter()
            .position(|l| std::ptr::eq(l, layer))
            .expect("own layer");
        if idx == 0 {
            self.input_fmt
        } else {
            self.layers[idx - 1].act_fmt
        }
    }

    /// The golden integer inference: raw input codes in, raw action codes out, computed with
    /// `quant`'s exact arithmetic.
    pub fn infer_raw(&self, x: &[i64], tanh: &[Option<Vec<TanhTable>>]) -> Vec<i64> {
        let mut cur = x.to_vec();
        let mut cur_fmt = self.input_fmt;
        for (l, table) in self.layers.iter().zip(tanh) {
            let z = quant::golden_gemm(
                &cur,
                &cur_fmt,
                &l.weight,
                &l.weight_fmt,
                Some((&l.bias, &l.bias_fmt)),
                1,
                l.in_dim,
                l.out_dim,
                &l.preact_fmt,
            );
            cur = z
                .iter()
                .enumerate()
                .map(|(j, &zi)| match l.activation {
                    Activation::Relu => quant::cast(zi.max(0), &l.preact_fmt, &l.act_fmt),
                    Activation::Identity => quant::cast(zi, &l.preact_fmt, &l.act_fmt),
                    Activation::Tanh => table.as_ref().expect("tanh tables")[j].lookup(zi),
                })
                .collect();
            cur_fmt = l.act_fmt;
        }
        cur
    }

    /// Tanh tables, one per output column, for every tanh layer (None for the others).
    pub fn tanh_tables(&self) -> Result<Vec<Option<Vec<TanhTable>>>> {
        self.layers
            .iter()
            .map(|l| match l.activation {
                Activation::Tanh => (0..l.out_dim)
                    .map(|j| {
                        tanh_table(&l.preact_fmt, &l.act_fmt, l.tanh_scale[j], l.tanh_offset[j])
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Some)
                    .with_context(|| format!("layer {}", l.name)),
                _ => Ok(None),
            })
            .collect()
    }
}

/// The exact accumulator of a layer: fraction bits and the bits its magnitude can need.
struct AccSpec {
    frac: i32,
    int_bits: i32,
    bits: i32,
}

impl AccSpec {
    fn of(x: &FxFormat, w: &FxFormat, b: &FxFormat, terms: usize) -> Self {
        let frac = (x.frac_bits() + w.frac_bits()).max(b.frac_bits());
        let grow = (usize::BITS - terms.leading_zeros()) as i32 + 1;
        let int_bits = (x.int_bits + w.int_bits).max(b.int_bits) + grow;
        AccSpec {
            frac,
            int_bits,
            bits: int_bits + frac,
        }
    }

    fn of_layer(l: &DeployedLayer, x: FxFormat) -> Self {
        Self::of(&x, &l.weight_fmt, &l.bias_fmt, l.in_dim)
    }
}

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

/// What `export` wrote.
#[derive(Debug)]
pub struct ExportSummary {
    pub files: Vec<String>,
    pub vectors: usize,
}

/// Writes the target's sources, vectors and test bench into `out`.
pub fn export(
    actor: &DeployedActor,
    target: Target,
    out: &Path,
    vectors: usize,
) -> Result<ExportSummary> {
    actor.validate()?;
    let tables = actor.tanh_tables()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let inputs = test_inputs(actor, vectors, 0x5eed);
    let mut vec_text = format!("{} {} {}\n", inputs.len(), actor.obs_dim(), actor.act_dim());
    for x in &inputs {
        let y = actor.infer_raw(x, &tables);
        let line: Vec<String> = x.iter().chain(y.iter()).map(|v| v.to_string()).collect();
        vec_text.push_str(&line.join(" "));
        vec_text.push('\n');
    }
    let files: Vec<(&str, String)> = match target {
        Target::C => vec![
            ("fixar_actor.h", c_header(actor)),
            ("fixar_actor.c", c_source(actor, &tables)),
            ("tb.c", C_TESTBENCH.to_string()),
            ("vectors.txt", vec_text),
            ("README.md", readme(actor, target)),
        ],
        Target::Hls => vec![
            ("fixar_actor.h", hls_header(actor)),
            ("fixar_actor.cpp", hls_source(actor, &tables)),
            ("tb.cpp", HLS_TESTBENCH.to_string()),
            ("vectors.txt", vec_text),
            ("README.md", readme(actor, target)),
        ],
    };
    let mut names = Vec::new();
    for (name, text) in files {
        let path = out.join(name);
        write_atomic(&path, &text)?;
        names.push(path.display().to_string());
    }
    Ok(ExportSummary {
        files: names,
        vectors: inputs.len(),
    })
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
}

fn readme(actor: &DeployedActor, target: Target) -> String {
    let mut s = format!(
        "# Exported actor\n\nFrom: {}\n\nInput: {} values in `{}`; output: {} values in `{}` (raw two's-complement codes; value = raw * 2^(I-W)).\n\n",
        actor.origin,
        actor.obs_dim(),
        actor.input_fmt,
        actor.act_dim(),
        actor.output_fmt()
    );
    s.push_str("| layer | in x out | weights | biases | pre-activation | activation |\n|---|---|---|---|---|---|\n");
    for l in &actor.layers {
        let _ = writeln!(
            s,
            "| {} | {}x{} | `{}` | `{}` | `{}` | {:?} `{}` |",
            l.name,
            l.in_dim,
            l.out_dim,
            l.weight_fmt,
            l.bias_fmt,
            l.preact_fmt,
            l.activation,
            l.act_fmt
        );
    }
    match target {
        Target::C => s.push_str("\nBuild and check: `cc -std=c99 -O2 -o tb tb.c fixar_actor.c && ./tb vectors.txt`\n"),
        Target::Hls => s.push_str(
            "\nBuild and check (C simulation): `g++ -std=c++14 -O2 -I<path to ap_fixed.h> -o tb tb.cpp fixar_actor.cpp && ./tb vectors.txt`\n",
        ),
    }
    s
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
fn int_array(out: &mut String, ty: &str, name: &str, values: &[i64]) {
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

fn c_array(out: &mut String, name: &str, values: &[i64]) {
    int_array(out, "int64_t", name, values);
}

fn c_header(actor: &DeployedActor) -> String {
    format!(
        "/* Quantized actor exported by fixar from {origin}. Integer-only inference. */\n#ifndef FIXAR_ACTOR_H\n#define FIXAR_ACTOR_H\n#include <stdint.h>\n\n#define FIXAR_ACTOR_OBS_DIM {obs}\n#define FIXAR_ACTOR_ACT_DIM {act}\n/* Input codes: {inf}; output codes: {outf}. value = raw * 2^(I-W). */\n#define FIXAR_ACTOR_INPUT_FRAC_BITS {inb}\n#define FIXAR_ACTOR_OUTPUT_FRAC_BITS {outb}\n\n/* obs: FIXAR_ACTOR_OBS_DIM raw codes; action: FIXAR_ACTOR_ACT_DIM raw codes (written). */\nvoid fixar_actor_infer(const int64_t *obs, int64_t *action);\n\n#endif\n",
        origin = actor.origin,
        obs = actor.obs_dim(),
        act = actor.act_dim(),
        inf = actor.input_fmt,
        outf = actor.output_fmt(),
        inb = actor.input_fmt.frac_bits(),
        outb = actor.output_fmt().frac_bits(),
    )
}

fn c_source(actor: &DeployedActor, tables: &[Option<Vec<TanhTable>>]) -> String {
    let mut s = format!(
        "/* Generated by fixar from {}: do not edit. */\n#include \"fixar_actor.h\"\n\n",
        actor.origin
    );
    s.push_str(C_RUNTIME);
    let max_dim = actor
        .layers
        .iter()
        .map(|l| l.out_dim.max(l.in_dim))
        .max()
        .unwrap_or(1);
    for (li, (l, table)) in actor.layers.iter().zip(tables).enumerate() {
        let _ = writeln!(
            s,
            "\n/* layer {}: {}x{}, W {}, b {}, z {}, a = {:?} {} */",
            l.name,
            l.in_dim,
            l.out_dim,
            l.weight_fmt,
            l.bias_fmt,
            l.preact_fmt,
            l.activation,
            l.act_fmt
        );
        c_array(&mut s, &format!("L{li}_W"), &l.weight);
        c_array(&mut s, &format!("L{li}_B"), &l.bias);
        if let Some(ts) = table {
            for (j, t) in ts.iter().enumerate() {
                c_array(&mut s, &format!("L{li}_TANH_T{j}"), &t.thresholds);
                c_array(&mut s, &format!("L{li}_TANH_C{j}"), &t.codes);
            }
            let list = |p: &str| {
                (0..ts.len())
                    .map(|j| format!("L{li}_TANH_{p}{j}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let lens: Vec<String> = ts.iter().map(|t| t.thresholds.len().to_string()).collect();
            let _ = writeln!(
                s,
                "static const int64_t *const L{li}_TANH_T[] = {{{}}};\nstatic const int64_t *const L{li}_TANH_C[] = {{{}}};\nstatic const int L{li}_TANH_N[] = {{{}}};",
                list("T"),
                list("C"),
                lens.join(", ")
            );
        }
    }
    let _ = write!(
        s,
        "\nvoid fixar_actor_infer(const int64_t *obs, int64_t *action) {{\n    int64_t buf_a[{max_dim}], buf_b[{max_dim}];\n    const int64_t *x = obs;\n    int64_t *y = buf_a;\n    int i, j;\n"
    );
    let mut in_fmt = actor.input_fmt;
    for (li, l) in actor.layers.iter().enumerate() {
        let acc = AccSpec::of(&in_fmt, &l.weight_fmt, &l.bias_fmt, l.in_dim);
        let prod_shift = acc.frac - (in_fmt.frac_bits() + l.weight_fmt.frac_bits());
        let bias_shift = acc.frac - l.bias_fmt.frac_bits();
        let act = match l.activation {
            Activation::Relu => format!(
                "fx_cast(fx128_from(z > 0 ? z : 0), {})",
                cast_args(l.preact_fmt.frac_bits(), &l.act_fmt)
            ),
            Activation::Identity => format!(
                "fx_cast(fx128_from(z), {})",
                cast_args(l.preact_fmt.frac_bits(), &l.act_fmt)
            ),
            Activation::Tanh => {
                format!("fx_table(L{li}_TANH_T[j], L{li}_TANH_C[j], L{li}_TANH_N[j], z)")
            }
        };
        let _ = write!(
            s,
            "    /* {name} */\n    for (j = 0; j < {n}; ++j) {{\n        fx128 acc = fx128_shl(fx128_from(L{li}_B[j]), {bias_shift});\n        int64_t z;\n        for (i = 0; i < {k}; ++i)\n            acc = fx128_add(acc, fx128_shl(fx128_from(x[i] * L{li}_W[i * {n} + j]), {prod_shift}));\n        z = fx_cast(acc, {zcast});\n        y[j] = {act};\n    }}\n    x = y;\n    y = (y == buf_a) ? buf_b : buf_a;\n",
            name = l.name,
            n = l.out_dim,
            k = l.in_dim,
            zcast = cast_args(acc.frac, &l.preact_fmt),
        );
        in_fmt = l.act_fmt;
    }
    let _ = write!(
        s,
        "    for (j = 0; j < {}; ++j) action[j] = x[j];\n}}\n",
        actor.act_dim()
    );
    s
}

fn hls_type(f: &FxFormat) -> String {
    f.to_string()
}

fn hls_header(actor: &DeployedActor) -> String {
    let mut s = format!(
        "// Quantized actor exported by fixar from {}. HLS C++ (ap_fixed).\n#ifndef FIXAR_ACTOR_HLS_H\n#define FIXAR_ACTOR_HLS_H\n#include <ap_fixed.h>\n\n#define FIXAR_ACTOR_OBS_DIM {}\n#define FIXAR_ACTOR_ACT_DIM {}\n#define FIXAR_ACTOR_OUTPUT_SIGNED {}\n\ntypedef {} input_t;\ntypedef {} output_t;\n",
        actor.origin,
        actor.obs_dim(),
        actor.act_dim(),
        actor.output_fmt().signed as i32,
        hls_type(&actor.input_fmt),
        hls_type(&actor.output_fmt())
    );
    let mut in_fmt = actor.input_fmt;
    for (li, l) in actor.layers.iter().enumerate() {
        let acc = AccSpec::of(&in_fmt, &l.weight_fmt, &l.bias_fmt, l.in_dim);
        let _ = write!(
            s,
            "\n// layer {name}\ntypedef {w} l{li}_weight_t;\ntypedef {b} l{li}_bias_t;\ntypedef ap_fixed<{accw}, {acci}> l{li}_acc_t; // exact accumulator\ntypedef {z} l{li}_preact_t;\ntypedef {a} l{li}_act_t;\n",
            name = l.name,
            w = hls_type(&l.weight_fmt),
            b = hls_type(&l.bias_fmt),
            accw = acc.bits,
            acci = acc.int_bits,
            z = hls_type(&l.preact_fmt),
            a = hls_type(&l.act_fmt),
        );
        in_fmt = l.act_fmt;
    }
    s.push_str("\nvoid fixar_actor(const input_t obs[FIXAR_ACTOR_OBS_DIM], output_t action[FIXAR_ACTOR_ACT_DIM]);\n\n#endif\n");
    s
}

fn hls_array(out: &mut String, ty: &str, name: &str, values: &[i64]) {
    let _ = writeln!(out, "// {name}: raw codes of the {ty}");
    int_array(out, "long long", &format!("{name}_raw"), values);
}

fn hls_source(actor: &DeployedActor, tables: &[Option<Vec<TanhTable>>]) -> String {
    let mut s = format!(
        "// Generated by fixar from {}: do not edit.\n#include \"fixar_actor.h\"\n\n// A value of T from its raw two's-complement code.\ntemplate <typename T, int W>\nstatic T from_raw(long long raw) {{\n    T t;\n    ap_int<W> bits = raw;\n    t.range(W - 1, 0) = bits.range(W - 1, 0);\n    return t;\n}}\n\n// The raw code of a signed value as a 64-bit integer.\ntemplate <int W, typename T>\nstatic long long raw_of(const T &v) {{\n    ap_int<W> bits;\n    bits.range(W - 1, 0) = v.range(W - 1, 0);\n    return bits.to_int64();\n}}\n\nstatic long long table_lookup(const long long *thr, const long long *codes, int n, long long z) {{\n    int lo = 0, hi = n; // first index with thr > z\n    while (lo < hi) {{\n        int mid = (lo + hi) / 2;\n        if (thr[mid] <= z) lo = mid + 1; else hi = mid;\n    }}\n    return codes[lo > 0 ? lo - 1 : 0];\n}}\n\n",
        actor.origin
    );
    for (li, (l, table)) in actor.layers.iter().zip(tables).enumerate() {
        hls_array(&mut s, "weights", &format!("l{li}_w"), &l.weight);
        hls_array(&mut s, "biases", &format!("l{li}_b"), &l.bias);
        if let Some(ts) = table {
            for (j, t) in ts.iter().enumerate() {
                hls_array(
                    &mut s,
                    "tanh thresholds",
                    &format!("l{li}_tanh_t{j}"),
                    &t.thresholds,
                );
                hls_array(&mut s, "tanh codes", &format!("l{li}_tanh_c{j}"), &t.codes);
            }
            let list = |p: &str| {
                (0..ts.len())
                    .map(|j| format!("l{li}_tanh_{p}{j}_raw"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let lens: Vec<String> = ts.iter().map(|t| t.thresholds.len().to_string()).collect();
            let _ = writeln!(
                s,
                "static const long long *const l{li}_tanh_t[] = {{{}}};\nstatic const long long *const l{li}_tanh_c[] = {{{}}};\nstatic const int l{li}_tanh_n[] = {{{}}};\n",
                list("t"),
                list("c"),
                lens.join(", ")
            );
        }
    }
    s.push_str("void fixar_actor(const input_t obs[FIXAR_ACTOR_OBS_DIM], output_t action[FIXAR_ACTOR_ACT_DIM]) {\n");
    let mut prev = "obs".to_string();
    for (li, l) in actor.layers.iter().enumerate() {
        let act = match l.activation {
            Activation::Relu => format!("a{li}[j] = z > 0 ? z : (l{li}_preact_t)0;"),
            Activation::Identity => format!("a{li}[j] = z;"),
            Activation::Tanh => format!(
                "a{li}[j] = from_raw<l{li}_act_t, {aw}>(table_lookup(l{li}_tanh_t[j], l{li}_tanh_c[j], l{li}_tanh_n[j], raw_of<{zw}>(z)));",
                aw = l.act_fmt.width,
                zw = l.preact_fmt.width,
            ),
        };
        let _ = write!(
            s,
            "    // {name}\n    l{li}_act_t a{li}[{n}];\n    for (int j = 0; j < {n}; ++j) {{\n        l{li}_acc_t acc = from_raw<l{li}_bias_t, {bw}>(l{li}_b_raw[j]);\n        for (int i = 0; i < {k}; ++i)\n            acc += {prev}[i] * from_raw<l{li}_weight_t, {ww}>(l{li}_w_raw[i * {n} + j]);\n        l{li}_preact_t z = acc;\n        {act}\n    }}\n",
            name = l.name,
            n = l.out_dim,
            k = l.in_dim,
            bw = l.bias_fmt.width,
            ww = l.weight_fmt.width,
        );
        prev = format!("a{li}");
    }
    let _ = write!(
        s,
        "    for (int j = 0; j < FIXAR_ACTOR_ACT_DIM; ++j) action[j] = {prev}[j];\n}}\n"
    );
    s
}

/// `fixar export` arguments.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A run directory (its QAT choice in `qat/chosen.json` when present, else its first
    /// seed), or one seed's directory holding `checkpoint.bin`.
    #[arg(long)]
    pub run: PathBuf,
    /// `c`: dependency-free C99; `hls`: HLS C++ with ap_fixed types.
    #[arg(long, value_enum)]
    pub target: Target,
    /// Output directory (default: `<run>/export/<target>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Number of test vectors.
    #[arg(long, default_value_t = 256)]
    pub vectors: usize,
}

/// The checkpoint directory `fixar export --run` means.
pub fn resolve_checkpoint_dir(run: &Path) -> Result<PathBuf> {
    if !run.is_dir() {
        return Err(config_error(format!(
            "--run {}: no such directory",
            run.display()
        )));
    }
    if run.join("checkpoint.bin").is_file() {
        return Ok(run.to_path_buf());
    }
    let chosen = run.join("qat").join("chosen.json");
    if chosen.is_file() {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&chosen)
                .with_context(|| format!("reading {}", chosen.display()))?,
        )
        .with_context(|| format!("parsing {}", chosen.display()))?;
        let dir = ["checkpoint_dir", "checkpoint"]
            .iter()
            .find_map(|k| v.get(*k).and_then(|p| p.as_str()))
            .map(PathBuf::from)
            .with_context(|| format!("{} names no checkpoint", chosen.display()))?;
        // As written (absolute, or relative to the working directory `fixar qat` ran
        // in) when it exists, else relative to the run directory.
        let dir = if dir.exists() { dir } else { run.join(dir) };
        let dir = if dir.is_file() {
            dir.parent().map(Path::to_path_buf).unwrap_or(dir)
        } else {
            dir
        };
        if dir.join("checkpoint.bin").is_file() {
            tracing::info!(
                "exporting the QAT choice in {} ({})",
                chosen.display(),
                dir.display()
            );
            return Ok(dir);
        }
        bail!(
            "{} points at {}, which holds no checkpoint.bin",
            chosen.display(),
            dir.display()
        );
    }
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(run)
        .with_context(|| format!("listing {}", run.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("checkpoint.bin").is_file())
        .collect();
    seeds.sort();
    seeds.into_iter().next().ok_or_else(|| {
        config_error(format!(
            "--run {}: no checkpoint.bin in it or in its seed directories, and no qat/chosen.json",
            run.display()
        ))
    })
}

/// Loads the trained actor of a checkpoint directory and converts it to raw codes;
/// an actor with any float tensor on its datapath is refused.
pub fn load_actor(dir: &Path) -> Result<DeployedActor> {
    let reader = agents::checkpoint::CheckpointReader::read(&dir.join("checkpoint.bin"))
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.join("checkpoint.bin").display()))?;
    let cfg: agents::config::TrainConfig =
        reader.meta("config").map_err(|e| anyhow::anyhow!("{e}"))?;
    let seed: u64 = reader.meta("seed").map_err(|e| anyhow::anyhow!("{e}"))?;
    let env = envs::make(&cfg.env_id).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut agent =
        agents::trainer::build_agent(&cfg, env.observation_space(), env.action_space(), seed);
    agents::trainer::load_agent(agent.as_mut(), &reader)
        .map_err(|e| anyhow::anyhow!("loading the agent: {e}"))?;
    let layers =
        agents::export::export_network(agent.actor()).map_err(|e| anyhow::anyhow!("{e}"))?;
    DeployedActor::from_layers(
        format!(
            "{} ({} on {})",
            dir.display(),
            format!("{:?}", cfg.algo).to_uppercase(),
            cfg.env_id
        ),
        &layers,
    )
}

impl DeployedActor {
    /// From the agent's per-layer export; every datapath tensor must be fixed point.
    pub fn from_layers(origin: String, layers: &[agents::export::LayerExport]) -> Result<Self> {
        let need = |f: Option<FxFormat>, layer: &str, class: &str| -> Result<FxFormat> {
            f.ok_or_else(|| {
                anyhow::anyhow!(
                    "layer {layer} keeps its {class} in float: there is no quantized actor to export (train with a fixed-point precision or run `fixar qat` first)"
                )
            })
        };
        let stored = |f: FxFormat| match f.rounding {
            Rounding::Stochastic => f.with_modes(Rounding::Trn, f.overflow),
            _ => f,
        };
        let first = layers.first().context("the actor has no layers")?;
        let input_fmt = need(first.formats.input, &first.name, "input")?;
        let out = layers
            .iter()
            .map(|l| {
                let activation = match l.activation.as_str() {
                    "relu" => Activation::Relu,
                    "tanh" => Activation::Tanh,
                    "identity" => Activation::Identity,
                    other => bail!(
                        "layer {}: activation `{other}` has no integer export",
                        l.name
                    ),
                };
                Ok(DeployedLayer {
                    name: l.name.clone(),
                    in_dim: l.in_dim,
                    out_dim: l.out_dim,
                    weight: l.weight_codes.clone(),
                    // Parameters are stored codes, never cast at inference: the rounding
                    // that produced them (stochastic, in training) has no hardware meaning.
                    weight_fmt: stored(need(l.weight_format, &l.name, "weights")?),
                    bias: l.bias_codes.clone(),
                    bias_fmt: stored(need(l.bias_format, &l.name, "biases")?),
                    preact_fmt: need(l.formats.preact, &l.name, "pre-activations")?,
                    activation,
                    tanh_scale: l.tanh_scale.iter().map(|v| *v as f64).collect(),
                    tanh_offset: l.tanh_offset.iter().map(|v| *v as f64).collect(),
                    act_fmt: need(l.formats.activation, &l.name, "activations")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(DeployedActor {
            origin,
            input_fmt,
            layers: out,
        })
    }
}

/// `fixar export`.
pub fn run(args: &ExportArgs) -> Result<ExitCode> {
    let dir = resolve_checkpoint_dir(&args.run)?;
    let actor = load_actor(&dir)?;
    let target_name = match args.target {
        Target::C => "c",
        Target::Hls => "hls",
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.run.join("export").join(target_name));
    let summary = export(&actor, args.target, &out, args.vectors)?;
    for f in &summary.files {
        println!("wrote {f}");
    }
    println!(
        "{} test vectors; formats per layer in {}",
        summary.vectors,
        out.join("README.md").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Integer-only helpers of the C target: a two-limb 128-bit accumulator and the cast into a
/// format with each rounding and overflow mode. Right shifts of negative numbers are done on
/// complements, so nothing relies on implementation-defined behaviour.
const C_RUNTIME: &str = r#"enum { FX_TRN, FX_TRN_ZERO, FX_RND, FX_RND_ZERO, FX_RND_MIN_INF, FX_RND_INF, FX_RND_CONV };
enum { FX_WRAP, FX_SAT, FX_SAT_ZERO, FX_SAT_SYM };

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
        int gt = fx128_lt(half, rem), tie = fx128_eq(rem, half), up = 0;
        switch (q) {
        case FX_TRN: up = 0; break;
        case FX_TRN_ZERO: up = neg && nz; break;
        case FX_RND: up = gt || tie; break;
        case FX_RND_ZERO: up = gt || (tie && neg); break;
        case FX_RND_MIN_INF: up = gt; break;
        case FX_RND_INF: up = gt || (tie && !neg); break;
        default: up = gt || (tie && (fl.lo & 1u)); break;
        }
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

/* Step function: codes[i] for inputs in [thr[i], thr[i+1]). */
static int64_t fx_table(const int64_t *thr, const int64_t *codes, int n, int64_t z) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (thr[mid] <= z) lo = mid + 1; else hi = mid;
    }
    return codes[lo > 0 ? lo - 1 : 0];
}
"#;

const C_TESTBENCH: &str = r#"/* Test bench: runs the exported actor on vectors.txt and compares raw outputs. */
#include <stdio.h>
#include <stdlib.h>
#include "fixar_actor.h"

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "vectors.txt";
    FILE *f = fopen(path, "r");
    long n, in_dim, out_dim, t, i;
    long passed = 0, failed = 0;
    int64_t x[FIXAR_ACTOR_OBS_DIM] = {0}, want[FIXAR_ACTOR_ACT_DIM] = {0}, got[FIXAR_ACTOR_ACT_DIM] = {0};
    if (!f) { fprintf(stderr, "cannot open %s\n", path); return 2; }
    if (fscanf(f, "%ld %ld %ld", &n, &in_dim, &out_dim) != 3 || in_dim != FIXAR_ACTOR_OBS_DIM || out_dim != FIXAR_ACTOR_ACT_DIM) {
        fprintf(stderr, "%s: bad header\n", path); return 2;
    }
    for (t = 0; t < n; ++t) {
        int ok = 1;
        for (i = 0; i < in_dim; ++i) { long long v; if (fscanf(f, "%lld", &v) != 1) { fprintf(stderr, "short file\n"); return 2; } x[i] = v; }
        for (i = 0; i < out_dim; ++i) { long long v; if (fscanf(f, "%lld", &v) != 1) { fprintf(stderr, "short file\n"); return 2; } want[i] = v; }
        fixar_actor_infer(x, got);
        for (i = 0; i < out_dim; ++i) ok &= got[i] == want[i];
        if (ok) ++passed;
        else {
            if (failed < 5) {
                fprintf(stderr, "vector %ld: mismatch", t);
                for (i = 0; i < out_dim; ++i) fprintf(stderr, " got %lld want %lld;", (long long)got[i], (long long)want[i]);
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

const HLS_TESTBENCH: &str = r#"// Test bench (C simulation): runs the exported actor on vectors.txt, compares raw outputs.
#include <cstdio>
#include "fixar_actor.h"

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "vectors.txt";
    FILE *f = std::fopen(path, "r");
    long n, in_dim, out_dim, passed = 0, failed = 0;
    if (!f) { std::fprintf(stderr, "cannot open %s\n", path); return 2; }
    if (std::fscanf(f, "%ld %ld %ld", &n, &in_dim, &out_dim) != 3 || in_dim != FIXAR_ACTOR_OBS_DIM || out_dim != FIXAR_ACTOR_ACT_DIM) {
        std::fprintf(stderr, "%s: bad header\n", path); return 2;
    }
    for (long t = 0; t < n; ++t) {
        input_t x[FIXAR_ACTOR_OBS_DIM];
        output_t y[FIXAR_ACTOR_ACT_DIM];
        long long want[FIXAR_ACTOR_ACT_DIM];
        for (long i = 0; i < in_dim; ++i) {
            long long v;
            if (std::fscanf(f, "%lld", &v) != 1) { std::fprintf(stderr, "short file\n"); return 2; }
            ap_int<input_t::width> bits = v;
            x[i].range(input_t::width - 1, 0) = bits.range(input_t::width - 1, 0);
        }
        for (long i = 0; i < out_dim; ++i) {
            if (std::fscanf(f, "%lld", &want[i]) != 1) { std::fprintf(stderr, "short file\n"); return 2; }
        }
        fixar_actor(x, y);
        bool ok = true;
        for (long i = 0; i < out_dim; ++i) {
            ap_int<output_t::width> bits;
            bits.range(output_t::width - 1, 0) = y[i].range(output_t::width - 1, 0);
            long long got = FIXAR_ACTOR_OUTPUT_SIGNED ? (long long)bits.to_int64() : (long long)bits.range(output_t::width - 1, 0).to_uint64();
            if (got != want[i]) {
                if (failed < 5) std::fprintf(stderr, "vector %ld out %ld: got %lld want %lld\n", t, i, got, want[i]);
                ok = false;
            }
        }
        if (ok) ++passed; else ++failed;
    }
    std::fclose(f);
    std::printf("%ld passed, %ld failed\n", passed, failed);
    return failed ? 1 : 0;
}
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn fmt(s: &str) -> FxFormat {
        s.parse().unwrap()
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("fixar-export-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A small actor whose formats exercise every rounding and overflow mode, with weights
    /// large enough that pre-activations overflow their formats now and then.
    fn synthetic_actor(seed: u64) -> DeployedActor {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as i64
        };
        let layer = |name: &str,
                     k: usize,
                     n: usize,
                     w: &str,
                     b: &str,
                     z: &str,
                     act: Activation,
                     a: &str,
                     next: &mut dyn FnMut() -> i64| {
            let (wf, bf) = (fmt(w), fmt(b));
            let draw = |f: &FxFormat, next: &mut dyn FnMut() -> i64| {
                let span = f.raw_max() - f.raw_min() + 1;
                f.raw_min() + next().rem_euclid(span)
            };
            DeployedLayer {
                name: name.into(),
                in_dim: k,
                out_dim: n,
                weight: (0..k * n).map(|_| draw(&wf, next)).collect(),
                weight_fmt: wf,
                bias: (0..n).map(|_| draw(&bf, next)).collect(),
                bias_fmt: bf,
                preact_fmt: fmt(z),
                activation: act,
                // The last layer squashes into action bounds of different widths.
                tanh_scale: (0..n).map(|j| 0.5 + j as f64 * 1.25).collect(),
                tanh_offset: (0..n).map(|j| j as f64 * 0.25).collect(),
                act_fmt: fmt(a),
            }
        };
        let layers = vec![
            layer(
                "fc1",
                3,
                12,
                "ap_fixed<12,2,AP_RND_CONV,AP_SAT>",
                "ap_fixed<10,3>",
                "ap_fixed<14,5,AP_RND,AP_WRAP>",
                Activation::Relu,
                "ap_fixed<10,4,AP_RND_ZERO,AP_SAT_SYM>",
                &mut next,
            ),
            layer(
                "fc2",
                12,
                9,
                "ap_fixed<16,1,AP_TRN_ZERO,AP_SAT>",
                "ap_fixed<32,8,AP_RND_INF,AP_SAT>",
                "ap_fixed<13,4,AP_RND_MIN_INF,AP_SAT_ZERO>",
                Activation::Relu,
                "ap_ufixed<9,3,AP_RND_INF,AP_WRAP>",
                &mut next,
            ),
            layer(
                "fc3",
                9,
                2,
                "ap_fixed<32,3,AP_RND_CONV,AP_SAT>",
                "ap_fixed<24,6,AP_RND_CONV,AP_SAT>",
                "ap_fixed<16,4,AP_RND_CONV,AP_SAT>",
                Activation::Tanh,
                "ap_fixed<12,2,AP_RND_CONV,AP_SAT>",
                &mut next,
            ),
        ];
        DeployedActor {
            origin: "synthetic test actor".into(),
            input_fmt: fmt("ap_fixed<16,5,AP_RND_CONV,AP_SAT>"),
            layers,
        }
    }

    #[test]
    fn tanh_table_equals_direct_quantization_for_every_input_code() {
        for (zin, out) in [
            (
                "ap_fixed<12,4,AP_TRN,AP_SAT>",
                "ap_fixed<10,2,AP_RND_CONV,AP_SAT>",
            ),
            ("ap_fixed<10,3>", "ap_fixed<8,1,AP_RND,AP_WRAP>"),
            ("ap_fixed<9,6>", "ap_fixed<6,1,AP_TRN_ZERO,AP_SAT_SYM>"),
            (
                "ap_fixed<14,5,AP_RND,AP_SAT>",
                "ap_fixed<12,3,AP_RND_CONV,AP_SAT>",
            ),
        ] {
            let (zf, of) = (fmt(zin), fmt(out));
            for (scale, offset) in [(1.0, 0.0), (2.0, 0.0), (0.75, 0.5)] {
                let t = tanh_table(&zf, &of, scale, offset).unwrap();
                for z in zf.raw_min()..=zf.raw_max() {
                    let v = quant::to_f64(z, &zf).tanh() * scale + offset;
                    let direct = quant::from_f64(v, &of).unwrap();
                    assert_eq!(
                        t.lookup(z),
                        direct,
                        "{zin} -> {out} x{scale}+{offset} at raw {z}"
                    );
                }
            }
        }
    }

    #[test]
    fn tanh_table_refuses_output_formats_too_fine_to_tabulate() {
        let e = tanh_table(&fmt("ap_fixed<32,8>"), &fmt("ap_fixed<32,2>"), 1.0, 0.0).unwrap_err();
        assert!(e.to_string().contains("fraction bits"), "{e}");
    }

    fn run_bench(dir: &Path, compile: &mut Command) -> (bool, String) {
        let out = compile.current_dir(dir).output().expect("compiler runs");
        assert!(
            out.status.success(),
            "compile failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let run = Command::new(dir.join("tb"))
            .arg("vectors.txt")
            .current_dir(dir)
            .output()
            .unwrap();
        (
            run.status.success(),
            String::from_utf8_lossy(&run.stdout).to_string(),
        )
    }

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
        for seed in [1u64, 2, 3] {
            let dir = tmp(&format!("c{seed}"));
            let actor = synthetic_actor(seed);
            let summary = export(&actor, Target::C, &dir, 400).unwrap();
            assert_eq!(summary.vectors, 400);
            let mut cc = Command::new("cc");
            cc.args([
                "-std=c99",
                "-O2",
                "-Wall",
                "-Wextra",
                "-pedantic",
                "-Werror",
                "-o",
                "tb",
                "tb.c",
                "fixar_actor.c",
            ]);
            let (ok, stdout) = run_bench(&dir, &mut cc);
            assert!(
                ok && stdout.trim() == "400 passed, 0 failed",
                "seed {seed}: {stdout}"
            );
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
    fn hls_export_compiles_against_ap_fixed_headers_and_matches_the_golden_path() {
        let headers = std::path::PathBuf::from(env!("FIXAR_AP_TYPES"));
        assert!(
            headers.join("ap_fixed.h").exists(),
            "ap_fixed.h not found in {} (scripts/setup fetches it)",
            headers.display()
        );
        let dir = tmp("hls");
        let actor = synthetic_actor(7);
        export(&actor, Target::Hls, &dir, 300).unwrap();
        let mut cxx = Command::new("g++");
        cxx.args(["-std=c++14", "-O1", "-w", "-I"])
            .arg(&headers)
            .args(["-o", "tb", "tb.cpp", "fixar_actor.cpp"]);
        let (ok, stdout) = run_bench(&dir, &mut cxx);
        assert!(ok && stdout.trim() == "300 passed, 0 failed", "{stdout}");
        let src = std::fs::read_to_string(dir.join("fixar_actor.h")).unwrap();
        assert!(src.contains("#include <ap_fixed.h>"));
    }

    #[test]
    fn export_rejects_stochastic_rounding_and_too_wide_formats() {
        let mut actor = synthetic_actor(1);
        actor.layers[0].weight_fmt = fmt("ap_fixed<40,8>");
        assert!(actor.validate().unwrap_err().to_string().contains("wider"));
        let mut actor = synthetic_actor(1);
        actor.layers[1].act_fmt.rounding = Rounding::Stochastic;
        assert!(actor
            .validate()
            .unwrap_err()
            .to_string()
            .contains("stochastic"));
    }
}
