//! Fused RMSNorm, softmax and rotate-half RoPE with analytic backward passes: one pass over memory
//! forward and one backward, instead of the five to ten allocating ops of the differentiable
//! compositions. Kernels run natively in f32 (training) and f64 (finite-difference tests).

use crate::lanes::dot3;
use crate::storage::contiguous;
use crate::Real;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor, D};
use std::mem::MaybeUninit;

/// Applies `f` to the f32 or f64 data of `s` and wraps the result in the same dtype.
macro_rules! dispatch {
    ($s:expr, $l:expr, |$v:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(x) => {
                let $v = contiguous(x, $l, "fused op")?;
                CpuStorage::F32($body)
            }
            CpuStorage::F64(x) => {
                let $v = contiguous(x, $l, "fused op")?;
                CpuStorage::F64($body)
            }
            other => candle_core::bail!(
                "fused op: f32 or f64 only, got {:?}",
                candle_core::backend::BackendStorage::dtype(other)
            ),
        }
    };
}

fn softmax_rows<T: Real>(x: &[T], d: usize) -> Vec<T> {
    let mut out = x.to_vec();
    for row in out.chunks_mut(d) {
        let m = row
            .iter()
            .copied()
            .fold(row[0], |a, b| if b > a { b } else { a });
        let mut z = T::of(0.0);
        for v in row.iter_mut() {
            *v = (*v - m).exp();
            z = z + *v;
        }
        for v in row.iter_mut() {
            *v = *v / z;
        }
    }
    out
}

/// Softmax over the last dimension.
struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = *l.dims().last().unwrap_or(&1);
        Ok((dispatch!(s, l, |v| softmax_rows(v, d)), l.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // dx = y * (g - sum(g * y))
        let s = (g * y)?.sum_keepdim(D::Minus1)?;
        Ok(Some((y * g.broadcast_sub(&s)?)?))
    }
}

/// Softmax over the last dimension, fused, with a backward pass.
pub fn softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Softmax)
}

/// Rows per parallel task: whole rows, at least ~16K elements each.
fn rows_per_task(d: usize) -> usize {
    (16_384 / d.max(1)).max(1)
}

crate::simd_dispatch!(
    /// RMSNorm of whole rows of `xs` into `out` (every element written).
    fn rms_chunk<T: Real>(out: &mut [MaybeUninit<T>], xs: &[T], w: &[T], ones: &[T], eps: f64) {
        let d = w.len();
        for (o, row) in out.chunks_mut(d).zip(xs.chunks(d)) {
            let ms = dot3(row, row, ones) / T::of(d as f64);
            let r = T::of(1.0) / (ms + T::of(eps)).sqrt();
            for ((o, &v), &wi) in o.iter_mut().zip(row).zip(w) {
                o.write(v * r * wi);
            }
        }
    }
);

fn rms_rows<T: Real + Send + Sync>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    use rayon::prelude::*;
    let d = w.len();
    let ones = vec![T::of(1.0); d];
    let per = (d * rows_per_task(d)).max(1);
    let mut out: Vec<T> = Vec::with_capacity(x.len());
    out.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(per)
        .zip(x.par_chunks(per))
        .for_each(|(o, xs)| rms_chunk(o, xs, w, &ones, eps));
    // SAFETY: the chunks cover all x.len() elements and `rms_chunk` writes every one.
    unsafe { out.set_len(x.len()) };
    out
}

/// With r = 1/rms(x): dx = r*w*g - x * r^3/d * sum(w*g*x);  dw = sum over rows of g*x*r.
fn rms_bwd_rows<T: Real>(x: &[T], w: &[T], g: &[T], eps: f64) -> (Vec<T>, Vec<T>) {
    let d = w.len();
    let mut dx = vec![T::of(0.0); x.len()];
    let mut dw = vec![T::of(0.0); d];
    for ((xr, gr), dr) in x.chunks(d).zip(g.chunks(d)).zip(dx.chunks_mut(d)) {
        let ms = xr.iter().map(|&v| v * v).sum::<T>() / T::of(d as f64);
        let r = T::of(1.0) / (ms + T::of(eps)).sqrt();
        let dot: T = xr
            .iter()
            .zip(gr)
            .zip(w)
            .map(|((&a, &b), &c)| a * b * c)
            .sum();
        let k = r * r * r * dot / T::of(d as f64);
        for i in 0..d {
            dr[i] = r * w[i] * gr[i] - xr[i] * k;
            dw[i] = dw[i] + gr[i] * xr[i] * r;
        }
    }
    (dx, dw)
}

