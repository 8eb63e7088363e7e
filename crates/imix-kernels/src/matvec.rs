//! `x @ W^T` for a few rows of `x`: the shape of every LLM matmul while decoding.
//!
//! For a handful of rows the general gemm spends most of its time packing `W` before using
//! it once (BENCHMARKS.md, "Profile notes"). Here each row of `W` is read once, straight
//! from memory, and dotted with all rows of `x`, which stay in L1/L2.

use crate::lanes::{self, LANES};
use rayon::prelude::*;

/// Largest row count sent here instead of to the general gemm.
pub const MAX_ROWS: usize = 32;

/// Products of at most this many multiply-adds run on the calling thread.
const SERIAL_MACS: usize = 1 << 17;

/// Weight rows per parallel task.
const ROWS_PER_TASK: usize = 32;

/// Dot products of one weight row with up to four rows of `x` (8-lane accumulators).
#[inline(always)]
fn dots<const R: usize>(w: &[f32], xs: [&[f32]; R]) -> [f32; R] {
    let k = w.len();
    let mut acc = [[0f32; LANES]; R];
    let full = k / LANES * LANES;
    let mut j = 0;
    while j < full {
        let wv: &[f32; LANES] = w[j..j + LANES].try_into().expect("LANES lanes");
        for r in 0..R {
            let xv: &[f32; LANES] = xs[r][j..j + LANES].try_into().expect("LANES lanes");
            for l in 0..LANES {
                acc[r][l] += wv[l] * xv[l];
            }
        }
        j += LANES;
    }
    let mut out = [0f32; R];
    for r in 0..R {
        let tail = (full..k).fold(0f32, |s, t| s + w[t] * xs[r][t]);
        out[r] = lanes::reduce(&acc[r]) + tail;
    }
    out
}

/// `yt[o * m + i] = w_o · x_i` for the weight rows of one task.
#[inline(always)]
fn block(x: &[f32], m: usize, k: usize, w: &[f32], yt: &mut [f32]) {
    for (wr, yr) in w.chunks_exact(k).zip(yt.chunks_exact_mut(m)) {
        let mut i = 0;
        while i + 4 <= m {
            let r = dots::<4>(
                wr,
                [
                    &x[i * k..][..k],
                    &x[(i + 1) * k..][..k],
                    &x[(i + 2) * k..][..k],
                    &x[(i + 3) * k..][..k],
                ],
            );
            yr[i..i + 4].copy_from_slice(&r);
            i += 4;
        }
        while i < m {
            yr[i] = dots::<1>(wr, [&x[i * k..][..k]])[0];
            i += 1;
        }
    }
}

/// AVX2+FMA tile: 4 weight rows x 2 rows of `x` in 8 accumulators; 6 loads feed 8 FMAs. Four
/// weight rows (up to 24 KiB) stay in L1 while all rows of `x` pass, so `x` is re-read from L2
/// once per four weight rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(x: &[f32], m: usize, k: usize, w: &[f32], yt: &mut [f32]) {
    use std::arch::x86_64::*;
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    }
    let rows = w.len() / k;
    if !k.is_multiple_of(8) || !m.is_multiple_of(2) || !rows.is_multiple_of(4) {
        return block(x, m, k, w, yt);
    }
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    for o in (0..rows).step_by(4) {
        let wr = [
            wp.add(o * k),
            wp.add((o + 1) * k),
            wp.add((o + 2) * k),
            wp.add((o + 3) * k),
        ];
        for i in (0..m).step_by(2) {
            let (x0, x1) = (xp.add(i * k), xp.add((i + 1) * k));
            let mut a = [_mm256_setzero_ps(); 8];
            let mut j = 0;
            while j < k {
                let (u0, u1) = (_mm256_loadu_ps(x0.add(j)), _mm256_loadu_ps(x1.add(j)));
                for r in 0..4 {
                    let wv = _mm256_loadu_ps(wr[r].add(j));
                    a[2 * r] = _mm256_fmadd_ps(wv, u0, a[2 * r]);
                    a[2 * r + 1] = _mm256_fmadd_ps(wv, u1, a[2 * r + 1]);
                }
                j += 8;
            }
            for r in 0..4 {
                yt[(o + r) * m + i] = hsum(a[2 * r]);
                yt[(o + r) * m + i + 1] = hsum(a[2 * r + 1]);
            }
        }
    }
}

