//! The task model's head: a linear classifier over sentence embeddings, trained with (soft-label)
//! cross-entropy.

use crate::data::checkpoint;
use crate::nets::optim::{AdamW, AdamWConfig};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use std::collections::HashMap;
use std::path::Path;

/// Linear layer from embedding to class logits, with the class names it predicts.
pub struct Classifier {
    /// Class names, index = class id.
    pub labels: Vec<String>,
    w: Var,
    b: Var,
}

impl Classifier {
    /// Zero-initialised head (deterministic; the convex problem does not need random init).
    pub fn new(labels: Vec<String>, dim: usize, device: &Device) -> Result<Self> {
        let c = labels.len();
        Ok(Self {
            labels,
            w: Var::zeros((c, dim), DType::F32, device)?,
            b: Var::zeros(c, DType::F32, device)?,
        })
    }

    /// Trainable variables (name, var).
    pub fn vars(&self) -> Vec<(String, Var)> {
        vec![
            ("cls.b".into(), self.b.clone()),
            ("cls.w".into(), self.w.clone()),
        ]
    }

    /// Logits `(n, classes)` for embeddings `(n, dim)`.
    pub fn logits(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        h.matmul(&self.w.as_tensor().t()?)?
            .broadcast_add(self.b.as_tensor())
    }

    /// Class probabilities as rows of f64.
    pub fn probs(&self, h: &Tensor) -> Result<Vec<Vec<f64>>> {
        let p = candle_nn::ops::softmax(&self.logits(h)?, D::Minus1)?.to_vec2::<f32>()?;
        Ok(p.into_iter()
            .map(|r| r.into_iter().map(f64::from).collect())
            .collect())
    }

    /// Mean soft-label cross-entropy `-sum_c y_c log p_c` against targets `(n, classes)`.
    pub fn loss(&self, h: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
        let logp = candle_nn::ops::log_softmax(&self.logits(h)?, D::Minus1)?;
        (logp * targets)?.sum(D::Minus1)?.neg()?.mean_all()
    }

    /// Full-batch training on fixed embeddings for `steps` AdamW steps; returns the final loss.
    pub fn fit(&self, h: &Tensor, targets: &[Vec<f64>], steps: usize, lr: f64) -> Result<f64> {
        let t = targets_tensor(targets, h.device())?;
        let mut opt = AdamW::new(
            self.vars(),
            AdamWConfig {
                weight_decay: 1e-4,
                ..Default::default()
            },
        )?;
        let mut last = f64::NAN;
        for _ in 0..steps {
            let l = self.loss(h, &t)?;
            last = l.to_scalar::<f32>()? as f64;
            opt.step(&l.backward()?, lr, 0.0)?;
        }
        Ok(last)
    }

    /// Saves weights and labels atomically.
    pub fn save(&self, path: &Path, extra: serde_json::Value) -> Result<()> {
        let t = HashMap::from([
            ("w".to_string(), self.w.as_tensor().clone()),
            ("b".to_string(), self.b.as_tensor().clone()),
        ]);
        checkpoint::save(
            path,
            &t,
            &serde_json::json!({ "kind": "classifier", "labels": self.labels, "extra": extra }),
        )
    }

    /// Loads a classifier written by [`Classifier::save`]; returns it with its `extra` metadata.
    pub fn load(path: &Path, device: &Device) -> Result<(Self, serde_json::Value)> {
        let (t, meta) = checkpoint::load(path, device)?;
        if meta["kind"] != "classifier" {
            return Err(Error::checkpoint(path, "not a classifier file"));
        }
        let labels: Vec<String> = serde_json::from_value(meta["labels"].clone())
            .map_err(|e| Error::checkpoint(path, e.to_string()))?;
        let get = |n: &str| {
            t.get(n)
                .cloned()
                .ok_or_else(|| Error::checkpoint(path, format!("missing tensor {n}")))
        };
        let (w, b) = (get("w")?, get("b")?);
        if w.dims() != [labels.len(), w.dim(1)?] || b.dims() != [labels.len()] {
            return Err(Error::checkpoint(
                path,
                "tensor shapes do not match the label list",
            ));
        }
        Ok((
            Self {
                labels,
                w: Var::from_tensor(&w)?,
                b: Var::from_tensor(&b)?,
            },
            meta["extra"].clone(),
        ))
    }

    /// Id of a label name.
    pub fn label_id(&self, name: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == name)
    }
}

/// Rows of soft targets as an `(n, classes)` tensor.
pub fn targets_tensor(t: &[Vec<f64>], device: &Device) -> Result<Tensor> {
    let c = t.first().map(|r| r.len()).unwrap_or(0);
    let flat: Vec<f32> = t.iter().flat_map(|r| r.iter().map(|&v| v as f32)).collect();
    Ok(Tensor::from_vec(flat, (t.len(), c), device)?)
}

/// One-hot rows.
pub fn one_hot(ids: &[usize], classes: usize) -> Vec<Vec<f64>> {
    ids.iter()
        .map(|&i| {
            (0..classes)
                .map(|c| if c == i { 1.0 } else { 0.0 })
                .collect()
        })
        .collect()
}
