//! A frozen projection fused with the cheap function before it: `y = r + f(x) @ Wᵀ` keeps only
//! `x` (and `r`) in the autograd graph, and its backward recomputes `f` from `x`.
//!
//! candle's graph keeps every op's inputs alive until the backward ends. A frozen linear layer's
//! backward needs only its weight, yet its input (the normed hidden state, the attention output,
//! the SwiGLU product) stayed alive in each of the LLM's layers: about half of the training
//! step's activation memory. Recomputing the cheap `f` (a norm, the attention core, an
//! activation) costs a few percent of the step; the large matmuls are not recomputed.

use crate::ops::FrozenLinear;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor, Var};
use std::sync::{Arc, Mutex};

/// A differentiable function of one tensor, run once forward and again in the backward pass.
pub type Region = Arc<dyn Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync>;

struct Project {
    f: Region,
    w: FrozenLinear,
    /// The forward value, computed before the op is applied and handed over once, so that the
    /// graph node (which owns this op) does not keep a second copy of it.
    value: Mutex<Option<Tensor>>,
}

impl Project {
    fn take(&self) -> candle_core::Result<(CpuStorage, Shape)> {
        let v = self.value.lock().map_err(|_| candle_core::Error::Msg("project: poisoned".into()))?.take();
        let v = v.ok_or_else(|| candle_core::Error::Msg("project: forward value already taken".into()))?;
        let flat = v.flatten_all()?;
        let s = match v.dtype() {
            DType::F32 => CpuStorage::F32(flat.to_vec1()?),
            DType::F64 => CpuStorage::F64(flat.to_vec1()?),
            d => candle_core::bail!("project: f32 or f64 only, got {d:?}"),
        };
        Ok((s, v.shape().clone()))
    }

    /// dL/dx: pull `g @ W` back through `f`, recomputed on a fresh graph rooted at a copy of `x`.
    fn grad_x(&self, x: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (out, _) = self.w.weight().dims2()?;
        let gu = g.contiguous()?.reshape(((), out))?.matmul(self.w.weight())?;
        let xv = Var::from_tensor(&x.detach())?;
        let u = (self.f)(xv.as_tensor())?;
        let grads = (&u * gu.reshape(u.shape())?)?.sum_all()?.backward()?;
        Ok(grads.get(xv.as_tensor()).cloned())
    }
}

impl CustomOp1 for Project {
    fn name(&self) -> &'static str {
        "project-after"
    }
    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.take()
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        self.grad_x(x, g)
    }
}

impl CustomOp2 for Project {
    fn name(&self) -> &'static str {
        "project-after-residual"
    }
    fn cpu_fwd(&self, _s1: &CpuStorage, _l1: &Layout, _s2: &CpuStorage, _l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.take()
    }
    fn bwd(&self, x: &Tensor, _r: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((self.grad_x(x, g)?, Some(g.clone())))
    }
}

/// `residual + f(x) @ Wᵀ` for a frozen `W`, differentiable in `x` and `residual`, keeping neither
/// `f(x)` nor the product in the graph (see the module docs).
pub fn project(x: &Tensor, residual: Option<&Tensor>, f: Region, w: &FrozenLinear) -> candle_core::Result<Tensor> {
    let mut y = w.forward(&f(&x.detach())?)?;
    if let Some(r) = residual {
        y = (y + r.detach())?;
    }
    let op = Project { f, w: w.clone(), value: Mutex::new(Some(y)) };
    match residual {
        None => x.apply_op1(op),
        Some(r) => x.apply_op2(r, op),
    }
}
