//! Manifold intrusion: a generated sentence whose content, as judged by the warmed-up task model,
//! confidently contradicts the soft label it was given.

use crate::eval::classes::argmax;
use crate::{Error, Result};

/// What to do with intruding samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Mitigation {
    /// Keep them with their mixup soft label.
    Keep,
    /// Leave them out of the augmented data (still written, flagged, when asked).
    Drop,
    /// Replace the soft label by an even blend of soft label and prediction.
    Relabel,
}

impl std::str::FromStr for Mitigation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "keep" => Ok(Mitigation::Keep),
            "drop" => Ok(Mitigation::Drop),
            "relabel" => Ok(Mitigation::Relabel),
            _ => Err(Error::Config(format!(
                "`intrusion` {s:?}: expected keep, drop or relabel"
            ))),
        }
    }
}

impl Mitigation {
    /// The training label of a sample with mixup label `mix` and prediction `predicted`, or
    /// `None` when the sample is left out.
    pub fn apply(self, mix: &[f64], predicted: &[f64], intrusion: bool) -> Option<Vec<f64>> {
        match (intrusion, self) {
            (false, _) | (true, Mitigation::Keep) => Some(mix.to_vec()),
            (true, Mitigation::Drop) => None,
            (true, Mitigation::Relabel) => Some(relabel(mix, predicted)),
        }
    }
}

/// The verdict on one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// True when the sample intrudes.
    pub intrusion: bool,
    /// Why, in words (empty when it does not intrude).
    pub reason: String,
}

/// Judges a sample: it intrudes when the prediction is confident (max probability >= `threshold`) and
/// either (a) its argmax is neither source class, or (b) the sources' classes differ and the
/// prediction's dominant source class is the one the soft label weights less (the dominant class flipped).
pub fn judge(predicted: &[f64], soft: &[f64], ya: usize, yb: usize, threshold: f64) -> Verdict {
    let p = argmax(predicted);
    let conf = predicted[p];
    if conf < threshold {
        return Verdict {
            intrusion: false,
            reason: String::new(),
        };
    }
    if p != ya && p != yb {
        return Verdict {
            intrusion: true,
            reason: format!("predicted class {p} with p={conf:.2}, outside the sources' classes"),
        };
    }
    if ya != yb && (soft[ya] - soft[yb]).abs() > 1e-9 {
        let dominant = if soft[ya] > soft[yb] { ya } else { yb };
        if p != dominant {
            return Verdict { intrusion: true, reason: format!("dominant class flipped: label favours {dominant}, prediction {p} with p={conf:.2}") };
        }
    }
    Verdict {
        intrusion: false,
        reason: String::new(),
    }
}

/// The label an intruding sample gets under `Relabel`: the mean of soft label and prediction.
/// Blending (rather than replacing) keeps what the mix was meant to teach while no longer asserting
/// a label the content contradicts; a plain replacement would turn it into a self-training sample.
pub fn relabel(soft: &[f64], predicted: &[f64]) -> Vec<f64> {
    soft.iter()
        .zip(predicted)
        .map(|(s, p)| 0.5 * s + 0.5 * p)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule (b) alone: a confident prediction of a source class that the soft label weights less is an
    /// intrusion ("dominant class flipped"); the same prediction is not when the label favours that class,
    /// has no dominant class (within 1e-9), is below the threshold, or both sources share the class.
    #[test]
    fn dominant_class_flipped_decides_alone() {
        // Class 1 is a source class (rule (a) cannot fire) and the prediction is confident (0.85 >= 0.8).
        let pred = [0.1, 0.85, 0.05];
        let v = judge(&pred, &[0.6, 0.4, 0.0], 0, 1, 0.8);
        assert!(v.intrusion, "{v:?}");
        assert!(
            v.reason
                .starts_with("dominant class flipped: label favours 0, prediction 1"),
            "{v:?}"
        );
        // The rule reads the label's weights, not which source came first.
        assert!(judge(&pred, &[0.6, 0.4, 0.0], 1, 0, 0.8).intrusion);
        // A label only just favouring class 0 is still flipped; a difference within 1e-9 is a tie.
        assert!(judge(&pred, &[0.5 + 1e-6, 0.5 - 1e-6, 0.0], 0, 1, 0.8).intrusion);
        // Near cases that must not fire.
        let no = Verdict {
            intrusion: false,
            reason: String::new(),
        };
        assert_eq!(
            judge(&pred, &[0.4, 0.6, 0.0], 0, 1, 0.8),
            no,
            "label favours the predicted class"
        );
        assert_eq!(
            judge(&pred, &[0.5 + 1e-10, 0.5 - 1e-10, 0.0], 0, 1, 0.8),
            no,
            "no dominant class"
        );
        assert_eq!(
            judge(&pred, &[0.6, 0.4, 0.0], 0, 1, 0.86),
            no,
            "not confident enough"
        );
        assert_eq!(
            judge(&[0.85, 0.1, 0.05], &[1.0, 0.0, 0.0], 0, 0, 0.8),
            no,
            "same-class sources"
        );
    }
}
