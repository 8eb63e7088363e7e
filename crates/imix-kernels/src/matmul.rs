//! Row-major products through the gemm crate (the one candle itself calls), without candle's
//! zero-filled output: the output is written once by gemm, or accumulated into a buffer that
//! already holds a bias or a residual (so no separate add pass follows the product).
//!
//! On several threads the output's columns are split into one block per thread, each a
//! single-threaded gemm call. gemm's own threading leaves the second core half idle at the
//! shapes of a fine-tuning step (m ~ 300 rows, 384-1536 wide; BENCHMARKS.md), and a column
//! block changes nothing in how an element is summed (gemm blocks k by cache sizes alone), so
//! the result is the same for any thread count (tested below).

use crate::Real;
use ::gemm::Parallelism;
use candle_core::{CpuStorage, Shape, Storage, Tensor};

/// How the right operand is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rhs {
    /// `(k, n)` row-major: `a @ b`.
    Plain,
    /// `(n, k)` row-major (a linear layer's weight): `a @ bᵀ`.
    Transposed,
}

/// How the left operand is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lhs {
    /// `(m, k)` row-major: `a @ ..`.
    Plain,
    /// `(k, m)` row-major: `aᵀ @ ..` (the weight gradient `dyᵀ @ x` of a linear layer).
    Transposed,
}

/// candle's thread count, read once: candle works it out anew on every call, from the
/// environment and /proc/cpuinfo (3.6 % of a fine-tuning step on the Xeon when asked per product).
fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(candle_core::utils::get_num_threads)
}

