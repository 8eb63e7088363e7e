//! The benchmark's paired comparisons and its prose claims, both computed from the result rows, so
//! that what summary.md says always agrees with its tables.

use crate::grid::{shots_name, CellResult, ALL_SHOTS};
use crate::methods::Method;
use inversed_mixup::eval::stats::paired_permutation_p;
use std::collections::BTreeMap;

/// The baselines every inversedMixup variant is compared with, in column order.
const BASELINES: [Method; 5] = [
    Method::None,
    Method::Duplicate,
    Method::Eda,
    Method::EmbedMixup,
    Method::RetrievalMixup,
];

/// Accuracy by seed of one method in one (dataset, shots) group.
fn by_seed(rows: &[CellResult], ds: &str, shots: usize, m: Method) -> BTreeMap<u64, f64> {
    crate::report::metric_by_seed(rows, ds, shots, m, |r| r.accuracy)
}

/// A paired comparison of two methods over the seeds both have.
struct Paired {
    /// Mean difference (a - b), accuracy points.
    diff: f64,
    wins: usize,
    losses: usize,
    seeds: usize,
    p: f64,
}

fn paired(rows: &[CellResult], ds: &str, shots: usize, a: Method, b: Method) -> Option<Paired> {
    let (x, y) = (by_seed(rows, ds, shots, a), by_seed(rows, ds, shots, b));
    let seeds: Vec<u64> = x.keys().filter(|s| y.contains_key(s)).copied().collect();
    if seeds.is_empty() {
        return None;
    }
    let (xs, ys): (Vec<f64>, Vec<f64>) = seeds.iter().map(|s| (x[s], y[s])).unzip();
    let d: Vec<f64> = xs.iter().zip(&ys).map(|(a, b)| a - b).collect();
    Some(Paired {
        diff: 100.0 * d.iter().sum::<f64>() / d.len() as f64,
        wins: d.iter().filter(|&&v| v > 1e-12).count(),
        losses: d.iter().filter(|&&v| v < -1e-12).count(),
        seeds: d.len(),
        p: paired_permutation_p(&xs, &ys),
    })
}

/// The generating variants present, in report order.
fn variants(methods: &[Method]) -> Vec<Method> {
    methods
        .iter()
        .copied()
        .filter(|m| m.mitigation().is_some())
        .collect()
}

/// Markdown: per (dataset, shots) and inversedMixup variant, the mean paired difference against
/// each baseline present, with wins/losses over seeds and the exact sign-flip p.
pub fn paired_table(rows: &[CellResult], methods: &[Method], groups: &[(String, usize)]) -> String {
    let bases: Vec<Method> = BASELINES
        .into_iter()
        .filter(|b| methods.contains(b))
        .collect();
    let vars = variants(methods);
    if bases.is_empty() || vars.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "\n## Paired tests (accuracy)\n\nMean difference in accuracy points over the seeds both methods ran (wins/losses of seeds), \
and the two-sided exact sign-flip permutation p over seeds.\n\n| dataset | shots | method |",
    );
    for b in &bases {
        md.push_str(&format!(" vs {b} |"));
    }
    md.push_str(&format!("\n|---|---|---|{}\n", "---|".repeat(bases.len())));
    for (ds, shots) in groups {
        for &v in &vars {
            if by_seed(rows, ds, *shots, v).is_empty() {
                continue;
            }
            md.push_str(&format!("| {ds} | {} | {v} |", shots_name(*shots)));
            for &b in &bases {
                match paired(rows, ds, *shots, v, b) {
                    Some(p) => md.push_str(&format!(
                        " {:+.1} ({}/{}), p {:.3} |",
                        p.diff, p.wins, p.losses, p.p
                    )),
                    None => md.push_str(" |"),
                }
            }
            md.push('\n');
        }
    }
    md
}

