//! Stage 1, adaptor alignment: train only the adaptor with L_GEN on unlabeled sentences, through
//! frozen encoder embeddings (computed once, cached) and the frozen LLM.

use crate::method::adaptor::Adaptor;
use crate::method::prompt::Prompt;
use crate::nets::llm::Llm;
use crate::nets::optim::{lr_at, AdamW, AdamWConfig};
use crate::stages::schedule::Batches;
use crate::stages::state::{Restore, Snapshot};
use crate::{Error, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Training settings for `imix align`. Everything that changes the loss curve is here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlignConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Sentences per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Final learning rate as a fraction of the peak (cosine decay).
    pub lr_floor: f64,
    /// Gradient clipping (global L2 norm; 0 disables).
    pub clip: f64,
    /// AdamW settings.
    pub adamw: AdamWConfig,
    /// Sentences longer than this many LLM tokens are left out of training (counted and logged).
    pub max_target_tokens: usize,
    /// Held-out sentences (the last ones of the corpus) for periodic evaluation.
    pub holdout: usize,
    /// Evaluate every this many steps (0: never).
    pub eval_every: usize,
    /// Seed for initialisation and data order.
    pub seed: u64,
}

impl Default for AlignConfig {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch_size: 8,
            lr: 1e-3,
            warmup: 50,
            lr_floor: 0.1,
            clip: 1.0,
            adamw: AdamWConfig::default(),
            max_target_tokens: 32,
            holdout: 64,
            eval_every: 100,
            seed: 0,
        }
    }
}

/// One line of the learning curve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepLog {
    /// 1-based step.
    pub step: usize,
    /// Training L_GEN of this batch (mean per token).
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Target tokens in the batch.
    pub tokens: usize,
    /// Wall-clock seconds of the step.
    pub seconds: f64,
    /// Held-out L_GEN, on evaluation steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
}

/// Kind of the stage-1 checkpoint file.
const KIND: &str = "align-checkpoint";

/// The stage-1 trainer: data, models, optimiser state and the step it is at.
pub struct Aligner<'a> {
    llm: &'a Llm,
    prompt: Prompt,
    /// The adaptor being trained.
    pub adaptor: Adaptor,
    opt: AdamW,
    cfg: AlignConfig,
    emb: Tensor,
    targets: Vec<Vec<u32>>,
    train: Vec<usize>,
    held: Vec<usize>,
    batches: Batches,
    /// Steps completed.
    pub step: usize,
}

