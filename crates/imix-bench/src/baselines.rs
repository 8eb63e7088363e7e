//! Baseline augmentations for the benchmark: synonym-free EDA and classic embedding Mixup.

use inversed_mixup::method::mixup::beta;
use inversed_mixup::Result;
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
            let keep: Vec<String> = w
                .iter()
                .filter(|_| !rng.random_bool(alpha.clamp(0.05, 0.5)))
                .cloned()
                .collect();
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
    texts
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            (0..per_example)
                .map(|_| (i, eda(t, 0.1, &mut rng)))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Classic Mixup in embedding space: `per_example` random partners per example, lambda ~ Beta(alpha, alpha).
/// Returns (a, b, lambda) triples; the caller mixes embeddings and labels (not readable).
pub fn embed_mixup_plan(
    n: usize,
    per_example: usize,
    alpha: f64,
    seed: u64,
) -> Result<Vec<(usize, usize, f64)>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const TEXT: &str = "the quick brown fox jumps over the lazy dog near the old river bank today";

    fn bag(s: &str) -> HashMap<&str, usize> {
        let mut m = HashMap::new();
        for w in s.split_whitespace() {
            *m.entry(w).or_insert(0) += 1;
        }
        m
    }

    /// Whether every word of `small` occurs in `big` at least as often (multiset inclusion).
    fn within(small: &str, big: &str) -> bool {
        let b = bag(big);
        bag(small)
            .iter()
            .all(|(w, n)| b.get(w).is_some_and(|m| m >= n))
    }

    fn eda_seeded(text: &str, alpha: f64, seed: u64) -> String {
        eda(text, alpha, &mut ChaCha8Rng::seed_from_u64(seed))
    }

    /// EDA is a function of its seed: same seed, same output; different seeds, different outputs.
    #[test]
    fn eda_is_seeded() {
        for seed in 0..20 {
            assert_eq!(eda_seeded(TEXT, 0.1, seed), eda_seeded(TEXT, 0.1, seed));
        }
        let distinct: std::collections::HashSet<String> =
            (0..20).map(|s| eda_seeded(TEXT, 0.1, s)).collect();
        assert!(
            distinct.len() >= 10,
            "20 seeds gave only {} distinct outputs",
            distinct.len()
        );
    }

    /// EDA does one of swap (same words), deletion (a non-empty part of the words) or insertion
    /// (exactly max(1, round(alpha n)) copies of words already there); it invents no word, keeps about
    /// 1 - alpha of them, and leaves texts under two words alone.
    #[test]
    fn eda_keeps_the_words_it_promises() {
        let n = TEXT.split_whitespace().count();
        let (mut swaps, mut deletions, mut insertions, mut kept) = (0, 0, 0, 0.0);
        for (seed, alpha) in (0..300).map(|s| (s, [0.1, 0.2, 0.3][s as usize % 3])) {
            let out = eda_seeded(TEXT, alpha, seed);
            let m = out.split_whitespace().count();
            assert!(m >= 1, "empty output for seed {seed}");
            let inserted = ((alpha * n as f64).round() as usize).max(1);
            if bag(&out) == bag(TEXT) {
                swaps += 1;
            } else if m < n && within(&out, TEXT) {
                deletions += 1;
            } else if m == n + inserted && within(TEXT, &out) {
                insertions += 1;
            } else {
                panic!("seed {seed}, alpha {alpha}: {out:?} is none of swap, deletion, insertion of {TEXT:?}");
            }
            let b = bag(TEXT);
            kept += bag(&out)
                .iter()
                .map(|(w, c)| (*c).min(*b.get(w).unwrap_or(&0)))
                .sum::<usize>() as f64
                / n as f64;
        }
        assert!(
            swaps > 50 && deletions > 50 && insertions > 50,
            "swaps {swaps}, deletions {deletions}, insertions {insertions}"
        );
        // Deletion drops each word with probability alpha (mean 0.2 here), the others keep all words.
        assert!(
            kept / 300.0 > 0.9,
            "mean fraction of words kept {}",
            kept / 300.0
        );
        // Deletion never leaves nothing, even at a rate of 0.5 on a two-word text.
        for seed in 0..100 {
            assert!(!eda_seeded("two words", 0.9, seed).is_empty());
        }
        for short in ["", "single", "  padded  "] {
            assert_eq!(eda_seeded(short, 0.3, 1), short);
        }
    }

    /// eda_all gives per_example rows per text, in order, each tagged with the index of its source text.
    #[test]
    fn eda_all_rows_point_at_their_source() {
        let texts: Vec<String> = [
            "alpha beta gamma delta epsilon",
            "one two three four five six",
            "red green blue",
        ]
        .map(String::from)
        .into();
        let rows = eda_all(&texts, 4, 9);
        assert_eq!(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
        );
        for (i, t) in &rows {
            // The three texts share no word, so a row credited to the wrong text fails one of these.
            assert!(
                within(t, &texts[*i]) || within(&texts[*i], t),
                "row {t:?} is not a variant of text {i}"
            );
        }
        assert_eq!(rows, eda_all(&texts, 4, 9));
        assert_ne!(rows, eda_all(&texts, 4, 10));
        assert!(eda_all(&texts, 0, 9).is_empty());
    }

    /// embed_mixup_plan: per_example (a, b, lambda) per example with b != a in range, seeded, and lambda
    /// drawn from Beta(alpha, alpha): mean 1/2, variance 1/(4(2 alpha + 1)), tails as the exact CDF says.
    #[test]
    fn embed_mixup_plan_draws_beta_lambdas() {
        let p = embed_mixup_plan(5, 3, 0.4, 2).unwrap();
        assert_eq!(p.len(), 15);
        assert_eq!(
            p.iter().map(|t| t.0).collect::<Vec<_>>(),
            [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
        );
        assert!(p
            .iter()
            .all(|&(a, b, l)| b < 5 && b != a && (0.0..=1.0).contains(&l)));
        assert_eq!(p, embed_mixup_plan(5, 3, 0.4, 2).unwrap());
        assert_ne!(p, embed_mixup_plan(5, 3, 0.4, 3).unwrap());
        assert!(embed_mixup_plan(0, 3, 0.4, 2).unwrap().is_empty());
        // P(lambda < 0.1 or > 0.9) from mpmath.betainc(a, a, 0, 0.1, regularized=True) * 2.
        for (alpha, tails) in [(0.2, 0.6733795568601143), (1.0, 0.2), (2.0, 0.056)] {
            let l: Vec<f64> = embed_mixup_plan(4000, 5, alpha, 11)
                .unwrap()
                .into_iter()
                .map(|t| t.2)
                .collect();
            let n = l.len() as f64;
            let mean = l.iter().sum::<f64>() / n;
            let var = l.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
            let t = l.iter().filter(|&&x| !(0.1..=0.9).contains(&x)).count() as f64 / n;
            assert!((mean - 0.5).abs() < 0.02, "alpha {alpha}: mean {mean}");
            assert!(
                (var - 1.0 / (4.0 * (2.0 * alpha + 1.0))).abs() < 0.01,
                "alpha {alpha}: variance {var}"
            );
            assert!(
                (t - tails).abs() < 0.02,
                "alpha {alpha}: tail mass {t}, Beta says {tails}"
            );
        }
        for bad in [0.0, -1.0, f64::NAN] {
            assert!(embed_mixup_plan(5, 1, bad, 0).is_err(), "alpha {bad}");
        }
    }
}
