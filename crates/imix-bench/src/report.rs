//! Benchmark reports: summary.md (mean ± std, best in bold, paired tests) and SVG plots.

use crate::grid::{shots_name, CellResult};
use crate::methods::Method;
use anyhow::Result;
use inversed_mixup::eval::stats::mean_std;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// One metric of `method` by seed in a (dataset, shots) group.
pub(crate) fn metric_by_seed(
    rows: &[CellResult],
    ds: &str,
    shots: usize,
    method: Method,
    f: fn(&CellResult) -> f64,
) -> BTreeMap<u64, f64> {
    rows.iter()
        .filter(|r| r.dataset == ds && r.shots == shots && r.method == method)
        .map(|r| (r.seed, f(r)))
        .collect()
}

/// Means over seeds of the generator diagnostics, for the methods that generate text.
fn generator_table(rows: &[CellResult], methods: &[Method], groups: &[(String, usize)]) -> String {
    let mut md = String::from(
        "\n## Generated rows\n\nMeans over seeds. fidelity: encoder cosine of a sentence to the mixed embedding it was decoded from; \
lambda gap: mean |content ratio - mixing ratio| (the content ratio is where the sentence's embedding projects between its sources); \
copies: share of mixes with lambda in [0.2, 0.8] whose content sits at one source; verbatim: share of all rows that are one of their sources word for word; distinct-2: distinct word bigrams / bigrams; \
label agreement: share of sentences that a linear probe trained on the whole train split (its test accuracy in brackets) reads as the class their mix label weights most; \
teacher agreement: the same for the warmed-up task model that gives teacher labels (its accuracy on the evaluation split in brackets).\n\n\
| dataset | shots | method | fidelity | lambda gap | copies | verbatim | distinct-2 | label agreement | teacher agreement |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut any = false;
    for (ds, shots) in groups {
        for m in methods {
            let g: Vec<_> = rows
                .iter()
                .filter(|r| &r.dataset == ds && r.shots == *shots && r.method == *m)
                .filter_map(|r| r.generator)
                .collect();
            if g.is_empty() {
                continue;
            }
            any = true;
            let mean = |f: fn(&inversed_mixup::method::augment::GenDiagnostics) -> f64| {
                g.iter().map(f).sum::<f64>() / g.len() as f64
            };
            let v: Vec<f64> = g.iter().filter_map(|d| d.verbatim).collect();
            let verbatim = if v.is_empty() {
                "–".to_string()
            } else {
                format!("{:.1} %", 100.0 * v.iter().sum::<f64>() / v.len() as f64)
            };
            // "agreement % (accuracy %)" over the seeds that have both.
            let pair = |p: Vec<(f64, f64)>| {
                let n = p.len() as f64;
                if p.is_empty() {
                    return String::new();
                }
                format!(
                    "{:.1} % ({:.1} %)",
                    100.0 * p.iter().map(|a| a.0).sum::<f64>() / n,
                    100.0 * p.iter().map(|a| a.1).sum::<f64>() / n
                )
            };
            let agree = pair(
                g.iter()
                    .filter_map(|d| d.label_agreement.zip(d.judge_accuracy))
                    .collect(),
            );
            let teacher = pair(
                g.iter()
                    .filter_map(|d| d.teacher_agreement.zip(d.teacher_accuracy))
                    .collect(),
            );
            md.push_str(&format!(
                "| {ds} | {} | {m} | {:.3} | {:.3} | {:.1} % | {verbatim} | {:.3} | {agree} | {teacher} |\n",
                shots_name(*shots),
                mean(|d| d.fidelity),
                mean(|d| d.lambda_gap),
                100.0 * mean(|d| d.copy_rate),
                mean(|d| d.distinct_2)
            ));
        }
    }
    if any {
        md
    } else {
        String::new()
    }
}

/// The protocol a report covers: its file names' suffix and the sentence that says what it is.
pub struct Protocol<'a> {
    /// Appended to `summary` and `accuracy` in the file names (empty for the default protocol).
    pub suffix: &'a str,
    /// What the rows' task models are, said under the title.
    pub description: &'a str,
}

