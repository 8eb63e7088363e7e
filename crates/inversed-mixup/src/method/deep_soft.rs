//! The adaptor's deep soft tokens (P-Tuning v2 style): from the soft tokens it emits, a low-rank
//! projection per layer gives the K/V deltas of those positions in every layer of the LLM
//! (`nets::llm::deep`). The up-projection starts at zero, so an adaptor that gains them starts as
//! exactly the adaptor it was.

use crate::nets::llm::{KvDelta, LlmConfig};
use crate::{Error, Result};
use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

/// Rank and the LLM shape the deltas belong to (stored in the adaptor header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeepConfig {
    /// Width of the shared down-projection of each soft token.
    pub rank: usize,
    /// Multiplies the deltas. Under Adam this multiplies their learning rate: prefixes train at
    /// ~1e-2 (P-Tuning v2), an order of magnitude above LoRA, with which they share the optimiser.
    pub scale: f64,
    /// LLM layers.
    pub layers: usize,
    /// LLM width (the soft tokens' width).
    pub hidden: usize,
    /// Width of one layer's stacked keys and values (2 · kv_heads · head_dim).
    pub kv_width: usize,
}

impl DeepConfig {
    /// Deep soft tokens of rank `rank` and delta scale `scale` for an LLM of shape `llm`.
    pub fn for_llm(rank: usize, scale: f64, llm: &LlmConfig) -> Result<Self> {
        if rank == 0 {
            return Err(Error::Config(
                "deep soft tokens: rank must be at least 1".into(),
            ));
        }
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::Config(format!(
                "deep soft tokens: scale must be positive, got {scale}"
            )));
        }
        Ok(Self {
            rank,
            scale,
            layers: llm.layers,
            hidden: llm.hidden,
            kv_width: 2 * llm.kv_heads * (llm.hidden / llm.heads),
        })
    }
}

/// The trainable projections: `down (rank, hidden)` and `up (rank, layers · kv_width)`.
pub struct DeepSoft {
    cfg: DeepConfig,
    down: Var,
    up: Var,
}

impl DeepSoft {
    /// Seeded uniform down-projection, zero up-projection (a no-op until trained).
    pub fn new(cfg: DeepConfig, seed: u64, device: &Device) -> Result<Self> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xdee9);
        let b = 1.0 / (cfg.hidden as f32).sqrt();
        let down: Vec<f32> = (0..cfg.rank * cfg.hidden)
            .map(|_| rng.random_range(-b..b))
            .collect();
        let down = Var::from_tensor(&Tensor::from_vec(down, (cfg.rank, cfg.hidden), device)?)?;
        let up = Var::zeros(
            (cfg.rank, cfg.layers * cfg.kv_width),
            candle_core::DType::F32,
            device,
        )?;
        Ok(Self { cfg, down, up })
    }

    /// Its variables with their file names.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        vec![
            ("deep.down".into(), self.down.clone()),
            ("deep.up".into(), self.up.clone()),
        ]
    }

    /// Its configuration.
    pub fn config(&self) -> &DeepConfig {
        &self.cfg
    }

    /// The K/V deltas of soft tokens `(n, k, hidden)` placed from position `start` of the LLM's input.
    pub fn deltas(&self, soft: &Tensor, start: usize) -> candle_core::Result<KvDelta> {
        let (n, k, h) = soft.dims3()?;
        let c = &self.cfg;
        let z = soft
            .reshape((n * k, h))?
            .matmul(&self.down.as_tensor().t()?)?;
        let all =
            (z.matmul(self.up.as_tensor())? * c.scale)?.reshape((n, k, c.layers, c.kv_width))?;
        let layers = (0..c.layers)
            .map(|l| all.narrow(2, l, 1)?.squeeze(2)?.contiguous())
            .collect::<candle_core::Result<_>>()?;
        Ok(KvDelta { start, layers })
    }

    /// Refuses an LLM whose shape differs from the one the deltas were trained for.
    pub fn check(&self, llm: &LlmConfig) -> Result<()> {
        let want = DeepConfig::for_llm(self.cfg.rank, self.cfg.scale, llm)?;
        if want != self.cfg {
            return Err(Error::Config(format!(
                "deep soft tokens were trained for an LLM of {} layers, width {} and K/V width {}, but the LLM in use has {}, {} and {}",
                self.cfg.layers, self.cfg.hidden, self.cfg.kv_width, want.layers, want.hidden, want.kv_width
            )));
        }
        Ok(())
    }
}
