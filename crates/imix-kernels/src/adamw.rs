//! AdamW updates in place, in one pass over weights, moments and gradient, without temporaries
//! and split across threads. The candle composition allocates about sixteen parameter-sized
//! tensors per variable and step, which for a fine-tuned encoder (22.7M weights) cost more than
//! the backward itself (BENCHMARKS.md).
//! Each expression follows the composition's order of operations, with its factors rounded to the
//! variable's float type as candle's `affine` rounds them, so the results are the same; an element
//! depends on nothing but itself, so neither the thread count nor the blocks change a bit.
//! [`sum_squares`] gives the gradient-norm term `g.sqr().sum_all()` without the squared copy.

use crate::storage::{contiguous, contiguous_mut};
use crate::Real;
use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

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
        Factors {
            scale: T::of(self.scale),
            b1: p(self.b1),
            b2: p(self.b2),
            inv_c: p(self.inv_c),
            eps: T::of(self.eps),
            decay_lr: p(self.decay_lr),
        }
    }
}

crate::simd_dispatch!(
    /// One update of a block: moments from the gradient, then the weights from the moments.
    fn update<T: Real>(p: &mut [T], m: &mut [T], v: &mut [T], g: &[T], h: &Factors<T>) {
        let n = p.len();
        let (m, v, g) = (&mut m[..n], &mut v[..n], &g[..n]);
        for i in 0..n {
            let gs = g[i] * h.scale;
            m[i] = m[i] * h.b1.0 + gs * h.b1.1;
            v[i] = v[i] * h.b2.0 + gs * gs * h.b2.1;
            let upd = (m[i] * h.inv_c.0) / ((v[i] * h.inv_c.1).sqrt() + h.eps);
            p[i] = p[i] * h.decay_lr.0 - upd * h.decay_lr.1;
        }
    }
);

/// Elements per parallel block (a block is worth a thread hand-off).
const BLOCK: usize = 1 << 15;

/// A variable's first and second moments, held outside candle so that one pass can write them
/// together with the weights.
#[derive(Debug, Clone, PartialEq)]
pub enum Moments {
    /// f32 `m` and `v`.
    F32(Vec<f32>, Vec<f32>),
    /// f64 `m` and `v`.
    F64(Vec<f64>, Vec<f64>),
}

impl Moments {
    /// Zero moments for `n` weights of type `dtype` (f32 or f64).
    pub fn zeros(n: usize, dtype: DType) -> candle_core::Result<Self> {
        match dtype {
            DType::F32 => Ok(Self::F32(vec![0.0; n], vec![0.0; n])),
            DType::F64 => Ok(Self::F64(vec![0.0; n], vec![0.0; n])),
            d => candle_core::bail!("adamw: f32 or f64 weights, not {d:?}"),
        }
    }

    /// Copies of `m` and `v` as tensors of `shape` (for checkpoints).
    pub fn to_tensors(
        &self,
        shape: &[usize],
        dev: &Device,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        match self {
            Self::F32(m, v) => Ok((
                Tensor::from_slice(m, shape, dev)?,
                Tensor::from_slice(v, shape, dev)?,
            )),
            Self::F64(m, v) => Ok((
                Tensor::from_slice(m, shape, dev)?,
                Tensor::from_slice(v, shape, dev)?,
            )),
        }
    }

    /// Moments from tensors `m` and `v` (any shape of the same element count), in `dtype`.
    pub fn from_tensors(m: &Tensor, v: &Tensor, dtype: DType) -> candle_core::Result<Self> {
        let flat = |t: &Tensor| t.to_dtype(dtype)?.flatten_all();
        let (m, v) = (flat(m)?, flat(v)?);
        match dtype {
            DType::F32 => Ok(Self::F32(m.to_vec1()?, v.to_vec1()?)),
            DType::F64 => Ok(Self::F64(m.to_vec1()?, v.to_vec1()?)),
            d => candle_core::bail!("adamw: f32 or f64 moments, not {d:?}"),
        }
    }
}

/// The update as an in-place op on the weights, reading the gradient; the moments ride along.
struct Update<'a> {
    h: AdamWStep,
    mv: Mutex<&'a mut Moments>,
}