/// RMSNorm `x / rms(x) * w` over the last dimension.
struct RmsNorm(f64);

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = *l1.dims().last().unwrap_or(&1);
        if l2.shape().elem_count() != d {
            candle_core::bail!(
                "fused-rms-norm: weight has {} elements, rows have {d}",
                l2.shape().elem_count()
            );
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => CpuStorage::F32(rms_rows(
                contiguous(x, l1, "fused op")?,
                contiguous(w, l2, "fused op")?,
                self.0,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(w)) => CpuStorage::F64(rms_rows(
                contiguous(x, l1, "fused op")?,
                contiguous(w, l2, "fused op")?,
                self.0,
            )),
            _ => {
                candle_core::bail!("fused-rms-norm: input and weight must both be f32 or both f64")
            }
        };
        Ok((out, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let flat = |t: &Tensor| t.flatten_all();
        let (dx, dw) = match x.dtype() {
            DType::F32 => {
                let (dx, dw) = rms_bwd_rows(
                    &flat(x)?.to_vec1::<f32>()?,
                    &flat(w)?.to_vec1::<f32>()?,
                    &flat(g)?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                    self.0,
                );
                (
                    Tensor::from_vec(dx, x.shape(), x.device())?,
                    Tensor::from_vec(dw, w.shape(), w.device())?,
                )
            }
            _ => {
                let (dx, dw) = rms_bwd_rows(
                    &flat(x)?.to_vec1::<f64>()?,
                    &flat(w)?.to_vec1::<f64>()?,
                    &flat(g)?.to_dtype(DType::F64)?.to_vec1::<f64>()?,
                    self.0,
                );
                (
                    Tensor::from_vec(dx, x.shape(), x.device())?,
                    Tensor::from_vec(dw, w.shape(), w.device())?,
                )
            }
        };
        Ok((Some(dx), Some(dw)))
    }
}

/// RMSNorm over the last dimension, fused, with a backward pass (for input and weight).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op2(&w.contiguous()?, RmsNorm(eps as f64))
}

fn rope_rows<T: Real>(x: &[T], cos: &[f64], sin: &[f64], t: usize, d: usize, sign: f64) -> Vec<T> {
    let half = d / 2;
    let mut out = x.to_vec();
    for (r, row) in out.chunks_mut(d).enumerate() {
        let p = (r % t) * half;
        for i in 0..half {
            let (c, s) = (T::of(cos[p + i]), T::of(sign * sin[p + i]));
            let (a, b) = (row[i], row[i + half]);
            row[i] = a * c - b * s;
            row[i + half] = b * c + a * s;
        }
    }
    out
}

/// Rotate-half rotary embedding on `(b, h, t, d)` with tables `(t, d/2)`; its backward is the
/// inverse rotation, i.e. the same op with `-sin`.
struct Rope {
    cos: Vec<f64>,
    sin: Vec<f64>,
    sign: f64,
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = l.dims();
        let (t, d) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        if self.cos.len() != t * (d / 2) {
            candle_core::bail!(
                "fused-rope: tables hold {} values, expected {t} x {}",
                self.cos.len(),
                d / 2
            );
        }
        Ok((
            dispatch!(s, l, |v| rope_rows(
                v, &self.cos, &self.sin, t, d, self.sign
            )),
            l.shape().clone(),
        ))
    }
    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let inv = Rope {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            sign: -self.sign,
        };
        Ok(Some(g.contiguous()?.apply_op1(inv)?))
    }
}

