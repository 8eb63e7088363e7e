//! Deep soft tokens: per-layer key/value deltas at the soft-token positions.
//!
//! Input soft tokens reach the LLM only through its first layer; every deeper layer sees them as
//! whatever the frozen layers below made of them. P-Tuning v2 gives each layer its own prefix
//! keys and values instead. Here each layer's keys and values at the soft-token positions get an
//! additive delta (emitted by the adaptor from the same embedding): as expressive as free per-layer
//! prefixes, yet an exact no-op at zero, so that training can start from an adaptor without them,
//! and the prompt's constant prefix before the soft tokens stays cacheable.

use candle_core::Tensor;

/// Additive deltas to the stacked K/V projections of `k` consecutive positions, one per layer.
#[derive(Debug, Clone)]
pub struct KvDelta {
    /// First position (row of the block input) that gets a delta.
    pub start: usize,
    /// Per layer `(b, k, 2·kv_heads·head_dim)`: the keys' delta, then the values' (before RoPE).
    pub layers: Vec<Tensor>,
}

impl KvDelta {
    /// Positions covered.
    pub fn len(&self) -> candle_core::Result<usize> {
        match self.layers.first() {
            Some(t) => t.dim(1),
            None => Ok(0),
        }
    }

    /// Whether it covers no position.
    pub fn is_empty(&self) -> candle_core::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Rows `idx` of every layer's delta (beam search repeats each sequence).
    pub fn select(&self, idx: &Tensor) -> candle_core::Result<KvDelta> {
        Ok(KvDelta {
            start: self.start,
            layers: self
                .layers
                .iter()
                .map(|t| t.index_select(idx, 0))
                .collect::<candle_core::Result<_>>()?,
        })
    }

    /// Checks it against an input of `b` rows and `t` positions, `layers` layers and K/V width `kv_width`.
    pub(super) fn check(
        &self,
        b: usize,
        t: usize,
        layers: usize,
        kv_width: usize,
    ) -> candle_core::Result<()> {
        if self.layers.len() != layers {
            candle_core::bail!(
                "deep soft tokens: {} layers of deltas for an LLM of {layers}",
                self.layers.len()
            );
        }
        for d in &self.layers {
            let (db, k, w) = d.dims3()?;
            if db != b || w != kv_width || self.start + k > t {
                candle_core::bail!("deep soft tokens: delta {:?} from position {} does not fit {b} rows of {t} positions with K/V width {kv_width}", d.dims(), self.start);
            }
        }
        Ok(())
    }

    /// Layer `i`'s delta as an addition to the stacked Q/K/V `(b, t, q_width + kv_width)`: zero
    /// outside its positions and on the queries.
    pub(super) fn padded(&self, i: usize, t: usize, q_width: usize) -> candle_core::Result<Tensor> {
        let d = &self.layers[i];
        let k = d.dim(1)?;
        d.pad_with_zeros(2, q_width, 0)?
            .pad_with_zeros(1, self.start, t - self.start - k)
    }

    /// The gradient of layer `i`'s delta from the stacked Q/K/V's gradient `(b, t, width)`.
    pub(super) fn grad_of(
        &self,
        i: usize,
        g_qkv: &Tensor,
        q_width: usize,
    ) -> candle_core::Result<Tensor> {
        let (_, k, w) = self.layers[i].dims3()?;
        g_qkv
            .narrow(1, self.start, k)?
            .narrow(2, q_width, w)?
            .contiguous()
    }
}
