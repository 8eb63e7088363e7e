//! The few-shot benchmark: every augmentation method on exactly the same few-shot sample, the same
//! task model and the same test split; resumable cell by cell.

use crate::baselines::{eda_all, embed_mixup_plan};
use crate::judge::Judge;
use crate::methods::{
    Decoding, Method, CORRECT_ROUNDS, NOVEL_TRIES, SAFE_LAMBDA, SELECT_CANDIDATES,
};
use crate::settings::Settings;
use candle_core::Tensor;
use inversed_mixup::data::labelled::{dev_sample, few_shot, read_labelled, Labelled};
use inversed_mixup::eval::classes::{accuracy_macro_f1, argmax};
use inversed_mixup::method::adaptor::Adaptor;
use inversed_mixup::method::augment::{
    augment, mix_embeddings, teacher_label, AugRow, AugmentOptions, GenDiagnostics, LabelFrom,
};
use inversed_mixup::method::classifier::{one_hot, Classifier};
use inversed_mixup::method::intrusion::Mitigation;
use inversed_mixup::method::invert::Inverter;
use inversed_mixup::method::mixup::{plan, soft_label, LambdaSpec, Pairing};
use inversed_mixup::method::task_model::{FinetuneConfig, TaskModel};
use inversed_mixup::nets::encoder::{embed_corpus, Encoder};
use inversed_mixup::nets::llm::{Decode, GenerateOptions, Llm};
use inversed_mixup::stages::warmup::{FineTune, Warmup, WarmupConfig};
use inversed_mixup::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One finished (dataset, shots, seed, method) cell.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CellResult {
    /// Dataset name (folder under the data dir).
    pub dataset: String,
    /// Examples per class.
    pub shots: usize,
    /// Seed of the few-shot sample and of every random choice in the cell.
    pub seed: u64,
    /// Method.
    pub method: Method,
    /// Task model: `finetune` or `probe` (rows written before the fine-tuned protocol existed are probe rows).
    #[serde(default = "probe_name")]
    pub task_model: String,
    /// Test accuracy.
    pub accuracy: f64,
    /// Test macro-F1.
    pub macro_f1: f64,
    /// Original training rows.
    pub train_rows: usize,
    /// Augmented rows used.
    pub aug_rows: usize,
    /// Fraction of generated rows judged intruding (inversed-mixup methods).
    pub intrusion_rate: Option<f64>,
    /// Wall-clock seconds spent on this method (shared warm-up and generation counted once).
    pub seconds: f64,
    /// How the generated rows relate to their targets (generating methods; absent in older rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GenDiagnostics>,
    /// A generating method whose stage 2 fine-tuned the encoder (`BenchConfig::warmup_finetune`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warmup_finetune: bool,
    /// A final task model that started from the cell's warmed-up encoder
    /// (`BenchConfig::final_from_warmup`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub final_from_warmup: bool,
    /// The run's settings (`BenchConfig::settings`; absent in rows written before they were
    /// recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Settings>,
    /// The run that computed the row, set by its caller (`imix-bench`: the unix time of the run's
    /// start record in runs.jsonl); absent in rows written before rows named their run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
}

impl CellResult {
    /// Whether this row is the result of `method` in cell (dataset, shots, seed) under `cfg`
    /// (methods that generate nothing do not depend on the warm-up setting). Other settings are
    /// not compared here: a row of other settings is a conflict ([`crate::settings::conflict`]), refused before any work.
    pub fn answers(
        &self,
        dataset: &str,
        shots: usize,
        seed: u64,
        method: Method,
        cfg: &BenchConfig,
    ) -> bool {
        self.dataset == dataset
            && self.shots == shots
            && self.seed == seed
            && self.method == method
            && self.task_model == cfg.protocol.name()
            && (self.warmup_finetune, self.final_from_warmup) == cfg.warm_flags(method)
    }
}

