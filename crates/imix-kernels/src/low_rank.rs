//! A constant low-rank delta added to a frozen product, for weights that cannot absorb it (a
//! LoRA on quantised blocks: `W + scale · B A` would need a dense `W`).
//!
//! The delta of `x (m, inp)` is `u = scale · x Aᵀ` (`A` stacks every piece's rows), then for
//! each piece `y[:, rows] += u[:, cols] B_pᵀ`: one `B` per run of output rows (Q, K and V of a
//! stacked projection each have their own), so no zero blocks are multiplied.

use crate::storage::contiguous;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use std::sync::Arc;

/// Output rows `row0..row0 + rows` add `u[:, col0..col0 + rank] Bᵀ`, `B (rows, rank)`.
#[derive(Debug, Clone)]
pub struct Piece {
    /// First output row.
    pub row0: usize,
    /// First column of `u` (row of the stacked `A`).
    pub col0: usize,
    /// `B`, `(rows, rank)` row-major.
    pub b: Vec<f32>,
    /// Its rank.
    pub rank: usize,
}

impl Piece {
    fn rows(&self) -> usize {
        self.b.len() / self.rank.max(1)
    }
}

/// `A (width, inp)` stacked over the pieces, their `B`s, and the scale.
#[derive(Debug)]
pub struct LowRank {
    a: Vec<f32>,
    width: usize,
    inp: usize,
    out: usize,
    pieces: Vec<Piece>,
    scale: f32,
}

impl LowRank {
    /// `None` unless `a` is `width × inp` and every piece fits inside `out` rows and `width`
    /// columns.
    pub fn new(
        a: Vec<f32>,
        (width, inp, out): (usize, usize, usize),
        pieces: Vec<Piece>,
        scale: f32,
    ) -> Option<Self> {
        let fits = |p: &Piece| {
            p.rank > 0
                && p.b.len().is_multiple_of(p.rank)
                && p.row0 + p.rows() <= out
                && p.col0 + p.rank <= width
        };
        (a.len() == width * inp && pieces.iter().all(fits)).then_some(Self {
            a,
            width,
            inp,
            out,
            pieces,
            scale,
        })
    }

