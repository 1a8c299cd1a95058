//! The fused path: the network's forward, backward and soft update through the slice
//! kernels of `crate::fused` (pure fixed point, `fast` GEMMs, no range observation;
//! affine activation quantizers go through `Layer::activate_cast`; see `Mlp::fusable`).
//! Each GEMM result is read once: cast, ReLU and the f32 operand of the next GEMM in one
//! pass. A hidden ReLU layer whose ReLU backward the layer above fuses
//! into its error kernel keeps only that f32 operand (the mask is read from it, see
//! `relu_backward_from_activation`); the error kernel also sums the bias gradient where
//! every order of addition is exact, and writes storage errors only where something
//! reads them. The same values, counts and stochastic draws as `super::fixed`, tested
//! bit for bit in `agents/tests/mlp.rs`.

use tch::{Kind, Tensor};

use quant::tensor::grid_mm;
use quant::FxFormat;

use super::fixed::exact_param_grads;
use super::{holds, Activation, Layer, Mlp};
use crate::fused::{self, Store};
use crate::params::segments;
use crate::precision::{Gemm, TensorClass};

/// Whether a layer's weight- and bias-gradient products over a batch of `rows` are exact
/// in f64 (`x^T dz` with k = rows, and the column sums of `dz`).
pub(super) fn exact_grad_gemms(xf: &FxFormat, ef: &FxFormat, rows: usize) -> bool {
    quant::f64_gemm_is_exact(xf, ef, rows, None) && fused::sums_are_exact::<f64>(ef, rows)
}

/// Whether `layer`'s ReLU backward is fused into `above`'s error kernel (`Mlp::backward_fused`)
/// with the mask read from `layer`'s f32 activation instead of its pre-activation: the
/// error cast of `layer` is then the identity, and `f32(max(0, z)) <= 0` exactly when
/// `z <= 0` (NaN passes both) because every positive pre-activation is at least one LSB,
/// 2^-F, which f32 keeps non-zero for F < 149. Never under an affine activation
/// quantizer, which maps small positive values to 0 (the mask then comes from `z`).
fn relu_backward_from_activation(layer: &Layer, above: &Layer) -> bool {
    let pre = layer.formats.get(TensorClass::Preact);
    layer.activation == Activation::Relu
        && layer.affine(TensorClass::Activation).is_none()
        && holds(
            layer.formats.get(TensorClass::Error),
            above.formats.get(TensorClass::Error),
        )
        && holds(layer.formats.get(TensorClass::Activation), pre)
        && pre.is_some_and(|f| f.frac_bits() < 149)
}

/// The fractional bits of `layer`'s `class` format (fused networks have every format).
fn frac(layer: &Layer, class: TensorClass) -> i32 {
    layer.formats.get(class).expect("fusable").frac_bits()
}

/// The fractional bits of layer `i`'s GEMM input: the network input's format, or the
/// activation format of the layer below.
fn input_frac(layers: &[Layer], i: usize) -> i32 {
    match i {
        0 => frac(&layers[0], TensorClass::Input),
        _ => frac(&layers[i - 1], TensorClass::Activation),
    }
}

