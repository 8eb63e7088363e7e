//! Fused activations with analytic backward: exact-erf GELU (encoder, adaptor) and SwiGLU
//! `silu(gate)·up` (LLM feed-forward). One vectorised pass forward and one per input gradient,
//! instead of candle's scalar-libm GELU and the five-op SiLU-times-up composition with its
//! backward. f32 runs the `fastmath` kernels; f64 (finite-difference tests) uses libm.

use crate::fastmath;
use crate::storage::contiguous;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use std::mem::MaybeUninit;

fn gelu64(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2))
}
fn gelu_grad64(x: f64, g: f64) -> f64 {
    let cdf = 0.5 * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2));
    g * (cdf + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt())
}
fn sig64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// An element-wise kernel on 1-3 same-shape inputs, f32 and f64.
#[derive(Clone, Copy)]
enum Kind {
    Gelu,
    GeluGrad,
    SwiGlu,
    SwiGluGradGate,
    SwiGluGradUp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Gelu => "fused-gelu",
            Kind::GeluGrad => "fused-gelu-grad",
            Kind::SwiGlu => "fused-swiglu",
            Kind::SwiGluGradGate => "fused-swiglu-grad-gate",
            Kind::SwiGluGradUp => "fused-swiglu-grad-up",
        }
    }

    fn run(self, ins: &[(&CpuStorage, &Layout)]) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = ins[0].1.shape().clone();
        for (_, l) in ins {
            if l.shape() != &shape {
                candle_core::bail!(
                    "{}: shapes differ: {:?} and {:?}",
                    self.name(),
                    shape,
                    l.shape()
                );
            }
        }
        if let Ok(v) = ins
            .iter()
            .map(|(s, l)| match s {
                CpuStorage::F32(x) => contiguous(x, l, "activation"),
                _ => Err(candle_core::Error::Msg(String::new())),
            })
            .collect::<candle_core::Result<Vec<&[f32]>>>()
        {
            let out = match self {
                Kind::Gelu => fastmath::gelu(v[0]),
                Kind::GeluGrad => fastmath::gelu_grad(v[0], v[1]),
                Kind::SwiGlu => fastmath::swiglu(v[0], v[1]),
                Kind::SwiGluGradGate => fastmath::swiglu_grad_gate(v[0], v[1], v[2]),
                Kind::SwiGluGradUp => fastmath::swiglu_grad_up(v[0], v[1]),
            };
            return Ok((CpuStorage::F32(out), shape));
        }
        let v = ins
            .iter()
            .map(|(s, l)| match s {
                CpuStorage::F64(x) => contiguous(x, l, "activation"),
                _ => Err(candle_core::Error::Msg(format!(
                    "{}: inputs must all be f32 or all f64",
                    self.name()
                ))),
            })
            .collect::<candle_core::Result<Vec<&[f64]>>>()?;
        let n = v[0].len();
        let out: Vec<f64> = (0..n)
            .map(|i| match self {
                Kind::Gelu => gelu64(v[0][i]),
                Kind::GeluGrad => gelu_grad64(v[0][i], v[1][i]),
                Kind::SwiGlu => v[0][i] * sig64(v[0][i]) * v[1][i],
                Kind::SwiGluGradGate => {
                    let (g, s) = (v[0][i], sig64(v[0][i]));
                    v[2][i] * v[1][i] * s * (1.0 + g * (1.0 - s))
                }
                Kind::SwiGluGradUp => v[1][i] * v[0][i] * sig64(v[0][i]),
            })
            .collect();
        Ok((CpuStorage::F64(out), shape))
    }
}

impl CustomOp1 for Kind {
    fn name(&self) -> &'static str {
        Kind::name(*self)
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(&[(s, l)])
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        match self {
            Kind::Gelu => Ok(Some(x.apply_op2(&g.contiguous()?, Kind::GeluGrad)?)),
            _ => candle_core::bail!("{}: no second-order gradient", Kind::name(*self)),
        }
    }
}

impl CustomOp2 for Kind {
    fn name(&self) -> &'static str {
        Kind::name(*self)
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(&[(s1, l1), (s2, l2)])
    }
    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        match self {
            Kind::SwiGlu => {
                let g = g.contiguous()?;
                let dg = gate.apply_op3(up, &g, Kind::SwiGluGradGate)?;
                let du = gate.apply_op2(&g, Kind::SwiGluGradUp)?;
                Ok((Some(dg), Some(du)))
            }
            _ => candle_core::bail!("{}: no second-order gradient", Kind::name(*self)),
        }
    }
}

impl CustomOp3 for Kind {
    fn name(&self) -> &'static str {
        Kind::name(*self)
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(&[(s1, l1), (s2, l2), (s3, l3)])
    }
}

/// Exact-erf GELU `x·Φ(x)`, vectorised, with a backward pass.
pub fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Kind::Gelu)
}

