//! `imix augment` (stage 3) and `imix interpolate`.

use crate::common::{bar, set_decoding, DecodeArgs, ModelArgs};
use crate::data_args::DataArgs;
use anyhow::Result;
use clap::Args;
use inversed_mixup::api::{self, AugmentRequest, InterpolateRequest, ModelFiles};
use inversed_mixup::data::jsonl;
use inversed_mixup::method::augment::{AugRow, LabelFrom};
use inversed_mixup::method::intrusion::Mitigation;
use inversed_mixup::method::invert::{merge_adaptor_lora, Inverter};
use inversed_mixup::method::mixup::Pairing;
use inversed_mixup::stages::bundle::{self, BundlePaths};
use std::path::PathBuf;

/// Defaults of the flags: the library's, written once there.
fn d() -> AugmentRequest {
    AugmentRequest::default()
}

/// How augmented rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object a line (what `imix train --augment` reads).
    Jsonl,
    /// A header and one row per sample, soft labels as `soft_label.<class>` columns.
    Csv,
}

/// Arguments of `imix augment`.
#[derive(Args, Debug)]
pub struct AugmentArgs {
    /// Bundle written by `imix warmup`
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Output file (JSONL, or CSV with --format csv)
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    models: ModelArgs,
    /// Which examples are mixed with each other
    #[arg(long, value_enum, default_value_t = d().pairs)]
    pairs: Pairing,
    /// Partners per example
    #[arg(long, default_value_t = d().per_example)]
    per_example: usize,
    /// Mixing ratio: a value such as 0.5, beta:ALPHA (a fresh draw per pair), uniform:LO,HI or
    /// grid:0,0.25,0.5,0.75,1.
    /// The default, Beta(0.2, 0.2), trained the best task models on dev splits (RESULTS.md)
    #[arg(long, default_value_t = d().lambda)]
    lambda: String,
    #[command(flatten)]
    dec: DecodeArgs,
    /// Confidence from which a contradicting prediction counts as intrusion
    #[arg(long, default_value_t = d().threshold)]
    threshold: f64,
    /// Intruders: keep, drop, or relabel (soft label blended 50/50 with the prediction)
    #[arg(long, value_enum, default_value_t = d().intrusion)]
    intrusion: Mitigation,
    /// Label source: mix (the mixing ratio, as in the paper) or content (the ratio the generated
    /// sentence's own embedding shows, so a decode that copied one source gets that source's label)
    #[arg(long, value_enum, default_value_t = d().label)]
    label: LabelFrom,
    /// Decode again, by seeded top-p sampling (p 0.9), a sentence that is one of its two sources
    /// word for word, up to N times (0: never): a near-source mix then adds a variation of its
    /// source instead of a duplicate with a softened label (`imix-bench`'s inversed-mixup-novel uses 4)
    #[arg(long, value_name = "N", default_value_t = d().resample_copies)]
    resample_copies: usize,
    /// Over-generate and select: decode M candidates per mix (the --decode one, then seeded top-p
    /// samples) and keep the one closest to the mixed target that is not a near copy of a source
    /// (token F1 >= 0.8 or cosine >= 0.95 to either), at M times the decoding cost
    #[arg(long, value_name = "M", default_value_t = d().candidates)]
    candidates: usize,
    /// Leave out a mix whose every candidate is a near copy of a source (counted as rejected)
    #[arg(long)]
    reject_copies: bool,
    /// Teacher labels: blend each row's label with the task model's prediction on its text,
    /// (1 - W) * label + W * prediction (0: off); with --intrusion drop, rows the task model
    /// confidently contradicts are left out
    #[arg(long, value_name = "W", default_value_t = d().teacher_weight)]
    teacher_weight: f64,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// Mixes decoded together
    #[arg(long, default_value_t = d().batch_size)]
    batch_size: usize,
    /// Run only shard I of N (0-based, e.g. $SLURM_ARRAY_TASK_ID/N): whole decode batches, split
    /// evenly; the shards' JSONL files concatenated in order equal the unsharded output byte for byte
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
}

impl AugmentArgs {
    /// The request these flags make.
    fn request(&self) -> AugmentRequest {
        let mut r = AugmentRequest {
            pairs: self.pairs,
            per_example: self.per_example,
            lambda: self.lambda.clone(),
            threshold: self.threshold,
            intrusion: self.intrusion,
            label: self.label,
            resample_copies: self.resample_copies,
            candidates: self.candidates,
            reject_copies: self.reject_copies,
            teacher_weight: self.teacher_weight,
            batch_size: self.batch_size,
            shard: self.shard.clone(),
            shots: self.data.shots,
            shots_seed: self.data.shots_seed,
            max_chars: self.data.input.max_chars,
            ..Default::default()
        };
        set_decoding!(r, self.dec);
        r
    }
}