fn probe_name() -> String {
    "probe".into()
}

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Augmented rows per original example, for every augmenting method.
    pub per_example: usize,
    /// Loss weight of every augmented text row (its soft target scaled by it; 1: like an
    /// original). Embedding Mixup inside fine-tuning mixes within batches and is not weighted.
    pub aug_weight: f64,
    /// Stage-2 warm-up steps per cell.
    pub warmup_steps: usize,
    /// Pairing for inversed-mixup.
    pub pairing: Pairing,
    /// Mixing ratio for inversed-mixup and embed-mixup (Beta alpha for the latter when Beta).
    pub lambda: LambdaSpec,
    /// Decoding for reconstruct and inversed-mixup.
    pub gen: GenerateOptions,
    /// Intrusion confidence threshold.
    pub threshold: f64,
    /// Methods are scored on the dev split (a dev gate), not on test.
    pub eval_dev: bool,
    /// Classifier training steps and learning rate.
    pub cls_steps: usize,
    /// Classifier learning rate.
    pub cls_lr: f64,
    /// Evaluate on at most this many test rows (seeded subsample), all when `None`.
    pub max_test: Option<usize>,
    /// How the task model learns from each method's rows.
    pub protocol: Protocol,
    /// Stage 2 fine-tunes the task encoder too (the paper's warm-up); stage 3 then embeds, mixes
    /// and judges with the warmed-up encoder. The final task model still starts from the
    /// pretrained encoder unless `final_from_warmup`.
    pub warmup_finetune: bool,
    /// With `warmup_finetune`: every method's final task model (the baselines' too, so that all
    /// start alike) starts from the cell's warmed-up encoder (a fresh head) instead of the
    /// pretrained one.
    pub final_from_warmup: bool,
}

impl BenchConfig {
    /// The warm-up flags a row of `method` carries under this config, `(warmup_finetune,
    /// final_from_warmup)`: a baseline depends on the warm-up only when it starts from it.
    pub fn warm_flags(&self, method: Method) -> (bool, bool) {
        (
            self.warmup_finetune && (method.generates() || self.final_from_warmup),
            self.final_from_warmup,
        )
    }
}

/// The task model of the benchmark.
#[derive(Debug, Clone)]
pub enum Protocol {
    /// A linear probe on frozen encoder embeddings (a perfect inverter's sentence re-embeds to the
    /// mixed vector, so readable text cannot add anything here).
    Probe,
    /// The encoder fine-tuned with the head (the paper's task model), the best epoch on a dev
    /// sample of the same size, drawn from the train split outside the sample, kept.
    Finetune(FinetuneConfig),
}

impl Protocol {
    /// The name recorded in result rows.
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Probe => "probe",
            Protocol::Finetune(_) => "finetune",
        }
    }
}

/// Models shared by all cells.
pub struct Models<'a> {
    /// Frozen encoder.
    pub encoder: &'a Encoder,
    /// Frozen LLM.
    pub llm: &'a Llm,
    /// Stage-1 adaptor file (re-loaded for each cell's warm-up).
    pub adaptor: &'a Path,
    /// The encoder's directory (fine-tuning loads a fresh trainable copy per method).
    pub encoder_dir: &'a Path,
    /// Unlabeled sentences and their (unit) embeddings, for retrieval Mixup.
    pub pool: Option<(&'a [String], &'a Tensor)>,
    /// Told what the cell is doing (warm-up step, sentences decoded, fine-tuning epoch): a cell of
    /// the fully supervised setting runs for an hour.
    pub progress: &'a dyn Fn(&str),
}

/// Reads `dir/name/{train,test}.tsv`.
pub fn load_dataset(dir: &Path, name: &str) -> Result<(Labelled, Labelled)> {
    let train = read_labelled(&[dir.join(name).join("train.tsv")], "text", "label", None)?;
    let test = read_labelled(
        &[dir.join(name).join("test.tsv")],
        "text",
        "label",
        Some(&train.labels),
    )?;
    Ok((train, test))
}

/// `shots` of the fully supervised setting: the whole train split, model selection on the
/// dataset's own dev split (`dev.tsv`).
pub const ALL_SHOTS: usize = 0;

/// How reports name a shot count: the number, or `all`.
pub fn shots_name(shots: usize) -> String {
    if shots == ALL_SHOTS {
        "all".into()
    } else {
        shots.to_string()
    }
}

