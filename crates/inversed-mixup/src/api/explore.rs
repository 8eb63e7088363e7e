//! One pair, any lambdas, every score a person reads (the explorer's "Mix" and "Sweep"): the
//! decoded sentence, its cosine to each source and to the mixed target, its content ratio, whether
//! it is a near copy, and, with a warm-up bundle and the sources' labels, its soft label, the task
//! model's prediction and the intrusion verdict.

use crate::method::classifier::Classifier;
use crate::method::intrusion::judge;
use crate::method::invert::Inverter;
use crate::method::mixes::{decode_mixes, MixRow};
use crate::method::mixup::soft_label;
use crate::nets::encoder::Encoder;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::requests::{generate_options, MAX_NEW_TOKENS, NO_REPEAT_NGRAM};

/// Most lambdas one request may ask for (a sweep of 0.05 steps has 21).
pub const MAX_LAMBDAS: usize = 101;
/// Confidence above which a contradicting prediction counts as intrusion (as `imix augment`'s).
pub const THRESHOLD: f64 = 0.8;

/// Mix sentence `a` (weight lambda) with `b` at each lambda and decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExploreRequest {
    /// Sentence A (weight lambda).
    pub a: String,
    /// Sentence B (weight 1 - lambda).
    pub b: String,
    /// A's label (for the soft label and the intrusion verdict; needs a bundle).
    pub label_a: Option<String>,
    /// B's label.
    pub label_b: Option<String>,
    /// The mixing ratios, each in [0, 1].
    pub lambdas: Vec<f64>,
    /// Decoding (`greedy`, `correct:N`, `beam:N`, ...).
    pub decode: String,
    /// Most tokens generated per sentence.
    pub max_new_tokens: usize,
    /// Seed for sampled decodings.
    pub seed: u64,
    /// Never repeat an n-gram of this many tokens (0: off).
    pub no_repeat_ngram: usize,
}

impl Default for ExploreRequest {
    fn default() -> Self {
        Self {
            a: String::new(),
            b: String::new(),
            label_a: None,
            label_b: None,
            lambdas: vec![0.5],
            decode: "greedy".into(),
            max_new_tokens: MAX_NEW_TOKENS,
            seed: 0,
            no_repeat_ngram: NO_REPEAT_NGRAM,
        }
    }
}

impl ExploreRequest {
    /// The checks that need no model: both sentences have text, lambdas in range, decoding valid.
    pub fn validate(&self) -> Result<crate::nets::llm::GenerateOptions> {
        super::pipeline::check_pair(&self.a, &self.b)?;
        if self.lambdas.is_empty() || self.lambdas.len() > MAX_LAMBDAS {
            return Err(Error::Invalid(format!(
                "`lambdas`: {} given, 1 to {MAX_LAMBDAS} allowed",
                self.lambdas.len()
            )));
        }
        if let Some(l) = self.lambdas.iter().find(|l| !(0.0..=1.0).contains(*l)) {
            return Err(Error::Invalid(format!(
                "`lambdas` {l}: each must lie in [0, 1]"
            )));
        }
        generate_options(
            &self.decode,
            self.max_new_tokens,
            self.seed,
            self.no_repeat_ngram,
            1.0,
        )
    }
}

/// Refuses a sentence longer than the encoder's window: its embedding would describe only its
/// first `max_len` tokens, and the page would show a mix of text the user cannot see.
pub fn check_window(encoder: &Encoder, which: &str, text: &str) -> Result<()> {
    if !encoder.fits(text)? {
        return Err(Error::Invalid(format!(
            "sentence {which} is longer than the encoder's window of {} tokens: shorten it",
            encoder.max_len()
        )));
    }
    Ok(())
}

/// One decoded mix, its scores and, with a bundle, what the task model makes of it.
#[derive(Debug, Clone, Serialize)]
pub struct MixView {
    /// The sources, lambda, sentence and scores (as `imix invert --mixes` reports them).
    #[serde(flatten)]
    pub mix: MixRow,
    /// The Mixup soft label (with a bundle and both labels).
    pub soft_label: Option<BTreeMap<String, f64>>,
    /// The task model's prediction on the sentence (with a bundle).
    pub predicted: Option<BTreeMap<String, f64>>,
    /// The intrusion verdict (with a bundle and both labels).
    pub intrusion: Option<bool>,
    /// Why it intrudes (empty otherwise).
    pub intrusion_reason: String,
}

/// Decodes the request's mixes (one batch) and scores each; `classifier` (a bundle's) adds the
/// prediction, and with both labels the soft label and the verdict.
pub fn explore(
    inv: &Inverter,
    classifier: Option<&Classifier>,
    req: &ExploreRequest,
) -> Result<Vec<MixView>> {
    let gen = req.validate()?;
    check_window(inv.encoder, "A", &req.a)?;
    check_window(inv.encoder, "B", &req.b)?;
    let ids = match (classifier, &req.label_a, &req.label_b) {
        (Some(c), Some(la), Some(lb)) => {
            Some((label_id(c, "label_a", la)?, label_id(c, "label_b", lb)?))
        }
        _ => None,
    };
    let n = req.lambdas.len();
    let (a, b) = (vec![req.a.as_str(); n], vec![req.b.as_str(); n]);
    let (rows, hg) = decode_mixes(inv, &a, &b, &req.lambdas, &gen)?;
    let pred = classifier.map(|c| c.probs(&hg)).transpose()?;
    let named = |c: &Classifier, p: &[f64]| -> BTreeMap<String, f64> {
        c.labels.iter().cloned().zip(p.iter().copied()).collect()
    };
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(i, mix)| {
            let lambda = mix.lambda;
            let mut v = MixView {
                mix,
                soft_label: None,
                predicted: None,
                intrusion: None,
                intrusion_reason: String::new(),
            };
            if let (Some(c), Some(p)) = (classifier, &pred) {
                v.predicted = Some(named(c, &p[i]));
                if let Some((ya, yb)) = ids {
                    let soft = soft_label(ya, yb, lambda, c.labels.len());
                    let verdict = judge(&p[i], &soft, ya, yb, THRESHOLD);
                    v.soft_label = Some(named(c, &soft));
                    v.intrusion = Some(verdict.intrusion);
                    v.intrusion_reason = verdict.reason;
                }
            }
            v
        })
        .collect())
}

fn label_id(c: &Classifier, field: &str, name: &str) -> Result<usize> {
    c.label_id(name).ok_or_else(|| {
        Error::Invalid(format!(
            "`{field}` {name:?}: not a label of the bundle ({})",
            c.labels.join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(lambdas: Vec<f64>) -> ExploreRequest {
        ExploreRequest {
            a: "a good film".into(),
            b: "a bad film".into(),
            lambdas,
            ..Default::default()
        }
    }

    /// Lambdas out of range, none or too many, and empty sentences are refused with the field.
    #[test]
    fn refuses_bad_requests() {
        req(vec![0.0, 0.5, 1.0]).validate().unwrap();
        let e = |r: ExploreRequest| r.validate().unwrap_err().to_string();
        assert_eq!(e(req(vec![1.5])), "`lambdas` 1.5: each must lie in [0, 1]");
        assert!(e(req(vec![])).starts_with("`lambdas`: 0 given"));
        assert!(e(req(vec![0.5; 102])).starts_with("`lambdas`: 102 given"));
        let empty = ExploreRequest {
            a: " ".into(),
            ..req(vec![0.5])
        };
        assert!(e(empty).contains("sentence A is empty"));
        let bad = ExploreRequest {
            decode: "loud".into(),
            ..req(vec![0.5])
        };
        assert!(e(bad).contains("loud"));
    }
}
