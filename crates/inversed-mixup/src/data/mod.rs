//! Files in and out: unlabeled corpora, labelled data, atomic writes, checkpoints, JSONL; and the
//! checks of settings (`flags`) made before any of it.

pub mod checkpoint;
pub mod corpus;
pub mod flags;
pub mod io;
pub mod jsonl;
pub mod labelled;
