//! The task encoder M: a BERT-family sentence encoder (safetensors + tokenizer.json), pooled and
//! normalised as its sentence-transformers config says.

mod embed_cache;
mod infer;

pub use embed_cache::embed_corpus;
pub(crate) use embed_cache::length_batches;

/// Variables with their names.
pub type NamedVars = Vec<(String, candle_core::Var)>;

use crate::nets::ops;
use crate::{Error, Result};
use candle_core::{DType, Device, Module, Tensor, Var, D};
use candle_nn::{Embedding, Linear, VarBuilder, VarMap};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationParams};

/// BERT hyper-parameters, read from the model's own `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden width (the embedding dimension).
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// FFN width.
    pub intermediate_size: usize,
    /// Learned positions.
    pub max_position_embeddings: usize,
    /// Segment vocabulary.
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "eps12")]
    pub layer_norm_eps: f64,
}
fn two() -> usize {
    2
}
fn eps12() -> f64 {
    1e-12
}

/// How token states become one sentence embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over non-padding tokens.
    Mean,
    /// The first ([CLS]) token.
    Cls,
}

#[derive(Clone)]
struct Layer {
    /// Q/K/V stacked into one matmul for inference; `None` for trainable weights (a copy would
    /// go stale as they change).
    qkv: Option<Linear>,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln1: (Tensor, Tensor),
    up: Linear,
    down: Linear,
    ln2: (Tensor, Tensor),
}

/// A sentence encoder: tokenizer + BERT + pooling (+ L2 normalisation). Cloning shares the
/// weights (tensors are reference-counted).
#[derive(Clone)]
pub struct Encoder {
    cfg: BertConfig,
    tokenizer: Tokenizer,
    word: Embedding,
    pos: Embedding,
    typ: Embedding,
    ln: (Tensor, Tensor),
    layers: Vec<Layer>,
    pooling: Pooling,
    normalize: bool,
    max_len: usize,
    name: String,
    /// Use differentiable ops (for fine-tuning); fused kernels otherwise.
    pub grad: bool,
    device: Device,
}

