//! The trained actor as integer hardware runs it, and the code that deploys it.
//!
//! A [`DeployedActor`] holds raw two's-complement codes and `FxFormat`s only, built from
//! a trained actor ([`DeployedActor::from_actor`]) or a checkpoint directory
//! ([`DeployedActor::load`]); an actor with any float tensor on its datapath is refused.
//! [`DeployedActor::infer_raw`] is the golden integer inference (`quant`'s exact
//! arithmetic), and every export ships test vectors computed by it.
//!
//! Two targets, one structure ([`export`] writes them):
//! - [`c`]: a dependency-free C99 header + source doing integer-only inference on native
//!   widths: codes in the narrowest `intN_t` holding their format, sums in `int32_t` where
//!   the formats and K prove it exact, else `int64_t`, else a 128-bit emulation
//!   ([`native`] has the proof), and each cast reproduces the format's rounding and
//!   overflow mode bit for bit.
//! - [`hls`]: HLS C++ with one `ap_fixed` typedef per tensor and an accumulator type wide
//!   enough to be exact, so the HLS assignment semantics do the same casts.
//!
//! Both come with test vectors (inputs and the expected raw outputs) and a test bench
//! (`tb.c`, `tb.cpp`) that prints `N passed, M failed` and exits non-zero on any mismatch.
//! The output layer's tanh is exported as an exact threshold table ([`tanh`]).
//!
//! Not for: flags, run directories and which checkpoint of a run to deploy (`fixar
//! export` in `runs` decides that).
//!
//! ```no_run
//! use agents::deploy::{export, DeployedActor, Target};
//! let actor = DeployedActor::load(std::path::Path::new("runs/td3/seed_0")).unwrap();
//! let summary = export(&actor, Target::C, std::path::Path::new("out/c"), 256).unwrap();
//! println!("{} vectors", summary.vectors);
//! ```

pub mod c;
pub mod hls;
pub mod hls4ml;
pub mod native;
mod policy;
pub mod shift_add;
pub mod tanh;
mod trained;
mod vectors;

#[cfg(test)]
mod synthetic;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use quant::{FxFormat, Rounding};

use crate::mlp::Activation;
use crate::precision::TensorClass;
pub use policy::ExactPolicy;
pub use tanh::{tanh_table, TanhError, TanhTable, MAX_TANH_FRAC_BITS};
pub use vectors::test_inputs;

/// One fully connected layer with raw integer parameters.
#[derive(Clone, Debug)]
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
    /// The agent's own activation; for tanh, a = cast(tanh(z) * scale_j + offset_j) per
    /// output column j, exported as a table.
    pub activation: Activation,
    /// Format of act(z).
    pub act_fmt: FxFormat,
}

/// A quantized actor as the hardware runs it: raw codes and formats only.
#[derive(Clone, Debug)]
pub struct DeployedActor {
    /// Where it came from (run directory, rung), for the generated file headers.
    pub origin: String,
    pub input_fmt: FxFormat,
    pub layers: Vec<DeployedLayer>,
    /// Emit every layer multiplier-free: its products as shifts and adds of each
    /// weight's signed power-of-two digits ([`shift_add`]).
    pub shift_add: bool,
}

/// Export target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Dependency-free C99.
    C,
    /// HLS C++ with `ap_fixed` types.
    Hls,
    /// hls4ml's per-layer precision config, the weights and a script that builds the
    /// hls4ml model ([`hls4ml`]).
    Hls4ml,
}

impl Target {
    /// Lowercase name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::C => "c",
            Target::Hls => "hls",
            Target::Hls4ml => "hls4ml",
        }
    }
}

