//! `imix train`: fit the task classifier on original (+ augmented) rows and evaluate it.

use crate::check;
use crate::common::{bar, ModelArgs};
use crate::data_args::DataArgs;
use anyhow::Result;
use clap::Args;
use inversed_mixup::data::labelled::{dev_sample, read_labelled_with, Labelled};
use inversed_mixup::eval::classes::{accuracy_macro_f1, argmax};
use inversed_mixup::method::augment::read_augmented;
use inversed_mixup::method::classifier::{one_hot, Classifier};
use inversed_mixup::method::task_model::{FinetuneConfig, TaskModel};
use inversed_mixup::nets::encoder::embed_corpus;
use inversed_mixup::nets::encoder::Encoder;
use inversed_mixup::stages::bundle::BundlePaths;
use std::path::{Path, PathBuf};

/// Arguments of `imix train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Augmented rows from `imix augment` (JSONL with text and soft_label)
    #[arg(long)]
    augment: Option<PathBuf>,
    /// Labelled evaluation file (same format and label names as --input)
    #[arg(long)]
    eval: PathBuf,
    /// Loss weight of every --augment row (its soft label scaled by W; 1: like an original row)
    #[arg(long, default_value_t = 1.0, value_name = "W", requires = "augment")]
    augment_weight: f64,
    #[command(flatten)]
    models: ModelArgs,
    /// Fine-tune the encoder with the head (the paper's task model) instead of fitting a linear
    /// probe on frozen embeddings
    #[arg(long)]
    finetune: bool,
    /// With --finetune: start from the encoder that `imix warmup --finetune-encoder N` fine-tuned
    /// (the bundle folder DIR), with a fresh head, instead of the pretrained encoder: the paper's
    /// stage 2 followed by retraining on original + augmented rows
    #[arg(long, value_name = "DIR", requires = "finetune")]
    from_warmup: Option<PathBuf>,
    /// With --finetune: train only the top N encoder layers (0: all layers and the embeddings)
    #[arg(long, default_value_t = 0, value_name = "N")]
    finetune_top: usize,
    /// With --finetune: passes over the training rows (the best epoch on the dev sample is kept)
    #[arg(long, default_value_t = 15)]
    epochs: usize,
    /// With --finetune: sentences per step
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// With --finetune: peak learning rate of the encoder (linear warm-up over 10 %, then linear decay)
    #[arg(long, default_value_t = 5e-5)]
    lr_encoder: f64,
    /// With --finetune: peak learning rate of the head
    #[arg(long, default_value_t = 1e-3)]
    lr_head: f64,
    /// With --finetune: dev examples per class for model selection, drawn from --input outside the
    /// training sample; 0: none, the last epoch is kept [default: --shots; without --shots none]
    #[arg(long, value_name = "K")]
    dev_shots: Option<usize>,
    /// With --finetune: seed of the data order and of the dev sample
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Probe: full-batch AdamW steps of the classifier
    #[arg(long, default_value_t = 300)]
    steps: usize,
    /// Probe: learning rate
    #[arg(long, default_value_t = 5e-2)]
    lr: f64,
    /// Also save the trained classifier here (the linear probe; not with --finetune)
    #[arg(long, conflicts_with = "finetune")]
    out: Option<PathBuf>,
}

/// Runs `imix train`.
pub fn run(a: TrainArgs) -> Result<()> {
    for (flag, v) in [
        ("lr_encoder", a.lr_encoder),
        ("lr_head", a.lr_head),
        ("lr", a.lr),
        ("augment_weight", a.augment_weight),
    ] {
        check::positive(flag, v)?;
    }
    for (flag, n) in [
        ("epochs", a.epochs),
        ("batch_size", a.batch_size),
        ("steps", a.steps),
    ] {
        check::at_least_one(flag, n)?;
    }
    if let Some(o) = &a.out {
        inversed_mixup::data::io::check_writable(o)?;
    }
    let warmed = a
        .from_warmup
        .as_ref()
        .map(|d| BundlePaths::new(d).encoder());
    if let (Some(dir), Some(w)) = (&a.from_warmup, &warmed) {
        if !w.is_file() {
            anyhow::bail!(
                "--from-warmup {}: no {} in it (its warm-up did not fine-tune the encoder: run `imix warmup --finetune-encoder 0`)",
                dir.display(),
                w.file_name().unwrap_or_default().to_string_lossy()
            );
        }
    }
    let (pool, data) = a.data.load_with_pool(None)?;
    let eval = read_labelled_with(
        std::slice::from_ref(&a.eval),
        &a.data
            .input
            .options(&a.data.text_column, Some(&a.data.label_column)),
        Some(&data.labels),
    )?;
    let mut texts = data.texts();
    let mut targets = one_hot(&data.y, data.labels.len());
    if let Some(p) = &a.augment {
        let aug = read_augmented(p, &data.labels)?;
        tracing::info!("{} augmented rows from {}", aug.len(), p.display());
        for (t, y) in aug {
            texts.push(t);
            targets.push(y.into_iter().map(|v| v * a.augment_weight).collect());
        }
    }
    let dev = candle_core::Device::Cpu;
    let ep = a.models.encoder_dir()?;
    if a.finetune {
        return finetuned(
            &a,
            &pool,
            &data,
            &eval,
            &texts,
            &targets,
            &ep,
            warmed.as_deref(),
        );
    }
    let enc = Encoder::load(&ep, &dev)?;
    let h = embed_corpus(&enc, &texts, None, &|_, _| {})?;
    let cls = Classifier::new(data.labels.clone(), enc.dim(), &dev)?;
    let loss = cls.fit(&h, &targets, a.steps, a.lr)?;
    let he = embed_corpus(&enc, &eval.texts(), None, &|_, _| {})?;
    let pred: Vec<usize> = cls.probs(&he)?.iter().map(|p| argmax(p)).collect();
    let (acc, f1) = accuracy_macro_f1(&eval.y, &pred, data.labels.len());
    if let Some(o) = &a.out {
        cls.save(o, serde_json::json!({"encoder": enc.name()}))?;
    }
    println!(
        "train_rows={} final_loss={loss:.4} eval_rows={} accuracy={acc:.4} macro_f1={f1:.4}",
        texts.len(),
        eval.rows.len()
    );
    Ok(())
}

