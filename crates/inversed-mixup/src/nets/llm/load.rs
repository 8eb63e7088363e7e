//! Loading a Llama model from GGUF (quantised matrices kept as blocks where the kernels read
//! them, the rest dequantised to f32) or from a safetensors directory.

use super::{rope_tables, Block, BlockWeights, Llm, LlmConfig, LlmTokenizer};
use crate::{Error, Result};
use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::{DType, Device, Tensor};
use imix_kernels::{BlockRows, FrozenLinear, FrozenRows};
use std::path::Path;
use std::sync::Arc;

impl Llm {
    /// Loads a `.gguf` file or a safetensors directory (config.json + tokenizer.json).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        if path.is_dir() {
            Self::from_safetensors_dir(path, device)
        } else {
            Self::from_gguf(path, device)
        }
    }

    /// Loads a llama-architecture GGUF file: matrices in a [`imix_kernels::block_rows::BlockFormat`]
    /// stay quantised (every product sees their exact f32 values), the rest is dequantised.
    pub fn from_gguf(path: &Path, device: &Device) -> Result<Self> {
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let c = gguf_file::Content::read(&mut f)
            .map_err(|e| Error::model(path, format!("not a GGUF file: {e}")))?;
        let md = |k: &str| {
            c.metadata
                .get(k)
                .ok_or_else(|| Error::model(path, format!("GGUF metadata lacks {k}")))
        };
        let arch = md("general.architecture")?
            .to_string()
            .map_err(|e| Error::model(path, e.to_string()))?
            .clone();
        if arch != "llama" {
            return Err(Error::model(
                path,
                format!("architecture {arch:?} is not supported (llama only)"),
            ));
        }
        let u = |k: &str| -> Result<usize> {
            let v = md(&format!("llama.{k}"))?;
            v.to_u32()
                .map(|x| x as usize)
                .or_else(|_| v.to_u64().map(|x| x as usize))
                .map_err(|e| Error::model(path, e.to_string()))
        };
        let fl = |k: &str, d: f32| {
            c.metadata
                .get(&format!("llama.{k}"))
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(d)
        };
        let tokenizer = LlmTokenizer::from_gguf(path, &c)?;
        let heads = u("attention.head_count")?;
        let cfg = LlmConfig {
            hidden: u("embedding_length")?,
            layers: u("block_count")?,
            heads,
            kv_heads: u("attention.head_count_kv").unwrap_or(heads),
            ffn: u("feed_forward_length")?,
            vocab: tokenizer.vocab_size(),
            rope_theta: fl("rope.freq_base", 10000.0),
            rms_eps: fl("attention.layer_norm_rms_epsilon", 1e-5),
            max_pos: u("context_length").unwrap_or(4096).min(8192),
        };
        let mut qget = |n: &str| {
            c.tensor(&mut f, n, device)
                .map_err(|e| Error::model(path, format!("tensor {n}: {e}")))
        };
        // The word table stays in its blocks where they tile its rows (113 MB of f32 as 30 MB of
        // Q8_0 for SmolLM2); every use dequantises the same values (imix_kernels::block_rows).
        let table = |q: candle_core::quantized::QTensor| -> Result<FrozenRows> {
            Ok(
                match BlockRows::from_qtensor(&q).filter(|_| device.is_cpu()) {
                    Some(b) => FrozenRows::Blocks(Arc::new(b)),
                    None => FrozenRows::Dense(FrozenLinear::new(q.dequantize(device)?)),
                },
            )
        };
        let embed = table(qget("token_embd.weight")?)?;
        let lm_head = if c.tensor_infos.contains_key("output.weight") {
            table(qget("output.weight")?)?
        } else {
            embed.clone()
        };
        let hd = cfg.hidden / cfg.heads;
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let mut q = |n: &str| qget(&format!("blk.{i}.{n}.weight"));
            let attn_norm = q("attn_norm")?.dequantize(device)?;
            let ffn_norm = q("ffn_norm")?.dequantize(device)?;
            let [wq, wk, wv, wo, wg, wu, wd] = [
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ]
            .map(&mut q);
            let [wq, wk, wv, wo, wg, wu, wd] = [wq?, wk?, wv?, wo?, wg?, wu?, wd?];
            // The projections stay in their blocks too (425 MB of f32 as 66 MB of Q4_1 for
            // SmolLM2); training makes its dense copy on first use (FrozenProjection::dense).
            let b = |t: &candle_core::quantized::QTensor| {
                BlockRows::from_qtensor(t).filter(|_| device.is_cpu())
            };
            let quantised = match (b(&wq), b(&wk), b(&wv), b(&wo), b(&wg), b(&wu), b(&wd)) {
                (Some(q), Some(k), Some(v), Some(o), Some(gate), Some(up), Some(down)) => {
                    Block::quantised(BlockWeights {
                        attn_norm: attn_norm.clone(),
                        q: q.select_rows(&unpermuted_rows(cfg.heads, hd)),
                        k: k.select_rows(&unpermuted_rows(cfg.kv_heads, hd)),
                        v,
                        o,
                        ffn_norm: ffn_norm.clone(),
                        gate,
                        up,
                        down,
                    })
                }
                _ => None,
            };
            let dq = |t: candle_core::quantized::QTensor| t.dequantize(device);
            blocks.push(match quantised {
                Some(b) => b,
                None => Block::new(BlockWeights {
                    attn_norm,
                    q: unpermute(&dq(wq)?, cfg.heads, hd)?,
                    k: unpermute(&dq(wk)?, cfg.kv_heads, hd)?,
                    v: dq(wv)?,
                    o: dq(wo)?,
                    ffn_norm,
                    gate: dq(wg)?,
                    up: dq(wu)?,
                    down: dq(wd)?,
                })?,
            });
        }
        let norm = qget("output_norm.weight")?.dequantize(device)?;
        let name = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::assemble(cfg, embed, blocks, norm, lm_head, tokenizer, name, device)
    }

    /// Loads a Hugging Face Llama checkpoint directory (config.json, tokenizer.json, *.safetensors).
    pub fn from_safetensors_dir(dir: &Path, device: &Device) -> Result<Self> {
        let hf: serde_json::Value = crate::nets::encoder::read_json(&dir.join("config.json"))?;
        let u = |k: &str| {
            hf[k]
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| Error::model(dir.join("config.json"), format!("missing {k}")))
        };
        let heads = u("num_attention_heads")?;
        let cfg = LlmConfig {
            hidden: u("hidden_size")?,
            layers: u("num_hidden_layers")?,
            heads,
            kv_heads: u("num_key_value_heads").unwrap_or(heads),
            ffn: u("intermediate_size")?,
            vocab: u("vocab_size")?,
            rope_theta: hf["rope_theta"].as_f64().unwrap_or(10000.0) as f32,
            rms_eps: hf["rms_norm_eps"].as_f64().unwrap_or(1e-5) as f32,
            max_pos: u("max_position_embeddings").unwrap_or(4096).min(8192),
        };
        let eos = hf["eos_token_id"].as_u64().unwrap_or(2) as u32;
        let bos = hf["bos_token_id"].as_u64().map(|v| v as u32);
        let tokenizer = LlmTokenizer::from_file(&dir.join("tokenizer.json"), eos, bos)?;
        let files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        if files.is_empty() {
            return Err(Error::model(dir, "no *.safetensors files"));
        }
        // SAFETY: read-only memory map of files we do not modify.
        let vb =
            unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&files, DType::F32, device) }
                .map_err(|e| Error::model(dir, e.to_string()))?;
        let get = |n: &str| {
            vb.get_unchecked(n)
                .map_err(|e| Error::model(dir, format!("tensor {n}: {e}")))
        };
        let embed = FrozenRows::Dense(FrozenLinear::new(get("model.embed_tokens.weight")?));
        let lm_head = if vb.contains_tensor("lm_head.weight") {
            FrozenRows::Dense(FrozenLinear::new(get("lm_head.weight")?))
        } else {
            embed.clone()
        };
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = format!("model.layers.{i}");
            let lin = |n: &str| get(&format!("{p}.{n}.weight"));
            blocks.push(Block::new(BlockWeights {
                attn_norm: get(&format!("{p}.input_layernorm.weight"))?,
                q: lin("self_attn.q_proj")?,
                k: lin("self_attn.k_proj")?,
                v: lin("self_attn.v_proj")?,
                o: lin("self_attn.o_proj")?,
                ffn_norm: get(&format!("{p}.post_attention_layernorm.weight"))?,
                gate: lin("mlp.gate_proj")?,
                up: lin("mlp.up_proj")?,
                down: lin("mlp.down_proj")?,
            })?);
        }
        let norm = get("model.norm.weight")?;
        let name = dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::assemble(cfg, embed, blocks, norm, lm_head, tokenizer, name, device)
    }

    /// A copy whose dense projections are quantised to `format` (as a GGUF of that format loads:
    /// a quarter to a sixth of the memory), e.g. for a safetensors checkpoint.
    pub fn with_quantised_projections(&self, format: GgmlDType) -> Result<Self> {
        let mut copy = self.clone();
        for blk in &mut copy.blocks {
            for p in blk.projections_mut() {
                if let Some(w) = p.rows().dense() {
                    let q = candle_core::quantized::QTensor::quantize(w, format)?;
                    let b = BlockRows::from_qtensor(&q).ok_or_else(|| {
                        Error::Config(format!("{format:?} blocks are not read by the kernels"))
                    })?;
                    *p = FrozenRows::Blocks(Arc::new(b)).into();
                }
            }
        }
        Ok(copy)
    }

    /// A copy whose quantised projections are dequantised to dense f32 (the same values;
    /// attached LoRA deltas are dropped).
    pub fn with_dense_projections(&self) -> Result<Self> {
        let mut copy = self.clone();
        for blk in &mut copy.blocks {
            for p in blk.projections_mut() {
                if let FrozenRows::Blocks(b) = p.rows() {
                    let w = Tensor::from_vec(b.to_dense(), b.dims(), &self.device)?;
                    *p = FrozenRows::Dense(FrozenLinear::new(w)).into();
                }
            }
        }
        Ok(copy)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn assemble(
        cfg: LlmConfig,
        embed: FrozenRows,
        blocks: Vec<Block>,
        norm: Tensor,
        lm_head: FrozenRows,
        tokenizer: LlmTokenizer,
        name: String,
        device: &Device,
    ) -> Result<Self> {
        if embed.dims() != (cfg.vocab, cfg.hidden) {
            return Err(Error::model(
                &name,
                format!(
                    "embedding table {:?} does not match vocab {} x hidden {}",
                    embed.dims(),
                    cfg.vocab,
                    cfg.hidden
                ),
            ));
        }
        let (cos, sin) = rope_tables(&cfg, device)?;
        Ok(Self {
            cfg,
            embed,
            blocks,
            norm,
            lm_head,
            cos,
            sin,
            tokenizer,
            name,
            device: device.clone(),
            lean_training: true,
            merged_lora: None,
        })
    }
}