/// Runs `imix augment`.
pub fn run(a: AugmentArgs) -> Result<()> {
    let req = a.request();
    let plan = req.validate()?;
    inversed_mixup::data::io::check_writable(&a.out)?;
    if a.shard.is_some() && a.format == Format::Csv {
        anyhow::bail!("--shard writes JSONL (shards concatenate into the unsharded file): leave out --format csv");
    }
    let paths = BundlePaths::new(&a.model);
    let dev = candle_core::Device::Cpu;
    // The classifier's label set decides how the data is read: read it once, before the models.
    let classifier = bundle::load_classifier(&paths, &dev)?;
    let data = a.data.load(Some(&classifier.labels))?;
    api::plan_mixes(&data, &req, &plan)?;
    let files: ModelFiles = a.models.files()?;
    let mut llm = files.load_llm()?;
    let b = api::open_bundle(&files, &paths, classifier, &llm, || {
        files.load_encoder(None)
    })?;
    // This command decodes with the bundle's adaptor only: merge in place rather than copy the LLM.
    merge_adaptor_lora(&mut llm, &b.adaptor)?;
    let inv = Inverter::new(&b.encoder, &llm, &b.adaptor)?;
    let pb = bar(0, "augment");
    let out = api::augment(&inv, &b.classifier, &data, &req, &plan, &|d, n| {
        pb.set_length(n as u64);
        pb.set_position(d as u64);
    })?;
    pb.finish_and_clear();
    if a.format == Format::Csv {
        inversed_mixup::data::io::write_atomic(&a.out, &to_csv(&out.rows, &b.classifier.labels)?)?;
    } else {
        jsonl::write(&a.out, &out.rows)?;
    }
    println!("wrote {} rows to {}", out.rows.len(), a.out.display());
    println!("{}", out.summary);
    Ok(())
}

/// The rows as CSV: sources, flags and cosines, then one column per class for the soft label and
/// the prediction.
fn to_csv(rows: &[AugRow], labels: &[String]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut h: Vec<String> = [
        "text",
        "lambda",
        "source_a_text",
        "source_a_label",
        "source_a_index",
        "source_b_text",
        "source_b_label",
        "source_b_index",
        "intrusion",
        "cos_a",
        "cos_b",
        "content_lambda",
    ]
    .map(String::from)
    .to_vec();
    h.extend(labels.iter().map(|l| format!("soft_label.{l}")));
    h.extend(labels.iter().map(|l| format!("predicted.{l}")));
    w.write_record(&h)?;
    for r in rows {
        let mut f = vec![
            r.text.clone(),
            r.lambda.to_string(),
            r.source_a.text.clone(),
            r.source_a.label.clone(),
            r.source_a.index.to_string(),
            r.source_b.text.clone(),
            r.source_b.label.clone(),
            r.source_b.index.to_string(),
            r.intrusion.to_string(),
            format!("{:.6}", r.cos_a),
            format!("{:.6}", r.cos_b),
            format!("{:.6}", r.content_lambda),
        ];
        f.extend(labels.iter().map(|l| format!("{:.6}", r.soft_label[l])));
        f.extend(labels.iter().map(|l| format!("{:.6}", r.predicted[l])));
        w.write_record(&f)?;
    }
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("writing CSV: {e}"))
}

/// Arguments of `imix interpolate`.
#[derive(Args, Debug)]
pub struct InterpolateArgs {
    /// Sentence A (reached at lambda = 1)
    a: String,
    /// Sentence B (lambda = 0)
    b: String,
    /// Points on the path from B to A
    #[arg(long, default_value_t = InterpolateRequest::default().steps)]
    steps: usize,
    /// Adaptor [default: the shipped one]
    #[arg(long)]
    adaptor: Option<PathBuf>,
    #[command(flatten)]
    models: ModelArgs,
    #[command(flatten)]
    dec: DecodeArgs,
}

/// Runs `imix interpolate`.
pub fn interpolate(a: InterpolateArgs) -> Result<()> {
    let mut req = InterpolateRequest {
        steps: a.steps,
        ..Default::default()
    };
    set_decoding!(req, a.dec);
    req.validate()?;
    api::check_pair(&a.a, &a.b)?;
    let mut p = api::Pipeline::load(
        a.models.encoder.as_deref(),
        a.models.llm.as_deref(),
        a.adaptor.as_deref(),
    )?;
    p.merge_for_decoding()?;
    println!("B  {}", a.b);
    for s in api::interpolate(&p.inverter()?, &a.a, &a.b, &req)? {
        let g = gauge(s.cos_a, s.cos_b);
        println!(
            "lambda={:.2}  cos_a={:.3} cos_b={:.3}  {g}  {}",
            s.lambda, s.cos_a, s.cos_b, s.text
        );
    }
    println!("A  {}", a.a);
    Ok(())
}

/// Where a sentence sits between B and A by encoder cosine: `B·····●···A`.
fn gauge(cos_a: f64, cos_b: f64) -> String {
    let (a, b) = (cos_a.max(0.0), cos_b.max(0.0));
    let t = if a + b > 0.0 { a / (a + b) } else { 0.5 };
    let pos = (t * 9.0).round() as usize;
    let mut s = String::from("B");
    for i in 0..10 {
        s.push(if i == pos { '●' } else { '·' });
    }
    s.push('A');
    s
}
