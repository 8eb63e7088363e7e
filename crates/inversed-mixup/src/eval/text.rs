//! Reconstruction metrics: token F1, sentence BLEU, exact match, and loop detection.

use std::collections::HashMap;

/// Lower-cased word and punctuation tokens (the unit of token F1 and BLEU).
pub fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() || c == '\'' {
            cur.push(c);
        } else {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn counts<T: std::hash::Hash + Eq + Clone>(xs: &[T]) -> HashMap<T, usize> {
    let mut m = HashMap::new();
    for x in xs {
        *m.entry(x.clone()).or_insert(0) += 1;
    }
    m
}

/// How often the most frequent word `n`-gram of `text` occurs: 3 or more for a 3-gram marks a
/// decode that loops ("a film about a film about a film").
pub fn max_ngram_count(text: &str, n: usize) -> usize {
    let w = words(text);
    if n == 0 || w.len() < n {
        return 0;
    }
    counts(&w.windows(n).collect::<Vec<_>>())
        .into_values()
        .max()
        .unwrap_or(0)
}

/// True when some word 3-gram occurs three or more times: the loop that repetition control prevents.
pub fn loops(text: &str) -> bool {
    max_ngram_count(text, 3) >= 3
}

/// Multiset token F1 between reference and hypothesis (SQuAD's formula), in [0, 1]: 1 when both are
/// empty, 0 when one is. The tokens are those of [`words`]; unlike SQuAD's normalisation, articles and
/// punctuation are kept (punctuation marks are tokens).
pub fn token_f1(reference: &str, hypothesis: &str) -> f64 {
    let (r, h) = (words(reference), words(hypothesis));
    if r.is_empty() || h.is_empty() {
        return if r.is_empty() && h.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    let (rc, hc) = (counts(&r), counts(&h));
    let common: usize = hc
        .iter()
        .map(|(w, &n)| n.min(*rc.get(w).unwrap_or(&0)))
        .sum();
    if common == 0 {
        return 0.0;
    }
    let p = common as f64 / h.len() as f64;
    let rr = common as f64 / r.len() as f64;
    2.0 * p * rr / (p + rr)
}

/// Sentence BLEU-4 in [0, 1], defined as sacreBLEU's `sentence_bleu` defaults: "exp" smoothing for
/// orders with no match, effective order (orders longer than the hypothesis are left out of the
/// geometric mean) and 0 when no token matches at all. The tokens are those of [`words`], so this
/// equals `sentence_bleu(hyp, [ref], lowercase=True, tokenize="13a").score / 100` wherever 13a splits
/// alike; it differs by design where 13a keeps a token whole and `words` splits it: hyphens inside
/// words ("well-known"), '.' and ',' between digits ("3.2", "1,000") and non-ASCII punctuation.
/// Checked against sacreBLEU 2.6.0 by tests/text_metrics.rs (fixture from reference/make_bleu_fixture.py).
pub fn bleu(reference: &str, hypothesis: &str) -> f64 {
    let (r, h) = (words(reference), words(hypothesis));
    if h.is_empty() || r.is_empty() {
        return 0.0;
    }
    let mut log_p = 0.0f64;
    let mut k = 1.0f64;
    // Fix (issue 16.8): orders longer than the hypothesis used to count as smoothed zero matches
    // within a mean over 4 orders, and a hypothesis sharing no token still scored > 0; neither is
    // sacreBLEU (an exact two-word reconstruction scored 0.59). Now: effective order, early 0.
    let orders = h.len().min(4);
    for n in 1..=orders {
        let hn: Vec<&[String]> = h.windows(n).collect();
        let rn: Vec<&[String]> = r.windows(n.min(r.len())).filter(|w| w.len() == n).collect();
        let (hc, rc) = (counts(&hn), counts(&rn));
        let m: usize = hc
            .iter()
            .map(|(g, &c)| c.min(*rc.get(g).unwrap_or(&0)))
            .sum();
        let total = hn.len() as f64;
        let p = if m == 0 {
            if n == 1 {
                // No unigram matches, hence no match of any order: sacreBLEU returns 0 (its #141).
                return 0.0;
            }
            k *= 2.0;
            1.0 / (k * total)
        } else {
            m as f64 / total
        };
        log_p += p.ln();
    }
    let bp = if h.len() < r.len() {
        (1.0 - r.len() as f64 / h.len() as f64).exp()
    } else {
        1.0
    };
    bp * (log_p / orders as f64).exp()
}

/// Exact match after trimming and lower-casing.
pub fn exact(reference: &str, hypothesis: &str) -> bool {
    reference.trim().to_lowercase() == hypothesis.trim().to_lowercase()
}

#[cfg(test)]
mod loop_tests {
    use super::*;

    #[test]
    fn loops_are_three_repeats_of_a_trigram() {
        assert_eq!(max_ngram_count("a film about a film about a film", 3), 2);
        assert!(!loops("a film about a film about a film"));
        assert!(loops("a film about a film about a film about a film"));
        assert_eq!(max_ngram_count("one two", 3), 0);
        assert!(!loops("The cat sat on the mat."));
    }
}