fn parallelism() -> Parallelism {
    match threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// Products below this many multiply-adds run on one thread (a thread hand-off costs more).
const SPLIT_MIN_WORK: usize = 1 << 18;
/// Column blocks are multiples of this (gemm's widest f32 register block on AVX-512).
const SPLIT_ALIGN: usize = 16;

/// `dst (m, n) [+]= a (m, k) @ b`, everything row-major; `accumulate` adds to what `dst` holds.
pub fn matmul_into<T: Real>(
    dst: &mut [T],
    a: &[T],
    b: &[T],
    dims: (usize, usize, usize),
    rhs: Rhs,
    accumulate: bool,
) {
    let (m, _, n) = dims;
    assert!(dst.len() >= m * n, "gemm: output shorter than ({m}, {n})");
    // SAFETY: `dst` holds at least m * n initialised elements.
    unsafe {
        gemm_raw(
            dst.as_mut_ptr(),
            a,
            Lhs::Plain,
            b,
            dims,
            rhs,
            accumulate,
            parallelism(),
        )
    }
}

/// [`matmul_into`] on the calling thread only (for callers that split the work across threads).
pub fn matmul_into_serial<T: Real>(
    dst: &mut [T],
    a: &[T],
    b: &[T],
    dims: (usize, usize, usize),
    rhs: Rhs,
    accumulate: bool,
) {
    let (m, _, n) = dims;
    assert!(dst.len() >= m * n, "gemm: output shorter than ({m}, {n})");
    // SAFETY: `dst` holds at least m * n initialised elements.
    unsafe {
        gemm_raw(
            dst.as_mut_ptr(),
            a,
            Lhs::Plain,
            b,
            dims,
            rhs,
            accumulate,
            Parallelism::None,
        )
    }
}

/// A raw pointer that may cross to another thread (each thread writes its own columns).
#[derive(Clone, Copy)]
struct Out<T>(*mut T);
// SAFETY: the column blocks handed to the threads are disjoint.
unsafe impl<T> Send for Out<T> {}
// SAFETY: as above; the pointer is only copied, never dereferenced through a shared reference.
unsafe impl<T> Sync for Out<T> {}

/// The gemm call behind [`matmul_into`] and [`matmul`], on a raw output pointer.
///
/// # Safety
/// `dst` must be valid for `m * n` writes, and for reads as well (initialised) when `accumulate`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw<T: Real>(
    dst: *mut T,
    a: &[T],
    lhs: Lhs,
    b: &[T],
    (m, k, n): (usize, usize, usize),
    rhs: Rhs,
    accumulate: bool,
    par: Parallelism,
) {
    assert!(
        a.len() >= m * k && b.len() >= k * n,
        "gemm: operands shorter than ({m}, {k}) x ({k}, {n})"
    );
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
    let (a_rs, a_cs) = match lhs {
        Lhs::Plain => (k as isize, 1),
        Lhs::Transposed => (1, m as isize),
    };
    let (b_rs, b_cs) = match rhs {
        Rhs::Plain => (n as isize, 1),
        Rhs::Transposed => (1, k as isize),
    };
    let mut threads = match par {
        // One row (or k <= 2) goes through gemm's vector kernels, whose sums depend on the width.
        Parallelism::Rayon(t) if m > 1 && k > 2 && m * n * k >= SPLIT_MIN_WORK => {
            t.min(n / SPLIT_ALIGN).max(1)
        }
        _ => 1,
    };
    // gemm sums a product with m and n both <= 64 in other k blocks (512 deep) than a larger one,
    // so no column block may be that small unless the whole product is.
    let bounds = |t: usize| -> Vec<usize> {
        (0..=t)
            .map(|i| {
                if i == t {
                    n
                } else {
                    i * n / t / SPLIT_ALIGN * SPLIT_ALIGN
                }
            })
            .collect()
    };
    while threads > 1 && m <= 64 && n > 64 && bounds(threads).windows(2).any(|w| w[1] - w[0] <= 64)
    {
        threads -= 1;
    }
    // Columns [j0, j1) of the output: column j of b starts at j * b_cs.
    let block = |out: Out<T>, j0: usize, j1: usize| {
        let cols = Columns {
            dst: out.0,
            n,
            j0,
            c: j1 - j0,
        };
        // SAFETY: the asserts above keep every index gemm forms with these strides inside the
        // operands, and [j0, j1) lies within the n columns `dst` holds.
        unsafe {
            gemm_columns(
                cols,
                (m, k),
                (a.as_ptr(), a_rs, a_cs),
                (b.as_ptr().offset(j0 as isize * b_cs), b_rs, b_cs),
                accumulate,
            )
        }
    };
    let out = Out(dst);
    if threads <= 1 {
        return block(out, 0, n);
    }
    let bs = bounds(threads);
    rayon::scope(|s| {
        for w in bs[1..].windows(2) {
            let (j0, j1) = (w[0], w[1]);
            s.spawn(move |_| block(out, j0, j1));
        }
        block(out, bs[0], bs[1]);
    });
}

/// Columns `j0..j0 + c` of a row-major output `n` columns wide.
struct Columns<T> {
    dst: *mut T,
    n: usize,
    j0: usize,
    c: usize,
}

