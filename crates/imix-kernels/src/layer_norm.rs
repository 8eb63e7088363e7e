//! LayerNorm in place on raw rows (the frozen encoder's inference path).

use crate::lanes;
use rayon::prelude::*;

crate::simd_dispatch!(
    /// LayerNorm of one row in place.
    pub fn layer_norm_row(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
        let n = x.len() as f32;
        let mean = lanes::sum(x) / n;
        let inv = 1.0 / (lanes::sum_sq_dev(x, mean) / n + eps).sqrt();
        for ((v, &w), &b) in x.iter_mut().zip(w).zip(b) {
            *v = (*v - mean) * inv * w + b;
        }
    }
);

/// LayerNorm of every `d`-wide row of `x`, in place, rows in parallel.
pub fn layer_norm(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let d = w.len();
    x.par_chunks_mut(d * 16)
        .for_each(|c| c.chunks_mut(d).for_each(|r| layer_norm_row(r, w, b, eps)));
}
