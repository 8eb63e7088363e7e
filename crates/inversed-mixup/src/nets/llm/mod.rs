//! The frozen causal LLM (Llama family): a forward on input embeddings, differentiable end to end
//! for training, and a KV-cached path for generation.

pub mod deep;
mod generate;
mod load;
pub mod lora;
mod tokenizer;
mod train;
mod utf8_guard;

pub use deep::KvDelta;
pub use generate::{Decode, GenerateOptions};
pub use load::permute_for_gguf;
pub use lora::{Lora, LoraConfig};
pub use tokenizer::LlmTokenizer;
pub use utf8_guard::Utf8Guard;

use crate::nets::ops;
use candle_core::{DType, Device, Tensor, D};
use imix_kernels::{BlockRows, FrozenLinear, FrozenProjection, FrozenRows};
use lora::{BlockLora, Slot};
use std::sync::Arc;

/// Llama hyper-parameters (from GGUF metadata or config.json).
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    /// Model width (soft tokens have this size).
    pub hidden: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: usize,
    /// FFN width.
    pub ffn: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Longest supported sequence.
    pub max_pos: usize,
}

/// One transformer block. Q/K/V and gate/up are stored stacked along the output axis: one matmul
/// (and one norm in the training backward, see `train`) instead of three and two.
#[derive(Clone)]
struct Block {
    attn_norm: Tensor,
    qkv: FrozenProjection,
    o: FrozenProjection,
    ffn_norm: Tensor,
    gate_up: FrozenProjection,
    down: FrozenProjection,
}

/// The weights of one block: norms, and the (out, in) projections as stored in the checkpoint.
pub(crate) struct BlockWeights<W> {
    pub attn_norm: Tensor,
    pub q: W,
    pub k: W,
    pub v: W,
    pub o: W,
    pub ffn_norm: Tensor,
    pub gate: W,
    pub up: W,
    pub down: W,
}

impl Block {
    /// A block of dense weights.
    fn new(w: BlockWeights<Tensor>) -> candle_core::Result<Self> {
        let dense = |t: Tensor| FrozenProjection::from(FrozenRows::Dense(FrozenLinear::new(t)));
        Ok(Self {
            attn_norm: w.attn_norm,
            qkv: dense(Tensor::cat(&[&w.q, &w.k, &w.v], 0)?),
            o: dense(w.o),
            ffn_norm: w.ffn_norm,
            gate_up: dense(Tensor::cat(&[&w.gate, &w.up], 0)?),
            down: dense(w.down),
        })
    }

    /// A block whose projections stay quantised; `None` when the stacked ones do not share a
    /// block format (then load it dense).
    fn quantised(w: BlockWeights<BlockRows>) -> Option<Self> {
        let rows = |b: BlockRows| FrozenProjection::from(FrozenRows::Blocks(Arc::new(b)));
        Some(Self {
            attn_norm: w.attn_norm,
            qkv: rows(BlockRows::concat(&[&w.q, &w.k, &w.v])?),
            o: rows(w.o),
            ffn_norm: w.ffn_norm,
            gate_up: rows(BlockRows::concat(&[&w.gate, &w.up])?),
            down: rows(w.down),
        })
    }

    fn projections(&self) -> [&FrozenProjection; 4] {
        [&self.qkv, &self.o, &self.gate_up, &self.down]
    }

    fn projections_mut(&mut self) -> [&mut FrozenProjection; 4] {
        [
            &mut self.qkv,
            &mut self.o,
            &mut self.gate_up,
            &mut self.down,
        ]
    }
}

/// Per-layer key/value cache for incremental decoding.
#[derive(Clone)]
pub struct KvCache {
    kv: Vec<Option<(Tensor, Tensor)>>,
    /// Number of positions already cached.
    pub len: usize,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KvCache {{ len: {} }}", self.len)
    }
}

