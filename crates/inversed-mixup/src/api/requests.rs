//! What a front end may ask for, with the documented defaults (each written once, here) and every
//! check that runs before any model loads. Errors name fields in backticks (`` `batch_size` ``);
//! each front end maps those to its own flag or keyword (`field_names`).

use crate::data::corpus::DEFAULT_MAX_CHARS;
use crate::data::flags::{at_least_one, non_negative, positive, unit};
use crate::method::augment::LabelFrom;
use crate::method::intrusion::Mitigation;
use crate::method::invert::INVERT_DECODE;
use crate::method::mixup::{LambdaSpec, Pairing};
use crate::method::shard::Shard;
use crate::nets::llm::GenerateOptions;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Decoding where rows train a task model (augment, interpolate): `correct:4` was not better for
/// the task on the dev splits (RESULTS.md), at four times the cost.
pub const AUGMENT_DECODE: &str = "greedy";
/// The mixing ratio: Beta(0.2, 0.2), which trained the best task models on the dev splits.
pub const DEFAULT_LAMBDA: &str = "beta:0.2";
/// Most tokens generated per sentence.
pub const MAX_NEW_TOKENS: usize = 48;
/// Never repeat an n-gram of this many tokens within one sentence.
pub const NO_REPEAT_NGRAM: usize = 3;
/// Sentences (or mixes) decoded together.
pub const DECODE_BATCH: usize = 16;
/// Most candidates decoded per mix (each costs a full decode).
pub const MAX_CANDIDATES: usize = 64;

/// The decoding settings every decoding request carries, checked.
pub(super) fn generate_options(
    decode: &str,
    max_new_tokens: usize,
    seed: u64,
    no_repeat_ngram: usize,
    repetition_penalty: f32,
) -> Result<GenerateOptions> {
    positive("repetition_penalty", repetition_penalty as f64)?;
    at_least_one("max_new_tokens", max_new_tokens)?;
    Ok(GenerateOptions {
        decode: decode.parse()?,
        max_new_tokens,
        seed,
        temperature: 1.0,
        no_repeat_ngram,
        repetition_penalty,
        valid_utf8: true,
    })
}

/// How many labelled rows to use: all, or K per class drawn with a seed.
fn check_sample(shots: Option<usize>, max_chars: usize) -> Result<()> {
    if let Some(k) = shots {
        at_least_one("shots", k)?;
    }
    at_least_one("max_chars", max_chars)
}

/// Passes of L_GEN over the labelled sample in stage 2: on SST-2's dev sentences at ten shots,
/// 2 passes invert unseen sentences as well as the shipped adaptor (cosine 0.600 vs 0.603) where
/// refining every step (24 passes) lost 0.05 and returned 95 % of the end-λ rows word for word
/// (RESULTS.md, "Stage 2 without memorising").
pub const DEFAULT_GEN_PASSES: f64 = 2.0;

/// Stage 2: train the task classifier and refine the adaptor (`imix warmup`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WarmupRequest {
    /// Joint steps of L_CE + beta * L_GEN.
    pub steps: usize,
    /// Sentences per step.
    pub batch_size: usize,
    /// Weight of L_GEN (0 trains only the classifier).
    pub beta: f64,
    /// Classifier learning rate.
    pub lr_classifier: f64,
    /// Adaptor learning rate.
    pub lr_adaptor: f64,
    /// Fine-tune the encoder too: N = the top N layers, 0 = every layer and the embeddings.
    pub finetune_encoder: Option<usize>,
    /// Encoder learning rate (with `finetune_encoder`).
    pub lr_encoder: f64,
    /// Seed for data order.
    pub seed: u64,
    /// Write a checkpoint every N steps.
    pub checkpoint_every: usize,
    /// Continue from the bundle's checkpoint.
    pub resume: bool,
    /// Keep only K examples per class.
    pub shots: Option<usize>,
    /// Seed of the few-shot sample.
    pub shots_seed: u64,
    /// Refuse texts longer than this many characters.
    pub max_chars: usize,
    /// Refine the adaptor on the labelled sentences for this many passes over them only (then
    /// the classifier trains on alone); `None`: every step.
    pub gen_passes: Option<f64>,
    /// Unlabelled in-domain sentences (files, as `imix align` reads them) the adaptor is refined
    /// on alongside, `replay` a step: text is plentiful where labels are not.
    pub unlabeled: Vec<std::path::PathBuf>,
    /// Unlabelled sentences per step (with `unlabeled`).
    pub replay: usize,
}

