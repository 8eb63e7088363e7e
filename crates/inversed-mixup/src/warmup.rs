//! Stage 2, supervised warm-up: train the task classifier with cross-entropy while refining the
//! adaptor with L_GEN on the same sentences: L = L_CE + beta * L_GEN (LLM and encoder frozen).

use crate::adaptor::Adaptor;
use crate::classifier::{one_hot, targets_tensor, Classifier};
use crate::llm::Llm;
use crate::optim::{lr_at, AdamW, AdamWConfig};
use crate::prompt::Prompt;
use crate::{checkpoint, Error, Result};
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Warm-up settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WarmupConfig {
    /// Joint optimiser steps.
    pub steps: usize,
    /// Sentences per step.
    pub batch_size: usize,
    /// Learning rate of the classifier head.
    pub lr_classifier: f64,
    /// Learning rate of the adaptor (small: it is already aligned).
    pub lr_adaptor: f64,
    /// Weight of L_GEN.
    pub beta: f64,
    /// Seed for data order.
    pub seed: u64,
    /// Sentences longer than this many LLM tokens get no L_GEN term (they still train the classifier).
    pub max_target_tokens: usize,
}

impl Default for WarmupConfig {
    fn default() -> Self {
        Self { steps: 60, batch_size: 8, lr_classifier: 5e-2, lr_adaptor: 3e-4, beta: 1.0, seed: 0, max_target_tokens: 48 }
    }
}

/// One warm-up step's losses.
#[derive(Debug, Clone, Serialize)]
pub struct WarmupLog {
    /// 1-based step.
    pub step: usize,
    /// Cross-entropy of the batch.
    pub ce: f64,
    /// L_GEN of the batch.
    pub gen: f64,
}

/// Joint trainer over fixed (frozen-encoder) embeddings.
pub struct Warmup<'a> {
    llm: &'a Llm,
    prompt: Prompt,
    /// Task head being trained.
    pub classifier: Classifier,
    /// Adaptor being refined.
    pub adaptor: Adaptor,
    opt_c: AdamW,
    opt_a: AdamW,
    emb: Tensor,
    y: Vec<usize>,
    targets: Vec<Vec<u32>>,
    cfg: WarmupConfig,
    /// Steps done.
    pub step: usize,
}

impl<'a> Warmup<'a> {
    /// Prepares warm-up on embeddings `(n, dim)` of `texts` with class ids `y`.
    pub fn new(llm: &'a Llm, adaptor: Adaptor, classifier: Classifier, texts: &[String], emb: Tensor, y: Vec<usize>, cfg: WarmupConfig) -> Result<Self> {
        let prompt = Prompt::new(&adaptor.config().template, adaptor.config().k, llm)?;
        let targets = texts.iter().map(|t| Prompt::target_ids(llm, t)).collect::<Result<Vec<_>>>()?;
        let opt_c = AdamW::new(classifier.vars(), AdamWConfig { weight_decay: 1e-4, ..Default::default() })?;
        let opt_a = AdamW::new(adaptor.sorted_vars(), AdamWConfig::default())?;
        if texts.len() < 2 {
            return Err(Error::Config("warm-up needs at least two labelled sentences".into()));
        }
        Ok(Self { llm, prompt, classifier, adaptor, opt_c, opt_a, emb, y, targets, cfg, step: 0 })
    }

