//! Mix alignment: self-training of the inverter on mixed embeddings. Each round mines mixes of
//! pool pairs (lambda drawn in a range), decodes candidates for each (the rounds of `correct:N`
//! and top-p samples), keeps the candidate nearest the mixed target that copies neither source
//! and whose content ratio is near lambda, then trains the adaptor (and its LoRA deltas) on
//! (mix -> kept sentence) together with replay of (x -> x) pool sentences, so single sentences
//! still invert. A held-out check after every round decodes pairs and sentences the training
//! never saw.

use crate::eval::text::loops;
use crate::method::adaptor::Adaptor;
use crate::method::augment::{content_lambda, is_near_copy, mix_embeddings};
use crate::method::invert::{cosine_rows, summarize, Inverter};
use crate::method::mixes::{invert_mixes, MixSummary};
use crate::method::prompt::Prompt;
use crate::nets::encoder::Encoder;
use crate::nets::llm::{GenerateOptions, Llm};
use crate::nets::optim::{lr_at, AdamW, AdamWConfig};
use crate::stages::align::StepLog;
use crate::stages::state::{Restore, Snapshot};
use crate::{Error, Result};
use candle_core::Tensor;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which candidate of a mix is kept for training.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Selection {
    /// Least cosine to the mixed target.
    pub min_cos: f64,
    /// Largest |content ratio - lambda|.
    pub max_gap: f64,
}

/// Settings of mix alignment. Everything that changes the run is here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MixAlignConfig {
    /// Rounds of mining and training.
    pub rounds: usize,
    /// Pool pairs mixed per round.
    pub pairs: usize,
    /// Lambda is drawn uniformly from [lambda_min, lambda_max].
    pub lambda_min: f64,
    /// Upper end of lambda's range.
    pub lambda_max: f64,
    /// Rounds of embedding-space correction per mix (the candidates of `correct:N`).
    pub corrections: usize,
    /// Top-p samples per mix, added to the candidates.
    pub samples: usize,
    /// What a kept candidate must meet.
    pub select: Selection,
    /// Optimiser steps per round.
    pub steps: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// Rows of each step that replay pool sentences (x -> x); the others are kept mixes.
    pub replay: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps (over the whole run).
    pub warmup: usize,
    /// Final learning rate as a fraction of the peak (cosine decay over the whole run).
    pub lr_floor: f64,
    /// Gradient clipping (global L2 norm; 0 disables).
    pub clip: f64,
    /// AdamW settings.
    pub adamw: AdamWConfig,
    /// Sentences (and kept candidates) longer than this many LLM tokens are left out.
    pub max_target_tokens: usize,
    /// Most new tokens per decoded candidate.
    pub max_new_tokens: usize,
    /// Held-out sentences (the last ones of the corpus): the check's sentences and pairs.
    pub holdout: usize,
    /// Held-out pairs the check decodes at lambda 0.3, 0.5 and 0.7.
    pub check_pairs: usize,
    /// Seed for pairs, lambdas, decoding and batches.
    pub seed: u64,
}

impl Default for MixAlignConfig {
    fn default() -> Self {
        Self {
            rounds: 20,
            pairs: 64,
            lambda_min: 0.2,
            lambda_max: 0.8,
            corrections: 8,
            samples: 4,
            select: Selection {
                min_cos: 0.6,
                max_gap: 0.15,
            },
            steps: 40,
            batch_size: 8,
            replay: 4,
            lr: 1e-4,
            warmup: 20,
            lr_floor: 0.1,
            clip: 1.0,
            adamw: AdamWConfig::default(),
            max_target_tokens: 32,
            max_new_tokens: 48,
            holdout: 64,
            check_pairs: 20,
            seed: 0,
        }
    }
}