/// Reads `dir/name/dev.tsv`, the model selection split of the fully supervised setting; a missing
/// file is an error that says so.
pub fn load_dev(dir: &Path, name: &str, labels: &[String]) -> Result<Labelled> {
    let p = dir.join(name).join("dev.tsv");
    if !p.is_file() {
        return Err(inversed_mixup::Error::Config(format!("the fully supervised setting (--shots all) selects the model on {}, which does not exist", p.display())));
    }
    read_labelled(&[p], "text", "label", Some(labels))
}

/// One cell of the grid: a dataset's few-shot sample for one (shots, seed), and its test split.
pub struct Cell<'a> {
    /// Dataset name (folder under the data dir).
    pub dataset: &'a str,
    /// The full training split the sample is drawn from.
    pub train: &'a Labelled,
    /// The test split (possibly subsampled).
    pub test: &'a Labelled,
    /// Embeddings of the test split.
    pub test_h: &'a Tensor,
    /// Examples per class ([`ALL_SHOTS`]: the whole train split).
    pub shots: usize,
    /// The dataset's dev split: model selection of the fully supervised setting (few-shot cells
    /// draw theirs from the train split instead).
    pub dev: Option<&'a Labelled>,
    /// Seed of the sample and of every random choice in the cell.
    pub seed: u64,
    /// Judge of generated rows' labels (trained on the whole train split), for the diagnostics.
    pub judge: Option<&'a Judge>,
}

/// A cell's few-shot sample with its embeddings and one-hot labels.
struct Sample<'a> {
    cell: &'a Cell<'a>,
    data: Labelled,
    texts: Vec<String>,
    h: Tensor,
    y: Vec<Vec<f64>>,
    /// Model selection rows for the fine-tuned protocol (outside the sample, from the train split).
    dev: Labelled,
    /// The benchmark's settings (task model, warm-up flags of the rows).
    cfg: &'a BenchConfig,
}

/// What a method adds to the sample.
#[derive(Default)]
struct Extra {
    /// Readable rows.
    texts: Vec<String>,
    /// Their (soft) labels; for embedding Mixup under the probe, the labels of `h`.
    y: Vec<Vec<f64>>,
    /// Probe: embeddings of the extra rows when they are not texts (embedding Mixup).
    h: Option<Tensor>,
    /// Fine-tuning: embedding Mixup inside the loop with this Beta alpha.
    mixup: Option<f64>,
    /// Fine-tuning: start from these encoder weights (the warmed-up encoder's) instead of the
    /// pretrained ones.
    init: Option<candle_nn::VarMap>,
}

