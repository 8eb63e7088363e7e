//! `imix augment` (stage 3) and `imix interpolate`.

use crate::check;
use crate::common::{bar, load_adaptor, DecodeArgs, ModelArgs};
use crate::data_args::DataArgs;
use anyhow::Result;
use clap::Args;
use inversed_mixup::data::jsonl;
use inversed_mixup::eval::stats::spearman;
use inversed_mixup::method::augment::{augment, controllability, AugRow, AugmentOptions, LabelFrom};
use inversed_mixup::method::intrusion::Mitigation;
use inversed_mixup::method::invert::Inverter;
use inversed_mixup::method::mixup::{plan, LambdaSpec, Pairing};
use inversed_mixup::method::shard::Shard;
use inversed_mixup::stages::bundle::{self, BundlePaths};
use std::path::PathBuf;

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
    #[arg(long, value_enum, default_value_t = Pairing::CrossClass)]
    pairs: Pairing,
    /// Partners per example
    #[arg(long, default_value_t = 1)]
    per_example: usize,
    /// Mixing ratio: a value such as 0.5, beta:ALPHA (a fresh draw per pair) or grid:0,0.25,0.5,0.75,1.
    /// The default, Beta(0.2, 0.2), trained the best task models on dev splits (RESULTS.md)
    #[arg(long, default_value = "beta:0.2")]
    lambda: String,
    #[command(flatten)]
    dec: DecodeArgs,
    /// Confidence from which a contradicting prediction counts as intrusion
    #[arg(long, default_value_t = 0.8)]
    threshold: f64,
    /// Intruders: keep, drop, or relabel (soft label blended 50/50 with the prediction)
    #[arg(long, value_enum, default_value_t = Mitigation::Keep)]
    intrusion: Mitigation,
    /// Label source: mix (the mixing ratio, as in the paper) or content (the ratio the generated
    /// sentence's own embedding shows, so a decode that copied one source gets that source's label)
    #[arg(long, value_enum, default_value_t = LabelFrom::Mix)]
    label: LabelFrom,
    /// Decode again, by seeded top-p sampling (p 0.9), a sentence that is one of its two sources
    /// word for word, up to N times (0: never): a near-source mix then adds a variation of its
    /// source instead of a duplicate with a softened label (`imix bench`'s inversed-mixup-novel uses 4)
    #[arg(long, value_name = "N", default_value_t = 0)]
    resample_copies: usize,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// Mixes decoded together
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Run only shard I of N (0-based, e.g. $SLURM_ARRAY_TASK_ID/N): whole decode batches, split
    /// evenly; the shards' JSONL files concatenated in order equal the unsharded output byte for byte
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
}