/// The one gemm call behind every product here: the output's columns `cols` ← (or +=, when
/// `accumulate`) `a (m, k) @ b (k, c)`, each operand given as (pointer, row stride, column stride),
/// on the calling thread. Products that must agree bit for bit make the same call.
///
/// # Safety
/// Every index the strides form must lie inside its operand and inside `cols` of the output, and
/// no other thread may write those columns meanwhile.
unsafe fn gemm_columns<T: Real>(
    cols: Columns<T>,
    (m, k): (usize, usize),
    (a, a_rs, a_cs): (*const T, isize, isize),
    (b, b_rs, b_cs): (*const T, isize, isize),
    accumulate: bool,
) {
    // SAFETY: the caller's contract.
    unsafe {
        ::gemm::gemm(
            m,
            cols.c,
            k,
            cols.dst.add(cols.j0),
            1,
            cols.n as isize,
            accumulate,
            a,
            a_cs,
            a_rs,
            b,
            b_cs,
            b_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// A row-major `(m, n)` f32 output whose column blocks threads write with separate products.
pub struct ColumnsOut<'a> {
    dst: Out<f32>,
    m: usize,
    n: usize,
    _dst: std::marker::PhantomData<&'a mut [f32]>,
}

impl<'a> ColumnsOut<'a> {
    /// Wraps `dst`, which holds at least `m * n` values.
    pub fn new(dst: &'a mut [f32], m: usize, n: usize) -> Self {
        assert!(dst.len() >= m * n, "gemm: output shorter than ({m}, {n})");
        Self {
            dst: Out(dst.as_mut_ptr()),
            m,
            n,
            _dst: std::marker::PhantomData,
        }
    }

    /// Columns `j0..j0 + c` ← `a (m, k) @ bᵀ` for `b (c, k)` row-major, on the calling thread:
    /// the gemm call [`matmul_into`] makes for one of its column blocks.
    ///
    /// # Safety
    /// Calls that may run at the same time must write disjoint column ranges.
    pub unsafe fn matmul_wt(&self, j0: usize, a: &[f32], b: &[f32], k: usize, c: usize) {
        let (m, n) = (self.m, self.n);
        assert!(
            j0 + c <= n && a.len() >= m * k && b.len() >= c * k,
            "gemm: columns {j0}..{} of ({m}, {n}) from ({m}, {k}) x ({c}, {k})ᵀ",
            j0 + c
        );
        let cols = Columns {
            dst: self.dst.0,
            n,
            j0,
            c,
        };
        // SAFETY: the assert keeps every index inside the operands and columns j0..j0+c of the
        // (m, n) output; the caller keeps concurrent writers off these columns.
        unsafe {
            gemm_columns(
                cols,
                (m, k),
                (a.as_ptr(), k as isize, 1),
                (b.as_ptr(), 1, k as isize),
                false,
            )
        }
    }
}

/// `a (m, k) @ b` into a new `(m, n)` buffer that is never zero-filled first.
pub fn matmul<T: Real>(a: &[T], b: &[T], dims: (usize, usize, usize), rhs: Rhs) -> Vec<T> {
    matmul_lhs(a, Lhs::Plain, b, dims, rhs)
}

/// [`matmul_lhs`] of two contiguous f32 (or f64) CPU tensors of one dtype, as a new tensor of
/// `shape`; `None` for any other pair, which the caller hands to candle or rejects.
pub fn matmul_tensors(
    a: &Tensor,
    lhs: Lhs,
    b: &Tensor,
    rhs: Rhs,
    dims: (usize, usize, usize),
    shape: impl Into<Shape>,
) -> candle_core::Result<Option<Tensor>> {
    let (sa, la) = a.storage_and_layout();
    let (sb, lb) = b.storage_and_layout();
    let (Some((a0, a1)), Some((b0, b1))) = (la.contiguous_offsets(), lb.contiguous_offsets())
    else {
        return Ok(None);
    };
    let t = match (&*sa, &*sb) {
        (Storage::Cpu(CpuStorage::F32(x)), Storage::Cpu(CpuStorage::F32(y))) => Tensor::from_vec(
            matmul_lhs(&x[a0..a1], lhs, &y[b0..b1], dims, rhs),
            shape,
            a.device(),
        )?,
        (Storage::Cpu(CpuStorage::F64(x)), Storage::Cpu(CpuStorage::F64(y))) => Tensor::from_vec(
            matmul_lhs(&x[a0..a1], lhs, &y[b0..b1], dims, rhs),
            shape,
            a.device(),
        )?,
        _ => return Ok(None),
    };
    Ok(Some(t))
}

/// [`matmul`] with the left operand stored as `lhs` says (`(k, m)` for [`Lhs::Transposed`]).
pub fn matmul_lhs<T: Real>(
    a: &[T],
    lhs: Lhs,
    b: &[T],
    dims: (usize, usize, usize),
    rhs: Rhs,
) -> Vec<T> {
    let (m, _, n) = dims;
    let mut out: Vec<T> = Vec::with_capacity(m * n);
    // SAFETY: the capacity holds m * n elements; gemm with `accumulate = false` writes every one
    // of them (or `gemm_raw` zero-fills when k = 0) and reads none, so `set_len` follows the writes.
    unsafe {
        gemm_raw(out.as_mut_ptr(), a, lhs, b, dims, rhs, false, parallelism());
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
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (37, 64, 129),
            (300, 96, 200),
            (70, 13, 21),
            (64, 24, 40),
        ] {
            let a: Vec<f64> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f64 - 6.0) / 5.0)
                .collect();
            let b: Vec<f64> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f64 - 5.0) / 3.0)
                .collect();
            for rhs in [Rhs::Plain, Rhs::Transposed] {
                let want = naive(&a, &b, (m, k, n), rhs);
                let got = matmul(&a, &b, (m, k, n), rhs);
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f64::max);
                assert!(err < 1e-9, "({m},{k},{n}) {rhs:?}: max error {err}");
                let mut acc: Vec<f64> = (0..m * n).map(|i| i as f64).collect();
                matmul_into(&mut acc, &a, &b, (m, k, n), rhs, true);
                let err = acc
                    .iter()
                    .zip(&want)
                    .enumerate()
                    .map(|(i, (x, y))| (x - y - i as f64).abs())
                    .fold(0.0, f64::max);
                assert!(
                    err < 1e-9,
                    "({m},{k},{n}) {rhs:?} accumulate: max error {err}"
                );
            }
            let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
            let b32: Vec<f32> = b.iter().map(|&v| v as f32).collect();
            let got = matmul(&a32, &b32, (m, k, n), Rhs::Transposed);
            let want = naive(&a, &b, (m, k, n), Rhs::Transposed);
            let err = got
                .iter()
                .zip(&want)
                .map(|(x, y)| (*x as f64 - y).abs() / (1.0 + y.abs()))
                .fold(0.0, f64::max);
            assert!(err < 1e-5, "f32 ({m},{k},{n}): relative error {err}");
            // The same `a` read as the (k, m) storage of a transposed left operand.
            let at: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let got = matmul_lhs(&at, Lhs::Transposed, &b, (m, k, n), Rhs::Plain);
            let err = got
                .iter()
                .zip(&naive(&a, &b, (m, k, n), Rhs::Plain))
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-9, "({m},{k},{n}) transposed lhs: max error {err}");
        }
    }

    /// Every thread count gives the same bits: the column blocks do not change how an element is
    /// summed (k above gemm's 512-deep cache block included, and accumulation onto `dst`).
    #[test]
    fn column_split_is_bit_identical_for_any_thread_count() {
        for &(m, k, n) in &[
            (272, 384, 1152),
            (37, 1100, 200),
            (300, 96, 530),
            (5, 700, 1000),
            (1, 900, 1000),
            (64, 24, 40),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 104_729 % 997) as f32 - 498.0) / 89.0)
                .collect();
            for (lhs, rhs) in [
                (Lhs::Plain, Rhs::Transposed),
                (Lhs::Plain, Rhs::Plain),
                (Lhs::Transposed, Rhs::Plain),
            ] {
                let run = |par: Parallelism, accumulate: bool| {
                    let mut out: Vec<f32> = (0..m * n).map(|i| (i % 17) as f32 / 7.0).collect();
                    // SAFETY: `out` holds m * n initialised elements.
                    unsafe {
                        gemm_raw(
                            out.as_mut_ptr(),
                            &a,
                            lhs,
                            &b,
                            (m, k, n),
                            rhs,
                            accumulate,
                            par,
                        )
                    };
                    out
                };
                for accumulate in [false, true] {
                    let one = run(Parallelism::None, accumulate);
                    for t in 2..=5 {
                        let got = run(Parallelism::Rayon(t), accumulate);
                        let same = one
                            .iter()
                            .zip(&got)
                            .all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "({m},{k},{n}) {lhs:?} {rhs:?} accumulate {accumulate}: {t} threads differ from one");
                    }
                }
            }
        }
    }
}
