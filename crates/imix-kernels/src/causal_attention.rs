//! Causal grouped-query attention for training, with rotary embedding, as one kernel forward and
//! one backward (input gradient of the stacked Q/K/V projections).
//!
//! Through candle ops the attention core of a training step was a chain of copies (head split,
//! rotary, prefix concat) and batched matmuls that run one small gemm per (sequence, KV head),
//! each a thread-pool dispatch, forward and backward: a fifth of the backward pass. Here each
//! (sequence, KV head) is one task; scores are recomputed in the backward instead of stored.

use crate::lanes::dot;
use crate::storage::contiguous;
use crate::Real;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Shapes and constants of one attention call.
#[derive(Clone)]
pub struct Causal {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head width.
    pub head_dim: usize,
    /// RoPE tables `(t, head_dim/2)` for the new positions, flattened.
    pub cos: Arc<Vec<f64>>,
    /// See `cos`.
    pub sin: Arc<Vec<f64>>,
    /// Constant prefix keys/values `(b, kv_heads, p, head_dim)` (already rotated), if any.
    pub prefix: Option<(Tensor, Tensor)>,
}

/// Rotate-half RoPE of one head vector at table row `pos`; `sign = -1` is the inverse rotation.
#[inline(always)]
fn rope<T: Real>(x: &[T], cos: &[f64], sin: &[f64], pos: usize, sign: f64, out: &mut [T]) {
    let h = x.len() / 2;
    for i in 0..h {
        let (c, s) = (T::of(cos[pos * h + i]), T::of(sign * sin[pos * h + i]));
        out[i] = x[i] * c - x[i + h] * s;
        out[i + h] = x[i + h] * c + x[i] * s;
    }
}

struct Dims {
    b: usize,
    t: usize,
    p: usize,
    width: usize,
}

/// Keys (rotated) and values of one (sequence, KV head): prefix rows, then the new rows.
fn keys_values<T: Real>(
    c: &Causal,
    d: &Dims,
    qkv: &[T],
    pre: Option<(&[T], &[T])>,
    bi: usize,
    g: usize,
) -> (Vec<T>, Vec<T>) {
    let hd = c.head_dim;
    let n = d.p + d.t;
    let (mut k, mut v) = (vec![T::default(); n * hd], vec![T::default(); n * hd]);
    if let Some((pk, pv)) = pre {
        let o = (bi * c.kv_heads + g) * d.p * hd;
        k[..d.p * hd].copy_from_slice(&pk[o..o + d.p * hd]);
        v[..d.p * hd].copy_from_slice(&pv[o..o + d.p * hd]);
    }
    for i in 0..d.t {
        let row = &qkv[(bi * d.t + i) * d.width..][..d.width];
        let (ko, vo) = ((c.heads + g) * hd, (c.heads + c.kv_heads + g) * hd);
        rope(
            &row[ko..ko + hd],
            &c.cos,
            &c.sin,
            i,
            1.0,
            &mut k[(d.p + i) * hd..(d.p + i + 1) * hd],
        );
        v[(d.p + i) * hd..(d.p + i + 1) * hd].copy_from_slice(&row[vo..vo + hd]);
    }
    (k, v)
}

/// Softmax weights of query `q` (rotated) over the first `n` keys.
#[inline(always)]
fn weights<T: Real>(q: &[T], k: &[T], n: usize, scale: T, s: &mut Vec<T>) {
    let hd = q.len();
    // Indexed loops, not `extend(map)`: the iterator's fold was compiled out of line, without
    // the caller's AVX2 features.
    s.clear();
    s.resize(n, T::default());
    for (j, sj) in s.iter_mut().enumerate() {
        *sj = dot(q, &k[j * hd..(j + 1) * hd]) * scale;
    }
    let m = s
        .iter()
        .copied()
        .fold(s[0], |a, b| if b > a { b } else { a });
    let mut z = T::default();
    for v in s.iter_mut() {
        *v = (*v - m).exp();
        z = z + *v;
    }
    for v in s.iter_mut() {
        *v = *v / z;
    }
}

