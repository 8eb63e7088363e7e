//! Statistics over seeds and samples: mean and spread, paired permutation tests, rank correlation.

use rand::{Rng, SeedableRng};

/// Mean and sample standard deviation.
pub fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    if x.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = x.iter().sum::<f64>() / n;
    let v = if x.len() > 1 {
        x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, v.sqrt())
}

/// Two-sided paired sign-flip permutation test of mean(a - b) = 0; exact for up to 16 pairs.
pub fn paired_permutation_p(a: &[f64], b: &[f64]) -> f64 {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len();
    if n == 0 || n > 16 {
        return f64::NAN;
    }
    let obs = d.iter().sum::<f64>().abs();
    let total = 1usize << n;
    let hits = (0..total)
        .filter(|mask| {
            let s: f64 = d
                .iter()
                .enumerate()
                .map(|(i, v)| if mask & (1 << i) != 0 { -v } else { *v })
                .sum();
            s.abs() >= obs - 1e-12
        })
        .count();
    hits as f64 / total as f64
}

/// Resamples for the sign-flip test beyond exact enumeration, and for the bootstrap interval.
const RESAMPLES: usize = 100_000;

/// Two-sided paired sign-flip test of mean(d) = 0 over differences `d`: exact by enumeration for
/// up to 20 pairs, else by `RESAMPLES` seeded random sign flips (with the +1 correction, so that
/// p is never 0). The pooled test over (dataset, seed) pairs of a shot count.
pub fn sign_flip_p(d: &[f64], seed: u64) -> f64 {
    let n = d.len();
    if n == 0 {
        return f64::NAN;
    }
    let obs = d.iter().sum::<f64>().abs() - 1e-12;
    let flipped = |mask: u64| -> f64 {
        d.iter()
            .enumerate()
            .map(|(i, v)| if mask >> (i % 64) & 1 == 1 { -v } else { *v })
            .sum()
    };
    if n <= 20 {
        let total = 1u64 << n;
        let hits = (0..total).filter(|&m| flipped(m).abs() >= obs).count();
        return hits as f64 / total as f64;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let hits = (0..RESAMPLES)
        .filter(|_| {
            let s: f64 = d
                .iter()
                .map(|v| if rng.random::<bool>() { -v } else { *v })
                .sum();
            s.abs() >= obs
        })
        .count();
    (hits + 1) as f64 / (RESAMPLES + 1) as f64
}

/// Percentile bootstrap 95 % interval of the mean of `d` (`RESAMPLES` seeded resamples).
pub fn bootstrap_ci95(d: &[f64], seed: u64) -> (f64, f64) {
    if d.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = d.len();
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| (0..n).map(|_| d[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * RESAMPLES as f64) as usize).min(RESAMPLES - 1)];
    (at(0.025), at(0.975))
}

