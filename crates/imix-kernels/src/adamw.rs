//! AdamW updates in place, in two passes over the storage and without temporaries. The candle
//! composition allocates about sixteen parameter-sized tensors per variable and step, which for a
//! fine-tuned encoder (22.7M weights) cost more than the backward itself (BENCHMARKS.md).
//! Each expression follows the composition's order of operations, with its factors rounded to the
//! variable's float type as candle's `affine` rounds them, so the results are the same.

use crate::storage::{contiguous, contiguous_mut};
use crate::Real;
use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor};

/// Factors of one update, in f64 (each is rounded to the variable's type, as `affine` does).
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    /// Gradient scale (clipping).
    pub scale: f64,
    /// First-moment decay and `1 - beta1`.
    pub b1: (f64, f64),
    /// Second-moment decay and `1 - beta2`.
    pub b2: (f64, f64),
    /// `1 / (1 - beta1^t)` and `1 / (1 - beta2^t)`.
    pub inv_c: (f64, f64),
    /// Denominator epsilon.
    pub eps: f64,
    /// `1 - lr · weight_decay` and the learning rate.
    pub decay_lr: (f64, f64),
}

/// [`AdamWStep`] in the variable's type.
struct Factors<T> {
    scale: T,
    b1: (T, T),
    b2: (T, T),
    inv_c: (T, T),
    eps: T,
    decay_lr: (T, T),
}

impl AdamWStep {
    fn to<T: Real>(self) -> Factors<T> {
        let p = |(a, b): (f64, f64)| (T::of(a), T::of(b));
        Factors { scale: T::of(self.scale), b1: p(self.b1), b2: p(self.b2), inv_c: p(self.inv_c), eps: T::of(self.eps), decay_lr: p(self.decay_lr) }
    }
}

crate::simd_dispatch!(
    fn moments<T: Real>(m: &mut [T], v: &mut [T], g: &[T], h: &Factors<T>) {
        let n = m.len();
        let (v, g) = (&mut v[..n], &g[..n]);
        for i in 0..n {
            let gs = g[i] * h.scale;
            m[i] = m[i] * h.b1.0 + gs * h.b1.1;
            v[i] = v[i] * h.b2.0 + gs * gs * h.b2.1;
        }
    }
);

crate::simd_dispatch!(
    fn apply<T: Real>(p: &mut [T], m: &[T], v: &[T], h: &Factors<T>) {
        let n = p.len();
        let (m, v) = (&m[..n], &v[..n]);
        for i in 0..n {
            let upd = (m[i] * h.inv_c.0) / ((v[i] * h.inv_c.1).sqrt() + h.eps);
            p[i] = p[i] * h.decay_lr.0 - upd * h.decay_lr.1;
        }
    }
);

/// One of the two passes: the moments `mv` (`2n`: m then v) from the gradient (`n`), or the
/// weights (`n`) from the moments.
struct Pass {
    h: AdamWStep,
    moments: bool,
}

impl Pass {
    fn run<T: Real>(&self, dst: &mut [T], src: &[T]) -> candle_core::Result<()> {
        let h = self.h.to::<T>();
        if self.moments {
            if dst.len() != 2 * src.len() {
                candle_core::bail!("adamw: {} moments for {} gradients", dst.len(), src.len());
            }
            let (m, v) = dst.split_at_mut(src.len());
            moments(m, v, src, &h);
        } else {
            if src.len() != 2 * dst.len() {
                candle_core::bail!("adamw: {} moments for {} weights", src.len(), dst.len());
            }
            let (m, v) = src.split_at(dst.len());
            apply(dst, m, v, &h);
        }
        Ok(())
    }
}

impl InplaceOp2 for Pass {
    fn name(&self) -> &'static str {
        if self.moments {
            "adamw-moments"
        } else {
            "adamw-apply"
        }
    }
    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let op = self.name();
        match (s1, s2) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => self.run(contiguous_mut(d, l1, op)?, contiguous(s, l2, op)?),
            (CpuStorage::F64(d), CpuStorage::F64(s)) => self.run(contiguous_mut(d, l1, op)?, contiguous(s, l2, op)?),
            _ => candle_core::bail!("{op}: weights, gradients and moments must all be f32 or all f64"),
        }
    }
}

/// One AdamW update of the parameter `p` (f32 or f64, contiguous, any shape) with gradient `g`,
/// its moments in `mv` (contiguous, same type, `2 · p.elem_count()` elements: first m, then v).
/// All in place.
pub fn step(p: &Tensor, mv: &Tensor, g: &Tensor, h: AdamWStep) -> candle_core::Result<()> {
    let g = g.contiguous()?;
    mv.inplace_op2(&g, &Pass { h, moments: true })?;
    p.inplace_op2(mv, &Pass { h, moments: false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The candle composition this replaces, as `AdamW::step` wrote it.
    fn composed(p: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor, (scale, b1, b2, c1, c2, eps, lr, wd): (f64, f64, f64, f64, f64, f64, f64, f64)) -> (Tensor, Tensor, Tensor) {
        let g = (g * scale).unwrap();
        let m = ((m * b1).unwrap() + (&g * (1.0 - b1)).unwrap()).unwrap();
        let v = ((v * b2).unwrap() + (g.sqr().unwrap() * (1.0 - b2)).unwrap()).unwrap();
        let upd = ((&m / c1).unwrap() / ((&v / c2).unwrap().sqrt().unwrap() + eps).unwrap()).unwrap();
        let p = ((p * (1.0 - lr * wd)).unwrap() - (upd * lr).unwrap()).unwrap();
        (p, m, v)
    }

    #[test]
    fn in_place_update_equals_the_candle_composition_bit_for_bit() {
        let dev = Device::Cpu;
        let n = 1000; // a tail after the vector blocks
        for dt in [DType::F32, DType::F64] {
            let mut p_ref = Tensor::randn(0f32, 1.0, (10, 100), &dev).unwrap().to_dtype(dt).unwrap();
            let (mut m_ref, mut v_ref) = (p_ref.zeros_like().unwrap(), p_ref.zeros_like().unwrap());
            let p = p_ref.copy().unwrap();
            let mv = Tensor::zeros(2 * n, dt, &dev).unwrap();
            for t in 1..=4 {
                let g = Tensor::randn(0f32, 0.1, (10, 100), &dev).unwrap().to_dtype(dt).unwrap();
                let (b1, b2, eps, lr, wd, scale) = (0.9f64, 0.999f64, 1e-8, 1e-3 * t as f64, 0.01, 0.7);
                let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
                (p_ref, m_ref, v_ref) = composed(&p_ref, &m_ref, &v_ref, &g, (scale, b1, b2, c1, c2, eps, lr, wd));
                let h = AdamWStep { scale, b1: (b1, 1.0 - b1), b2: (b2, 1.0 - b2), inv_c: (1.0 / c1, 1.0 / c2), eps, decay_lr: (1.0 - lr * wd, lr) };
                step(&p, &mv, &g, h).unwrap();
                let bits = |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&p), bits(&p_ref), "{dt:?} step {t}: weights");
                assert_eq!(bits(&mv.narrow(0, 0, n).unwrap()), bits(&m_ref), "{dt:?} step {t}: first moment");
                assert_eq!(bits(&mv.narrow(0, n, n).unwrap()), bits(&v_ref), "{dt:?} step {t}: second moment");
            }
        }
    }
}