impl Default for WarmupRequest {
    fn default() -> Self {
        let c = crate::stages::warmup::WarmupConfig::default();
        Self {
            steps: c.steps,
            batch_size: c.batch_size,
            beta: c.beta,
            lr_classifier: c.lr_classifier,
            lr_adaptor: c.lr_adaptor,
            finetune_encoder: None,
            lr_encoder: c.lr_encoder,
            seed: 0,
            checkpoint_every: 20,
            resume: false,
            shots: None,
            shots_seed: 0,
            max_chars: DEFAULT_MAX_CHARS,
            gen_passes: Some(DEFAULT_GEN_PASSES),
            unlabeled: Vec::new(),
            replay: 4,
        }
    }
}

impl WarmupRequest {
    /// Every check of the settings, before any work.
    pub fn validate(&self) -> Result<()> {
        let counts = [
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("checkpoint_every", self.checkpoint_every),
        ];
        for (f, n) in counts {
            at_least_one(f, n)?;
        }
        non_negative("beta", self.beta)?;
        let rates = [
            ("lr_classifier", self.lr_classifier),
            ("lr_adaptor", self.lr_adaptor),
            ("lr_encoder", self.lr_encoder),
        ];
        for (f, v) in rates {
            positive(f, v)?;
        }
        if let Some(p) = self.gen_passes {
            positive("gen_passes", p)?;
        }
        if !self.unlabeled.is_empty() {
            at_least_one("replay", self.replay)?;
        }
        check_sample(self.shots, self.max_chars)
    }
}

/// Stage 3: mix pairs, decode the mixes, soft-label and judge them (`imix augment`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentRequest {
    /// Which examples are mixed with each other.
    pub pairs: Pairing,
    /// Partners per example.
    pub per_example: usize,
    /// Mixing ratio: a value, `beta:ALPHA` (a draw per pair) or `grid:V,V,...`.
    pub lambda: String,
    /// Confidence from which a contradicting prediction counts as intrusion.
    pub threshold: f64,
    /// What happens to intruders.
    pub intrusion: Mitigation,
    /// Where the label comes from: the mixing ratio or the sentence's own content.
    pub label: LabelFrom,
    /// Decode a copy of a source again by seeded sampling, up to N times (0: never).
    pub resample_copies: usize,
    /// Candidates decoded per mix, the one closest to the mixed target that is not a copy kept.
    pub candidates: usize,
    /// Leave out mixes whose every candidate is a near copy of a source.
    pub reject_copies: bool,
    /// Weight of the task model's prediction on the generated text in its label (0: off).
    pub teacher_weight: f64,
    /// Mixes decoded together.
    pub batch_size: usize,
    /// Run only shard `I/N` of the decode batches.
    pub shard: Option<String>,
    /// Decoding: greedy, beam:W, top-p:P, rerank:N, correct:N or guided:W.
    pub decode: String,
    /// Most tokens generated per sentence.
    pub max_new_tokens: usize,
    /// Seed for pairing, lambda draws and sampling.
    pub seed: u64,
    /// Never repeat an n-gram of this many tokens (0: off).
    pub no_repeat_ngram: usize,
    /// Penalty on tokens already generated (1: off).
    pub repetition_penalty: f32,
    /// Keep only K examples per class.
    pub shots: Option<usize>,
    /// Seed of the few-shot sample.
    pub shots_seed: u64,
    /// Refuse texts longer than this many characters.
    pub max_chars: usize,
}