crate::simd_dispatch!(
    /// Forward of one (sequence, KV head): its query heads' outputs `(t, rep, hd)`.
    fn forward_group<T: Real>(
        c: &Causal,
        d: &Dims,
        qkv: &[T],
        pre: Option<(&[T], &[T])>,
        bi: usize,
        g: usize,
    ) -> Vec<T> {
        let (hd, rep) = (c.head_dim, c.heads / c.kv_heads);
        let (k, v) = keys_values(c, d, qkv, pre, bi, g);
        let scale = T::of(1.0 / (hd as f64).sqrt());
        let mut out = vec![T::default(); d.t * rep * hd];
        let (mut q, mut s) = (vec![T::default(); hd], Vec::new());
        for i in 0..d.t {
            let row = &qkv[(bi * d.t + i) * d.width..][..d.width];
            for r in 0..rep {
                let h = g * rep + r;
                rope(&row[h * hd..(h + 1) * hd], &c.cos, &c.sin, i, 1.0, &mut q);
                weights(&q, &k, d.p + i + 1, scale, &mut s);
                let o = &mut out[(i * rep + r) * hd..][..hd];
                for (j, &w) in s.iter().enumerate() {
                    for (oi, vi) in o.iter_mut().zip(&v[j * hd..(j + 1) * hd]) {
                        *oi = *oi + w * *vi;
                    }
                }
            }
        }
        out
    }
);

