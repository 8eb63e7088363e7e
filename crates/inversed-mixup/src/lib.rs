//! inversedMixup: readable, controllable text augmentation by inverting mixed sentence embeddings.
//!
//! A sentence goes through the [`encoder`] (embedding h), the [`adaptor`] (k soft tokens), the
//! [`prompt`] and the frozen [`llm`] (a readable sentence). [`align`] trains the adaptor (stage 1);
//! [`invert`] reconstructs sentences and scores them with [`metrics`].

pub mod activation;
pub mod adaptor;
pub mod align;
pub mod augment;
pub mod baselines;
pub mod benchmark;
pub mod checkpoint;
pub mod classifier;
pub mod corpus;
pub mod data;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod fastmath;
pub mod fused;
pub mod intrusion;
pub mod invert;
pub mod io;
pub mod llm;
pub mod matvec;
pub mod metrics;
pub mod mixup;
pub mod models;
pub mod ops;
pub mod optim;
pub mod prompt;
pub mod warmup;

pub use error::{Error, Result};
