//! How often the `fast` GEMM emulation (an f32 GEMM on the grid values, then the cast)
//! lands on another code than the `exact` one (`quant::tensor::exact_linear`), per layer
//! at the three GEMM points of a training step; `fixar bench td3` prints it.

use quant::tensor::{exact_linear, fake_quant};
use quant::FxFormat;
use tch::{Kind, Tensor};

use super::{Activation, Layer, Mlp};
use crate::precision::TensorClass;

/// How often the `fast` GEMM emulation's cast differs from the `exact` one, per layer
/// and GEMM point, on the same inputs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LayerMismatch {
    pub layer: String,
    /// Fraction of pre-activations (z = x W + b) that differ.
    pub preact: f64,
    /// Fraction of weight-gradient entries (x^T dz) that differ.
    pub grad: f64,
    /// Fraction of back-propagated errors (dz W^T) that differ (NaN for layer 0, which
    /// needs no input error).
    pub error: f64,
    /// Elements compared at the three points.
    pub elements: [u64; 3],
}

fn differ(a: &Tensor, b: &Tensor) -> (u64, u64) {
    let n = a.numel() as u64;
    let d = a
        .ne_tensor(&b.to_kind(a.kind()))
        .sum(Kind::Int64)
        .int64_value(&[]) as u64;
    (d, n)
}

/// `fmt` with round-to-nearest-even in place of stochastic rounding: stochastic bits
/// would differ between the two paths, so the GEMM emulation is compared without them.
fn deterministic(fmt: FxFormat) -> FxFormat {
    if fmt.rounding == quant::Rounding::Stochastic {
        fmt.with_modes(quant::Rounding::RndConv, fmt.overflow)
    } else {
        fmt
    }
}

fn quantize_plain(x: Tensor, fmt: FxFormat) -> Tensor {
    fake_quant(&x, &deterministic(fmt), None).0
}

/// For every layer of `net` (all of whose input, weight, bias, pre-activation,
/// activation, error and gradient classes must be fixed point), runs the exact forward
/// on `x` and the exact backward from `delta_out`, and at each of the three GEMM points
/// also computes the `fast` result (f32 GEMM on the same grid values, then the same
/// cast), counting the elements where the two casts differ. Leaves `net` unchanged.
pub fn fast_exact_mismatch(
    net: &Mlp,
    x: &Tensor,
    delta_out: &Tensor,
) -> Result<Vec<LayerMismatch>, String> {
    let _g = tch::no_grad_guard();
    let kind = net.kind;
    let need = |l: &Layer, c: TensorClass| {
        l.formats.get(c).ok_or_else(|| {
            format!(
                "{}: class {c} is float; fast/exact mismatch needs fixed point",
                l.name
            )
        })
    };
    let mut h = quantize_plain(x.to_kind(kind), need(&net.layers[0], TensorClass::Input)?);
    let mut x_fmt = need(&net.layers[0], TensorClass::Input)?;
    let mut saved = Vec::new();
    let mut out = Vec::new();
    let f32_of = |t: &Tensor| t.to_kind(Kind::Float);
    for l in &net.layers {
        let (wf, bf, zf, af) = (
            need(l, TensorClass::Weight)?,
            need(l, TensorClass::Bias)?,
            need(l, TensorClass::Preact)?,
            need(l, TensorClass::Activation)?,
        );
        let zf = deterministic(zf);
        let (z, _) = exact_linear(&h, &x_fmt, &l.w, &wf, Some((&l.b, &bf)), &zf);
        let z_fast = quantize_plain(
            f32_of(&l.b).addmm(&f32_of(&h), &f32_of(&l.w)).to_kind(kind),
            zf,
        );
        let (d, n) = differ(&z, &z_fast);
        out.push(LayerMismatch {
            layer: l.name.clone(),
            preact: d as f64 / n as f64,
            grad: 0.0,
            error: f64::NAN,
            elements: [n, 0, 0],
        });
        let a = quantize_plain(l.act_forward(&z), af);
        saved.push((h, x_fmt, z));
        x_fmt = af;
        h = a;
    }
    let last = net.layers.len() - 1;
    let mut d = quantize_plain(
        delta_out.to_kind(kind),
        need(&net.layers[last], TensorClass::Error)?,
    );
    for (i, l) in net.layers.iter().enumerate().rev() {
        let (xi, xf, z) = &saved[i];
        let (ef, gf, wf) = (
            need(l, TensorClass::Error)?,
            need(l, TensorClass::Grad)?,
            need(l, TensorClass::Weight)?,
        );
        let gf = deterministic(gf);
        let ef = deterministic(ef);
        let dz = match l.activation {
            Activation::Identity => d,
            _ => quantize_plain(l.act_backward(&d, z), ef),
        };
        let (gw, _) = exact_linear(&xi.tr().contiguous(), xf, &dz, &ef, None, &gf);
        let gw_fast = quantize_plain(f32_of(xi).tr().mm(&f32_of(&dz)).to_kind(kind), gf);
        let (dg, ng) = differ(&gw, &gw_fast);
        out[i].grad = dg as f64 / ng as f64;
        out[i].elements[1] = ng;
        if i == 0 {
            break;
        }
        let (dx, _) = exact_linear(&dz, &ef, &l.w.tr().contiguous(), &wf, None, &ef);
        let dx_fast = quantize_plain(f32_of(&dz).mm(&f32_of(&l.w).tr()).to_kind(kind), ef);
        let (de, ne) = differ(&dx, &dx_fast);
        out[i].error = de as f64 / ne as f64;
        out[i].elements[2] = ne;
        d = dx;
    }
    Ok(out)
}