/// `out[c..c + W] = Σ_{x in xs} term(x).0 · term(x).1[c..c + W]`, with the W sums held in
/// registers through the loop (accumulating into memory was a load and a store per multiply-add).
#[inline(always)]
fn sum_rows_block<'a, T: Real + 'a, const W: usize>(
    out: &mut [T],
    c: usize,
    xs: std::ops::Range<usize>,
    term: impl Fn(usize) -> (T, &'a [T]),
) {
    let mut acc = [T::default(); W];
    for x in xs {
        let (coef, row) = term(x);
        let row = &row[c..c + W];
        for l in 0..W {
            acc[l] = acc[l] + coef * row[l];
        }
    }
    out[c..c + W].copy_from_slice(&acc);
}

/// `out = Σ_{x in xs} term(x).0 · term(x).1` (rows `out.len()` wide), in register blocks (64
/// wide: eight independent f32 add chains, so the loop is not bound by the add latency).
/// Index closures rather than iterators: an iterator's `next` was compiled out of line.
#[inline(always)]
fn sum_rows<'a, T: Real + 'a>(
    out: &mut [T],
    xs: std::ops::Range<usize>,
    term: impl Fn(usize) -> (T, &'a [T]) + Copy,
) {
    let hd = out.len();
    let mut c = 0;
    while c + 64 <= hd {
        sum_rows_block::<T, 64>(out, c, xs.clone(), term);
        c += 64;
    }
    while c + 16 <= hd {
        sum_rows_block::<T, 16>(out, c, xs.clone(), term);
        c += 16;
    }
    while c < hd {
        sum_rows_block::<T, 1>(out, c, xs.clone(), term);
        c += 1;
    }
}

crate::simd_dispatch!(
    /// Backward of one (sequence, KV head): `(dq (t, rep, hd), dk (t, hd), dv (t, hd))`, all with
    /// respect to the unrotated projections. First, per query row: the softmax weights `P`,
    /// `dS = P ∘ (dP - Σ P dP)` with `dP = go · V`, and `dQ = dS · K`; then, per new key,
    /// `dK = dSᵀ · Q` and `dV = Pᵀ · GO` over the rows that see it (the constant prefix's keys get
    /// no gradient, so none is computed).
    fn backward_group<T: Real>(
        c: &Causal,
        d: &Dims,
        qkv: &[T],
        pre: Option<(&[T], &[T])>,
        ga: &[T],
        bi: usize,
        g: usize,
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let (hd, rep) = (c.head_dim, c.heads / c.kv_heads);
        let (k, v) = keys_values(c, d, qkv, pre, bi, g);
        let n = d.p + d.t;
        let rows = d.t * rep;
        let scale = T::of(1.0 / (hd as f64).sqrt());
        // This group's output gradients, one row per query row (i, r), as the queries.
        let mut gos = Vec::with_capacity(rows * hd);
        for i in 0..d.t {
            gos.extend_from_slice(&ga[(bi * d.t + i) * c.heads * hd + g * rep * hd..][..rep * hd]);
        }
        let (mut qs, mut ps, mut dss) = (
            vec![T::default(); rows * hd],
            vec![T::default(); rows * n],
            vec![T::default(); rows * n],
        );
        let mut dq_out = vec![T::default(); rows * hd];
        let (mut s, mut dq) = (Vec::new(), vec![T::default(); hd]);
        for i in 0..d.t {
            let row = &qkv[(bi * d.t + i) * d.width..][..d.width];
            let m = d.p + i + 1;
            for r in 0..rep {
                let (h, x) = (g * rep + r, i * rep + r);
                let q = &mut qs[x * hd..(x + 1) * hd];
                rope(&row[h * hd..(h + 1) * hd], &c.cos, &c.sin, i, 1.0, q);
                weights(q, &k, m, scale, &mut s);
                let go = &gos[x * hd..(x + 1) * hd];
                let (p, ds) = (&mut ps[x * n..x * n + m], &mut dss[x * n..x * n + m]);
                p.copy_from_slice(&s);
                for (j, dj) in ds.iter_mut().enumerate() {
                    *dj = dot(go, &v[j * hd..(j + 1) * hd]);
                }
                let mean = p
                    .iter()
                    .zip(ds.iter())
                    .fold(T::default(), |a, (&pj, &x)| a + pj * x);
                for (dj, &pj) in ds.iter_mut().zip(p.iter()) {
                    *dj = pj * (*dj - mean) * scale;
                }
                let (ds, k) = (&*ds, &k);
                sum_rows(&mut dq, 0..m, |j| (ds[j], &k[j * hd..(j + 1) * hd]));
                rope(
                    &dq,
                    &c.cos,
                    &c.sin,
                    i,
                    -1.0,
                    &mut dq_out[x * hd..(x + 1) * hd],
                );
            }
        }
        let (mut dk_new, mut dv_new) = (vec![T::default(); d.t * hd], vec![T::default(); d.t * hd]);
        let (dss, ps, qs, gos) = (&dss, &ps, &qs, &gos);
        for jn in 0..d.t {
            // Key p + jn is seen by the query rows of positions jn.. (causal).
            let j = d.p + jn;
            sum_rows(&mut dq, jn * rep..rows, |x| {
                (dss[x * n + j], &qs[x * hd..(x + 1) * hd])
            });
            rope(
                &dq,
                &c.cos,
                &c.sin,
                jn,
                -1.0,
                &mut dk_new[jn * hd..(jn + 1) * hd],
            );
            sum_rows(&mut dv_new[jn * hd..(jn + 1) * hd], jn * rep..rows, |x| {
                (ps[x * n + j], &gos[x * hd..(x + 1) * hd])
            });
        }
        (dq_out, dk_new, dv_new)
    }
);

impl Causal {
    fn dims(&self, l: &Layout) -> candle_core::Result<Dims> {
        let (b, t, width) = l.shape().dims3()?;
        if width != (self.heads + 2 * self.kv_heads) * self.head_dim
            || self.cos.len() != t * self.head_dim / 2
        {
            candle_core::bail!(
                "causal-attention: qkv {:?} does not match {} + 2x{} heads of {} at {} positions",
                l.dims(),
                self.heads,
                self.kv_heads,
                self.head_dim,
                self.cos.len() * 2 / self.head_dim.max(1)
            );
        }
        let p = match &self.prefix {
            Some((k, v)) => {
                let (pb, ph, p, pd) = k.dims4()?;
                if (pb, ph, pd) != (b, self.kv_heads, self.head_dim) || v.dims() != k.dims() {
                    candle_core::bail!(
                        "causal-attention: prefix {:?} does not match batch {b}",
                        k.dims()
                    );
                }
                p
            }
            None => 0,
        };
        Ok(Dims { b, t, p, width })
    }

    fn prefix_vec<T: candle_core::WithDType>(
        &self,
    ) -> candle_core::Result<Option<(Vec<T>, Vec<T>)>> {
        match &self.prefix {
            Some((k, v)) => Ok(Some((
                k.to_dtype(T::DTYPE)?.flatten_all()?.to_vec1()?,
                v.to_dtype(T::DTYPE)?.flatten_all()?.to_vec1()?,
            ))),
            None => Ok(None),
        }
    }

    fn run_forward<T: Real + candle_core::WithDType>(
        &self,
        qkv: &[T],
        d: &Dims,
    ) -> candle_core::Result<Vec<T>> {
        let pre = self.prefix_vec::<T>()?;
        let pre = pre.as_ref().map(|(k, v)| (k.as_slice(), v.as_slice()));
        let (hd, rep) = (self.head_dim, self.heads / self.kv_heads);
        let parts: Vec<Vec<T>> = (0..d.b * self.kv_heads)
            .into_par_iter()
            .map(|x| {
                let (bi, g) = (x / self.kv_heads, x % self.kv_heads);
                forward_group(self, d, qkv, pre, bi, g)
            })
            .collect();
        let mut out = vec![T::default(); d.b * d.t * self.heads * hd];
        for (x, part) in parts.iter().enumerate() {
            let (bi, g) = (x / self.kv_heads, x % self.kv_heads);
            for i in 0..d.t {
                let o = (bi * d.t + i) * self.heads * hd + g * rep * hd;
                out[o..o + rep * hd].copy_from_slice(&part[i * rep * hd..(i + 1) * rep * hd]);
            }
        }
        Ok(out)
    }

    fn run_backward<T: Real + candle_core::WithDType>(
        &self,
        qkv: &[T],
        ga: &[T],
        d: &Dims,
    ) -> candle_core::Result<Vec<T>> {
        let pre = self.prefix_vec::<T>()?;
        let pre = pre.as_ref().map(|(k, v)| (k.as_slice(), v.as_slice()));
        let (hd, rep) = (self.head_dim, self.heads / self.kv_heads);
        let parts: Vec<_> = (0..d.b * self.kv_heads)
            .into_par_iter()
            .map(|x| {
                let (bi, g) = (x / self.kv_heads, x % self.kv_heads);
                backward_group(self, d, qkv, pre, ga, bi, g)
            })
            .collect();
        let mut out = vec![T::default(); d.b * d.t * d.width];
        for (x, (dq, dk, dv)) in parts.iter().enumerate() {
            let (bi, g) = (x / self.kv_heads, x % self.kv_heads);
            for i in 0..d.t {
                let row = &mut out[(bi * d.t + i) * d.width..][..d.width];
                row[g * rep * hd..(g + 1) * rep * hd]
                    .copy_from_slice(&dq[i * rep * hd..(i + 1) * rep * hd]);
                let (ko, vo) = ((self.heads + g) * hd, (self.heads + self.kv_heads + g) * hd);
                row[ko..ko + hd].copy_from_slice(&dk[i * hd..(i + 1) * hd]);
                row[vo..vo + hd].copy_from_slice(&dv[i * hd..(i + 1) * hd]);
            }
        }
        Ok(out)
    }
}

impl CustomOp1 for Causal {
    fn name(&self) -> &'static str {
        "causal-attention"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dims(l)?;
        let out = match s {
            CpuStorage::F32(x) => {
                CpuStorage::F32(self.run_forward(contiguous(x, l, "causal-attention")?, &d)?)
            }
            CpuStorage::F64(x) => {
                CpuStorage::F64(self.run_forward(contiguous(x, l, "causal-attention")?, &d)?)
            }
            _ => candle_core::bail!("causal-attention: f32 or f64 only"),
        };
        Ok((out, Shape::from((d.b, d.t, self.heads * self.head_dim))))
    }
}

impl CustomOp2 for Causal {
    fn name(&self) -> &'static str {
        "causal-attention-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dims(l1)?;
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => CpuStorage::F32(self.run_backward(
                contiguous(x, l1, "causal-attention")?,
                contiguous(g, l2, "causal-attention")?,
                &d,
            )?),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => CpuStorage::F64(self.run_backward(
                contiguous(x, l1, "causal-attention")?,
                contiguous(g, l2, "causal-attention")?,
                &d,
            )?),
            _ => candle_core::bail!("causal-attention: inputs must both be f32 or both f64"),
        };
        Ok((out, l1.shape().clone()))
    }
}

impl Causal {
    /// Attention output `(b, t, heads·hd)` from stacked projections `qkv (b, t, (heads + 2·kv)·hd)`
    /// (no graph: the backward is [`Causal::input_grad`], called by the LLM's block op).
    pub fn forward(&self, qkv: &Tensor) -> candle_core::Result<Tensor> {
        qkv.detach().contiguous()?.apply_op1(self.clone())
    }

    /// dL/d`qkv` for the upstream gradient `ga (b, t, heads·hd)`.
    pub fn input_grad(&self, qkv: &Tensor, ga: &Tensor) -> candle_core::Result<Tensor> {
        qkv.detach()
            .contiguous()?
            .apply_op2(&ga.detach().contiguous()?, self.clone())
    }
}
