//! The frozen encoder's inference path on raw buffers.
//!
//! Sentences are packed without padding (rows = the batch's real tokens), every projection is one
//! gemm call whose output already holds its bias or residual (no separate add pass, no
//! zero-filled output), attention reads Q/K/V straight from the stacked projection and writes
//! into the token rows (no head-layout copies), and LayerNorm runs in place. Equal to the candle
//! composition in [`Encoder::forward`] + [`Encoder::pool`] (a test checks it on mixed lengths).

use super::{Encoder, Pooling};
use candle_core::{CpuStorage, Storage, Tensor};
use imix_kernels::fastmath;
use imix_kernels::layer_norm::layer_norm;
use imix_kernels::matmul::{matmul_into, Rhs};
use imix_kernels::packed_attention::attend_seq;
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

/// Adds `bias` to every row of `x`.
fn add_rows(x: &mut [f32], bias: &[f32]) {
    let d = bias.len();
    x.par_chunks_mut(d * 64).for_each(|c| {
        c.chunks_mut(d)
            .for_each(|r| r.iter_mut().zip(bias).for_each(|(v, b)| *v += b))
    });
}

/// Overwrites every row of `x` with `bias`.
fn fill_rows(x: &mut [f32], bias: &[f32]) {
    let d = bias.len();
    x.par_chunks_mut(d * 64)
        .for_each(|c| c.chunks_mut(d).for_each(|r| r.copy_from_slice(bias)));
}

impl Encoder {
    /// Whether the raw path applies: frozen f32 weights, stacked Q/K/V and biases everywhere (BERT's).
    pub(super) fn raw_path_ready(&self) -> bool {
        !self.grad
            && self.word.embeddings().dtype() == candle_core::DType::F32
            && self.layers.iter().all(|l| {
                l.qkv.as_ref().is_some_and(|q| q.bias().is_some())
                    && l.o.bias().is_some()
                    && l.up.bias().is_some()
                    && l.down.bias().is_some()
            })
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
            candle_core::bail!(
                "encoder: {l} tokens, more than the {} positions",
                self.cfg.max_position_embeddings
            );
        }
        // Embeddings: word + position + segment 0, then LayerNorm.
        let mut x = vec![0f32; rows * d];
        with_f32(
            &[
                self.word.embeddings(),
                self.pos.embeddings(),
                self.typ.embeddings(),
                &self.ln.0,
                &self.ln.1,
            ],
            |w| {
                let (word, pos, typ) = (w[0], w[1], &w[2][..d]);
                let mut r = 0;
                for s in ids {
                    for (j, &id) in s.iter().enumerate() {
                        let id = id as usize;
                        if id >= self.cfg.vocab_size {
                            return Err(candle_core::Error::Msg(format!(
                                "encoder: token id {id} outside the vocabulary of {}",
                                self.cfg.vocab_size
                            )));
                        }
                        let row = &mut x[r * d..(r + 1) * d];
                        for (((o, a), b), c) in row
                            .iter_mut()
                            .zip(&word[id * d..(id + 1) * d])
                            .zip(&pos[j * d..(j + 1) * d])
                            .zip(typ)
                        {
                            *o = a + b + c;
                        }
                        r += 1;
                    }
                }
                layer_norm(&mut x, w[3], w[4], eps);
                Ok(())
            },
        )??;
        let ffn = self.cfg.intermediate_size;
        let (mut qkv, mut a, mut u) = (
            vec![0f32; rows * 3 * d],
            vec![0f32; rows * d],
            vec![0f32; rows * ffn],
        );
        for l in &self.layers {
            let Some(stacked) = &l.qkv else {
                candle_core::bail!("encoder: raw path needs the stacked frozen Q/K/V")
            };
            let (Some(bqkv), Some(bo), Some(bup), Some(bdown)) =
                (stacked.bias(), l.o.bias(), l.up.bias(), l.down.bias())
            else {
                candle_core::bail!("encoder: raw path needs biased projections")
            };
            let ts = [
                stacked.weight(),
                bqkv,
                l.o.weight(),
                bo,
                &l.ln1.0,
                &l.ln1.1,
                l.up.weight(),
                bup,
                l.down.weight(),
                bdown,
                &l.ln2.0,
                &l.ln2.1,
            ];
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
                parts
                    .into_par_iter()
                    .for_each_init(Vec::new, |s, (q, o)| attend_seq(q, o, heads, hd, s));
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
                    toks.chunks(d)
                        .for_each(|t| o.iter_mut().zip(t).for_each(|(o, v)| *o += v));
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
