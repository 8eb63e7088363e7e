//! Training stages: stage 1 aligns the adaptor on unlabeled text, stage 2 warms up the task model
//! and refines the adaptor on labelled data; the bundle is what stage 2 hands to stage 3. Mix
//! alignment continues stage 1 on mixed embeddings.

pub mod align;
pub mod bundle;
pub mod mix_align;
pub mod schedule;
pub mod state;
pub mod warmup;
