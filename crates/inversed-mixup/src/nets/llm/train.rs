//! The LLM's training forward: each transformer block is one autograd node.
//!
//! candle's graph keeps every op's inputs until the backward ends and, for every edge, allocates a
//! zero gradient and adds into it. A block as one op keeps what its backward needs (the stacked
//! Q/K/V projections, the mid-block residual, the gate/up projections) in the op itself, frees
//! them as soon as its backward has run, and has one edge instead of six. Its backward is written
//! out: input gradients of the frozen projections (one matmul each, never a weight gradient),
//! the analytic RMSNorm and SwiGLU gradients and the causal-attention kernel's backward.

use super::deep::KvDelta;
use super::lora::{BlockLora, Lora, LoraConfig, Slot};
use super::{Block, KvCache, Llm};
use crate::nets::ops;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use imix_kernels::causal_attention::Causal;
use imix_kernels::{FrozenLinear, FrozenProjection};
use std::sync::{Arc, Mutex};

/// What a block's backward needs from its forward.
struct Saved {
    x: Tensor,
    qkv: Tensor,
    x_mid: Tensor,
    gu: Tensor,
    /// The attention output, kept only when the output projection has a LoRA delta.
    a: Option<Tensor>,
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
    /// LoRA settings and this block's packed deltas (detached), when the LLM is trained with LoRA.
    lora: Option<(LoraConfig, Tensor)>,
    /// This block's K/V deltas at the soft-token positions (one layer, detached), with deep soft tokens.
    deep: Option<KvDelta>,
    /// Forward hand-over: `silu(gate)·up` and the mid-block residual, consumed by `cpu_fwd`.
    last: Mutex<Option<(Tensor, Tensor)>>,
    saved: Mutex<Option<Saved>>,
}

fn lock<T>(m: &Mutex<T>) -> candle_core::Result<std::sync::MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| candle_core::Error::Msg("block: poisoned lock".into()))
}

/// `g @ W` for a frozen `W (out, in)` and `g (..., out)`: the input gradient of `x @ Wᵀ`.
fn back(g: &Tensor, w: &FrozenLinear) -> candle_core::Result<Tensor> {
    imix_kernels::frozen_linear::matmul_w(g, w.weight())
}

/// `r + u @ Wᵀ`: gemm accumulates the product onto a copy of the residual, in storage we own.
fn project_add(
    u: &Tensor,
    w: &FrozenLinear,
    r: &Tensor,
) -> candle_core::Result<(CpuStorage, Shape)> {
    imix_kernels::frozen_linear::matmul_wt_add(&u.contiguous()?, w.weight(), &r.contiguous()?)
}

