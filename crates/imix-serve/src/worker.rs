//! The thread that owns the models and decodes, one request at a time, in arrival order; a queued
//! request whose page slot has a newer one, or whose client is gone, is skipped unrun.

use inversed_mixup::api::{explore, ExploreRequest, MixView, Pipeline};
use inversed_mixup::method::invert::Inverter;
use inversed_mixup::Error;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::oneshot;

/// How a request ended.
#[derive(Debug)]
pub enum Outcome {
    /// The decoded mixes.
    Done(Vec<MixView>),
    /// Refused before decoding (the message names what and why).
    Refused(String),
    /// A newer request of the same slot arrived before this one started.
    Superseded,
    /// Decoding failed.
    Failed(String),
}

/// What the page shows about the loaded models.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    /// Encoder name.
    pub encoder: String,
    /// LLM name.
    pub llm: String,
    /// The bundle's labels (empty without a bundle).
    pub labels: Vec<String>,
    /// The encoder's window in tokens.
    pub window: usize,
}

struct Job {
    req: ExploreRequest,
    slot: Option<(String, u64)>,
    reply: oneshot::Sender<Outcome>,
}

/// The decoding thread's handle.
pub struct Worker {
    tx: Mutex<mpsc::Sender<Job>>,
    latest: Arc<Mutex<HashMap<String, u64>>>,
    /// The loaded models.
    pub info: Info,
}

impl Worker {
    /// Opens the bundle (if any) and starts the thread that owns the models.
    pub fn start(p: Pipeline, bundle: Option<&Path>) -> Result<Self, Error> {
        let bundle = bundle.map(|d| p.open_bundle(d)).transpose()?;
        let info = Info {
            encoder: p.encoder.name().to_string(),
            llm: p.llm.name().to_string(),
            labels: bundle
                .as_ref()
                .map(|b| b.classifier.labels.clone())
                .unwrap_or_default(),
            window: p.encoder.max_len(),
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let latest: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let seen = latest.clone();
        std::thread::Builder::new()
            .name("imix-decode".into())
            .spawn(move || {
                let inv = match &bundle {
                    Some(b) => Inverter::new(&b.encoder, &p.llm, &b.adaptor),
                    None => p.inverter(),
                };
                let inv = match inv {
                    Ok(i) => i,
                    Err(e) => {
                        tracing::error!("cannot build the inverter: {e}");
                        return;
                    }
                };
                let cls = bundle.as_ref().map(|b| &b.classifier);
                for job in rx {
                    if job.reply.is_closed() {
                        continue;
                    }
                    if let Some((slot, seq)) = &job.slot {
                        let newest = seen.lock().unwrap().get(slot).copied().unwrap_or(0);
                        if newest > *seq {
                            let _ = job.reply.send(Outcome::Superseded);
                            continue;
                        }
                    }
                    // A panic in one request must not take the page down with it.
                    // On a pool worker, parallel regions start at once (imix_kernels::pool).
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        imix_kernels::pool::on_compute_pool(|| explore(&inv, cls, &job.req))
                    }));
                    let out = match run {
                        Ok(Ok(rows)) => Outcome::Done(rows),
                        Ok(Err(Error::Invalid(m))) => Outcome::Refused(m),
                        Ok(Err(e)) => Outcome::Failed(e.to_string()),
                        Err(_) => Outcome::Failed("the decoder panicked on this request".into()),
                    };
                    // The client may have gone mid-decode: nothing to tell it.
                    let _ = job.reply.send(out);
                }
            })
            .map_err(|e| Error::Invalid(format!("cannot start the decoding thread: {e}")))?;
        Ok(Self {
            tx: Mutex::new(tx),
            latest,
            info,
        })
    }

    /// Queues a request and waits for its outcome; `slot` = (page slot, sequence number) makes a
    /// later request of the slot supersede this one while it waits.
    pub async fn run(&self, req: ExploreRequest, slot: Option<(String, u64)>) -> Outcome {
        if let Err(e) = req.validate() {
            return Outcome::Refused(e.to_string());
        }
        if let Some((s, seq)) = &slot {
            let mut m = self.latest.lock().unwrap();
            let e = m.entry(s.clone()).or_insert(0);
            *e = (*e).max(*seq);
        }
        let (reply, rx) = oneshot::channel();
        let job = Job { req, slot, reply };
        if self.tx.lock().unwrap().send(job).is_err() {
            return Outcome::Failed(
                "the decoding thread has stopped (see the server's log)".into(),
            );
        }
        rx.await
            .unwrap_or_else(|_| Outcome::Failed("the decoding thread dropped the request".into()))
    }
}