/// Markdown: the sentences a report would make of the tables, counted from the rows: per shot
/// count and variant, on how many datasets it is above `none` and above EDA in mean accuracy (and
/// where the paired test gives p < 0.05), and each dataset's best method.
pub fn claims(rows: &[CellResult], methods: &[Method], groups: &[(String, usize)]) -> String {
    let mut md = String::from("\n## What the rows say (generated from them)\n\n");
    let mut shots: Vec<usize> = groups.iter().map(|g| g.1).collect();
    shots.sort();
    shots.dedup();
    for &k in &shots {
        let setting = if k == ALL_SHOTS {
            "the full train split".to_string()
        } else {
            format!("{k} shots")
        };
        let sets: Vec<&str> = groups
            .iter()
            .filter(|g| g.1 == k)
            .map(|g| g.0.as_str())
            .collect();
        for v in variants(methods) {
            for base in [Method::None, Method::Eda]
                .into_iter()
                .filter(|b| methods.contains(b))
            {
                let cmp: Vec<(&str, Paired)> = sets
                    .iter()
                    .filter_map(|ds| paired(rows, ds, k, v, base).map(|p| (*ds, p)))
                    .collect();
                if cmp.is_empty() {
                    continue;
                }
                let above: Vec<String> = cmp
                    .iter()
                    .filter(|(_, p)| p.diff > 0.0)
                    .map(|(ds, p)| format!("{ds} {:+.1}", p.diff))
                    .collect();
                let below: Vec<String> = cmp
                    .iter()
                    .filter(|(_, p)| p.diff <= 0.0)
                    .map(|(ds, p)| format!("{ds} {:+.1}", p.diff))
                    .collect();
                let sig: Vec<&str> = cmp
                    .iter()
                    .filter(|(_, p)| p.p < 0.05)
                    .map(|(ds, _)| *ds)
                    .collect();
                let seeds = cmp.iter().map(|(_, p)| p.seeds).min().unwrap_or(0);
                md.push_str(&format!(
                    "- {setting}: `{v}` is above `{base}` in mean accuracy on {} of {} datasets ({}; at or below: {}); p < 0.05 on {} ({seeds}+ seeds each; the smallest p {seeds} seeds allow is {:.3}).\n",
                    above.len(),
                    cmp.len(),
                    if above.is_empty() { "none".into() } else { above.join(", ") },
                    if below.is_empty() { "none".into() } else { below.join(", ") },
                    if sig.is_empty() { "none".into() } else { sig.join(", ") },
                    2.0 / 2f64.powi(seeds as i32),
                ));
            }
        }
        // The intrusion policies (and label sources) against each other.
        let vars = variants(methods);
        for (i, &x) in vars.iter().enumerate() {
            for &y in &vars[i + 1..] {
                let cmp: Vec<(&str, Paired)> = sets
                    .iter()
                    .filter_map(|ds| paired(rows, ds, k, x, y).map(|p| (*ds, p)))
                    .collect();
                if cmp.is_empty() {
                    continue;
                }
                let diffs: Vec<String> = cmp
                    .iter()
                    .map(|(ds, p)| format!("{ds} {:+.1}", p.diff))
                    .collect();
                md.push_str(&format!(
                    "- {setting}: `{x}` is above `{y}` on {} of {} datasets ({}).\n",
                    cmp.iter().filter(|(_, p)| p.diff > 0.0).count(),
                    cmp.len(),
                    diffs.join(", ")
                ));
            }
        }
        for ds in &sets {
            let best = methods
                .iter()
                .filter_map(|&m| {
                    let a: Vec<f64> = by_seed(rows, ds, k, m).into_values().collect();
                    (!a.is_empty()).then(|| (m, a.iter().sum::<f64>() / a.len() as f64))
                })
                .fold(None, |acc: Option<(Method, f64)>, x| {
                    if acc.is_none_or(|a| x.1 > a.1) {
                        Some(x)
                    } else {
                        acc
                    }
                });
            if let Some((m, a)) = best {
                md.push_str(&format!(
                    "- {setting}, {ds}: the best mean accuracy is `{m}` ({:.1}).\n",
                    100.0 * a
                ));
            }
        }
    }
    md
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A result row of the toy grids the tests build.
    pub(crate) fn row(ds: &str, method: Method, seed: u64, accuracy: f64) -> CellResult {
        CellResult {
            dataset: ds.into(),
            shots: 10,
            seed,
            method,
            task_model: "finetune".into(),
            accuracy,
            macro_f1: accuracy,
            train_rows: 20,
            aug_rows: 40,
            intrusion_rate: None,
            seconds: 1.0,
            generator: None,
            warmup_finetune: false,
            final_from_warmup: false,
            settings: None,
            run: None,
        }
    }

    /// Two datasets: on "a" keep beats none on all 4 seeds (+2, p = 2/16) and loses to EDA; on "b"
    /// it is below none. The claims and the table say exactly that.
    #[test]
    fn claims_count_what_the_rows_show() {
        let mut rows = Vec::new();
        for s in 0..4u64 {
            let base = 0.6 + 0.01 * s as f64;
            rows.push(row("a", Method::None, s, base));
            rows.push(row("a", Method::Eda, s, base + 0.05));
            rows.push(row("a", Method::InversedMixupKeep, s, base + 0.02));
            rows.push(row("a", Method::InversedMixupDrop, s, base + 0.03));
            rows.push(row("b", Method::None, s, base));
            rows.push(row("b", Method::Eda, s, base));
            rows.push(row(
                "b",
                Method::InversedMixupKeep,
                s,
                base - if s == 0 { 0.04 } else { 0.0 },
            ));
        }
        let methods = [
            Method::None,
            Method::Eda,
            Method::InversedMixupKeep,
            Method::InversedMixupDrop,
        ];
        let groups = vec![("a".to_string(), 10), ("b".to_string(), 10)];
        let c = claims(&rows, &methods, &groups);
        // Policies against each other, on the datasets both ran (drop ran only on "a").
        assert!(c.contains("- 10 shots: `inversed-mixup-keep` is above `inversed-mixup-drop` on 0 of 1 datasets (a -1.0)."), "{c}");
        assert!(c.contains("- 10 shots: `inversed-mixup-keep` is above `none` in mean accuracy on 1 of 2 datasets (a +2.0; at or below: b -1.0); p < 0.05 on none (4+ seeds each; the smallest p 4 seeds allow is 0.125)."), "{c}");
        assert!(c.contains("is above `eda` in mean accuracy on 0 of 2 datasets (none; at or below: a -3.0, b -1.0)"), "{c}");
        assert!(
            c.contains("- 10 shots, a: the best mean accuracy is `eda` (66.5)."),
            "{c}"
        );
        assert!(
            c.contains("- 10 shots, b: the best mean accuracy is `none` (61.5)."),
            "{c}"
        );
        let t = paired_table(&rows, &methods, &groups);
        assert!(
            t.contains(
                "| a | 10 | inversed-mixup-keep | +2.0 (4/0), p 0.125 | -3.0 (0/4), p 0.125 |"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "| b | 10 | inversed-mixup-keep | -1.0 (0/1), p 1.000 | -1.0 (0/1), p 1.000 |"
            ),
            "{t}"
        );
    }
}
