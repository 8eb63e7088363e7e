//! A frozen `(rows, width)` table used as a lookup table and as an output layer (tied word
//! embeddings): dense f32, or GGML blocks dequantised a few rows at a time on use.

use crate::block_rows::BlockRows;
use crate::frozen_linear::FrozenLinear;
use crate::low_rank::LowRank;
use crate::storage::contiguous;
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Vocabulary rows per task of the quantised output layer's larger products.
const CHUNK: usize = 512;

/// A frozen table: its rows are looked up, and it is the weight `W` of `x @ Wᵀ`.
#[derive(Clone, Debug)]
pub enum FrozenRows {
    /// An f32 (or f64) tensor.
    Dense(FrozenLinear),
    /// Quantised blocks; every use sees exactly the values their f32 dequantisation holds.
    Blocks(Arc<BlockRows>),
}

impl From<&FrozenLinear> for FrozenRows {
    fn from(w: &FrozenLinear) -> Self {
        Self::Dense(w.clone())
    }
}

impl From<&FrozenRows> for FrozenRows {
    fn from(w: &FrozenRows) -> Self {
        w.clone()
    }
}

impl FrozenRows {
    /// `(rows, width)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Self::Dense(w) => w.weight().dims2().unwrap_or((0, 0)),
            Self::Blocks(b) => b.dims(),
        }
    }

    /// The dense weight, when the table is dense.
    pub fn dense(&self) -> Option<&Tensor> {
        match self {
            Self::Dense(w) => Some(w.weight()),
            Self::Blocks(_) => None,
        }
    }

    /// Rows `ids` as an `(ids.len(), width)` constant.
    pub fn lookup(&self, ids: &[u32], device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Self::Dense(w) => w.weight().index_select(&Tensor::new(ids, device)?, 0),
            Self::Blocks(b) => {
                if let Some(&bad) = ids.iter().find(|&&i| i as usize >= b.dims().0) {
                    candle_core::bail!("lookup: row {bad} of a table of {}", b.dims().0);
                }
                Tensor::from_vec(b.gather(ids), (ids.len(), b.dims().1), device)
            }
        }
    }

    /// `x @ Wᵀ` for `x (..., width)`, differentiable in `x` (the table is frozen).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Dense(w) => w.forward(x),
            Self::Blocks(b) => blocks_forward(b, None, x),
        }
    }
}

/// Most rows of `x` for the row-streaming product when a delta joins it inside its tasks; more
/// go through gemm and the delta's own products. Guided decoding's steps (16 sentences × 8 beams)
/// took 4-7 % less time with 128 here than with [`crate::matvec::MAX_ROWS`], and decoded the
/// same text.
pub(crate) const DELTA_MAX_ROWS: usize = 128;

/// `x @ Wᵀ` over blocks, plus `delta(x)` when given, differentiable in `x`.
pub(crate) fn blocks_forward(
    w: &Arc<BlockRows>,
    delta: Option<&Arc<LowRank>>,
    x: &Tensor,
) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op1(BlocksMatmul(w.clone(), delta.cloned()))
}

/// `x @ Wᵀ` over blocks, with the same products as [`FrozenLinear`] on the dequantised weight:
/// the row-streaming kernel for a few rows, gemm over column blocks of more than 64 otherwise.
/// A low-rank delta is added inside the row-streaming kernel's tasks (a pass of its own cost
/// 30-100 % of the product in fork-joins and copies), or after gemm.
struct BlocksMatmul(Arc<BlockRows>, Option<Arc<LowRank>>);

impl CustomOp1 for BlocksMatmul {
    fn name(&self) -> &'static str {
        "frozen-rows"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(xs) = s else {
            candle_core::bail!("frozen-rows: f32 input required")
        };
        let xs = contiguous(xs, l, "frozen-rows")?;
        let (out, k) = self.0.dims();
        let dims = l.shape().dims();
        if dims.last() != Some(&k) {
            candle_core::bail!("frozen-rows: input {dims:?} but the table is ({out}, {k})");
        }
        let m = xs.len() / k;
        let mut od = dims.to_vec();
        *od.last_mut().expect("rank >= 1") = out;
        let y = match &self.1 {
            None if m <= crate::matvec::MAX_ROWS => {
                crate::matvec::matmul_wt_blocks(xs, m, k, &self.0)
            }
            Some(d) if m <= DELTA_MAX_ROWS => {
                let u = d.project_t(xs, m);
                let add = |o0: usize, n: usize, yt: &mut [f32]| d.add_rows(&u, m, o0, n, yt);
                crate::matvec::matmul_wt_blocks_then(xs, m, k, &self.0, &add)
            }
            _ => {
                let mut y = self.gemm(xs, m);
                if let Some(d) = &self.1 {
                    d.add_to(xs, m, &mut y);
                }
                y
            }
        };
        Ok((CpuStorage::F32(y), Shape::from(od)))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // dL/dx = dL/dy @ W (+ the delta's input gradient), through the dequantised table (a
        // training path, rarely taken).
        let w = Tensor::from_vec(self.0.to_dense(), self.0.dims(), g.device())?;
        let base = crate::frozen_linear::matmul_w(g, &w)?;
        let Some(d) = &self.1 else {
            return Ok(Some(base));
        };
        let gv: Vec<f32> = g.flatten_all()?.to_vec1()?;
        let m = gv.len() / self.0.dims().0.max(1);
        let extra = Tensor::from_vec(d.input_grad(&gv, m), base.shape(), g.device())?;
        Ok(Some((base + extra)?))
    }
}