impl Encoder {
    /// Loads an encoder directory (config.json, model.safetensors, tokenizer.json, optional
    /// modules.json / 1_Pooling / sentence_bert_config.json) with constant (frozen) weights.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_with_weights(dir, None, device)
    }

    /// Like [`Encoder::load`], with weights from another file (e.g. an encoder fine-tuned in stage 2).
    pub fn load_with_weights(dir: &Path, weights: Option<&Path>, device: &Device) -> Result<Self> {
        let st = weights
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join("model.safetensors"));
        if !st.exists() {
            return Err(Error::model(
                &st,
                "missing: not a BERT sentence-encoder directory (expected model.safetensors)",
            ));
        }
        // SAFETY: the file is memory-mapped read-only; we never write to it while mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&st], DType::F32, device) }
            .map_err(|e| Error::model(&st, e.to_string()))?;
        Self::new(dir, vb, device)
    }

    /// Loads the encoder with trainable weights (`Var`s in the returned map) for fine-tuning;
    /// differentiable ops are switched on.
    pub fn load_trainable(
        dir: &Path,
        weights: Option<&Path>,
        device: &Device,
    ) -> Result<(Self, VarMap)> {
        let st = weights
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join("model.safetensors"));
        let mut vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, device);
        let mut e = Self::new(dir, vb, device)?;
        vm.load(&st)
            .map_err(|e| Error::model(&st, format!("cannot load trainable weights: {e}")))?;
        e.grad = true;
        for l in &mut e.layers {
            l.qkv = None;
        }
        Ok((e, vm))
    }

    /// The variables of a trainable encoder's `varmap`, sorted by name, and the subset to train:
    /// all of them (`top == 0`) or those of the top `top` layers (embeddings and lower layers stay
    /// frozen).
    pub fn select_vars(&self, varmap: &VarMap, top: usize) -> Result<(NamedVars, NamedVars)> {
        let mut vars: Vec<(String, Var)> = varmap
            .data()
            .lock()
            .expect("varmap lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let first = self.num_layers().saturating_sub(top);
        let trained: Vec<(String, Var)> = vars
            .iter()
            .filter(|(n, _)| {
                top == 0
                    || n.strip_prefix("encoder.layer.")
                        .and_then(|r| r.split('.').next())
                        .and_then(|i| i.parse::<usize>().ok())
                        .is_some_and(|i| i >= first)
            })
            .cloned()
            .collect();
        if trained.is_empty() {
            return Err(Error::Config(format!(
                "fine-tuning the top {top} layers selects no encoder variables"
            )));
        }
        Ok((vars, trained))
    }

    /// Builds the encoder from any `VarBuilder` (a VarMap-backed one makes the weights trainable).
    pub fn new(dir: &Path, vb: VarBuilder, device: &Device) -> Result<Self> {
        let cfg: BertConfig = read_json(&dir.join("config.json"))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| Error::model(dir.join("tokenizer.json"), e.to_string()))?;
        let (pooling, normalize) = read_pooling(dir)?;
        let max_len = read_json::<serde_json::Value>(&dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|v| v["max_seq_length"].as_u64())
            .map(|v| v as usize)
            .unwrap_or(cfg.max_position_embeddings)
            .min(cfg.max_position_embeddings);
        // We pad ourselves; the file's own fixed-length padding would only waste compute.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        // Some exports prefix every tensor with `bert.`; MiniLM's does not.
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let load = || -> candle_core::Result<_> {
            let e = vb.pp("embeddings");
            let h = cfg.hidden_size;
            let word = candle_nn::embedding(cfg.vocab_size, h, e.pp("word_embeddings"))?;
            let pos =
                candle_nn::embedding(cfg.max_position_embeddings, h, e.pp("position_embeddings"))?;
            let typ = candle_nn::embedding(cfg.type_vocab_size, h, e.pp("token_type_embeddings"))?;
            let ln_e = (
                e.pp("LayerNorm").get(h, "weight")?,
                e.pp("LayerNorm").get(h, "bias")?,
            );
            let mut layers = Vec::new();
            for i in 0..cfg.num_hidden_layers {
                let l = vb.pp("encoder.layer").pp(i);
                let a = l.pp("attention");
                let lin = |n: &str, i, o| candle_nn::linear(i, o, a.pp(n));
                let (q, k, v) = (
                    lin("self.query", h, h)?,
                    lin("self.key", h, h)?,
                    lin("self.value", h, h)?,
                );
                layers.push(Layer {
                    qkv: Some(stacked_qkv(&q, &k, &v)?),
                    q,
                    k,
                    v,
                    o: lin("output.dense", h, h)?,
                    ln1: (
                        a.pp("output.LayerNorm").get(h, "weight")?,
                        a.pp("output.LayerNorm").get(h, "bias")?,
                    ),
                    up: candle_nn::linear(h, cfg.intermediate_size, l.pp("intermediate.dense"))?,
                    down: candle_nn::linear(cfg.intermediate_size, h, l.pp("output.dense"))?,
                    ln2: (
                        l.pp("output.LayerNorm").get(h, "weight")?,
                        l.pp("output.LayerNorm").get(h, "bias")?,
                    ),
                });
            }
            Ok((word, pos, typ, ln_e, layers))
        };
        let (word, pos, typ, ln_e, layers) =
            load().map_err(|e| Error::model(dir, format!("bad BERT weights: {e}")))?;
        let name = model_name(dir);
        Ok(Self {
            cfg,
            tokenizer,
            word,
            pos,
            typ,
            ln: ln_e,
            layers,
            pooling,
            normalize,
            max_len,
            name,
            grad: false,
            device: device.clone(),
        })
    }

    /// A frozen copy of this encoder's current weights, with Q/K/V stacked, so that inference
    /// (test and dev predictions of a fine-tuned model) runs the fused raw path instead of the
    /// differentiable composition. The copy does not change when training goes on.
    pub fn snapshot(&self) -> Result<Self> {
        let t = |x: &Tensor| x.detach().copy();
        let lin = |l: &Linear| -> candle_core::Result<Linear> {
            Ok(Linear::new(t(l.weight())?, l.bias().map(t).transpose()?))
        };
        let emb = |e: &Embedding| -> candle_core::Result<Embedding> {
            Ok(Embedding::new(t(e.embeddings())?, e.hidden_size()))
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let (q, k, v) = (lin(&l.q)?, lin(&l.k)?, lin(&l.v)?);
            layers.push(Layer {
                qkv: Some(stacked_qkv(&q, &k, &v)?),
                q,
                k,
                v,
                o: lin(&l.o)?,
                ln1: (t(&l.ln1.0)?, t(&l.ln1.1)?),
                up: lin(&l.up)?,
                down: lin(&l.down)?,
                ln2: (t(&l.ln2.0)?, t(&l.ln2.1)?),
            });
        }
        Ok(Self {
            cfg: self.cfg.clone(),
            tokenizer: self.tokenizer.clone(),
            word: emb(&self.word)?,
            pos: emb(&self.pos)?,
            typ: emb(&self.typ)?,
            ln: (t(&self.ln.0)?, t(&self.ln.1)?),
            layers,
            pooling: self.pooling,
            normalize: self.normalize,
            max_len: self.max_len,
            name: self.name.clone(),
            grad: false,
            device: self.device.clone(),
        })
    }

    /// Transformer layers.
    pub fn num_layers(&self) -> usize {
        self.cfg.num_hidden_layers
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.cfg.hidden_size
    }

    /// Longest input in tokens (longer inputs are truncated, as sentence-transformers does).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// A short identifier recorded in adaptor metadata.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Token ids (with [CLS]/[SEP]) for one sentence, truncated to `max_len`.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Whether `text` fits the window whole (`max_len` tokens with [CLS]/[SEP]); a longer one is
    /// embedded from its first `max_len` tokens only.
    pub fn fits(&self, text: &str) -> Result<bool> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_overflowing().is_empty())
    }

    /// Embeds a batch of sentences: `(n, dim)`.
    pub fn embed(&self, texts: &[&str]) -> Result<Tensor> {
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<_>>()?;
        self.embed_ids(&ids)
    }

    /// Embeds any number of sentences in batches of 64 (bounded memory), in input order.
    pub fn embed_batched(&self, texts: &[&str]) -> Result<Tensor> {
        if texts.len() <= 64 {
            return self.embed(texts);
        }
        let parts = texts
            .chunks(64)
            .map(|c| self.embed(c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Embeds pre-tokenised sentences (right-padded internally): `(n, dim)`.
    pub fn embed_ids(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        if self.raw_path_ready() {
            return Ok(self.embed_packed(ids)?);
        }
        self.embed_ids_composed(ids)
    }

    /// [`Encoder::embed_ids`] through the candle composition ([`Encoder::forward`] on a padded
    /// batch, then [`Encoder::pool`]): the differentiable path, and the reference the raw
    /// inference path is tested against.
    pub fn embed_ids_composed(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let n = ids.len();
        let t = ids.iter().map(|v| v.len()).max().unwrap_or(1).max(1);
        let mut flat = vec![0u32; n * t];
        let mut mask = vec![0f32; n * t];
        for (i, v) in ids.iter().enumerate() {
            for (j, &id) in v.iter().enumerate() {
                flat[i * t + j] = id;
                mask[i * t + j] = 1.0;
            }
        }
        let ids = Tensor::from_vec(flat, (n, t), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, t), &self.device)?;
        let h = self.forward(&ids, &mask)?;
        Ok(self.pool(&h, &mask)?)
    }

    /// Token states `(n, t, dim)` for ids `(n, t)` with a 0/1 float mask `(n, t)`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (n, t) = ids.dims2()?;
        let pos = Tensor::arange(0u32, t as u32, &self.device)?;
        let typ = Tensor::zeros((n, t), DType::U32, &self.device)?;
        // Trained, the lookups are our op: its backward builds each table's gradient in one pass.
        let emb = |e: &Embedding, ids: &Tensor| {
            if self.grad {
                imix_kernels::embedding::lookup(e.embeddings(), ids)
            } else {
                e.forward(ids)
            }
        };
        let x = emb(&self.word, ids)?
            .broadcast_add(&emb(&self.pos, &pos)?)?
            .broadcast_add(&emb(&self.typ, &typ)?)?;
        let eps = self.cfg.layer_norm_eps as f32;
        let mut x = ops::layer_norm(&x, &self.ln.0, &self.ln.1, eps, self.grad)?;
        // Additive key mask: padding keys get a large negative score.
        let neg = ((mask.ones_like()? - mask)? * -1e9)?.reshape((n, 1, 1, t))?;
        let heads = self.cfg.num_attention_heads;
        let hd = self.cfg.hidden_size / heads;
        let split = |y: Tensor| y.reshape((n, t, heads, hd))?.transpose(1, 2)?.contiguous();
        for l in &self.layers {
            let (q, k, v) = match (&l.qkv, self.grad) {
                (Some(qkv), false) => {
                    // One matmul, then one copy into (3, n, heads, t, hd).
                    let y = qkv
                        .forward(&x)?
                        .reshape((n, t, 3, heads, hd))?
                        .permute((2, 0, 3, 1, 4))?
                        .contiguous()?;
                    (y.get(0)?, y.get(1)?, y.get(2)?)
                }
                _ => (
                    split(ops::linear(&l.q, &x, self.grad)?)?,
                    split(ops::linear(&l.k, &x, self.grad)?)?,
                    split(ops::linear(&l.v, &x, self.grad)?)?,
                ),
            };
            let a = if self.grad || q.dtype() != DType::F32 {
                let s = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&neg)?;
                ops::softmax(&s, self.grad)?.matmul(&v)?
            } else {
                imix_kernels::decode_attention::masked_attention(&q, &k, &v, &neg)?
            };
            let a = a.transpose(1, 2)?.reshape((n, t, heads * hd))?;
            x = ops::layer_norm(
                &(ops::linear(&l.o, &a, self.grad)? + &x)?,
                &l.ln1.0,
                &l.ln1.1,
                eps,
                self.grad,
            )?;
            let f = ops::linear(
                &l.down,
                &imix_kernels::activation::gelu(&ops::linear(&l.up, &x, self.grad)?)?,
                self.grad,
            )?;
            x = ops::layer_norm(&(f + &x)?, &l.ln2.0, &l.ln2.1, eps, self.grad)?;
        }
        Ok(x)
    }

    /// Pools token states into sentence embeddings and L2-normalises when the model says so.
    pub fn pool(&self, h: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let e = match self.pooling {
            Pooling::Cls => h.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let m = mask.unsqueeze(2)?;
                let s = h.broadcast_mul(&m)?.sum(1)?;
                s.broadcast_div(&m.sum(1)?.clamp(1e-9, f64::MAX)?)?
            }
        };
        if self.normalize {
            let norm = e
                .sqr()?
                .sum_keepdim(D::Minus1)?
                .sqrt()?
                .clamp(1e-12, f64::MAX)?;
            e.broadcast_div(&norm)
        } else {
            Ok(e)
        }
    }
}

