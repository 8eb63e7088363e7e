//! Row-major products through the gemm crate (the one candle itself calls), without candle's
//! zero-filled output: the output is written once by gemm, or accumulated into a buffer that
//! already holds a bias or a residual (so no separate add pass follows the product).

use ::gemm::Parallelism;

/// f32 or f64: the element types of the training and inference paths.
pub trait Element: Copy + Send + Sync + 'static {
    /// 1 in this type.
    const ONE: Self;
    /// 0 in this type.
    const ZERO: Self;
}
impl Element for f32 {
    const ONE: Self = 1.0;
    const ZERO: Self = 0.0;
}
impl Element for f64 {
    const ONE: Self = 1.0;
    const ZERO: Self = 0.0;
}

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
pub fn matmul_into<T: Element>(dst: &mut [T], a: &[T], b: &[T], (m, k, n): (usize, usize, usize), rhs: Rhs, accumulate: bool) {
    assert!(dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n, "gemm: operands shorter than ({m}, {k}) x ({k}, {n})");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::ZERO);
        }
        return;
    }
    let (b_rs, b_cs) = match rhs {
        Rhs::Plain => (n as isize, 1),
        Rhs::Transposed => (1, k as isize),
    };
    // SAFETY: the asserts above keep every index gemm forms with these strides inside the slices.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism(),
        )
    }
}

/// `a (m, k) @ b` into a new `(m, n)` buffer that is never zero-filled first.
pub fn matmul<T: Element>(a: &[T], b: &[T], dims: (usize, usize, usize), rhs: Rhs) -> Vec<T> {
    let (m, k, n) = dims;
    if k == 0 {
        return vec![T::ZERO; m * n];
    }
    let mut out: Vec<T> = Vec::with_capacity(m * n);
    let spare = &mut out.spare_capacity_mut()[..m * n];
    // SAFETY: gemm with `read_dst = false` writes every element of the (m, n) output (k > 0) and
    // reads none, so viewing the uninitialised capacity as `T` is sound; `set_len` follows the writes.
    let dst = unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<T>(), m * n) };
    matmul_into(dst, a, b, dims, rhs, false);
    // SAFETY: all m * n elements were written just above.
    unsafe { out.set_len(m * n) };
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
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (37, 64, 129), (300, 96, 200)] {
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