impl Mlp {
    /// `forward_fixed` with the fused kernels (see `fusable`); the same values, counts
    /// and stochastic draws.
    ///
    /// `G` is the GEMMs' type: f32 (f32 storage, or f64 storage with its f32 shadow:
    /// `fast`), or f64 on f64 storage (`exact`: every GEMM is exact in f64, see
    /// `Mlp::fusable`).
    pub(super) fn forward_fused<T: Store, G: Store>(&mut self, x: &Tensor, cache: bool) -> Tensor {
        let kind = self.kind;
        let shadow = self.params32.is_some();
        let opts = (kind, tch::Device::Cpu);
        let mut h = {
            let l0 = &mut self.layers[0];
            l0.cast(TensorClass::Input, x.to_kind(kind), false, &mut self.source)
        };
        // The f32 operand of the next GEMM (the storage itself without a shadow).
        let mut h32: Option<Tensor> = None;
        let n_layers = self.layers.len();
        // Hidden ReLU layers whose ReLU backward the layer above fuses into its error
        // kernel (see `backward_fused`) need neither their pre-activation nor their
        // storage activation there: the mask comes from the f32 activation.
        let lean: Vec<bool> = (0..n_layers)
            .map(|i| {
                i + 1 < n_layers
                    && relu_backward_from_activation(&self.layers[i], &self.layers[i + 1])
            })
            .collect();
        // `exact` GEMMs on f64 grid values: the integer kernel (`quant::tensor::grid_mm`)
        // with each operand's fractional bits.
        let grid = self.gemm == Gemm::Exact && G::KIND == Kind::Double;
        let x_fracs: Vec<i32> = match grid {
            true => (0..n_layers).map(|i| input_frac(&self.layers, i)).collect(),
            false => Vec::new(),
        };
        for (idx, l) in self.layers.iter_mut().enumerate() {
            let z32 = match &l.w32 {
                Some((w32, b32)) => {
                    let x32 = h32.take().unwrap_or_else(|| h.to_kind(G::KIND));
                    let z32 = if grid {
                        let wf = frac(l, TensorClass::Weight);
                        grid_mm(&x32, x_fracs[idx], w32, wf, Some(b32))
                    } else {
                        b32.addmm(&x32, w32)
                    };
                    h32 = Some(x32);
                    z32
                }
                None if grid => {
                    let wf = frac(l, TensorClass::Weight);
                    grid_mm(&h, x_fracs[idx], &l.w, wf, Some(&l.b))
                }
                None => l.b.addmm(&h, &l.w),
            };
            let z32 = z32.contiguous();
            let n = z32.numel();
            let pre = l.formats.get(TensorClass::Preact).expect("fusable");
            let act_fmt = l.formats.get(TensorClass::Activation);
            // The activation cast is the identity (not under an affine quantizer, which
            // `activate_cast` applies).
            let passes = !matches!(l.activation, Activation::Tanh { .. })
                && l.affine(TensorClass::Activation).is_none()
                && holds(act_fmt, Some(pre));
            let relu = passes && l.activation == Activation::Relu;
            if relu && idx + 1 < n_layers && (!cache || lean[idx]) {
                // Nothing keeps this layer's pre-activation or f64 activation (target
                // networks, or a lean layer): only the f32 operand of the next GEMM is
                // written (the storage itself when it is f32).
                if cache {
                    l.x = Some(std::mem::replace(&mut h, Tensor::new()));
                    l.x32 = if l.w32.is_some() { h32.take() } else { None };
                    l.z = None;
                    l.a = None;
                }
                let a32 = Tensor::empty(z32.size(), (G::KIND, tch::Device::Cpu));
                // SAFETY: z32 and a32 are distinct fresh contiguous tensors.
                unsafe {
                    let st = &mut l.stats[TensorClass::Preact.index()];
                    let z32s = fused::slice::<G>(&z32);
                    let a32s = fused::slice_mut::<G>(&a32);
                    fused::preact_relu::<T, G>(z32s, &pre, &mut self.source, st, a32s);
                }
                l.stats[TensorClass::Activation.index()].elements += n as u64;
                if shadow {
                    h = Tensor::new();
                    h32 = Some(a32);
                } else {
                    h = a32;
                    h32 = None;
                }
                continue;
            }
            let z = Tensor::empty(z32.size(), opts);
            let (a, a32) = if relu {
                let a = Tensor::empty(z32.size(), opts);
                let a32 = shadow.then(|| Tensor::empty(z32.size(), (G::KIND, tch::Device::Cpu)));
                (Some(a), a32)
            } else {
                (None, None)
            };
            // SAFETY: z32, z, a and a32 are distinct fresh contiguous CPU tensors.
            unsafe {
                let st = &mut l.stats[TensorClass::Preact.index()];
                let zs = fused::slice_mut::<T>(&z);
                let act = match (&a, &a32) {
                    (Some(a), a32) => Some((
                        fused::slice_mut::<T>(a),
                        a32.as_ref().map(|t| fused::slice_mut::<G>(t)),
                    )),
                    _ => None,
                };
                let z32s = fused::slice::<G>(&z32);
                fused::preact(z32s, &pre, &mut self.source, st, zs, act);
            }
            let a = if passes {
                l.stats[TensorClass::Activation.index()].elements += n as u64;
                a.unwrap_or_else(|| l.act_forward(&z))
            } else {
                l.activate_cast(&z, self.gemm == Gemm::Exact, false, &mut self.source)
            };
            let x_in = std::mem::replace(&mut h, a.shallow_clone());
            let x32_in = std::mem::replace(&mut h32, a32);
            if cache {
                l.x = Some(x_in);
                l.x32 = if l.w32.is_some() { x32_in } else { None };
                l.z = Some(z);
                l.a = Some(a);
            }
        }
        h
    }

