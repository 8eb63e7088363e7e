//! `imix serve`: a local explorer page for interpolation and augmented rows. One model load; a
//! single worker thread decodes (two cores gain nothing from two decodes at once) while the HTTP
//! side stays responsive; a newer request of the same page slot supersedes a queued older one.
//! The page's assets are compiled into the binary: it works offline.

mod routes;
mod worker;

use inversed_mixup::api::Pipeline;
use inversed_mixup::data::corpus::{read_files, ReadOptions};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use worker::Worker;

/// Errors of the server (model and data errors come from the library).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The library refused or failed.
    #[error(transparent)]
    Library(#[from] inversed_mixup::Error),
    /// Binding the address or serving failed.
    #[error("{0}")]
    Io(String),
}

/// What `imix serve` (or Python's `serve`) was asked to open.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Address to bind (127.0.0.1 unless the user says otherwise).
    pub addr: Option<SocketAddr>,
    /// Encoder directory (default: the cached MiniLM).
    pub encoder: Option<PathBuf>,
    /// LLM file (default: the cached SmolLM2).
    pub llm: Option<PathBuf>,
    /// Stage-1 adaptor (default: the shipped one).
    pub adaptor: Option<PathBuf>,
    /// A warm-up bundle: its adaptor and encoder decode, its classifier labels and judges.
    pub model: Option<PathBuf>,
    /// A labelled file whose sentences the page offers as sources.
    pub input: Option<PathBuf>,
    /// An `imix augment` output the Rows tab opens.
    pub rows: Option<PathBuf>,
}

/// A labelled sentence the page offers.
#[derive(Debug, Clone, Serialize)]
pub struct Sentence {
    /// The text.
    pub text: String,
    /// Its label (empty when the file has none).
    pub label: String,
}

/// Most input sentences sent to the page (a picker of more is no use).
const MAX_SENTENCES: usize = 5000;

/// Reads the optional files (before any model loads: a bad file fails fast).
fn read_inputs(o: &ServeOptions) -> Result<(Vec<Sentence>, Option<String>), ServeError> {
    let sentences = match &o.input {
        None => Vec::new(),
        Some(p) => {
            let opt = ReadOptions {
                label_column: Some("label".into()),
                ..Default::default()
            };
            read_files(std::slice::from_ref(p), &opt)?
                .rows
                .into_iter()
                .take(MAX_SENTENCES)
                .map(|r| Sentence {
                    text: r.text,
                    label: r.label.unwrap_or_default(),
                })
                .collect()
        }
    };
    let rows = match &o.rows {
        None => None,
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| inversed_mixup::Error::io(p, e))?),
    };
    Ok((sentences, rows))
}

/// Loads the models, binds the address and serves until Ctrl-C; `ready` gets the bound address
/// (port 0 picks a free one) once the page can be opened.
pub fn serve(o: ServeOptions, ready: &dyn Fn(SocketAddr)) -> Result<(), ServeError> {
    let (sentences, rows) = read_inputs(&o)?;
    let addr = o
        .addr
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ServeError::Io(format!("cannot start the server's runtime: {e}")))?;
    // Bind before loading models: a busy port fails in a second, not after the load.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|e| ServeError::Io(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| ServeError::Io(e.to_string()))?;
    let pipeline = Pipeline::load(o.encoder.as_deref(), o.llm.as_deref(), o.adaptor.as_deref())?;
    let worker = Worker::start(pipeline, o.model.as_deref())?;
    let app = routes::router(routes::State::new(worker, sentences, rows));
    ready(bound);
    rt.block_on(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    })
    .map_err(|e| ServeError::Io(format!("server stopped: {e}")))
}
