//! Stage 2, supervised warm-up: train the task classifier with cross-entropy while refining the
//! adaptor with L_GEN on the same sentences: L = L_CE + beta * L_GEN. The LLM stays frozen; the
//! encoder is frozen too unless fine-tuning is asked for, in which case both losses reach it, so the
//! adaptor learns to invert the task-specific embedding space.

use crate::data::checkpoint;
use crate::method::adaptor::Adaptor;
use crate::method::classifier::{one_hot, targets_tensor, Classifier};
use crate::method::prompt::Prompt;
use crate::nets::encoder::Encoder;
use crate::nets::llm::Llm;
use crate::nets::optim::{lr_at, AdamW, AdamWConfig};
use crate::stages::schedule::Batches;
use crate::stages::state::{Restore, Snapshot};
use crate::{Error, Result};
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
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
    /// Encoder fine-tuning: `None` frozen, `Some(0)` every layer and the embeddings, `Some(n)` the top n layers.
    pub finetune: Option<usize>,
    /// Learning rate of the encoder when fine-tuned.
    pub lr_encoder: f64,
    /// L_GEN on the labelled sample only for this many passes over it (`None`: every step). A
    /// handful of sentences refined for dozens of passes is reproduced word for word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gen_passes: Option<f64>,
    /// Rows of unlabelled pool sentences per step refined with L_GEN (x -> x) alongside, through
    /// the current encoder (needs a pool: `Warmup::with_pool`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replay: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for WarmupConfig {
    fn default() -> Self {
        Self {
            steps: 60,
            batch_size: 8,
            lr_classifier: 5e-2,
            lr_adaptor: 3e-4,
            beta: 1.0,
            seed: 0,
            max_target_tokens: 48,
            finetune: None,
            lr_encoder: 2e-5,
            gen_passes: None,
            replay: 0,
        }
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

/// The encoder being fine-tuned, with its optimiser and the sentences it re-embeds every step.
pub struct FineTune<'a> {
    /// Trainable encoder (differentiable ops on).
    pub encoder: &'a Encoder,
    /// All encoder variables by name (saved whole), and the optimiser over the trained subset.
    pub vars: Vec<(String, Var)>,
    opt: AdamW,
    texts: Vec<String>,
}

impl<'a> FineTune<'a> {
    /// Selects the variables to train: all (`top == 0`) or those of the top `top` layers.
    pub fn new(
        encoder: &'a Encoder,
        varmap: &VarMap,
        top: usize,
        texts: &[String],
    ) -> Result<Self> {
        let (vars, trained) = encoder.select_vars(varmap, top)?;
        let opt = AdamW::new(trained, AdamWConfig::default())?;
        Ok(Self {
            encoder,
            vars,
            opt,
            texts: texts.to_vec(),
        })
    }
}

/// Unlabelled sentences the warm-up refines the adaptor on (x -> x), `replay` rows a step.
struct Pool {
    texts: Vec<String>,
    emb: Tensor,
    targets: Vec<Vec<u32>>,
    batches: Batches,
}

/// Kind of the stage-2 checkpoint file.
const KIND: &str = "warmup-checkpoint";

/// Joint trainer of classifier, adaptor and (optionally) encoder.
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
    batches: Batches,
    /// Steps done.
    pub step: usize,
    /// Encoder fine-tuning state, when asked for.
    pub finetune: Option<FineTune<'a>>,
    pool: Option<Pool>,
}

impl<'a> Warmup<'a> {
    /// Prepares warm-up on embeddings `(n, dim)` of `texts` with class ids `y`.
    pub fn new(
        llm: &'a Llm,
        adaptor: Adaptor,
        classifier: Classifier,
        texts: &[String],
        emb: Tensor,
        y: Vec<usize>,
        cfg: WarmupConfig,
    ) -> Result<Self> {
        let prompt = Prompt::new(&adaptor.config().template, adaptor.config().k, llm)?;
        let targets = texts
            .iter()
            .map(|t| Prompt::target_ids(llm, t))
            .collect::<Result<Vec<_>>>()?;
        let opt_c = AdamW::new(
            classifier.vars(),
            AdamWConfig {
                weight_decay: 1e-4,
                ..Default::default()
            },
        )?;
        let opt_a = AdamW::new(adaptor.sorted_vars(), AdamWConfig::default())?;
        if texts.len() < 2 {
            return Err(Error::Config(
                "warm-up needs at least two labelled sentences".into(),
            ));
        }
        let batches = Batches::new(
            (0..y.len()).collect(),
            cfg.batch_size,
            cfg.seed,
            0x3a7a_0000,
        );
        Ok(Self {
            llm,
            prompt,
            classifier,
            adaptor,
            opt_c,
            opt_a,
            emb,
            y,
            targets,
            cfg,
            batches,
            step: 0,
            finetune: None,
            pool: None,
        })
    }