/// Why an actor cannot be deployed or its files not written.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the actor has no layers")]
    NoLayers,
    #[error("layer {layer} casts its {class} with FIXAR's affine (zero-point) quantizer, which the integer export does not implement (export a run without `[schedule] quantizer = \"affine\"`, or with `ap_fixed`)")]
    Affine { layer: String, class: TensorClass },
    #[error("layer {layer} keeps its {class} in float: there is no quantized actor to export (train with a fixed-point precision or run `fixar qat` first)")]
    FloatTensor { layer: String, class: TensorClass },
    /// `layer` is None for the network input.
    #[error("{}: {format} rounds stochastically; export needs a deterministic rounding mode", tensor_name(.layer, *.class))]
    Stochastic {
        layer: Option<String>,
        class: TensorClass,
        format: FxFormat,
    },
    #[error("{}: {format} is wider than the {max_width} bits the exported integer code supports", tensor_name(.layer, *.class))]
    TooWide {
        layer: Option<String>,
        class: TensorClass,
        format: FxFormat,
        max_width: u32,
    },
    #[error("layer {layer}: input size {in_dim} does not follow the previous output size {prev_out_dim}")]
    InputSize {
        layer: String,
        in_dim: usize,
        prev_out_dim: usize,
    },
    #[error("layer {layer}: parameter sizes do not match {in_dim}x{out_dim}")]
    ParameterSize {
        layer: String,
        in_dim: usize,
        out_dim: usize,
    },
    #[error("layer {layer}: exact accumulation needs {bits} bits, more than the {MAX_ACC_BITS} the exported code holds")]
    Accumulator { layer: String, bits: i32 },
    #[error("layer {layer}: no multiplier-free (shift-add) code: {what}")]
    ShiftAdd { layer: String, what: String },
    #[error("layer {layer}: tanh needs one scale and offset per output ({out_dim})")]
    TanhParameters { layer: String, out_dim: usize },
    #[error("layer {layer}")]
    Tanh {
        layer: String,
        #[source]
        source: TanhError,
    },
    #[error("the actor's raw codes")]
    Codes(#[from] crate::export::ExportError),
    #[error("the actor's weights as safetensors")]
    Weights(#[from] safetensors::SafeTensorError),
    /// The checkpoint could not be read or does not hold the agent its config describes.
    #[error("{}", path.display())]
    Checkpoint {
        path: PathBuf,
        #[source]
        source: crate::checkpoint::CheckpointError,
    },
    #[error(transparent)]
    Env(#[from] envs::EnvError),
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Widest exact accumulator the C target's two-limb integer holds (two bits of the 128
/// kept for the sign and the shift that aligns the bias).
const MAX_ACC_BITS: i32 = 126;

/// `input` for the network input, else `layer <name> <class>`.
fn tensor_name(layer: &Option<String>, class: TensorClass) -> String {
    match layer {
        None => class.to_string(),
        Some(l) => format!("layer {l} {class}"),
    }
}

/// How the README and code comments name an activation.
pub(crate) fn activation_label(a: &Activation) -> &'static str {
    match a {
        Activation::Relu => "Relu",
        Activation::Identity => "Identity",
        Activation::Tanh { .. } => "Tanh",
    }
}

impl DeployedLayer {
    /// The activation codes of pre-activation codes `z` (`table`: the tanh layer's).
    fn activate(&self, z: &[i64], table: Option<&[TanhTable]>) -> Vec<i64> {
        let (pf, af) = (&self.preact_fmt, &self.act_fmt);
        z.iter()
            .enumerate()
            .map(|(j, &zi)| match self.activation {
                Activation::Relu => quant::cast(zi.max(0), pf, af),
                Activation::Identity => quant::cast(zi, pf, af),
                Activation::Tanh { .. } => table.expect("tanh tables")[j].lookup(zi),
            })
            .collect()
    }

    /// This layer's pre-activation codes for one input row of codes in `xf`, by
    /// `quant::golden_gemm`.
    pub fn golden_preact(&self, x: &[i64], xf: &FxFormat) -> Vec<i64> {
        quant::golden_gemm(
            x,
            xf,
            &self.weight,
            &self.weight_fmt,
            Some((&self.bias, &self.bias_fmt)),
            1,
            self.in_dim,
            self.out_dim,
            &self.preact_fmt,
        )
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
    pub fn validate(&self) -> Result<(), DeployError> {
        if self.layers.is_empty() {
            return Err(DeployError::NoLayers);
        }
        let check_fmt = |layer: Option<&str>, class, f: &FxFormat| {
            let layer = layer.map(String::from);
            if f.rounding == Rounding::Stochastic {
                return Err(DeployError::Stochastic {
                    layer,
                    class,
                    format: *f,
                });
            }
            let max_width = if f.signed { 32 } else { 31 };
            if f.width > max_width {
                return Err(DeployError::TooWide {
                    layer,
                    class,
                    format: *f,
                    max_width,
                });
            }
            Ok(())
        };
        check_fmt(None, TensorClass::Input, &self.input_fmt)?;
        let mut dim = self.obs_dim();
        let mut in_fmt = self.input_fmt;
        for l in &self.layers {
            if l.in_dim != dim {
                return Err(DeployError::InputSize {
                    layer: l.name.clone(),
                    in_dim: l.in_dim,
                    prev_out_dim: dim,
                });
            }
            if l.weight.len() != l.in_dim * l.out_dim || l.bias.len() != l.out_dim {
                return Err(DeployError::ParameterSize {
                    layer: l.name.clone(),
                    in_dim: l.in_dim,
                    out_dim: l.out_dim,
                });
            }
            for (class, f) in [
                (TensorClass::Weight, &l.weight_fmt),
                (TensorClass::Bias, &l.bias_fmt),
                (TensorClass::Preact, &l.preact_fmt),
                (TensorClass::Activation, &l.act_fmt),
            ] {
                check_fmt(Some(&l.name), class, f)?;
            }
            let acc = AccSpec::of(&in_fmt, l);
            if acc.bits > MAX_ACC_BITS {
                return Err(DeployError::Accumulator {
                    layer: l.name.clone(),
                    bits: acc.bits,
                });
            }
            if let Activation::Tanh { scale, offset } = &l.activation {
                if scale.len() != l.out_dim || offset.len() != l.out_dim {
                    return Err(DeployError::TanhParameters {
                        layer: l.name.clone(),
                        out_dim: l.out_dim,
                    });
                }
            }
            dim = l.out_dim;
            in_fmt = l.act_fmt;
        }
        Ok(())
    }

    /// The golden integer inference: raw input codes in, raw action codes out, computed with
    /// `quant`'s exact arithmetic.
    pub fn infer_raw(&self, x: &[i64], tanh: &[Option<Vec<TanhTable>>]) -> Vec<i64> {
        self.infer_with(x, tanh, |_, l, cur, cur_fmt| l.golden_preact(cur, cur_fmt))
    }

    /// The inference with the pre-activation codes of layer `i` from `preact(i, layer,
    /// input codes, input format)`, which must equal the golden GEMM's; the activations
    /// and casts are [`DeployedActor::infer_raw`]'s.
    pub(crate) fn infer_with(
        &self,
        x: &[i64],
        tanh: &[Option<Vec<TanhTable>>],
        preact: impl Fn(usize, &DeployedLayer, &[i64], &FxFormat) -> Vec<i64>,
    ) -> Vec<i64> {
        let mut cur = x.to_vec();
        let mut cur_fmt = self.input_fmt;
        for (i, (l, table)) in self.layers.iter().zip(tanh).enumerate() {
            let z = preact(i, l, &cur, &cur_fmt);
            cur = l.activate(&z, table.as_deref());
            cur_fmt = l.act_fmt;
        }
        cur
    }

    /// [`DeployedActor::infer_raw`] layer by layer: each layer's pre-activation and
    /// activation codes.
    pub fn infer_layers(
        &self,
        x: &[i64],
        tanh: &[Option<Vec<TanhTable>>],
    ) -> Vec<(Vec<i64>, Vec<i64>)> {
        let mut cur = x.to_vec();
        let mut cur_fmt = self.input_fmt;
        let mut out = Vec::new();
        for (l, table) in self.layers.iter().zip(tanh) {
            let z = l.golden_preact(&cur, &cur_fmt);
            cur = l.activate(&z, table.as_deref());
            cur_fmt = l.act_fmt;
            out.push((z, cur.clone()));
        }
        out
    }

    /// Tanh tables, one per output column, for every tanh layer (None for the others).
    pub fn tanh_tables(&self) -> Result<Vec<Option<Vec<TanhTable>>>, DeployError> {
        self.layers
            .iter()
            .map(|l| match &l.activation {
                Activation::Tanh { scale, offset } => scale
                    .iter()
                    .zip(offset)
                    .map(|(&s, &o)| tanh_table(&l.preact_fmt, &l.act_fmt, s as f64, o as f64))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
                    .map_err(|source| DeployError::Tanh {
                        layer: l.name.clone(),
                        source,
                    }),
                _ => Ok(None),
            })
            .collect()
    }
}

/// The exact accumulator of a layer: fraction bits and the bits its magnitude can need.
pub(crate) struct AccSpec {
    pub frac: i32,
    pub int_bits: i32,
    pub bits: i32,
}

impl AccSpec {
    /// For `l` fed with inputs in format `x`.
    pub fn of(x: &FxFormat, l: &DeployedLayer) -> Self {
        let (w, b) = (&l.weight_fmt, &l.bias_fmt);
        let frac = (x.frac_bits() + w.frac_bits()).max(b.frac_bits());
        let grow = (usize::BITS - l.in_dim.leading_zeros()) as i32 + 1;
        let int_bits = (x.int_bits + w.int_bits).max(b.int_bits) + grow;
        AccSpec {
            frac,
            int_bits,
            bits: int_bits + frac,
        }
    }
}

/// One generated file: its name in the output directory and its text.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedFile {
    pub name: &'static str,
    pub text: String,
}

/// The target's files for `actor` with `vectors` test vectors: header, source, test
/// bench, `vectors.txt` and a README listing the formats.
pub fn generate(
    actor: &DeployedActor,
    target: Target,
    vectors: usize,
) -> Result<Vec<GeneratedFile>, DeployError> {
    actor.validate()?;
    if actor.shift_add {
        // Refused here, before any file, when a layer's sums do not fit int64_t.
        actor.shift_add_layers()?;
    }
    let tables = actor.tanh_tables()?;
    let mut files: Vec<GeneratedFile> = match target {
        Target::C => c::FILES
            .into_iter()
            .zip(c::sources(actor, &tables))
            .collect(),
        Target::Hls => hls::FILES
            .into_iter()
            .zip(hls::sources(actor, &tables))
            .collect(),
        Target::Hls4ml => hls4ml::sources(actor, &tables, vectors),
    }
    .into_iter()
    .map(|(name, text)| GeneratedFile { name, text })
    .collect();
    files.push(GeneratedFile {
        name: "vectors.txt",
        text: vectors::vectors_txt(actor, &tables, vectors),
    });
    files.push(GeneratedFile {
        name: "README.md",
        text: readme(actor, target),
    });
    Ok(files)
}

/// What [`export`] wrote.
#[derive(Debug)]
pub struct ExportSummary {
    pub files: Vec<PathBuf>,
    pub vectors: usize,
}

/// Writes the target's sources, vectors and test bench into `out` (created if missing;
/// each file replaced atomically).
pub fn export(
    actor: &DeployedActor,
    target: Target,
    out: &Path,
    vectors: usize,
) -> Result<ExportSummary, DeployError> {
    let files = generate(actor, target, vectors)?;
    std::fs::create_dir_all(out).map_err(|source| DeployError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let mut paths = Vec::new();
    for f in files {
        let path = out.join(f.name);
        write_atomic(&path, f.text.as_bytes())?;
        paths.push(path);
    }
    if target == Target::Hls4ml {
        let path = out.join(hls4ml::WEIGHTS);
        write_atomic(&path, &hls4ml::weights(actor)?)?;
        paths.push(path);
    }
    Ok(ExportSummary {
        files: paths,
        vectors,
    })
}

fn write_atomic(path: &Path, text: &[u8]) -> Result<(), DeployError> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).map_err(|source| DeployError::Write {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| DeployError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// `per inference: M multiplications, S shifts, A adds` of the code as exported, and for
/// multiplier-free code the multiplying code's figures beside it.
pub fn ops_line(actor: &DeployedActor) -> String {
    let c = actor.op_counts(actor.shift_add);
    let mut s = format!(
        "per inference: {} multiplications, {} shifts, {} adds ({} code)",
        c.multiplications,
        c.shifts,
        c.adds,
        if actor.shift_add {
            "multiplier-free"
        } else {
            "multiplying"
        }
    );
    if actor.shift_add {
        let m = actor.op_counts(false);
        let _ = write!(
            s,
            "; the multiplying code: {} multiplications, {} adds",
            m.multiplications, m.adds
        );
    }
    s
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
            "| {} | {}x{} | `{}` | `{}` | `{}` | {} `{}` |",
            l.name,
            l.in_dim,
            l.out_dim,
            l.weight_fmt,
            l.bias_fmt,
            l.preact_fmt,
            activation_label(&l.activation),
            l.act_fmt
        );
    }
    let _ = writeln!(s, "\n{}", ops_line(actor));
    s.push_str(match target {
        Target::C => c::BUILD_LINE,
        Target::Hls => hls::BUILD_LINE,
        Target::Hls4ml => hls4ml::BUILD_LINE,
    });
    s
}

#[cfg(test)]
mod tests {
    use super::synthetic::{fmt, synthetic_actor};
    use super::*;

    #[test]
    fn validation_rejects_stochastic_rounding_and_too_wide_formats_naming_the_tensor() {
        let mut actor = synthetic_actor(1);
        actor.layers[0].weight_fmt = fmt("ap_fixed<40,8>");
        let e = actor.validate().unwrap_err();
        assert!(
            matches!(&e, DeployError::TooWide { layer: Some(l), class: TensorClass::Weight, max_width: 32, .. } if l == "fc1"),
            "{e}"
        );
        assert!(
            e.to_string().starts_with("layer fc1 weight: ap_fixed<40,8"),
            "{e}"
        );
        let mut actor = synthetic_actor(1);
        actor.layers[1].act_fmt.rounding = Rounding::Stochastic;
        let e = actor.validate().unwrap_err();
        assert!(
            matches!(&e, DeployError::Stochastic { layer: Some(l), class: TensorClass::Activation, .. } if l == "fc2"),
            "{e}"
        );
        actor.layers[1].act_fmt.rounding = Rounding::Trn;
        actor.input_fmt.rounding = Rounding::Stochastic;
        let e = actor.validate().unwrap_err().to_string();
        assert!(e.starts_with("input: ") && e.contains("stochastic"), "{e}");
    }

    #[test]
    fn generated_files_are_the_ones_export_writes() {
        let actor = synthetic_actor(2);
        let files = generate(&actor, Target::C, 10).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "fixar_actor.h",
                "fixar_actor.c",
                "tb.c",
                "vectors.txt",
                "README.md"
            ]
        );
        let dir = synthetic::scratch("files");
        let summary = export(&actor, Target::C, &dir, 10).unwrap();
        assert_eq!(summary.vectors, 10);
        for (f, path) in files.iter().zip(&summary.files) {
            assert_eq!(std::fs::read_to_string(path).unwrap(), f.text, "{}", f.name);
        }
    }
}
