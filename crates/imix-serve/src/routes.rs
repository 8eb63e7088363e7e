//! The page, its JSON API and the errors it shows.

use crate::worker::{Outcome, Worker};
use crate::Sentence;
use axum::extract::State as Axum;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use inversed_mixup::api::{field_names, ExploreRequest};
use serde_json::json;
use std::sync::Arc;

const PAGE: &str = include_str!("../assets/index.html");

/// What every handler shares.
pub struct State {
    worker: Worker,
    sentences: Vec<Sentence>,
    rows: Option<String>,
}

impl State {
    /// The shared state.
    pub fn new(worker: Worker, sentences: Vec<Sentence>, rows: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            worker,
            sentences,
            rows,
        })
    }
}

/// The routes: `/` (the page), `/api/info`, `/api/sentences`, `/api/rows`, `POST /api/mix`.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/info", get(info))
        .route("/api/sentences", get(sentences))
        .route("/api/rows", get(rows))
        .route("/api/mix", post(mix))
        .with_state(state)
}

async fn info(Axum(s): Axum<Arc<State>>) -> Response {
    Json(json!({
        "encoder": s.worker.info.encoder,
        "llm": s.worker.info.llm,
        "labels": s.worker.info.labels,
        "window": s.worker.info.window,
        "sentences": s.sentences.len(),
        "rows": s.rows.is_some(),
    }))
    .into_response()
}

async fn sentences(Axum(s): Axum<Arc<State>>) -> Response {
    Json(&s.sentences).into_response()
}

async fn rows(Axum(s): Axum<Arc<State>>) -> Response {
    match &s.rows {
        Some(r) => ([(header::CONTENT_TYPE, "application/jsonl")], r.clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "no rows file: start with --rows FILE".into(),
        ),
    }
}

fn error(code: StatusCode, msg: String) -> Response {
    (code, Json(json!({ "error": msg }))).into_response()
}

/// Decodes a pair at the body's lambdas. Headers `x-imix-slot` and `x-imix-seq` name the page
/// slot and its request number: a newer request of the slot supersedes an older one still queued.
async fn mix(Axum(s): Axum<Arc<State>>, headers: HeaderMap, body: String) -> Response {
    let req: ExploreRequest = match inversed_mixup::api::from_json(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                field_names(&e.to_string(), &|f| f.into()),
            )
        }
    };
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let slot = match (
        h("x-imix-slot"),
        h("x-imix-seq").and_then(|v| v.parse().ok()),
    ) {
        (Some(slot), Some(seq)) => Some((slot.to_string(), seq)),
        _ => None,
    };
    match s.worker.run(req, slot).await {
        Outcome::Done(rows) => Json(json!({ "rows": rows })).into_response(),
        Outcome::Refused(m) => error(StatusCode::BAD_REQUEST, field_names(&m, &|f| f.into())),
        Outcome::Superseded => error(StatusCode::CONFLICT, "superseded by a newer request".into()),
        Outcome::Failed(m) => error(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}