    /// The rows of step `step`: a seeded shuffle per epoch, so a resumed run sees the same data.
    pub fn batch_at(&self, step: usize) -> Vec<usize> {
        let n = self.y.len();
        let bs = self.cfg.batch_size.min(n);
        let per_epoch = n / bs;
        let (epoch, k) = (step / per_epoch, step % per_epoch);
        let mut idx: Vec<usize> = (0..n).collect();
        idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(self.cfg.seed ^ (0x3a7a_0000 + epoch as u64)));
        idx[k * bs..(k + 1) * bs].to_vec()
    }

    /// One joint step.
    pub fn train_step(&mut self) -> Result<WarmupLog> {
        let rows = self.batch_at(self.step);
        let ids = Tensor::new(rows.iter().map(|&i| i as u32).collect::<Vec<_>>().as_slice(), self.emb.device())?;
        let h = self.emb.index_select(&ids, 0)?;
        let yb: Vec<usize> = rows.iter().map(|&i| self.y[i]).collect();
        let t = targets_tensor(&one_hot(&yb, self.classifier.labels.len()), h.device())?;
        let ce = self.classifier.loss(&h, &t)?;
        let gen_rows: Vec<usize> = (0..rows.len()).filter(|&j| self.targets[rows[j]].len() <= self.cfg.max_target_tokens).collect();
        let (loss, gen) = if gen_rows.is_empty() {
            (ce.clone(), 0.0)
        } else {
            let sel = Tensor::new(gen_rows.iter().map(|&j| j as u32).collect::<Vec<_>>().as_slice(), h.device())?;
            let soft = self.adaptor.forward(&h.index_select(&sel, 0)?)?;
            let tg: Vec<Vec<u32>> = gen_rows.iter().map(|&j| self.targets[rows[j]].clone()).collect();
            let (g, _) = self.prompt.gen_loss(self.llm, &soft, &tg)?;
            let gv = g.to_scalar::<f32>()? as f64;
            ((&ce + (g * self.cfg.beta)?)?, gv)
        };
        let grads = loss.backward()?;
        let lr_a = lr_at(self.step, self.cfg.lr_adaptor, 5, self.cfg.steps, 0.1);
        self.opt_c.step(&grads, self.cfg.lr_classifier, 0.0)?;
        self.opt_a.step(&grads, lr_a, 1.0)?;
        self.step += 1;
        Ok(WarmupLog { step: self.step, ce: ce.to_scalar::<f32>()? as f64, gen })
    }

    /// Writes classifier, adaptor and both optimisers' state atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let mut t: HashMap<String, Tensor> = HashMap::new();
        for (n, v) in self.opt_c.state() {
            t.insert(format!("c.{n}"), v);
        }
        for (n, v) in self.opt_a.state() {
            t.insert(format!("a.{n}"), v);
        }
        for (n, v) in self.classifier.vars().into_iter().chain(self.adaptor.sorted_vars()) {
            t.insert(format!("param.{n}"), v.as_tensor().clone());
        }
        let meta = serde_json::json!({"kind": "warmup-checkpoint", "step": self.step, "tc": self.opt_c.t, "ta": self.opt_a.t,
            "warmup": self.cfg, "labels": self.classifier.labels, "n": self.y.len()});
        checkpoint::save(path, &t, &meta)
    }

    /// Restores a checkpoint of a run with identical settings and data.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let (t, meta) = checkpoint::load(path, self.emb.device())?;
        let bad = |m: &str| Error::checkpoint(path, m.to_string());
        if meta["kind"] != "warmup-checkpoint" {
            return Err(bad("not a warm-up checkpoint"));
        }
        let c: WarmupConfig = serde_json::from_value(meta["warmup"].clone()).map_err(|e| bad(&e.to_string()))?;
        if c != self.cfg || meta["n"].as_u64() != Some(self.y.len() as u64) {
            return Err(bad("settings or data differ from this run; resume with the same flags and data"));
        }
        let strip = |p: &str| -> HashMap<String, Tensor> { t.iter().filter_map(|(k, v)| k.strip_prefix(p).map(|n| (n.to_string(), v.clone()))).collect() };
        let params = strip("param.");
        for (n, v) in self.classifier.vars().into_iter().chain(self.adaptor.sorted_vars()) {
            v.set(params.get(&n).ok_or_else(|| bad(&format!("missing {n}")))?)?;
        }
        self.opt_c.load_state(&strip("c.")).map_err(|e| bad(&e))?;
        self.opt_a.load_state(&strip("a.")).map_err(|e| bad(&e))?;
        self.opt_c.t = meta["tc"].as_u64().unwrap_or(0) as usize;
        self.opt_a.t = meta["ta"].as_u64().unwrap_or(0) as usize;
        self.step = meta["step"].as_u64().unwrap_or(0) as usize;
        Ok(())
    }
}