/// Rotate-half RoPE on `(b, h, t, d)`, fused, with a backward pass (tables are constants).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let v = |t: &Tensor| t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>();
    x.contiguous()?.apply_op1(Rope {
        cos: v(cos)?,
        sin: v(sin)?,
        sign: 1.0,
    })
}

/// With r = 1/rms(x): dx = r*w*g - x * r^3/d * sum(w*g*x) (the input gradient alone), plus
/// `plus` (a residual gradient folded in) when given; into a fresh output, written once.
fn rms_input_grad_rows<T: Real + Send + Sync>(
    x: &[T],
    w: &[T],
    g: &[T],
    eps: f64,
    plus: Option<&[T]>,
) -> Vec<T> {
    use rayon::prelude::*;
    let d = w.len();
    let ones = vec![T::of(1.0); d];
    let per = (d * rows_per_task(d)).max(1);
    let mut dx: Vec<T> = Vec::with_capacity(x.len());
    let out = &mut dx.spare_capacity_mut()[..x.len()];
    match plus {
        Some(p) => out
            .par_chunks_mut(per)
            .zip(
                x.par_chunks(per)
                    .zip(g.par_chunks(per))
                    .zip(p.par_chunks(per)),
            )
            .for_each(|(dxs, ((xs, gs), ps))| rms_grad_chunk(dxs, xs, gs, Some(ps), w, &ones, eps)),
        None => out
            .par_chunks_mut(per)
            .zip(x.par_chunks(per).zip(g.par_chunks(per)))
            .for_each(|(dxs, (xs, gs))| rms_grad_chunk(dxs, xs, gs, None, w, &ones, eps)),
    }
    // SAFETY: the chunks cover all x.len() elements and `rms_grad_chunk` writes every one.
    unsafe { dx.set_len(x.len()) };
    dx
}

crate::simd_dispatch!(
    /// Rows of [`rms_input_grad_rows`]; writes every element of `dxs`.
    fn rms_grad_chunk<T: Real>(
        dxs: &mut [MaybeUninit<T>],
        xs: &[T],
        gs: &[T],
        ps: Option<&[T]>,
        w: &[T],
        ones: &[T],
        eps: f64,
    ) {
        let d = w.len();
        for (ri, ((xr, gr), dr)) in xs
            .chunks(d)
            .zip(gs.chunks(d))
            .zip(dxs.chunks_mut(d))
            .enumerate()
        {
            let ms = dot3(xr, xr, ones) / T::of(d as f64);
            let r = T::of(1.0) / (ms + T::of(eps)).sqrt();
            let k = r * r * r * dot3(xr, gr, w) / T::of(d as f64);
            match ps {
                Some(ps) => {
                    let pr = &ps[ri * d..(ri + 1) * d];
                    for i in 0..d {
                        dr[i].write(pr[i] + r * w[i] * gr[i] - xr[i] * k);
                    }
                }
                None => {
                    for i in 0..d {
                        dr[i].write(r * w[i] * gr[i] - xr[i] * k);
                    }
                }
            }
        }
    }
);

/// Forward-only kernel: the RMSNorm input gradient from `(x, w, g)`.
struct RmsInputGrad {
    eps: f64,
    /// A gradient to add to the result (a residual branch), folded into the same pass.
    plus: Option<Tensor>,
}

