//! The QAT path: a float master copy of the parameters, the forward as a libtorch
//! autograd graph with `quant::tensor::fake_quant_ste` at the input, weights, biases,
//! pre-activations and activations (the straight-through estimator: identity inside the
//! range, zero where saturated), and the backward by `Tensor::run_backward` into the
//! network's flat gradients. The optimizer then steps the float master copy.

use quant::tensor::fake_quant_ste;
use tch::Tensor;

use super::{Layer, Mlp};
use crate::cast::observe_into;
use crate::learned_point::{with_point_gradient, LearnedPoints};
use crate::precision::TensorClass;

impl Mlp {
    pub(super) fn forward_qat(&mut self, x: &Tensor) -> Tensor {
        let input = x.to_kind(self.kind).detach().set_requires_grad(true);
        let y = self.qat_graph(&input, true);
        self.qat_input = Some(input);
        self.qat_output = Some(y.shallow_clone());
        y.detach()
    }

    pub(super) fn forward_qat_nograd(&mut self, x: &Tensor) -> Tensor {
        self.qat_graph(&x.to_kind(self.kind), false)
    }

    /// The QAT forward as an autograd graph over the float master copy, with
    /// `fake_quant_ste` at the input, weights, biases, pre-activations and activations.
    fn qat_graph(&mut self, input: &Tensor, record: bool) -> Tensor {
        let params = if record {
            self.params.set_requires_grad(true)
        } else {
            self.params.detach()
        };
        let observe = self.observe && record;
        // Learned binary points: one gradient-recording leaf per training forward.
        let learned = self.learned.as_ref().filter(|_| record);
        let leaf = learned.map(LearnedPoints::leaf);
        self.qat_points = leaf.as_ref().map(Tensor::shallow_clone);
        let point = |li: usize, class: TensorClass| {
            let i = learned?.index(li, class)?;
            leaf.as_ref().map(|s| s.get(i as i64))
        };
        let ste = |l: &mut Layer, li: usize, class: TensorClass, t: Tensor| -> Tensor {
            if observe {
                observe_into(&mut l.ranges[class.index()], &t);
            }
            match l.formats.get(class) {
                None => t,
                Some(f) => {
                    let (y, st) = fake_quant_ste(&t, &f);
                    if record {
                        l.stats[class.index()].merge(&st);
                    }
                    match point(li, class) {
                        Some(s) => with_point_gradient(&t, y, &f, &s),
                        None => y,
                    }
                }
            }
        };
        let mut h = ste(
            &mut self.layers[0],
            0,
            TensorClass::Input,
            input.shallow_clone(),
        );
        for (li, l) in self.layers.iter_mut().enumerate() {
            let (k, n) = (l.in_dim as i64, l.out_dim as i64);
            let w = params.narrow(0, l.w_off as i64, k * n).view([k, n]);
            let b = params.narrow(0, l.b_off as i64, n);
            let w = ste(l, li, TensorClass::Weight, w);
            let b = ste(l, li, TensorClass::Bias, b);
            let z = ste(l, li, TensorClass::Preact, b.addmm(&h, &w));
            let a = l.act_forward(&z);
            h = ste(l, li, TensorClass::Activation, a);
        }
        h
    }

    pub(super) fn backward_qat(
        &mut self,
        delta_out: &Tensor,
        param_grads: bool,
        input_grad: bool,
    ) -> Option<Tensor> {
        let out = self
            .qat_output
            .take()
            .expect("backward needs a training forward first");
        let input = self
            .qat_input
            .take()
            .expect("backward needs a training forward first");
        let loss = (out * delta_out.to_kind(self.kind).detach()).sum(self.kind);
        let points = self.qat_points.take().filter(|_| param_grads);
        let mut wrt = Vec::new();
        if param_grads {
            wrt.push(self.params.shallow_clone());
        }
        if let Some(s) = &points {
            wrt.push(s.shallow_clone());
        }
        if input_grad {
            wrt.push(input.shallow_clone());
        }
        if wrt.is_empty() {
            return None;
        }
        let g = Tensor::run_backward(&[&loss], &wrt, false, false);
        let _ng = tch::no_grad_guard();
        let mut g = g.into_iter();
        if param_grads {
            let gp = g.next().expect("one gradient per input");
            self.grads.copy_(&gp);
        }
        if points.is_some() {
            let gs = g.next().expect("one gradient per input");
            if let Some(lp) = &mut self.learned {
                lp.set_grad(&gs);
            }
        }
        self.params = self.params.detach();
        self.rebuild_param_views_only();
        if input_grad {
            g.next()
        } else {
            None
        }
    }

    fn rebuild_param_views_only(&mut self) {
        for l in &mut self.layers {
            let (k, n) = (l.in_dim as i64, l.out_dim as i64);
            l.w = self.params.narrow(0, l.w_off as i64, k * n).view([k, n]);
            l.b = self.params.narrow(0, l.b_off as i64, n);
        }
    }
}
