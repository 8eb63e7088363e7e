//! The refusal table's harness, shared by the `imix` and `imix-bench` tests: each row's command
//! must exit with the expected code (1: our own check, 2: the command line parser) and a message
//! naming the flag or the file, before any work starts; none panics, none exits 0, none leaves an
//! output behind.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The input files the rows name (`D/train.tsv`, ...), written into `dir`.
pub fn files(dir: &Path) -> PathBuf {
    let w = |name: &str, body: &str| std::fs::write(dir.join(name), body).unwrap();
    w(
        "train.tsv",
        "label\ttext\npos\ta lovely film\nneg\ta boring film\npos\tgreat fun\nneg\tawful acting\n",
    );
    w("empty.txt", "");
    w("blank.txt", "\n\n");
    w("noheader.tsv", "y\ttext\npos\tfine\n");
    w("badrow.tsv", "label\ttext\npos\tok\npos\ttoo\tmany\n");
    w("mid-blank.txt", "one\n\nthree\n");
    w("sentences.txt", "The cat sat on the mat.\n");
    w("long.txt", "short\na sentence far longer than the limit\n");
    w(
        "sum.jsonl",
        "{\"text\": \"x\", \"soft_label\": {\"pos\": 0.7, \"neg\": 0.7}}\n",
    );
    w(
        "label.jsonl",
        "{\"text\": \"x\", \"soft_label\": {\"positive\": 1.0}}\n",
    );
    w("nocol.csv", "text,lambda\nx,0.5\n");
    w(
        "nan.jsonl",
        "{\"text\": \"x\", \"soft_label\": {\"pos\": \"a\", \"neg\": 0.5}}\n",
    );
    std::fs::write(dir.join("notutf8.txt"), b"ok\n\xff\xfe\n").unwrap();
    w(
        "one.tsv",
        "label\ttext\npos\ta lovely film\npos\tgreat fun\n",
    );
    // "label\ttext\n..." as a spreadsheet saves it in UTF-16: a byte-order mark, then 2 bytes a
    // character.
    let utf16: Vec<u8> = "label\ttext\npos\tfine\n"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    std::fs::write(dir.join("utf16.tsv"), [&b"\xFF\xFE"[..], &utf16].concat()).unwrap();
    std::fs::write(dir.join("utf16-nobom.txt"), &utf16).unwrap();
    dir.to_path_buf()
}

/// Runs every row (arguments with `D/` for the temp dir, exit code, message fragment) with `bin`.
pub fn check(bin: &str, table: &[(&str, i32, &str)]) {
    let d = tempfile::tempdir().unwrap();
    let dir = files(d.path());
    let mut failures = Vec::new();
    for (args, code, fragment) in table {
        // Only a whole `D` or a leading `D/` is the temp dir (its random name may itself hold a D).
        let argv: Vec<String> = args
            .split_whitespace()
            .map(|a| match a.strip_prefix('D') {
                Some("") => dir.display().to_string(),
                Some(rest) if rest.starts_with('/') => format!("{}{rest}", dir.display()),
                _ => a.to_string(),
            })
            .collect();
        let t0 = std::time::Instant::now();
        let out = Command::new(bin)
            .args(&argv)
            .env("NO_COLOR", "1")
            .env_remove("IMIX_BENCH_DATA")
            .env("IMIX_CACHE", dir.join("no-cache"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let got = out.status.code();
        if got != Some(*code) || !err.contains(fragment) {
            failures.push(format!(
                "{bin} {args}: exit {got:?} (want {code}), stderr: {}",
                err.trim()
            ));
        }
        if err.contains("panicked") {
            failures.push(format!("{bin} {args}: panicked"));
        }
        // Refused before any work: no model was fetched or loaded, so this is quick.
        if t0.elapsed().as_secs_f64() > 10.0 {
            failures.push(format!(
                "{bin} {args}: took {:.1} s to refuse",
                t0.elapsed().as_secs_f64()
            ));
        }
        // Nothing left behind: no output file and no (empty) output directory.
        if dir.join("o").exists() {
            failures.push(format!("{bin} {args}: left the output directory o/ behind"));
        }
        assert!(
            !dir.join("no-cache").exists(),
            "{bin} {args}: started fetching models"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
}
