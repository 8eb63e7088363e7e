//! `imix-bench --quick` on a tiny dataset the test writes itself: runs, reports, resumes exactly.
//! The grid's bookkeeping runs on tiny random models (`tiny_models`); only the test whose claim is
//! about what the real decoder writes (copies at λ near a source) loads the default models.

#[path = "../../inversed-mixup/tests/common/mod.rs"]
mod common;

use std::process::Command;

fn write_toy(dir: &std::path::Path) {
    let d = dir.join("benchmarks/toy");
    std::fs::create_dir_all(&d).unwrap();
    let pos = [
        "a wonderful and moving film",
        "great acting and a clever story",
        "i loved every minute",
        "a charming, funny comedy",
        "beautiful music and images",
        "the best movie this year",
    ];
    let neg = [
        "a dull and boring film",
        "terrible acting and a silly plot",
        "i hated every minute",
        "a tired, unfunny comedy",
        "ugly images and noisy music",
        "the worst movie this year",
    ];
    let mut train = String::from("label\ttext\n");
    for (p, n) in pos.iter().zip(&neg) {
        train.push_str(&format!("pos\t{p}\nneg\t{n}\n"));
    }
    std::fs::write(d.join("train.tsv"), train).unwrap();
    std::fs::write(
        d.join("test.tsv"),
        "label\ttext\npos\ta lovely film\nneg\ta boring film\npos\tgreat fun\nneg\tawful acting\n",
    )
    .unwrap();
    // The unlabeled pool retrieval-mixup draws from (DATA_DIR/../unlabeled/wiki.txt by default).
    let u = dir.join("unlabeled");
    std::fs::create_dir_all(&u).unwrap();
    std::fs::write(u.join("wiki.txt"), "The river flows through the old town.\nA small museum opened in 1921.\nThe film was shot in two weeks.\nCritics praised the cast.\n").unwrap();
}

fn bench(dir: &std::path::Path) -> String {
    bench_with(dir, &[])
}

