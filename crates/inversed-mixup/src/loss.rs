//! Fused mean cross-entropy over a large vocabulary, with analytic backward.
//!
//! L_GEN's log-softmax over (target tokens × 49 152) logits was five full passes forward (max,
//! subtract, scalar `exp`, sum, subtract) plus the gather, and as many backward, single-threaded
//! for most of them. Here the forward is one parallel pass per row computing
//! `logsumexp(row) - row[label]`, and the backward one pass writing `(softmax(row) - onehot) / n`.

use crate::fastmath;
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

impl CrossEntropy {
    fn check(&self, l: &Layout) -> candle_core::Result<(usize, usize)> {
        let (n, v) = l.shape().dims2()?;
        if n != self.labels.len() {
            candle_core::bail!("cross-entropy: {n} rows but {} labels", self.labels.len());
        }
        if let Some(&bad) = self.labels.iter().find(|&&y| y as usize >= v) {
            candle_core::bail!("cross-entropy: label {bad} outside the {v} classes");
        }
        Ok((n, v))
    }
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, v) = self.check(l)?;
        let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("cross-entropy: contiguous logits required".into()))?;
        let out = match s {
            CpuStorage::F32(x) => {
                let x = &x[a..b];
                let per: Vec<f64> = (0..n).into_par_iter().map(|i| {
                    let row = &x[i * v..(i + 1) * v];
                    let (m, lse) = lse32(row);
                    (m + lse - row[self.labels[i] as usize]) as f64
                }).collect();
                CpuStorage::F32(vec![(per.iter().sum::<f64>() / n as f64) as f32])
            }
            CpuStorage::F64(x) => {
                let x = &x[a..b];
                let per: f64 = (0..n).map(|i| {
                    let row = &x[i * v..(i + 1) * v];
                    let (m, lse) = lse64(row);
                    m + lse - row[self.labels[i] as usize]
                }).sum();
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
                    let e = fastmath::exp_vec(&row.iter().map(|r| r - m - lse).collect::<Vec<f32>>());
                    for (o, p) in dr.iter_mut().zip(e) {
                        *o = p * scale as f32;
                    }
                    dr[self.labels[i] as usize] -= scale as f32;
                });
                Tensor::from_vec(d, (n, v), x.device())?
            }
            _ => {
                let xs = x.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
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
    logits.contiguous()?.apply_op1(CrossEntropy { labels: labels.to_vec() })
}

/// In place: each row of logits becomes `exp(row - max)`; returns Σ of the rows'
/// `-log softmax(row)[label]` and each row's `1 / Σ exp(row - max)`. Normalising and subtracting
/// the one-hot would be a third pass over the (rows × vocabulary) buffer; the backward applies
/// both to its (rows × hidden) product instead.
fn exp_rows32(d: &mut [f32], v: usize, labels: &[u32]) -> (f64, Vec<f32>) {
    let per: Vec<(f64, f32)> = d.par_chunks_mut(v).zip(labels).map(|(row, &y)| exp_row(row, y as usize)).collect();
    (per.iter().map(|p| p.0).sum(), per.iter().map(|p| p.1).collect())
}

/// One row of [`exp_rows32`], allocation-free: a max pass, then one pass that exponentiates in
/// place and sums (one `exp` per logit); the AVX2+FMA build is picked at run time.
fn exp_row(row: &mut [f32], y: usize) -> (f64, f32) {
    #[inline(always)]
    fn body(row: &mut [f32], y: usize) -> (f64, f32) {
        let xy = row[y];
        let mut mx = [f32::NEG_INFINITY; 8];
        let mut c = row.chunks_exact(8);
        for x in &mut c {
            for l in 0..8 {
                mx[l] = mx[l].max(x[l]);
            }
        }
        let m = c.remainder().iter().chain(&mx).copied().fold(f32::NEG_INFINITY, f32::max);
        let mut acc = [0f32; 8];
        let mut c = row.chunks_exact_mut(8);
        for x in &mut c {
            for l in 0..8 {
                x[l] = fastmath::exp(x[l] - m);
                acc[l] += x[l];
            }
        }
        let mut z: f32 = acc.iter().sum();
        for x in c.into_remainder() {
            *x = fastmath::exp(*x - m);
            z += *x;
        }
        ((m + z.ln() - xy) as f64, 1.0 / z)
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(row: &mut [f32], y: usize) -> (f64, f32) {
            body(row, y)
        }
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { avx2(row, y) };
    }
    body(row, y)
}