/// SwiGLU `silu(gate)·up`, vectorised, with a backward pass to both inputs.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    gate.contiguous()?
        .apply_op2(&up.contiguous()?, Kind::SwiGlu)
}

/// SwiGLU on stacked `[gate | up]` rows `(..., 2f)` -> `(..., f)`, or (with `dy`) its input
/// gradient `(..., 2f)`; forward-only kernels for the LLM's block op, which chains the backward.
struct Stacked {
    grad: bool,
}

/// Runs `row` on every row into a fresh output that is not zero-filled first (`row` must write
/// all of its output row: `f` elements, or `2f` with `grad`).
fn stacked_rows<'a, T: Copy + Send + Sync>(
    gu: &'a [T],
    dy: Option<&'a [T]>,
    f: usize,
    grad: bool,
    row: impl Fn(&[T], &[T], Option<&[T]>, &mut [MaybeUninit<T>]) + Sync + Send,
) -> Vec<T> {
    use rayon::prelude::*;
    let rows = gu.len() / (2 * f).max(1);
    let w = if grad { 2 * f } else { f };
    let mut out: Vec<T> = Vec::with_capacity(rows * w);
    if w > 0 {
        out.spare_capacity_mut()[..rows * w]
            .par_chunks_mut(w)
            .enumerate()
            .for_each(|(r, o)| {
                let x = &gu[r * 2 * f..(r + 1) * 2 * f];
                row(&x[..f], &x[f..], dy.map(|d| &d[r * f..(r + 1) * f]), o);
            });
    }
    // SAFETY: every row kernel below writes all `w` elements of its output row.
    unsafe { out.set_len(rows * w) };
    out
}

impl Stacked {
    fn run(
        &self,
        gu: (&CpuStorage, &Layout),
        dy: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let mut dims = gu.1.dims().to_vec();
        let f = dims.last().copied().unwrap_or(0) / 2;
        if !self.grad {
            *dims.last_mut().expect("rank >= 1") = f;
        }
        let out = match (gu.0, dy.map(|d| d.0)) {
            (CpuStorage::F32(x), d) => {
                let x = contiguous(x, gu.1, "activation")?;
                let d = match (d, dy) {
                    (Some(CpuStorage::F32(d)), Some((_, l))) => {
                        Some(contiguous(d, l, "activation")?)
                    }
                    (None, _) => None,
                    _ => candle_core::bail!("swiglu-stacked: inputs must both be f32"),
                };
                CpuStorage::F32(stacked_rows(x, d, f, self.grad, |g, u, d, o| match d {
                    None => fastmath::swiglu_into_uninit(g, u, o),
                    Some(d) => {
                        let (og, ou) = o.split_at_mut(f);
                        fastmath::swiglu_grad_both_into_uninit(g, u, d, og, ou);
                    }
                }))
            }
            (CpuStorage::F64(x), d) => {
                let x = contiguous(x, gu.1, "activation")?;
                let d = match (d, dy) {
                    (Some(CpuStorage::F64(d)), Some((_, l))) => {
                        Some(contiguous(d, l, "activation")?)
                    }
                    (None, _) => None,
                    _ => candle_core::bail!("swiglu-stacked: inputs must both be f64"),
                };
                CpuStorage::F64(stacked_rows(x, d, f, self.grad, |g, u, d, o| match d {
                    None => o.iter_mut().zip(g.iter().zip(u)).for_each(|(o, (&g, &u))| {
                        o.write(g * sig64(g) * u);
                    }),
                    Some(d) => {
                        for i in 0..f {
                            let s = sig64(g[i]);
                            o[i].write(d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s)));
                            o[f + i].write(d[i] * g[i] * s);
                        }
                    }
                }))
            }
            _ => candle_core::bail!("swiglu-stacked: f32 or f64 only"),
        };
        Ok((out, Shape::from(dims)))
    }
}

impl CustomOp1 for Stacked {
    fn name(&self) -> &'static str {
        "swiglu-stacked"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run((s, l), None)
    }
}

impl CustomOp2 for Stacked {
    fn name(&self) -> &'static str {
        "swiglu-stacked-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run((s1, l1), Some((s2, l2)))
    }
}

/// `silu(gate)·up` for stacked `[gate | up]` rows `(..., 2f)` (no graph: see `llm::train`).
pub fn swiglu_stacked(gu: &Tensor) -> candle_core::Result<Tensor> {
    gu.detach().contiguous()?.apply_op1(Stacked { grad: false })
}

/// The gradient `(..., 2f)` of [`swiglu_stacked`] at `gu` for the upstream gradient `dy (..., f)`.
pub fn swiglu_stacked_grad(gu: &Tensor, dy: &Tensor) -> candle_core::Result<Tensor> {
    gu.detach()
        .contiguous()?
        .apply_op2(&dy.detach().contiguous()?, Stacked { grad: true })
}
