//! Stage 1, adaptor alignment: train only the adaptor with L_GEN on unlabeled sentences, through
//! frozen encoder embeddings (computed once, cached) and the frozen LLM.

use crate::adaptor::{Adaptor, AdaptorConfig};
use crate::encoder::Encoder;
use crate::llm::Llm;
use crate::optim::{lr_at, AdamW, AdamWConfig};
use crate::prompt::Prompt;
use crate::{checkpoint, Error, Result};
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
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
        Self { steps: 2000, batch_size: 8, lr: 1e-3, warmup: 50, lr_floor: 0.1, clip: 1.0, adamw: AdamWConfig::default(), max_target_tokens: 32, holdout: 64, eval_every: 100, seed: 0 }
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

/// Embeddings `(n, dim)` of `texts`, read from `cache` when it holds exactly these texts.
pub fn embed_corpus(enc: &Encoder, texts: &[String], cache: Option<&Path>, progress: &dyn Fn(usize, usize)) -> Result<Tensor> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(enc.name().as_bytes());
    for t in texts {
        h.update(t.as_bytes());
        h.update([0]);
    }
    let key = crate::models::hex(&h.finalize());
    if let Some(p) = cache {
        if let Ok((t, meta)) = checkpoint::load(p, &candle_core::Device::Cpu) {
            if meta["key"].as_str() == Some(key.as_str()) {
                if let Some(e) = t.get("embeddings") {
                    return Ok(e.clone());
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..texts.len()).collect();
    // Similar lengths together: far less padding.
    order.sort_by_key(|&i| texts[i].len());
    let mut rows: Vec<Option<Tensor>> = vec![None; texts.len()];
    for (done, chunk) in order.chunks(64).enumerate() {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
        let e = enc.embed(&batch)?;
        for (j, &i) in chunk.iter().enumerate() {
            rows[i] = Some(e.get(j)?);
        }
        progress(((done + 1) * 64).min(texts.len()), texts.len());
    }
    let rows: Vec<Tensor> = rows.into_iter().map(|r| r.expect("every row embedded")).collect();
    let all = Tensor::stack(&rows, 0)?;
    if let Some(p) = cache {
        let mut m = HashMap::new();
        m.insert("embeddings".to_string(), all.clone());
        checkpoint::save(p, &m, &serde_json::json!({ "kind": "embeddings", "key": key }))?;
    }
    Ok(all)
}

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
    /// Steps completed.
    pub step: usize,
}

impl<'a> Aligner<'a> {
    /// Prepares training on `texts` with their frozen embeddings `emb` `(n, enc_dim)`.
    pub fn new(llm: &'a Llm, adaptor: Adaptor, texts: &[String], emb: Tensor, cfg: AlignConfig) -> Result<Self> {
        let prompt = Prompt::new(&adaptor.config().template, adaptor.config().k, llm)?;
        let targets: Vec<Vec<u32>> = texts.iter().map(|t| Prompt::target_ids(llm, t)).collect::<Result<_>>()?;
        let n = texts.len();
        if cfg.holdout >= n {
            return Err(Error::Config(format!("holdout {} leaves nothing to train on ({n} sentences)", cfg.holdout)));
        }
        let fits = |i: &usize| !targets[*i].is_empty() && targets[*i].len() <= cfg.max_target_tokens;
        let train: Vec<usize> = (0..n - cfg.holdout).filter(fits).collect();
        let held: Vec<usize> = (n - cfg.holdout..n).filter(fits).collect();
        let dropped = n - train.len() - held.len();
        if dropped > 0 {
            tracing::info!("{dropped} of {n} sentences are longer than {} LLM tokens and are left out", cfg.max_target_tokens);
        }
        if train.len() < cfg.batch_size {
            return Err(Error::Config(format!("only {} training sentences fit; need at least one batch of {}", train.len(), cfg.batch_size)));
        }
        let opt = AdamW::new(adaptor.sorted_vars(), cfg.adamw.clone())?;
        Ok(Self { llm, prompt, adaptor, opt, cfg, emb, targets, train, held, step: 0 })
    }

    /// The batch of step `step` (0-based): a pure function of the seed, so a resumed run sees the
    /// same data. Each epoch shuffles, then groups similar lengths to cut padding.
    pub fn batch_at(&self, step: usize) -> Vec<usize> {
        let bs = self.cfg.batch_size;
        let per_epoch = self.train.len() / bs;
        let (epoch, k) = (step / per_epoch, step % per_epoch);
        let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ (0x5eed_0000 + epoch as u64));
        let mut idx = self.train.clone();
        idx.shuffle(&mut rng);
        let mut batches: Vec<Vec<usize>> = Vec::with_capacity(per_epoch);
        for chunk in idx.chunks(bs * 32) {
            let mut c = chunk.to_vec();
            c.sort_by_key(|&i| self.targets[i].len());
            for b in c.chunks(bs).filter(|b| b.len() == bs) {
                batches.push(b.to_vec());
            }
        }
        batches.shuffle(&mut rng);
        batches.into_iter().nth(k % per_epoch.max(1)).unwrap_or_default()
    }

    fn loss_of(&self, rows: &[usize], grad: bool) -> Result<(Tensor, usize)> {
        let ids = Tensor::new(rows.iter().map(|&i| i as u32).collect::<Vec<_>>().as_slice(), self.emb.device())?;
        let h = self.emb.index_select(&ids, 0)?;
        let soft = self.adaptor.forward(&h)?;
        let tg: Vec<Vec<u32>> = rows.iter().map(|&i| self.targets[i].clone()).collect();
        self.prompt.gen_loss_with(self.llm, &soft, &tg, grad)
    }

    /// One optimiser step; returns its log line (with held-out loss on evaluation steps).
    pub fn train_step(&mut self) -> Result<StepLog> {
        let t0 = std::time::Instant::now();
        let rows = self.batch_at(self.step);
        let (loss, tokens) = self.loss_of(&rows, true)?;
        let grads = loss.backward()?;
        let lr = lr_at(self.step, self.cfg.lr, self.cfg.warmup, self.cfg.steps, self.cfg.lr_floor);
        let grad_norm = self.opt.step(&grads, lr, self.cfg.clip)?;
        self.step += 1;
        let eval_loss = if self.cfg.eval_every > 0 && (self.step.is_multiple_of(self.cfg.eval_every) || self.step == self.cfg.steps) { Some(self.eval_loss()?) } else { None };
        Ok(StepLog { step: self.step, loss: loss.to_scalar::<f32>()? as f64, lr, grad_norm, tokens, seconds: t0.elapsed().as_secs_f64(), eval_loss })
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
        let mut t = self.opt.state();
        for (n, v) in self.adaptor.sorted_vars() {
            t.insert(format!("param.{n}"), v.as_tensor().clone());
        }
        let meta = serde_json::json!({
            "kind": "align-checkpoint", "step": self.step, "adam_t": self.opt.t,
            "adaptor": self.adaptor.config(), "align": self.cfg, "train_size": self.train.len(),
        });
        checkpoint::save(path, &t, &meta)
    }

    /// Restores a checkpoint written by [`Aligner::save_checkpoint`] with identical settings.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let (t, meta) = checkpoint::load(path, self.emb.device())?;
        let bad = |m: String| Error::checkpoint(path, m);
        if meta["kind"] != "align-checkpoint" {
            return Err(bad("not an align checkpoint".into()));
        }
        let a: AdaptorConfig = serde_json::from_value(meta["adaptor"].clone()).map_err(|e| bad(e.to_string()))?;
        if &a != self.adaptor.config() {
            return Err(bad(format!("adaptor settings differ from this run: {a:?}")));
        }
        let c: AlignConfig = serde_json::from_value(meta["align"].clone()).map_err(|e| bad(e.to_string()))?;
        if c != self.cfg {
            return Err(bad("training settings differ from this run; resume with the same flags".into()));
        }
        if meta["train_size"].as_u64() != Some(self.train.len() as u64) {
            return Err(bad("the corpus differs from the one this checkpoint was trained on".into()));
        }
        let params: HashMap<String, Tensor> = t.iter().filter_map(|(k, v)| k.strip_prefix("param.").map(|n| (n.to_string(), v.clone()))).collect();
        self.adaptor.set_weights(&params).map_err(|e| bad(e.to_string()))?;
        self.opt.load_state(&t).map_err(bad)?;
        self.opt.t = meta["adam_t"].as_u64().unwrap_or(0) as usize;
        self.step = meta["step"].as_u64().ok_or_else(|| bad("no step".into()))? as usize;
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