/// Undoes llama.cpp's Q/K row permutation (interleaved-pair RoPE) so that rotate-half RoPE applies.
pub(crate) fn unpermute(w: &Tensor, heads: usize, hd: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    w.reshape((heads, hd / 2, 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))
}

/// The row order [`unpermute`] produces: row `h·hd + j·hd/2 + i` of the result is row
/// `h·hd + 2i + j` of llama.cpp's interleaved layout.
fn unpermuted_rows(heads: usize, hd: usize) -> Vec<usize> {
    let half = hd / 2;
    (0..heads * hd)
        .map(|n| {
            let (h, r) = (n / hd, n % hd);
            let (j, i) = (r / half, r % half);
            h * hd + 2 * i + j
        })
        .collect()
}

/// The inverse of [`unpermute`]: how llama.cpp stores Q/K (used to write test GGUF files).
pub fn permute_for_gguf(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let hd = out / heads;
    w.reshape((heads, 2, hd / 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row order used on quantised Q/K weights is the one `unpermute` gives dense ones.
    #[test]
    fn unpermuted_rows_follow_unpermute() {
        let (heads, hd, inp) = (3, 8, 2);
        let w = Tensor::arange(0f32, (heads * hd * inp) as f32, &Device::Cpu)
            .unwrap()
            .reshape((heads * hd, inp))
            .unwrap();
        let got: Vec<f32> = unpermute(&w, heads, hd)
            .unwrap()
            .narrow(1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<f32> = unpermuted_rows(heads, hd)
            .iter()
            .map(|&r| (r * inp) as f32)
            .collect();
        assert_eq!(got, want);
    }
}