/// Spearman rank correlation (average ranks for ties).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    let rank = |v: &[f64]| {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for k in i..=j {
                r[idx[k]] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    };
    let (rx, ry) = (rank(x), rank(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    if vx == 0.0 || vy == 0.0 {
        0.0
    } else {
        cov / (vx * vy).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pooled test: exact by enumeration for few pairs (the same p as the paired test), a
    /// seeded estimate near the exact one beyond, and a bootstrap interval around the mean.
    #[test]
    fn pooled_sign_flip_is_exact_for_few_pairs_and_close_for_many() {
        // [1.5, -0.5, 2, 0.25, -1, 3]: 16 of 64 flips reach |sum| >= 5.25 (see below).
        assert_eq!(sign_flip_p(&[1.5, -0.5, 2.0, 0.25, -1.0, 3.0], 0), 0.25);
        assert_eq!(sign_flip_p(&[1.0; 5], 0), 2.0 / 32.0);
        assert!(sign_flip_p(&[], 0).is_nan());
        // 24 equal positive differences: exact p = 2 / 2^24, far below one resample in 1e5.
        let p = sign_flip_p(&[1.0; 24], 7);
        assert!(p > 0.0 && p < 2e-5, "{p}");
        // 22 differences with mean 0: p near 1 (the exact value is 1 minus the mass of ties).
        let d: Vec<f64> = (0..22)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert!(sign_flip_p(&d, 7) > 0.95);
        assert_eq!(sign_flip_p(&d, 7), sign_flip_p(&d, 7), "seeded");
        let (lo, hi) = bootstrap_ci95(&[1.0, 2.0, 3.0, 4.0], 1);
        assert!(
            (1.0..2.5).contains(&lo) && hi > 2.5 && hi <= 4.0,
            "({lo}, {hi})"
        );
        assert_eq!(bootstrap_ci95(&[2.0; 6], 1), (2.0, 2.0));
    }

    /// mean_std reports the sample (n - 1) standard deviation: Python's statistics.stdev, not pstdev.
    #[test]
    fn mean_std_is_the_sample_std() {
        // statistics.mean = 5, statistics.stdev = sqrt(32 / 7) = 2.138089935299395 (pstdev would be 2.0).
        let (m, s) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert!((m - 5.0).abs() < 1e-12, "{m}");
        assert!((s - 2.138089935299395).abs() < 1e-12, "{s}");
        assert_eq!(mean_std(&[0.7]), (0.7, 0.0));
        let (m, s) = mean_std(&[]);
        assert!(m.is_nan() && s.is_nan());
    }

    /// The paired test is exact, two-sided and counts ties as extreme: p = hits / 2^n over all sign flips.
    #[test]
    fn paired_permutation_p_is_exact_and_two_sided() {
        // All 5 differences positive: only the identity and the all-flipped signs reach |sum|: 2 / 2^5.
        let a = [3.0, 4.0, 5.0, 6.0, 7.0];
        assert_eq!(
            paired_permutation_p(&a, &[2.0, 2.0, 3.0, 1.0, 6.5]),
            2.0 / 32.0
        );
        // Identical vectors: every flip ties with the observed 0.
        assert_eq!(paired_permutation_p(&a, &a), 1.0);
        // Mixed signs, differences [1.5, -0.5, 2, 0.25, -1, 3] (exact in binary). Python, itertools over the
        // 64 sign vectors: 16 reach |sum| >= 5.25 (p = 0.25); only 12 exceed it (ties matter) and one-sided
        // 8 reach sum >= 5.25, so a strict or one-sided count would give 0.1875 or 0.125.
        let a = [2.5, 0.5, 3.0, 1.25, 0.0, 4.0];
        let b = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        assert_eq!(paired_permutation_p(&a, &b), 0.25);
        // Nothing to test, or too many pairs to enumerate: NaN rather than a made-up p.
        assert!(paired_permutation_p(&[], &[]).is_nan());
        assert!(paired_permutation_p(&[1.0; 17], &[0.0; 17]).is_nan());
        assert_eq!(paired_permutation_p(&[1.0; 16], &[0.0; 16]), 2.0 / 65536.0);
    }

    /// Spearman uses average ranks for ties (Python: statistics.correlation of the averaged ranks).
    #[test]
    fn spearman_averages_tied_ranks() {
        // Ranks x = [0, 1.5, 1.5, 3, 4], y = [1, 0, 4, 2.5, 2.5]; their Pearson r is 0.3684210526315789 (= 7/19).
        let r = spearman(&[1.0, 2.0, 2.0, 3.0, 5.0], &[2.0, 1.0, 4.0, 3.0, 3.0]);
        assert!((r - 7.0 / 19.0).abs() < 1e-12, "{r}");
        // Monotone but not linear: exactly 1 and -1; a constant side has no correlation: 0.
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 8.0, 27.0, 1000.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[9.0, 4.0, 1.0, 0.0]) + 1.0).abs() < 1e-12);
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0]), 0.0);
    }
}
