//! `imix train`: fit the task classifier on original (+ augmented) rows and evaluate it.

use crate::common::ModelArgs;
use crate::data_args::DataArgs;
use anyhow::{Context, Result};
use clap::Args;
use inversed_mixup::data::labelled::read_labelled;
use inversed_mixup::eval::classes::{accuracy_macro_f1, argmax};
use inversed_mixup::method::classifier::{one_hot, Classifier};
use inversed_mixup::nets::encoder::embed_corpus;
use inversed_mixup::nets::encoder::Encoder;
use inversed_mixup::Error;
use std::path::{Path, PathBuf};

/// Arguments of `imix train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Augmented rows from `imix augment` (JSONL with text and soft_label)
    #[arg(long)]
    augment: Option<PathBuf>,
    /// Labelled evaluation file (same format and label names as --data)
    #[arg(long)]
    eval: PathBuf,
    #[command(flatten)]
    models: ModelArgs,
    /// Full-batch AdamW steps of the classifier
    #[arg(long, default_value_t = 300)]
    steps: usize,
    /// Learning rate
    #[arg(long, default_value_t = 5e-2)]
    lr: f64,
    /// Also save the trained classifier here
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Reads augmented rows: (text, soft label over `labels`); unknown labels name file and line.
pub fn read_augmented(path: &Path, labels: &[String]) -> Result<Vec<(String, Vec<f64>)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |msg: String| Error::Input { path: path.to_path_buf(), line: i + 1, msg };
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let t = v["text"].as_str().filter(|t| !t.trim().is_empty()).ok_or_else(|| bad("no text".into()))?;
        let soft = v["soft_label"].as_object().ok_or_else(|| bad("no soft_label object".into()))?;
        let mut y = vec![0.0; labels.len()];
        for (k, p) in soft {
            let id = labels.iter().position(|l| l == k).ok_or_else(|| bad(format!("unknown label {k:?} (the data has {})", labels.join(", "))))?;
            y[id] = p.as_f64().ok_or_else(|| bad(format!("probability of {k:?} is not a number")))?;
        }
        let s: f64 = y.iter().sum();
        if (s - 1.0).abs() > 1e-3 {
            return Err(bad(format!("soft label sums to {s}, not 1")).into());
        }
        out.push((t.to_string(), y));
    }
    Ok(out)
}

/// Runs `imix train`.
pub fn run(a: TrainArgs) -> Result<()> {
    let data = a.data.load(None)?;
    let eval = read_labelled(std::slice::from_ref(&a.eval), &a.data.text_column, &a.data.label_column, Some(&data.labels))?;
    let mut texts = data.texts();
    let mut targets = one_hot(&data.y, data.labels.len());
    if let Some(p) = &a.augment {
        let aug = read_augmented(p, &data.labels)?;
        tracing::info!("{} augmented rows from {}", aug.len(), p.display());
        for (t, y) in aug {
            texts.push(t);
            targets.push(y);
        }
    }
    let dev = candle_core::Device::Cpu;
    let ep = a.models.encoder_dir()?;
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
    println!("train_rows={} final_loss={loss:.4} eval_rows={} accuracy={acc:.4} macro_f1={f1:.4}", texts.len(), eval.rows.len());
    Ok(())
}
