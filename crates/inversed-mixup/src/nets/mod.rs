//! The networks: the task encoder, the frozen causal LLM, fetching their weights, the optimiser,
//! and the per-op switch between inference kernels and ops with a backward.

pub mod encoder;
pub mod fetch;
pub mod llm;
pub mod ops;
pub mod optim;