impl KvCache {
    /// Repeats a batch-1 cache for `n` rows (a shared, constant prompt prefix).
    pub fn expand(&self, n: usize) -> candle_core::Result<KvCache> {
        let rep = |t: &Tensor| -> candle_core::Result<Tensor> {
            let mut d = t.dims().to_vec();
            d[0] = n;
            t.broadcast_as(d)?.contiguous()
        };
        let kv = self
            .kv
            .iter()
            .map(|e| {
                e.as_ref()
                    .map(|(k, v)| Ok::<_, candle_core::Error>((rep(k)?, rep(v)?)))
                    .transpose()
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(KvCache { kv, len: self.len })
    }

    /// Reorders the batch rows of the cache (beam search).
    pub fn select(&mut self, rows: &Tensor) -> candle_core::Result<()> {
        for e in self.kv.iter_mut().flatten() {
            *e = (e.0.index_select(rows, 0)?, e.1.index_select(rows, 0)?);
        }
        Ok(())
    }
}

/// A frozen Llama model. All weights are constants: nothing here is a `Var`.
#[derive(Clone)]
pub struct Llm {
    cfg: LlmConfig,
    /// The word table; GGUF blocks stay quantised (`FrozenRows::Blocks`, same values).
    embed: FrozenRows,
    blocks: Vec<Block>,
    norm: Tensor,
    /// The output layer: the word table itself when tied.
    lm_head: FrozenRows,
    cos: Tensor,
    sin: Tensor,
    tokenizer: LlmTokenizer,
    name: String,
    device: Device,
    /// Training path: blocks as single autograd nodes (default true; see `train`).
    lean_training: bool,
    /// The LoRA whose deltas are merged into these weights (`Lora::id`), when one is.
    merged_lora: Option<candle_core::TensorId>,
}

impl Llm {
    /// Hyper-parameters.
    pub fn config(&self) -> &LlmConfig {
        &self.cfg
    }
    /// The tokenizer.
    pub fn tokenizer(&self) -> &LlmTokenizer {
        &self.tokenizer
    }
    /// Identifier recorded in adaptor metadata (file or directory name).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Device of the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every dense weight tensor, for tests that check frozen weights stay bit-identical (quantised
    /// weights have no API that could change them).
    pub fn weights(&self) -> Vec<&Tensor> {
        let mut w: Vec<&Tensor> = [self.embed.dense(), Some(&self.norm), self.lm_head.dense()]
            .into_iter()
            .flatten()
            .collect();
        for b in &self.blocks {
            w.extend([&b.attn_norm, &b.ffn_norm]);
            w.extend(b.projections().iter().filter_map(|p| p.rows().dense()));
        }
        w
    }

    /// Token embeddings `(n, hidden)` for ids (a constant lookup: no gradient reaches the table).
    pub fn embed_ids(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        self.embed.lookup(ids, &self.device)
    }

    /// Runs the blocks on input embeddings `(b, t, hidden)` and returns final-normed hidden states.
    ///
    /// `grad` selects the differentiable training path; with a `cache`, positions continue from
    /// `cache.len`. Inference appends the new keys/values to the cache; training only reads it
    /// (a constant prompt prefix).
    pub fn forward_embeds(
        &self,
        x: &Tensor,
        cache: Option<&mut KvCache>,
        grad: bool,
    ) -> candle_core::Result<Tensor> {
        self.forward_embeds_lora(x, cache, grad, None)
    }

    /// [`Llm::forward_embeds`] with LoRA deltas on the projections (trained through when `grad`).
    pub fn forward_embeds_lora(
        &self,
        x: &Tensor,
        cache: Option<&mut KvCache>,
        grad: bool,
        lora: Option<&Lora>,
    ) -> candle_core::Result<Tensor> {
        self.forward_embeds_deep(x, cache, grad, lora, None)
    }

    /// [`Llm::forward_embeds_lora`] with deep soft tokens: per-layer K/V deltas at some of `x`'s
    /// positions (trained through when `grad`).
    pub fn forward_embeds_deep(
        &self,
        x: &Tensor,
        cache: Option<&mut KvCache>,
        grad: bool,
        lora: Option<&Lora>,
        deep: Option<&KvDelta>,
    ) -> candle_core::Result<Tensor> {
        if let Some(l) = lora {
            l.check(&self.cfg)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        }
        if let Some(d) = deep {
            let (b, t, _) = x.dims3()?;
            d.check(
                b,
                t,
                self.cfg.layers,
                2 * self.cfg.kv_heads * (self.cfg.hidden / self.cfg.heads),
            )?;
        }
        if grad && self.lean_training {
            return self.forward_blocks(x, cache.as_deref(), lora, deep);
        }
        self.forward_plain(x, cache, grad, lora, deep)
    }

    /// Chooses the training path: `true` (default) runs each block as one autograd node with a
    /// written-out backward (see `train`); `false` is the plain composition it is tested against.
    pub fn set_lean_training(&mut self, on: bool) {
        self.lean_training = on;
    }

    /// The plain composition: inference (fused kernels, KV cache) or, with `grad`, the reference
    /// training path that keeps every intermediate in the graph.
    fn forward_plain(
        &self,
        x: &Tensor,
        mut cache: Option<&mut KvCache>,
        grad: bool,
        lora: Option<&Lora>,
        deep: Option<&KvDelta>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let off = cache.as_ref().map(|c| c.len).unwrap_or(0);
        let cos = self.cos.narrow(0, off, t)?;
        let sin = self.sin.narrow(0, off, t)?;
        let mask = causal_mask(t, off, &self.device)?;
        let (nh, nkv) = (self.cfg.heads, self.cfg.kv_heads);
        let hd = self.cfg.hidden / nh;
        let rep = nh / nkv;
        let ffn = self.cfg.ffn;
        let mut x = x.clone();
        for (i, blk) in self.blocks.iter().enumerate() {
            let bl = lora
                .map(|l| BlockLora::new(l.config(), l.block(i).as_tensor()))
                .transpose()?;
            // Each projection plus its LoRA delta, when the block has one for it.
            let project =
                |slot: Slot, lin: &FrozenProjection, h: &Tensor| -> candle_core::Result<Tensor> {
                    let y = lin.forward(h)?;
                    match bl.as_ref().map(|b| b.delta(slot, h)).transpose()?.flatten() {
                        Some(d) => y + d,
                        None => Ok(y),
                    }
                };
            let h = ops::rms_norm(&x, &blk.attn_norm, self.cfg.rms_eps, grad)?;
            let mut qkv = project(Slot::Qkv, &blk.qkv, &h)?;
            if let Some(d) = deep {
                qkv = (qkv + d.padded(i, t, nh * hd)?)?;
            }
            let split = |from: usize, heads: usize| {
                qkv.narrow(2, from * hd, heads * hd)?
                    .reshape((b, t, heads, hd))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (split(0, nh)?, split(nh, nkv)?, split(nh + nkv, nkv)?);
            let q = ops::rope(&q, &cos, &sin, grad)?;
            let mut k = ops::rope(&k, &cos, &sin, grad)?;
            let mut v = v;
            if let Some(c) = cache.as_deref_mut() {
                if let Some((pk, pv)) = &c.kv[i] {
                    k = Tensor::cat(&[pk, &k], 2)?;
                    v = Tensor::cat(&[pv, &v], 2)?;
                }
                if !grad {
                    c.kv[i] = Some((k.clone(), v.clone()));
                }
            }
            let a = if t == 1 && !grad && x.dtype() == DType::F32 {
                // Decoding: one query per sequence, one fused pass.
                imix_kernels::decode_attention::decode_attention(
                    &q.reshape((b, nkv, rep, hd))?,
                    &k,
                    &v,
                )?
                .reshape((b, 1, nh * hd))?
            } else {
                attend(&q, &k, &v, mask.as_ref(), grad)?
            };
            x = (x + project(Slot::O, &blk.o, &a)?)?;
            let h = ops::rms_norm(&x, &blk.ffn_norm, self.cfg.rms_eps, grad)?;
            let gu = project(Slot::GateUp, &blk.gate_up, &h)?;
            let f =
                imix_kernels::activation::swiglu(&gu.narrow(2, 0, ffn)?, &gu.narrow(2, ffn, ffn)?)?;
            x = (x + project(Slot::Down, &blk.down, &f)?)?;
        }
        if let Some(c) = cache {
            if !grad {
                c.len += t;
            }
        }
        ops::rms_norm(&x, &self.norm, self.cfg.rms_eps, grad)
    }

    /// Output-layer logits for hidden states `(..., hidden)`.
    pub fn logits(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        self.lm_head.forward(h)
    }

    /// Mean cross-entropy of the next-token predictions from hidden states `h (n, hidden)`
    /// against `labels`, for training: differentiable in `h`, never keeping the logits.
    pub fn output_loss(&self, h: &Tensor, labels: &[u32]) -> candle_core::Result<Tensor> {
        imix_kernels::loss::output_cross_entropy(h, &self.lm_head, labels)
    }

    /// Full per-position logits `(b, t, vocab)` for token ids (used by parity tests).
    pub fn forward_ids(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let x = self.embed_ids(ids)?.unsqueeze(0)?;
        self.logits(&self.forward_embeds(&x, None, false)?)
    }

    /// An empty KV cache.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            kv: vec![None; self.cfg.layers],
            len: 0,
        }
    }
}

/// Grouped-query attention `softmax(q·kᵀ/√hd + mask)·v` for `q (b, nh, t, hd)` and
/// `k`/`v (b, nkv, tk, hd)`, returning `(b, t, nh·hd)`. K/V are not copied per query head: the
/// `rep` query heads sharing one KV head are stacked along the row axis.
fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    grad: bool,
) -> candle_core::Result<Tensor> {
    let (b, nh, t, hd) = q.dims4()?;
    let (nkv, tk) = (k.dim(1)?, k.dim(2)?);
    let rep = nh / nkv;
    let q = q.reshape((b, nkv, rep * t, hd))?;
    let s = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
    let s = match mask {
        Some(m) => s
            .reshape((b, nkv, rep, t, tk))?
            .broadcast_add(m)?
            .reshape((b, nkv, rep * t, tk))?,
        None => s,
    };
    let p = ops::softmax(&s, grad)?;
    p.matmul(v)?
        .reshape((b, nh, t, hd))?
        .transpose(1, 2)?
        .reshape((b, t, nh * hd))
}

