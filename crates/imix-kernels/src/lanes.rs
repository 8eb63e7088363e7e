//! Sums in eight independent lanes. A float sum is not reordered by the compiler, so a loop with
//! one accumulator runs one add at a time; eight accumulators let it use a vector register.
//! Every reduction here ends the same way (lanes in order, then the tail), so results do not
//! depend on which helper a kernel uses.

use num_traits::Float;

/// Lanes per accumulator (one AVX2 register of f32). Also under AVX-512: sixteen lanes made the
/// AVX2 build of single-row decoding 1.3x slower (BENCHMARKS.md), and the heavy products have
/// their own 512-bit kernels.
pub const LANES: usize = 8;

/// The lanes of an accumulator summed in order.
#[inline(always)]
pub fn reduce<T: Float>(acc: &[T; LANES]) -> T {
    acc.iter().fold(T::zero(), |s, &v| s + v)
}

/// `Σ x`.
#[inline(always)]
pub fn sum<T: Float>(x: &[T]) -> T {
    let c = x.chunks_exact(LANES);
    let tail = c.remainder().iter().fold(T::zero(), |s, &v| s + v);
    let mut acc = [T::zero(); LANES];
    for v in c {
        for l in 0..LANES {
            acc[l] = acc[l] + v[l];
        }
    }
    reduce(&acc) + tail
}

/// `Σ a·b` over the shorter length.
#[inline(always)]
pub fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (ca, cb) = (a[..n].chunks_exact(LANES), b[..n].chunks_exact(LANES));
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(T::zero(), |s, (&x, &y)| s + x * y);
    let mut acc = [T::zero(); LANES];
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] = acc[l] + x[l] * y[l];
        }
    }
    reduce(&acc) + tail
}

/// `Σ a·b·c` over the shortest length.
#[inline(always)]
pub fn dot3<T: Float>(a: &[T], b: &[T], c: &[T]) -> T {
    let n = a.len().min(b.len()).min(c.len());
    let (ca, cb, cc) = (
        a[..n].chunks_exact(LANES),
        b[..n].chunks_exact(LANES),
        c[..n].chunks_exact(LANES),
    );
    let tail = (n / LANES * LANES..n).fold(T::zero(), |s, i| s + a[i] * b[i] * c[i]);
    let mut acc = [T::zero(); LANES];
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for l in 0..LANES {
            acc[l] = acc[l] + x[l] * y[l] * z[l];
        }
    }
    reduce(&acc) + tail
}

/// `Σ (x - m)²`.
#[inline(always)]
pub fn sum_sq_dev<T: Float>(x: &[T], m: T) -> T {
    let c = x.chunks_exact(LANES);
    let tail = c
        .remainder()
        .iter()
        .fold(T::zero(), |s, &v| s + (v - m) * (v - m));
    let mut acc = [T::zero(); LANES];
    for v in c {
        for l in 0..LANES {
            acc[l] = acc[l] + (v[l] - m) * (v[l] - m);
        }
    }
    reduce(&acc) + tail
}

/// `max x` (negative infinity for an empty slice).
#[inline(always)]
pub fn max<T: Float>(x: &[T]) -> T {
    let mut mx = [T::neg_infinity(); LANES];
    let mut c = x.chunks_exact(LANES);
    for v in &mut c {
        for l in 0..LANES {
            mx[l] = mx[l].max(v[l]);
        }
    }
    c.remainder()
        .iter()
        .chain(&mx)
        .copied()
        .fold(T::neg_infinity(), T::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_equal_plain_sums() {
        for n in [0, 1, 7, 8, 9, 17, 64, 100] {
            let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
            let c: Vec<f64> = (0..n).map(|i| 1.0 + i as f64 * 0.01).collect();
            let close = |x: f64, y: f64| assert!((x - y).abs() < 1e-12, "n={n}: {x} vs {y}");
            close(sum(&a), a.iter().sum());
            close(dot(&a, &b), a.iter().zip(&b).map(|(x, y)| x * y).sum());
            close(dot3(&a, &b, &c), (0..n).map(|i| a[i] * b[i] * c[i]).sum());
            close(
                sum_sq_dev(&a, 0.25),
                a.iter().map(|x| (x - 0.25) * (x - 0.25)).sum(),
            );
            assert_eq!(max(&a), a.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        }
    }
}
