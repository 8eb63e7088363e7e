//! A frozen projection of a transformer block: `x @ Wᵀ` over a dense or quantised weight, plus an
//! optional constant low-rank delta, with the dense weight made once on demand for training.

use crate::frozen_linear::FrozenLinear;
use crate::frozen_rows::FrozenRows;
use crate::low_rank::LowRank;
use candle_core::{Device, Tensor};
use std::sync::{Arc, OnceLock};

/// A frozen `(out, in)` projection. Clones share the weight, the delta and the dense copy.
#[derive(Clone, Debug)]
pub struct FrozenProjection {
    rows: FrozenRows,
    delta: Option<Arc<LowRank>>,
    /// The dequantised weight of a quantised one, made by the first training product: the
    /// training path's products run on dense f32 (packing blocks into gemm each step would
    /// dequantise the whole model twice per step).
    dense: Arc<OnceLock<FrozenLinear>>,
}

impl From<FrozenRows> for FrozenProjection {
    fn from(rows: FrozenRows) -> Self {
        Self {
            rows,
            delta: None,
            dense: Arc::default(),
        }
    }
}

impl FrozenProjection {
    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        self.rows.dims()
    }

    /// The weight as stored.
    pub fn rows(&self) -> &FrozenRows {
        &self.rows
    }

    /// Whether a low-rank delta is attached.
    pub fn has_delta(&self) -> bool {
        self.delta.is_some()
    }

    /// This projection with `delta` attached (replacing any attached before).
    pub fn with_delta(&self, delta: LowRank) -> candle_core::Result<Self> {
        if delta.dims() != self.dims() {
            candle_core::bail!(
                "low-rank delta {:?} does not fit a projection {:?}",
                delta.dims(),
                self.dims()
            );
        }
        Ok(Self {
            delta: Some(Arc::new(delta)),
            ..self.clone()
        })
    }

    /// `x @ Wᵀ` (plus the delta), differentiable in `x`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match (&self.rows, &self.delta) {
            (_, None) => self.rows.forward(x),
            (FrozenRows::Blocks(b), Some(d)) => crate::frozen_rows::blocks_forward(b, Some(d), x),
            (FrozenRows::Dense(_), Some(d)) => d.add(&self.rows.forward(x)?, x),
        }
    }

    /// The weight as one dense f32 layer (without the delta): the weight itself when dense,
    /// else its dequantisation, made once and kept.
    pub fn dense(&self, device: &Device) -> candle_core::Result<&FrozenLinear> {
        match &self.rows {
            FrozenRows::Dense(w) => Ok(w),
            FrozenRows::Blocks(b) => {
                if let Some(w) = self.dense.get() {
                    return Ok(w);
                }
                let w = Tensor::from_vec(b.to_dense(), b.dims(), device)?;
                Ok(self.dense.get_or_init(|| FrozenLinear::new(w)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_rows::random_blocks;
    use candle_core::quantized::GgmlDType;

    /// The dense copy holds the blocks' values, is made once, and is shared by clones.
    #[test]
    fn the_dense_copy_is_the_dequantised_weight_made_once() {
        let dev = Device::Cpu;
        let (b, dense) = random_blocks(8, 64, GgmlDType::Q4_1);
        let p = FrozenProjection::from(FrozenRows::Blocks(Arc::new(b)));
        let q = p.clone();
        let w: Vec<f32> = p
            .dense(&dev)
            .unwrap()
            .weight()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(
            w.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            dense.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert!(std::ptr::eq(p.dense(&dev).unwrap(), q.dense(&dev).unwrap()));
        let bad = LowRank::new(vec![0.0; 64], (1, 64, 9), vec![], 1.0).unwrap();
        assert!(p.with_delta(bad).is_err());
    }
}

#[cfg(test)]
mod delta_tests {
    use super::*;
    use crate::block_rows::random_blocks;
    use candle_core::quantized::GgmlDType;
    use candle_core::Var;

    /// Blocks plus a delta, on both paths (inside the row-streaming tasks up to
    /// `DELTA_MAX_ROWS` rows, after gemm above), equal the dense product with `W + scale · B A`, and so do their input gradients.
    #[test]
    fn a_delta_on_blocks_equals_the_merged_dense_weight() {
        let dev = Device::Cpu;
        let (lr, dw) = crate::low_rank::tests::sample(64, 0.7);
        let (b, dense) = random_blocks(12, 64, GgmlDType::Q4_1);
        let w = Tensor::from_vec(dense, (12, 64), &dev).unwrap();
        let merged = (w + dw).unwrap();
        let p = FrozenProjection::from(FrozenRows::Blocks(Arc::new(b)))
            .with_delta(lr)
            .unwrap();
        for m in [1, 3, 33, crate::frozen_rows::DELTA_MAX_ROWS + 1] {
            let x = Var::randn(0f32, 1.0, (m, 64), &dev).unwrap();
            let got = p.forward(&x).unwrap();
            let want = x.matmul(&merged.t().unwrap()).unwrap();
            crate::low_rank::tests::close(&got, &want, &format!("m {m}"));
            let r = Tensor::randn(0f32, 1.0, (m, 12), &dev).unwrap();
            let gg = (&got * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gw = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let (a, b) = (gg.get(&x).unwrap(), gw.get(&x).unwrap());
            crate::low_rank::tests::close(a, b, &format!("m {m} gradient"));
        }
    }
}