impl Sample<'_> {
    /// A result row of this cell.
    fn result(
        &self,
        method: Method,
        (accuracy, macro_f1): (f64, f64),
        aug_rows: usize,
        intrusion_rate: Option<f64>,
        seconds: f64,
    ) -> CellResult {
        let c = self.cell;
        let (warmup_finetune, final_from_warmup) = self.cfg.warm_flags(method);
        CellResult {
            dataset: c.dataset.into(),
            shots: c.shots,
            seed: c.seed,
            method,
            task_model: self.cfg.protocol.name().into(),
            accuracy,
            macro_f1,
            train_rows: self.texts.len(),
            aug_rows,
            intrusion_rate,
            seconds,
            generator: None,
            warmup_finetune,
            final_from_warmup,
            settings: None,
            run: None,
        }
    }

    /// Trains the task model on the sample plus `extra` under the configured protocol and
    /// evaluates it on the test split: (accuracy, macro-F1).
    fn fit_eval(&self, m: &Models, extra: Extra, cfg: &BenchConfig) -> Result<(f64, f64)> {
        let Protocol::Finetune(fc) = &cfg.protocol else {
            return self.probe(m, extra, cfg);
        };
        let texts: Vec<String> = self.texts.iter().chain(&extra.texts).cloned().collect();
        let y: Vec<Vec<f64>> = self
            .y
            .iter()
            .cloned()
            .chain(weighted(&extra.y, cfg.aug_weight))
            .collect();
        let (enc, varmap) = Encoder::load_trainable(m.encoder_dir, None, self.h.device())?;
        if let Some(init) = &extra.init {
            let from = init.data().lock().expect("varmap lock");
            for (name, var) in varmap.data().lock().expect("varmap lock").iter() {
                let src = from.get(name).ok_or_else(|| {
                    inversed_mixup::Error::Config(format!("warmed-up encoder lacks {name}"))
                })?;
                var.set(src.as_tensor())?;
            }
        }
        let head = Classifier::new(self.data.labels.clone(), enc.dim(), self.h.device())?;
        let model = TaskModel {
            encoder: &enc,
            varmap: &varmap,
            head: &head,
        };
        let fc = FinetuneConfig {
            seed: self.cell.seed,
            mixup_alpha: extra.mixup,
            ..fc.clone()
        };
        let dev_texts = self.dev.texts();
        let dev = (!dev_texts.is_empty()).then_some((dev_texts.as_slice(), self.dev.y.as_slice()));
        let n = texts.len();
        (m.progress)(&format!("fine-tuning on {n} rows"));
        model.finetune(&texts, &y, dev, &fc, &|l| {
            (m.progress)(&format!(
                "fine-tuned on {n} rows: epoch {}/{}",
                l.epoch, fc.epochs
            ))
        })?;
        let pred = model.predict(&self.cell.test.texts())?;
        Ok(accuracy_macro_f1(
            &self.cell.test.y,
            &pred,
            self.data.labels.len(),
        ))
    }

    /// The linear probe on frozen embeddings of the sample plus `extra`.
    fn probe(&self, m: &Models, extra: Extra, cfg: &BenchConfig) -> Result<(f64, f64)> {
        let eh = match extra.h {
            Some(h) => Some(h),
            None if !extra.texts.is_empty() => Some(
                m.encoder
                    .embed_batched(&extra.texts.iter().map(String::as_str).collect::<Vec<_>>())?,
            ),
            None => None,
        };
        let (h, y) = match eh {
            None => (self.h.clone(), self.y.clone()),
            Some(eh) => {
                let mut y = self.y.clone();
                y.extend(weighted(&extra.y, cfg.aug_weight));
                (Tensor::cat(&[&self.h, &eh], 0)?, y)
            }
        };
        let cls = Classifier::new(self.data.labels.clone(), h.dim(1)?, h.device())?;
        cls.fit(&h, &y, cfg.cls_steps, cfg.cls_lr)?;
        let pred: Vec<usize> = cls
            .probs(self.cell.test_h)?
            .iter()
            .map(|p| argmax(p))
            .collect();
        Ok(accuracy_macro_f1(
            &self.cell.test.y,
            &pred,
            self.data.labels.len(),
        ))
    }

    /// Embeddings of the sample mixed pairwise: `lambda · h[a] + (1 - lambda) · h[b]` per `(a, b, lambda)`.
    fn mixed(&self, pairs: &[(usize, usize, f64)], renormalize: bool) -> Result<Tensor> {
        let ids = |f: fn(&(usize, usize, f64)) -> usize| {
            Tensor::new(
                pairs
                    .iter()
                    .map(|x| f(x) as u32)
                    .collect::<Vec<_>>()
                    .as_slice(),
                self.h.device(),
            )
        };
        let l: Vec<f64> = pairs.iter().map(|x| x.2).collect();
        mix_embeddings(
            &self.h.index_select(&ids(|x| x.0)?, 0)?,
            &self.h.index_select(&ids(|x| x.1)?, 0)?,
            &l,
            renormalize,
        )
    }

    /// A method that needs no LLM: none, EDA or embedding Mixup.
    fn baseline(
        &self,
        m: &Models,
        method: Method,
        init: Option<&candle_nn::VarMap>,
        cfg: &BenchConfig,
    ) -> Result<Option<CellResult>> {
        let t0 = std::time::Instant::now();
        let seed = self.cell.seed;
        let alpha = match cfg.lambda {
            LambdaSpec::Beta(a) => a,
            _ => 0.2,
        };
        let mut extra = match method {
            Method::None => Extra::default(),
            Method::Eda => {
                let aug = eda_all(&self.texts, cfg.per_example, seed);
                Extra {
                    y: aug.iter().map(|(i, _)| self.y[*i].clone()).collect(),
                    texts: aug.into_iter().map(|(_, t)| t).collect(),
                    ..Default::default()
                }
            }
            Method::Duplicate => {
                let n = cfg.per_example * self.texts.len();
                Extra {
                    texts: self.texts.iter().cycle().take(n).cloned().collect(),
                    y: self.y.iter().cycle().take(n).cloned().collect(),
                    ..Default::default()
                }
            }
            Method::RetrievalMixup => {
                let (pool, pool_h) = m.pool.ok_or_else(|| {
                    inversed_mixup::Error::Config("retrieval-mixup needs an unlabeled pool".into())
                })?;
                // The same pairs and ratios as inversed-mixup's, so the two differ only in how a mix becomes text.
                let mixes = plan(
                    &self.data.y,
                    cfg.pairing,
                    cfg.per_example,
                    &cfg.lambda,
                    seed,
                )?;
                let hm = self.mixed(
                    &mixes
                        .iter()
                        .map(|x| (x.a, x.b, x.lambda))
                        .collect::<Vec<_>>(),
                    true,
                )?;
                let nearest = hm
                    .matmul(&pool_h.t()?)?
                    .argmax(candle_core::D::Minus1)?
                    .to_vec1::<u32>()?;
                let c = self.data.labels.len();
                Extra {
                    texts: nearest.iter().map(|&i| pool[i as usize].clone()).collect(),
                    y: mixes
                        .iter()
                        .map(|x| soft_label(self.data.y[x.a], self.data.y[x.b], x.lambda, c))
                        .collect(),
                    ..Default::default()
                }
            }
            Method::EmbedMixup if matches!(cfg.protocol, Protocol::Finetune(_)) => Extra {
                mixup: Some(alpha),
                ..Default::default()
            },
            Method::EmbedMixup => {
                let p = embed_mixup_plan(self.texts.len(), cfg.per_example, alpha, seed)?;
                let mh = self.mixed(&p, false)?;
                let my: Vec<Vec<f64>> = p
                    .iter()
                    .map(|&(a, b, l)| {
                        self.y[a]
                            .iter()
                            .zip(&self.y[b])
                            .map(|(u, v)| l * u + (1.0 - l) * v)
                            .collect()
                    })
                    .collect();
                Extra {
                    h: Some(mh),
                    y: my,
                    ..Default::default()
                }
            }
            _ => return Ok(None),
        };
        let aug = extra.y.len().max(if extra.mixup.is_some() {
            self.texts.len()
        } else {
            0
        });
        extra.init = init.cloned();
        let scores = self.fit_eval(m, extra, cfg)?;
        Ok(Some(self.result(
            method,
            scores,
            aug,
            None,
            t0.elapsed().as_secs_f64(),
        )))
    }

    /// The `missing` methods that need no LLM, each handed on as it finishes; false when `out`
    /// said to stop before one of them.
    fn baselines(
        &self,
        m: &Models,
        missing: &[Method],
        init: Option<&candle_nn::VarMap>,
        cfg: &BenchConfig,
        out: &mut Out,
    ) -> Result<bool> {
        for &method in missing.iter().filter(|x| !x.generates()) {
            if !out.go_on() {
                return Ok(false);
            }
            if let Some(r) = self.baseline(m, method, init, cfg)? {
                out.row(r)?;
            }
        }
        Ok(true)
    }

    /// Trains on the sample plus the generated rows that `mitigation` keeps (with their labels,
    /// blended with the teacher's prediction by `teacher`).
    #[allow(clippy::too_many_arguments)]
    fn fit_generated(
        &self,
        m: &Models,
        rows: &[AugRow],
        mitigation: Mitigation,
        label: LabelFrom,
        teacher: f64,
        init: Option<&candle_nn::VarMap>,
        cfg: &BenchConfig,
    ) -> Result<((f64, f64), usize)> {
        let vec_of = |map: &std::collections::BTreeMap<String, f64>| {
            self.data
                .labels
                .iter()
                .map(|l| map[l])
                .collect::<Vec<f64>>()
        };
        let base = |r: &AugRow| {
            let l = match label {
                LabelFrom::Mix => vec_of(&r.mix_label),
                LabelFrom::Content => soft_label(
                    self.data.y[r.source_a.index],
                    self.data.y[r.source_b.index],
                    r.content_lambda,
                    self.data.labels.len(),
                ),
            };
            if teacher > 0.0 {
                teacher_label(&l, &vec_of(&r.predicted), teacher)
            } else {
                l
            }
        };
        let (texts, y): (Vec<String>, Vec<Vec<f64>>) = rows
            .iter()
            .filter_map(|r| {
                mitigation
                    .apply(&base(r), &vec_of(&r.predicted), r.intrusion)
                    .map(|s| (r.text.clone(), s))
            })
            .unzip();
        let n = texts.len();
        Ok((
            self.fit_eval(
                m,
                Extra {
                    texts,
                    y,
                    init: init.cloned(),
                    ..Default::default()
                },
                cfg,
            )?,
            n,
        ))
    }
}