impl MixAlignConfig {
    /// Refuses settings that cannot run, naming the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        for (name, v) in [
            ("rounds", self.rounds),
            ("pairs", self.pairs),
            ("corrections", self.corrections),
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("max_target_tokens", self.max_target_tokens),
            ("max_new_tokens", self.max_new_tokens),
        ] {
            if v == 0 {
                return bad(format!("`{name}` must be at least 1"));
            }
        }
        if self.replay > self.batch_size {
            return bad(format!(
                "`replay` {} exceeds `batch_size` {}",
                self.replay, self.batch_size
            ));
        }
        if !(0.0..=1.0).contains(&self.lambda_min)
            || !(0.0..=1.0).contains(&self.lambda_max)
            || self.lambda_min > self.lambda_max
        {
            return bad(format!(
                "lambda range [{}, {}] must lie within [0, 1], low end first",
                self.lambda_min, self.lambda_max
            ));
        }
        // Written so that a NaN rate is refused too.
        if self.lr.is_nan() || self.lr <= 0.0 || !(0.0..=1.0).contains(&self.lr_floor) {
            return bad(format!(
                "`lr` {} must be positive and `lr_floor` {} within [0, 1]",
                self.lr, self.lr_floor
            ));
        }
        if self.check_pairs > 0 && self.holdout < 2 {
            return bad("`check_pairs` needs at least 2 held-out sentences".into());
        }
        Ok(())
    }

    fn total_steps(&self) -> usize {
        self.rounds * self.steps
    }
}

/// A decoded candidate of one mix, scored.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The sentence.
    pub text: String,
    /// Encoder cosine to the mixed target.
    pub cos_target: f64,
    /// Encoder cosine to source A.
    pub cos_a: f64,
    /// Encoder cosine to source B.
    pub cos_b: f64,
    /// Where its embedding projects between B (0) and A (1).
    pub content_lambda: f64,
}

/// The candidate to keep for the mix of `a` (weight `lambda`) and `b`: the nearest to the mixed
/// target among those that are not empty, loop, copy neither source and carry `lambda` within
/// `max_gap`, at cosine `min_cos` or more; `None` when no candidate qualifies.
pub fn select(cands: &[Candidate], a: &str, b: &str, lambda: f64, s: &Selection) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, c) in cands.iter().enumerate() {
        let ok = !c.text.trim().is_empty()
            && !loops(&c.text)
            && !is_near_copy(&c.text, a, b, c.cos_a, c.cos_b)
            && (c.content_lambda - lambda).abs() <= s.max_gap
            && c.cos_target >= s.min_cos;
        if ok && best.is_none_or(|k| c.cos_target > cands[k].cos_target) {
            best = Some(i);
        }
    }
    best
}

/// A kept mix: what stage 3 trains on (the embedding is recomputed from the pool).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Mined {
    /// The round that mined it (0-based).
    pub round: usize,
    /// Pool index of source A (weight lambda).
    pub a: usize,
    /// Pool index of source B.
    pub b: usize,
    /// The mixing ratio.
    pub lambda: f64,
    /// The kept sentence.
    pub text: String,
    /// Its cosine to the mixed target.
    pub cos_target: f64,
    /// Its content ratio.
    pub content_lambda: f64,
}

/// One round's line of the rounds log: what mining kept and what the held-out check measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoundLog {
    /// Rounds completed when the check ran (0: before any training).
    pub round: usize,
    /// Optimiser steps completed.
    pub step: usize,
    /// Mixes decoded this round.
    pub mined: usize,
    /// Of them kept.
    pub kept: usize,
    /// Candidate sentences decoded per second while mining.
    pub sentences_per_s: f64,
    /// Mean training loss of the round's steps.
    pub train_loss: f64,
    /// Mean seconds per optimiser step.
    pub step_seconds: f64,
    /// Held-out mixes (greedy) at lambda 0.3/0.5/0.7: mean cosine to the mixed target.
    pub mid_cos_target: f64,
    /// Their share of near copies.
    pub mid_copies: f64,
    /// Their mean |content ratio - lambda|.
    pub mid_gap: f64,
    /// Their share with content ratio in [0.15, 0.85].
    pub carries_both: f64,
    /// Their share at cosine 0.35 or more to each source.
    pub close_to_both: f64,
    /// Held-out sentences decoded greedily from their own embedding: mean cosine.
    pub single_cosine: f64,
    /// Their mean token F1.
    pub single_token_f1: f64,
    /// Held-out outputs (mixes and sentences) that loop.
    pub looping: usize,
}

