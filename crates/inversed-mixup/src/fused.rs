//! Fused RMSNorm and softmax with analytic backward passes: one pass over memory forward and one
//! backward, instead of the five to eight allocating ops of the differentiable compositions.

use candle_core::{backend::BackendStorage, CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType, D};

fn rows<T: WithDType>(v: &[T], l: &Layout) -> candle_core::Result<(Vec<f64>, usize)> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("fused op: contiguous input required".into()))?;
    let d = *l.dims().last().unwrap_or(&1);
    Ok((v[a..b].iter().map(|x| x.to_f64()).collect(), d))
}

fn store(v: Vec<f64>, like: &CpuStorage) -> CpuStorage {
    match like {
        CpuStorage::F64(_) => CpuStorage::F64(v),
        _ => CpuStorage::F32(v.into_iter().map(|x| x as f32).collect()),
    }
}

fn as_f64(s: &CpuStorage, l: &Layout) -> candle_core::Result<(Vec<f64>, usize)> {
    match s {
        CpuStorage::F32(v) => rows(v, l),
        CpuStorage::F64(v) => rows(v, l),
        _ => candle_core::bail!("fused op: f32 or f64 only, got {:?}", s.dtype()),
    }
}

fn vec_of(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()
}

/// Softmax over the last dimension.
struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (mut v, d) = as_f64(s, l)?;
        for row in v.chunks_mut(d) {
            let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            let mut z = 0.0;
            for x in row.iter_mut() {
                *x = (*x - m).exp();
                z += *x;
            }
            for x in row.iter_mut() {
                *x /= z;
            }
        }
        Ok((store(v, s), l.shape().clone()))
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

/// RMSNorm `x / rms(x) * w` over the last dimension.
struct RmsNorm(f64);

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (mut x, d) = as_f64(s1, l1)?;
        let (w, _) = as_f64(s2, l2)?;
        if w.len() != d {
            candle_core::bail!("fused-rms-norm: weight has {} elements, rows have {d}", w.len());
        }
        for row in x.chunks_mut(d) {
            let r = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / d as f64 + self.0).sqrt();
            for (v, wi) in row.iter_mut().zip(&w) {
                *v *= r * wi;
            }
        }
        Ok((store(x, s1), l1.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // With r = 1/rms(x): dx = r*w*g - x * r^3/d * sum(w*g*x);  dw = sum over rows of g*x*r.
        let (xv, gv, wv) = (vec_of(x)?, vec_of(g)?, vec_of(w)?);
        let d = wv.len();
        let mut dx = vec![0f64; xv.len()];
        let mut dw = vec![0f64; d];
        for ((xr, gr), dr) in xv.chunks(d).zip(gv.chunks(d)).zip(dx.chunks_mut(d)) {
            let r = 1.0 / (xr.iter().map(|v| v * v).sum::<f64>() / d as f64 + self.0).sqrt();
            let dot: f64 = xr.iter().zip(gr).zip(&wv).map(|((a, b), c)| a * b * c).sum();
            let k = r * r * r * dot / d as f64;
            for i in 0..d {
                dr[i] = r * wv[i] * gr[i] - xr[i] * k;
                dw[i] += gr[i] * xr[i] * r;
            }
        }
        let dt = x.dtype();
        let dx = Tensor::from_vec(dx, x.shape(), x.device())?.to_dtype(dt)?;
        let dw = Tensor::from_vec(dw, w.shape(), w.device())?.to_dtype(w.dtype())?;
        Ok((Some(dx), Some(dw)))
    }
}

/// RMSNorm over the last dimension, fused, with a backward pass (for input and weight).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm(eps as f64))
}

/// Rotate-half rotary embedding on `(b, h, t, d)` with tables `(t, d/2)`; its backward is the
/// inverse rotation, i.e. the same op with `-sin`.
struct Rope {
    cos: Vec<f64>,
    sin: Vec<f64>,
    neg_sin: bool,
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (mut v, d) = as_f64(s, l)?;
        let dims = l.dims();
        let t = dims[dims.len() - 2];
        let half = d / 2;
        if self.cos.len() != t * half {
            candle_core::bail!("fused-rope: tables hold {} values, expected {t} x {half}", self.cos.len());
        }
        let sign = if self.neg_sin { -1.0 } else { 1.0 };
        for (r, row) in v.chunks_mut(d).enumerate() {
            let p = (r % t) * half;
            for i in 0..half {
                let (c, sn) = (self.cos[p + i], sign * self.sin[p + i]);
                let (a, b) = (row[i], row[i + half]);
                row[i] = a * c - b * sn;
                row[i + half] = b * c + a * sn;
            }
        }
        Ok((store(v, s), l.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let inv = Rope { cos: self.cos.clone(), sin: self.sin.clone(), neg_sin: !self.neg_sin };
        Ok(Some(g.contiguous()?.apply_op1(inv)?))
    }
}

/// Rotate-half RoPE on `(b, h, t, d)`, fused, with a backward pass (tables are constants).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Rope { cos: vec_of(cos)?, sin: vec_of(sin)?, neg_sin: false })
}