/// Writes summary{suffix}.md and accuracy{suffix}.svg (the rows of one protocol), and the two
/// lambda plots of every generated row in the folder, into `out`.
pub fn write(
    out: &Path,
    protocol: &Protocol,
    rows: &[CellResult],
    methods: &[Method],
) -> Result<()> {
    let mut groups: Vec<(String, usize)> =
        rows.iter().map(|r| (r.dataset.clone(), r.shots)).collect();
    groups.sort();
    groups.dedup();
    let mut md = String::from(
        "# Few-shot benchmark\n\nMean ± std over seeds (accuracy / macro-F1, %); best mean accuracy in bold. \
Paired tests and the generated claims follow the table.\n\n",
    );
    md.push_str(&format!("Task model: {}.\n\n", protocol.description));
    md.push_str("| dataset | shots | method | seeds | accuracy | macro-F1 | aug rows | intrusion |\n|---|---|---|---|---|---|---|---|\n");
    for (ds, shots) in &groups {
        let best = methods
            .iter()
            .map(|m| {
                mean_std(
                    &metric_by_seed(rows, ds, *shots, *m, |r| r.accuracy)
                        .into_values()
                        .collect::<Vec<_>>(),
                )
                .0
            })
            .filter(|v| !v.is_nan())
            .fold(f64::NEG_INFINITY, f64::max);
        for m in methods {
            let acc: Vec<f64> = metric_by_seed(rows, ds, *shots, *m, |r| r.accuracy)
                .into_values()
                .collect();
            if acc.is_empty() {
                continue;
            }
            let f1: Vec<f64> = metric_by_seed(rows, ds, *shots, *m, |r| r.macro_f1)
                .into_values()
                .collect();
            let aug: Vec<f64> = metric_by_seed(rows, ds, *shots, *m, |r| r.aug_rows as f64)
                .into_values()
                .collect();
            let ir: Vec<f64> = rows
                .iter()
                .filter(|r| &r.dataset == ds && r.shots == *shots && r.method == *m)
                .filter_map(|r| r.intrusion_rate)
                .collect();
            let (am, asd) = mean_std(&acc);
            let (fm, fsd) = mean_std(&f1);
            let a = format!("{:.1} ± {:.1}", 100.0 * am, 100.0 * asd);
            let a = if (am - best).abs() < 1e-12 {
                format!("**{a}**")
            } else {
                a
            };
            let irs = if ir.is_empty() {
                "".into()
            } else {
                format!("{:.1} %", 100.0 * mean_std(&ir).0)
            };
            md.push_str(&format!(
                "| {ds} | {} | {m} | {} | {a} | {:.1} ± {:.1} | {:.0} | {irs} |\n",
                shots_name(*shots),
                acc.len(),
                100.0 * fm,
                100.0 * fsd,
                mean_std(&aug).0
            ));
        }
    }
    md.push_str(&crate::claims::paired_table(rows, methods, &groups));
    md.push_str(&crate::pooled::pooled_table(rows, methods, &groups));
    md.push_str(&crate::pooled::gate(rows, methods, &groups));
    md.push_str(&crate::claims::claims(rows, methods, &groups));
    md.push_str(&generator_table(rows, methods, &groups));
    md.push_str(&crate::provenance::section(out, rows)?);
    inversed_mixup::data::io::write_atomic(
        &out.join(format!("summary{}.md", protocol.suffix)),
        md.as_bytes(),
    )?;
    accuracy_plot(
        &out.join(format!("accuracy{}.svg", protocol.suffix)),
        rows,
        methods,
        &groups,
    )?;
    let generated = read_generated(&out.join("generated"))?;
    lambda_plots(out, &generated)?;
    Ok(())
}