fn run<T: Real>(
    p: &mut [T],
    m: &mut [T],
    v: &mut [T],
    g: &[T],
    h: &Factors<T>,
) -> candle_core::Result<()> {
    if m.len() != p.len() || v.len() != p.len() || g.len() != p.len() {
        candle_core::bail!(
            "adamw: {} weights, {} / {} moments, {} gradients",
            p.len(),
            m.len(),
            v.len(),
            g.len()
        );
    }
    p.par_chunks_mut(BLOCK)
        .zip(m.par_chunks_mut(BLOCK))
        .zip(v.par_chunks_mut(BLOCK))
        .zip(g.par_chunks(BLOCK))
        .for_each(|(((p, m), v), g)| update(p, m, v, g, h));
    Ok(())
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "adamw"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let mut mv = self
            .mv
            .lock()
            .map_err(|_| candle_core::Error::Msg("adamw: moments lock poisoned".into()))?;
        let g0 = l2
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("adamw: contiguous gradient required".into()))?;
        match (s1, s2, &mut **mv) {
            (CpuStorage::F32(p), CpuStorage::F32(g), Moments::F32(m, v)) => run(
                contiguous_mut(p, l1, "adamw")?,
                m,
                v,
                &g[g0.0..g0.1],
                &self.h.to(),
            ),
            (CpuStorage::F64(p), CpuStorage::F64(g), Moments::F64(m, v)) => run(
                contiguous_mut(p, l1, "adamw")?,
                m,
                v,
                &g[g0.0..g0.1],
                &self.h.to(),
            ),
            _ => candle_core::bail!(
                "adamw: weights, gradients and moments must all be f32 or all f64"
            ),
        }
    }
}

/// One AdamW update of the parameter `p` (f32 or f64, contiguous, any shape) with gradient `g`
/// and its moments `mv` (same type and element count). All in place.
pub fn step(p: &Tensor, mv: &mut Moments, g: &Tensor, h: AdamWStep) -> candle_core::Result<()> {
    let g = g.contiguous()?;
    p.inplace_op2(
        &g,
        &Update {
            h,
            mv: Mutex::new(mv),
        },
    )
}

/// `g.sqr().sum_all()` of an f32 tensor, summed in exactly the order candle sums it (so a
/// gradient norm, and the clipping it decides, stay bit-identical), without the squared copy.
/// Other types, and CPUs where candle sums differently, go through candle.
pub fn sum_squares(g: &Tensor) -> candle_core::Result<f32> {
    #[cfg(target_arch = "x86_64")]
    if g.dtype() == DType::F32 {
        let g = g.contiguous()?;
        let (s, l) = g.storage_and_layout();
        if let candle_core::Storage::Cpu(CpuStorage::F32(v)) = &*s {
            let x = contiguous(v, l, "sum_squares")?;
            return Ok(if std::is_x86_feature_detected!("avx2") {
                squares_in_candle_avx_order(x)
            } else {
                x.iter().fold(0.0, |s, v| s + v * v)
            });
        }
    }
    g.sqr()?.sum_all()?.to_scalar::<f32>()
}

