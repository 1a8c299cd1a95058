//! The tensor fixed-point path: the forward and explicit backward as libtorch tensor
//! operations with a `quant` cast at every point (`fast` GEMMs in f32 on the grid values,
//! or `exact` GEMMs through `quant::tensor::exact_linear`). It is the reference the fused
//! path (`super::fused`) equals bit for bit, and the only fixed-point path that feeds the
//! range observers. Runs under `tch::no_grad`.

use quant::tensor::{exact_linear, QuantStats};
use quant::FxFormat;
use tch::{Kind, Tensor};

use super::{holds, Activation, Mlp};
use crate::cast::observe_into;
use crate::precision::{Gemm, TensorClass};

impl Mlp {
    pub(super) fn forward_fixed(&mut self, x: &Tensor, cache: bool) -> Tensor {
        if self.fusable() {
            return match (self.kind, self.params32.is_some()) {
                (Kind::Double, true) => self.forward_fused::<f64, f32>(x, cache),
                (Kind::Double, false) => self.forward_fused::<f64, f64>(x, cache),
                (_, true) => self.forward_fused::<f32, f64>(x, cache),
                _ => self.forward_fused::<f32, f32>(x, cache),
            };
        }
        let observe = self.observe;
        let kind = self.kind;
        let gemm = self.gemm;
        let first_fmt = self.layers[0].formats.get(TensorClass::Input);
        let mut h = {
            let l0 = &mut self.layers[0];
            l0.cast(
                TensorClass::Input,
                x.to_kind(kind),
                observe,
                &mut self.source,
            )
        };
        let mut x_fmt = first_fmt;
        for l in &mut self.layers {
            let pre_fmt = l.formats.get(TensorClass::Preact);
            let (w_fmt, b_fmt) = (
                l.formats.get(TensorClass::Weight),
                l.formats.get(TensorClass::Bias),
            );
            let mut x32 = None;
            let z = match (gemm, x_fmt, w_fmt, b_fmt, pre_fmt) {
                (Gemm::Exact, Some(xf), Some(wf), Some(bf), Some(zf)) => {
                    let (z, st) = exact_linear(&h, &xf, &l.w, &wf, Some((&l.b, &bf)), &zf);
                    if observe {
                        // The exact path casts inside; observe the float GEMM for ranges.
                        observe_into(
                            &mut l.ranges[TensorClass::Preact.index()],
                            &l.b.addmm(&h, &l.w),
                        );
                    }
                    l.stats[TensorClass::Preact.index()].merge(&st);
                    z
                }
                _ => {
                    let z = match &l.w32 {
                        Some((w32, b32)) => {
                            let h32 = h.to_kind(Kind::Float);
                            let z = b32.addmm(&h32, w32).to_kind(kind);
                            x32 = Some(h32);
                            z
                        }
                        None => l.b.addmm(&h, &l.w),
                    };
                    l.cast(TensorClass::Preact, z, observe, &mut self.source)
                }
            };
            // ReLU and identity map grid values of the pre-activation format onto
            // themselves; when the activation format holds every such value the cast is
            // the identity and is skipped (counted, observed, not computed).
            let a = if !matches!(l.activation, Activation::Tanh { .. })
                && holds(l.formats.get(TensorClass::Activation), pre_fmt)
            {
                l.pass(TensorClass::Activation, l.act_forward(&z), observe)
            } else {
                l.activate_cast(&z, gemm == Gemm::Exact, observe, &mut self.source)
            };
            if cache {
                l.x = Some(h);
                l.x32 = x32;
                l.z = Some(z);
                l.a = Some(a.shallow_clone());
            }
            x_fmt = l.formats.get(TensorClass::Activation);
            h = a;
        }
        h
    }

