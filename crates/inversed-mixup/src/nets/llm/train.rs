//! The LLM's training forward: each transformer block is one autograd node.
//!
//! candle's graph keeps every op's inputs until the backward ends and, for every edge, allocates a
//! zero gradient and adds into it. A block as one op keeps what its backward needs (the stacked
//! Q/K/V projections, the mid-block residual, the gate/up projections) in the op itself, frees
//! them as soon as its backward has run, and has one edge instead of six. Its backward is written
//! out: input gradients of the frozen projections (one matmul each, never a weight gradient),
//! the analytic RMSNorm and SwiGLU gradients and the causal-attention kernel's backward.

use super::{Block, KvCache, Llm};
use crate::nets::ops;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use imix_kernels::causal_attention::Causal;
use imix_kernels::FrozenLinear;
use std::sync::{Arc, Mutex};

/// What a block's backward needs from its forward.
struct Saved {
    x: Tensor,
    qkv: Tensor,
    x_mid: Tensor,
    gu: Tensor,
}

struct BlockOp {
    attn_norm: Tensor,
    ffn_norm: Tensor,
    qkv: FrozenLinear,
    o: FrozenLinear,
    gate_up: FrozenLinear,
    down: FrozenLinear,
    eps: f32,
    attention: Causal,
    /// Forward hand-over: `silu(gate)·up` and the mid-block residual, consumed by `cpu_fwd`.
    last: Mutex<Option<(Tensor, Tensor)>>,
    saved: Mutex<Option<Saved>>,
}

fn lock<T>(m: &Mutex<T>) -> candle_core::Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| candle_core::Error::Msg("block: poisoned lock".into()))
}

/// `g @ W` for a frozen `W (out, in)` and `g (..., out)`: the input gradient of `x @ Wᵀ`.
fn back(g: &Tensor, w: &FrozenLinear) -> candle_core::Result<Tensor> {
    imix_kernels::frozen_linear::matmul_w(g, w.weight())
}

/// `r + u @ Wᵀ`: gemm accumulates the product onto a copy of the residual, in storage we own.
fn project_add(u: &Tensor, w: &FrozenLinear, r: &Tensor) -> candle_core::Result<(CpuStorage, Shape)> {
    imix_kernels::frozen_linear::matmul_wt_add(&u.contiguous()?, w.weight(), &r.contiguous()?)
}

impl BlockOp {
    /// Runs the block on a detached input, keeping what the backward needs.
    fn prepare(&self, x: &Tensor) -> candle_core::Result<()> {
        let qkv = self.qkv.forward(&imix_kernels::fused::rms_norm(x, &self.attn_norm, self.eps)?)?;
        let a = self.attention.forward(&qkv)?;
        let x_mid = {
            let (y, shape) = project_add(&a, &self.o, x)?;
            match y {
                CpuStorage::F32(v) => Tensor::from_vec(v, shape, x.device())?,
                CpuStorage::F64(v) => Tensor::from_vec(v, shape, x.device())?,
                _ => candle_core::bail!("block: f32 or f64 only"),
            }
        };
        let gu = self.gate_up.forward(&imix_kernels::fused::rms_norm(&x_mid, &self.ffn_norm, self.eps)?)?;
        let f = imix_kernels::activation::swiglu_stacked(&gu)?;
        *lock(&self.last)? = Some((f, x_mid.clone()));
        *lock(&self.saved)? = Some(Saved { x: x.clone(), qkv, x_mid, gu });
        Ok(())
    }
}

impl CustomOp1 for BlockOp {
    fn name(&self) -> &'static str {
        "llm-block"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (f, x_mid) = lock(&self.last)?.take().ok_or_else(|| candle_core::Error::Msg("block: forward ran twice".into()))?;
        project_add(&f, &self.down, &x_mid)
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let s = lock(&self.saved)?.take().ok_or_else(|| candle_core::Error::Msg("block: backward ran twice".into()))?;
        let g = g.contiguous()?;
        let g_gu = imix_kernels::activation::swiglu_stacked_grad(&s.gu, &back(&g, &self.down)?)?;
        drop(s.gu);
        let g_mid = imix_kernels::fused::rms_norm_input_grad_plus(&s.x_mid, &self.ffn_norm, &back(&g_gu, &self.gate_up)?, self.eps, &g)?;
        drop(s.x_mid);
        let g_qkv = self.attention.input_grad(&s.qkv, &back(&g_mid, &self.o)?)?;
        drop(s.qkv);
        let g_x = imix_kernels::fused::rms_norm_input_grad_plus(&s.x, &self.attn_norm, &back(&g_qkv, &self.qkv)?, self.eps, &g_mid)?;
        Ok(Some(g_x))
    }
}

impl Llm {
    /// Training forward: blocks as single autograd nodes (see the module docs). With `cache`, the
    /// sequence continues a constant cached prefix, which is read, not extended.
    pub(super) fn forward_blocks(&self, x: &Tensor, cache: Option<&KvCache>) -> candle_core::Result<Tensor> {
        let (_, t, _) = x.dims3()?;
        if !matches!(x.dtype(), DType::F32 | DType::F64) {
            candle_core::bail!("training forward: f32 or f64 only, got {:?}", x.dtype());
        }
        let off = cache.map_or(0, |c| c.len);
        let table = |t: &Tensor| -> candle_core::Result<Arc<Vec<f64>>> { Ok(Arc::new(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)) };
        let (cos, sin) = (table(&self.cos.narrow(0, off, t)?)?, table(&self.sin.narrow(0, off, t)?)?);
        let mut x = x.clone();
        for (i, blk) in self.blocks.iter().enumerate() {
            x = self.block_node(
                blk,
                &x,
                Causal {
                    heads: self.cfg.heads,
                    kv_heads: self.cfg.kv_heads,
                    head_dim: self.cfg.hidden / self.cfg.heads,
                    cos: cos.clone(),
                    sin: sin.clone(),
                    prefix: cache.and_then(|c| c.kv[i].clone()),
                },
            )?;
        }
        ops::rms_norm(&x, &self.norm, self.cfg.rms_eps, true)
    }

    fn block_node(&self, blk: &Block, x: &Tensor, attention: Causal) -> candle_core::Result<Tensor> {
        let x = x.contiguous()?;
        let op = BlockOp {
            attn_norm: blk.attn_norm.clone(),
            ffn_norm: blk.ffn_norm.clone(),
            qkv: blk.qkv.clone(),
            o: blk.o.clone(),
            gate_up: blk.gate_up.clone(),
            down: blk.down.clone(),
            eps: self.cfg.rms_eps,
            attention,
            last: Mutex::new(None),
            saved: Mutex::new(None),
        };
        op.prepare(&x.detach())?;
        x.apply_op1(op)
    }
}
