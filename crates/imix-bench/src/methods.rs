//! The augmentation methods the benchmark compares.

use inversed_mixup::method::augment::LabelFrom;
use inversed_mixup::method::intrusion::Mitigation;
use serde::{Deserialize, Serialize};

/// One augmentation method of the grid (names as in reports and `results.jsonl`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
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
    /// to 4 tries, `NOVEL_TRIES`) so that a near-source mix adds a variation, not a duplicate; intruders kept.
    InversedMixupNovel,
    /// inversedMixup with every mix decoded by seeded top-p sampling (p 0.9) instead of the run's
    /// `--decode`: each row a sample near its mix, not the single most likely sentence; intruders kept.
    InversedMixupSampled,
    /// inversedMixup with every mix decoded by `correct:4` (four greedy decodes from inputs moved
    /// towards what the output missed, the closest to the mix kept) instead of the run's `--decode`;
    /// intruders kept.
    InversedMixupCorrected,
    /// The run's generation with teacher labels: each row's mix label blended with the warmed-up
    /// task model's prediction on its text (`TEACHER_WEIGHT`); rows it confidently contradicts dropped.
    InversedMixupTeacher,
    /// Label-safe mixing: same-class pairs at lambda ~ U[0.3, 0.7] (the label is right whichever
    /// source the text follows), over-generated (`SELECT_CANDIDATES` candidates, the closest to the
    /// mix that is not a near copy of a source kept, mixes with only copies left out); intruders dropped.
    InversedMixupSafe,
    /// `inversed-mixup-safe` with teacher labels.
    InversedMixupSafeTeacher,
    /// The run's pairing and lambda, over-generated and selected as in `inversed-mixup-safe`, with
    /// teacher labels; intruders dropped.
    InversedMixupSelectTeacher,
}

/// How a generating method decodes its mixes (methods with the same decoding share one generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Decoding {
    /// The run's decoding (`--decode`, greedy by default).
    Run,
    /// The run's decoding, with decodes that copy a source sampled again (`NOVEL_TRIES` tries).
    ResampleCopies,
    /// Every mix sampled, top-p 0.9, seeded.
    Sampled,
    /// Every mix decoded by `correct:CORRECT_ROUNDS`.
    Corrected,
    /// Same-class pairs at lambda ~ U[0.3, 0.7], over-generated and selected, copies rejected.
    Safe,
    /// The run's pairing and lambda, over-generated and selected, copies rejected.
    Select,
}

impl Decoding {
    /// The suffix of the generated-rows file (`generated/{dataset}-{shots}-{seed}{tag}.jsonl`).
    pub fn tag(self) -> &'static str {
        match self {
            Decoding::Run => "",
            Decoding::ResampleCopies => "-novel",
            Decoding::Sampled => "-sampled",
            Decoding::Corrected => "-corrected",
            Decoding::Safe => "-safe",
            Decoding::Select => "-select",
        }
    }
}

/// Sampling tries `inversed-mixup-novel` gives a decode that copied its source.
pub const NOVEL_TRIES: usize = 4;

/// Rounds of `inversed-mixup-corrected`'s `correct:N` decoding.
pub const CORRECT_ROUNDS: usize = 4;

/// Candidates decoded per mix by the over-generating methods (`inversed-mixup-safe`, `-select-*`).
pub const SELECT_CANDIDATES: usize = 4;

/// The teacher's weight in a teacher label: `(1 - w) * mix label + w * prediction`.
pub const TEACHER_WEIGHT: f64 = 0.5;

/// The lambda range of label-safe (same-class) mixing.
pub const SAFE_LAMBDA: (f64, f64) = (0.3, 0.7);

impl Method {
    /// Every method, in report order.
    pub const ALL: [Method; 17] = [
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
        Method::InversedMixupSampled,
        Method::InversedMixupCorrected,
        Method::InversedMixupTeacher,
        Method::InversedMixupSafe,
        Method::InversedMixupSafeTeacher,
        Method::InversedMixupSelectTeacher,
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
            Method::InversedMixupSampled => "inversed-mixup-sampled",
            Method::InversedMixupCorrected => "inversed-mixup-corrected",
            Method::InversedMixupTeacher => "inversed-mixup-teacher",
            Method::InversedMixupSafe => "inversed-mixup-safe",
            Method::InversedMixupSafeTeacher => "inversed-mixup-safe-teacher",
            Method::InversedMixupSelectTeacher => "inversed-mixup-select-teacher",
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
            Method::InversedMixupDrop
            | Method::InversedMixupTeacher
            | Method::InversedMixupSafe
            | Method::InversedMixupSafeTeacher
            | Method::InversedMixupSelectTeacher => Some(Mitigation::Drop),
            Method::InversedMixupRelabel => Some(Mitigation::Relabel),
            Method::InversedMixupContent
            | Method::InversedMixupNovel
            | Method::InversedMixupSampled
            | Method::InversedMixupCorrected => Some(Mitigation::Keep),
            _ => None,
        }
    }

    /// How the method decodes its mixes.
    pub fn decoding(self) -> Decoding {
        match self {
            Method::InversedMixupNovel => Decoding::ResampleCopies,
            Method::InversedMixupSampled => Decoding::Sampled,
            Method::InversedMixupCorrected => Decoding::Corrected,
            Method::InversedMixupSafe | Method::InversedMixupSafeTeacher => Decoding::Safe,
            Method::InversedMixupSelectTeacher => Decoding::Select,
            _ => Decoding::Run,
        }
    }

    /// The teacher's weight in the method's labels (0: the mix label alone).
    pub fn teacher_weight(self) -> f64 {
        match self {
            Method::InversedMixupTeacher
            | Method::InversedMixupSafeTeacher
            | Method::InversedMixupSelectTeacher => TEACHER_WEIGHT,
            _ => 0.0,
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
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.name())
            );
        }
    }
}
