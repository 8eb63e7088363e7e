//! The augmentation methods the benchmark compares.

use crate::method::augment::LabelFrom;
use crate::method::intrusion::Mitigation;
use serde::{Deserialize, Serialize};

/// One augmentation method of the grid (names as in reports and `results.jsonl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The few-shot sample alone.
    None,
    /// The sample repeated to the row count of the augmenting methods.
    Duplicate,
    /// EDA-style word swaps, deletions and insertions.
    Eda,
    /// Mixup of sentence embeddings (not readable).
    EmbedMixup,
    /// For each mixed embedding the nearest sentence of an unlabeled pool, with the mix's soft
    /// label: readable and cheap, the floor a generator must beat.
    RetrievalMixup,
    /// Each example decoded from its own embedding (lambda = 1).
    Reconstruct,
    /// inversedMixup, intruders kept.
    InversedMixupKeep,
    /// inversedMixup, intruders dropped.
    InversedMixupDrop,
    /// inversedMixup, intruders relabelled.
    InversedMixupRelabel,
    /// Generated rows labelled by the ratio their own embedding shows (`content_lambda`), all kept.
    InversedMixupContent,
    /// inversedMixup whose decodes that copy a source verbatim are sampled again (top-p 0.9, up
    /// to `NOVEL_TRIES` tries) so that a near-source mix adds a variation, not a duplicate; intruders kept.
    InversedMixupNovel,
}

/// Sampling tries `inversed-mixup-novel` gives a decode that copied its source.
pub const NOVEL_TRIES: usize = 4;

impl Method {
    /// Every method, in report order.
    pub const ALL: [Method; 11] = [
        Method::None,
        Method::Duplicate,
        Method::Eda,
        Method::EmbedMixup,
        Method::RetrievalMixup,
        Method::Reconstruct,
        Method::InversedMixupKeep,
        Method::InversedMixupDrop,
        Method::InversedMixupRelabel,
        Method::InversedMixupContent,
        Method::InversedMixupNovel,
    ];

    /// The name used in reports and result files.
    pub fn name(self) -> &'static str {
        match self {
            Method::None => "none",
            Method::Duplicate => "duplicate",
            Method::RetrievalMixup => "retrieval-mixup",
            Method::Eda => "eda",
            Method::EmbedMixup => "embed-mixup",
            Method::Reconstruct => "reconstruct",
            Method::InversedMixupKeep => "inversed-mixup-keep",
            Method::InversedMixupDrop => "inversed-mixup-drop",
            Method::InversedMixupRelabel => "inversed-mixup-relabel",
            Method::InversedMixupContent => "inversed-mixup-content",
            Method::InversedMixupNovel => "inversed-mixup-novel",
        }
    }

    /// Whether the method generates sentences through the adaptor and LLM (needs stage 2).
    pub fn generates(self) -> bool {
        self == Method::Reconstruct || self.mitigation().is_some()
    }

    /// The intrusion policy of an inversedMixup variant.
    pub fn mitigation(self) -> Option<Mitigation> {
        match self {
            Method::InversedMixupKeep => Some(Mitigation::Keep),
            Method::InversedMixupDrop => Some(Mitigation::Drop),
            Method::InversedMixupRelabel => Some(Mitigation::Relabel),
            Method::InversedMixupContent | Method::InversedMixupNovel => Some(Mitigation::Keep),
            _ => None,
        }
    }

    /// How many times a decode that copies its source is sampled again (0: never).
    pub fn resample_copies(self) -> usize {
        if self == Method::InversedMixupNovel {
            NOVEL_TRIES
        } else {
            0
        }
    }

    /// Where the label of a generated row comes from (before mitigation).
    pub fn label_from(self) -> LabelFrom {
        match self {
            Method::InversedMixupContent => LabelFrom::Content,
            _ => LabelFrom::Mix,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serialised_names() {
        for m in Method::ALL {
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{}\"", m.name()));
        }
    }
}
