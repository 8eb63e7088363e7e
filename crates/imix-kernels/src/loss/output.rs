//! Mean cross-entropy of an output layer's logits, streamed over vocabulary chunks.
//!
//! The (rows × 49 152) logits were the largest buffer of a training step: written by one gemm,
//! exponentiated in place, then read back by the gradient product `softmax @ W`, with `W`
//! (113 MB in f32) streamed from memory twice. Here the vocabulary is processed in chunks with an
//! online softmax (as flash attention does): per chunk, the logits product, a running max and
//! sum per row, and the chunk's share of `Σ exp(logit - max) · W_v` accumulated at once, while
//! the chunk of `W` is still in the cache. The gradient `softmax @ W - W[label]` is then ready
//! at the end of the forward; the (rows × vocabulary) buffer never exists.

use crate::fastmath;
use crate::matmul::{matmul_into_serial, Rhs};
use crate::storage::contiguous;
use crate::{lanes, BlockRows, FrozenRows, Real};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

/// Vocabulary rows per chunk: a thread's 256 × 512 logits fill its L2, the 512 × 576 f32
/// weights (1.1 MiB) are read again from L3 by the second product. Chosen by measurement on the
/// training benchmark's shapes against 256, 1024, the whole vocabulary and a split by rows
/// (BENCHMARKS.md, "Profile notes").
pub const OUTPUT_CHUNK: usize = 512;

/// The element operations of the online softmax, vectorised for f32.
trait Online: Real + candle_core::WithDType + std::ops::MulAssign + std::ops::AddAssign {
    fn max_of(row: &[Self]) -> Self;
    /// `row ← exp(row - m)` in place; returns the sum.
    fn exp_shift_sum(row: &mut [Self], m: Self) -> Self;
    /// Rows `r0..` of `b` dequantised into `out`.
    fn dequant(b: &BlockRows, r0: usize, out: &mut [Self]);
}

/// The output layer's rows: a dense slice, or blocks dequantised a chunk at a time.
#[derive(Clone, Copy)]
enum Rows<'a, T> {
    Dense(&'a [T]),
    Blocks(&'a BlockRows),
}

impl<T: Online> Rows<'_, T> {
    /// Rows `v0..v0 + c` (each `hd` wide), row-major: borrowed when dense, dequantised into
    /// `buf` (the same values) when blocks.
    fn get<'b>(&'b self, v0: usize, c: usize, hd: usize, buf: &'b mut Vec<T>) -> &'b [T] {
        match *self {
            Rows::Dense(w) => &w[v0 * hd..(v0 + c) * hd],
            Rows::Blocks(b) => {
                buf.resize(c * hd, T::zero());
                T::dequant(b, v0, buf);
                buf
            }
        }
    }
}

