//! The few-shot benchmark: every augmentation method on exactly the same few-shot sample, the same
//! task model and the same test split; resumable cell by cell.

use crate::adaptor::Adaptor;
use crate::augment::{augment, mix_embeddings, AugRow, AugmentOptions};
use crate::baselines::{eda_all, embed_mixup_plan};
use crate::classifier::{one_hot, Classifier};
use crate::data::{few_shot, read_labelled, Labelled};
use crate::encoder::Encoder;
use crate::eval::accuracy_macro_f1;
use crate::intrusion::{relabel, Mitigation};
use crate::invert::Inverter;
use crate::llm::{GenerateOptions, Llm};
use crate::mixup::{plan, LambdaSpec, Pairing};
use crate::warmup::{Warmup, WarmupConfig};
use crate::{Error, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Every method the benchmark knows, in report order.
pub const METHODS: [&str; 7] = ["none", "eda", "embed-mixup", "reconstruct", "inversed-mixup-keep", "inversed-mixup-drop", "inversed-mixup-relabel"];

/// One finished (dataset, shots, seed, method) cell.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CellResult {
    /// Dataset name (folder under the data dir).
    pub dataset: String,
    /// Examples per class.
    pub shots: usize,
    /// Seed of the few-shot sample and of every random choice in the cell.
    pub seed: u64,
    /// Method name.
    pub method: String,
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
}

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Augmented rows per original example, for every augmenting method.
    pub per_example: usize,
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
    /// Classifier training steps and learning rate.
    pub cls_steps: usize,
    /// Classifier learning rate.
    pub cls_lr: f64,
    /// Evaluate on at most this many test rows (seeded subsample), all when `None`.
    pub max_test: Option<usize>,
}

/// Models shared by all cells.
pub struct Models<'a> {
    /// Frozen encoder.
    pub encoder: &'a Encoder,
    /// Frozen LLM.
    pub llm: &'a Llm,
    /// Stage-1 adaptor file (re-loaded for each cell's warm-up).
    pub adaptor: &'a Path,
}

/// Reads `dir/name/{train,test}.tsv`.
pub fn load_dataset(dir: &Path, name: &str) -> Result<(Labelled, Labelled)> {
    let train = read_labelled(&[dir.join(name).join("train.tsv")], "text", "label", None)?;
    let test = read_labelled(&[dir.join(name).join("test.tsv")], "text", "label", Some(&train.labels))?;
    Ok((train, test))
}

fn argmax(p: &[f64]) -> usize {
    p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|x| x.0).unwrap_or(0)
}

fn fit_eval(h: &Tensor, y: &[Vec<f64>], labels: &[String], test_h: &Tensor, test_y: &[usize], cfg: &BenchConfig) -> Result<(f64, f64)> {
    let cls = Classifier::new(labels.to_vec(), h.dim(1)?, h.device())?;
    cls.fit(h, y, cfg.cls_steps, cfg.cls_lr)?;
    let pred: Vec<usize> = cls.probs(test_h)?.iter().map(|p| argmax(p)).collect();
    Ok(accuracy_macro_f1(test_y, &pred, labels.len()))
}