crate::simd_dispatch!(
    /// candle's AVX `vec_sum` order over squares: 32 running sums (four 8-lane registers) over
    /// blocks of 32, the registers added pairwise, each register's halves, then two horizontal
    /// adds; the tail added one by one.
    fn squares_in_candle_avx_order(x: &[f32]) -> f32 {
        let np = x.len() & !31;
        let mut acc = [0f32; 32];
        for c in x[..np].chunks_exact(32) {
            for l in 0..32 {
                acc[l] += c[l] * c[l];
            }
        }
        let r: [f32; 8] =
            std::array::from_fn(|l| (acc[l] + acc[8 + l]) + (acc[16 + l] + acc[24 + l]));
        let t0 = [r[0] + r[4], r[1] + r[5], r[2] + r[6], r[3] + r[7]];
        let mut s = (t0[0] + t0[1]) + (t0[2] + t0[3]);
        for v in &x[np..] {
            s += v * v;
        }
        s
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The candle composition this replaces, as `AdamW::step` wrote it.
    fn composed(
        p: &Tensor,
        m: &Tensor,
        v: &Tensor,
        g: &Tensor,
        (scale, b1, b2, c1, c2, eps, lr, wd): (f64, f64, f64, f64, f64, f64, f64, f64),
    ) -> (Tensor, Tensor, Tensor) {
        let g = (g * scale).unwrap();
        let m = ((m * b1).unwrap() + (&g * (1.0 - b1)).unwrap()).unwrap();
        let v = ((v * b2).unwrap() + (g.sqr().unwrap() * (1.0 - b2)).unwrap()).unwrap();
        let upd =
            ((&m / c1).unwrap() / ((&v / c2).unwrap().sqrt().unwrap() + eps).unwrap()).unwrap();
        let p = ((p * (1.0 - lr * wd)).unwrap() - (upd * lr).unwrap()).unwrap();
        (p, m, v)
    }

    #[test]
    fn in_place_update_equals_the_candle_composition_bit_for_bit() {
        let dev = Device::Cpu;
        let n = 1000; // a tail after the vector blocks
        for dt in [DType::F32, DType::F64] {
            let mut p_ref = Tensor::randn(0f32, 1.0, (10, 100), &dev)
                .unwrap()
                .to_dtype(dt)
                .unwrap();
            let (mut m_ref, mut v_ref) = (p_ref.zeros_like().unwrap(), p_ref.zeros_like().unwrap());
            let p = p_ref.copy().unwrap();
            let mut mv = Moments::zeros(n, dt).unwrap();
            for t in 1..=4 {
                let g = Tensor::randn(0f32, 0.1, (10, 100), &dev)
                    .unwrap()
                    .to_dtype(dt)
                    .unwrap();
                let (b1, b2, eps, lr, wd, scale) =
                    (0.9f64, 0.999f64, 1e-8, 1e-3 * t as f64, 0.01, 0.7);
                let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
                (p_ref, m_ref, v_ref) = composed(
                    &p_ref,
                    &m_ref,
                    &v_ref,
                    &g,
                    (scale, b1, b2, c1, c2, eps, lr, wd),
                );
                let h = AdamWStep {
                    scale,
                    b1: (b1, 1.0 - b1),
                    b2: (b2, 1.0 - b2),
                    inv_c: (1.0 / c1, 1.0 / c2),
                    eps,
                    decay_lr: (1.0 - lr * wd, lr),
                };
                step(&p, &mut mv, &g, h).unwrap();
                let (m, v) = mv.to_tensors(&[10, 100], &dev).unwrap();
                let bits = |t: &Tensor| {
                    t.flatten_all()
                        .unwrap()
                        .to_dtype(DType::F64)
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>()
                };
                assert_eq!(bits(&p), bits(&p_ref), "{dt:?} step {t}: weights");
                assert_eq!(bits(&m), bits(&m_ref), "{dt:?} step {t}: first moment");
                assert_eq!(bits(&v), bits(&v_ref), "{dt:?} step {t}: second moment");
            }
        }
    }

    /// Several parallel blocks and a tail: the same bits as the composition (a second variable
    /// larger than one block).
    #[test]
    fn blocks_across_threads_change_nothing() {
        let dev = Device::Cpu;
        let shape = (3, BLOCK + 77);
        let p_ref = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
        let g = Tensor::randn(0f32, 0.1, shape, &dev).unwrap();
        let (m0, v0) = (p_ref.zeros_like().unwrap(), p_ref.zeros_like().unwrap());
        let (pr, mr, vr) = composed(
            &p_ref,
            &m0,
            &v0,
            &g,
            (1.0, 0.9, 0.999, 0.1, 0.001, 1e-8, 1e-3, 0.01),
        );
        let p = p_ref.copy().unwrap();
        let mut mv = Moments::zeros(p.elem_count(), DType::F32).unwrap();
        let h = AdamWStep {
            scale: 1.0,
            b1: (0.9, 0.1),
            b2: (0.999, 0.001),
            inv_c: (1.0 / 0.1, 1.0 / 0.001),
            eps: 1e-8,
            decay_lr: (1.0 - 1e-5, 1e-3),
        };
        step(&p, &mut mv, &g, h).unwrap();
        let (m, v) = mv.to_tensors(&[3, BLOCK + 77], &dev).unwrap();
        let bits = |t: &Tensor| {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&p), bits(&pr));
        assert_eq!(bits(&m), bits(&mr));
        assert_eq!(bits(&v), bits(&vr));
    }

    /// The sum of squares equals candle's `sqr().sum_all()` bit for bit (lengths around 32).
    #[test]
    fn sum_squares_equals_candle_bit_for_bit() {
        let dev = Device::Cpu;
        for n in [1, 31, 32, 33, 1000, 4099, 100_003] {
            let g = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
            let want = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(
                sum_squares(&g).unwrap().to_bits(),
                want.to_bits(),
                "length {n}"
            );
        }
        let g = Tensor::randn(0f32, 1.0, (40, 30), &dev)
            .unwrap()
            .t()
            .unwrap();
        let want = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(
            sum_squares(&g).unwrap().to_bits(),
            want.to_bits(),
            "a transposed view"
        );
    }
}