    /// `(out, inp)`: the shape of the weight it adds to.
    pub fn dims(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// `u = scale · x Aᵀ`, `(m, width)`: the scale applies to the rank-sized product, as a
    /// LoRA's training forward does.
    pub fn project(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut u = product(x, &self.a, (m, self.inp, self.width));
        u.iter_mut().for_each(|v| *v *= self.scale);
        u
    }

    /// `u` of [`LowRank::project`] transposed to `(width, m)`, the layout [`LowRank::add_rows`]
    /// reads: each weight row's delta is then `rank` multiply-adds over `m` contiguous lanes.
    pub fn project_t(&self, x: &[f32], m: usize) -> Vec<f32> {
        let u = self.project(x, m);
        let mut t = vec![0f32; u.len()];
        for i in 0..m {
            for c in 0..self.width {
                t[c * m + i] = u[i * self.width + c];
            }
        }
        t
    }

    /// Adds the delta of weight rows `o0..o0 + n` to `yt`, `yt[r * m + i]` for row `i` of `x`
    /// and weight row `o0 + r`, from `ut` of [`LowRank::project_t`].
    pub fn add_rows(&self, ut: &[f32], m: usize, o0: usize, n: usize, yt: &mut [f32]) {
        for p in &self.pieces {
            let (lo, hi) = (p.row0.max(o0), (p.row0 + p.rows()).min(o0 + n));
            if lo < hi {
                add_product(
                    &p.b[(lo - p.row0) * p.rank..(hi - p.row0) * p.rank],
                    p.rank,
                    &ut[p.col0 * m..(p.col0 + p.rank) * m],
                    m,
                    &mut yt[(lo - o0) * m..(hi - o0) * m],
                );
            }
        }
    }

    /// `y (m, out) += delta(x)` for `x (m, inp)`.
    pub fn add_to(&self, x: &[f32], m: usize, y: &mut [f32]) {
        let u = self.project(x, m);
        for p in &self.pieces {
            let rows = p.rows();
            let uc: Vec<f32> = (0..m)
                .flat_map(|i| u[i * self.width + p.col0..][..p.rank].iter().copied())
                .collect();
            let d = product(&uc, &p.b, (m, p.rank, rows));
            for i in 0..m {
                let yr = &mut y[i * self.out + p.row0..][..rows];
                yr.iter_mut().zip(&d[i * rows..]).for_each(|(y, d)| *y += d);
            }
        }
    }

    /// The delta's input gradient for `g (m, out)`: `scale · (Σ_p g[:, rows_p] B_p) A`, `(m, inp)`.
    pub fn input_grad(&self, g: &[f32], m: usize) -> Vec<f32> {
        let mut v = vec![0f32; m * self.width];
        for p in &self.pieces {
            let rows = p.rows();
            let gp: Vec<f32> = (0..m)
                .flat_map(|i| g[i * self.out + p.row0..][..rows].iter().copied())
                .collect();
            let vp = crate::matmul::matmul(&gp, &p.b, (m, rows, p.rank), crate::matmul::Rhs::Plain);
            for i in 0..m {
                let vr = &mut v[i * self.width + p.col0..][..p.rank];
                vr.iter_mut()
                    .zip(&vp[i * p.rank..])
                    .for_each(|(v, d)| *v += d);
            }
        }
        v.iter_mut().for_each(|x| *x *= self.scale);
        crate::matmul::matmul(
            &v,
            &self.a,
            (m, self.width, self.inp),
            crate::matmul::Rhs::Plain,
        )
    }

    /// `y + delta(x)` as a graph node, differentiable in `y` and `x`.
    pub fn add(self: &Arc<Self>, y: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        y.contiguous()?
            .apply_op2(&x.contiguous()?, AddLowRank(self.clone()))
    }
}

crate::simd_dispatch! {
    /// `y (n, m) += b (n, r) · ut (r, m)`: dot products of length `r` for one row of `x`, rows of
    /// `m` lanes otherwise.
    fn add_product(b: &[f32], r: usize, ut: &[f32], m: usize, y: &mut [f32]) {
        if m == 1 {
            for (y, br) in y.iter_mut().zip(b.chunks_exact(r)) {
                *y += crate::lanes::dot(br, ut);
            }
            return;
        }
        if m.is_multiple_of(16) {
            // Sixteen lanes of a row of `y` stay in one register while `r` products accumulate.
            for (yr, br) in y.chunks_exact_mut(m).zip(b.chunks_exact(r)) {
                for j0 in (0..m).step_by(16) {
                    let yj: &mut [f32; 16] = (&mut yr[j0..j0 + 16]).try_into().expect("16 lanes");
                    let mut acc = *yj;
                    for (c, &bc) in br.iter().enumerate() {
                        let u: &[f32; 16] = ut[c * m + j0..][..16].try_into().expect("16 lanes");
                        for l in 0..16 {
                            acc[l] += bc * u[l];
                        }
                    }
                    *yj = acc;
                }
            }
            return;
        }
        for (yr, br) in y.chunks_exact_mut(m).zip(b.chunks_exact(r)) {
            for (&bc, u) in br.iter().zip(ut.chunks_exact(m)) {
                yr.iter_mut().zip(u).for_each(|(y, u)| *y += bc * u);
            }
        }
    }
}

/// `x (m, k) @ w (n, k)ᵀ`: the row-streaming kernel for a few rows, gemm otherwise.
fn product(x: &[f32], w: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
    if m <= crate::matvec::MAX_ROWS {
        crate::matvec::matmul_wt(x, m, k, w, n)
    } else {
        crate::matmul::matmul(x, w, (m, k, n), crate::matmul::Rhs::Transposed)
    }
}

/// The custom op behind [`LowRank::add`]: inputs `y (..., out)` and `x (..., inp)`.
struct AddLowRank(Arc<LowRank>);

impl CustomOp2 for AddLowRank {
    fn name(&self) -> &'static str {
        "add-low-rank"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(ys), CpuStorage::F32(xs)) = (ys, xs) else {
            candle_core::bail!("add-low-rank: f32 inputs required")
        };
        let (yv, xv) = (
            contiguous(ys, yl, "add-low-rank")?,
            contiguous(xs, xl, "add-low-rank")?,
        );
        let d = &self.0;
        let m = xv.len() / d.inp;
        if xl.dims().last() != Some(&d.inp) || yv.len() != m * d.out {
            candle_core::bail!(
                "add-low-rank: input {:?} and output {:?} do not fit a delta of ({}, {})",
                xl.dims(),
                yl.dims(),
                d.out,
                d.inp
            );
        }
        let mut y = yv.to_vec();
        d.add_to(xv, m, &mut y);
        Ok((CpuStorage::F32(y), yl.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        x: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let gv: Vec<f32> = g.flatten_all()?.to_vec1()?;
        let m = gv.len() / self.0.out;
        let gx = Tensor::from_vec(self.0.input_grad(&gv, m), x.shape(), x.device())?;
        Ok((Some(g.clone()), Some(gx)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// A delta on rows 2..7 (rank 2) and 9..12 (rank 3) of a 12 × `inp` weight, and the dense
    /// `scale · B A` it stands for.
    pub(crate) fn sample(inp: usize, scale: f32) -> (LowRank, Tensor) {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (5, inp), &dev).unwrap();
        let b1 = Tensor::randn(0f32, 1.0, (5, 2), &dev).unwrap();
        let b2 = Tensor::randn(0f32, 1.0, (3, 3), &dev).unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let piece = |row0, col0, b: &Tensor, rank| Piece {
            row0,
            col0,
            b: v(b),
            rank,
        };
        let lr = LowRank::new(
            v(&a),
            (5, inp, 12),
            vec![piece(2, 0, &b1, 2), piece(9, 2, &b2, 3)],
            scale,
        )
        .unwrap();
        // Dense B (12, 5): zeros outside the pieces.
        let mut bd = vec![0f32; 12 * 5];
        for (p, b) in lr.pieces.iter().zip([&b1, &b2]) {
            for (r, row) in v(b).chunks(p.rank).enumerate() {
                bd[(p.row0 + r) * 5 + p.col0..][..p.rank].copy_from_slice(row);
            }
        }
        let bd = Tensor::from_vec(bd, (12, 5), &dev).unwrap();
        let w = (bd.matmul(&a).unwrap() * scale as f64).unwrap();
        (lr, w)
    }

    /// Asserts `p` and `q` differ by less than 1e-4 anywhere.
    pub(crate) fn close(p: &Tensor, q: &Tensor, what: &str) {
        let d: f32 = (p - q)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(d < 1e-4, "{what}: differs by {d}");
    }

    /// The delta and both gradients equal `y + x (scale · B A)ᵀ`, for a few rows and for many
    /// (the two product paths); rows outside the pieces are left alone.
    #[test]
    fn delta_and_gradients_match_the_dense_product() {
        let dev = Device::Cpu;
        let (lr, w) = sample(48, 0.5);
        let lr = Arc::new(lr);
        for m in [1, 7, 40] {
            let x = Var::randn(0f32, 1.0, (m, 48), &dev).unwrap();
            let y = Var::randn(0f32, 1.0, (m, 12), &dev).unwrap();
            let want = (y.as_tensor() + x.matmul(&w.t().unwrap()).unwrap()).unwrap();
            let got = lr.add(&y, &x).unwrap();
            close(&got, &want, &format!("m {m}"));
            let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            let u = lr.project_t(&xv, m);
            let mut yt = vec![0f32; 5 * m];
            lr.add_rows(&u, m, 4, 5, &mut yt);
            let want_t = x
                .matmul(&w.narrow(0, 4, 5).unwrap().t().unwrap())
                .unwrap()
                .t()
                .unwrap()
                .contiguous()
                .unwrap();
            close(
                &Tensor::from_vec(yt, (5, m), &dev).unwrap(),
                &want_t,
                &format!("rows 4..9, m {m}"),
            );
            let r = Tensor::randn(0f32, 1.0, (m, 12), &dev).unwrap();
            let gw = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gg = (&got * &r).unwrap().sum_all().unwrap().backward().unwrap();
            close(gg.get(&x).unwrap(), gw.get(&x).unwrap(), "dx");
            close(gg.get(&y).unwrap(), gw.get(&y).unwrap(), "dy");
        }
        let bad = Piece {
            row0: 11,
            col0: 0,
            b: vec![0.0; 4],
            rank: 2,
        };
        assert!(LowRank::new(vec![0.0; 6], (2, 3, 12), vec![bad], 1.0).is_none());
    }
}