    /// `backward_fixed` with the fused kernels (see `fusable`); the same values, counts
    /// and stochastic draws.
    pub(super) fn backward_fused<T: Store, G: Store>(
        &mut self,
        delta_out: &Tensor,
        param_grads: bool,
        input_grad: bool,
    ) -> Option<Tensor> {
        let kind = self.kind;
        let shadow = self.params32.is_some();
        let opts = (kind, tch::Device::Cpu);
        let n = self.layers.len();
        let mut d = delta_out.to_kind(kind);
        let grid = self.gemm == Gemm::Exact && G::KIND == Kind::Double;
        // (delta_z, its f32 rounding, its column sums) of the layer below, when the error
        // kernel above already applied that layer's ReLU backward. With the f32 shadow
        // delta_z itself is only kept when its column sums (the bias gradient) are not.
        let mut ready: Option<(Tensor, Option<Tensor>, Option<Tensor>)> = None;
        for i in (0..n).rev() {
            let d_fmt = self.layers[(i + 1).min(n - 1)]
                .formats
                .get(TensorClass::Error);
            let (below, rest) = self.layers.split_at_mut(i);
            let l = &mut rest[0];
            let z = l.z.take();
            let x = l.x.take().expect("backward needs a training forward first");
            let x32 = l.x32.take();
            let (dz, dz32, dz_sums) = match ready.take() {
                Some(r) => r,
                None => {
                    let z = z.expect("backward needs a training forward first");
                    let dz = match l.activation {
                        Activation::Identity => d,
                        Activation::Relu if holds(l.formats.get(TensorClass::Error), d_fmt) => {
                            let dz = l.act_backward(&d, &z);
                            l.pass(TensorClass::Error, dz, false)
                        }
                        _ => {
                            let dz = l.act_backward(&d, &z);
                            l.cast(TensorClass::Error, dz, false, &mut self.source)
                        }
                    };
                    let dz32 = shadow.then(|| dz.to_kind(G::KIND));
                    (dz, dz32, None)
                }
            };
            let dzg = dz32.as_ref().unwrap_or(&dz);
            if param_grads {
                let xg = x32.as_ref().unwrap_or(&x);
                let gf = l.formats.get(TensorClass::Grad).expect("fusable");
                let x_fmt = match below.last() {
                    Some(b) => b.formats.get(TensorClass::Activation),
                    None => l.formats.get(TensorClass::Input),
                };
                let ef = l.formats.get(TensorClass::Error).expect("fusable");
                let rows = dz.size()[0] as usize;
                if self.gemm == Gemm::Exact
                    && !exact_grad_gemms(&x_fmt.expect("fusable"), &ef, rows)
                {
                    // The batch is too large for one exact f64 GEMM: the limb path.
                    let st = &mut l.stats[TensorClass::Grad.index()];
                    let (gw, gb) =
                        exact_param_grads(&x, &x_fmt.expect("fusable"), &dz, &ef, &gf, st);
                    l.gw.copy_(&gw);
                    l.gb.copy_(&gb);
                } else {
                    let gw32 = if grid {
                        let xfr = x_fmt.expect("fusable").frac_bits();
                        grid_mm(&xg.tr(), xfr, dzg, ef.frac_bits(), None)
                    } else {
                        xg.tr().mm(dzg).contiguous()
                    };
                    // SAFETY: gw32 is a fresh tensor; l.gw is a contiguous view into the
                    // flat gradients that nothing else reads or writes here.
                    unsafe {
                        let src = fused::slice::<G>(&gw32);
                        let dst = fused::slice_mut::<T>(&l.gw);
                        let st = &mut l.stats[TensorClass::Grad.index()];
                        fused::cast_gemm_into(src, &gf, &mut self.source, st, dst);
                    }
                    // Exact GEMMs sum the bias gradient in f64 where the storage type
                    // cannot hold every partial sum (exact there: `exact_grad_gemms`).
                    let wide_sum = self.gemm == Gemm::Exact
                        && dz_sums.is_none()
                        && !fused::sums_are_exact::<T>(&ef, rows);
                    let st = &mut l.stats[TensorClass::Grad.index()];
                    if wide_sum {
                        let gb = dz.sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
                        // SAFETY: gb is a fresh tensor; l.gb is a contiguous view into the
                        // flat gradients that nothing else reads or writes here.
                        unsafe {
                            let (src, dst) =
                                (fused::slice::<f64>(&gb), fused::slice_mut::<T>(&l.gb));
                            fused::cast_gemm_into(src, &gf, &mut self.source, st, dst);
                        }
                    } else {
                        let gb = dz_sums
                            .unwrap_or_else(|| dz.sum_dim_intlist([0i64].as_slice(), false, kind));
                        // SAFETY: as above.
                        unsafe {
                            let (src, dst) = (fused::slice::<T>(&gb), fused::slice_mut::<T>(&l.gb));
                            fused::cast_into_storage(src, &gf, &mut self.source, st, dst);
                        }
                    }
                }
            }
            if i == 0 && !input_grad {
                return None;
            }
            let dx32 = match &l.w32 {
                Some((w32, _)) if grid => {
                    let ef = frac(l, TensorClass::Error);
                    grid_mm(dzg, ef, &w32.tr(), frac(l, TensorClass::Weight), None)
                }
                Some((w32, _)) => dzg.mm(&w32.tr()),
                None if grid => {
                    let ef = frac(l, TensorClass::Error);
                    grid_mm(&dz, ef, &l.w.tr(), frac(l, TensorClass::Weight), None)
                }
                None => dz.mm(&l.w.tr()),
            }
            .contiguous();
            let ef = l.formats.get(TensorClass::Error).expect("fusable");
            // The layer below's ReLU backward fuses in when its error cast is the identity
            // (its delta_a arrives on this layer's error grid).
            let relu_below = below.last_mut().filter(|b| {
                b.activation == Activation::Relu
                    && holds(b.formats.get(TensorClass::Error), Some(ef))
            });
            // The ReLU mask: the layer below's pre-activation when it kept one, else its
            // activation in f32 (this layer's GEMM operand; zero exactly where the
            // pre-activation is <= 0, see `relu_backward_from_activation`).
            let a32 = x32.as_ref().unwrap_or(&x);
            let size = dx32.size();
            let (rows, cols) = (size[0] as usize, size[1] as usize);
            // The layer below's bias gradient from the kernel's column sums where they are
            // exact (then equal to libtorch's sum); its errors in storage only where
            // something reads them (no shadow: the GEMM operand; else the inexact sum).
            let sums = relu_below.is_some() && param_grads && fused::sums_are_exact::<T>(&ef, rows);
            let keep = relu_below.is_none() || !shadow || (param_grads && !sums);
            let out = keep.then(|| Tensor::empty(size.as_slice(), opts));
            let out32 = (relu_below.is_some() && shadow)
                .then(|| Tensor::empty(size.as_slice(), (G::KIND, tch::Device::Cpu)));
            let out_sums = sums.then(|| Tensor::empty([cols as i64], opts));
            let m = dx32.numel();
            // SAFETY: dx32, out, out32 and out_sums are distinct fresh tensors; the layer
            // below's cached pre-activation or this layer's input is only read.
            unsafe {
                let src = fused::slice::<G>(&dx32);
                let st = &mut l.stats[TensorClass::Error.index()];
                let o = fused::ErrorOut {
                    d: out.as_ref().map(|t| fused::slice_mut::<T>(t)),
                    d32: out32.as_ref().map(|t| fused::slice_mut::<G>(t)),
                    col_sums: out_sums.as_ref().map(|t| (fused::slice_mut::<T>(t), cols)),
                };
                match relu_below.as_ref().map(|b| b.z.as_ref()) {
                    Some(Some(z)) => {
                        let zb = Some(fused::slice::<T>(z));
                        fused::error(src, &ef, &mut self.source, st, zb, o)
                    }
                    Some(None) => {
                        // The lean layer's activation: the GEMM operand, of the GEMM's type.
                        let ab = Some(fused::slice::<G>(a32));
                        fused::error(src, &ef, &mut self.source, st, ab, o)
                    }
                    None => fused::error::<G, T, T>(src, &ef, &mut self.source, st, None, o),
                }
            }
            let out = out.unwrap_or_default();
            match relu_below {
                Some(b) => {
                    b.stats[TensorClass::Error.index()].elements += m as u64;
                    ready = Some((out, out32, out_sums));
                    d = Tensor::new();
                }
                None => d = out,
            }
        }
        Some(d)
    }

    /// `soft_update_from`'s fixed-point branch with the fused kernel (see `fusable`).
    /// `S` is the shadow's type (unused without one).
    pub(super) fn soft_update_fused<T: Store, S: Store>(&mut self, src: &Tensor, tau: f64) {
        let mut view = self.param_view();
        let params = view.params.shallow_clone();
        let p32 = view.shadow.as_deref().map(Tensor::shallow_clone);
        let source = &mut *view.source;
        let segs = segments(&mut view.layers);
        // SAFETY: `src` is the online network's parameters (or a conversion of them),
        // never this network's; params and its shadow are distinct contiguous tensors,
        // each sliced once.
        unsafe {
            let src = fused::slice::<T>(src);
            let p = fused::slice_mut::<T>(&params);
            let mut p32 = p32.as_ref().map(|t| fused::slice_mut::<S>(t));
            for mut seg in segs {
                fused::soft_update(&mut seg, src, p, p32.as_deref_mut(), tau, source);
            }
        }
    }
}