impl Online for f64 {
    fn max_of(row: &[f64]) -> f64 {
        row.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
    fn exp_shift_sum(row: &mut [f64], m: f64) -> f64 {
        row.iter_mut()
            .map(|x| {
                *x = (*x - m).exp();
                *x
            })
            .sum()
    }
    fn dequant(b: &BlockRows, r0: usize, out: &mut [f64]) {
        let mut o = vec![0f32; out.len()];
        b.rows_into(r0, &mut o);
        out.iter_mut().zip(o).for_each(|(y, x)| *y = x as f64);
    }
}

crate::simd_dispatch!(
    fn exp_shift_sum32(row: &mut [f32], m: f32) -> f32 {
        for x in row.iter_mut() {
            *x = fastmath::exp(*x - m);
        }
        // The row is still in L1 for the sum.
        lanes::sum(row)
    }
);

impl Online for f32 {
    fn max_of(row: &[f32]) -> f32 {
        lanes::max(row)
    }
    fn exp_shift_sum(row: &mut [f32], m: f32) -> f32 {
        exp_shift_sum32(row, m)
    }
    fn dequant(b: &BlockRows, r0: usize, out: &mut [f32]) {
        b.rows_into(r0, out)
    }
}

/// Per row: running max, running `Σ exp(logit - max)`, and the label's logit.
#[derive(Clone, Copy)]
struct Row<T> {
    max: T,
    sum: T,
    label_logit: T,
}

impl<T: Online> Row<T> {
    /// Before any logit: max -inf, so the first chunk's rescaling factor exp(-inf) is 0.
    fn empty() -> Self {
        Row {
            max: T::of(f64::NEG_INFINITY),
            sum: T::zero(),
            label_logit: T::zero(),
        }
    }
}

/// The chunked forward: per row the loss terms, and `acc = Σ_v exp(logit_v - max) · W_v`.
/// Each thread takes a slice of the vocabulary for all rows with single-threaded products (no
/// fork-join per product, and each chunk of `W` is packed by one thread only); the partial
/// softmax states are merged at the end.
fn online<T: Online>(
    h: &[T],
    w: Rows<'_, T>,
    (n, hd, v): (usize, usize, usize),
    labels: &[u32],
    chunk: usize,
) -> (Vec<Row<T>>, Vec<T>) {
    let chunk = chunk.clamp(1, v.max(1));
    let per = v
        .div_ceil(rayon::current_num_threads().max(1))
        .div_ceil(chunk)
        * chunk;
    let parts: Vec<_> = (0..v.div_ceil(per))
        .into_par_iter()
        .map(|t| {
            let (v0, v1) = (t * per, ((t + 1) * per).min(v));
            online_block(h, w, (n, hd, v1 - v0), v0, labels, chunk)
        })
        .collect();
    let mut parts = parts.into_iter();
    let Some((mut rows, mut acc)) = parts.next() else {
        return (vec![Row::empty(); n], vec![T::zero(); n * hd]);
    };
    for (rows2, acc2) in parts {
        for (((r, a), r2), a2) in rows
            .iter_mut()
            .zip(acc.chunks_mut(hd))
            .zip(&rows2)
            .zip(acc2.chunks(hd))
        {
            // exp(-inf) = 0 leaves a part that saw no finite logit out.
            let m = if r2.max > r.max { r2.max } else { r.max };
            let (f, f2) = ((r.max - m).exp(), (r2.max - m).exp());
            for (x, &x2) in a.iter_mut().zip(a2) {
                *x = *x * f + x2 * f2;
            }
            r.sum = r.sum * f + r2.sum * f2;
            r.max = m;
            r.label_logit += r2.label_logit;
        }
    }
    (rows, acc)
}

/// All rows through the vocabulary rows `base..base + v` of `w`; a label outside them leaves its
/// row's `label_logit` at 0.
fn online_block<T: Online>(
    h: &[T],
    w: Rows<'_, T>,
    (n, hd, v): (usize, usize, usize),
    base: usize,
    labels: &[u32],
    chunk: usize,
) -> (Vec<Row<T>>, Vec<T>) {
    let chunk = chunk.clamp(1, v.max(1));
    let mut acc = vec![T::zero(); n * hd];
    let mut rows = vec![Row::empty(); n];
    let mut logits = vec![T::zero(); n * chunk];
    let mut buf = Vec::new();
    for v0 in (0..v).step_by(chunk) {
        let c = chunk.min(v - v0);
        let wc = w.get(base + v0, c, hd, &mut buf);
        let l = &mut logits[..n * c];
        matmul_into_serial(l, h, wc, (n, hd, c), Rhs::Transposed, false);
        for (((lr, a), r), &y) in l
            .chunks_mut(c)
            .zip(acc.chunks_mut(hd))
            .zip(rows.iter_mut())
            .zip(labels)
        {
            if let Some(j) = (y as usize).checked_sub(base + v0).filter(|&j| j < c) {
                r.label_logit = lr[j];
            }
            let m = T::max_of(lr);
            if m > r.max {
                // A new max rescales what was summed so far (exp(-inf) = 0 on the first chunk).
                let f = (r.max - m).exp();
                r.sum *= f;
                a.iter_mut().for_each(|x| *x *= f);
                r.max = m;
            }
            r.sum += T::exp_shift_sum(lr, r.max);
        }
        matmul_into_serial(&mut acc, l, wc, (n, c, hd), Rhs::Plain, true);
    }
    (rows, acc)
}

/// Mean cross-entropy of `h @ Wᵀ` for a frozen output layer `W`; the gradient is formed during
/// the forward pass.
struct OutputCrossEntropy {
    w: FrozenRows,
    labels: Vec<u32>,
    chunk: usize,
    /// Made by the forward, consumed by the backward: the unscaled gradient `softmax @ W - W[label]`.
    grad: Mutex<Option<Tensor>>,
}

impl OutputCrossEntropy {
    /// [`Self::run`] over the layer's blocks, or its dense weight when that holds `T` too.
    fn layer<T: Online>(&self, h: &[T], dims: (usize, usize, usize)) -> candle_core::Result<T> {
        match &self.w {
            FrozenRows::Blocks(b) => self.run(h, Rows::Blocks(b), dims),
            FrozenRows::Dense(w) => {
                let (ws, wl) = w.weight().storage_and_layout();
                let Storage::Cpu(ws) = &*ws else {
                    candle_core::bail!("cross-entropy: the output layer is not on the CPU")
                };
                let w = T::cpu_storage_as_slice(ws).map_err(|_| {
                    candle_core::Error::Msg(
                        "cross-entropy: input and output layer of different types".into(),
                    )
                })?;
                self.run(
                    h,
                    Rows::Dense(contiguous(w, wl, "cross-entropy (output layer)")?),
                    dims,
                )
            }
        }
    }

