//! Mix metrics: how well an inverter decodes mixes of held-out pairs. For each pair and lambda
//! the mix of the two embeddings is decoded and scored: cosine to the mixed target, whether the
//! sentence is a near copy of a source, where its content sits between the sources, and whether a
//! mid-lambda sentence carries both.

use crate::eval::text::loops;
use crate::method::augment::{content_lambda, is_near_copy, mix_embeddings};
use crate::method::invert::{cosine_rows, Inverter, MixSources};
use crate::nets::llm::GenerateOptions;
use crate::{Error, Result};
use candle_core::Tensor;
use serde::Serialize;

/// Lambdas counted as mid-lambda (a real mix of both sources).
pub const MID: (f64, f64) = (0.3, 0.7);
/// A mid-lambda sentence "carries both" when its content ratio lies in this range.
pub const BOTH: (f64, f64) = (0.15, 0.85);
/// The stricter test: cosine at least this to each source (a sentence about neither source also
/// projects near the middle, so the content ratio alone can pass it).
pub const CLOSE_TO_BOTH: f64 = 0.35;

/// One decoded mix of a pair.
#[derive(Debug, Clone, Serialize)]
pub struct MixRow {
    /// Source A (weight lambda).
    pub a: String,
    /// Source B (weight 1 - lambda).
    pub b: String,
    /// The mixing ratio.
    pub lambda: f64,
    /// The decoded sentence.
    pub text: String,
    /// Encoder cosine to A.
    pub cos_a: f64,
    /// Encoder cosine to B.
    pub cos_b: f64,
    /// Encoder cosine to the mixed embedding it was decoded from.
    pub cos_target: f64,
    /// Where its embedding projects between B (0) and A (1).
    pub content_lambda: f64,
    /// A near copy of a source (token F1 >= 0.8 or cosine >= 0.95 to either).
    pub copy: bool,
}

/// Means over the rows of one lambda.
#[derive(Debug, Clone, Serialize)]
pub struct MixBucket {
    /// The lambda.
    pub lambda: f64,
    /// Rows.
    pub n: usize,
    /// Mean cosine to the mixed target.
    pub cos_target: f64,
    /// Share of near copies.
    pub copies: f64,
    /// Mean |content ratio - lambda|.
    pub gap: f64,
}

/// The mix metrics of a set of pairs.
#[derive(Debug, Clone, Serialize)]
pub struct MixSummary {
    /// Per lambda.
    pub by_lambda: Vec<MixBucket>,
    /// Mid-lambda rows (lambda in [0.3, 0.7]).
    pub mid_n: usize,
    /// Their mean cosine to the mixed target.
    pub mid_cos_target: f64,
    /// Their share of near copies.
    pub mid_copies: f64,
    /// Their mean |content ratio - lambda|.
    pub mid_gap: f64,
    /// Their share whose content ratio lies in [0.15, 0.85].
    pub carries_both: f64,
    /// Their share at cosine 0.35 or more to each source.
    pub close_to_both: f64,
    /// Rows whose text loops.
    pub looping: usize,
}

impl MixSummary {
    /// The summary of `rows`.
    pub fn of(rows: &[MixRow]) -> Self {
        let mean = |v: &[&MixRow], f: fn(&MixRow) -> f64| {
            v.iter().map(|r| f(r)).sum::<f64>() / v.len().max(1) as f64
        };
        let copy = |r: &MixRow| f64::from(u8::from(r.copy));
        let gap = |r: &MixRow| (r.content_lambda - r.lambda).abs();
        let mut lambdas: Vec<f64> = rows.iter().map(|r| r.lambda).collect();
        lambdas.sort_by(f64::total_cmp);
        lambdas.dedup();
        let by_lambda = lambdas
            .iter()
            .map(|&l| {
                let v: Vec<&MixRow> = rows.iter().filter(|r| r.lambda == l).collect();
                let (n, cos_target) = (v.len(), mean(&v, |r| r.cos_target));
                MixBucket {
                    lambda: l,
                    n,
                    cos_target,
                    copies: mean(&v, copy),
                    gap: mean(&v, gap),
                }
            })
            .collect();
        let mid: Vec<&MixRow> = rows
            .iter()
            .filter(|r| (MID.0..=MID.1).contains(&r.lambda))
            .collect();
        let both = |r: &MixRow| f64::from(u8::from((BOTH.0..=BOTH.1).contains(&r.content_lambda)));
        Self {
            by_lambda,
            mid_n: mid.len(),
            mid_cos_target: mean(&mid, |r| r.cos_target),
            mid_copies: mean(&mid, copy),
            mid_gap: mean(&mid, gap),
            carries_both: mean(&mid, both),
            close_to_both: mean(&mid, |r| {
                f64::from(u8::from(r.cos_a.min(r.cos_b) >= CLOSE_TO_BOTH))
            }),
            looping: rows.iter().filter(|r| loops(&r.text)).count(),
        }
    }
}

impl std::fmt::Display for MixSummary {
    /// A table per lambda and the mid-lambda line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "lambda  n  cos_target  copies  content_gap")?;
        for b in &self.by_lambda {
            let copies = 100.0 * b.copies;
            writeln!(
                f,
                "{:.2}  {}  {:.4}  {copies:.1} %  {:.4}",
                b.lambda, b.n, b.cos_target, b.gap
            )?;
        }
        write!(
            f,
            "mid_lambda n={} cos_target={:.4} copies={:.4} content_gap={:.4} carries_both={:.4} \
             close_to_both={:.4} looping={}",
            self.mid_n,
            self.mid_cos_target,
            self.mid_copies,
            self.mid_gap,
            self.carries_both,
            self.close_to_both,
            self.looping
        )
    }
}