impl candle_core::CustomOp3 for RmsInputGrad {
    fn name(&self) -> &'static str {
        "rms-norm-input-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.shape() != l3.shape() || l2.shape().elem_count() != *l1.dims().last().unwrap_or(&0) {
            candle_core::bail!(
                "rms-norm-input-grad: x {:?}, w {:?}, g {:?}",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let n = l1.shape().elem_count();
        if self.plus.as_ref().is_some_and(|p| p.elem_count() != n) {
            candle_core::bail!(
                "rms-norm-input-grad: the added gradient does not match x {:?}",
                l1.dims()
            );
        }
        // The added gradient is read in place (it is contiguous: see `rms_norm_input_grad_plus`).
        let plus = self.plus.as_ref().map(|p| p.storage_and_layout());
        let plus = match &plus {
            Some((st, l)) => match &**st {
                candle_core::Storage::Cpu(c) => Some((c, *l)),
                _ => {
                    candle_core::bail!("rms-norm-input-grad: the added gradient is not on the CPU")
                }
            },
            None => None,
        };
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(g)) => {
                let p = match plus {
                    Some((CpuStorage::F32(p), lp)) => {
                        Some(contiguous(p.as_slice(), lp, "fused op")?)
                    }
                    Some(_) => {
                        candle_core::bail!("rms-norm-input-grad: the added gradient is not f32")
                    }
                    None => None,
                };
                CpuStorage::F32(rms_input_grad_rows(
                    contiguous(x, l1, "fused op")?,
                    contiguous(w, l2, "fused op")?,
                    contiguous(g, l3, "fused op")?,
                    self.eps,
                    p,
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(g)) => {
                let p = match plus {
                    Some((CpuStorage::F64(p), lp)) => {
                        Some(contiguous(p.as_slice(), lp, "fused op")?)
                    }
                    Some(_) => {
                        candle_core::bail!("rms-norm-input-grad: the added gradient is not f64")
                    }
                    None => None,
                };
                CpuStorage::F64(rms_input_grad_rows(
                    contiguous(x, l1, "fused op")?,
                    contiguous(w, l2, "fused op")?,
                    contiguous(g, l3, "fused op")?,
                    self.eps,
                    p,
                ))
            }
            _ => candle_core::bail!("rms-norm-input-grad: inputs must all be f32 or all f64"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// dL/dx of `rms_norm(x, w)` for the upstream gradient `g` (no graph; `w` is treated as constant).
pub fn rms_norm_input_grad(
    x: &Tensor,
    w: &Tensor,
    g: &Tensor,
    eps: f32,
) -> candle_core::Result<Tensor> {
    x.detach().contiguous()?.apply_op3(
        &w.detach().contiguous()?,
        &g.detach().contiguous()?,
        RmsInputGrad {
            eps: eps as f64,
            plus: None,
        },
    )
}

/// `plus + dL/dx` of `rms_norm(x, w)` in one pass (a residual branch's gradient folded in).
pub fn rms_norm_input_grad_plus(
    x: &Tensor,
    w: &Tensor,
    g: &Tensor,
    eps: f32,
    plus: &Tensor,
) -> candle_core::Result<Tensor> {
    x.detach().contiguous()?.apply_op3(
        &w.detach().contiguous()?,
        &g.detach().contiguous()?,
        RmsInputGrad {
            eps: eps as f64,
            plus: Some(plus.detach().contiguous()?),
        },
    )
}

crate::simd_dispatch!(
    /// LayerNorm of whole rows of `xs` into `out` (every element written).
    fn ln_chunk<T: Real>(out: &mut [MaybeUninit<T>], xs: &[T], w: &[T], b: &[T], eps: f64) {
        let d = w.len();
        let n = T::of(d as f64);
        for (o, row) in out.chunks_mut(d).zip(xs.chunks(d)) {
            let mean = crate::lanes::sum(row) / n;
            let r = T::of(1.0) / (crate::lanes::sum_sq_dev(row, mean) / n + T::of(eps)).sqrt();
            for i in 0..d {
                o[i].write((row[i] - mean) * r * w[i] + b[i]);
            }
        }
    }
);

fn ln_rows<T: Real + Send + Sync>(x: &[T], w: &[T], b: &[T], eps: f64) -> Vec<T> {
    use rayon::prelude::*;
    let per = (w.len() * rows_per_task(w.len())).max(1);
    let mut out: Vec<T> = Vec::with_capacity(x.len());
    out.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(per)
        .zip(x.par_chunks(per))
        .for_each(|(o, xs)| ln_chunk(o, xs, w, b, eps));
    // SAFETY: the chunks cover all x.len() elements and `ln_chunk` writes every one.
    unsafe { out.set_len(x.len()) };
    out
}

crate::simd_dispatch!(
    /// With x̂ = (x - mean)·r and gw = g·w: dx = r·(gw - mean(gw) - x̂·mean(gw·x̂)); dw = Σ g·x̂;
    /// db = Σ g over rows.
    fn ln_bwd_rows<T: Real>(
        x: &[T],
        w: &[T],
        g: &[T],
        eps: f64,
        dx: &mut [T],
        dw: &mut [T],
        db: &mut [T],
    ) {
        let d = w.len();
        let n = T::of(d as f64);
        let mut xh = vec![T::of(0.0); d];
        let mut gw = vec![T::of(0.0); d];
        for ((xr, gr), dr) in x.chunks(d).zip(g.chunks(d)).zip(dx.chunks_mut(d)) {
            let mean = crate::lanes::sum(xr) / n;
            let r = T::of(1.0) / (crate::lanes::sum_sq_dev(xr, mean) / n + T::of(eps)).sqrt();
            for i in 0..d {
                xh[i] = (xr[i] - mean) * r;
                gw[i] = gr[i] * w[i];
                dw[i] = dw[i] + gr[i] * xh[i];
                db[i] = db[i] + gr[i];
            }
            let mg = crate::lanes::sum(&gw) / n;
            let mgx = crate::lanes::dot(&gw, &xh) / n;
            for i in 0..d {
                dr[i] = r * (gw[i] - mg - xh[i] * mgx);
            }
        }
    }
);

/// LayerNorm `(x - mean) / sqrt(var + eps) * w + b` over the last dimension.
struct LayerNorm(f64);

impl candle_core::CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = *l1.dims().last().unwrap_or(&1);
        if l2.shape().elem_count() != d || l3.shape().elem_count() != d {
            candle_core::bail!(
                "fused-layer-norm: weight {:?} and bias {:?} for rows of {d}",
                l2.dims(),
                l3.dims()
            );
        }
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => {
                CpuStorage::F32(ln_rows(
                    contiguous(x, l1, "fused op")?,
                    contiguous(w, l2, "fused op")?,
                    contiguous(b, l3, "fused op")?,
                    self.0,
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => {
                CpuStorage::F64(ln_rows(
                    contiguous(x, l1, "fused op")?,
                    contiguous(w, l2, "fused op")?,
                    contiguous(b, l3, "fused op")?,
                    self.0,
                ))
            }
            _ => candle_core::bail!(
                "fused-layer-norm: input, weight and bias must all be f32 or all f64"
            ),
        };
        Ok((out, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        fn run<T: Real + candle_core::WithDType>(
            x: &Tensor,
            w: &Tensor,
            b: &Tensor,
            g: &Tensor,
            eps: f64,
        ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
            let v = |t: &Tensor| t.flatten_all()?.to_dtype(T::DTYPE)?.to_vec1::<T>();
            let (xv, wv, gv) = (v(x)?, v(w)?, v(g)?);
            let d = wv.len();
            let (mut dx, mut dw, mut db) = (
                vec![T::of(0.0); xv.len()],
                vec![T::of(0.0); d],
                vec![T::of(0.0); d],
            );
            ln_bwd_rows(&xv, &wv, &gv, eps, &mut dx, &mut dw, &mut db);
            Ok((
                Tensor::from_vec(dx, x.shape(), x.device())?,
                Tensor::from_vec(dw, w.shape(), w.device())?,
                Tensor::from_vec(db, b.shape(), b.device())?,
            ))
        }
        let (dx, dw, db) = match x.dtype() {
            DType::F32 => run::<f32>(x, w, b, g, self.0)?,
            _ => run::<f64>(x, w, b, g, self.0)?,
        };
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// LayerNorm over the last dimension, fused, with a backward pass (input, weight and bias): the
/// differentiable replacement of `candle_nn::ops::layer_norm_slow`'s ten ops.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNorm(eps as f64))
}
