//! The method: the adaptor (embedding to soft tokens), the prompt around them, inversion of
//! embeddings into sentences, Mixup planning, sharding of stage 3, augmentation with soft labels, manifold-intrusion
//! judgement and the task classifier.

pub mod adaptor;
pub mod augment;
pub mod classifier;
pub mod deep_soft;
pub mod intrusion;
pub mod invert;
pub mod mixes;
pub mod mixup;
pub mod prompt;
pub mod shard;
pub mod shipped;
pub mod task_model;
