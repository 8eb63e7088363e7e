//! Reconstruction metrics: token F1, sentence BLEU, exact match.

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

/// Multiset token F1 between reference and hypothesis (SQuAD style), in [0, 1].
pub fn token_f1(reference: &str, hypothesis: &str) -> f64 {
    let (r, h) = (words(reference), words(hypothesis));
    if r.is_empty() || h.is_empty() {
        return if r.is_empty() && h.is_empty() { 1.0 } else { 0.0 };
    }
    let (rc, hc) = (counts(&r), counts(&h));
    let common: usize = hc.iter().map(|(w, &n)| n.min(*rc.get(w).unwrap_or(&0))).sum();
    if common == 0 {
        return 0.0;
    }
    let p = common as f64 / h.len() as f64;
    let rr = common as f64 / r.len() as f64;
    2.0 * p * rr / (p + rr)
}

/// Sentence BLEU-4 in [0, 1] with sacreBLEU's default "exp" smoothing for orders with no match.
pub fn bleu(reference: &str, hypothesis: &str) -> f64 {
    let (r, h) = (words(reference), words(hypothesis));
    if h.is_empty() || r.is_empty() {
        return 0.0;
    }
    let mut log_p = 0.0f64;
    let mut k = 1.0f64;
    for n in 1..=4usize {
        if h.len() < n {
            // Too short for this order: sacreBLEU counts it like a zero match.
            k *= 2.0;
            log_p += (1.0 / k).ln();
            continue;
        }
        let hn: Vec<&[String]> = h.windows(n).collect();
        let rn: Vec<&[String]> = r.windows(n.min(r.len())).filter(|w| w.len() == n).collect();
        let (hc, rc) = (counts(&hn), counts(&rn));
        let m: usize = hc.iter().map(|(g, &c)| c.min(*rc.get(g).unwrap_or(&0))).sum();
        let total = hn.len() as f64;
        let p = if m == 0 {
            k *= 2.0;
            1.0 / (k * total)
        } else {
            m as f64 / total
        };
        log_p += p.ln();
    }
    let bp = if h.len() < r.len() { (1.0 - r.len() as f64 / h.len() as f64).exp() } else { 1.0 };
    bp * (log_p / 4.0).exp()
}

/// Exact match after trimming and lower-casing.
pub fn exact(reference: &str, hypothesis: &str) -> bool {
    reference.trim().to_lowercase() == hypothesis.trim().to_lowercase()
}