/// Soft targets scaled by `w`: a row's share of the soft-label cross-entropy.
fn weighted(y: &[Vec<f64>], w: f64) -> impl Iterator<Item = Vec<f64>> + '_ {
    y.iter().map(move |r| r.iter().map(|v| v * w).collect())
}

/// What a cell hands on as soon as it is finished, so that a stopped or killed run keeps it.
pub enum Finished<'a> {
    /// One method's result, stamped with the run's settings.
    Row(Box<CellResult>),
    /// The rows of one generation, tagged by its `Decoding` (file-name tag), before the methods
    /// that train on them.
    Generated(&'static str, &'a [AugRow]),
}

/// Runs the `missing` methods of one cell, handing each result to `emit` as it is finished (rows
/// stamped with the run's `settings`, `cfg.settings(m.adaptor)`, computed once per run: it hashes
/// the adaptor file). Before each further method, and never between methods that share one
/// generation (which would decode it again), `stop` may end the cell early: the methods left stay
/// missing for the next run, which computes them to the same numbers. Returns whether every
/// missing method ran.
pub fn run_cell(
    m: &Models,
    cell: &Cell,
    missing: &[Method],
    cfg: &BenchConfig,
    settings: &Settings,
    stop: &dyn Fn() -> bool,
    emit: &mut dyn FnMut(Finished<'_>) -> Result<()>,
) -> Result<bool> {
    let mut out = Out {
        emit,
        settings,
        rows: 0,
        stop,
    };
    run_cell_methods(m, cell, missing, cfg, &mut out)
}

/// A cell's outlet: stamps and hands on results, and says whether to go on.
struct Out<'a> {
    emit: &'a mut dyn FnMut(Finished<'_>) -> Result<()>,
    settings: &'a Settings,
    rows: usize,
    stop: &'a dyn Fn() -> bool,
}

