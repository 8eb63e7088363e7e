//! The frozen encoder's inference path on raw buffers.
//!
//! Sentences are packed without padding (rows = the batch's real tokens), every projection is one
//! gemm call whose output already holds its bias or residual (no separate add pass, no
//! zero-filled output), attention reads Q/K/V straight from the stacked projection and writes
//! into the token rows (no head-layout copies), and LayerNorm runs in place. Equal to the candle
//! composition in [`Encoder::forward`] + [`Encoder::pool`] (a test checks it on mixed lengths).

use super::{Encoder, Pooling};
use crate::fastmath;
use crate::matmul::{matmul_into, Rhs};
use candle_core::{CpuStorage, Storage, Tensor};
use rayon::prelude::*;

/// Calls `f` with the contiguous f32 data of each tensor (borrowed, not copied).
fn with_f32<R>(ts: &[&Tensor], f: impl FnOnce(&[&[f32]]) -> R) -> candle_core::Result<R> {
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(ts.len());
    for (g, l) in &guards {
        match (&**g, l.contiguous_offsets()) {
            (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => slices.push(&v[a..b]),
            _ => candle_core::bail!("encoder: contiguous f32 cpu weights required"),
        }
    }
    Ok(f(&slices))
}

avx2_dispatch!(
    fn layer_norm_row(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
        let n = x.len() as f32;
        let mean = fastmath::lane_sum(x) / n;
        let mut acc = [0f32; 8];
        let c = x.chunks_exact(8);
        let tail: f32 = c.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
        for v in c {
            for l in 0..8 {
                acc[l] += (v[l] - mean) * (v[l] - mean);
            }
        }
        let inv = 1.0 / ((acc.iter().sum::<f32>() + tail) / n + eps).sqrt();
        for ((v, &w), &b) in x.iter_mut().zip(w).zip(b) {
            *v = (*v - mean) * inv * w + b;
        }
    }
);

/// LayerNorm of every `d`-wide row of `x`, in place, rows in parallel.
fn layer_norm(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let d = w.len();
    x.par_chunks_mut(d * 16).for_each(|c| c.chunks_mut(d).for_each(|r| layer_norm_row(r, w, b, eps)));
}

/// Adds `bias` to every row of `x`.
fn add_rows(x: &mut [f32], bias: &[f32]) {
    let d = bias.len();
    x.par_chunks_mut(d * 64).for_each(|c| c.chunks_mut(d).for_each(|r| r.iter_mut().zip(bias).for_each(|(v, b)| *v += b)));
}

/// Overwrites every row of `x` with `bias`.
fn fill_rows(x: &mut [f32], bias: &[f32]) {
    let d = bias.len();
    x.par_chunks_mut(d * 64).for_each(|c| c.chunks_mut(d).for_each(|r| r.copy_from_slice(bias)));
}

/// Attention of one sequence: `qkv` rows are `[q | k | v]` (each `heads * hd` wide), `out` rows
/// `heads * hd` wide. No mask: sequences are packed without padding.
fn attend_seq(qkv: &[f32], out: &mut [f32], heads: usize, hd: usize, buf: &mut Vec<f32>) {
    let d = heads * hd;
    assert!(qkv.len() >= out.len() / d * 3 * d, "attention: qkv shorter than the output rows");
    #[cfg(target_arch = "x86_64")]
    if hd & 7 == 0 && std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2+FMA and the assert above bounds every row the kernel reads.
        unsafe { attend_seq_avx2(qkv, out, heads, hd, buf) };
        return;
    }
    attend_seq_portable(qkv, out, heads, hd, buf)
}

/// [`attend_seq`] in plain loops: the fallback, and the reference for the AVX2 kernel.
fn attend_seq_portable(qkv: &[f32], out: &mut [f32], heads: usize, hd: usize, buf: &mut Vec<f32>) {
    let d = heads * hd;
    let len = out.len() / d;
    let scale = 1.0 / (hd as f32).sqrt();
    buf.resize(len, 0.0);
    for h in 0..heads {
        for r in 0..len {
            let q = &qkv[r * 3 * d + h * hd..][..hd];
            for (j, s) in buf.iter_mut().enumerate() {
                *s = q.iter().zip(&qkv[j * 3 * d + d + h * hd..][..hd]).map(|(a, b)| a * b).sum::<f32>() * scale;
            }
            softmax(buf);
            let o = &mut out[r * d + h * hd..][..hd];
            for (c, oc) in o.iter_mut().enumerate() {
                *oc = buf.iter().enumerate().map(|(j, p)| p * qkv[j * 3 * d + 2 * d + h * hd + c]).sum();
            }
        }
    }
}

