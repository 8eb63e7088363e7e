//! The task model as the paper has it: the task encoder fine-tuned together with a linear head
//! on the labelled sample (plus augmented rows, with their soft labels), the epoch with the best
//! accuracy on a disjoint dev sample kept. The frozen-encoder probe (`Classifier::fit` on fixed
//! embeddings) stays available; under it readable augmentation cannot add anything the frozen
//! encoder could learn from (METHOD.md).

use crate::eval::classes::{accuracy_macro_f1, argmax};
use crate::method::classifier::{targets_tensor, Classifier};
use crate::nets::encoder::Encoder;
use crate::nets::optim::{lr_at, AdamW, AdamWConfig};
use crate::{Error, Result};
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// Fine-tuning settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// Passes over the training rows.
    pub epochs: usize,
    /// Sentences per step.
    pub batch_size: usize,
    /// Peak learning rate of the encoder.
    pub lr_encoder: f64,
    /// Peak learning rate of the head.
    pub lr_head: f64,
    /// Fraction of the steps spent warming the learning rates up (then linear decay to 0).
    pub warmup: f64,
    /// AdamW weight decay of the encoder.
    pub weight_decay: f64,
    /// Train only the top N layers (`0`: every layer and the embeddings).
    pub top_layers: usize,
    /// Seed of the data order.
    pub seed: u64,
    /// Embedding Mixup inside fine-tuning (TMix/SSMix-style, on the pooled embeddings): every
    /// batch also trains on each row mixed with another row of the batch, lambda ~ Beta(alpha, alpha).
    #[serde(default)]
    pub mixup_alpha: Option<f64>,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            epochs: 15,
            batch_size: 8,
            lr_encoder: 5e-5,
            lr_head: 1e-3,
            warmup: 0.1,
            weight_decay: 0.01,
            top_layers: 0,
            seed: 0,
            mixup_alpha: None,
        }
    }
}

/// One epoch of fine-tuning.
#[derive(Debug, Clone, Serialize)]
pub struct EpochLog {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss of the epoch.
    pub loss: f64,
    /// Dev accuracy after the epoch (when a dev sample is given).
    pub dev_accuracy: Option<f64>,
}

/// What fine-tuning did: the curve and the epoch that was kept.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneReport {
    /// Every epoch.
    pub epochs: Vec<EpochLog>,
    /// The epoch whose weights were kept (the best dev accuracy, the first of equals; the last without dev).
    pub kept_epoch: usize,
}

/// The task model: a trainable encoder (its variables in `varmap`) and a linear head.
pub struct TaskModel<'a> {
    /// The encoder, loaded with `Encoder::load_trainable`.
    pub encoder: &'a Encoder,
    /// Its variables.
    pub varmap: &'a VarMap,
    /// The classification head.
    pub head: &'a Classifier,
}

impl TaskModel<'_> {
    /// Fine-tunes encoder and head on `texts` with soft `targets`; with `dev` (texts, class ids),
    /// keeps the weights of the epoch with the best dev accuracy. Deterministic for a given seed.
    /// `progress(log)` is called after each epoch.
    pub fn finetune(
        &self,
        texts: &[String],
        targets: &[Vec<f64>],
        dev: Option<(&[String], &[usize])>,
        cfg: &FinetuneConfig,
        progress: &dyn Fn(&EpochLog),
    ) -> Result<FinetuneReport> {
        finetune(self, texts, targets, dev, cfg, progress)
    }

    /// Class predictions for `texts`, in batches.
    pub fn predict(&self, texts: &[String]) -> Result<Vec<usize>> {
        // A fine-tuned encoder predicts through a frozen snapshot: the fused inference path,
        // several times faster than the differentiable ops on a test split.
        let frozen = if self.encoder.grad {
            Some(self.encoder.snapshot()?)
        } else {
            None
        };
        let encoder = frozen.as_ref().unwrap_or(self.encoder);
        let mut out = vec![0; texts.len()];
        for chunk in crate::nets::encoder::length_batches(texts, 32) {
            let refs: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
            let h = encoder.embed(&refs)?.detach();
            for (&i, p) in chunk.iter().zip(self.head.probs(&h)?.iter()) {
                out[i] = argmax(p);
            }
        }
        Ok(out)
    }

    /// Accuracy on labelled `texts`.
    pub fn accuracy(&self, texts: &[String], y: &[usize]) -> Result<f64> {
        let pred = self.predict(texts)?;
        Ok(accuracy_macro_f1(y, &pred, self.head.labels.len()).0)
    }
}