/// Runs the `missing` methods of one cell; returns their results and the generated rows (if any).
#[allow(clippy::too_many_arguments)]
pub fn run_cell(
    m: &Models,
    dataset: &str,
    train: &Labelled,
    test: &Labelled,
    test_h: &Tensor,
    shots: usize,
    seed: u64,
    missing: &[String],
    cfg: &BenchConfig,
) -> Result<(Vec<CellResult>, Vec<AugRow>)> {
    let sample = few_shot(train, shots, seed);
    let texts = sample.texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let c = sample.labels.len();
    let h = m.encoder.embed_batched(&refs)?;
    let y = one_hot(&sample.y, c);
    let mut out = Vec::new();
    let mut gen_rows = Vec::new();
    let result = |method: &str, acc: f64, f1: f64, aug: usize, ir: Option<f64>, secs: f64| CellResult {
        dataset: dataset.into(),
        shots,
        seed,
        method: method.into(),
        accuracy: acc,
        macro_f1: f1,
        train_rows: texts.len(),
        aug_rows: aug,
        intrusion_rate: ir,
        seconds: secs,
    };
    let with = |extra_h: &Tensor, extra_y: &[Vec<f64>]| -> Result<(Tensor, Vec<Vec<f64>>)> {
        let mut yy = y.clone();
        yy.extend_from_slice(extra_y);
        Ok((Tensor::cat(&[&h, extra_h], 0)?, yy))
    };
    for method in missing {
        let t0 = std::time::Instant::now();
        match method.as_str() {
            "none" => {
                let (a, f) = fit_eval(&h, &y, &sample.labels, test_h, &test.y, cfg)?;
                out.push(result("none", a, f, 0, None, t0.elapsed().as_secs_f64()));
            }
            "eda" => {
                let aug = eda_all(&texts, cfg.per_example, seed);
                let ar: Vec<&str> = aug.iter().map(|(_, t)| t.as_str()).collect();
                let ah = m.encoder.embed_batched(&ar)?;
                let ay: Vec<Vec<f64>> = aug.iter().map(|(i, _)| y[*i].clone()).collect();
                let (hh, yy) = with(&ah, &ay)?;
                let (a, f) = fit_eval(&hh, &yy, &sample.labels, test_h, &test.y, cfg)?;
                out.push(result("eda", a, f, aug.len(), None, t0.elapsed().as_secs_f64()));
            }
            "embed-mixup" => {
                let alpha = match cfg.lambda {
                    LambdaSpec::Beta(a) => a,
                    _ => 0.4,
                };
                let p = embed_mixup_plan(texts.len(), cfg.per_example, alpha, seed);
                let ia = Tensor::new(p.iter().map(|x| x.0 as u32).collect::<Vec<_>>().as_slice(), h.device())?;
                let ib = Tensor::new(p.iter().map(|x| x.1 as u32).collect::<Vec<_>>().as_slice(), h.device())?;
                let l: Vec<f64> = p.iter().map(|x| x.2).collect();
                let mh = mix_embeddings(&h.index_select(&ia, 0)?, &h.index_select(&ib, 0)?, &l, false)?;
                let my: Vec<Vec<f64>> = p.iter().map(|&(a, b, l)| y[a].iter().zip(&y[b]).map(|(u, v)| l * u + (1.0 - l) * v).collect()).collect();
                let (hh, yy) = with(&mh, &my)?;
                let (a, f) = fit_eval(&hh, &yy, &sample.labels, test_h, &test.y, cfg)?;
                out.push(result("embed-mixup", a, f, p.len(), None, t0.elapsed().as_secs_f64()));
            }
            _ => {}
        }
    }
    let llm_methods: Vec<&String> = missing.iter().filter(|x| x.as_str() == "reconstruct" || x.starts_with("inversed-mixup")).collect();
    if llm_methods.is_empty() {
        return Ok((out, gen_rows));
    }
    // Stage 2 once per cell, shared by reconstruct and the three inversed-mixup variants.
    let t0 = std::time::Instant::now();
    let adaptor = Adaptor::load(m.adaptor, m.llm.device())?;
    let cls = Classifier::new(sample.labels.clone(), m.encoder.dim(), h.device())?;
    let wcfg = WarmupConfig { steps: cfg.warmup_steps, seed, ..Default::default() };
    let mut w = Warmup::new(m.llm, adaptor, cls, &texts, h.clone(), sample.y.clone(), wcfg)?;
    while w.step < cfg.warmup_steps {
        w.train_step()?;
    }
    let shared = t0.elapsed().as_secs_f64();
    let inv = Inverter::new(m.encoder, m.llm, &w.adaptor)?;
    let opts = |pairing: Pairing, lambda: &LambdaSpec| -> Result<(Vec<AugRow>, f64)> {
        let t = std::time::Instant::now();
        let mixes = plan(&sample.y, pairing, cfg.per_example, lambda, seed)?;
        let o = AugmentOptions { gen: GenerateOptions { seed, ..cfg.gen.clone() }, threshold: cfg.threshold, mitigation: Mitigation::Keep, batch_size: 16, renormalize: true };
        let (rows, _) = augment(&inv, &w.classifier, &sample, &mixes, &o, &|_, _| {})?;
        Ok((rows, t.elapsed().as_secs_f64()))
    };
    let eval_rows = |rows: &[AugRow], soft: &dyn Fn(&AugRow) -> Option<Vec<f64>>| -> Result<(f64, f64, usize)> {
        let kept: Vec<(String, Vec<f64>)> = rows.iter().filter_map(|r| soft(r).map(|s| (r.text.clone(), s))).collect();
        if kept.is_empty() {
            let (a, f) = fit_eval(&h, &y, &sample.labels, test_h, &test.y, cfg)?;
            return Ok((a, f, 0));
        }
        let kr: Vec<&str> = kept.iter().map(|k| k.0.as_str()).collect();
        let ky: Vec<Vec<f64>> = kept.iter().map(|k| k.1.clone()).collect();
        let (hh, yy) = with(&m.encoder.embed_batched(&kr)?, &ky)?;
        let (a, f) = fit_eval(&hh, &yy, &sample.labels, test_h, &test.y, cfg)?;
        Ok((a, f, kept.len()))
    };
    let vec_of = |map: &std::collections::BTreeMap<String, f64>| sample.labels.iter().map(|l| map[l]).collect::<Vec<f64>>();
    if missing.iter().any(|x| x == "reconstruct") {
        // lambda = 1 with a partner of the same example's class: the own embedding is decoded.
        let (rows, secs) = opts(Pairing::Random, &LambdaSpec::Fixed(1.0))?;
        let (a, f, n) = eval_rows(&rows, &|r| Some(vec_of(&r.mix_label)))?;
        out.push(result("reconstruct", a, f, n, None, shared + secs));
    }
    if llm_methods.iter().any(|x| x.starts_with("inversed-mixup")) {
        let (rows, secs) = opts(cfg.pairing, &cfg.lambda)?;
        let rate = rows.iter().filter(|r| r.intrusion).count() as f64 / rows.len().max(1) as f64;
        for method in missing.iter().filter(|x| x.starts_with("inversed-mixup")) {
            let (a, f, n) = match method.as_str() {
                "inversed-mixup-keep" => eval_rows(&rows, &|r| Some(vec_of(&r.mix_label)))?,
                "inversed-mixup-drop" => eval_rows(&rows, &|r| (!r.intrusion).then(|| vec_of(&r.mix_label)))?,
                "inversed-mixup-relabel" => eval_rows(&rows, &|r| Some(if r.intrusion { relabel(&vec_of(&r.mix_label), &vec_of(&r.predicted)) } else { vec_of(&r.mix_label) }))?,
                other => return Err(Error::Config(format!("unknown method {other}"))),
            };
            out.push(result(method, a, f, n, Some(rate), shared + secs));
        }
        gen_rows = rows;
    }
    Ok((out, gen_rows))
}

/// Reads finished cells from `results.jsonl` (missing file: none); a corrupt line names its line.
pub fn read_results(path: &Path) -> Result<Vec<CellResult>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    text.lines().enumerate().map(|(i, l)| serde_json::from_str(l).map_err(|e| Error::Input { path: PathBuf::from(path), line: i + 1, msg: format!("corrupt result row: {e}") })).collect()
}