impl Default for AugmentRequest {
    fn default() -> Self {
        Self {
            pairs: Pairing::CrossClass,
            per_example: 1,
            lambda: DEFAULT_LAMBDA.into(),
            threshold: 0.8,
            intrusion: Mitigation::Keep,
            label: LabelFrom::Mix,
            resample_copies: 0,
            candidates: 1,
            reject_copies: false,
            teacher_weight: 0.0,
            batch_size: DECODE_BATCH,
            shard: None,
            decode: AUGMENT_DECODE.into(),
            max_new_tokens: MAX_NEW_TOKENS,
            seed: 0,
            no_repeat_ngram: NO_REPEAT_NGRAM,
            repetition_penalty: 1.0,
            shots: None,
            shots_seed: 0,
            max_chars: DEFAULT_MAX_CHARS,
        }
    }
}

/// An augmentation request after its checks: the parsed settings.
#[derive(Debug, Clone)]
pub struct AugmentPlan {
    /// Decoding settings.
    pub gen: GenerateOptions,
    /// The mixing ratio.
    pub lambda: LambdaSpec,
    /// The shard to run (all of it when none was asked).
    pub shard: Shard,
}

impl AugmentRequest {
    /// Every check of the settings, before any work; the parsed settings.
    pub fn validate(&self) -> Result<AugmentPlan> {
        at_least_one("per_example", self.per_example)?;
        at_least_one("batch_size", self.batch_size)?;
        unit("threshold", self.threshold)?;
        at_least_one("candidates", self.candidates)?;
        if self.candidates > MAX_CANDIDATES {
            return Err(Error::Invalid(format!(
                "`candidates` {}: at most {MAX_CANDIDATES}",
                self.candidates
            )));
        }
        unit("teacher_weight", self.teacher_weight)?;
        check_sample(self.shots, self.max_chars)?;
        let shard = match &self.shard {
            Some(s) => s.parse()?,
            None => Shard::ALL,
        };
        let gen = generate_options(
            &self.decode,
            self.max_new_tokens,
            self.seed,
            self.no_repeat_ngram,
            self.repetition_penalty,
        )?;
        Ok(AugmentPlan {
            gen,
            lambda: self.lambda.parse()?,
            shard,
        })
    }
}

/// Reconstruct sentences from their own embeddings (`imix invert`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InvertRequest {
    /// Sentences decoded together.
    pub batch_size: usize,
    /// Decoding (the closest of sixteen corrected greedy decodes by default).
    pub decode: String,
    /// Most tokens generated per sentence.
    pub max_new_tokens: usize,
    /// Seed for sampling.
    pub seed: u64,
    /// Never repeat an n-gram of this many tokens (0: off).
    pub no_repeat_ngram: usize,
    /// Penalty on tokens already generated (1: off).
    pub repetition_penalty: f32,
    /// Refuse texts longer than this many characters.
    pub max_chars: usize,
}

impl Default for InvertRequest {
    fn default() -> Self {
        Self {
            batch_size: DECODE_BATCH,
            decode: INVERT_DECODE.into(),
            max_new_tokens: MAX_NEW_TOKENS,
            seed: 0,
            no_repeat_ngram: NO_REPEAT_NGRAM,
            repetition_penalty: 1.0,
            max_chars: DEFAULT_MAX_CHARS,
        }
    }
}

impl InvertRequest {
    /// Every check of the settings, before any work; the decoding settings.
    pub fn validate(&self) -> Result<GenerateOptions> {
        at_least_one("batch_size", self.batch_size)?;
        at_least_one("max_chars", self.max_chars)?;
        generate_options(
            &self.decode,
            self.max_new_tokens,
            self.seed,
            self.no_repeat_ngram,
            self.repetition_penalty,
        )
    }
}

/// Walk from sentence B to sentence A through mixed embeddings (`imix interpolate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InterpolateRequest {
    /// Points on the path from B (lambda 0) to A (lambda 1), ends included.
    pub steps: usize,
    /// Decoding.
    pub decode: String,
    /// Most tokens generated per sentence.
    pub max_new_tokens: usize,
    /// Seed for sampling.
    pub seed: u64,
    /// Never repeat an n-gram of this many tokens (0: off).
    pub no_repeat_ngram: usize,
    /// Penalty on tokens already generated (1: off).
    pub repetition_penalty: f32,
}