    pub(super) fn backward_fixed(
        &mut self,
        delta_out: &Tensor,
        param_grads: bool,
        input_grad: bool,
    ) -> Option<Tensor> {
        if self.fusable() {
            return match (self.kind, self.params32.is_some()) {
                (Kind::Double, true) => {
                    self.backward_fused::<f64, f32>(delta_out, param_grads, input_grad)
                }
                (Kind::Double, false) => {
                    self.backward_fused::<f64, f64>(delta_out, param_grads, input_grad)
                }
                (_, true) => self.backward_fused::<f32, f64>(delta_out, param_grads, input_grad),
                _ => self.backward_fused::<f32, f32>(delta_out, param_grads, input_grad),
            };
        }
        let observe = self.observe;
        let kind = self.kind;
        let gemm = self.gemm;
        let n = self.layers.len();
        let mut d = delta_out.to_kind(kind);
        for i in (0..n).rev() {
            let x_fmt = if i == 0 {
                self.layers[0].formats.get(TensorClass::Input)
            } else {
                self.layers[i - 1].formats.get(TensorClass::Activation)
            };
            // The incoming delta_a is on the error grid of the layer above (or of this
            // layer, for the output layer: the caller casts the loss gradient there).
            let d_fmt = self.layers[(i + 1).min(n - 1)]
                .formats
                .get(TensorClass::Error);
            let l = &mut self.layers[i];
            let z = l.z.take().expect("backward needs a training forward first");
            let x = l.x.take().expect("backward needs a training forward first");
            let x32 = l.x32.take();
            let dz = match l.activation {
                Activation::Identity => d,
                // ReLU' is 0 or 1: a grid value stays on its grid (identity cast skipped).
                Activation::Relu if holds(l.formats.get(TensorClass::Error), d_fmt) => {
                    let dz = l.act_backward(&d, &z);
                    l.pass(TensorClass::Error, dz, observe)
                }
                _ => {
                    let dz = l.act_backward(&d, &z);
                    l.cast(TensorClass::Error, dz, observe, &mut self.source)
                }
            };
            let e_fmt = l.formats.get(TensorClass::Error);
            let g_fmt = l.formats.get(TensorClass::Grad);
            let w_fmt = l.formats.get(TensorClass::Weight);
            let exact = match (gemm, x_fmt, e_fmt, g_fmt, w_fmt) {
                (Gemm::Exact, Some(xf), Some(ef), Some(gf), Some(wf)) => Some((xf, ef, gf, wf)),
                _ => None,
            };
            let dz32 = (l.w32.is_some() && exact.is_none()).then(|| dz.to_kind(Kind::Float));
            if param_grads {
                let (gw, gb) = match exact {
                    Some((xf, ef, gf, _)) => {
                        if observe {
                            observe_into(&mut l.ranges[TensorClass::Grad.index()], &x.tr().mm(&dz));
                        }
                        let st = &mut l.stats[TensorClass::Grad.index()];
                        exact_param_grads(&x, &xf, &dz, &ef, &gf, st)
                    }
                    None => match (&x32, &dz32) {
                        (Some(x32), Some(dz32)) => {
                            let gw = x32.tr().mm(dz32).to_kind(kind);
                            let gb = dz.sum_dim_intlist([0i64].as_slice(), false, kind);
                            (
                                l.cast(TensorClass::Grad, gw, observe, &mut self.source),
                                l.cast(TensorClass::Grad, gb, observe, &mut self.source),
                            )
                        }
                        _ if l.formats.get(TensorClass::Grad).is_none() && !observe => {
                            // Float gradients: straight into the flat gradient buffer.
                            let _ = x.tr().mm_out(&l.gw, &dz);
                            let _ = dz.sum_intlist_out(&l.gb, [0i64].as_slice(), false, kind);
                            (Tensor::new(), Tensor::new())
                        }
                        _ => {
                            let gw = x.tr().mm(&dz);
                            let gb = dz.sum_dim_intlist([0i64].as_slice(), false, kind);
                            (
                                l.cast(TensorClass::Grad, gw, observe, &mut self.source),
                                l.cast(TensorClass::Grad, gb, observe, &mut self.source),
                            )
                        }
                    },
                };
                if gw.defined() {
                    l.gw.copy_(&gw);
                    l.gb.copy_(&gb);
                }
            }
            if i == 0 && !input_grad {
                return None;
            }
            let dx = match exact {
                Some((_, ef, _, wf)) => {
                    let (dx, st) = exact_linear(&dz, &ef, &l.w.tr().contiguous(), &wf, None, &ef);
                    let l = &mut self.layers[i];
                    if observe {
                        observe_into(&mut l.ranges[TensorClass::Error.index()], &dz.mm(&l.w.tr()));
                    }
                    l.stats[TensorClass::Error.index()].merge(&st);
                    dx
                }
                None => {
                    let dx = match (&self.layers[i].w32, &dz32) {
                        (Some((w32, _)), Some(dz32)) => dz32.mm(&w32.tr()).to_kind(kind),
                        _ => dz.mm(&self.layers[i].w.tr()),
                    };
                    // delta_x belongs to the layer below (its delta_a), cast in this
                    // layer's error format.
                    let l = &mut self.layers[i];
                    l.cast(TensorClass::Error, dx, observe, &mut self.source)
                }
            };
            d = dx;
        }
        Some(d)
    }
}

/// The exact weight and bias gradients `cast(x^T dz)` and `cast(sum over the batch of
/// dz)` into `gf` (through `exact_linear`; the bias as a GEMM with a row of ones), with
/// their cast counts added to `stats`.
pub(super) fn exact_param_grads(
    x: &Tensor,
    xf: &FxFormat,
    dz: &Tensor,
    ef: &FxFormat,
    gf: &FxFormat,
    stats: &mut QuantStats,
) -> (Tensor, Tensor) {
    let (gw, s1) = exact_linear(&x.tr().contiguous(), xf, dz, ef, None, gf);
    let ones = Tensor::ones([1, dz.size()[0]], (dz.kind(), dz.device()));
    let one =
        FxFormat::new(true, 2, 2, gf.rounding, gf.overflow).expect("ap_fixed<2,2> holds 1 exactly");
    let (gb, s2) = exact_linear(&ones, &one, dz, ef, None, gf);
    stats.merge(&s1);
    stats.merge(&s2);
    (gw, gb.view([-1]))
}