fn finetune(
    m: &TaskModel,
    texts: &[String],
    targets: &[Vec<f64>],
    dev: Option<(&[String], &[usize])>,
    cfg: &FinetuneConfig,
    progress: &dyn Fn(&EpochLog),
) -> Result<FinetuneReport> {
    let (encoder, varmap, head) = (m.encoder, m.varmap, m.head);
    if !encoder.grad {
        return Err(Error::Config(
            "fine-tuning needs a trainable encoder (Encoder::load_trainable)".into(),
        ));
    }
    if texts.is_empty() || texts.len() != targets.len() {
        return Err(Error::Config(format!(
            "fine-tuning needs rows with one target each ({} texts, {} targets)",
            texts.len(),
            targets.len()
        )));
    }
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(Error::Config(
            "fine-tuning needs at least one epoch and a batch size of at least 1".into(),
        ));
    }
    let (_, trained) = encoder.select_vars(varmap, cfg.top_layers)?;
    let mut opt_e = AdamW::new(
        trained.clone(),
        AdamWConfig {
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )?;
    let mut opt_h = AdamW::new(
        head.vars(),
        AdamWConfig {
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let per_epoch = texts.len().div_ceil(cfg.batch_size);
    let total = per_epoch * cfg.epochs;
    let warm = ((cfg.warmup * total as f64).round() as usize).max(1);
    let snapshot_vars: Vec<Var> = trained
        .iter()
        .map(|(_, v)| v.clone())
        .chain(head.vars().into_iter().map(|(_, v)| v))
        .collect();
    let mut best: Option<(f64, usize, Vec<Tensor>)> = None;
    let mut logs = Vec::with_capacity(cfg.epochs);
    let mut step = 0;
    let mix = cfg
        .mixup_alpha
        .map(crate::method::mixup::beta)
        .transpose()?;
    let mut mix_rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x3141_5926);
    for epoch in 0..cfg.epochs {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
            cfg.seed ^ (0x7a5c_0000 + epoch as u64),
        ));
        let mut sum = 0.0;
        for batch in order.chunks(cfg.batch_size) {
            let bt: Vec<&str> = batch.iter().map(|&i| texts[i].as_str()).collect();
            let by: Vec<Vec<f64>> = batch.iter().map(|&i| targets[i].clone()).collect();
            let h = encoder.embed(&bt)?;
            let y = targets_tensor(&by, h.device())?;
            let mut loss = head.loss(&h, &y)?;
            if let Some(dist) = &mix {
                // Each row with a random partner of the batch, pooled embeddings and labels mixed.
                use rand::Rng;
                use rand_distr::Distribution;
                let n = batch.len();
                let partner: Vec<u32> = (0..n).map(|_| mix_rng.random_range(0..n) as u32).collect();
                let lam: Vec<f32> = (0..n).map(|_| dist.sample(&mut mix_rng) as f32).collect();
                let p = Tensor::new(partner.as_slice(), h.device())?;
                let l = Tensor::from_vec(lam.clone(), (n, 1), h.device())?;
                let one_minus = (1.0 - &l)?;
                let hm =
                    (h.broadcast_mul(&l)? + h.index_select(&p, 0)?.broadcast_mul(&one_minus)?)?;
                let ym =
                    (y.broadcast_mul(&l)? + y.index_select(&p, 0)?.broadcast_mul(&one_minus)?)?;
                loss = ((loss + head.loss(&hm, &ym)?)? * 0.5)?;
            }
            let v = loss.to_scalar::<f32>()? as f64;
            if !v.is_finite() {
                return Err(Error::Config(format!(
                    "fine-tuning diverged: loss {v} at epoch {}; lower the learning rates",
                    epoch + 1
                )));
            }
            sum += v * batch.len() as f64;
            let grads = loss.backward()?;
            // Linear decay to 0 after the warm-up (lr_at with a floor of 0 decays by a cosine; the
            // literature's BERT fine-tuning uses a linear schedule).
            let decay = |peak: f64| {
                if step < warm {
                    lr_at(step, peak, warm, total, 0.0)
                } else {
                    peak * (total - step) as f64 / (total - warm).max(1) as f64
                }
            };
            opt_e.step(&grads, decay(cfg.lr_encoder), 1.0)?;
            opt_h.step(&grads, decay(cfg.lr_head), 0.0)?;
            step += 1;
        }
        let dev_accuracy = dev.map(|(dt, dy)| m.accuracy(dt, dy)).transpose()?;
        let log = EpochLog {
            epoch: epoch + 1,
            loss: sum / texts.len() as f64,
            dev_accuracy,
        };
        progress(&log);
        let score = dev_accuracy.unwrap_or(epoch as f64);
        if best.as_ref().is_none_or(|b| score > b.0) {
            // Deep copies: AdamW updates the variables in place.
            best = Some((
                score,
                epoch + 1,
                snapshot_vars
                    .iter()
                    .map(|v| v.as_tensor().copy())
                    .collect::<candle_core::Result<_>>()?,
            ));
        }
        logs.push(log);
    }
    let (_, kept_epoch, weights) = best.expect("at least one epoch ran");
    for (v, w) in snapshot_vars.iter().zip(weights) {
        v.set(&w)?;
    }
    Ok(FinetuneReport {
        epochs: logs,
        kept_epoch,
    })
}
