//! Evidence pooled over datasets: per shot count, the paired sign-flip test over every (dataset,
//! seed) pair with the mean difference and a bootstrap 95 % interval, and the dev gate's verdict
//! (above the better of `none`/`duplicate` and above EDA on 3 of 4 datasets at every shot count).
//! Per-dataset p-values over 10 seeds cannot show a 1-point effect; 40 pooled pairs can.

use crate::grid::{shots_name, CellResult};
use crate::methods::Method;
use crate::report::metric_by_seed;
use inversed_mixup::eval::stats::{bootstrap_ci95, sign_flip_p};

/// The baselines of the pooled table, in column order.
const BASES: [Method; 4] = [
    Method::None,
    Method::Duplicate,
    Method::Eda,
    Method::EmbedMixup,
];

/// Seed of the resampling (the test's p and interval are the same on every run).
const SEED: u64 = 2026;

/// The accuracy differences `a - b` (points) over every (dataset, seed) both ran at `shots`.
pub fn differences(
    rows: &[CellResult],
    sets: &[&str],
    shots: usize,
    a: Method,
    b: Method,
) -> Vec<f64> {
    let mut d = Vec::new();
    for ds in sets {
        let (x, y) = (
            metric_by_seed(rows, ds, shots, a, acc),
            metric_by_seed(rows, ds, shots, b, acc),
        );
        d.extend(
            x.iter()
                .filter_map(|(s, v)| y.get(s).map(|w| 100.0 * (v - w))),
        );
    }
    d
}

fn acc(r: &CellResult) -> f64 {
    r.accuracy
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Markdown: per shot count and generating method, against each baseline, the mean paired
/// difference over all (dataset, seed) pairs, its bootstrap 95 % interval, the sign-flip p and n.
pub fn pooled_table(rows: &[CellResult], methods: &[Method], groups: &[(String, usize)]) -> String {
    let bases: Vec<Method> = BASES.into_iter().filter(|b| methods.contains(b)).collect();
    let vars: Vec<Method> = methods.iter().copied().filter(|m| m.generates()).collect();
    if bases.is_empty() || vars.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "\n## Pooled over datasets\n\nMean paired difference in accuracy points over every (dataset, seed) pair of a shot count, \
its bootstrap 95 % interval, and the two-sided sign-flip p over those pairs (exact up to 20 pairs, else 100 000 seeded flips); n pairs.\n\n| shots | method |",
    );
    for b in &bases {
        md.push_str(&format!(" vs {b} |"));
    }
    md.push_str(&format!("\n|---|---|{}\n", "---|".repeat(bases.len())));
    for k in shot_counts(groups) {
        let sets = datasets(groups, k);
        for &v in &vars {
            let cells: Vec<String> = bases
                .iter()
                .map(|&b| {
                    let d = differences(rows, &sets, k, v, b);
                    if d.is_empty() {
                        return String::new();
                    }
                    let (lo, hi) = bootstrap_ci95(&d, SEED);
                    format!(
                        "{:+.2} [{lo:+.2}, {hi:+.2}], p {:.3}, n {}",
                        mean(&d),
                        sign_flip_p(&d, SEED),
                        d.len()
                    )
                })
                .collect();
            if cells.iter().all(String::is_empty) {
                continue;
            }
            md.push_str(&format!(
                "| {} | {v} | {} |\n",
                shots_name(k),
                cells.join(" | ")
            ));
        }
    }
    md
}