/// The training attention from candle ops: the reference the fused kernel is tested against.
#[cfg(test)]
fn composed_attention(
    cfg: &LlmConfig,
    cos: &Tensor,
    sin: &Tensor,
    mask: Option<&Tensor>,
    prefix: Option<&(Tensor, Tensor)>,
    qkv: &Tensor,
) -> candle_core::Result<Tensor> {
    let (b, t, _) = qkv.dims3()?;
    let (nh, nkv) = (cfg.heads, cfg.kv_heads);
    let hd = cfg.hidden / nh;
    let split = |from: usize, heads: usize| {
        qkv.narrow(2, from * hd, heads * hd)?
            .reshape((b, t, heads, hd))?
            .transpose(1, 2)?
            .contiguous()
    };
    let q = ops::rope(&split(0, nh)?, cos, sin, true)?;
    let mut k = ops::rope(&split(nh, nkv)?, cos, sin, true)?;
    let mut v = split(nh + nkv, nkv)?;
    if let Some((pk, pv)) = prefix {
        k = Tensor::cat(&[pk, &k], 2)?;
        v = Tensor::cat(&[pv, &v], 2)?;
    }
    attend(&q, &k, &v, mask, true)
}

/// Additive causal mask `(t, off + t)` for queries at positions `off..off+t`; `None` for one query.
fn causal_mask(t: usize, off: usize, dev: &Device) -> candle_core::Result<Option<Tensor>> {
    if t == 1 {
        return Ok(None);
    }
    let tk = off + t;
    let m: Vec<f32> = (0..t)
        .flat_map(|i| (0..tk).map(move |j| if j > off + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Some(Tensor::from_vec(m, (t, tk), dev)?))
}

/// RoPE tables `(max_pos, head_dim/2)` for rotate-half rotary embedding.
fn rope_tables(cfg: &LlmConfig, dev: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let hd = cfg.hidden / cfg.heads;
    let inv: Vec<f32> = (0..hd / 2)
        .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f32 / hd as f32))
        .collect();
    let inv = Tensor::from_vec(inv, (1, hd / 2), dev)?;
    let pos = Tensor::arange(0u32, cfg.max_pos as u32, dev)?
        .to_dtype(DType::F32)?
        .reshape((cfg.max_pos, 1))?;
    let f = pos.broadcast_mul(&inv)?;
    Ok((f.cos()?, f.sin()?))
}