fn read_generated(dir: &Path) -> Result<Vec<(String, AugLite)>> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut files: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            let ds = f
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.split('-').next())
                .unwrap_or("")
                .to_string();
            for l in std::fs::read_to_string(&f)?.lines() {
                let r: serde_json::Value = serde_json::from_str(l)?;
                v.push((
                    ds.clone(),
                    AugLite {
                        lambda: r["lambda"].as_f64().unwrap_or(0.0),
                        diff: r["cos_a"].as_f64().unwrap_or(0.0)
                            - r["cos_b"].as_f64().unwrap_or(0.0),
                        intrusion: r["intrusion"].as_bool().unwrap_or(false),
                    },
                ));
            }
        }
    }
    Ok(v)
}

/// The parts of a generated row (`AugRow`) the plots need.
struct AugLite {
    lambda: f64,
    diff: f64,
    intrusion: bool,
}

fn accuracy_plot(
    path: &Path,
    rows: &[CellResult],
    methods: &[Method],
    groups: &[(String, usize)],
) -> Result<()> {
    let root =
        SVGBackend::new(path, (160 + 120 * groups.len().max(1) as u32, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = methods.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Test accuracy by method (mean over seeds)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..groups.len().max(1) as f64, 0f64..1f64)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len().max(1))
        .x_label_formatter(&|x| {
            groups
                .get(x.floor() as usize)
                .map(|(d, s)| format!("{d} {}", shots_name(*s)))
                .unwrap_or_default()
        })
        .y_desc("accuracy")
        .draw()?;
    for (mi, m) in methods.iter().enumerate() {
        let color = Palette99::pick(mi).to_rgba();
        let bars: Vec<Rectangle<(f64, f64)>> = groups
            .iter()
            .enumerate()
            .filter_map(|(gi, (ds, shots))| {
                let acc: Vec<f64> = metric_by_seed(rows, ds, *shots, *m, |r| r.accuracy)
                    .into_values()
                    .collect();
                (!acc.is_empty()).then(|| {
                    let x0 = gi as f64 + 0.1 + 0.8 * mi as f64 / n as f64;
                    Rectangle::new(
                        [(x0, 0.0), (x0 + 0.8 / n as f64, mean_std(&acc).0)],
                        color.filled(),
                    )
                })
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(m.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn lambda_plots(out: &Path, g: &[(String, AugLite)]) -> Result<()> {
    let bucket = |l: f64| ((l * 5.0).floor() as usize).min(4);
    let mut datasets: Vec<String> = g.iter().map(|x| x.0.clone()).collect();
    datasets.sort();
    datasets.dedup();
    for (file, title, ylab, range, f) in [
        (
            "controllability.svg",
            "Controllability: mean cos_a - cos_b by lambda bucket",
            "cos_a - cos_b",
            -0.5f64..0.5f64,
            (|r: &AugLite| r.diff) as fn(&AugLite) -> f64,
        ),
        (
            "intrusion.svg",
            "Intrusion rate by dataset and lambda bucket",
            "intrusion rate",
            0f64..1f64,
            (|r: &AugLite| if r.intrusion { 1.0 } else { 0.0 }) as fn(&AugLite) -> f64,
        ),
    ] {
        let path = out.join(file);
        let root = SVGBackend::new(&path, (640, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, range)?;
        chart
            .configure_mesh()
            .x_desc("lambda (bucket centre)")
            .y_desc(ylab)
            .draw()?;
        for (di, ds) in datasets.iter().enumerate() {
            let mut sums = [(0.0, 0usize); 5];
            for (_, r) in g.iter().filter(|x| &x.0 == ds) {
                let b = bucket(r.lambda);
                sums[b].0 += f(r);
                sums[b].1 += 1;
            }
            let pts: Vec<(f64, f64)> = sums
                .iter()
                .enumerate()
                .filter(|(_, s)| s.1 > 0)
                .map(|(i, s)| (0.1 + 0.2 * i as f64, s.0 / s.1 as f64))
                .collect();
            let color = Palette99::pick(di).to_rgba();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(ds.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], color));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: Method, seed: u64, accuracy: f64, intrusion: Option<f64>) -> CellResult {
        CellResult {
            dataset: "toy".into(),
            shots: 10,
            seed,
            method,
            task_model: "finetune".into(),
            accuracy,
            macro_f1: accuracy - 0.1,
            train_rows: 20,
            aug_rows: 40,
            intrusion_rate: intrusion,
            seconds: 1.0,
            generator: intrusion.map(|_| inversed_mixup::method::augment::GenDiagnostics {
                fidelity: 0.5,
                lambda_gap: 0.2,
                copy_rate: 0.25,
                distinct_2: 0.8,
                verbatim: Some(0.5),
                label_agreement: Some(0.6 + 0.1 * seed as f64),
                judge_accuracy: Some(0.9),
                teacher_agreement: None,
                teacher_accuracy: None,
            }),
            warmup_finetune: false,
            final_from_warmup: false,
            settings: None,
            run: None,
        }
    }

    /// summary.md: mean ± sample std in %, the best mean in bold (only it), seed counts, intrusion
    /// rates, and paired tests whose mean difference and exact p are computed by hand here.
    #[test]
    fn summary_tables_state_what_the_rows_say() {
        let d = tempfile::tempdir().unwrap();
        let mut rows = Vec::new();
        for (s, (n, e, k)) in [(0.60, 0.62, 0.70), (0.64, 0.60, 0.74), (0.62, 0.64, 0.72)]
            .into_iter()
            .enumerate()
        {
            rows.push(row(Method::None, s as u64, n, None));
            rows.push(row(Method::EmbedMixup, s as u64, e, None));
            rows.push(row(
                Method::InversedMixupKeep,
                s as u64,
                k,
                Some(0.25 * s as f64),
            ));
        }
        let methods = [Method::None, Method::EmbedMixup, Method::InversedMixupKeep];
        write(
            d.path(),
            &Protocol {
                suffix: "-x",
                description: "the X protocol",
            },
            &rows,
            &methods,
        )
        .unwrap();
        let md = std::fs::read_to_string(d.path().join("summary-x.md")).unwrap();
        assert!(md.contains("Task model: the X protocol."), "{md}");
        // none: mean 62.0, sample std 2.0; keep: mean 72.0, std 2.0 and best; intrusion mean 25 %.
        assert!(
            md.contains("| toy | 10 | none | 3 | 62.0 ± 2.0 | 52.0 ± 2.0 | 40 |  |"),
            "{md}"
        );
        assert!(
            md.contains("| toy | 10 | embed-mixup | 3 | 62.0 ± 2.0 |"),
            "{md}"
        );
        assert!(md.contains("| toy | 10 | inversed-mixup-keep | 3 | **72.0 ± 2.0** | 62.0 ± 2.0 | 40 | 25.0 % |"), "{md}");
        assert_eq!(md.matches("**").count(), 2, "exactly one bold cell:\n{md}");
        // keep beats none by +10 on all 3 seeds: exact two-sided p = 2 / 2^3 = 0.25.
        assert!(
            md.contains(
                "| toy | 10 | inversed-mixup-keep | +10.0 (3/0), p 0.250 | +10.0 (3/0), p 0.250 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("is above `none` in mean accuracy on 1 of 1 datasets (toy +10.0"),
            "{md}"
        );
        // Verbatim 50 %; label agreement 60, 70, 80 % over the seeds: mean 70 %, judged by a 90 % judge.
        assert!(md.contains("| toy | 10 | inversed-mixup-keep | 0.500 | 0.200 | 25.0 % | 50.0 % | 0.800 | 70.0 % (90.0 %) |"), "{md}");
        assert!(d.path().join("accuracy-x.svg").exists());
    }
}
