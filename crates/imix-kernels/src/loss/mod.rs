//! Fused mean cross-entropy over a large vocabulary, with analytic backward.
//!
//! L_GEN's log-softmax over (target tokens × 49 152) logits was five full passes forward (max,
//! subtract, scalar `exp`, sum, subtract) plus the gather, and as many backward, single-threaded
//! for most of them. Here the forward is one parallel pass per row computing
//! `logsumexp(row) - row[label]`, and the backward one pass writing `(softmax(row) - onehot) / n`.

use crate::fastmath;
use crate::storage::contiguous;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Mean over rows of `-log softmax(row)[label]`.
struct CrossEntropy {
    labels: Vec<u32>,
}

/// `(max, log Σ exp(x - max))` of one row.
fn lse32(row: &[f32]) -> (f32, f32) {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e = fastmath::exp_vec(&row.iter().map(|v| v - m).collect::<Vec<f32>>());
    (m, e.iter().sum::<f32>().ln())
}

fn lse64(row: &[f64]) -> (f64, f64) {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (m, row.iter().map(|v| (v - m).exp()).sum::<f64>().ln())
}

/// One label per row, each inside the `v` classes.
fn check_labels(labels: &[u32], n: usize, v: usize) -> candle_core::Result<()> {
    if n != labels.len() {
        candle_core::bail!("cross-entropy: {n} rows but {} labels", labels.len());
    }
    if let Some(&bad) = labels.iter().find(|&&y| y as usize >= v) {
        candle_core::bail!("cross-entropy: label {bad} outside the {v} classes");
    }
    Ok(())
}

impl CrossEntropy {
    fn check(&self, l: &Layout) -> candle_core::Result<(usize, usize)> {
        let (n, v) = l.shape().dims2()?;
        check_labels(&self.labels, n, v)?;
        Ok((n, v))
    }
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, v) = self.check(l)?;
        let out = match s {
            CpuStorage::F32(x) => {
                let x = contiguous(x, l, "cross-entropy")?;
                let per: Vec<f64> = (0..n)
                    .into_par_iter()
                    .map(|i| {
                        let row = &x[i * v..(i + 1) * v];
                        let (m, lse) = lse32(row);
                        (m + lse - row[self.labels[i] as usize]) as f64
                    })
                    .collect();
                CpuStorage::F32(vec![(per.iter().sum::<f64>() / n as f64) as f32])
            }
            CpuStorage::F64(x) => {
                let x = contiguous(x, l, "cross-entropy")?;
                let per: f64 = (0..n)
                    .map(|i| {
                        let row = &x[i * v..(i + 1) * v];
                        let (m, lse) = lse64(row);
                        m + lse - row[self.labels[i] as usize]
                    })
                    .sum();
                CpuStorage::F64(vec![per / n as f64])
            }
            _ => candle_core::bail!("cross-entropy: f32 or f64 logits only"),
        };
        Ok((out, Shape::from(())))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (n, v) = x.dims2()?;
        let scale = g.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? / n as f64;
        let x = x.contiguous()?;
        let grad = match x.dtype() {
            candle_core::DType::F32 => {
                let xs = x.flatten_all()?.to_vec1::<f32>()?;
                let mut d = vec![0f32; n * v];
                d.par_chunks_mut(v).enumerate().for_each(|(i, dr)| {
                    let row = &xs[i * v..(i + 1) * v];
                    let (m, lse) = lse32(row);
                    let e =
                        fastmath::exp_vec(&row.iter().map(|r| r - m - lse).collect::<Vec<f32>>());
                    for (o, p) in dr.iter_mut().zip(e) {
                        *o = p * scale as f32;
                    }
                    dr[self.labels[i] as usize] -= scale as f32;
                });
                Tensor::from_vec(d, (n, v), x.device())?
            }
            _ => {
                let xs = x
                    .flatten_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_vec1::<f64>()?;
                let mut d = vec![0f64; n * v];
                for (i, dr) in d.chunks_mut(v).enumerate() {
                    let row = &xs[i * v..(i + 1) * v];
                    let (m, lse) = lse64(row);
                    for (o, r) in dr.iter_mut().zip(row) {
                        *o = (r - m - lse).exp() * scale;
                    }
                    dr[self.labels[i] as usize] -= scale;
                }
                Tensor::from_vec(d, (n, v), x.device())?.to_dtype(x.dtype())?
            }
        };
        Ok(Some(grad))
    }
}

/// Mean cross-entropy of `logits (n, classes)` against `labels` (n), fused, with a backward pass.
pub fn cross_entropy(logits: &Tensor, labels: &[u32]) -> candle_core::Result<Tensor> {
    logits.contiguous()?.apply_op1(CrossEntropy {
        labels: labels.to_vec(),
    })
}

mod output;
pub use output::{output_cross_entropy, output_cross_entropy_chunked, OUTPUT_CHUNK};