/// Runs `imix augment`.
pub fn run(a: AugmentArgs) -> Result<()> {
    check::at_least_one("--per-example", a.per_example)?;
    check::at_least_one("--batch-size", a.batch_size)?;
    check::unit("--threshold", a.threshold)?;
    inversed_mixup::data::io::check_writable(&a.out)?;
    if a.shard.is_some() && a.format == Format::Csv {
        anyhow::bail!("--shard writes JSONL (shards concatenate into the unsharded file): leave out --format csv");
    }
    a.dec.options("greedy")?;
    let lambda: LambdaSpec = a.lambda.parse()?;
    let paths = BundlePaths::new(&a.model);
    let labels = bundle::load_classifier(&paths, &candle_core::Device::Cpu)?.labels;
    let data = a.data.load(Some(&labels))?;
    let (enc, llm) = a.models.load()?;
    let b = bundle::load(&paths, &a.models.encoder_dir()?, enc, &llm)?;
    let (cls, enc, adaptor) = (b.classifier, b.encoder, b.adaptor);
    let inv = Inverter::new(&enc, &llm, &adaptor)?;
    let mixes = plan(&data.y, a.pairs, a.per_example, &lambda, a.dec.seed)?;
    let part = a.shard.unwrap_or(Shard::ALL).range(mixes.len(), a.batch_size);
    // Decode seeds are offset by each batch's first index: offsetting by the shard's start keeps
    // every batch's seed what it is in the unsharded run.
    let mut gen = a.dec.options("greedy")?;
    gen.seed = gen.seed.wrapping_add(part.start as u64);
    let mixes = &mixes[part];
    let opt = AugmentOptions { gen, threshold: a.threshold, mitigation: a.intrusion, batch_size: a.batch_size, renormalize: true, label: a.label, resample_copies: a.resample_copies };
    let pb = bar(mixes.len() as u64, "augment");
    let (rows, st) = augment(&inv, &cls, &data, mixes, &opt, &|d, _| pb.set_position(d as u64))?;
    pb.finish_and_clear();
    if a.format == Format::Csv {
        inversed_mixup::data::io::write_atomic(&a.out, &to_csv(&rows, &cls.labels)?)?;
    } else {
        jsonl::write(&a.out, &rows)?;
    }
    println!("wrote {} rows to {}", rows.len(), a.out.display());
    println!("lambda  n  mean_cos_a  mean_cos_b  mean(cos_a-cos_b)");
    let per_value = controllability(&rows);
    // Drawn lambdas (beta:ALPHA) are all different: show five bins instead of one line per row.
    let groups: Vec<(String, Vec<&AugRow>)> = if per_value.len() <= 11 {
        per_value.iter().map(|&(l, _, _)| (format!("{l:.3}"), rows.iter().filter(|r| (r.lambda - l).abs() < 1e-6).collect())).collect()
    } else {
        (0..5).map(|b| (format!("{:.1}-{:.1}", 0.2 * b as f64, 0.2 * (b + 1) as f64), rows.iter().filter(|r| ((r.lambda * 5.0).floor() as usize).min(4) == b).collect())).collect()
    };
    for (label, sel) in groups.iter().filter(|g| !g.1.is_empty()) {
        let n = sel.len() as f64;
        let (ca, cb) = (sel.iter().map(|r| r.cos_a).sum::<f64>() / n, sel.iter().map(|r| r.cos_b).sum::<f64>() / n);
        println!("{label}  {}  {ca:.4}  {cb:.4}  {:+.4}", sel.len(), ca - cb);
    }
    let rho = spearman(&rows.iter().map(|r| r.lambda).collect::<Vec<_>>(), &rows.iter().map(|r| r.cos_a - r.cos_b).collect::<Vec<_>>());
    let rate = st.intruding as f64 / (st.generated - st.empty).max(1) as f64;
    println!(
        "generated={} written={} empty={} looping={} intruding={} intrusion_rate={rate:.4} dropped={} relabelled={} spearman_lambda_vs_cos_diff={rho:.4}",
        st.generated,
        rows.len(),
        st.empty,
        rows.iter().filter(|r| inversed_mixup::eval::text::loops(&r.text)).count(),
        st.intruding,
        st.dropped,
        st.relabelled
    );
    Ok(())
}

/// The rows as CSV: sources, flags and cosines, then one column per class for the soft label and
/// the prediction.
fn to_csv(rows: &[AugRow], labels: &[String]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut h: Vec<String> =
        ["text", "lambda", "source_a_text", "source_a_label", "source_a_index", "source_b_text", "source_b_label", "source_b_index", "intrusion", "cos_a", "cos_b", "content_lambda"]
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
    w.into_inner().map_err(|e| anyhow::anyhow!("writing CSV: {e}"))
}

/// Arguments of `imix interpolate`.
#[derive(Args, Debug)]
pub struct InterpolateArgs {
    /// Sentence A (reached at lambda = 1)
    a: String,
    /// Sentence B (lambda = 0)
    b: String,
    /// Points on the path from B to A
    #[arg(long, default_value_t = 5)]
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
    if a.steps < 2 {
        anyhow::bail!("--steps must be at least 2 (the two ends)");
    }
    let gen = a.dec.options("greedy")?;
    let (enc, llm) = a.models.load()?;
    let adaptor = load_adaptor(a.adaptor.as_deref(), &enc, &llm)?;
    let inv = Inverter::new(&enc, &llm, &adaptor)?;
    println!("B  {}", a.b);
    for p in inversed_mixup::method::augment::interpolate(&inv, &a.a, &a.b, a.steps, &gen)? {
        println!("lambda={:.2}  cos_a={:.3} cos_b={:.3}  {}  {}", p.lambda, p.cos_a, p.cos_b, gauge(p.cos_a, p.cos_b), p.text);
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
