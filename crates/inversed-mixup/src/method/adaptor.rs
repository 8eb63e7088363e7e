//! The adaptor A: an MLP from the encoder's embedding to k soft tokens in the LLM's input space.

use crate::data::checkpoint;
use crate::method::deep_soft::{DeepConfig, DeepSoft};
use crate::nets::llm::{LlmConfig, Lora, LoraConfig};
use crate::{Error, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Default prompt; `<soft>` marks where the k soft tokens go.
pub const DEFAULT_TEMPLATE: &str = "Given the embedding <soft>, generate the original sentence:";

/// Everything that defines an adaptor and the models it belongs to (stored in its file header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptorConfig {
    /// Encoder identifier (directory name).
    pub encoder: String,
    /// Encoder embedding dimension.
    pub enc_dim: usize,
    /// LLM identifier (file or directory name).
    pub llm: String,
    /// LLM input width.
    pub llm_dim: usize,
    /// Number of soft tokens.
    pub k: usize,
    /// MLP hidden width.
    pub hidden: usize,
    /// Prompt template containing `<soft>` once.
    pub template: String,
    /// LoRA deltas on the LLM's projections, trained with the adaptor (absent: the LLM is used as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
    /// Deep soft tokens: per-layer K/V deltas at the soft-token positions (absent: input soft tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deep: Option<DeepConfig>,
}

/// The trainable adaptor. Its weights are `Var`s in its own `VarMap`, plus the LoRA deltas it
/// carries for the LLM and its deep soft tokens' projections when configured; nothing else is
/// trainable.
pub struct Adaptor {
    cfg: AdaptorConfig,
    l1: Linear,
    l2: Linear,
    varmap: VarMap,
    lora: Option<Lora>,
    deep: Option<DeepSoft>,
    /// Rounds of mix alignment it has been trained with (recorded in its file header).
    mix_rounds: usize,
}