/// Q, K and V projections stacked into one (inference runs one matmul); biases only when all have one.
fn stacked_qkv(q: &Linear, k: &Linear, v: &Linear) -> candle_core::Result<Linear> {
    let w = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
    let b = match (q.bias(), k.bias(), v.bias()) {
        (Some(a), Some(b), Some(c)) => Some(Tensor::cat(&[a, b, c], 0)?),
        _ => None,
    };
    Ok(Linear::new(w, b))
}

/// Reads and parses a JSON file, naming it in errors.
pub fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T> {
    let b = std::fs::read(p).map_err(|e| Error::io(p, e))?;
    serde_json::from_slice(&b).map_err(|e| Error::model(p, format!("invalid JSON: {e}")))
}

/// Pooling mode and normalisation from modules.json / 1_Pooling (mean, no normalisation if absent).
fn read_pooling(dir: &Path) -> Result<(Pooling, bool)> {
    let modules: Vec<serde_json::Value> = match read_json(&dir.join("modules.json")) {
        Ok(m) => m,
        Err(_) => return Ok((Pooling::Mean, false)),
    };
    let has = |ty: &str| {
        modules
            .iter()
            .any(|m| m["type"].as_str().is_some_and(|t| t.ends_with(ty)))
    };
    let normalize = has("models.Normalize");
    let mut pooling = Pooling::Mean;
    if let Some(m) = modules.iter().find(|m| {
        m["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("models.Pooling"))
    }) {
        let p: PathBuf = dir
            .join(m["path"].as_str().unwrap_or("1_Pooling"))
            .join("config.json");
        let c: serde_json::Value = read_json(&p)?;
        if c["pooling_mode_cls_token"].as_bool() == Some(true) {
            pooling = Pooling::Cls;
        } else if c["pooling_mode_mean_tokens"].as_bool() != Some(true) {
            return Err(Error::model(&p, "only mean or CLS pooling is supported"));
        }
    }
    Ok((pooling, normalize))
}

/// A readable identifier: the directory name, with its parent when the name is a generic "model".
fn model_name(dir: &Path) -> String {
    let last = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match dir.parent().and_then(|p| p.file_name()) {
        Some(parent) if last == "model" => format!("{}/{last}", parent.to_string_lossy()),
        _ => last,
    }
}
