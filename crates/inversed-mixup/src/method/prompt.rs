//! The prompt around the soft tokens, and the teacher-forced sequence used by L_GEN.

use crate::method::deep_soft::DeepSoft;
use crate::nets::llm::{KvCache, Llm, Lora};
use crate::{Error, Result};
use candle_core::Tensor;

/// A tokenised template: `prefix <soft x k> suffix`, then the sentence.
#[derive(Debug, Clone)]
pub struct Prompt {
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    k: usize,
    /// Keys/values of the prefix, computed once: it precedes the soft tokens, so under causal
    /// attention its states never depend on them and need no recomputation or gradient.
    prefix_kv: Option<KvCache>,
}

impl Prompt {
    /// Tokenises `template` around its `<soft>` marker.
    pub fn new(template: &str, k: usize, llm: &Llm) -> Result<Self> {
        let (a, b) = template
            .split_once("<soft>")
            .ok_or_else(|| Error::Config(format!("template has no <soft> marker: {template:?}")))?;
        let tok = llm.tokenizer();
        let prefix = tok.encode(a.trim_end())?;
        let prefix_kv = if prefix.is_empty() {
            None
        } else {
            let mut c = llm.new_cache();
            llm.forward_embeds(&llm.embed_ids(&prefix)?.unsqueeze(0)?, Some(&mut c), false)?;
            Some(c)
        };
        Ok(Self {
            prefix,
            suffix: tok.encode(b)?,
            k,
            prefix_kv,
        })
    }

    /// Prefix positions served from the cache (0 without one).
    pub fn cached_prefix(&self) -> usize {
        self.prefix_kv.as_ref().map_or(0, |c| c.len)
    }

    /// The same prompt without the prefix cache: L_GEN then runs the prefix through the LLM
    /// every time (the reference the cached path is tested against).
    pub fn without_prefix_cache(mut self) -> Self {
        self.prefix_kv = None;
        self
    }

    /// Prompt length in positions (prefix + k + suffix).
    pub fn len(&self) -> usize {
        self.prefix.len() + self.k + self.suffix.len()
    }

    /// Always false: a prompt holds at least its soft tokens.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Target ids for a sentence: it follows the prompt after a space, as in running text.
    pub fn target_ids(llm: &Llm, text: &str) -> Result<Vec<u32>> {
        llm.tokenizer().encode(&format!(" {}", text.trim()))
    }

    /// Position of the first soft token in [`Prompt::embeds`].
    pub fn soft_start(&self) -> usize {
        self.prefix.len()
    }

    /// Prompt embeddings `(n, len, hidden)` around soft tokens `(n, k, hidden)`.
    pub fn embeds(&self, llm: &Llm, soft: &Tensor) -> candle_core::Result<Tensor> {
        let (n, _, h) = soft.dims3()?;
        let mut parts = Vec::with_capacity(3);
        if !self.prefix.is_empty() {
            parts.push(llm.embed_ids(&self.prefix)?.unsqueeze(0)?.broadcast_as((
                n,
                self.prefix.len(),
                h,
            ))?);
        }
        parts.push(soft.clone());
        if !self.suffix.is_empty() {
            parts.push(llm.embed_ids(&self.suffix)?.unsqueeze(0)?.broadcast_as((
                n,
                self.suffix.len(),
                h,
            ))?);
        }
        Tensor::cat(&parts, 1)
    }

    /// Soft tokens followed by the suffix embeddings `(n, k + suffix, hidden)`.
    fn embeds_from_soft(&self, llm: &Llm, soft: &Tensor) -> candle_core::Result<Tensor> {
        let (n, _, h) = soft.dims3()?;
        if self.suffix.is_empty() {
            return Ok(soft.clone());
        }
        let s =
            llm.embed_ids(&self.suffix)?
                .unsqueeze(0)?
                .broadcast_as((n, self.suffix.len(), h))?;
        Tensor::cat(&[soft, &s], 1)
    }

