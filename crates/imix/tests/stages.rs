//! Stages 2 and 3 through the CLI with the real models and the shipped default adaptor,
//! on the project's own example data (examples/); the tests of resume and sharding, which the real
//! models would only slow down, on tiny random ones.

#[path = "../../inversed-mixup/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn imix(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imix"))
        .args(args)
        .output()
        .unwrap()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn warmup_augment_train_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let data = root().join("examples/reviews.tsv");
    let test = root().join("examples/reviews-test.tsv");
    let (data, test) = (data.to_str().unwrap(), test.to_str().unwrap());
    let model = d.path().join("model");
    let m = model.to_str().unwrap();
    ok(&imix(&[
        "warmup",
        "--data",
        data,
        "--shots",
        "3",
        "--steps",
        "2",
        "--batch-size",
        "3",
        "--out",
        m,
    ]));
    assert!(
        model.join("classifier.safetensors").exists() && model.join("adaptor.safetensors").exists()
    );

    let aug = |name: &str, extra: &[&str]| {
        let p = d.path().join(name);
        let mut a = vec![
            "augment",
            "--model",
            m,
            "--data",
            data,
            "--shots",
            "3",
            "--lambda",
            "grid:0,1",
            "--max-new-tokens",
            "8",
            "--out",
            p.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        (ok(&imix(&a)), p)
    };
    let (summary, a1) = aug("a1.jsonl", &[]);
    let last = summary.lines().last().unwrap();
    assert!(
        last.starts_with("generated=12 ") && last.contains("intrusion_rate="),
        "{last}"
    );
    let (_, a2) = aug("a2.jsonl", &[]);
    assert_eq!(
        std::fs::read(&a1).unwrap(),
        std::fs::read(&a2).unwrap(),
        "same seed, same bytes"
    );
    let (_, s1) = aug("s1.jsonl", &["--decode", "top-p:0.9", "--seed", "1"]);
    let (_, s2) = aug("s2.jsonl", &["--decode", "top-p:0.9", "--seed", "2"]);
    assert_ne!(
        std::fs::read(&s1).unwrap(),
        std::fs::read(&s2).unwrap(),
        "different seeds differ"
    );
    for l in std::fs::read_to_string(&a1).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        for k in [
            "text",
            "lambda",
            "source_a",
            "source_b",
            "soft_label",
            "predicted",
            "intrusion",
            "cos_a",
            "cos_b",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        let s: f64 = v["soft_label"]
            .as_object()
            .unwrap()
            .values()
            .map(|x| x.as_f64().unwrap())
            .sum();
        assert!((s - 1.0).abs() < 1e-9);
    }
    let (_, csv_path) = aug("a.csv", &["--format", "csv"]);
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    assert!(csv.starts_with("text,lambda,source_a_text,"));
    assert_eq!(csv.lines().count(), 13);
    // What augment writes as CSV, train reads back: the same rows as the JSONL file.
    let from_csv = ok(&imix(&[
        "train",
        "--data",
        data,
        "--shots",
        "3",
        "--augment",
        csv_path.to_str().unwrap(),
        "--eval",
        test,
    ]));
    assert!(
        from_csv
            .lines()
            .last()
            .unwrap()
            .starts_with("train_rows=18 "),
        "{from_csv}"
    );

    let out = ok(&imix(&[
        "train",
        "--data",
        data,
        "--shots",
        "3",
        "--augment",
        a1.to_str().unwrap(),
        "--eval",
        test,
    ]));
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("train_rows=18 ")
            && last.contains(" accuracy=")
            && last.contains(" macro_f1="),
        "{last}"
    );
    // A lower weight on the augmented rows changes what the model learns (the saved classifiers
    // differ; the same weight twice gives the same bytes).
    let head = |w: &str, name: &str| {
        let p = d.path().join(name);
        ok(&imix(&[
            "train",
            "--data",
            data,
            "--shots",
            "3",
            "--augment",
            a1.to_str().unwrap(),
            "--augment-weight",
            w,
            "--eval",
            test,
            "--out",
            p.to_str().unwrap(),
        ]));
        std::fs::read(p).unwrap()
    };
    let (full, light, again) = (
        head("1", "h1.st"),
        head("0.3", "h2.st"),
        head("0.3", "h3.st"),
    );
    assert!(
        full != light && light == again,
        "weights 1 and 0.3 must train different classifiers, and 0.3 twice the same"
    );

    // An augmented file with a label the data does not have names its file and line.
    let bad = d.path().join("bad.jsonl");
    let first = std::fs::read_to_string(&a1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    std::fs::write(
        &bad,
        format!("{first}\n{}\n", first.replace("\"pos\"", "\"positive\"")),
    )
    .unwrap();
    let r = imix(&[
        "train",
        "--data",
        data,
        "--augment",
        bad.to_str().unwrap(),
        "--eval",
        test,
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success()
            && err.contains(&format!("{}:2: unknown label \"positive\"", bad.display())),
        "{err}"
    );
}

/// A run killed inside its output write (held there by the test hook, with the new rows already
/// in the temp file) leaves the previous output byte-identical, and the next run removes the
/// killed run's temp file.
#[test]
fn an_augment_killed_while_writing_keeps_the_old_output() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("model");
    let data = root().join("examples/reviews.tsv");
    ok(&imix(&[
        "warmup",
        "--input",
        data.to_str().unwrap(),
        "--shots",
        "2",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--out",
        model.to_str().unwrap(),
    ]));
    let out = d.path().join("aug.jsonl");
    let args = |seed: &str| -> Vec<String> {
        [
            "augment",
            "--model",
            model.to_str().unwrap(),
            "--input",
            data.to_str().unwrap(),
            "--shots",
            "2",
            "--per-example",
            "1",
            "--max-new-tokens",
            "8",
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    ok(&imix(
        &args("0").iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let old = std::fs::read(&out).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_imix"))
        .args(args("1"))
        .env("IMIX_TEST_WRITE_PAUSE_MS", "600000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tmp = d.path().join(format!(".aug.jsonl.tmp{}", child.id()));
    let t0 = std::time::Instant::now();
    // Inside the write: its rows are in the temp file (or, for a writer that is not atomic, the
    // output itself has changed).
    while std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0) == 0
        && std::fs::read(&out).unwrap() == old
    {
        // A run that ended (an error) never reaches its write: say so at once, not after 300 s.
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the second run ended ({status}) before its write");
        }
        assert!(
            t0.elapsed().as_secs() < 300,
            "the second run never reached its write"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        std::fs::read(&out).unwrap() == old,
        "the old output changed although the run was killed inside the write"
    );
    assert!(
        std::fs::read(&tmp).is_ok_and(|t| t != old),
        "the killed run's rows (other ones: another seed) are in its temp file"
    );
    ok(&imix(
        &args("0").iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert!(
        !tmp.exists(),
        "the next run left the killed run's temp file"
    );
    assert!(std::fs::read(&out).unwrap() == old, "same seed, same rows");
}

#[test]
fn interpolate_prints_the_path_from_b_to_a() {
    let out = ok(&imix(&[
        "interpolate",
        "A wonderful, moving film.",
        "A dull and boring film.",
        "--steps",
        "3",
        "--max-new-tokens",
        "12",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].starts_with("B  A dull") && lines[4].starts_with("A  A wonderful"));
    assert!(lines[1].starts_with("lambda=0.00") && lines[3].starts_with("lambda=1.00"));
}

/// `warmup --resume` through the CLI: a run killed after a checkpoint and resumed writes the
/// same task model and adaptor, byte for byte, as a run that was never interrupted.
#[test]
fn a_killed_warmup_resumes_to_the_uninterrupted_result() {
    let d = tempfile::tempdir().unwrap();
    let data = root().join("examples/reviews.tsv");
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let args = |out: &Path| -> Vec<String> {
        [
            "warmup",
            "--input",
            data.to_str().unwrap(),
            "--shots",
            "2",
            "--steps",
            "8",
            "--batch-size",
            "2",
            "--checkpoint-every",
            "3",
            "--seed",
            "3",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .into_iter()
        .chain(common::tiny_model_flags().iter().cloned())
        .collect::<Vec<_>>()
    };
    ok(&Command::new(env!("CARGO_BIN_EXE_imix"))
        .args(args(&a))
        .output()
        .unwrap());
    // On tiny models the run would end before the kill: its third write (the checkpoint of step
    // 6, after the fresh curve and step 3's) is held until the kill.
    let mut child = Command::new(env!("CARGO_BIN_EXE_imix"))
        .args(args(&b))
        .env("IMIX_TEST_WRITE_PAUSE_MS", "600000")
        .env("IMIX_TEST_WRITE_PAUSE_AT", "3")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = b.join("warmup.ckpt");
    let t0 = std::time::Instant::now();
    // Killed after the checkpoint of step 3 and after a later step was logged, so that the curve
    // holds lines the checkpoint does not cover.
    let curve = b.join("warmup.curve.jsonl");
    let logged = || {
        std::fs::read_to_string(&curve)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    while !ckpt.exists() || logged() < 4 {
        assert!(t0.elapsed().as_secs() < 300, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !b.join("classifier.safetensors").exists(),
        "the run finished before it was killed: nothing was resumed"
    );
    let mut resume = args(&b);
    resume.push("--resume".into());
    let r = Command::new(env!("CARGO_BIN_EXE_imix"))
        .args(&resume)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        r.status.success() && String::from_utf8_lossy(&r.stdout).contains("written to"),
        "{err}"
    );
    // It continued (from a step after the first), it did not start over.
    let from: usize = err
        .split("resumed at step ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resume in {err}"));
    assert!(
        from == 3 || from == 6,
        "resumed at step {from}, not at a checkpoint"
    );
    let steps: Vec<u64> = std::fs::read_to_string(b.join("warmup.curve.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        steps,
        (1..=8).collect::<Vec<u64>>(),
        "the curve has each step once"
    );
    for f in ["classifier.safetensors", "adaptor.safetensors"] {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{f} differs after kill + --resume"
        );
    }
}

/// `augment --shard I/N`: the shards' outputs concatenated in order are the unsharded output,
/// byte for byte (shards hold whole decode batches and keep their decode seeds).
#[test]
fn sharded_augment_concatenates_to_the_unsharded_output() {
    let d = tempfile::tempdir().unwrap();
    let tiny = common::tiny_model_flags();
    let model = d.path().join("model");
    let data = root().join("examples/reviews.tsv");
    let mut warm = vec![
        "warmup",
        "--input",
        data.to_str().unwrap(),
        "--shots",
        "3",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--out",
        model.to_str().unwrap(),
    ];
    warm.extend(tiny.iter().map(String::as_str));
    ok(&imix(&warm));
    let run = |out: &Path, shard: Option<&str>| {
        let mut args = vec![
            "augment",
            "--model",
            model.to_str().unwrap(),
            "--input",
            data.to_str().unwrap(),
            "--shots",
            "3",
            "--per-example",
            "2",
            "--batch-size",
            "2",
            "--decode",
            "top-p:0.9",
            "--max-new-tokens",
            "8",
            "--seed",
            "7",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(tiny[..4].iter().map(String::as_str));
        if let Some(s) = shard {
            args.extend(["--shard", s]);
        }
        ok(&imix(&args));
        std::fs::read(out).unwrap()
    };
    let whole = run(&d.path().join("all.jsonl"), None);
    assert_eq!(
        whole.iter().filter(|&&b| b == b'\n').count(),
        12,
        "6 examples x 2 rows"
    );
    let mut joined = Vec::new();
    for i in 0..4 {
        joined.extend(run(
            &d.path().join(format!("part{i}.jsonl")),
            Some(&format!("{i}/4")),
        ));
    }
    assert!(
        joined == whole,
        "the 4 shards do not concatenate to the unsharded output"
    );
    let bad = imix(&[
        "augment",
        "--model",
        model.to_str().unwrap(),
        "--input",
        data.to_str().unwrap(),
        "--shard",
        "4/4",
        "--out",
        "x.jsonl",
    ]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("expected I/N"));
}

/// The paper's stage 2 through the CLI: a warm-up that fine-tunes the encoder, then a final task
/// model that starts from that encoder (`train --from-warmup`), which differs from one started
/// from the pretrained encoder; a bundle without a fine-tuned encoder is refused before any work.
#[test]
fn train_starts_from_the_warmed_up_encoder() {
    let d = tempfile::tempdir().unwrap();
    let data = root().join("examples/reviews.tsv");
    let test = root().join("examples/reviews-test.tsv");
    let (data, test) = (data.to_str().unwrap(), test.to_str().unwrap());
    let tuned = d.path().join("tuned");
    let frozen = d.path().join("frozen");
    ok(&imix(&[
        "warmup",
        "--data",
        data,
        "--shots",
        "3",
        "--steps",
        "3",
        "--batch-size",
        "3",
        "--finetune-encoder",
        "0",
        "--lr-encoder",
        "1e-3",
        "--out",
        tuned.to_str().unwrap(),
    ]));
    ok(&imix(&[
        "warmup",
        "--data",
        data,
        "--shots",
        "3",
        "--steps",
        "1",
        "--batch-size",
        "3",
        "--out",
        frozen.to_str().unwrap(),
    ]));
    let train = |extra: &[&str]| {
        let mut a = vec![
            "train",
            "--data",
            data,
            "--shots",
            "3",
            "--dev-shots",
            "0",
            "--eval",
            test,
            "--finetune",
            "--epochs",
            "3",
            "--lr-head",
            "1e-2",
        ];
        a.extend_from_slice(extra);
        imix(&a)
    };
    let loss = |o: &Output| {
        ok(o)
            .lines()
            .last()
            .unwrap()
            .split_whitespace()
            .find_map(|f| f.strip_prefix("final_loss=").map(str::to_string))
            .unwrap()
    };
    let from_pretrained = loss(&train(&[]));
    let from_warmup = loss(&train(&["--from-warmup", tuned.to_str().unwrap()]));
    assert_ne!(
        from_pretrained, from_warmup,
        "the warmed-up encoder should change the training"
    );
    let r = train(&["--from-warmup", frozen.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success()
            && err.contains("no encoder.safetensors")
            && err.contains("--finetune-encoder"),
        "{err}"
    );
}

/// Asserts that `imix invert` (`--mixes` at λ 0.3/0.5/0.7 when `mixes`) on `name` holding
/// `text` writes with no `--decode` what it writes with `guided:16`, and not what `guided:8`
/// writes (tiny models: what is tested is which decoding runs, not what it writes).
fn assert_invert_defaults_to_guided_16(name: &str, text: &str, mixes: bool) {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join(name);
    std::fs::write(&input, text).unwrap();
    let run = |decode: Option<&str>| {
        let out = d.path().join(format!(
            "{}.jsonl",
            decode.unwrap_or("default").replace(':', "")
        ));
        let mut args: Vec<String> = vec!["invert".into()];
        if mixes {
            args.extend(["--mixes", "--lambdas", "0.3,0.5,0.7"].map(String::from));
        }
        for (flag, value) in [("--input", &input), ("--out", &out)] {
            args.extend([flag.into(), value.to_str().unwrap().into()]);
        }
        if let Some(dec) = decode {
            args.extend(["--decode".into(), dec.into()]);
        }
        args.extend(common::tiny_model_flags().iter().cloned());
        ok(&Command::new(env!("CARGO_BIN_EXE_imix"))
            .args(&args)
            .output()
            .unwrap());
        std::fs::read_to_string(out).unwrap()
    };
    let default = run(None);
    assert_eq!(default, run(Some("guided:16")));
    assert_ne!(default, run(Some("guided:8")));
}

/// `invert --mixes` decodes with `guided:16` unless told otherwise.
#[test]
fn invert_mixes_decodes_with_guided_16_by_default() {
    assert_invert_defaults_to_guided_16(
        "pairs.tsv",
        "a\tb\nthe cat sat on the mat\ta storm hit the coast\nwe ate bread\tmusic filled the hall\n",
        true,
    );
}

/// `invert` decodes single sentences with `guided:16` unless told otherwise.
#[test]
fn invert_decodes_with_guided_16_by_default() {
    assert_invert_defaults_to_guided_16(
        "lines.txt",
        "the cat sat on the mat\na storm hit the coast\nwe ate bread\nmusic filled the hall\n",
        false,
    );
}