    fn run<T: Online>(
        &self,
        h: &[T],
        w: Rows<'_, T>,
        (n, hd, v): (usize, usize, usize),
    ) -> candle_core::Result<T> {
        let (rows, mut acc) = online(h, w, (n, hd, v), &self.labels, self.chunk);
        let loss: f64 = rows
            .iter()
            .map(|r| r.max.to_f64() + r.sum.to_f64().ln() - r.label_logit.to_f64())
            .sum();
        // softmax @ W - W[label] = acc / sum - W[label], per row.
        acc.par_chunks_mut(hd)
            .zip(rows.par_iter())
            .zip(self.labels.par_iter())
            .for_each(|((a, r), &y)| {
                let mut buf = Vec::new();
                let wy = w.get(y as usize, 1, hd, &mut buf);
                for (x, &wv) in a.iter_mut().zip(wy) {
                    *x = *x / r.sum - wv;
                }
            });
        *self
            .grad
            .lock()
            .map_err(|_| candle_core::Error::Msg("output-cross-entropy: poisoned".into()))? =
            Some(Tensor::from_vec(acc, (n, hd), &candle_core::Device::Cpu)?);
        Ok(T::from_f64(loss / n as f64))
    }
}

impl CustomOp1 for OutputCrossEntropy {
    fn name(&self) -> &'static str {
        "output-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, hd) = l.shape().dims2()?;
        let (v, whd) = self.w.dims();
        if whd != hd {
            candle_core::bail!(
                "cross-entropy: hidden width {hd} but the output layer is ({v}, {whd})"
            );
        }
        super::check_labels(&self.labels, n, v)?;
        let dims = (n, hd, v);
        let scalar = |x| (x, Shape::from(()));
        Ok(match s {
            CpuStorage::F32(h) => scalar(CpuStorage::F32(vec![
                self.layer(contiguous(h, l, "cross-entropy")?, dims)?
            ])),
            CpuStorage::F64(h) => scalar(CpuStorage::F64(vec![
                self.layer(contiguous(h, l, "cross-entropy")?, dims)?
            ])),
            _ => candle_core::bail!("cross-entropy: f32 or f64 input on the CPU"),
        })
    }

    fn bwd(&self, _h: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = self
            .grad
            .lock()
            .map_err(|_| candle_core::Error::Msg("output-cross-entropy: poisoned".into()))?
            .take();
        let grad = grad.ok_or_else(|| {
            candle_core::Error::Msg("output-cross-entropy: backward ran twice".into())
        })?;
        let n = grad.dim(0)?;
        let scale = g.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? / n as f64;
        Ok(Some((grad * scale)?))
    }
}

/// Mean cross-entropy of the logits `h @ Wᵀ` (`h (n, hidden)`, frozen `W (classes, hidden)`)
/// against `labels`, differentiable in `h`; the logits are never materialised (module docs).
pub fn output_cross_entropy(
    h: &Tensor,
    w: impl Into<FrozenRows>,
    labels: &[u32],
) -> candle_core::Result<Tensor> {
    output_cross_entropy_chunked(h, w, labels, OUTPUT_CHUNK)
}

/// [`output_cross_entropy`] with `chunk` vocabulary rows per step (tests use small chunks).
pub fn output_cross_entropy_chunked(
    h: &Tensor,
    w: impl Into<FrozenRows>,
    labels: &[u32],
    chunk: usize,
) -> candle_core::Result<Tensor> {
    h.contiguous()?.apply_op1(OutputCrossEntropy {
        w: w.into(),
        labels: labels.to_vec(),
        chunk,
        grad: Mutex::new(None),
    })
}