impl BlockOp {
    fn lora(&self) -> candle_core::Result<Option<BlockLora<'_>>> {
        self.lora
            .as_ref()
            .map(|(c, p)| BlockLora::new(c, p))
            .transpose()
    }

    /// Runs the block on a detached input, keeping what the backward needs.
    fn prepare(&self, x: &Tensor) -> candle_core::Result<()> {
        let bl = self.lora()?;
        let delta = |slot: Slot, h: &Tensor| -> candle_core::Result<Option<Tensor>> {
            Ok(bl.as_ref().map(|b| b.delta(slot, h)).transpose()?.flatten())
        };
        let h1 = imix_kernels::fused::rms_norm(x, &self.attn_norm, self.eps)?;
        let mut qkv = self.qkv.forward(&h1)?;
        if let Some(d) = delta(Slot::Qkv, &h1)? {
            qkv = (qkv + d)?;
        }
        if let Some(d) = &self.deep {
            qkv = (qkv + d.padded(0, x.dim(1)?, self.q_width())?)?;
        }
        let a = self.attention.forward(&qkv)?;
        let d_o = delta(Slot::O, &a)?;
        let keep_a = d_o.is_some();
        let r = match d_o {
            Some(d) => (x + d)?,
            None => x.clone(),
        };
        let x_mid = tensor_of(project_add(&a, &self.o, &r)?, x)?;
        let h2 = imix_kernels::fused::rms_norm(&x_mid, &self.ffn_norm, self.eps)?;
        let mut gu = self.gate_up.forward(&h2)?;
        if let Some(d) = delta(Slot::GateUp, &h2)? {
            gu = (gu + d)?;
        }
        let f = imix_kernels::activation::swiglu_stacked(&gu)?;
        let r = match delta(Slot::Down, &f)? {
            Some(d) => (&x_mid + d)?,
            None => x_mid.clone(),
        };
        *lock(&self.last)? = Some((f, r));
        *lock(&self.saved)? = Some(Saved {
            x: x.clone(),
            qkv,
            x_mid,
            gu,
            a: keep_a.then_some(a),
        });
        Ok(())
    }

    /// Width of the queries in the stacked Q/K/V.
    fn q_width(&self) -> usize {
        self.attention.heads * self.attention.head_dim
    }

    /// Input gradient of the block and, with LoRA, the gradient of its packed deltas, and with
    /// deep soft tokens, the gradient of its K/V deltas.
    fn backward(
        &self,
        g: &Tensor,
    ) -> candle_core::Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let s = lock(&self.saved)?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("block: backward ran twice".into()))?;
        let bl = self.lora()?;
        let mut grads = vec![None; bl.as_ref().map_or(0, |b| b.len())];
        let g = g.contiguous()?;
        let mut g_f = back(&g, &self.down)?;
        if let Some(b) = &bl {
            b.delta_backward(
                Slot::Down,
                &imix_kernels::activation::swiglu_stacked(&s.gu)?,
                &g,
                &mut g_f,
                &mut grads,
            )?;
        }
        let g_gu = imix_kernels::activation::swiglu_stacked_grad(&s.gu, &g_f)?;
        drop(s.gu);
        let mut g_h2 = back(&g_gu, &self.gate_up)?;
        if let Some(b) = &bl {
            b.delta_backward(
                Slot::GateUp,
                &imix_kernels::fused::rms_norm(&s.x_mid, &self.ffn_norm, self.eps)?,
                &g_gu,
                &mut g_h2,
                &mut grads,
            )?;
        }
        let g_mid = imix_kernels::fused::rms_norm_input_grad_plus(
            &s.x_mid,
            &self.ffn_norm,
            &g_h2,
            self.eps,
            &g,
        )?;
        drop(s.x_mid);
        let mut g_a = back(&g_mid, &self.o)?;
        if let (Some(b), Some(a)) = (&bl, &s.a) {
            b.delta_backward(Slot::O, a, &g_mid, &mut g_a, &mut grads)?;
        }
        let g_qkv = self.attention.input_grad(&s.qkv, &g_a)?;
        drop(s.qkv);
        let g_deep = self
            .deep
            .as_ref()
            .map(|d| d.grad_of(0, &g_qkv, self.q_width()))
            .transpose()?;
        let mut g_h1 = back(&g_qkv, &self.qkv)?;
        if let Some(b) = &bl {
            b.delta_backward(
                Slot::Qkv,
                &imix_kernels::fused::rms_norm(&s.x, &self.attn_norm, self.eps)?,
                &g_qkv,
                &mut g_h1,
                &mut grads,
            )?;
        }
        let g_x = imix_kernels::fused::rms_norm_input_grad_plus(
            &s.x,
            &self.attn_norm,
            &g_h1,
            self.eps,
            &g_mid,
        )?;
        let g_lora = bl
            .map(|b| b.pack(grads, g_x.dtype(), g_x.device()))
            .transpose()?;
        Ok((g_x, g_lora, g_deep))
    }

    fn output(&self) -> candle_core::Result<(CpuStorage, Shape)> {
        let (f, r) = lock(&self.last)?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("block: forward ran twice".into()))?;
        project_add(&f, &self.down, &r)
    }
}

/// A tensor from storage computed for `like` (same device).
fn tensor_of((y, shape): (CpuStorage, Shape), like: &Tensor) -> candle_core::Result<Tensor> {
    match y {
        CpuStorage::F32(v) => Tensor::from_vec(v, shape, like.device()),
        CpuStorage::F64(v) => Tensor::from_vec(v, shape, like.device()),
        _ => candle_core::bail!("block: f32 or f64 only"),
    }
}

impl CustomOp1 for BlockOp {
    fn name(&self) -> &'static str {
        "llm-block"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.output()
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.backward(g)?.0))
    }
}

/// The block with deep soft tokens: its K/V deltas are the second input.
struct DeepBlockOp(BlockOp);