/// Log-probabilities over the vocabulary for logits `(..., vocab)`.
pub fn log_softmax(logits: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::log_softmax(logits, D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The fused causal-attention kernel equals the candle-op composition, forward and backward,
    /// with and without a constant prefix, in f64 (to rounding) and f32.
    #[test]
    fn causal_kernel_equals_the_composition() {
        use rand::{Rng, SeedableRng};
        let dev = Device::Cpu;
        let cfg = LlmConfig {
            hidden: 32,
            layers: 1,
            heads: 4,
            kv_heads: 2,
            ffn: 8,
            vocab: 10,
            rope_theta: 10000.0,
            rms_eps: 1e-5,
            max_pos: 64,
        };
        let (b, t, hd) = (2, 5, 8);
        let (cos_all, sin_all) = rope_tables(&cfg, &dev).unwrap();
        for (p, dt) in [(0usize, DType::F64), (3, DType::F64), (3, DType::F32)] {
            let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(p as u64);
            let mut rnd = |dims: &[usize]| {
                let n: usize = dims.iter().product();
                Tensor::from_vec(
                    (0..n)
                        .map(|_| r.random_range(-1.0f64..1.0))
                        .collect::<Vec<_>>(),
                    dims,
                    &dev,
                )
                .unwrap()
                .to_dtype(dt)
                .unwrap()
            };
            let qkv = rnd(&[b, t, (4 + 2 * 2) * hd]);
            let ga = rnd(&[b, t, 4 * hd]);
            let prefix = if p > 0 {
                Some((rnd(&[b, 2, p, hd]), rnd(&[b, 2, p, hd])))
            } else {
                None
            };
            let (cos, sin) = (
                cos_all.narrow(0, p, t).unwrap().to_dtype(dt).unwrap(),
                sin_all.narrow(0, p, t).unwrap().to_dtype(dt).unwrap(),
            );
            let table = |x: &Tensor| {
                Arc::new(
                    x.to_dtype(DType::F64)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap(),
                )
            };
            let mask = causal_mask(t, p, &dev)
                .unwrap()
                .map(|m| m.to_dtype(dt).unwrap());
            let att = imix_kernels::causal_attention::Causal {
                heads: 4,
                kv_heads: 2,
                head_dim: hd,
                cos: table(&cos),
                sin: table(&sin),
                prefix: prefix.clone(),
            };
            let composed = |x: &Tensor| {
                composed_attention(&cfg, &cos, &sin, mask.as_ref(), prefix.as_ref(), x)
            };
            let tol = if dt == DType::F64 { 1e-12 } else { 1e-5 };
            let diff = |a: &Tensor, b: &Tensor| {
                (a - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let (fused, plain) = (att.forward(&qkv).unwrap(), composed(&qkv).unwrap());
            assert!(
                diff(&fused, &plain) < tol,
                "forward differs by {} (prefix {p}, {dt:?})",
                diff(&fused, &plain)
            );
            let gk = att.input_grad(&qkv, &ga).unwrap();
            let xv = candle_core::Var::from_tensor(&qkv).unwrap();
            let grads = (composed(xv.as_tensor()).unwrap() * &ga)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gc = grads.get(xv.as_tensor()).unwrap().clone();
            assert!(
                diff(&gk, &gc) < tol,
                "gradient differs by {} (prefix {p}, {dt:?})",
                diff(&gk, &gc)
            );
            assert!(
                gc.abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
                    > 1e-3
            );
        }
    }
}