/// What a round's mining did.
#[derive(Debug, Clone, Default)]
pub struct MineLog {
    /// Mixes decoded.
    pub mined: usize,
    /// Of them kept.
    pub kept: usize,
    /// Candidate sentences decoded per second.
    pub sentences_per_s: f64,
}

/// Kind of the mix-alignment checkpoint file.
const KIND: &str = "mix-align-checkpoint";
/// Seed-stream salts: pairs, batches, decoding, check pairs.
const SALT_PAIRS: u64 = 0x6d69_7800_0000;
const SALT_BATCH: u64 = 0x6d69_7801_0000;
const SALT_CHECK: u64 = 0x6d69_7802_0000;
/// Mixes decoded at once while mining.
const MINE_BATCH: usize = 16;
/// Lambdas of the held-out check (all mid-lambda).
pub const CHECK_LAMBDAS: [f64; 3] = [0.3, 0.5, 0.7];

/// The mix-alignment trainer: pool, models, optimiser state, kept mixes and progress.
pub struct MixAligner<'a> {
    enc: &'a Encoder,
    llm: &'a Llm,
    prompt: Prompt,
    /// The adaptor being trained.
    pub adaptor: Adaptor,
    opt: AdamW,
    cfg: MixAlignConfig,
    texts: Vec<String>,
    emb: Tensor,
    targets: Vec<Vec<u32>>,
    train: Vec<usize>,
    held: Vec<usize>,
    /// Every kept mix so far, in mining order.
    pub mined: Vec<Mined>,
    mined_targets: Vec<Vec<u32>>,
    /// Rounds whose mining is done.
    pub rounds_mined: usize,
    /// Rounds completed (mined, trained and checked).
    pub round: usize,
    /// Optimiser steps completed.
    pub step: usize,
    /// The rounds log so far (round 0 is the check before training).
    pub log: Vec<RoundLog>,
    /// Losses and seconds of the current round's steps.
    round_losses: Vec<(f64, f64)>,
    /// The current round's mining, until its check logs it.
    pending: Option<MineLog>,
    /// Mix-alignment rounds the adaptor had seen before this run.
    adaptor_rounds: usize,
}

impl<'a> MixAligner<'a> {
    /// Prepares mix alignment of `adaptor` (trained for these models) on the pool `texts` with
    /// their embeddings `emb` `(n, enc_dim)`; its last `holdout` sentences are held out.
    pub fn new(
        enc: &'a Encoder,
        llm: &'a Llm,
        adaptor: Adaptor,
        texts: Vec<String>,
        emb: Tensor,
        cfg: MixAlignConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        adaptor.check_models(
            Path::new("the adaptor to align"),
            enc.name(),
            enc.dim(),
            llm.name(),
            llm.config(),
        )?;
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
        let held: Vec<usize> = (n - cfg.holdout..n).collect();
        if train.len() < 2 || train.len() < cfg.replay {
            return Err(Error::Config(format!(
                "only {} training sentences fit in {} tokens; mixing needs 2 and replay {}",
                train.len(),
                cfg.max_target_tokens,
                cfg.replay
            )));
        }
        let opt = AdamW::new(adaptor.sorted_vars(), cfg.adamw.clone())?;
        let adaptor_rounds = adaptor.mix_rounds();
        Ok(Self {
            enc,
            llm,
            prompt,
            adaptor,
            opt,
            cfg,
            texts,
            emb,
            targets,
            train,
            held,
            mined: Vec::new(),
            mined_targets: Vec::new(),
            rounds_mined: 0,
            round: 0,
            step: 0,
            log: Vec::new(),
            round_losses: Vec::new(),
            pending: None,
            adaptor_rounds,
        })
    }