/// Softmax in place.
#[inline(always)]
fn softmax(s: &mut [f32]) {
    let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    s.iter_mut().for_each(|v| *v = fastmath::exp(*v - m));
    let inv = 1.0 / fastmath::lane_sum(s);
    s.iter_mut().for_each(|v| *v *= inv);
}

/// [`attend_seq`] for AVX2+FMA. Keys are transposed per head to `(hd, lp)` (lp = len rounded up
/// to 8) so that scores are broadcast multiply-adds over 8 keys at once, for 4 queries at once
/// (independent chains, no horizontal sums); the weighted sum keeps up to four 8-lane pieces of
/// the output in registers over all keys.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_seq_avx2(qkv: &[f32], out: &mut [f32], heads: usize, hd: usize, buf: &mut Vec<f32>) {
    use std::arch::x86_64::*;
    let d = heads * hd;
    let len = out.len() / d;
    let lp = len.div_ceil(8) * 8;
    buf.clear();
    buf.resize(hd * lp + 4 * lp, 0.0);
    let (kt, sc) = buf.split_at_mut(hd * lp);
    let scale = _mm256_set1_ps(1.0 / (hd as f32).sqrt());
    let base = qkv.as_ptr();
    for h in 0..heads {
        for c in 0..hd {
            for (j, t) in kt[c * lp..c * lp + len].iter_mut().enumerate() {
                *t = qkv[j * 3 * d + d + h * hd + c];
            }
        }
        for r0 in (0..len).step_by(4) {
            // Rows past the end repeat the last one; their scores are not used.
            let q: [*const f32; 4] = std::array::from_fn(|i| base.add((r0 + i).min(len - 1) * 3 * d + h * hd));
            for b in 0..lp / 8 {
                let mut acc = [_mm256_setzero_ps(); 4];
                let kp = kt.as_ptr().add(b * 8);
                for c in 0..hd {
                    let k = _mm256_loadu_ps(kp.add(c * lp));
                    for i in 0..4 {
                        acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(*q[i].add(c)), k, acc[i]);
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(sc.as_mut_ptr().add(i * lp + b * 8), _mm256_mul_ps(*a, scale));
                }
            }
            for i in 0..4.min(len - r0) {
                let p = &mut sc[i * lp..i * lp + len];
                softmax(p);
                let o = out.as_mut_ptr().add((r0 + i) * d + h * hd);
                let v = base.add(2 * d + h * hd);
                let mut c0 = 0;
                while c0 < hd {
                    let n = ((hd - c0) / 8).min(4);
                    let mut acc = [_mm256_setzero_ps(); 4];
                    for (j, &pj) in p.iter().enumerate() {
                        let w = _mm256_set1_ps(pj);
                        let vj = v.add(j * 3 * d + c0);
                        for (u, a) in acc.iter_mut().enumerate().take(n) {
                            *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(vj.add(u * 8)), *a);
                        }
                    }
                    for (u, a) in acc.iter().enumerate().take(n) {
                        _mm256_storeu_ps(o.add(c0 + u * 8), *a);
                    }
                    c0 += n * 8;
                }
            }
        }
    }
}

impl Encoder {
    /// Whether the raw path applies: frozen f32 weights, stacked Q/K/V and biases everywhere (BERT's).
    pub(super) fn raw_path_ready(&self) -> bool {
        !self.grad
            && self.word.embeddings().dtype() == candle_core::DType::F32
            && self.layers.iter().all(|l| l.qkv.as_ref().is_some_and(|q| q.bias().is_some()) && l.o.bias().is_some() && l.up.bias().is_some() && l.down.bias().is_some())
    }