impl<'a> Aligner<'a> {
    /// Prepares training on `texts` with their frozen embeddings `emb` `(n, enc_dim)`.
    pub fn new(
        llm: &'a Llm,
        adaptor: Adaptor,
        texts: &[String],
        emb: Tensor,
        cfg: AlignConfig,
    ) -> Result<Self> {
        let prompt = Prompt::new(&adaptor.config().template, adaptor.config().k, llm)?;
        let targets: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| Prompt::target_ids(llm, t))
            .collect::<Result<_>>()?;
        let n = texts.len();
        if cfg.holdout >= n {
            return Err(Error::Config(format!(
                "holdout {} leaves nothing to train on ({n} sentences)",
                cfg.holdout
            )));
        }
        let fits =
            |i: &usize| !targets[*i].is_empty() && targets[*i].len() <= cfg.max_target_tokens;
        let train: Vec<usize> = (0..n - cfg.holdout).filter(fits).collect();
        let held: Vec<usize> = (n - cfg.holdout..n).filter(fits).collect();
        let dropped = n - train.len() - held.len();
        if dropped > 0 {
            tracing::info!(
                "{dropped} of {n} sentences are longer than {} LLM tokens and are left out",
                cfg.max_target_tokens
            );
        }
        if train.len() < cfg.batch_size {
            return Err(Error::Config(format!(
                "only {} training sentences fit; need at least one batch of {}",
                train.len(),
                cfg.batch_size
            )));
        }
        let opt = AdamW::new(adaptor.sorted_vars(), cfg.adamw.clone())?;
        let batches = Batches::new(train.clone(), cfg.batch_size, cfg.seed, 0x5eed_0000)
            .grouped_by(targets.iter().map(Vec::len).collect());
        Ok(Self {
            llm,
            prompt,
            adaptor,
            opt,
            cfg,
            emb,
            targets,
            train,
            held,
            batches,
            step: 0,
        })
    }

    /// The batch of step `step` (0-based): a pure function of the seed, so a resumed run sees the
    /// same data. Each epoch shuffles, then groups similar lengths to cut padding.
    pub fn batch_at(&self, step: usize) -> Vec<usize> {
        self.batches.at(step)
    }

    fn loss_of(&self, rows: &[usize], grad: bool) -> Result<(Tensor, usize)> {
        let ids = Tensor::new(
            rows.iter()
                .map(|&i| i as u32)
                .collect::<Vec<_>>()
                .as_slice(),
            self.emb.device(),
        )?;
        let h = self.emb.index_select(&ids, 0)?;
        let soft = self.adaptor.forward(&h)?;
        let tg: Vec<Vec<u32>> = rows.iter().map(|&i| self.targets[i].clone()).collect();
        self.prompt.gen_loss_deep(
            self.llm,
            self.adaptor.lora(),
            self.adaptor.deep(),
            &soft,
            &tg,
            grad,
        )
    }

    /// One optimiser step; returns its log line (with held-out loss on evaluation steps).
    pub fn train_step(&mut self) -> Result<StepLog> {
        let t0 = std::time::Instant::now();
        let rows = self.batch_at(self.step);
        let (loss, tokens) = self.loss_of(&rows, true)?;
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            return Err(Error::Config(format!("loss {value} at step {}: training diverged; the last checkpoint is kept (lower `lr`)", self.step + 1)));
        }
        let grads = loss.backward()?;
        let lr = lr_at(
            self.step,
            self.cfg.lr,
            self.cfg.warmup,
            self.cfg.steps,
            self.cfg.lr_floor,
        );
        let grad_norm = self.opt.step(&grads, lr, self.cfg.clip)?;
        self.step += 1;
        let eval_loss = if self.cfg.eval_every > 0
            && (self.step.is_multiple_of(self.cfg.eval_every) || self.step == self.cfg.steps)
        {
            Some(self.eval_loss()?)
        } else {
            None
        };
        Ok(StepLog {
            step: self.step,
            loss: value,
            lr,
            grad_norm,
            tokens,
            seconds: t0.elapsed().as_secs_f64(),
            eval_loss,
        })
    }

    /// Mean held-out L_GEN (token-weighted), without gradients.
    pub fn eval_loss(&self) -> Result<f64> {
        let (mut s, mut n) = (0.0, 0usize);
        for chunk in self.held.chunks(self.cfg.batch_size.max(1)) {
            let (l, t) = self.loss_of(chunk, false)?;
            s += l.to_scalar::<f32>()? as f64 * t as f64;
            n += t;
        }
        Ok(if n == 0 { f64::NAN } else { s / n as f64 })
    }

    /// Writes adaptor, optimiser moments and progress atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        Snapshot::new(KIND, self.step)
            .vars("adaptor", &self.adaptor.sorted_vars())
            .optimizer("adaptor", &self.opt)
            .meta("adaptor", self.adaptor.config())?
            .meta("align", &self.cfg)?
            .meta("train_size", self.train.len())?
            .save(path)
    }

    /// Restores a checkpoint written by [`Aligner::save_checkpoint`] with identical settings.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let r = Restore::read(path, KIND, self.emb.device())?;
        r.expect("adaptor", self.adaptor.config(), "adaptor settings")?;
        r.expect("align", &self.cfg, "training settings")?;
        r.expect(
            "train_size",
            self.train.len(),
            "the corpus and its length filter",
        )?;
        r.vars("adaptor", &self.adaptor.sorted_vars())?;
        r.optimizer("adaptor", &mut self.opt)?;
        self.step = r.step()?;
        Ok(())
    }

    /// Training settings.
    pub fn config(&self) -> &AlignConfig {
        &self.cfg
    }

    /// Sizes of the training and held-out sets (after the length filter).
    pub fn sizes(&self) -> (usize, usize) {
        (self.train.len(), self.held.len())
    }
}

/// Default location of the checkpoint that belongs to an output adaptor path.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".ckpt");
    PathBuf::from(s)
}
