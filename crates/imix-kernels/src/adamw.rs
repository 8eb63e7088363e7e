//! AdamW updates in place, in two passes over f32 storage and without temporaries. The candle
//! composition allocates about sixteen parameter-sized tensors per variable and step, which for a
//! fine-tuned encoder (22.7M weights) cost more than the backward itself (BENCHMARKS.md).
//! Each expression follows the composition's order of f32 operations, so the results are the same.

use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor};

/// Hyper-parameters of one update, already in f32 as candle's `affine` uses them.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    /// Gradient scale (clipping).
    pub scale: f32,
    /// First-moment decay and `1 - beta1`.
    pub b1: (f32, f32),
    /// Second-moment decay and `1 - beta2`.
    pub b2: (f32, f32),
    /// `1 / (1 - beta1^t)` and `1 / (1 - beta2^t)`.
    pub inv_c: (f32, f32),
    /// Denominator epsilon.
    pub eps: f32,
    /// `1 - lr · weight_decay` and the learning rate.
    pub decay_lr: (f32, f32),
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("adamw: {what} must be contiguous f32"),
    }
}

fn contiguous_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("adamw: {what} must be contiguous f32"),
    }
}

/// Moments `mv` (`2n`: m then v) updated with the gradient `g` (`n`).
struct Moments(AdamWStep);

impl InplaceOp2 for Moments {
    fn name(&self) -> &'static str {
        "adamw-moments"
    }
    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let g = contiguous(s2, l2, "the gradient")?;
        let mv = contiguous_mut(s1, l1, "the moments")?;
        if mv.len() != 2 * g.len() {
            candle_core::bail!("adamw: {} moments for {} gradients", mv.len(), g.len());
        }
        let (m, v) = mv.split_at_mut(g.len());
        moments(m, v, g, &self.0);
        Ok(())
    }
}

crate::simd_dispatch!(
    fn moments(m: &mut [f32], v: &mut [f32], g: &[f32], h: &AdamWStep) {
        let n = m.len();
        let (v, g) = (&mut v[..n], &g[..n]);
        for i in 0..n {
            let gs = g[i] * h.scale;
            m[i] = m[i] * h.b1.0 + gs * h.b1.1;
            v[i] = v[i] * h.b2.0 + gs * gs * h.b2.1;
        }
    }
);

/// A parameter updated from its moments `mv` (`2n`).
struct Apply(AdamWStep);

impl InplaceOp2 for Apply {
    fn name(&self) -> &'static str {
        "adamw-apply"
    }
    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let mv = contiguous(s2, l2, "the moments")?;
        let p = contiguous_mut(s1, l1, "the parameter")?;
        if mv.len() != 2 * p.len() {
            candle_core::bail!("adamw: {} moments for {} weights", mv.len(), p.len());
        }
        let (m, v) = mv.split_at(p.len());
        apply(p, m, v, &self.0);
        Ok(())
    }
}

crate::simd_dispatch!(
    fn apply(p: &mut [f32], m: &[f32], v: &[f32], h: &AdamWStep) {
        let n = p.len();
        let (m, v) = (&m[..n], &v[..n]);
        for i in 0..n {
            let upd = (m[i] * h.inv_c.0) / ((v[i] * h.inv_c.1).sqrt() + h.eps);
            p[i] = p[i] * h.decay_lr.0 - upd * h.decay_lr.1;
        }
    }
);

/// One AdamW update of the f32 parameter `p` (contiguous, any shape) with gradient `g`, its
/// moments in `mv` (contiguous, `2 · p.elem_count()` elements: first m, then v). All in place.
pub fn step(p: &Tensor, mv: &Tensor, g: &Tensor, h: AdamWStep) -> candle_core::Result<()> {
    let g = g.contiguous()?;
    mv.inplace_op2(&g, &Moments(h))?;
    p.inplace_op2(mv, &Apply(h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
        let mut p_ref = Tensor::randn(0f32, 1.0, (10, 100), &dev).unwrap();
        let (mut m_ref, mut v_ref) = (p_ref.zeros_like().unwrap(), p_ref.zeros_like().unwrap());
        let p = p_ref.copy().unwrap();
        let mv = Tensor::zeros(2 * n, candle_core::DType::F32, &dev).unwrap();
        for t in 1..=4 {
            let g = Tensor::randn(0f32, 0.1, (10, 100), &dev).unwrap();
            let (b1, b2, eps, lr, wd, scale) = (0.9f64, 0.999f64, 1e-8, 1e-3 * t as f64, 0.01, 0.7);
            let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
            (p_ref, m_ref, v_ref) = composed(&p_ref, &m_ref, &v_ref, &g, (scale, b1, b2, c1, c2, eps, lr, wd));
            let h = AdamWStep {
                scale: scale as f32,
                b1: (b1 as f32, (1.0 - b1) as f32),
                b2: (b2 as f32, (1.0 - b2) as f32),
                inv_c: ((1.0 / c1) as f32, (1.0 / c2) as f32),
                eps: eps as f32,
                decay_lr: ((1.0 - lr * wd) as f32, lr as f32),
            };
            step(&p, &mv, &g, h).unwrap();
            let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&p), bits(&p_ref), "step {t}: weights");
            assert_eq!(bits(&mv.narrow(0, 0, n).unwrap()), bits(&m_ref), "step {t}: first moment");
            assert_eq!(bits(&mv.narrow(0, n, n).unwrap()), bits(&v_ref), "step {t}: second moment");
        }
    }
}