impl Out<'_> {
    fn row(&mut self, mut r: CellResult) -> Result<()> {
        r.settings = Some(self.settings.clone());
        self.rows += 1;
        (self.emit)(Finished::Row(Box::new(r)))
    }

    /// Whether to start the next method: a cell always finishes its first, so every run progresses.
    fn go_on(&self) -> bool {
        self.rows == 0 || !(self.stop)()
    }
}

fn run_cell_methods(
    m: &Models,
    cell: &Cell,
    missing: &[Method],
    cfg: &BenchConfig,
    out: &mut Out,
) -> Result<bool> {
    if cfg.final_from_warmup && !cfg.warmup_finetune {
        return Err(inversed_mixup::Error::Config(
            "final_from_warmup needs warmup_finetune: there is no warmed-up encoder to start from"
                .into(),
        ));
    }
    let full = cell.shots == ALL_SHOTS;
    let data = if full {
        cell.train.clone()
    } else {
        few_shot(cell.train, cell.shots, cell.seed)
    };
    let texts = data.texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let h = m.encoder.embed_batched(&refs)?;
    let y = one_hot(&data.y, data.labels.len());
    let dev = match (&cfg.protocol, cell.dev) {
        (Protocol::Probe, _) => Labelled {
            rows: Vec::new(),
            y: Vec::new(),
            labels: data.labels.clone(),
        },
        (Protocol::Finetune(_), Some(d)) if full => d.clone(),
        (Protocol::Finetune(_), None) if full => {
            return Err(inversed_mixup::Error::Config(format!(
                "{}: the fully supervised setting needs the dev split",
                cell.dataset
            )))
        }
        (Protocol::Finetune(_), _) => dev_sample(cell.train, &data, cell.shots, cell.seed),
    };
    let sample = Sample {
        cell,
        data,
        texts,
        h,
        y,
        dev,
        cfg,
    };
    let generating = missing.iter().any(|x| x.generates());
    if !cfg.final_from_warmup && !sample.baselines(m, missing, None, cfg, out)? {
        return Ok(false);
    }
    if !generating && (!cfg.final_from_warmup || missing.is_empty()) {
        return Ok(true);
    }
    if !out.go_on() {
        return Ok(false);
    }
    // Stage 2 once per cell, shared by reconstruct and the three inversed-mixup variants.
    let t0 = std::time::Instant::now();
    let seed = cell.seed;
    let adaptor = Adaptor::load(m.adaptor, m.llm.device())?;
    let cls = Classifier::new(
        sample.data.labels.clone(),
        m.encoder.dim(),
        sample.h.device(),
    )?;
    let trainable = if cfg.warmup_finetune {
        Some(Encoder::load_trainable(
            m.encoder_dir,
            None,
            sample.h.device(),
        )?)
    } else {
        None
    };
    let wcfg = WarmupConfig {
        steps: cfg.warmup_steps,
        seed,
        finetune: trainable.as_ref().map(|_| 0),
        ..Default::default()
    };
    let mut w = Warmup::new(
        m.llm,
        adaptor,
        cls,
        &sample.texts,
        sample.h.clone(),
        sample.data.y.clone(),
        wcfg,
    )?;
    if let Some((enc, varmap)) = &trainable {
        w = w.with_finetune(FineTune::new(enc, varmap, 0, &sample.texts)?);
    }
    while w.step < cfg.warmup_steps {
        (m.progress)(&format!("warm-up step {}/{}", w.step + 1, cfg.warmup_steps));
        w.train_step()?;
    }
    let shared = t0.elapsed().as_secs_f64();
    // Stage 3 embeds, mixes and judges in the space the warm-up left: the fine-tuned encoder's, frozen.
    let warmed = trainable
        .as_ref()
        .map(|(enc, _)| enc.snapshot())
        .transpose()?;
    let init = trainable
        .as_ref()
        .filter(|_| cfg.final_from_warmup)
        .map(|(_, vm)| vm);
    if cfg.final_from_warmup {
        // The baselines start from the same warmed-up encoder as the generating methods.
        if !sample.baselines(m, missing, init, cfg, out)? {
            return Ok(false);
        }
        if !generating {
            return Ok(true);
        }
    }
    let inv = Inverter::new(warmed.as_ref().unwrap_or(m.encoder), m.llm, &w.adaptor)?;
    let generate =
        |pairing: Pairing, lambda: &LambdaSpec, decoding: Decoding| -> Result<(Vec<AugRow>, f64)> {
            let t = std::time::Instant::now();
            let mixes = plan(&sample.data.y, pairing, cfg.per_example, lambda, seed)?;
            let gen = GenerateOptions {
                seed,
                ..cfg.gen.clone()
            };
            let gen = match decoding {
                Decoding::Sampled => gen.sampled(0),
                Decoding::Corrected => GenerateOptions {
                    decode: Decode::Correct(CORRECT_ROUNDS),
                    ..gen
                },
                _ => gen,
            };
            let resample_copies = if decoding == Decoding::ResampleCopies {
                NOVEL_TRIES
            } else {
                0
            };
            let select = matches!(decoding, Decoding::Safe | Decoding::Select);
            let candidates = if select { SELECT_CANDIDATES } else { 1 };
            let o = AugmentOptions {
                gen,
                threshold: cfg.threshold,
                resample_copies,
                candidates,
                reject_copies: select,
                ..Default::default()
            };
            let (rows, _) = augment(&inv, &w.classifier, &sample.data, &mixes, &o, &|d, n| {
                (m.progress)(&format!("decoded {d}/{n}"))
            })?;
            Ok((rows, t.elapsed().as_secs_f64()))
        };
    // The teacher of teacher labels is the warmed-up task model: its accuracy on the evaluation
    // split says how far its verdicts on generated rows can be trusted.
    let teacher_accuracy = {
        let t = cell.test.texts();
        let h = if warmed.is_some() {
            embed_corpus(inv.encoder, &t, None, &|_, _| {})?
        } else {
            cell.test_h.clone()
        };
        let hits = w
            .classifier
            .probs(&h)?
            .iter()
            .zip(&cell.test.y)
            .filter(|(p, &y)| argmax(p) == y)
            .count();
        hits as f64 / t.len().max(1) as f64
    };
    let diagnose = |rows: &[AugRow]| -> Result<Option<GenDiagnostics>> {
        let Some(mut d) = GenDiagnostics::of(rows) else {
            return Ok(None);
        };
        d.teacher_accuracy = Some(teacher_accuracy);
        if let Some(j) = cell.judge {
            d.label_agreement = j.agreement(m.encoder, rows)?;
            d.judge_accuracy = Some(j.test_accuracy);
        }
        Ok(Some(d))
    };
    if missing.contains(&Method::Reconstruct) {
        if !out.go_on() {
            return Ok(false);
        }
        // lambda = 1: each example's own embedding is decoded (the partner gets weight 0).
        let (rows, secs) = generate(Pairing::Random, &LambdaSpec::Fixed(1.0), Decoding::Run)?;
        let (scores, n) =
            sample.fit_generated(m, &rows, Mitigation::Keep, LabelFrom::Mix, 0.0, init, cfg)?;
        out.row(CellResult {
            generator: diagnose(&rows)?,
            ..sample.result(Method::Reconstruct, scores, n, None, shared + secs)
        })?;
    }
    // One generation per decoding: the run's decodes serve keep / drop / relabel / content.
    let mut decodings: Vec<Decoding> = missing
        .iter()
        .filter(|x| x.mitigation().is_some())
        .map(|x| x.decoding())
        .collect();
    decodings.sort_unstable();
    decodings.dedup();
    for d in decodings {
        if !out.go_on() {
            return Ok(false);
        }
        let safe = LambdaSpec::Uniform(SAFE_LAMBDA.0, SAFE_LAMBDA.1);
        let (pairing, lambda) = if d == Decoding::Safe {
            (Pairing::SameClass, &safe)
        } else {
            (cfg.pairing, &cfg.lambda)
        };
        let (rows, secs) = generate(pairing, lambda, d)?;
        (out.emit)(Finished::Generated(d.tag(), &rows))?;
        let rate = rows.iter().filter(|r| r.intrusion).count() as f64 / rows.len().max(1) as f64;
        let generator = diagnose(&rows)?;
        for &method in missing.iter().filter(|x| x.decoding() == d) {
            if let Some(policy) = method.mitigation() {
                let (scores, n) = sample.fit_generated(
                    m,
                    &rows,
                    policy,
                    method.label_from(),
                    method.teacher_weight(),
                    init,
                    cfg,
                )?;
                out.row(CellResult {
                    generator,
                    ..sample.result(method, scores, n, Some(rate), shared + secs)
                })?;
            }
        }
    }
    Ok(true)
}

/// Reads finished cells from `results.jsonl` (missing file: none); a corrupt line names its line.
pub fn read_results(path: &Path) -> Result<Vec<CellResult>> {
    inversed_mixup::data::jsonl::read(path)
}