impl CustomOp2 for DeepBlockOp {
    fn name(&self) -> &'static str {
        "llm-block-deep"
    }

    fn cpu_fwd(
        &self,
        _s: &CpuStorage,
        _l: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.0.output()
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _d: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (gx, _, gd) = self.0.backward(g)?;
        Ok((Some(gx), gd))
    }
}

/// The block with LoRA and deep soft tokens: packed LoRA deltas second, K/V deltas third.
struct LoraDeepBlockOp(BlockOp);

impl CustomOp3 for LoraDeepBlockOp {
    fn name(&self) -> &'static str {
        "llm-block-lora-deep"
    }

    fn cpu_fwd(
        &self,
        _s: &CpuStorage,
        _l: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
        _s3: &CpuStorage,
        _l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.0.output()
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _p: &Tensor,
        _d: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gp, gd) = self.0.backward(g)?;
        Ok((Some(gx), gp, gd))
    }
}

/// The block with LoRA: its packed deltas are the second input, so that they get a gradient.
struct LoraBlockOp(BlockOp);

impl CustomOp2 for LoraBlockOp {
    fn name(&self) -> &'static str {
        "llm-block-lora"
    }

    fn cpu_fwd(
        &self,
        _s: &CpuStorage,
        _l: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.0.output()
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _p: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (gx, gp, _) = self.0.backward(g)?;
        Ok((Some(gx), gp))
    }
}

impl Llm {
    /// Training forward: blocks as single autograd nodes (see the module docs). With `cache`, the
    /// sequence continues a constant cached prefix, which is read, not extended.
    pub(super) fn forward_blocks(
        &self,
        x: &Tensor,
        cache: Option<&KvCache>,
        lora: Option<&Lora>,
        deep: Option<&KvDelta>,
    ) -> candle_core::Result<Tensor> {
        let (_, t, _) = x.dims3()?;
        if !matches!(x.dtype(), DType::F32 | DType::F64) {
            candle_core::bail!("training forward: f32 or f64 only, got {:?}", x.dtype());
        }
        let off = cache.map_or(0, |c| c.len);
        let table = |t: &Tensor| -> candle_core::Result<Arc<Vec<f64>>> {
            Ok(Arc::new(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?))
        };
        let (cos, sin) = (
            table(&self.cos.narrow(0, off, t)?)?,
            table(&self.sin.narrow(0, off, t)?)?,
        );
        let mut x = x.clone();
        for (i, blk) in self.blocks.iter().enumerate() {
            x = self.block_node(
                blk,
                &x,
                lora.map(|l| (l.config(), l.block(i).as_tensor())),
                deep.map(|d| (d.start, &d.layers[i])),
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

    fn block_node(
        &self,
        blk: &Block,
        x: &Tensor,
        lora: Option<(&LoraConfig, &Tensor)>,
        deep: Option<(usize, &Tensor)>,
        attention: Causal,
    ) -> candle_core::Result<Tensor> {
        let x = x.contiguous()?;
        if blk.projections().iter().any(|p| p.has_delta()) {
            candle_core::bail!(
                "the training path needs an LLM without attached LoRA deltas (Llm::with_lora \
                 makes a copy for decoding only)"
            );
        }
        let dense = |p: &FrozenProjection| p.dense(&self.device).cloned();
        let op = BlockOp {
            attn_norm: blk.attn_norm.clone(),
            ffn_norm: blk.ffn_norm.clone(),
            qkv: dense(&blk.qkv)?,
            o: dense(&blk.o)?,
            gate_up: dense(&blk.gate_up)?,
            down: dense(&blk.down)?,
            eps: self.cfg.rms_eps,
            attention,
            lora: lora.map(|(c, p)| (c.clone(), p.detach())),
            deep: deep.map(|(start, d)| KvDelta {
                start,
                layers: vec![d.detach()],
            }),
            last: Mutex::new(None),
            saved: Mutex::new(None),
        };
        op.prepare(&x.detach())?;
        match (lora, deep) {
            (None, None) => x.apply_op1(op),
            (Some((_, packed)), None) => x.apply_op2(packed, LoraBlockOp(op)),
            (None, Some((_, d))) => x.apply_op2(d, DeepBlockOp(op)),
            (Some((_, packed)), Some((_, d))) => x.apply_op3(packed, d, LoraDeepBlockOp(op)),
        }
    }
}
