//! The label judge of the benchmark's generator diagnostics: a linear probe on frozen encoder
//! embeddings, trained on a dataset's whole train split, asked whether each generated sentence
//! reads as the class its soft label weights most. It sees far more labelled text than any
//! few-shot task model, so its verdict does not depend on the cell being judged.

use candle_core::Tensor;
use inversed_mixup::data::labelled::Labelled;
use inversed_mixup::eval::classes::argmax;
use inversed_mixup::method::augment::AugRow;
use inversed_mixup::method::classifier::{one_hot, Classifier};
use inversed_mixup::nets::encoder::Encoder;
use inversed_mixup::Result;

/// Full-batch AdamW steps and learning rate of the judge's probe (the bench probe's settings).
const STEPS: usize = 300;
const LR: f64 = 5e-2;

/// A probe trained on a whole train split, with its accuracy on the test split.
pub struct Judge {
    cls: Classifier,
    /// Accuracy of the judge on the (possibly subsampled) test split: how far its verdicts can be trusted.
    pub test_accuracy: f64,
}

impl Judge {
    /// Trains the judge on `train` (embeddings `train_h`) and measures it on `test` (`test_h`).
    pub fn train(
        train: &Labelled,
        train_h: &Tensor,
        test: &Labelled,
        test_h: &Tensor,
    ) -> Result<Self> {
        let cls = Classifier::new(train.labels.clone(), train_h.dim(1)?, train_h.device())?;
        cls.fit(train_h, &one_hot(&train.y, train.labels.len()), STEPS, LR)?;
        let pred: Vec<usize> = cls.probs(test_h)?.iter().map(|p| argmax(p)).collect();
        let right = pred.iter().zip(&test.y).filter(|(p, y)| p == y).count();
        Ok(Judge {
            cls,
            test_accuracy: right as f64 / test.y.len().max(1) as f64,
        })
    }

    /// Share of `rows` whose judged class is the class their mix label weights most (rows whose
    /// label ties two classes are left out); `None` when no row has a clear label.
    pub fn agreement(&self, encoder: &Encoder, rows: &[AugRow]) -> Result<Option<f64>> {
        let labelled: Vec<(&AugRow, usize)> = rows
            .iter()
            .filter_map(|r| self.clear_label(r).map(|c| (r, c)))
            .collect();
        if labelled.is_empty() {
            return Ok(None);
        }
        let texts: Vec<&str> = labelled.iter().map(|(r, _)| r.text.as_str()).collect();
        let probs = self.cls.probs(&encoder.embed_batched(&texts)?)?;
        let agree = probs
            .iter()
            .zip(&labelled)
            .filter(|(p, (_, c))| argmax(p) == *c)
            .count();
        Ok(Some(agree as f64 / labelled.len() as f64))
    }

    /// The class a row's mix label weights most, if one class leads.
    fn clear_label(&self, r: &AugRow) -> Option<usize> {
        let y: Vec<f64> = self
            .cls
            .labels
            .iter()
            .map(|l| r.mix_label.get(l).copied().unwrap_or(0.0))
            .collect();
        let c = argmax(&y);
        let lead = y
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != c)
            .all(|(_, &v)| y[c] - v > 1e-9);
        lead.then_some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use inversed_mixup::data::corpus::Row;
    use inversed_mixup::method::augment::Source;

    fn labelled(y: &[usize]) -> Labelled {
        let rows = y
            .iter()
            .enumerate()
            .map(|(i, &c)| Row {
                text: format!("s{i}"),
                label: Some(["neg", "pos"][c].into()),
                file: "t.tsv".into(),
                line: i + 2,
            })
            .collect();
        Labelled {
            rows,
            y: y.to_vec(),
            labels: vec!["neg".into(), "pos".into()],
        }
    }

    /// Separable embeddings (class = sign of the first coordinate): the judge learns them, and a
    /// row's clear label is the class its mix label weights most; a 50/50 label has none.
    #[test]
    fn judge_learns_separable_classes_and_reads_the_leading_label() {
        let d = Device::Cpu;
        let ys = [0, 1, 0, 1, 0, 1, 0, 1];
        let h: Vec<f32> = ys
            .iter()
            .enumerate()
            .flat_map(|(i, &c)| [if c == 1 { 1.0 } else { -1.0 }, 0.1 * i as f32])
            .collect();
        let h = Tensor::from_vec(h, (ys.len(), 2), &d).unwrap();
        let data = labelled(&ys);
        let j = Judge::train(&data, &h, &data, &h).unwrap();
        assert_eq!(j.test_accuracy, 1.0);
        let src = |label: &str| Source {
            text: "s".into(),
            label: label.into(),
            index: 0,
        };
        let row = |pos: f64| AugRow {
            text: "x".into(),
            lambda: pos,
            source_a: src("pos"),
            source_b: src("neg"),
            soft_label: Default::default(),
            mix_label: [("neg".to_string(), 1.0 - pos), ("pos".to_string(), pos)]
                .into_iter()
                .collect(),
            predicted: Default::default(),
            intrusion: false,
            intrusion_reason: String::new(),
            cos_a: 0.0,
            cos_b: 0.0,
            cos_target: 0.0,
            content_lambda: pos,
        };
        assert_eq!(j.clear_label(&row(0.7)), Some(1));
        assert_eq!(j.clear_label(&row(0.2)), Some(0));
        assert_eq!(j.clear_label(&row(0.5)), None);
    }
}