/// AVX-512 tile: 4 weight rows x 4 rows of `x` in 16 of the 32 vector registers; 8 loads feed 16
/// FMAs of 16 lanes each. Leftover rows of `x` go through a 4 x 1 tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn block_avx512(x: &[f32], m: usize, k: usize, w: &[f32], yt: &mut [f32]) {
    let rows = w.len() / k;
    if !k.is_multiple_of(16) || !rows.is_multiple_of(4) {
        return block(x, m, k, w, yt);
    }
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    for o in (0..rows).step_by(4) {
        let wr = [
            wp.add(o * k),
            wp.add((o + 1) * k),
            wp.add((o + 2) * k),
            wp.add((o + 3) * k),
        ];
        let mut i = 0;
        while i + 4 <= m {
            let d = tile_avx512::<4>(std::array::from_fn(|c| xp.add((i + c) * k)), wr, k);
            for (r, dr) in d.iter().enumerate() {
                yt[(o + r) * m + i..][..4].copy_from_slice(dr);
            }
            i += 4;
        }
        while i < m {
            let d = tile_avx512::<1>([xp.add(i * k)], wr, k);
            for (r, dr) in d.iter().enumerate() {
                yt[(o + r) * m + i] = dr[0];
            }
            i += 1;
        }
    }
}

/// Dot products of four weight rows with `R` rows of `x`, all `k` long (`k` a multiple of 16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
#[inline]
unsafe fn tile_avx512<const R: usize>(
    xs: [*const f32; R],
    wr: [*const f32; 4],
    k: usize,
) -> [[f32; R]; 4] {
    use std::arch::x86_64::*;
    let mut a = [[_mm512_setzero_ps(); R]; 4];
    let mut j = 0;
    while j < k {
        let mut u = [_mm512_setzero_ps(); R];
        for c in 0..R {
            u[c] = _mm512_loadu_ps(xs[c].add(j));
        }
        for r in 0..4 {
            let wv = _mm512_loadu_ps(wr[r].add(j));
            for c in 0..R {
                a[r][c] = _mm512_fmadd_ps(wv, u[c], a[r][c]);
            }
        }
        j += 16;
    }
    let mut d = [[0f32; R]; 4];
    for r in 0..4 {
        for c in 0..R {
            d[r][c] = _mm512_reduce_add_ps(a[r][c]);
        }
    }
    d
}

/// `y (m, out) = x (m, k) @ w (out, k)^T`, parallel over weight rows.
pub fn matmul_wt(x: &[f32], m: usize, k: usize, w: &[f32], out: usize) -> Vec<f32> {
    assert_eq!(w.len(), out * k, "matvec: w is not (out, k)");
    product(
        x,
        m,
        k,
        out,
        |o0, rows, run| run(&w[o0 * k..(o0 + rows) * k]),
        &|_, _, _| {},
    )
}

/// [`matmul_wt`] for a weight kept as blocks: each task dequantises its rows and runs the same
/// tile on them, so the result equals [`matmul_wt`] on the dequantised weight bit for bit.
pub fn matmul_wt_blocks(x: &[f32], m: usize, k: usize, w: &crate::BlockRows) -> Vec<f32> {
    matmul_wt_blocks_then(x, m, k, w, &|_, _, _| {})
}

/// [`matmul_wt_blocks`], then `then(o0, rows, yt)` on each task's result for weight rows
/// `o0..o0 + rows`, `yt[r * m + i]` = row `i` of `x` against weight row `o0 + r` (a low-rank
/// delta joins the product inside its tasks instead of in a pass of its own).
pub fn matmul_wt_blocks_then(
    x: &[f32],
    m: usize,
    k: usize,
    w: &crate::BlockRows,
    then: &(dyn Fn(usize, usize, &mut [f32]) + Sync),
) -> Vec<f32> {
    let (out, wk) = w.dims();
    assert_eq!(wk, k, "matvec: w is not (out, k)");
    product(
        x,
        m,
        k,
        out,
        |o0, rows, run| w.with_rows(o0, rows, |wc| run(wc)),
        then,
    )
}