fn bench_with(dir: &std::path::Path, extra: &[&str]) -> String {
    let o = bench_output(dir, extra);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// As [`bench_with`], on the default models.
fn bench_real(dir: &std::path::Path, extra: &[&str]) -> String {
    let o = bench_output_on(dir, extra, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn bench_output(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    bench_output_on(dir, extra, common::tiny_model_flags())
}

/// `imix-bench --quick` with `models` (model flags, or none for the default models).
fn bench_output_on(
    dir: &std::path::Path,
    extra: &[&str],
    models: &[String],
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_imix-bench"))
        .args([
            "--quick",
            "--datasets",
            "toy",
            "--shots",
            "2",
            "--warmup-steps",
            "2",
        ])
        .args(extra)
        .args(models)
        .arg("--data")
        .arg(dir.join("benchmarks"))
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap()
}

#[test]
fn quick_bench_runs_reports_and_resumes_identically() {
    let d = tempfile::tempdir().unwrap();
    write_toy(d.path());
    // Out of time before the first cell: nothing computed, told how to continue.
    let out = bench_with(d.path(), &["--max-minutes", "0"]);
    assert!(
        out.contains("2 cells (0 computed now)") && out.contains("run the same command again"),
        "{out}"
    );
    let out = bench(d.path());
    assert!(out.contains("2 cells (2 computed now)"), "{out}");
    // Each run is recorded with what produced it.
    let runs: Vec<serde_json::Value> = std::fs::read_to_string(d.path().join("out/runs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<&str> = runs.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["started", "finished", "started", "finished"],
        "{runs:?}"
    );
    assert_eq!(
        (
            runs[1]["cells_computed"].as_u64(),
            runs[1]["stopped_early"].as_bool()
        ),
        (Some(0), Some(true))
    );
    assert_eq!(
        (
            runs[3]["cells_computed"].as_u64(),
            runs[3]["stopped_early"].as_bool()
        ),
        (Some(2), Some(false))
    );
    assert!(
        runs[2]["commit"].as_str().is_some_and(|c| !c.is_empty())
            && runs[2]["command"][0]
                .as_str()
                .is_some_and(|c| c.ends_with("imix-bench"))
            && runs[2]["cpu"].is_string(),
        "{:?}",
        runs[2]
    );
    let results = d.path().join("out/results.jsonl");
    let first = std::fs::read_to_string(&results).unwrap();
    assert_eq!(first.lines().count(), 2 * 10, "two seeds x ten methods");
    for f in [
        "summary.md",
        "accuracy.svg",
        "controllability.svg",
        "intrusion.svg",
        "generated/toy-2-0.jsonl",
    ] {
        assert!(d.path().join("out").join(f).exists(), "missing {f}");
    }
    let summary = std::fs::read_to_string(d.path().join("out/summary.md")).unwrap();
    assert!(
        summary.contains("| toy | 2 | inversed-mixup-relabel |") && summary.contains("**"),
        "{summary}"
    );
    // Every generating method's rows carry the judge's label agreement, a share.
    let generating: Vec<&str> = first
        .lines()
        .filter(|l| l.contains("\"generator\""))
        .collect();
    assert_eq!(
        generating.len(),
        2 * 5,
        "two seeds x reconstruct and four inversed-mixup variants"
    );
    for l in generating {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let a = v["generator"]["label_agreement"]
            .as_f64()
            .unwrap_or_else(|| panic!("no label agreement: {l}"));
        assert!(
            (0.0..=1.0).contains(&a) && v["generator"]["judge_accuracy"].as_f64().is_some(),
            "{l}"
        );
    }
    // Every row names its run, and the report traces the run to its commit and command.
    assert!(
        first.lines().all(
            |l| serde_json::from_str::<serde_json::Value>(l).unwrap()["run"]
                .as_u64()
                .is_some()
        ),
        "{first}"
    );
    assert!(
        summary.contains("## Where the numbers come from")
            && summary.contains("toy 2-shot seeds 0-1"),
        "{summary}"
    );
    // A finished grid recomputes nothing.
    assert!(bench(d.path()).contains("(0 computed now)"));
    assert_eq!(std::fs::read_to_string(&results).unwrap(), first);
    // A run with fewer --methods into the folder still reports every method it holds.
    assert!(bench_with(d.path(), &["--methods", "none"]).contains("(0 computed now)"));
    assert_eq!(
        std::fs::read_to_string(d.path().join("out/summary.md")).unwrap(),
        summary,
        "the report lost methods"
    );
    // Lose the first seed (the cell split between two runs above), as a run killed during it would:
    // recomputed in one go, it gives the same numbers.
    let kept: String = first
        .lines()
        .filter(|l| l.contains("\"seed\":1"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&results, kept).unwrap();
    assert!(bench(d.path()).contains("(1 computed now)"));
    let strip = |s: &str| -> Vec<String> {
        let mut v: Vec<String> = s
            .lines()
            .map(|l| {
                let mut x: serde_json::Value = serde_json::from_str(l).unwrap();
                // Wall time and the run that computed a row differ between runs; nothing else may.
                x.as_object_mut().unwrap().remove("seconds");
                x.as_object_mut().unwrap().remove("run");
                x.to_string()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        strip(&std::fs::read_to_string(&results).unwrap()),
        strip(&first)
    );
    // A half-done cell (seed 1 has only some of its methods, as after a run with fewer --methods):
    // only the missing methods run, to the same numbers, and the cell's generated rows stay whole.
    let generated = d.path().join("out/generated/toy-2-1.jsonl");
    let gen_first = std::fs::read_to_string(&generated).unwrap();
    let half: String = first
        .lines()
        .filter(|l| {
            l.contains("\"seed\":0")
                || ["\"none\"", "\"eda\"", "\"inversed-mixup-keep\""]
                    .iter()
                    .any(|m| l.contains(m))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(half.lines().count(), 10 + 3);
    std::fs::write(&results, half).unwrap();
    assert!(bench(d.path()).contains("(1 computed now)"));
    assert_eq!(
        strip(&std::fs::read_to_string(&results).unwrap()),
        strip(&first)
    );
    assert_eq!(
        strip(&std::fs::read_to_string(&generated).unwrap()),
        strip(&gen_first),
        "the generated rows of the half-done cell changed"
    );
}

/// Out of time inside a cell (the budget, 0.12 s, is spent by its first method): that method is
/// saved, the rest of the cell is left for the next run, which keeps the saved row as it is. On the
/// default models, whose first method (fine-tuning MiniLM) outlasts the budget on any CPU.
#[test]
fn a_budget_spent_inside_a_cell_saves_the_finished_methods() {
    let d = tempfile::tempdir().unwrap();
    write_toy(d.path());
    let m = ["--methods", "none,eda", "--seeds", "1"];
    let out = bench_real(d.path(), &[&m[..], &["--max-minutes", "0.002"]].concat());
    assert!(
        out.contains("1 cells (1 computed now)") && out.contains("run the same command again"),
        "{out}"
    );
    let results = d.path().join("out/results.jsonl");
    let partial = std::fs::read_to_string(&results).unwrap();
    assert_eq!(partial.lines().count(), 1, "{partial}");
    assert!(
        partial.contains("\"seed\":0") && partial.contains("\"method\":\"none\""),
        "{partial}"
    );
    let runs = std::fs::read_to_string(d.path().join("out/runs.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(runs.lines().last().unwrap()).unwrap();
    assert_eq!(
        (
            last["event"].as_str(),
            last["cells_computed"].as_u64(),
            last["stopped_early"].as_bool()
        ),
        (Some("finished"), Some(1), Some(true)),
        "{runs}"
    );
    assert!(bench_real(d.path(), &m).contains("1 cells (1 computed now)"));
    let whole = std::fs::read_to_string(&results).unwrap();
    assert!(
        whole.starts_with(&partial) && whole.lines().count() == 2,
        "the saved row was rewritten: {whole}"
    );
}

/// `--warmup-finetune` (stage 2 fine-tunes the encoder, stage 3 works in its space) into a folder
/// that holds a frozen-warm-up run: the baseline is reused, the generating method is computed again
/// under the new setting and marked so, its generated rows are kept apart and differ, and each
/// setting's report holds only its own rows.
#[test]
fn warmup_finetune_cells_are_their_own_and_reuse_the_baselines() {
    let d = tempfile::tempdir().unwrap();
    write_toy(d.path());
    let m = ["--methods", "none,inversed-mixup-keep", "--seeds", "1"];
    assert!(bench_with(d.path(), &m).contains("1 cells (1 computed now)"));
    let out = bench_with(d.path(), &[&m[..], &["--warmup-finetune"]].concat());
    assert!(out.contains("1 cells (1 computed now)"), "{out}");
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(d.path().join("out/results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<(String, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["warmup_finetune"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("none".into(), false),
            ("inversed-mixup-keep".into(), false),
            ("inversed-mixup-keep".into(), true)
        ]
    );
    let g = |f: &str| std::fs::read_to_string(d.path().join("out/generated").join(f)).unwrap();
    assert_ne!(
        g("toy-2-0.jsonl"),
        g("toy-2-0-warmup-finetune.jsonl"),
        "a fine-tuned warm-up embeds, hence generates, differently"
    );
    // Run again with the flag: nothing left to compute.
    assert!(
        bench_with(d.path(), &[&m[..], &["--warmup-finetune"]].concat())
            .contains("(0 computed now)")
    );
    // Each setting's report holds only its own rows, under its own name.
    let summary = std::fs::read_to_string(d.path().join("out/summary-warmup-finetune.md")).unwrap();
    assert_eq!(
        summary
            .matches("| toy | 2 | inversed-mixup-keep | 1 |")
            .count(),
        1,
        "{summary}"
    );
    assert!(
        summary.contains("stage 2 fine-tuned the encoder while refining the adaptor"),
        "{summary}"
    );
    let plain = std::fs::read_to_string(d.path().join("out/summary.md")).unwrap();
    assert!(
        plain.contains(
            "from the pretrained encoder; stage 2 refined the adaptor with the encoder frozen"
        ) && plain
            .matches("| toy | 2 | inversed-mixup-keep | 1 |")
            .count()
            == 1,
        "{plain}"
    );
    // Every final task model from the warmed-up encoder, the baseline's too: a setting of its own.
    let out = bench_with(
        d.path(),
        &[&m[..], &["--warmup-finetune", "--final-from-warmup"]].concat(),
    );
    assert!(out.contains("1 cells (1 computed now)"), "{out}");
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(d.path().join("out/results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    for r in &rows[3..] {
        assert_eq!(
            (
                r["warmup_finetune"].as_bool(),
                r["final_from_warmup"].as_bool()
            ),
            (Some(true), Some(true)),
            "{r}"
        );
    }
    assert_eq!(
        (rows[3]["method"].as_str(), rows[4]["method"].as_str()),
        (Some("none"), Some("inversed-mixup-keep"))
    );
    assert!(
        rows[..3]
            .iter()
            .all(|r| r.get("final_from_warmup").is_none()),
        "{rows:?}"
    );
    assert!(bench_with(
        d.path(),
        &[&m[..], &["--warmup-finetune", "--final-from-warmup"]].concat()
    )
    .contains("(0 computed now)"));
    let whole = std::fs::read_to_string(d.path().join("out/summary-final-from-warmup.md")).unwrap();
    assert!(
        whole.contains("the paper's whole stage 2")
            && whole.contains("| toy | 2 | none | 1 |")
            && whole.contains("| toy | 2 | inversed-mixup-keep | 1 |"),
        "{whole}"
    );
    assert!(d.path().join("out/accuracy-final-from-warmup.svg").exists());
    // Every row records the settings that made it; a run with other settings into the folder is
    // refused before any work, naming the row and the setting that differs.
    let results = d.path().join("out/results.jsonl");
    let runs = d.path().join("out/runs.jsonl");
    let (before, runs_before) = (
        std::fs::read_to_string(&results).unwrap(),
        std::fs::read_to_string(&runs).unwrap(),
    );
    assert!(
        rows.iter().all(|r| r["settings"]["lambda"] == "Beta(0.2)"
            && r["settings"]["adaptor"]
                .as_str()
                .is_some_and(|a| a.contains("sha256:"))),
        "{rows:?}"
    );
    let o = bench_output(d.path(), &[&m[..], &["--lambda", "0.5"]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("results.jsonl: line 1: toy 2-shot seed 0 none was computed with lambda Beta(0.2) (this run: Fixed(0.5))") && err.contains("another --out"), "{err}");
    assert_eq!(
        (
            std::fs::read_to_string(&results).unwrap(),
            std::fs::read_to_string(&runs).unwrap()
        ),
        (before.clone(), runs_before),
        "a refused run wrote something"
    );
    // Rows written before settings were recorded are taken as they are.
    let legacy: String = rows
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("settings");
            format!("{r}\n")
        })
        .collect();
    std::fs::write(&results, legacy).unwrap();
    assert!(
        bench_with(d.path(), &[&m[..], &["--lambda", "0.5"]].concat()).contains("(0 computed now)")
    );
}

/// inversed-mixup-novel: the same greedy decodes as keep, except that a decode that copied one of
/// its sources is sampled again; inversed-mixup-sampled samples every mix. Each keeps its rows
/// apart from the greedy ones (nothing overwritten), and the same seed gives the same rows.
#[test]
fn novel_and_sampled_decode_their_own_rows() {
    let d = tempfile::tempdir().unwrap();
    write_toy(d.path());
    // 3 rows per original and lambda 0.97: mixes that sit at a source, which the decoder copies.
    let m = [
        "--methods",
        "inversed-mixup-keep,inversed-mixup-novel,inversed-mixup-sampled",
        "--seeds",
        "1",
        "--per-example",
        "3",
        "--lambda",
        "0.97",
    ];
    assert!(bench_real(d.path(), &m).contains("1 cells (1 computed now)"));
    let read = |f: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.path().join("out/generated").join(f))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (greedy, novel, sampled) = (
        read("toy-2-0.jsonl"),
        read("toy-2-0-novel.jsonl"),
        read("toy-2-0-sampled.jsonl"),
    );
    assert_eq!(greedy.len(), novel.len());
    assert_eq!(
        greedy
            .iter()
            .map(|r| (&r["source_a"], &r["source_b"], &r["lambda"]))
            .collect::<Vec<_>>(),
        sampled
            .iter()
            .map(|r| (&r["source_a"], &r["source_b"], &r["lambda"]))
            .collect::<Vec<_>>(),
        "sampled decodes the same mixes"
    );
    assert!(
        greedy
            .iter()
            .zip(&sampled)
            .any(|(g, s)| g["text"] != s["text"]),
        "sampling changed no row"
    );
    let norm = |v: &serde_json::Value| {
        v.as_str()
            .unwrap()
            .split_whitespace()
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let copy = |r: &serde_json::Value| {
        [&r["source_a"]["text"], &r["source_b"]["text"]]
            .iter()
            .any(|s| norm(s) == norm(&r["text"]))
    };
    let mut replaced = 0;
    for (g, n) in greedy.iter().zip(&novel) {
        assert_eq!(
            (&g["source_a"], &g["lambda"]),
            (&n["source_a"], &n["lambda"]),
            "the same mixes in the same order"
        );
        if !copy(g) {
            assert_eq!(
                g["text"], n["text"],
                "a decode that is not a copy is left alone"
            );
        } else if !copy(n) {
            replaced += 1;
        }
    }
    let copies = greedy.iter().filter(|r| copy(r)).count();
    assert!(
        copies > 0,
        "the toy case must produce copies for this test to mean something"
    );
    assert!(replaced > 0, "no copy among {copies} was replaced");
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(d.path().join("out/results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let verbatim = |m: &str| {
        rows.iter().find(|r| r["method"] == m).unwrap()["generator"]["verbatim"]
            .as_f64()
            .unwrap()
    };
    assert!(
        verbatim("inversed-mixup-novel") < verbatim("inversed-mixup-keep"),
        "{rows:?}"
    );
    // Same seed, same rows.
    std::fs::remove_file(d.path().join("out/results.jsonl")).unwrap();
    bench_real(d.path(), &m);
    let texts =
        |rows: &[serde_json::Value]| rows.iter().map(|r| r["text"].clone()).collect::<Vec<_>>();
    assert_eq!(texts(&read("toy-2-0-novel.jsonl")), texts(&novel));
    assert_eq!(texts(&read("toy-2-0-sampled.jsonl")), texts(&sampled));
}

/// `--shots all`: the whole train split, the best epoch chosen on the dataset's dev.tsv (read, and
/// checked like any input), reported as `all`.
#[test]
fn full_supervision_trains_on_the_whole_split_and_selects_on_dev() {
    let d = tempfile::tempdir().unwrap();
    write_toy(d.path());
    let dev = d.path().join("benchmarks/toy/dev.tsv");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_imix-bench"))
            .args([
                "--datasets",
                "toy",
                "--shots",
                "all",
                "--seeds",
                "1",
                "--epochs",
                "2",
                "--warmup-steps",
                "1",
                "--per-example",
                "1",
                "--methods",
                "none,inversed-mixup-keep",
            ])
            .args(common::tiny_model_flags())
            .arg("--data")
            .arg(d.path().join("benchmarks"))
            .arg("--out")
            .arg(d.path().join("out"))
            .output()
            .unwrap()
    };
    // No dev split: refused before any work, naming the file.
    let o = run();
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("toy/dev.tsv does not exist"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A dev row with a label the train split does not have: the error names dev.tsv and its line.
    std::fs::write(&dev, "label\ttext\npos\ta fine film\nmaybe\tso-so\n").unwrap();
    let o = run();
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("dev.tsv:3"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(&dev, "label\ttext\npos\ta fine film\nneg\ta dreary film\n").unwrap();
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(d.path().join("out/results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(
            (r["shots"].as_u64(), r["train_rows"].as_u64()),
            (Some(0), Some(12)),
            "the whole train split: {r}"
        );
    }
    assert_eq!(
        rows[1]["aug_rows"].as_u64(),
        Some(12),
        "one generated row per original"
    );
    assert!(d.path().join("out/generated/toy-all-0.jsonl").exists());
    let summary = std::fs::read_to_string(d.path().join("out/summary.md")).unwrap();
    assert!(
        summary.contains("| toy | all | none | 1 |")
            && summary.contains("- the full train split, toy: the best mean accuracy"),
        "{summary}"
    );
}

/// A run that fails after its output directory was made (here an adaptor file that is not one,
/// found once the models are loaded) removes that directory again.
#[test]
fn a_failed_run_leaves_no_empty_output_directory() {
    let d = tempfile::tempdir().unwrap();
    write_toy(d.path());
    let adaptor = d.path().join("broken.safetensors");
    std::fs::write(&adaptor, b"not an adaptor").unwrap();
    let out = d.path().join("new/bench");
    let o = Command::new(env!("CARGO_BIN_EXE_imix-bench"))
        .args([
            "--datasets",
            "toy",
            "--shots",
            "1",
            "--seeds",
            "1",
            "--methods",
            "none",
            "--data",
        ])
        .arg(d.path().join("benchmarks"))
        .arg("--out")
        .arg(&out)
        .args(&common::tiny_model_flags()[..4])
        .arg("--adaptor")
        .arg(&adaptor)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("broken.safetensors"),
        "{err}"
    );
    assert!(
        !d.path().join("new").exists(),
        "a failed run left {} behind",
        out.display()
    );
}
