//! inversedMixup: readable, controllable text augmentation by inverting mixed sentence embeddings.
//!
//! The folders follow the method, each layer using only those before it (ARCHITECTURE.md):
//! [`data`] (files in and out), [`eval`] (metrics and statistics), [`nets`] (the encoder, the
//! frozen LLM, model fetching, the optimiser), [`method`] (adaptor, prompt, inversion, mixup,
//! augmentation, intrusion, task classifier), [`stages`] (stage 1 alignment, stage 2 warm-up and
//! the warm-up bundle) and [`api`] (the requests front ends make, and their flow). CPU kernels
//! live in the `imix-kernels` crate; the few-shot benchmark in `imix-bench`.

pub mod api;
pub mod data;
pub mod error;
pub mod eval;
pub mod method;
pub mod nets;
pub mod stages;

pub use error::{Error, Result};
