//! The LLM tokenizer: byte-level BPE, built from GGUF metadata or read from tokenizer.json.

use super::utf8_guard::{byte_level_bytes, Utf8Guard};
use crate::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use std::collections::HashSet;
use std::path::Path;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::DecoderWrapper;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

/// Tokenizer of the frozen LLM with its special ids.
#[derive(Clone)]
pub struct LlmTokenizer {
    inner: Tokenizer,
    /// End-of-sequence id: generation stops here, and training appends it after each target.
    pub eos: u32,
    /// Beginning-of-sequence id, if the model uses one.
    pub bos: Option<u32>,
    /// Bans the tokens that would make generated text invalid UTF-8 (byte-level decoders only).
    guard: std::sync::Arc<Utf8Guard>,
}

impl LlmTokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata (gpt2-style byte-level BPE).
    pub fn from_gguf(path: &Path, c: &Content) -> Result<Self> {
        let bad = |m: &str| Error::model(path, format!("GGUF tokenizer: {m}"));
        let model = c
            .metadata
            .get("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok());
        if model.map(|s| s.as_str()) != Some("gpt2") {
            return Err(bad(&format!(
                "only byte-level BPE (gpt2) is supported, found {model:?}"
            )));
        }
        let strings = |k: &str| -> Result<Vec<String>> {
            let v = c
                .metadata
                .get(k)
                .ok_or_else(|| bad(&format!("missing {k}")))?;
            v.to_vec()
                .map_err(|e| bad(&e.to_string()))?
                .iter()
                .map(|x| x.to_string().cloned().map_err(|e| bad(&e.to_string())))
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<i32> = match c.metadata.get("tokenizer.ggml.token_type") {
            Some(Value::Array(a)) => a.iter().map(|v| v.to_i32().unwrap_or(1)).collect(),
            _ => vec![1; tokens.len()],
        };
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| bad(&format!("bad merge {m:?}")))
            })
            .collect::<Result<_>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(false)
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        let mut tok = Tokenizer::new(bpe);
        // llama.cpp's `smollm`/`gpt2` pre-tokenizers: digits one by one, then the GPT-2 regex.
        let pre = Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
        ]);
        tok.with_pre_tokenizer(Some(pre));
        tok.with_decoder(Some(ByteLevel::default()));
        // Control tokens (type 3) are matched whole, as in the reference tokenizer.
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == 3)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        tok.add_special_tokens(&specials);
        let id = |k: &str| c.metadata.get(k).and_then(|v| v.to_u32().ok());
        let eos = id("tokenizer.ggml.eos_token_id").ok_or_else(|| bad("missing eos_token_id"))?;
        Ok(Self::with_guard(
            tok,
            eos,
            id("tokenizer.ggml.bos_token_id"),
        ))
    }

    /// Reads a Hugging Face tokenizer.json; `eos` comes from the model config.
    pub fn from_file(path: &Path, eos: u32, bos: Option<u32>) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| Error::model(path, e.to_string()))?;
        Ok(Self::with_guard(inner, eos, bos))
    }

    /// Wraps `inner`, building the UTF-8 guard when its decoder is byte-level (else none: another
    /// decoder does not split characters across tokens the same way).
    fn with_guard(inner: Tokenizer, eos: u32, bos: Option<u32>) -> Self {
        let guard = match inner.get_decoder() {
            Some(DecoderWrapper::ByteLevel(_)) => {
                let special: HashSet<u32> = inner
                    .get_added_tokens_decoder()
                    .into_iter()
                    .filter(|(_, t)| t.special)
                    .map(|(i, _)| i)
                    .collect();
                Utf8Guard::new(&byte_level_bytes(&inner.get_vocab(true), &special))
            }
            _ => Utf8Guard::default(),
        };
        Self {
            inner,
            eos,
            bos,
            guard: std::sync::Arc::new(guard),
        }
    }

    /// The guard that keeps generated text valid UTF-8.
    pub fn utf8_guard(&self) -> &Utf8Guard {
        &self.guard
    }

    /// Token ids of `text`, without any special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let e = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(e.get_ids().to_vec())
    }

    /// Text of `ids`, skipping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// Vocabulary size including special tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
