//! Self-attention of packed sequences (no padding, so no mask) reading Q/K/V straight from the
//! stacked projection rows `[q | k | v]`: the frozen encoder's inference path.

use crate::{fastmath, lanes};

/// Attention of one sequence: `qkv` rows are `[q | k | v]` (each `heads * hd` wide), `out` rows
/// `heads * hd` wide. No mask: sequences are packed without padding.
pub fn attend_seq(qkv: &[f32], out: &mut [f32], heads: usize, hd: usize, buf: &mut Vec<f32>) {
    let d = heads * hd;
    assert!(
        qkv.len() >= out.len() / d * 3 * d,
        "attention: qkv shorter than the output rows"
    );
    #[cfg(target_arch = "x86_64")]
    if hd & 7 == 0 && crate::has_avx2() {
        // SAFETY: the CPU has AVX2+FMA and the assert above bounds every row the kernel reads.
        unsafe { attend_seq_avx2(qkv, out, heads, hd, buf) };
        return;
    }
    attend_seq_portable(qkv, out, heads, hd, buf)
}

/// [`attend_seq`] in plain loops: the fallback, and the reference for the AVX2 kernel.
fn attend_seq_portable(qkv: &[f32], out: &mut [f32], heads: usize, hd: usize, buf: &mut Vec<f32>) {
    let d = heads * hd;
    let len = out.len() / d;
    let scale = 1.0 / (hd as f32).sqrt();
    buf.resize(len, 0.0);
    for h in 0..heads {
        for r in 0..len {
            let q = &qkv[r * 3 * d + h * hd..][..hd];
            for (j, s) in buf.iter_mut().enumerate() {
                *s = q
                    .iter()
                    .zip(&qkv[j * 3 * d + d + h * hd..][..hd])
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
                    * scale;
            }
            softmax(buf);
            let o = &mut out[r * d + h * hd..][..hd];
            for (c, oc) in o.iter_mut().enumerate() {
                *oc = buf
                    .iter()
                    .enumerate()
                    .map(|(j, p)| p * qkv[j * 3 * d + 2 * d + h * hd + c])
                    .sum();
            }
        }
    }
}

/// Softmax in place.
#[inline(always)]
fn softmax(s: &mut [f32]) {
    let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    s.iter_mut().for_each(|v| *v = fastmath::exp(*v - m));
    let inv = 1.0 / lanes::sum(s);
    s.iter_mut().for_each(|v| *v *= inv);
}

/// [`attend_seq`] for AVX2+FMA. Keys are transposed per head to `(hd, lp)` (lp = len rounded up
/// to 8) so that scores are broadcast multiply-adds over 8 keys at once, for 4 queries at once
/// (independent chains, no horizontal sums); the weighted sum keeps up to four 8-lane pieces of
/// the output in registers over all keys.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_seq_avx2(
    qkv: &[f32],
    out: &mut [f32],
    heads: usize,
    hd: usize,
    buf: &mut Vec<f32>,
) {
    use std::arch::x86_64::*;
    let d = heads * hd;
    let len = out.len() / d;
    let lp = len.div_ceil(8) * 8;
    buf.clear();
    buf.resize(hd * lp + 4 * lp, 0.0);
    let (kt, sc) = buf.split_at_mut(hd * lp);
    let scale = _mm256_set1_ps(1.0 / (hd as f32).sqrt());
    let base = qkv.as_ptr();
    for h in 0..heads {
        for c in 0..hd {
            for (j, t) in kt[c * lp..c * lp + len].iter_mut().enumerate() {
                *t = qkv[j * 3 * d + d + h * hd + c];
            }
        }
        for r0 in (0..len).step_by(4) {
            // Rows past the end repeat the last one; their scores are not used.
            let q: [*const f32; 4] =
                std::array::from_fn(|i| base.add((r0 + i).min(len - 1) * 3 * d + h * hd));
            for b in 0..lp / 8 {
                let mut acc = [_mm256_setzero_ps(); 4];
                let kp = kt.as_ptr().add(b * 8);
                for c in 0..hd {
                    let k = _mm256_loadu_ps(kp.add(c * lp));
                    for i in 0..4 {
                        acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(*q[i].add(c)), k, acc[i]);
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(
                        sc.as_mut_ptr().add(i * lp + b * 8),
                        _mm256_mul_ps(*a, scale),
                    );
                }
            }
            for i in 0..4.min(len - r0) {
                let p = &mut sc[i * lp..i * lp + len];
                softmax(p);
                let o = out.as_mut_ptr().add((r0 + i) * d + h * hd);
                let v = base.add(2 * d + h * hd);
                let mut c0 = 0;
                while c0 < hd {
                    let n = ((hd - c0) / 8).min(4);
                    let mut acc = [_mm256_setzero_ps(); 4];
                    for (j, &pj) in p.iter().enumerate() {
                        let w = _mm256_set1_ps(pj);
                        let vj = v.add(j * 3 * d + c0);
                        for (u, a) in acc.iter_mut().enumerate().take(n) {
                            *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(vj.add(u * 8)), *a);
                        }
                    }
                    for (u, a) in acc.iter().enumerate().take(n) {
                        _mm256_storeu_ps(o.add(c0 + u * 8), *a);
                    }
                    c0 += n * 8;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx2_attention_equals_the_plain_loops() {
        let (heads, hd) = (3, 40); // 40: five 8-lane pieces, so the 4-piece loop has a remainder
        let d = heads * hd;
        for len in [1, 3, 4, 9, 17] {
            let qkv: Vec<f32> = (0..len * 3 * d)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
                .collect();
            let (mut a, mut b) = (vec![0f32; len * d], vec![0f32; len * d]);
            attend_seq(&qkv, &mut a, heads, hd, &mut Vec::new());
            attend_seq_portable(&qkv, &mut b, heads, hd, &mut Vec::new());
            let err = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-5, "len {len}: max difference {err}");
            // Each output is a convex combination of values: bounded by their range.
            assert!(
                a.iter().all(|v| v.abs() <= 1.25 + 1e-5),
                "len {len}: output outside the values' range"
            );
        }
    }
}
