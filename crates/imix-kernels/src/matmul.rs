//! Row-major products through the gemm crate (the one candle itself calls), without candle's
//! zero-filled output: the output is written once by gemm, or accumulated into a buffer that
//! already holds a bias or a residual (so no separate add pass follows the product).

use crate::Real;
use ::gemm::Parallelism;

/// How the right operand is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rhs {
    /// `(k, n)` row-major: `a @ b`.
    Plain,
    /// `(n, k)` row-major (a linear layer's weight): `a @ bᵀ`.
    Transposed,
}

fn parallelism() -> Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `dst (m, n) [+]= a (m, k) @ b`, everything row-major; `accumulate` adds to what `dst` holds.
pub fn matmul_into<T: Real>(dst: &mut [T], a: &[T], b: &[T], dims: (usize, usize, usize), rhs: Rhs, accumulate: bool) {
    let (m, _, n) = dims;
    assert!(dst.len() >= m * n, "gemm: output shorter than ({m}, {n})");
    // SAFETY: `dst` holds at least m * n initialised elements.
    unsafe { gemm_raw(dst.as_mut_ptr(), a, b, dims, rhs, accumulate, parallelism()) }
}

/// [`matmul_into`] on the calling thread only (for callers that split the work across threads).
pub fn matmul_into_serial<T: Real>(dst: &mut [T], a: &[T], b: &[T], dims: (usize, usize, usize), rhs: Rhs, accumulate: bool) {
    let (m, _, n) = dims;
    assert!(dst.len() >= m * n, "gemm: output shorter than ({m}, {n})");
    // SAFETY: `dst` holds at least m * n initialised elements.
    unsafe { gemm_raw(dst.as_mut_ptr(), a, b, dims, rhs, accumulate, Parallelism::None) }
}

/// The gemm call behind [`matmul_into`] and [`matmul`], on a raw output pointer.
///
/// # Safety
/// `dst` must be valid for `m * n` writes, and for reads as well (initialised) when `accumulate`.
unsafe fn gemm_raw<T: Real>(dst: *mut T, a: &[T], b: &[T], (m, k, n): (usize, usize, usize), rhs: Rhs, accumulate: bool, par: Parallelism) {
    assert!(a.len() >= m * k && b.len() >= k * n, "gemm: operands shorter than ({m}, {k}) x ({k}, {n})");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m * n {
                dst.add(i).write(T::zero());
            }
        }
        return;
    }
    let (b_rs, b_cs) = match rhs {
        Rhs::Plain => (n as isize, 1),
        Rhs::Transposed => (1, k as isize),
    };
    // The asserts above keep every index gemm forms with these strides inside the operands.
    ::gemm::gemm(m, n, k, dst, 1, n as isize, accumulate, a.as_ptr(), 1, k as isize, b.as_ptr(), b_cs, b_rs, T::one(), T::one(), false, false, false, par)
}

/// `a (m, k) @ b` into a new `(m, n)` buffer that is never zero-filled first.
pub fn matmul<T: Real>(a: &[T], b: &[T], dims: (usize, usize, usize), rhs: Rhs) -> Vec<T> {
    let (m, _, n) = dims;
    let mut out: Vec<T> = Vec::with_capacity(m * n);
    // SAFETY: the capacity holds m * n elements; gemm with `accumulate = false` writes every one
    // of them (or `gemm_raw` zero-fills when k = 0) and reads none, so `set_len` follows the writes.
    unsafe {
        gemm_raw(out.as_mut_ptr(), a, b, dims, rhs, false, parallelism());
        out.set_len(m * n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], (m, k, n): (usize, usize, usize), rhs: Rhs) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let bv = match rhs {
                        Rhs::Plain => b[p * n + j],
                        Rhs::Transposed => b[j * k + p],
                    };
                    c[i * n + j] += a[i * k + p] * bv;
                }
            }
        }
        c
    }

    #[test]
    fn products_and_accumulation_equal_the_naive_loop() {
        // Sizes around gemm's block and threading thresholds, odd on purpose.
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (37, 64, 129), (300, 96, 200), (70, 13, 21), (64, 24, 40)] {
            let a: Vec<f64> = (0..m * k).map(|i| ((i * 7 % 13) as f64 - 6.0) / 5.0).collect();
            let b: Vec<f64> = (0..k * n).map(|i| ((i * 5 % 11) as f64 - 5.0) / 3.0).collect();
            for rhs in [Rhs::Plain, Rhs::Transposed] {
                let want = naive(&a, &b, (m, k, n), rhs);
                let got = matmul(&a, &b, (m, k, n), rhs);
                let err = got.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
                assert!(err < 1e-9, "({m},{k},{n}) {rhs:?}: max error {err}");
                let mut acc: Vec<f64> = (0..m * n).map(|i| i as f64).collect();
                matmul_into(&mut acc, &a, &b, (m, k, n), rhs, true);
                let err = acc.iter().zip(&want).enumerate().map(|(i, (x, y))| (x - y - i as f64).abs()).fold(0.0, f64::max);
                assert!(err < 1e-9, "({m},{k},{n}) {rhs:?} accumulate: max error {err}");
            }
            let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
            let b32: Vec<f32> = b.iter().map(|&v| v as f32).collect();
            let got = matmul(&a32, &b32, (m, k, n), Rhs::Transposed);
            let want = naive(&a, &b, (m, k, n), Rhs::Transposed);
            let err = got.iter().zip(&want).map(|(x, y)| (*x as f64 - y).abs() / (1.0 + y.abs())).fold(0.0, f64::max);
            assert!(err < 1e-5, "f32 ({m},{k},{n}): relative error {err}");
        }
    }
}