    /// Sentence embeddings `(n, dim)` of tokenised sentences through the raw-buffer path.
    pub(super) fn embed_packed(&self, ids: &[Vec<u32>]) -> candle_core::Result<Tensor> {
        let d = self.cfg.hidden_size;
        let heads = self.cfg.num_attention_heads;
        let hd = d / heads;
        let eps = self.cfg.layer_norm_eps as f32;
        let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
        let rows: usize = lens.iter().sum();
        if let Some(&l) = lens.iter().find(|&&l| l > self.cfg.max_position_embeddings) {
            candle_core::bail!("encoder: {l} tokens, more than the {} positions", self.cfg.max_position_embeddings);
        }
        // Embeddings: word + position + segment 0, then LayerNorm.
        let mut x = vec![0f32; rows * d];
        with_f32(&[self.word.embeddings(), self.pos.embeddings(), self.typ.embeddings(), &self.ln.0, &self.ln.1], |w| {
            let (word, pos, typ) = (w[0], w[1], &w[2][..d]);
            let mut r = 0;
            for s in ids {
                for (j, &id) in s.iter().enumerate() {
                    let id = id as usize;
                    if id >= self.cfg.vocab_size {
                        return Err(candle_core::Error::Msg(format!("encoder: token id {id} outside the vocabulary of {}", self.cfg.vocab_size)));
                    }
                    let row = &mut x[r * d..(r + 1) * d];
                    for (((o, a), b), c) in row.iter_mut().zip(&word[id * d..(id + 1) * d]).zip(&pos[j * d..(j + 1) * d]).zip(typ) {
                        *o = a + b + c;
                    }
                    r += 1;
                }
            }
            layer_norm(&mut x, w[3], w[4], eps);
            Ok(())
        })??;
        let ffn = self.cfg.intermediate_size;
        let (mut qkv, mut a, mut u) = (vec![0f32; rows * 3 * d], vec![0f32; rows * d], vec![0f32; rows * ffn]);
        for l in &self.layers {
            let Some(stacked) = &l.qkv else { candle_core::bail!("encoder: raw path needs the stacked frozen Q/K/V") };
            let (Some(bqkv), Some(bo), Some(bup), Some(bdown)) = (stacked.bias(), l.o.bias(), l.up.bias(), l.down.bias()) else { candle_core::bail!("encoder: raw path needs biased projections") };
            let ts = [stacked.weight(), bqkv, l.o.weight(), bo, &l.ln1.0, &l.ln1.1, l.up.weight(), bup, l.down.weight(), bdown, &l.ln2.0, &l.ln2.1];
            with_f32(&ts, |w| {
                // Q/K/V: bias rows, then the product accumulated onto them.
                fill_rows(&mut qkv, w[1]);
                matmul_into(&mut qkv, &x, w[0], (rows, d, 3 * d), Rhs::Transposed, true);
                // Attention per sequence (no padding, so no mask), sequences in parallel.
                let mut parts = Vec::with_capacity(lens.len());
                let (mut rest_q, mut rest_a) = (&qkv[..], &mut a[..]);
                for &n in &lens {
                    let (q, rq) = rest_q.split_at(n * 3 * d);
                    let (o, ra) = rest_a.split_at_mut(n * d);
                    parts.push((q, o));
                    (rest_q, rest_a) = (rq, ra);
                }
                parts.into_par_iter().for_each_init(Vec::new, |s, (q, o)| attend_seq(q, o, heads, hd, s));
                // Output projection onto the residual (+ bias), then LayerNorm.
                add_rows(&mut x, w[3]);
                matmul_into(&mut x, &a, w[2], (rows, d, d), Rhs::Transposed, true);
                layer_norm(&mut x, w[4], w[5], eps);
                // Feed-forward: bias rows + product, GELU, down projection onto the residual.
                fill_rows(&mut u, w[7]);
                matmul_into(&mut u, &x, w[6], (rows, d, ffn), Rhs::Transposed, true);
                let g = fastmath::gelu(&u);
                add_rows(&mut x, w[9]);
                matmul_into(&mut x, &g, w[8], (rows, ffn, d), Rhs::Transposed, true);
                layer_norm(&mut x, w[10], w[11], eps);
            })?;
        }
        // Pooling per sequence, then L2 normalisation when the model asks for it.
        let mut out = vec![0f32; ids.len() * d];
        let mut r = 0;
        for (o, &n) in out.chunks_mut(d).zip(&lens) {
            let toks = &x[r * d..(r + n) * d];
            match self.pooling {
                Pooling::Cls if n > 0 => o.copy_from_slice(&toks[..d]),
                Pooling::Cls => {}
                Pooling::Mean => {
                    toks.chunks(d).for_each(|t| o.iter_mut().zip(t).for_each(|(o, v)| *o += v));
                    let inv = 1.0 / (n as f32).max(1e-9);
                    o.iter_mut().for_each(|v| *v *= inv);
                }
            }
            if self.normalize {
                let norm = o.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                o.iter_mut().for_each(|v| *v /= norm);
            }
            r += n;
        }
        Tensor::from_vec(out, (ids.len(), d), &self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx2_attention_equals_the_plain_loops() {
        let (heads, hd) = (3, 40); // 40: five 8-lane pieces, so the 4-piece loop has a remainder
        let d = heads * hd;
        for len in [1, 3, 4, 9, 17] {
            let qkv: Vec<f32> = (0..len * 3 * d).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect();
            let (mut a, mut b) = (vec![0f32; len * d], vec![0f32; len * d]);
            attend_seq(&qkv, &mut a, heads, hd, &mut Vec::new());
            attend_seq_portable(&qkv, &mut b, heads, hd, &mut Vec::new());
            let err = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(err < 1e-5, "len {len}: max difference {err}");
            // Each output is a convex combination of values: bounded by their range.
            assert!(a.iter().all(|v| v.abs() <= 1.25 + 1e-5), "len {len}: output outside the values' range");
        }
    }
}