fn softmax_minus_onehot64(d: &mut [f64], v: usize, labels: &[u32]) -> f64 {
    d.chunks_mut(v).zip(labels).map(|(row, &y)| {
        let (m, lse) = lse64(row);
        let nll = m + lse - row[y as usize];
        for r in row.iter_mut() {
            *r = (*r - m - lse).exp();
        }
        row[y as usize] -= 1.0;
        nll
    }).sum()
}

/// Mean cross-entropy of `h @ Wᵀ` for a frozen output layer `W`, whose gradient is formed during
/// the forward pass (see [`output_cross_entropy`]).
struct OutputCrossEntropy {
    w: Tensor,
    labels: Vec<u32>,
    /// Made by the forward, consumed by the backward: `softmax - onehot` per row `(n, classes)`,
    /// or (f32) `exp(logit - max)` per row with each row's `1 / Σ exp` beside it.
    dlogits: std::sync::Mutex<Option<(Tensor, Option<Vec<f32>>)>>,
}

impl CustomOp1 for OutputCrossEntropy {
    fn name(&self) -> &'static str {
        "output-cross-entropy"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, _) = l.shape().dims2()?;
        let v = self.w.dim(0)?;
        if n != self.labels.len() {
            candle_core::bail!("cross-entropy: {n} rows but {} labels", self.labels.len());
        }
        if let Some(&bad) = self.labels.iter().find(|&&y| y as usize >= v) {
            candle_core::bail!("cross-entropy: label {bad} outside the {v} classes");
        }
        // The logits are computed into storage we own and turned into their gradient in place.
        let (logits, _) = crate::ops::matmul_wt(s, l, &self.w)?;
        let dev = candle_core::Device::Cpu;
        let (loss, d) = match logits {
            CpuStorage::F32(mut d) => {
                let (sum, inv) = exp_rows32(&mut d, v, &self.labels);
                (CpuStorage::F32(vec![(sum / n as f64) as f32]), (Tensor::from_vec(d, (n, v), &dev)?, Some(inv)))
            }
            CpuStorage::F64(mut d) => {
                let sum = softmax_minus_onehot64(&mut d, v, &self.labels);
                (CpuStorage::F64(vec![sum / n as f64]), (Tensor::from_vec(d, (n, v), &dev)?, None))
            }
            _ => candle_core::bail!("cross-entropy: f32 or f64 only"),
        };
        *self.dlogits.lock().map_err(|_| candle_core::Error::Msg("output-cross-entropy: poisoned".into()))? = Some(d);
        Ok((loss, Shape::from(())))
    }
    fn bwd(&self, _h: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let d = self.dlogits.lock().map_err(|_| candle_core::Error::Msg("output-cross-entropy: poisoned".into()))?.take();
        let (d, inv) = d.ok_or_else(|| candle_core::Error::Msg("output-cross-entropy: backward ran twice".into()))?;
        let n = d.dim(0)?;
        let scale = g.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? / n as f64;
        let p = crate::ops::matmul_w(&d, &self.w)?;
        let dh = match inv {
            None => p,
            // (softmax - onehot) @ W = diag(1/Σ exp) (exp @ W) - W[labels].
            Some(inv) => {
                let inv = Tensor::from_vec(inv, (n, 1), p.device())?.to_dtype(p.dtype())?;
                let ids = Tensor::from_slice(&self.labels, n, p.device())?;
                (p.broadcast_mul(&inv)? - self.w.index_select(&ids, 0)?.to_dtype(p.dtype())?)?
            }
        };
        Ok(Some((dh * scale)?))
    }
}

/// Mean cross-entropy of the logits `h @ Wᵀ` (`h (n, hidden)`, frozen `W (classes, hidden)`)
/// against `labels`, differentiable in `h`.
///
/// The (n × vocabulary) logits are the largest tensors of a training step. Here they are never
/// kept: the forward pass turns them in place into `softmax - onehot`, which is all the backward
/// needs (one matmul with `W`), instead of keeping the logits, copying them and allocating their
/// gradient in the backward (three vocabulary-sized buffers at the peak of the step, now one).
pub fn output_cross_entropy(h: &Tensor, w: &crate::ops::FrozenLinear, labels: &[u32]) -> candle_core::Result<Tensor> {
    h.contiguous()?.apply_op1(OutputCrossEntropy { w: w.weight().clone(), labels: labels.to_vec(), dlogits: std::sync::Mutex::new(None) })
}