    /// Settings.
    pub fn config(&self) -> &MixAlignConfig {
        &self.cfg
    }

    /// Sizes of the training pool and the held-out sentences.
    pub fn sizes(&self) -> (usize, usize) {
        (self.train.len(), self.held.len())
    }

    /// Whether every round is done.
    pub fn finished(&self) -> bool {
        self.round >= self.cfg.rounds
    }

    /// Whether the current round still has to mine.
    pub fn needs_mining(&self) -> bool {
        self.rounds_mined <= self.round && !self.finished()
    }

    /// Whether the current round still has optimiser steps to take.
    pub fn needs_training(&self) -> bool {
        !self.finished() && self.step < (self.round + 1) * self.cfg.steps
    }

    /// Whether the check before any training (round 0 of the log) is still to run.
    pub fn needs_baseline(&self) -> bool {
        self.log.is_empty() && self.cfg.check_pairs > 0
    }

    /// The pairs and lambdas of round `round`: a pure function of the seed.
    pub fn round_pairs(&self, round: usize) -> Vec<(usize, usize, f64)> {
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.cfg.seed ^ SALT_PAIRS.wrapping_add(round as u64));
        (0..self.cfg.pairs)
            .map(|_| {
                let p = sample(&mut rng, self.train.len(), 2);
                let l = rng.random_range(self.cfg.lambda_min..=self.cfg.lambda_max);
                (self.train[p.index(0)], self.train[p.index(1)], l)
            })
            .collect()
    }

    fn rows(&self, idx: &[usize]) -> Result<Tensor> {
        let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
        Ok(self
            .emb
            .index_select(&Tensor::new(ids.as_slice(), self.emb.device())?, 0)?)
    }

    /// Decodes the candidates of every mix of the current round and keeps the selected ones;
    /// `progress(done, total)` counts mixes.
    pub fn mine(&mut self, progress: &dyn Fn(usize, usize)) -> Result<MineLog> {
        let round = self.round;
        let todo = self.round_pairs(round);
        let inv = Inverter::new(self.enc, self.llm, &self.adaptor)?;
        let t0 = std::time::Instant::now();
        let (mut decoded, mut kept) = (0usize, Vec::new());
        for (bi, chunk) in todo.chunks(MINE_BATCH).enumerate() {
            let ia: Vec<usize> = chunk.iter().map(|p| p.0).collect();
            let ib: Vec<usize> = chunk.iter().map(|p| p.1).collect();
            let lambdas: Vec<f64> = chunk.iter().map(|p| p.2).collect();
            let (ha, hb) = (self.rows(&ia)?, self.rows(&ib)?);
            let hm = mix_embeddings(&ha, &hb, &lambdas, true)?;
            let gen = GenerateOptions {
                max_new_tokens: self.cfg.max_new_tokens,
                seed: self
                    .cfg
                    .seed
                    .wrapping_add((round * self.cfg.pairs + bi * MINE_BATCH) as u64),
                ..GenerateOptions::default()
            };
            let mut lists = inv.correction_rounds(&hm, self.cfg.corrections, &gen)?;
            lists.extend(inv.sampled_candidates(&hm, self.cfg.samples, &gen)?);
            let mut cands: Vec<Vec<Candidate>> = vec![Vec::new(); chunk.len()];
            for (out, e) in &lists {
                decoded += out.len();
                let (ct, ca, cb) = (
                    cosine_rows(e, &hm)?,
                    cosine_rows(e, &ha)?,
                    cosine_rows(e, &hb)?,
                );
                let content = content_lambda(e, &ha, &hb, &lambdas)?;
                for (k, text) in out.iter().enumerate() {
                    cands[k].push(Candidate {
                        text: text.clone(),
                        cos_target: ct[k],
                        cos_a: ca[k],
                        cos_b: cb[k],
                        content_lambda: content[k],
                    });
                }
            }
            for (k, &(a, b, lambda)) in chunk.iter().enumerate() {
                let Some(i) = select(
                    &cands[k],
                    &self.texts[a],
                    &self.texts[b],
                    lambda,
                    &self.cfg.select,
                ) else {
                    continue;
                };
                let c = &cands[k][i];
                let ids = Prompt::target_ids(self.llm, &c.text)?;
                if ids.is_empty() || ids.len() > self.cfg.max_target_tokens {
                    continue;
                }
                kept.push((
                    Mined {
                        round,
                        a,
                        b,
                        lambda,
                        text: c.text.clone(),
                        cos_target: c.cos_target,
                        content_lambda: c.content_lambda,
                    },
                    ids,
                ));
            }
            progress((bi * MINE_BATCH + chunk.len()).min(todo.len()), todo.len());
        }
        let log = MineLog {
            mined: todo.len(),
            kept: kept.len(),
            sentences_per_s: decoded as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        };
        for (m, ids) in kept {
            self.mined.push(m);
            self.mined_targets.push(ids);
        }
        self.rounds_mined = round + 1;
        self.pending = Some(log.clone());
        Ok(log)
    }

    /// The rows of global step `step` (0-based): indices into the kept mixes, then pool indices
    /// replayed as x -> x. Mixes come from the rounds mined up to the step's round; without any,
    /// the whole batch replays. A pure function of the seed and the kept mixes.
    pub fn batch_at(&self, step: usize) -> (Vec<usize>, Vec<usize>) {
        let round = step / self.cfg.steps;
        let avail = self.mined.iter().take_while(|m| m.round <= round).count();
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.cfg.seed ^ SALT_BATCH.wrapping_add(step as u64));
        let n_mix = if avail == 0 {
            0
        } else {
            (self.cfg.batch_size - self.cfg.replay).min(avail)
        };
        let n_replay = (self.cfg.batch_size - n_mix).min(self.train.len());
        let mix = sample(&mut rng, avail.max(1), n_mix).into_vec();
        let replay = sample(&mut rng, self.train.len(), n_replay)
            .into_iter()
            .map(|i| self.train[i])
            .collect();
        (mix, replay)
    }

    /// L_GEN of kept mixes `mix` and replayed pool sentences `replay`, in one batch.
    pub fn loss_of(&self, mix: &[usize], replay: &[usize], grad: bool) -> Result<(Tensor, usize)> {
        let mut parts = Vec::new();
        let mut tg: Vec<Vec<u32>> = Vec::with_capacity(mix.len() + replay.len());
        if !mix.is_empty() {
            let ia: Vec<usize> = mix.iter().map(|&m| self.mined[m].a).collect();
            let ib: Vec<usize> = mix.iter().map(|&m| self.mined[m].b).collect();
            let l: Vec<f64> = mix.iter().map(|&m| self.mined[m].lambda).collect();
            parts.push(mix_embeddings(
                &self.rows(&ia)?,
                &self.rows(&ib)?,
                &l,
                true,
            )?);
            tg.extend(mix.iter().map(|&m| self.mined_targets[m].clone()));
        }
        if !replay.is_empty() {
            parts.push(self.rows(replay)?);
            tg.extend(replay.iter().map(|&i| self.targets[i].clone()));
        }
        let h = Tensor::cat(&parts, 0)?;
        let soft = self.adaptor.forward(&h)?;
        self.prompt.gen_loss_deep(
            self.llm,
            self.adaptor.lora(),
            self.adaptor.deep(),
            &soft,
            &tg,
            grad,
        )
    }

    /// Mean x -> x L_GEN over pool sentences `rows` (token-weighted), without gradients.
    pub fn replay_loss(&self, rows: &[usize]) -> Result<f64> {
        let (mut s, mut n) = (0.0, 0usize);
        for chunk in rows.chunks(self.cfg.batch_size.max(1)) {
            let (l, t) = self.loss_of(&[], chunk, false)?;
            s += l.to_scalar::<f32>()? as f64 * t as f64;
            n += t;
        }
        Ok(if n == 0 { f64::NAN } else { s / n as f64 })
    }

    /// The training pool's indices (after the length filter).
    pub fn train_rows(&self) -> &[usize] {
        &self.train
    }

    /// One optimiser step of the current round; returns its log line.
    pub fn train_step(&mut self) -> Result<StepLog> {
        let t0 = std::time::Instant::now();
        let (mix, replay) = self.batch_at(self.step);
        let (loss, tokens) = self.loss_of(&mix, &replay, true)?;
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            return Err(Error::Config(format!("loss {value} at step {}: training diverged; the last checkpoint is kept (lower `lr`)", self.step + 1)));
        }
        let grads = loss.backward()?;
        let c = &self.cfg;
        let lr = lr_at(self.step, c.lr, c.warmup, c.total_steps(), c.lr_floor);
        let grad_norm = self.opt.step(&grads, lr, c.clip)?;
        self.step += 1;
        let seconds = t0.elapsed().as_secs_f64();
        self.round_losses.push((value, seconds));
        Ok(StepLog {
            step: self.step,
            loss: value,
            lr,
            grad_norm,
            tokens,
            seconds,
            eval_loss: None,
        })
    }

    /// The held-out check: `check_pairs` pairs of held-out sentences mixed at lambda 0.3, 0.5
    /// and 0.7, and every held-out sentence from its own embedding, decoded greedily.
    pub fn check(&self) -> Result<(MixSummary, crate::method::invert::InvertSummary)> {
        let inv = Inverter::new(self.enc, self.llm, &self.adaptor)?;
        let gen = GenerateOptions {
            max_new_tokens: self.cfg.max_new_tokens,
            seed: self.cfg.seed,
            ..GenerateOptions::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ SALT_CHECK);
        let pairs: Vec<(String, String)> = (0..self.cfg.check_pairs)
            .map(|_| {
                let p = sample(&mut rng, self.held.len(), 2);
                (
                    self.texts[self.held[p.index(0)]].clone(),
                    self.texts[self.held[p.index(1)]].clone(),
                )
            })
            .collect();
        let (_, mixes) = invert_mixes(&inv, &pairs, &CHECK_LAMBDAS, &gen, MINE_BATCH, &|_, _| {})?;
        let held: Vec<String> = self.held.iter().map(|&i| self.texts[i].clone()).collect();
        let singles = summarize(&inv.invert(&held, MINE_BATCH, &gen, &|_, _| {})?);
        Ok((mixes, singles))
    }

    /// Runs the check and appends its line to the log: the baseline before any training, or the
    /// end of the current round (which then counts as completed).
    pub fn check_and_log(&mut self) -> Result<RoundLog> {
        let baseline = self.needs_baseline() && self.step == 0 && self.rounds_mined == 0;
        let (m, s) = if self.cfg.check_pairs > 0 {
            self.check()?
        } else {
            (MixSummary::of(&[]), summarize(&[]))
        };
        let mine = if baseline {
            MineLog::default()
        } else {
            self.pending.take().unwrap_or_default()
        };
        let k = self.round_losses.len().max(1) as f64;
        let line = RoundLog {
            round: if baseline { 0 } else { self.round + 1 },
            step: self.step,
            mined: mine.mined,
            kept: mine.kept,
            sentences_per_s: mine.sentences_per_s,
            train_loss: self.round_losses.iter().map(|x| x.0).sum::<f64>() / k,
            step_seconds: self.round_losses.iter().map(|x| x.1).sum::<f64>() / k,
            mid_cos_target: m.mid_cos_target,
            mid_copies: m.mid_copies,
            mid_gap: m.mid_gap,
            carries_both: m.carries_both,
            close_to_both: m.close_to_both,
            single_cosine: s.mean_cosine,
            single_token_f1: s.mean_token_f1,
            looping: m.looping + s.looping,
        };
        self.log.push(line.clone());
        if !baseline {
            self.round += 1;
            self.round_losses.clear();
        }
        Ok(line)
    }

    /// The adaptor with the number of mix-alignment rounds it has seen recorded in it.
    pub fn save_adaptor(&mut self, path: &Path, half: bool) -> Result<()> {
        self.adaptor
            .set_mix_rounds(self.adaptor_rounds + self.round);
        self.adaptor.save(path, half)
    }

    /// Writes adaptor, optimiser moments, kept mixes, progress and the rounds log atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        Snapshot::new(KIND, self.step)
            .vars("adaptor", &self.adaptor.sorted_vars())
            .optimizer("adaptor", &self.opt)
            .meta("adaptor", self.adaptor.config())?
            .meta("mix_align", &self.cfg)?
            .meta("train_size", self.train.len())?
            .meta("round", self.round)?
            .meta("rounds_mined", self.rounds_mined)?
            .meta("mined", &self.mined)?
            .meta("log", &self.log)?
            .meta(
                "pending",
                self.pending
                    .as_ref()
                    .map(|m| (m.mined, m.kept, m.sentences_per_s)),
            )?
            .meta("round_losses", &self.round_losses)?
            .save(path)
    }

    /// Restores a checkpoint written by [`MixAligner::save_checkpoint`] with identical settings.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let r = Restore::read(path, KIND, self.emb.device())?;
        r.expect("adaptor", self.adaptor.config(), "adaptor settings")?;
        r.expect("mix_align", &self.cfg, "mix-alignment settings")?;
        r.expect(
            "train_size",
            self.train.len(),
            "the corpus and its length filter",
        )?;
        r.vars("adaptor", &self.adaptor.sorted_vars())?;
        r.optimizer("adaptor", &mut self.opt)?;
        self.step = r.step()?;
        self.round = r.get("round")?;
        self.rounds_mined = r.get("rounds_mined")?;
        self.mined = r.get("mined")?;
        self.log = r.get("log")?;
        self.pending = r.get::<Option<(usize, usize, f64)>>("pending")?.map(
            |(mined, kept, sentences_per_s)| MineLog {
                mined,
                kept,
                sentences_per_s,
            },
        );
        self.round_losses = r.get("round_losses")?;
        self.mined_targets = self
            .mined
            .iter()
            .map(|m| Prompt::target_ids(self.llm, &m.text))
            .collect::<Result<_>>()?;
        if self
            .mined
            .iter()
            .any(|m| m.a >= self.texts.len() || m.b >= self.texts.len())
        {
            return Err(Error::checkpoint(
                path,
                "a kept mix names a sentence the corpus does not have",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(text: &str, cos_target: f64, cos_a: f64, content_lambda: f64) -> Candidate {
        Candidate {
            text: text.into(),
            cos_target,
            cos_a,
            cos_b: 0.3,
            content_lambda,
        }
    }

    /// Of constructed candidates, a copy of a source is rejected even when nearest, and so are
    /// one whose content misses lambda and one too far from the target; the nearest other is kept.
    #[test]
    fn selection_rejects_copies_and_keeps_the_nearest_qualifying_candidate() {
        let (a, b) = (
            "the film is a quiet triumph",
            "rain fell over the harbour all night",
        );
        let s = Selection {
            min_cos: 0.6,
            max_gap: 0.15,
        };
        let cands = [
            cand("the film is a quiet triumph", 0.90, 1.0, 0.5),
            cand("a quiet film about rain in the harbour", 0.70, 0.6, 0.45),
            cand("the harbour at night", 0.85, 0.4, 0.05),
            cand("a triumph of rain and film", 0.75, 0.6, 0.55),
            cand("something else", 0.55, 0.2, 0.5),
            cand("", 0.99, 0.0, 0.5),
        ];
        assert_eq!(select(&cands, a, b, 0.5, &s), Some(3));
        // A near copy by cosine alone (0.95 to A) is rejected too.
        let near = [cand("the movie is a quiet triumph", 0.9, 0.96, 0.5)];
        assert_eq!(select(&near, a, b, 0.5, &s), None);
        assert_eq!(select(&cands[..1], a, b, 0.5, &s), None);
    }
}