impl BlocksMatmul {
    /// `x @ Wᵀ` by gemm over column blocks, each dequantised on the task that uses it.
    fn gemm(&self, xs: &[f32], m: usize) -> Vec<f32> {
        let (out, k) = self.0.dims();
        let mut y = vec![0f32; m * out];
        // Blocks of CHUNK columns, the last one absorbing a remainder of 64 or fewer: gemm sums
        // a block that narrow in other k blocks (matmul.rs), the dense product never does.
        let mut bounds: Vec<usize> = (0..out).step_by(CHUNK).chain([out]).collect();
        if bounds.len() > 2 && out - bounds[bounds.len() - 2] <= 64 {
            bounds.remove(bounds.len() - 2);
        }
        let cols = crate::matmul::ColumnsOut::new(&mut y, m, out);
        bounds.par_windows(2).for_each(|w| {
            let (j0, j1) = (w[0], w[1]);
            self.0.with_rows(j0, j1 - j0, |wc| {
                // SAFETY: the windows of `bounds` are disjoint column ranges.
                unsafe { cols.matmul_wt(j0, xs, wc, k, j1 - j0) }
            });
        });
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_rows::random_blocks;
    use candle_core::quantized::GgmlDType;

    /// A random Q8_0 table as blocks and as its dequantised dense twin.
    fn tables(rows: usize, cols: usize) -> (FrozenRows, FrozenRows) {
        let (b, dense) = random_blocks(rows, cols, GgmlDType::Q8_0);
        let t = Tensor::from_vec(dense, (rows, cols), &Device::Cpu).unwrap();
        (
            FrozenRows::Dense(FrozenLinear::new(t)),
            FrozenRows::Blocks(Arc::new(b)),
        )
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Lookups, products of every size and the product's gradient equal the dense table's bits.
    #[test]
    fn blocks_give_the_dense_tables_bits() {
        let dev = Device::Cpu;
        for out in [70, 1050, 1090] {
            // 576 wide, as SmolLM2: gemm sums it in two k blocks, and differently for narrow ones.
            let (dense, blocks) = tables(out, 576);
            let ids = [3u32, 0, 69, 3];
            assert_eq!(
                bits(&dense.lookup(&ids, &dev).unwrap()),
                bits(&blocks.lookup(&ids, &dev).unwrap())
            );
            for m in [1, 5, 32, 33, 100] {
                let x = candle_core::Var::randn(0f32, 1.0, (m, 576), &dev).unwrap();
                let (a, b) = (dense.forward(&x).unwrap(), blocks.forward(&x).unwrap());
                assert_eq!(bits(&a), bits(&b), "out {out}, m {m}");
                let ga = (a.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
                let gb = (b.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
                assert_eq!(bits(ga.get(&x).unwrap()), bits(gb.get(&x).unwrap()));
            }
            assert!(blocks.lookup(&[out as u32], &dev).is_err());
        }
    }

    /// The streamed output loss and its gradient equal the dense table's bits.
    #[test]
    fn the_output_loss_over_blocks_gives_the_dense_tables_bits() {
        use crate::loss::output_cross_entropy_chunked as loss;
        let (dense, blocks) = tables(1050, 64);
        let h = candle_core::Var::randn(0f32, 1.0, (9, 64), &Device::Cpu).unwrap();
        let labels = [0, 1049, 511, 512, 3, 700, 1024, 9, 9];
        for chunk in [16, 512] {
            let (a, b) = (
                loss(&h, &dense, &labels, chunk).unwrap(),
                loss(&h, &blocks, &labels, chunk).unwrap(),
            );
            assert_eq!(bits(&a), bits(&b), "chunk {chunk}");
            let (ga, gb) = (a.backward().unwrap(), b.backward().unwrap());
            assert_eq!(
                bits(ga.get(&h).unwrap()),
                bits(gb.get(&h).unwrap()),
                "chunk {chunk}"
            );
        }
    }
}
