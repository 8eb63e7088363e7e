//! Baseline augmentations for the benchmark: synonym-free EDA and classic embedding Mixup.

use crate::method::mixup::beta;
use crate::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::Distribution;

/// EDA without a thesaurus: random swap, random deletion and random insertion of a word already in
/// the sentence, each applied to about `alpha` of the words (at least one operation).
pub fn eda(text: &str, alpha: f64, rng: &mut ChaCha8Rng) -> String {
    let mut w: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if w.len() < 2 {
        return text.to_string();
    }
    let n = ((alpha * w.len() as f64).round() as usize).max(1);
    match rng.random_range(0..3) {
        0 => {
            for _ in 0..n {
                let (i, j) = (rng.random_range(0..w.len()), rng.random_range(0..w.len()));
                w.swap(i, j);
            }
        }
        1 => {
            let keep: Vec<String> = w.iter().filter(|_| !rng.random_bool(alpha.clamp(0.05, 0.5))).cloned().collect();
            if !keep.is_empty() {
                w = keep;
            } else {
                let k = rng.random_range(0..w.len());
                w = vec![w[k].clone()];
            }
        }
        _ => {
            for _ in 0..n {
                let word = w[rng.random_range(0..w.len())].clone();
                let at = rng.random_range(0..=w.len());
                w.insert(at, word);
            }
        }
    }
    w.join(" ")
}

/// `per_example` EDA variants of every text, seeded.
pub fn eda_all(texts: &[String], per_example: usize, seed: u64) -> Vec<(usize, String)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    texts.iter().enumerate().flat_map(|(i, t)| (0..per_example).map(|_| (i, eda(t, 0.1, &mut rng))).collect::<Vec<_>>()).collect()
}

/// Classic Mixup in embedding space: `per_example` random partners per example, lambda ~ Beta(alpha, alpha).
/// Returns (a, b, lambda) triples; the caller mixes embeddings and labels (not readable).
pub fn embed_mixup_plan(n: usize, per_example: usize, alpha: f64, seed: u64) -> Result<Vec<(usize, usize, f64)>> {
    let dist = beta(alpha)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for a in 0..n {
        for _ in 0..per_example {
            let mut b = rng.random_range(0..n);
            if n > 1 {
                while b == a {
                    b = rng.random_range(0..n);
                }
            }
            out.push((a, b, dist.sample(&mut rng)));
        }
    }
    Ok(out)
}