    /// Unlabelled sentences (with their embeddings through the frozen encoder) replayed with
    /// L_GEN, `cfg.replay` a step; those longer than `max_target_tokens` are left out.
    pub fn with_pool(mut self, texts: &[String], emb: &Tensor) -> Result<Self> {
        if self.cfg.replay == 0 {
            return Err(Error::Config(
                "a warm-up pool needs `replay` > 0 rows a step".into(),
            ));
        }
        let mut keep = Vec::new();
        let mut targets = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            let ids = Prompt::target_ids(self.llm, t)?;
            if ids.len() <= self.cfg.max_target_tokens {
                keep.push(i);
                targets.push(ids);
            }
        }
        if keep.is_empty() {
            return Err(Error::Config(format!(
                "no unlabelled sentence fits in {} LLM tokens",
                self.cfg.max_target_tokens
            )));
        }
        let idx = Tensor::new(
            keep.iter()
                .map(|&i| i as u32)
                .collect::<Vec<_>>()
                .as_slice(),
            emb.device(),
        )?;
        let n = keep.len();
        self.pool = Some(Pool {
            texts: keep.iter().map(|&i| texts[i].clone()).collect(),
            emb: emb.index_select(&idx, 0)?,
            targets,
            batches: Batches::new(
                (0..n).collect(),
                self.cfg.replay,
                self.cfg.seed,
                0x3a7a_9000,
            ),
        });
        Ok(self)
    }

    /// Whether step `step` (0-based) still refines on the labelled sample (`gen_passes`).
    fn labelled_gen_at(&self, step: usize) -> bool {
        self.cfg
            .gen_passes
            .is_none_or(|p| ((step * self.cfg.batch_size) as f64) < p * self.y.len() as f64)
    }

    /// Fine-tunes the encoder too (its embeddings are then recomputed through it every step).
    pub fn with_finetune(mut self, f: FineTune<'a>) -> Self {
        self.finetune = Some(f);
        self
    }

    /// The rows of step `step`: a seeded shuffle per epoch, so a resumed run sees the same data.
    pub fn batch_at(&self, step: usize) -> Vec<usize> {
        self.batches.at(step)
    }

    /// One joint step.
    pub fn train_step(&mut self) -> Result<WarmupLog> {
        let rows = self.batch_at(self.step);
        let h = match &self.finetune {
            Some(f) => {
                let t: Vec<&str> = rows.iter().map(|&i| f.texts[i].as_str()).collect();
                f.encoder.embed(&t)?
            }
            None => {
                let ids = Tensor::new(
                    rows.iter()
                        .map(|&i| i as u32)
                        .collect::<Vec<_>>()
                        .as_slice(),
                    self.emb.device(),
                )?;
                self.emb.index_select(&ids, 0)?
            }
        };
        let yb: Vec<usize> = rows.iter().map(|&i| self.y[i]).collect();
        let t = targets_tensor(&one_hot(&yb, self.classifier.labels.len()), h.device())?;
        let ce = self.classifier.loss(&h, &t)?;
        let gen_rows: Vec<usize> = if self.labelled_gen_at(self.step) {
            (0..rows.len())
                .filter(|&j| self.targets[rows[j]].len() <= self.cfg.max_target_tokens)
                .collect()
        } else {
            Vec::new()
        };
        // L_GEN inputs: the labelled rows still refined, then the replayed pool rows.
        let mut inputs: Vec<Tensor> = Vec::new();
        let mut tg: Vec<Vec<u32>> = Vec::new();
        if !gen_rows.is_empty() {
            let sel = Tensor::new(
                gen_rows
                    .iter()
                    .map(|&j| j as u32)
                    .collect::<Vec<_>>()
                    .as_slice(),
                h.device(),
            )?;
            inputs.push(h.index_select(&sel, 0)?);
            tg.extend(gen_rows.iter().map(|&j| self.targets[rows[j]].clone()));
        }
        if let Some(p) = &self.pool {
            let pr = p.batches.at(self.step);
            let hp = match &self.finetune {
                Some(f) => {
                    let t: Vec<&str> = pr.iter().map(|&i| p.texts[i].as_str()).collect();
                    f.encoder.embed(&t)?
                }
                None => {
                    let ids = Tensor::new(
                        pr.iter().map(|&i| i as u32).collect::<Vec<_>>().as_slice(),
                        p.emb.device(),
                    )?;
                    p.emb.index_select(&ids, 0)?
                }
            };
            inputs.push(hp);
            tg.extend(pr.iter().map(|&i| p.targets[i].clone()));
        }
        let (loss, gen) = if inputs.is_empty() {
            (ce.clone(), 0.0)
        } else {
            let soft = self.adaptor.forward(&Tensor::cat(&inputs, 0)?)?;
            let (g, _) = self.prompt.gen_loss_deep(
                self.llm,
                self.adaptor.lora(),
                self.adaptor.deep(),
                &soft,
                &tg,
                true,
            )?;
            let gv = g.to_scalar::<f32>()? as f64;
            ((&ce + (g * self.cfg.beta)?)?, gv)
        };
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            return Err(Error::Config(format!("loss {value} at warm-up step {}: training diverged; the last checkpoint is kept (lower the learning rates)", self.step + 1)));
        }
        let grads = loss.backward()?;
        let lr_a = lr_at(self.step, self.cfg.lr_adaptor, 5, self.cfg.steps, 0.1);
        self.opt_c.step(&grads, self.cfg.lr_classifier, 0.0)?;
        self.opt_a.step(&grads, lr_a, 1.0)?;
        if let Some(f) = &mut self.finetune {
            let lr_e = lr_at(self.step, self.cfg.lr_encoder, 5, self.cfg.steps, 0.1);
            f.opt.step(&grads, lr_e, 1.0)?;
        }
        self.step += 1;
        Ok(WarmupLog {
            step: self.step,
            ce: ce.to_scalar::<f32>()? as f64,
            gen,
        })
    }

    /// Writes classifier, adaptor, the fine-tuned encoder (if any) and their optimisers' state atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let mut s = Snapshot::new(KIND, self.step)
            .vars("classifier", &self.classifier.vars())
            .optimizer("classifier", &self.opt_c)
            .vars("adaptor", &self.adaptor.sorted_vars())
            .optimizer("adaptor", &self.opt_a)
            .meta("warmup", &self.cfg)?
            .meta("labels", &self.classifier.labels)?
            .meta("n", self.y.len())?;
        if let Some(p) = &self.pool {
            s = s.meta("pool", p.texts.len())?;
        }
        if let Some(f) = &self.finetune {
            s = s.vars("encoder", &f.vars).optimizer("encoder", &f.opt);
        }
        s.save(path)
    }

    /// Restores a checkpoint of a run with identical settings and data.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let r = Restore::read(path, KIND, self.emb.device())?;
        r.expect("warmup", &self.cfg, "settings")?;
        r.expect("labels", &self.classifier.labels, "the labels")?;
        r.expect("n", self.y.len(), "the data")?;
        if let Some(p) = &self.pool {
            r.expect("pool", p.texts.len(), "the unlabelled sentences")?;
        }
        r.vars("classifier", &self.classifier.vars())?;
        r.optimizer("classifier", &mut self.opt_c)?;
        r.vars("adaptor", &self.adaptor.sorted_vars())?;
        r.optimizer("adaptor", &mut self.opt_a)?;
        if let Some(f) = &mut self.finetune {
            r.vars("encoder", &f.vars)?;
            r.optimizer("encoder", &mut f.opt)?;
        }
        self.step = r.step()?;
        Ok(())
    }

    /// Trains to `steps` total steps (from step 0, or from the checkpoint `ckpt` with `resume`),
    /// appending one line per step to the learning curve `curve` (cut back to the checkpoint's
    /// step on resume) and saving the checkpoint every `checkpoint_every` steps and at the end.
    /// `on_step` sees each step's log (progress bars). The loop `imix warmup` and the Python
    /// package share.
    pub fn run(
        &mut self,
        steps: usize,
        checkpoint_every: usize,
        ckpt: &Path,
        curve: &Path,
        resume: bool,
        on_step: &mut dyn FnMut(&WarmupLog),
    ) -> Result<()> {
        if resume {
            self.load_checkpoint(ckpt)?;
            tracing::info!("resumed at step {}", self.step);
            crate::data::jsonl::truncate_curve(curve, self.step)?;
        } else {
            crate::data::io::write_atomic(curve, b"")?;
        }
        let io = |e: std::io::Error| Error::io(curve, e);
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(curve)
            .map_err(io)?;
        while self.step < steps {
            let s = self.train_step()?;
            crate::data::jsonl::append(&mut log, &s).map_err(io)?;
            if self.step.is_multiple_of(checkpoint_every.max(1)) || self.step == steps {
                std::io::Write::flush(&mut log).map_err(io)?;
                self.save_checkpoint(ckpt)?;
            }
            on_step(&s);
        }
        Ok(())
    }
}

/// Writes the fine-tuned encoder weights (all of them, so the file loads on its own) atomically.
pub fn save_encoder(f: &FineTune, path: &Path) -> Result<()> {
    let t: HashMap<String, Tensor> = f
        .vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    checkpoint::save(
        path,
        &t,
        &serde_json::json!({"kind": "encoder", "encoder": f.encoder.name()}),
    )
}