    /// L_GEN: mean cross-entropy of `targets` (each followed by EOS) given the prompt with `soft`.
    ///
    /// Returns the loss and the number of predicted tokens. Logits are computed only at target
    /// positions: the output layer is the most expensive matmul of a small LLM.
    pub fn gen_loss(
        &self,
        llm: &Llm,
        soft: &Tensor,
        targets: &[Vec<u32>],
    ) -> Result<(Tensor, usize)> {
        self.gen_loss_with(llm, soft, targets, true)
    }

    /// [`Prompt::gen_loss`] with a choice of differentiable (`grad`) or fused inference ops.
    pub fn gen_loss_with(
        &self,
        llm: &Llm,
        soft: &Tensor,
        targets: &[Vec<u32>],
        grad: bool,
    ) -> Result<(Tensor, usize)> {
        self.gen_loss_lora(llm, None, soft, targets, grad)
    }

    /// [`Prompt::gen_loss_with`] through an LLM carrying LoRA deltas. The prefix cache holds the
    /// base model's states, so with LoRA the whole prompt runs through the LLM.
    pub fn gen_loss_lora(
        &self,
        llm: &Llm,
        lora: Option<&Lora>,
        soft: &Tensor,
        targets: &[Vec<u32>],
        grad: bool,
    ) -> Result<(Tensor, usize)> {
        self.gen_loss_deep(llm, lora, None, soft, targets, grad)
    }

    /// [`Prompt::gen_loss_lora`] with deep soft tokens (their deltas reach only the soft-token
    /// positions and what follows, so the prefix cache stays valid).
    pub fn gen_loss_deep(
        &self,
        llm: &Llm,
        lora: Option<&Lora>,
        deep: Option<&DeepSoft>,
        soft: &Tensor,
        targets: &[Vec<u32>],
        grad: bool,
    ) -> Result<(Tensor, usize)> {
        let cache = if lora.is_some() {
            None
        } else {
            self.prefix_kv.as_ref()
        };
        let n = targets.len();
        let eos = llm.tokenizer().eos;
        let tmax = targets.iter().map(|t| t.len() + 1).max().unwrap_or(1);
        let dev = llm.device();
        let mut inp = Vec::with_capacity(n * (tmax - 1));
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            for j in 0..tmax - 1 {
                inp.push(*t.get(j).unwrap_or(&eos));
            }
            for j in 0..=t.len() {
                rows.push((i * tmax + j) as u32);
                labels.push(*t.get(j).unwrap_or(&eos));
            }
        }
        // With the prefix cached, the sequence starts at the soft tokens.
        let (p, off) = match cache {
            Some(c) => (self.embeds_from_soft(llm, soft)?, c.len),
            None => (self.embeds(llm, soft)?, 0),
        };
        let x = if tmax > 1 {
            let h = llm.config().hidden;
            let te = llm.embed_ids(&inp)?.reshape((n, tmax - 1, h))?;
            Tensor::cat(&[&p, &te], 1)?
        } else {
            p
        };
        let deltas = deep
            .map(|d| {
                d.deltas(
                    soft,
                    if cache.is_some() {
                        0
                    } else {
                        self.prefix.len()
                    },
                )
            })
            .transpose()?;
        let hid = match cache {
            Some(c) => {
                llm.forward_embeds_deep(&x, Some(&mut c.expand(n)?), grad, lora, deltas.as_ref())?
            }
            None => llm.forward_embeds_deep(&x, None, grad, lora, deltas.as_ref())?,
        };
        let h = llm.config().hidden;
        let sel = hid
            .narrow(1, self.len() - 1 - off, tmax)?
            .contiguous()?
            .reshape((n * tmax, h))?;
        let sel = sel.index_select(&Tensor::new(rows.as_slice(), dev)?, 0)?;
        let nll = if grad {
            llm.output_loss(&sel, &labels)?
        } else {
            imix_kernels::loss::cross_entropy(&llm.logits(&sel)?, &labels)?
        };
        Ok((nll, labels.len()))
    }
}