/// Markdown: the gate's verdict per generating method: at each shot count, the datasets where its
/// mean accuracy is above the better of `none` and `duplicate` and above EDA; it passes when that
/// holds on at least 3 of 4 datasets (three quarters of those run) at every shot count.
pub fn gate(rows: &[CellResult], methods: &[Method], groups: &[(String, usize)]) -> String {
    let needed = [Method::None, Method::Duplicate, Method::Eda];
    if !needed.iter().all(|m| methods.contains(m)) {
        return String::new();
    }
    let mut md = String::from(
        "\n## Gate\n\nA method passes when its mean accuracy is above the better of `none` and `duplicate` and above `eda` \
on at least three quarters of the datasets (3 of 4) at every shot count.\n\n| method | datasets above, by shot count | verdict |\n|---|---|---|\n",
    );
    let mean_of = |ds: &str, k: usize, m: Method| {
        let v: Vec<f64> = metric_by_seed(rows, ds, k, m, acc).into_values().collect();
        (!v.is_empty()).then(|| mean(&v))
    };
    for v in methods.iter().copied().filter(|m| m.generates()) {
        let mut parts = Vec::new();
        let mut pass = true;
        for k in shot_counts(groups) {
            let sets = datasets(groups, k);
            let mut above = Vec::new();
            let mut ran = 0;
            for ds in &sets {
                let (Some(x), Some(n), Some(d), Some(e)) = (
                    mean_of(ds, k, v),
                    mean_of(ds, k, Method::None),
                    mean_of(ds, k, Method::Duplicate),
                    mean_of(ds, k, Method::Eda),
                ) else {
                    continue;
                };
                ran += 1;
                if x > n.max(d) && x > e {
                    above.push(*ds);
                }
            }
            pass &= ran > 0 && 4 * above.len() >= 3 * ran;
            parts.push(format!(
                "{}: {} of {ran} ({})",
                shots_name(k),
                above.len(),
                if above.is_empty() {
                    "none".into()
                } else {
                    above.join(", ")
                }
            ));
        }
        md.push_str(&format!(
            "| {v} | {} | {} |\n",
            parts.join("; "),
            if pass { "**pass**" } else { "fail" }
        ));
    }
    md
}

fn shot_counts(groups: &[(String, usize)]) -> Vec<usize> {
    let mut k: Vec<usize> = groups.iter().map(|g| g.1).collect();
    k.sort();
    k.dedup();
    k
}

fn datasets(groups: &[(String, usize)], k: usize) -> Vec<&str> {
    groups
        .iter()
        .filter(|g| g.1 == k)
        .map(|g| g.0.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::tests::row;

    /// Constructed pairs: 2 datasets x 3 seeds, the method 1 point above `none` on 5 pairs and 1
    /// below on 1: mean +0.667, exact p = 14/64 (the flips whose |sum| reaches 4); above EDA nowhere.
    #[test]
    fn pooled_test_and_gate_on_constructed_pairs() {
        let mut rows = Vec::new();
        for (ds, s) in [
            ("a", 0u64),
            ("a", 1),
            ("a", 2),
            ("b", 0),
            ("b", 1),
            ("b", 2),
        ] {
            let base = 0.6 + 0.01 * s as f64;
            let up = if (ds, s) == ("b", 2) { -0.01 } else { 0.01 };
            rows.push(row(ds, Method::None, s, base));
            rows.push(row(ds, Method::Duplicate, s, base));
            rows.push(row(ds, Method::Eda, s, base + 0.05));
            rows.push(row(ds, Method::InversedMixupKeep, s, base + up));
        }
        let d = differences(
            &rows,
            &["a", "b"],
            10,
            Method::InversedMixupKeep,
            Method::None,
        );
        assert_eq!(d.len(), 6);
        // |sum| >= 4 of +-1 x 6: sums 6, 4, -4, -6 -> 1 + 6 + 6 + 1 = 14 of 64 sign vectors.
        assert_eq!(sign_flip_p(&d, SEED), 14.0 / 64.0);
        let methods = [
            Method::None,
            Method::Duplicate,
            Method::Eda,
            Method::InversedMixupKeep,
        ];
        let groups = vec![("a".to_string(), 10), ("b".to_string(), 10)];
        let t = pooled_table(&rows, &methods, &groups);
        assert!(t.contains("| 10 | inversed-mixup-keep | +0.67 ["), "{t}");
        assert!(t.contains("p 0.219, n 6 |"), "{t}");
        let g = gate(&rows, &methods, &groups);
        assert!(
            g.contains("| inversed-mixup-keep | 10: 0 of 2 (none) | fail |"),
            "{g}"
        );
    }
}
