//! Where a report's numbers come from: the benchmark runs of `runs.jsonl` (commit, CPU,
//! command, wall time) and the cells each of them computed, so that every number in summary.md can
//! be traced to the binary and machine that produced it.

use crate::grid::{shots_name, CellResult};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

/// One benchmark run: its "started" record and, unless it was killed, its "finished" one.
struct Run {
    id: u64,
    started: serde_json::Value,
    finished: Option<serde_json::Value>,
}

/// The runs of `runs.jsonl` in order; a "finished" record closes the run started just before it.
fn runs(path: &Path) -> Result<Vec<Run>> {
    // A missing runs.jsonl reads as no records.
    let records: Vec<serde_json::Value> = inversed_mixup::data::jsonl::read(path)?;
    let mut out: Vec<Run> = Vec::new();
    for r in records {
        match r["event"].as_str() {
            Some("started") => out.push(Run {
                id: r["unix_time"].as_u64().unwrap_or(0),
                started: r,
                finished: None,
            }),
            Some("finished") => {
                if let Some(last) = out.last_mut().filter(|l| l.finished.is_none()) {
                    last.finished = Some(r);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `2026-11-27 16:29` (UTC) of a unix time (days to civil date: H. Hinnant's algorithm).
fn utc(t: u64) -> String {
    let (days, secs) = ((t / 86_400) as i64, t % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// `0-2, 5` for seeds 0, 1, 2, 5.
fn ranges(seeds: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < seeds.len() {
        let mut j = i;
        while j + 1 < seeds.len() && seeds[j + 1] == seeds[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            seeds[i].to_string()
        } else {
            format!("{}-{}", seeds[i], seeds[j])
        });
        i = j + 1;
    }
    parts.join(", ")
}

/// The cells of `rows`: "sst2 10-shot seeds 0-2; trec 10-shot seed 0".
fn cells(rows: &[&CellResult]) -> String {
    let mut by: BTreeMap<(String, usize), Vec<u64>> = BTreeMap::new();
    for r in rows {
        by.entry((r.dataset.clone(), r.shots))
            .or_default()
            .push(r.seed);
    }
    by.into_iter()
        .map(|((ds, shots), mut s)| {
            s.sort();
            s.dedup();
            format!(
                "{ds} {}-shot seed{} {}",
                shots_name(shots),
                if s.len() > 1 { "s" } else { "" },
                ranges(&s)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The report's provenance section: a row per run that computed some of `rows`, and the rows that
/// name no run (written before rows recorded theirs). Empty when no row names a run.
pub(crate) fn section(out: &Path, rows: &[CellResult]) -> Result<String> {
    if rows.iter().all(|r| r.run.is_none()) {
        return Ok(String::new());
    }
    let runs = runs(&out.join("runs.jsonl"))?;
    let mut md = String::from(
        "\n## Where the numbers come from\n\nEvery row above was computed by one benchmark run (`runs.jsonl`; a row's `run` is the unix time its run started). \
Wall time is the run's own (minutes from its start to its reports; a killed run has none).\n\n\
| run started (UTC) | commit | CPU | kernels, threads | minutes | cells | command |\n|---|---|---|---|---|---|---|\n",
    );
    let mut minutes = 0.0;
    for run in &runs {
        // A run that finished having computed no cell owns no row, though it may share its
        // start second, and so its id, with the next run (a grid's calls with nothing left to do).
        let idle = run
            .finished
            .as_ref()
            .is_some_and(|f| f["cells_computed"].as_u64() == Some(0));
        let mine: Vec<&CellResult> = rows.iter().filter(|r| r.run == Some(run.id)).collect();
        if mine.is_empty() || idle {
            continue;
        }
        let s = &run.started;
        let m = run.finished.as_ref().and_then(|f| f["minutes"].as_f64());
        minutes += m.unwrap_or(0.0);
        let command: Vec<&str> = s["command"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        md.push_str(&format!(
            "| {} | {} | {} | {}, {} | {} | {} | `{}` |\n",
            utc(run.id),
            s["commit"].as_str().unwrap_or("?"),
            s["cpu"].as_str().unwrap_or("?"),
            s["kernels"].as_str().unwrap_or("?"),
            s["cores"].as_u64().unwrap_or(0),
            m.map(|m| format!("{m:.1}"))
                .unwrap_or_else(|| "killed".into()),
            cells(&mine),
            command.join(" ")
        ));
    }
    md.push_str(&format!("\nWall time of these runs: {minutes:.0} min.\n"));
    let orphans: Vec<&CellResult> = rows
        .iter()
        .filter(|r| r.run.is_none_or(|id| !runs.iter().any(|x| x.id == id)))
        .collect();
    if !orphans.is_empty() {
        md.push_str(&format!(
            "\nRows that name no run of runs.jsonl: {}.\n",
            cells(&orphans)
        ));
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_seed_ranges_read_as_written() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        // 2026-11-27 16:30:47 UTC (the first grid run of the shipped adaptor).
        assert_eq!(utc(1_795_797_047), "2026-11-27 16:30");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
        assert_eq!(ranges(&[3]), "3");
    }

    fn row(ds: &str, seed: u64, run: Option<u64>) -> CellResult {
        let mut r: CellResult = serde_json::from_value(serde_json::json!({
            "dataset": ds, "shots": 10, "seed": seed, "method": "none", "accuracy": 0.5, "macro_f1": 0.5,
            "train_rows": 20, "aug_rows": 0, "intrusion_rate": null, "seconds": 1.0
        }))
        .unwrap();
        r.run = run;
        r
    }

    /// Each run that computed rows gets its commit, CPU, minutes and cells; a killed run says so;
    /// a run that computed none of the rows (or no cell at all) is left out; rows of no known run are named.
    #[test]
    fn each_row_is_traced_to_its_run() {
        let d = tempfile::tempdir().unwrap();
        let rec = |event: &str, t: u64, commit: &str, minutes: f64, cells: u64| {
            serde_json::json!({"event": event, "unix_time": t, "minutes": minutes, "command": ["imix", "bench", "--seeds", "3"],
                "commit": commit, "cpu": "Some CPU", "cores": 2, "kernels": "avx2", "cells_computed": cells, "stopped_early": false})
        };
        // ddd had nothing to do and started in aaa's second: its id is aaa's, and it is left out.
        let records = vec![
            rec("started", 100, "ddd", 0.0, 0),
            rec("finished", 100, "ddd", 0.0, 0),
            rec("started", 100, "aaa", 0.0, 0),
            rec("finished", 700, "aaa", 10.0, 3),
            rec("started", 800, "bbb", 0.0, 0),
            rec("started", 900, "ccc", 0.0, 0),
            rec("finished", 1000, "ccc", 1.5, 1),
        ];
        inversed_mixup::data::jsonl::write(&d.path().join("runs.jsonl"), &records).unwrap();
        let rows = vec![
            row("sst2", 0, Some(100)),
            row("sst2", 1, Some(100)),
            row("sst2", 2, Some(100)),
            row("trec", 0, Some(800)),
            row("mr", 4, None),
        ];
        let md = section(d.path(), &rows).unwrap();
        assert!(md.contains("| 1970-01-01 00:01 | aaa | Some CPU | avx2, 2 | 10.0 | sst2 10-shot seeds 0-2 | `imix bench --seeds 3` |"), "{md}");
        assert!(
            md.contains(
                "| 1970-01-01 00:13 | bbb | Some CPU | avx2, 2 | killed | trec 10-shot seed 0 |"
            ),
            "{md}"
        );
        assert!(!md.contains("ccc") && !md.contains("ddd"), "{md}");
        assert!(md.contains("Wall time of these runs: 10 min."), "{md}");
        assert!(
            md.contains("Rows that name no run of runs.jsonl: mr 10-shot seed 4."),
            "{md}"
        );
        assert_eq!(section(d.path(), &[row("mr", 4, None)]).unwrap(), "");
    }
}
