//! A trained linear layer `x @ Wᵀ` whose backward writes both gradients straight from gemm.
//!
//! Through candle, `x.matmul(&w.t())` gives the weight's gradient as the transpose of `xᵀ @ dy`:
//! a strided view that the gradient store copies element by element into a contiguous tensor
//! (6-10 % of a fine-tuning step on the Intel Xeon, BENCHMARKS.md), after a product into a
//! zero-filled buffer. Here `dW = dyᵀ @ x` lands in `W`'s own layout, the input gradient
//! `dy @ W` likewise, and a weight that is not trained (a frozen layer) gets no gradient at all.
//! Every element is the same sum of the same products as candle's, so the results are equal bit
//! for bit (tested below).

use crate::matmul::{matmul, matmul_tensors, Lhs, Rhs};
use crate::storage::contiguous;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

/// `x (.., in) @ wᵀ` for a weight `w (out, in)`, differentiable in both.
pub fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, Linear)
}

struct Linear;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out, inp) = wl.shape().dims2()?;
        let dims = xl.dims();
        if dims.last() != Some(&inp) {
            candle_core::bail!(
                "linear: input {dims:?} does not end in the weight's {inp} (weight ({out}, {inp}))"
            );
        }
        let rows = xl.shape().elem_count() / inp.max(1);
        let mut od = dims.to_vec();
        *od.last_mut().expect("rank >= 1") = out;
        let y = match (xs, ws) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => CpuStorage::F32(matmul(
                contiguous(x, xl, "linear")?,
                contiguous(w, wl, "linear")?,
                (rows, inp, out),
                Rhs::Transposed,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(w)) => CpuStorage::F64(matmul(
                contiguous(x, xl, "linear")?,
                contiguous(w, wl, "linear")?,
                (rows, inp, out),
                Rhs::Transposed,
            )),
            _ => candle_core::bail!("linear: f32 or f64 inputs of one dtype"),
        };
        Ok((y, Shape::from(od)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = if x.track_op() {
            Some(crate::frozen_linear::matmul_w(g, w)?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(weight_grad(g, x, w.shape())?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// `gᵀ @ x` for `g (.., out)` and `x (.., in)`: the `(out, in)` weight gradient.
fn weight_grad(g: &Tensor, x: &Tensor, shape: &Shape) -> candle_core::Result<Tensor> {
    let (out, inp) = shape.dims2()?;
    let g = g.contiguous()?;
    let rows = x.elem_count() / inp.max(1);
    matmul_tensors(
        &g,
        Lhs::Transposed,
        x,
        Rhs::Plain,
        (out, rows, inp),
        (out, inp),
    )?
    .ok_or_else(|| candle_core::Error::Msg("linear-grad: contiguous f32 or f64 on cpu".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|f| f.to_bits())
            .collect()
    }

    /// Output and both gradients equal `x.matmul(&w.t())`'s bit for bit (f32, odd sizes, a
    /// reduction over more rows than gemm's 512-deep block, and the shapes of a MiniLM step).
    #[test]
    fn equals_candle_matmul_bit_for_bit() {
        let dev = Device::Cpu;
        for (rows, inp, out) in [
            (37, 131, 29),
            (3, 70, 200),
            (600, 48, 80),
            (272, 384, 1152),
            (272, 1536, 384),
        ] {
            let x =
                Var::from_tensor(&Tensor::randn(0f32, 1.0, (rows, inp), &dev).unwrap()).unwrap();
            let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (out, inp), &dev).unwrap()).unwrap();
            let c = Tensor::randn(0f32, 1.0, (rows, out), &dev).unwrap();
            let run = |ours: bool| {
                let y = if ours {
                    linear(x.as_tensor(), w.as_tensor()).unwrap()
                } else {
                    x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap()
                };
                let g = (y.sqr().unwrap() * &c)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                (
                    bits(&y),
                    bits(g.get(x.as_tensor()).unwrap()),
                    bits(g.get(w.as_tensor()).unwrap()),
                )
            };
            assert!(
                run(true) == run(false),
                "({rows}, {inp}) x ({out}, {inp})ᵀ differs from candle"
            );
        }
    }

    /// Gradients match central finite differences in f64, for a 3-D input.
    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 1.0, (2, 3, 5), &dev).unwrap();
        let w = Tensor::randn(0f64, 1.0, (4, 5), &dev).unwrap();
        let c = Tensor::randn(0f64, 1.0, (2, 3, 4), &dev).unwrap();
        let f = |x: &Tensor, w: &Tensor| {
            (linear(x, w).unwrap().sqr().unwrap() * &c)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
        let loss = (linear(xv.as_tensor(), wv.as_tensor())
            .unwrap()
            .sqr()
            .unwrap()
            * &c)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = loss.backward().unwrap();
        for (t, grad, is_x) in [
            (&x, g.get(xv.as_tensor()).unwrap(), true),
            (&w, g.get(wv.as_tensor()).unwrap(), false),
        ] {
            let base = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let an = grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for i in 0..base.len() {
                let at = |d: f64| {
                    let mut v = base.clone();
                    v[i] += d;
                    let p = Tensor::from_vec(v, t.shape(), &dev).unwrap();
                    if is_x {
                        f(&p, &w)
                    } else {
                        f(&x, &p)
                    }
                };
                let fd = (at(1e-6) - at(-1e-6)) / 2e-6;
                assert!(
                    (fd - an[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "element {i}: analytic {} vs finite difference {fd}",
                    an[i]
                );
            }
        }
    }

    /// A weight that is not a variable gets no gradient; the input still does.
    #[test]
    fn a_constant_weight_gets_no_gradient() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 6), &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1.0, (3, 6), &dev).unwrap();
        let g = linear(x.as_tensor(), &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&w).is_none());
        assert_eq!(g.get(x.as_tensor()).unwrap().dims(), &[4, 6]);
    }

    #[test]
    fn refuses_a_weight_of_the_wrong_width() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 5), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((3, 4), DType::F32, &dev).unwrap();
        assert!(linear(&x, &w)
            .unwrap_err()
            .to_string()
            .contains("linear: input [2, 5]"));
    }
}
