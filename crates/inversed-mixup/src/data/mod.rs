//! Files in and out: unlabeled corpora, labelled data, atomic writes, checkpoints, JSONL.

pub mod checkpoint;
pub mod corpus;
pub mod io;
pub mod jsonl;
pub mod labelled;