/// `imix train --finetune`: the encoder and head trained together, the best epoch on a dev sample kept.
#[allow(clippy::too_many_arguments)] // the parts of one command's state, passed as they are
fn finetuned(
    a: &TrainArgs,
    pool: &Labelled,
    data: &Labelled,
    eval: &Labelled,
    texts: &[String],
    targets: &[Vec<f64>],
    encoder_dir: &Path,
    warmed: Option<&Path>,
) -> Result<()> {
    // --dev-shots 0 asks for no dev sample (the last epoch is kept), like a run without --shots.
    let dev_k = a.dev_shots.or(a.data.shots).filter(|&k| k > 0);
    let dev = dev_k.map(|k| dev_sample(pool, data, k, a.seed));
    if let Some(d) = &dev {
        if d.rows.is_empty() {
            anyhow::bail!("no rows of {} are left for a dev sample outside the training sample; pass --dev-shots 0", a.data.data.display());
        }
        tracing::info!(
            "dev sample: {} rows outside the training sample",
            d.rows.len()
        );
    }
    let dev = dev.filter(|d| !d.rows.is_empty());
    let (enc, varmap) = Encoder::load_trainable(encoder_dir, warmed, &candle_core::Device::Cpu)?;
    if let Some(w) = warmed {
        // Same architecture, other encoder would load without complaint: the header names it.
        let (_, meta) = inversed_mixup::data::checkpoint::load(w, &candle_core::Device::Cpu)?;
        let theirs = meta["encoder"].as_str().unwrap_or("?");
        if theirs != enc.name() {
            anyhow::bail!("--from-warmup: {} was fine-tuned from encoder {theirs:?}, but the encoder in use is {:?}; pass the matching --encoder", w.display(), enc.name());
        }
        tracing::info!("starting from the warmed-up encoder {}", w.display());
    }
    let head = Classifier::new(data.labels.clone(), enc.dim(), &candle_core::Device::Cpu)?;
    let cfg = FinetuneConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr_encoder: a.lr_encoder,
        lr_head: a.lr_head,
        top_layers: a.finetune_top,
        seed: a.seed,
        ..Default::default()
    };
    let dev_texts = dev.as_ref().map(|d| d.texts());
    let dev_pair = dev
        .as_ref()
        .zip(dev_texts.as_ref())
        .map(|(d, t)| (t.as_slice(), d.y.as_slice()));
    let pb = bar(a.epochs as u64, "finetune");
    let model = TaskModel {
        encoder: &enc,
        varmap: &varmap,
        head: &head,
    };
    let report = model.finetune(texts, targets, dev_pair, &cfg, &|l| {
        pb.set_position(l.epoch as u64);
        pb.set_message(format!(
            "loss {:.3}{}",
            l.loss,
            l.dev_accuracy
                .map(|d| format!(" dev {d:.3}"))
                .unwrap_or_default()
        ));
    })?;
    pb.finish_and_clear();
    let pred = model.predict(&eval.texts())?;
    let (acc, f1) = accuracy_macro_f1(&eval.y, &pred, data.labels.len());
    let last = report.epochs.last().map_or(f64::NAN, |e| e.loss);
    println!(
        "train_rows={} final_loss={last:.4} eval_rows={} accuracy={acc:.4} macro_f1={f1:.4} model=finetuned kept_epoch={} dev_rows={}",
        texts.len(),
        eval.rows.len(),
        report.kept_epoch,
        dev.as_ref().map_or(0, |d| d.rows.len())
    );
    Ok(())
}