/// Decodes every pair at every lambda (`batch` mixes at a time; decode seeds offset by each
/// batch's first index, as stage 3's) and scores each sentence.
pub fn invert_mixes(
    inv: &Inverter,
    pairs: &[(String, String)],
    lambdas: &[f64],
    gen: &GenerateOptions,
    batch: usize,
    progress: &dyn Fn(usize, usize),
) -> Result<(Vec<MixRow>, MixSummary)> {
    if pairs.is_empty() || lambdas.is_empty() {
        return Err(Error::Invalid("no pairs or no lambdas to mix".into()));
    }
    let todo: Vec<(usize, f64)> = (0..pairs.len())
        .flat_map(|p| lambdas.iter().map(move |&l| (p, l)))
        .collect();
    let mut rows = Vec::with_capacity(todo.len());
    for (bi, chunk) in todo.chunks(batch.max(1)).enumerate() {
        let a: Vec<&str> = chunk.iter().map(|&(p, _)| pairs[p].0.as_str()).collect();
        let b: Vec<&str> = chunk.iter().map(|&(p, _)| pairs[p].1.as_str()).collect();
        let l: Vec<f64> = chunk.iter().map(|&(_, l)| l).collect();
        let g = GenerateOptions {
            seed: gen.seed.wrapping_add((bi * batch) as u64),
            ..gen.clone()
        };
        rows.extend(decode_mixes(inv, &a, &b, &l, &g)?.0);
        progress(rows.len(), todo.len());
    }
    let summary = MixSummary::of(&rows);
    Ok((rows, summary))
}

/// Mixes `a[i]` (weight `lambdas[i]`) with `b[i]`, decodes every mix in one batch and scores each
/// sentence; also returns the sentences' embeddings (for a task model to read).
pub fn decode_mixes(
    inv: &Inverter,
    a: &[&str],
    b: &[&str],
    lambdas: &[f64],
    gen: &GenerateOptions,
) -> Result<(Vec<MixRow>, Tensor)> {
    let (ha, hb) = (inv.encoder.embed_batched(a)?, inv.encoder.embed_batched(b)?);
    let hm = mix_embeddings(&ha, &hb, lambdas, true)?;
    let sources = MixSources {
        a: &ha,
        b: &hb,
        lambdas,
    };
    let out = inv.decode_mixes(&hm, &sources, gen)?;
    // An empty decode is scored as a blank: every (pair, lambda) keeps its row.
    let refs: Vec<&str> = out
        .iter()
        .map(|s| if s.is_empty() { " " } else { s })
        .collect();
    let hg: Tensor = inv.encoder.embed_batched(&refs)?;
    let (ca, cb, ct) = (
        cosine_rows(&hg, &ha)?,
        cosine_rows(&hg, &hb)?,
        cosine_rows(&hg, &hm)?,
    );
    let content = content_lambda(&hg, &ha, &hb, lambdas)?;
    let rows = out
        .into_iter()
        .enumerate()
        .map(|(k, text)| MixRow {
            copy: is_near_copy(&text, a[k], b[k], ca[k], cb[k]),
            a: a[k].to_string(),
            b: b[k].to_string(),
            lambda: lambdas[k],
            text,
            cos_a: ca[k],
            cos_b: cb[k],
            cos_target: ct[k],
            content_lambda: content[k],
        })
        .collect();
    Ok((rows, hg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(lambda: f64, content_lambda: f64, cos_target: f64, copy: bool) -> MixRow {
        let (a, b, text) = ("a".into(), "b".into(), "t".into());
        let (cos_a, cos_b) = (0.5, 0.5);
        MixRow {
            a,
            b,
            lambda,
            text,
            cos_a,
            cos_b,
            cos_target,
            content_lambda,
            copy,
        }
    }

    /// The summary on constructed rows: per-lambda means, and at mid-lambda the copies, the gap
    /// and the share that carries both sources.
    #[test]
    fn summary_counts_copies_gaps_and_rows_that_carry_both() {
        let rows = [
            row(0.0, 0.1, 0.9, true),
            row(0.5, 0.5, 0.8, false),
            row(0.5, 0.95, 0.6, true),
            row(0.7, 0.6, 0.7, false),
        ];
        let s = MixSummary::of(&rows);
        assert_eq!(s.by_lambda.len(), 3);
        assert_eq!((s.by_lambda[1].lambda, s.by_lambda[1].n), (0.5, 2));
        assert!((s.by_lambda[1].copies - 0.5).abs() < 1e-12);
        assert_eq!(s.mid_n, 3);
        assert!((s.mid_copies - 1.0 / 3.0).abs() < 1e-12);
        assert!(
            (s.carries_both - 2.0 / 3.0).abs() < 1e-12,
            "0.95 lies outside [0.15, 0.85]"
        );
        assert!((s.mid_gap - (0.0 + 0.45 + 0.1) / 3.0).abs() < 1e-12);
        assert!((s.mid_cos_target - 0.7).abs() < 1e-12);
        assert_eq!(
            s.close_to_both, 1.0,
            "every constructed row is at 0.5 to both"
        );
    }
}