/// The parallel loop over tasks of [`ROWS_PER_TASK`] weight rows; `rows_of(o0, rows, run)`
/// hands rows `o0..o0 + rows` of the weight, row-major, to `run`; `then` sees each task's result.
fn product<F>(
    x: &[f32],
    m: usize,
    k: usize,
    out: usize,
    rows_of: F,
    then: &(dyn Fn(usize, usize, &mut [f32]) + Sync),
) -> Vec<f32>
where
    F: Fn(usize, usize, &mut dyn FnMut(&[f32])) + Sync,
{
    assert_eq!(x.len(), m * k, "matvec: x is not (m, k)");
    #[cfg(target_arch = "x86_64")]
    let level = crate::simd::level();
    let mut y = vec![0f32; m * out];
    let yp = OutPtr(y.as_mut_ptr());
    let task = |c: usize| {
        let o0 = c * ROWS_PER_TASK;
        let rows = ROWS_PER_TASK.min(out - o0);
        let mut yt = vec![0f32; rows * m];
        rows_of(o0, rows, &mut |wc: &[f32]| {
            #[cfg(target_arch = "x86_64")]
            match level {
                crate::simd::Level::Avx512 => {
                    // SAFETY: the level is at most what the CPU supports (simd::level).
                    unsafe { block_avx512(x, m, k, wc, &mut yt) }
                }
                crate::simd::Level::Avx2 => {
                    // SAFETY: the level is at most what the CPU supports (simd::level).
                    unsafe { block_avx2(x, m, k, wc, &mut yt) }
                }
                crate::simd::Level::Scalar => block(x, m, k, wc, &mut yt),
            }
            #[cfg(not(target_arch = "x86_64"))]
            block(x, m, k, wc, &mut yt);
        });
        then(o0, rows, &mut yt);
        for r in 0..rows {
            for i in 0..m {
                // SAFETY: task c alone writes columns o0..o0+rows of y; every index is in bounds.
                unsafe { *yp.at(i * out + o0 + r) = yt[r * m + i] };
            }
        }
    };
    let tasks = out.div_ceil(ROWS_PER_TASK);
    // The same tasks in order on this thread when they are too small to share (a fork-join
    // costs more than the whole product): same results either way.
    if m * k * out <= SERIAL_MACS {
        (0..tasks).for_each(task);
    } else {
        (0..tasks).into_par_iter().for_each(task);
    }
    y
}

/// The output buffer, shared by tasks that write disjoint columns.
struct OutPtr(*mut f32);
// SAFETY: tasks write through the pointer only at indices no other task writes (each owns a
// disjoint set of columns), and the buffer outlives the parallel loop that uses it.
unsafe impl Sync for OutPtr {}
impl OutPtr {
    /// # Safety
    /// `i` must be within the buffer.
    unsafe fn at(&self, i: usize) -> *mut f32 {
        // SAFETY: the caller keeps `i` within the buffer, so the offset stays inside one allocation.
        unsafe { self.0.add(i) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product() {
        for (m, k, out) in [(1, 576, 100), (3, 13, 70), (16, 64, 33), (5, 8, 1)] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let w: Vec<f32> = (0..out * k)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
                .collect();
            let y = matmul_wt(&x, m, k, &w, out);
            for i in 0..m {
                for o in 0..out {
                    let want: f64 = (0..k)
                        .map(|t| x[i * k + t] as f64 * w[o * k + t] as f64)
                        .sum();
                    let got = y[i * out + o] as f64;
                    assert!(
                        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "({m},{k},{out}) y[{i},{o}] = {got}, want {want}"
                    );
                }
            }
        }
    }

    /// A quantised weight gives the same bits as its dequantised f32 copy, for every tile shape.
    #[test]
    fn blocks_equal_the_dequantised_weight_bit_for_bit() {
        let (out, k) = (70, 64);
        let (blocks, dense) =
            crate::block_rows::random_blocks(out, k, candle_core::quantized::GgmlDType::Q8_0);
        for m in [1, 2, 3, 5, 8, 32] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let a = matmul_wt(&x, m, k, &dense, out);
            let b = matmul_wt_blocks(&x, m, k, &blocks);
            assert!(
                a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()),
                "m = {m}"
            );
        }
    }
}