impl Default for InterpolateRequest {
    fn default() -> Self {
        Self {
            steps: 5,
            decode: AUGMENT_DECODE.into(),
            max_new_tokens: MAX_NEW_TOKENS,
            seed: 0,
            no_repeat_ngram: NO_REPEAT_NGRAM,
            repetition_penalty: 1.0,
        }
    }
}

impl InterpolateRequest {
    /// Every check of the settings, before any work; the decoding settings.
    pub fn validate(&self) -> Result<GenerateOptions> {
        if self.steps < 2 {
            return Err(Error::Invalid(format!(
                "`steps` {}: must be at least 2 (the two ends)",
                self.steps
            )));
        }
        generate_options(
            &self.decode,
            self.max_new_tokens,
            self.seed,
            self.no_repeat_ngram,
            self.repetition_penalty,
        )
    }
}

/// A request from JSON (a front end's keyword arguments): fields left out keep their defaults; an
/// unknown field or a value of the wrong type is refused with the field's name.
pub fn from_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_json appends " at line L column C" of the JSON the front end wrote, not the user's.
        let inner = inner
            .split(" at line ")
            .next()
            .unwrap_or(&inner)
            .to_string();
        // An unknown field names itself; a bad value is named by its field.
        match path.as_str() {
            "." | "" => Error::Invalid(inner),
            _ if inner.starts_with("unknown field") => Error::Invalid(inner),
            p => Error::Invalid(format!("`{p}`: {inner}")),
        }
    })
}

/// A message with every `` `field` `` written as a front end names it: `name` maps a field
/// (`batch_size`) to a flag (`--batch-size`) or keyword. Backticked text that is not a field name
/// (a command such as `` `imix align` ``) is left as it is.
pub fn field_names(msg: &str, name: &dyn Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(start) = rest.find('`') {
        let Some(len) = rest[start + 1..].find('`') else {
            break;
        };
        let inner = &rest[start + 1..start + 1 + len];
        out.push_str(&rest[..start]);
        let is_field = inner.starts_with(|c: char| c.is_ascii_lowercase())
            && inner
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if is_field {
            out.push_str(&name(inner));
        } else {
            out.push_str(&rest[start..start + len + 2]);
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_their_own_checks() {
        WarmupRequest::default().validate().unwrap();
        AugmentRequest::default().validate().unwrap();
        InvertRequest::default().validate().unwrap();
        InterpolateRequest::default().validate().unwrap();
    }

    #[test]
    fn warmup_refinement_settings_are_checked() {
        let bad = |r: WarmupRequest| r.validate().unwrap_err().to_string();
        let e = bad(WarmupRequest {
            gen_passes: Some(0.0),
            ..Default::default()
        });
        assert!(e.starts_with("`gen_passes` 0"), "{e}");
        let e = bad(WarmupRequest {
            unlabeled: vec!["pool.txt".into()],
            replay: 0,
            ..Default::default()
        });
        assert!(e.starts_with("`replay` 0"), "{e}");
        // Without unlabelled text the replay count is unused.
        WarmupRequest {
            replay: 0,
            ..Default::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn json_fills_defaults_and_names_bad_fields() {
        let r: AugmentRequest = from_json(r#"{"per_example": 2, "pairs": "same-class"}"#).unwrap();
        assert_eq!((r.per_example, r.pairs), (2, Pairing::SameClass));
        assert_eq!(r.lambda, DEFAULT_LAMBDA);
        let e = from_json::<AugmentRequest>(r#"{"max_new_tokens": -1}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("`max_new_tokens`: invalid value: integer `-1`"),
            "{e}"
        );
        let e = from_json::<WarmupRequest>(r#"{"stepz": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("unknown field `stepz`, expected one of `steps`"),
            "{e}"
        );
    }

    #[test]
    fn messages_name_fields_as_the_front_end_does() {
        let e = AugmentRequest {
            batch_size: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        let flag = |f: &str| format!("--{}", f.replace('_', "-"));
        assert_eq!(
            field_names(&e.to_string(), &flag),
            "--batch-size 0: must be at least 1"
        );
        let m = "retrain with `imix align` or set `max_chars`, not `3`";
        assert_eq!(
            field_names(m, &flag),
            "retrain with `imix align` or set --max-chars, not `3`"
        );
    }
}
