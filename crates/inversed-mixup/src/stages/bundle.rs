//! The warm-up bundle: what stage 2 hands to stage 3. A directory with the task classifier, the
//! refined adaptor and, when stage 2 fine-tuned the encoder, the encoder's weights, so that stage 3
//! mixes, inverts and judges in the task-specific embedding space.

use crate::method::adaptor::Adaptor;
use crate::method::classifier::Classifier;
use crate::nets::encoder::Encoder;
use crate::stages::warmup::{save_encoder, Warmup};
use crate::{Error, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};

/// File names inside a bundle directory.
const CLASSIFIER: &str = "classifier.safetensors";
const ADAPTOR: &str = "adaptor.safetensors";
const ENCODER: &str = "encoder.safetensors";
/// The warm-up checkpoint and learning curve kept beside the bundle.
const CHECKPOINT: &str = "warmup.ckpt";
const CURVE: &str = "warmup.curve.jsonl";

/// Where each part of a bundle lives.
#[derive(Debug, Clone)]
pub struct BundlePaths {
    /// The bundle directory.
    pub dir: PathBuf,
}

impl BundlePaths {
    /// The parts of the bundle in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }
    /// The task classifier.
    pub fn classifier(&self) -> PathBuf {
        self.dir.join(CLASSIFIER)
    }
    /// The refined adaptor.
    pub fn adaptor(&self) -> PathBuf {
        self.dir.join(ADAPTOR)
    }
    /// The fine-tuned encoder (present only when stage 2 fine-tuned it).
    pub fn encoder(&self) -> PathBuf {
        self.dir.join(ENCODER)
    }
    /// The stage-2 checkpoint (for `--resume`).
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join(CHECKPOINT)
    }
    /// The stage-2 learning curve.
    pub fn curve(&self) -> PathBuf {
        self.dir.join(CURVE)
    }
}

/// A loaded bundle: the models stage 3 works with.
pub struct Bundle {
    /// The warmed-up task classifier (its labels are the task's label set).
    pub classifier: Classifier,
    /// The refined adaptor, checked against the encoder and LLM.
    pub adaptor: Adaptor,
    /// The encoder to embed with: the fine-tuned one when the bundle has it, else the base encoder.
    pub encoder: Encoder,
}

/// Writes the outcome of a warm-up (classifier with `meta` in its header, adaptor, fine-tuned
/// encoder if any) into the bundle directory, each file atomically.
pub fn save(paths: &BundlePaths, w: &Warmup, meta: serde_json::Value) -> Result<()> {
    std::fs::create_dir_all(&paths.dir).map_err(|e| Error::io(&paths.dir, e))?;
    w.classifier.save(&paths.classifier(), meta)?;
    w.adaptor.save(&paths.adaptor(), false)?;
    if let Some(f) = &w.finetune {
        save_encoder(f, &paths.encoder())?;
    }
    Ok(())
}

/// Reads only the classifier of a bundle (its label set decides how the data is read).
pub fn load_classifier(paths: &BundlePaths, device: &Device) -> Result<Classifier> {
    let p = paths.classifier();
    if !p.exists() {
        return Err(Error::model(
            &paths.dir,
            format!("no {CLASSIFIER}: not a bundle written by `imix warmup`"),
        ));
    }
    Ok(Classifier::load(&p, device)?.0)
}
