//! A frozen projection fused with the cheap function before it: `y = r + f(x) @ Wᵀ` keeps only
//! `x` (and `r`) in the autograd graph; the backward recomputes what it needs of `f` from `x`.
//!
//! candle's graph keeps every op's inputs alive until the backward ends. A frozen linear layer's
//! backward needs only its weight, yet its input (the normed hidden state, the attention output,
//! the SwiGLU product) stayed alive in each of the LLM's layers: about half of the training
//! step's activation memory. The large matmuls are never recomputed; RMSNorm and SwiGLU have
//! analytic input gradients, and the attention core is rerun on a small private graph.

use crate::ops::FrozenLinear;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Storage, Tensor, Var};
use std::sync::{Arc, Mutex};

/// A differentiable function `u = f(x)` placed before a frozen projection.
pub trait Region: Send + Sync {
    /// `f(x)`; called on tensors outside any graph, or on a fresh `Var` by [`recompute_grad`].
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor>;

    /// `dL/dx` given `x` and `dL/du`; by default by rerunning `forward` on a private graph.
    fn input_grad(&self, x: &Tensor, gu: &Tensor) -> candle_core::Result<Option<Tensor>> {
        recompute_grad(&|t| self.forward(t), x, gu)
    }
}

impl<F: Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync> Region for F {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self(x)
    }
}

/// `dL/dx` for `u = f(x)` and `dL/du = gu`, from candle's autograd on a private graph rooted at
/// a copy of `x`.
pub fn recompute_grad(f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>, x: &Tensor, gu: &Tensor) -> candle_core::Result<Option<Tensor>> {
    let xv = Var::from_tensor(&x.detach())?;
    let u = f(xv.as_tensor())?;
    let grads = u.apply_op1(Seed(gu.reshape(u.shape())?))?.backward()?;
    Ok(grads.get(xv.as_tensor()).cloned())
}

/// The root of a private backward: its gradient into `u` is the given tensor, without forming
/// `sum(u * gu)` and differentiating it. Valid only as the root (the seed gradient there is 1).
struct Seed(Tensor);

impl CustomOp1 for Seed {
    fn name(&self) -> &'static str {
        "backward-seed"
    }
    fn cpu_fwd(&self, s: &CpuStorage, _l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        // The value is never read; only the gradient matters.
        let zero = match s {
            CpuStorage::F32(_) => CpuStorage::F32(vec![0.0]),
            CpuStorage::F64(_) => CpuStorage::F64(vec![0.0]),
            _ => candle_core::bail!("backward-seed: f32 or f64 only"),
        };
        Ok((zero, Shape::from(())))
    }
    fn bwd(&self, _u: &Tensor, _y: &Tensor, _g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.0.clone()))
    }
}

/// RMSNorm with a constant weight, as a region (analytic input gradient).
pub struct RmsNorm {
    /// The norm's weight.
    pub weight: Tensor,
    /// Epsilon inside the square root.
    pub eps: f32,
}

impl Region for RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::fused::rms_norm(x, &self.weight, self.eps)
    }
    fn input_grad(&self, x: &Tensor, gu: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(crate::fused::rms_norm_input_grad(x, &self.weight, &gu.reshape(x.shape())?, self.eps)?))
    }
}

/// SwiGLU on stacked `[gate | up]` rows, as a region (analytic input gradient).
pub struct SwiGlu;

impl Region for SwiGlu {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::activation::swiglu_stacked(x)
    }
    fn input_grad(&self, x: &Tensor, gu: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let mut d = x.dims().to_vec();
        *d.last_mut().expect("rank >= 1") /= 2;
        Ok(Some(crate::activation::swiglu_stacked_grad(x, &gu.reshape(d)?)?))
    }
}

struct Project {
    region: Arc<dyn Region>,
    w: FrozenLinear,
    /// `f(x)`, computed before the op is applied and consumed by its forward, so that the graph
    /// node (which owns this op) does not keep it.
    u: Mutex<Option<Tensor>>,
}

impl Project {
    /// `f(x) @ Wᵀ` into freshly owned storage.
    fn product(&self) -> candle_core::Result<(CpuStorage, Shape)> {
        let u = self.u.lock().map_err(|_| candle_core::Error::Msg("project: poisoned".into()))?.take();
        let u = u.ok_or_else(|| candle_core::Error::Msg("project: forward ran twice".into()))?;
        let (s, l) = u.storage_and_layout();
        let Storage::Cpu(s) = &*s else { candle_core::bail!("project: cpu only") };
        crate::ops::matmul_wt(s, l, self.w.weight())
    }

    fn grad_x(&self, x: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (out, inp) = self.w.weight().dims2()?;
        let gu = g.contiguous()?.reshape(((), out))?.matmul(self.w.weight())?;
        let mut d = g.dims().to_vec();
        *d.last_mut().expect("rank >= 1") = inp;
        self.region.input_grad(x, &gu.reshape(d)?)
    }
}

impl CustomOp1 for Project {
    fn name(&self) -> &'static str {
        "project-after"
    }
    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.product()
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        self.grad_x(x, g)
    }
}

impl CustomOp2 for Project {
    fn name(&self) -> &'static str {
        "project-after-residual"
    }
    fn cpu_fwd(&self, _s1: &CpuStorage, _l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (mut y, shape) = self.product()?;
        let (a, b) = l2.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("project: contiguous residual required".into()))?;
        if shape.elem_count() != b - a {
            candle_core::bail!("project: residual {:?} does not match the output {:?}", l2.dims(), shape.dims());
        }
        match (&mut y, s2) {
            (CpuStorage::F32(y), CpuStorage::F32(r)) => y.iter_mut().zip(&r[a..b]).for_each(|(y, r)| *y += r),
            (CpuStorage::F64(y), CpuStorage::F64(r)) => y.iter_mut().zip(&r[a..b]).for_each(|(y, r)| *y += r),
            _ => candle_core::bail!("project: residual dtype differs from the product's"),
        }
        Ok((y, shape))
    }
    fn bwd(&self, x: &Tensor, _r: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((self.grad_x(x, g)?, Some(g.clone())))
    }
}

/// `residual + f(x) @ Wᵀ` for a frozen `W`, differentiable in `x` and `residual`, keeping neither
/// `f(x)` nor anything else of `f` in the graph (see the module docs).
pub fn project(x: &Tensor, residual: Option<&Tensor>, f: Arc<dyn Region>, w: &FrozenLinear) -> candle_core::Result<Tensor> {
    if !matches!(x.dtype(), DType::F32 | DType::F64) {
        candle_core::bail!("project: f32 or f64 only, got {:?}", x.dtype());
    }
    let u = f.forward(&x.detach())?.contiguous()?;
    let op = Project { region: f, w: w.clone(), u: Mutex::new(Some(u)) };
    match residual {
        None => x.apply_op1(op),
        Some(r) => x.apply_op2(&r.contiguous()?, op),
    }
}
