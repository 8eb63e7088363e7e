//! What stage 3 reports besides its rows: mean cosines to each source per lambda, how well the
//! content follows lambda (Spearman), and the counts of empty, looping and intruding rows.

use crate::eval::stats::spearman;
use crate::eval::text::loops;
use crate::method::augment::{controllability, AugRow, AugmentStats};
use serde::Serialize;

/// Mean cosines of the rows of one lambda (or one lambda bin).
#[derive(Debug, Clone, Serialize)]
pub struct LambdaGroup {
    /// The lambda value (`0.500`) or bin (`0.4-0.6`).
    pub lambda: String,
    /// Rows in it.
    pub n: usize,
    /// Mean cosine to source A.
    pub mean_cos_a: f64,
    /// Mean cosine to source B.
    pub mean_cos_b: f64,
}

/// The summary of one augmentation.
#[derive(Debug, Clone, Serialize)]
pub struct AugmentSummary {
    /// Per lambda value, or per fifth of [0, 1] when lambdas are drawn.
    pub by_lambda: Vec<LambdaGroup>,
    /// Mixes decoded.
    pub generated: usize,
    /// Rows written.
    pub written: usize,
    /// Decodes that produced no text (left out).
    pub empty: usize,
    /// Rows whose text loops.
    pub looping: usize,
    /// Rows judged intruding.
    pub intruding: usize,
    /// Intruding share of the non-empty decodes.
    pub intrusion_rate: f64,
    /// Intruders left out.
    pub dropped: usize,
    /// Intruders relabelled.
    pub relabelled: usize,
    /// Copies of a source replaced by a sampled variation.
    pub resampled: usize,
    /// Mixes left out because every candidate was a near copy of a source.
    pub rejected: usize,
    /// Spearman correlation of lambda with cos_a - cos_b over the rows.
    pub spearman_lambda_vs_cos_diff: f64,
}

impl AugmentSummary {
    /// The summary of `rows` with their counts.
    pub fn of(rows: &[AugRow], st: &AugmentStats) -> Self {
        let per_value = controllability(rows);
        let mean = |sel: &[&AugRow], f: fn(&AugRow) -> f64| {
            sel.iter().map(|r| f(r)).sum::<f64>() / sel.len() as f64
        };
        let group = |lambda: String, sel: Vec<&AugRow>| LambdaGroup {
            lambda,
            n: sel.len(),
            mean_cos_a: mean(&sel, |r| r.cos_a),
            mean_cos_b: mean(&sel, |r| r.cos_b),
        };
        // Drawn lambdas (beta:ALPHA) are all different: five bins instead of a line per row.
        let groups: Vec<(String, Vec<&AugRow>)> = if per_value.len() <= 11 {
            per_value
                .iter()
                .map(|&(l, _, _)| {
                    let sel = rows
                        .iter()
                        .filter(|r| (r.lambda - l).abs() < 1e-6)
                        .collect();
                    (format!("{l:.3}"), sel)
                })
                .collect()
        } else {
            (0..5)
                .map(|b| {
                    let bin = |r: &&AugRow| ((r.lambda * 5.0).floor() as usize).min(4) == b;
                    let name = format!("{:.1}-{:.1}", 0.2 * b as f64, 0.2 * (b + 1) as f64);
                    (name, rows.iter().filter(bin).collect())
                })
                .collect()
        };
        let by_lambda = groups
            .into_iter()
            .filter(|g| !g.1.is_empty())
            .map(|(l, sel)| group(l, sel))
            .collect();
        let lambdas: Vec<f64> = rows.iter().map(|r| r.lambda).collect();
        let diffs: Vec<f64> = rows.iter().map(|r| r.cos_a - r.cos_b).collect();
        Self {
            by_lambda,
            generated: st.generated,
            written: rows.len(),
            empty: st.empty,
            looping: rows.iter().filter(|r| loops(&r.text)).count(),
            intruding: st.intruding,
            intrusion_rate: st.intruding as f64 / (st.generated - st.empty).max(1) as f64,
            dropped: st.dropped,
            relabelled: st.relabelled,
            resampled: st.resampled,
            rejected: st.rejected,
            spearman_lambda_vs_cos_diff: spearman(&lambdas, &diffs),
        }
    }
}

impl std::fmt::Display for AugmentSummary {
    /// The per-lambda table and the counts line `imix augment` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "lambda  n  mean_cos_a  mean_cos_b  mean(cos_a-cos_b)")?;
        for g in &self.by_lambda {
            let (ca, cb) = (g.mean_cos_a, g.mean_cos_b);
            writeln!(
                f,
                "{}  {}  {ca:.4}  {cb:.4}  {:+.4}",
                g.lambda,
                g.n,
                ca - cb
            )?;
        }
        write!(
            f,
            "generated={} written={} empty={} looping={} intruding={} intrusion_rate={:.4} \
             dropped={} relabelled={} spearman_lambda_vs_cos_diff={:.4}",
            self.generated,
            self.written,
            self.empty,
            self.looping,
            self.intruding,
            self.intrusion_rate,
            self.dropped,
            self.relabelled,
            self.spearman_lambda_vs_cos_diff
        )?;
        if self.rejected > 0 {
            write!(f, " rejected={}", self.rejected)?;
        }
        Ok(())
    }
}