impl Adaptor {
    /// A freshly initialised adaptor; `seed` makes the initialisation reproducible.
    pub fn new(cfg: AdaptorConfig, seed: u64, device: &Device) -> Result<Self> {
        if cfg.template.matches("<soft>").count() != 1 {
            return Err(Error::Config(format!(
                "template must contain <soft> exactly once: {:?}",
                cfg.template
            )));
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let l1 = candle_nn::linear(cfg.enc_dim, cfg.hidden, vb.pp("l1"))?;
        let l2 = candle_nn::linear(cfg.hidden, cfg.k * cfg.llm_dim, vb.pp("l2"))?;
        let lora = cfg
            .lora
            .clone()
            .map(|c| Lora::new(c, seed, device))
            .transpose()?;
        let deep = cfg
            .deep
            .clone()
            .map(|c| DeepSoft::new(c, seed, device))
            .transpose()?;
        if let Some(d) = &cfg.deep {
            if d.hidden != cfg.llm_dim {
                return Err(Error::Config(format!(
                    "deep soft tokens of width {} for soft tokens of width {}",
                    d.hidden, cfg.llm_dim
                )));
            }
        }
        let a = Self {
            cfg,
            l1,
            l2,
            varmap,
            lora,
            deep,
            mix_rounds: 0,
        };
        a.reinit(seed)?;
        Ok(a)
    }

    /// Re-draws weights from a seeded uniform(+-1/sqrt(fan_in)) (candle's own init is not seedable).
    fn reinit(&self, seed: u64) -> Result<()> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for (name, var) in self.mlp_vars() {
            let dims = var.dims().to_vec();
            let fan_in = if name.ends_with("weight") {
                dims[1]
            } else {
                self.fan_in_of(&name)
            };
            let b = 1.0 / (fan_in as f32).sqrt();
            let n: usize = dims.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-b..b)).collect();
            var.set(&Tensor::from_vec(v, dims, var.device())?)?;
        }
        Ok(())
    }

    fn fan_in_of(&self, name: &str) -> usize {
        if name.starts_with("l1") {
            self.cfg.enc_dim
        } else {
            self.cfg.hidden
        }
    }

    /// The MLP's variables, sorted by name.
    fn mlp_vars(&self) -> Vec<(String, candle_core::Var)> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The trainable variables (MLP, LoRA deltas, deep soft tokens), sorted by name: a stable
    /// order for optimisers and checkpoints.
    pub fn sorted_vars(&self) -> Vec<(String, candle_core::Var)> {
        let mut v = self.mlp_vars();
        if let Some(l) = &self.lora {
            v.extend(l.named_vars());
        }
        if let Some(d) = &self.deep {
            v.extend(d.named_vars());
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The LoRA deltas it carries for the LLM, if any.
    pub fn lora(&self) -> Option<&Lora> {
        self.lora.as_ref()
    }

    /// Its deep soft tokens' projections, if any.
    pub fn deep(&self) -> Option<&DeepSoft> {
        self.deep.as_ref()
    }

    /// Its configuration.
    pub fn config(&self) -> &AdaptorConfig {
        &self.cfg
    }

    /// Maps embeddings `(n, enc_dim)` to soft tokens `(n, k, llm_dim)`.
    pub fn forward(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        let n = h.dim(0)?;
        let y = self
            .l2
            .forward(&imix_kernels::activation::gelu(&self.l1.forward(h)?)?)?;
        y.reshape((n, self.cfg.k, self.cfg.llm_dim))
    }

    /// Rounds of mix alignment it has been trained with.
    pub fn mix_rounds(&self) -> usize {
        self.mix_rounds
    }

    /// Records the rounds of mix alignment it has been trained with.
    pub fn set_mix_rounds(&mut self, rounds: usize) {
        self.mix_rounds = rounds;
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.sorted_vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Saves weights (f16 when `half`, to keep shipped files small) and the config header.
    pub fn save(&self, path: &Path, half: bool) -> Result<()> {
        let dt = if half { DType::F16 } else { DType::F32 };
        let mut t = HashMap::new();
        for (n, v) in self.sorted_vars() {
            t.insert(n, v.as_tensor().to_dtype(dt)?);
        }
        let mut meta = serde_json::json!({ "kind": "adaptor", "adaptor": self.cfg });
        // Absent until mix alignment has run, so adaptors from stages 1 and 2 keep their header.
        if self.mix_rounds > 0 {
            meta["mix_rounds"] = self.mix_rounds.into();
        }
        checkpoint::save(path, &t, &meta)
    }

    /// Loads an adaptor file written by [`Adaptor::save`].
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let (t, meta) = checkpoint::load(path, device)?;
        // A training checkpoint holds an adaptor's weights under other names (with optimiser
        // moments): say what it is instead of a missing tensor.
        if let Some(kind) = meta["kind"].as_str().filter(|k| *k != "adaptor") {
            return Err(Error::checkpoint(
                path,
                format!(
                    "this file is a training checkpoint ({kind}), not an adaptor: pass the \
                     adaptor the run wrote (a checkpoint only continues its run, with --resume)"
                ),
            ));
        }
        let cfg: AdaptorConfig = serde_json::from_value(meta["adaptor"].clone()).map_err(|e| {
            Error::checkpoint(path, format!("metadata is not an adaptor header: {e}"))
        })?;
        for (n, v) in &t {
            let finite = v
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .all(|x| x.is_finite());
            if !finite {
                return Err(Error::checkpoint(path, format!("tensor {n} holds NaN or infinite values: the file is damaged or came from a diverged run")));
            }
        }
        let mut a = Self::new(cfg, 0, device)?;
        a.set_weights(&t)
            .map_err(|e| Error::checkpoint(path, e.to_string()))?;
        a.mix_rounds = match &meta["mix_rounds"] {
            serde_json::Value::Null => 0,
            v => v
                .as_u64()
                .ok_or_else(|| Error::checkpoint(path, format!("mix_rounds {v} is not a count")))?
                as usize,
        };
        Ok(a)
    }

    /// Copies weights in from a name -> tensor map, checking names and shapes.
    pub fn set_weights(&self, t: &HashMap<String, Tensor>) -> Result<()> {
        for (n, v) in self.sorted_vars() {
            let src = t
                .get(&n)
                .ok_or_else(|| Error::Config(format!("missing tensor {n}")))?;
            if src.dims() != v.dims() {
                return Err(Error::Config(format!(
                    "tensor {n} has shape {:?}, expected {:?}",
                    src.dims(),
                    v.dims()
                )));
            }
            v.set(&src.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }

    /// Copies in the tensors `t` has (checking shapes) and leaves the others as they are: an
    /// adaptor without LoRA deltas or deep soft tokens starting a run with them.
    pub fn set_weights_present(&self, t: &HashMap<String, Tensor>) -> Result<()> {
        let have: HashMap<String, Tensor> = self
            .sorted_vars()
            .into_iter()
            .filter_map(|(n, _)| t.get(&n).map(|v| (n, v.clone())))
            .collect();
        let missing: Vec<String> = self
            .mlp_vars()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| !have.contains_key(n))
            .collect();
        if !missing.is_empty() {
            return Err(Error::Config(format!(
                "missing tensors {}",
                missing.join(", ")
            )));
        }
        for (n, v) in self.sorted_vars() {
            if let Some(src) = have.get(&n) {
                if src.dims() != v.dims() {
                    return Err(Error::Config(format!(
                        "tensor {n} has shape {:?}, expected {:?}",
                        src.dims(),
                        v.dims()
                    )));
                }
                v.set(&src.to_dtype(DType::F32)?)?;
            }
        }
        Ok(())
    }

    /// Refuses to run with models other than the ones this adaptor (and its LoRA deltas) was trained for.
    pub fn check_models(
        &self,
        path: &Path,
        encoder: &str,
        enc_dim: usize,
        llm: &str,
        llm_cfg: &LlmConfig,
    ) -> Result<()> {
        let c = &self.cfg;
        let llm_dim = llm_cfg.hidden;
        if c.enc_dim != enc_dim || c.encoder != encoder {
            return Err(Error::checkpoint(
                path,
                format!(
                    "adaptor was trained for encoder {:?} (dim {}), but the encoder in use is {:?} (dim {}); pass the matching `encoder` or retrain with `imix align`",
                    c.encoder, c.enc_dim, encoder, enc_dim
                ),
            ));
        }
        if c.llm_dim != llm_dim || c.llm != llm {
            return Err(Error::checkpoint(
                path,
                format!("adaptor was trained for LLM {:?} (width {}), but the LLM in use is {:?} (width {}); pass the matching `llm` or retrain with `imix align`", c.llm, c.llm_dim, llm, llm_dim),
            ));
        }
        if let Some(l) = &self.lora {
            l.check(llm_cfg)
                .map_err(|e| Error::checkpoint(path, e.to_string()))?;
        }
        if let Some(d) = &self.deep {
            d.check(llm_cfg)
                .map_err(|e| Error::checkpoint(path, e.to_string()))?;
        }
        Ok(())
    }
}
