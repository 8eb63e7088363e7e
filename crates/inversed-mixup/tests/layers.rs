//! The library's layers (ARCHITECTURE.md): a module may use only the layers listed before its own.
//! This test reads the order from ARCHITECTURE.md and every `crate::...` path in `src/`, and fails
//! on any import that reaches up; and it keeps the kernels crate free of the library.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The layer order as ARCHITECTURE.md states it: the backticked names of its "Layer order" line.
fn layer_order() -> Vec<String> {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md at the repository root");
    let line = doc
        .lines()
        .find(|l| l.starts_with("Layer order"))
        .expect("ARCHITECTURE.md has a line starting with \"Layer order\"");
    line.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// `(file, line, message)` for every `crate::<layer>` use that names a layer after the file's own.
fn violations(files: &[(String, String)], order: &[String]) -> Vec<String> {
    let rank = |name: &str| order.iter().position(|l| l == name);
    let mut out = Vec::new();
    for (file, text) in files {
        let Some(own) = file.split('/').next().and_then(rank) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for (at, _) in code.match_indices("crate::") {
                let used: String = code[at + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if let Some(r) = rank(&used) {
                    if r > own {
                        out.push(format!(
                            "src/{file}:{}: layer `{}` uses `{used}`, a layer above it",
                            i + 1,
                            order[own]
                        ));
                    }
                }
            }
        }
    }
    out
}

fn sources(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, base, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

#[test]
fn no_layer_imports_one_above_it() {
    let order = layer_order();
    assert!(
        order.len() >= 5,
        "ARCHITECTURE.md's layer order looks wrong: {order:?}"
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for l in &order {
        assert!(
            src.join(l).is_dir(),
            "layer `{l}` named in ARCHITECTURE.md has no folder src/{l}"
        );
    }
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let v = violations(&files, &order);
    assert!(
        v.is_empty(),
        "imports against the layer order of ARCHITECTURE.md:\n{}",
        v.join("\n")
    );
}

#[test]
fn the_check_catches_an_upward_import() {
    let order: Vec<String> = ["data", "nets", "method"].map(String::from).to_vec();
    let files = vec![
        (
            "nets/llm.rs".to_string(),
            "use crate::data::io;\nuse crate::method::prompt::Prompt; // upward\n".to_string(),
        ),
        (
            "method/x.rs".to_string(),
            "// crate::method is fine here\nfn f() { crate::nets::ops::softmax(); }\n".to_string(),
        ),
    ];
    let v = violations(&files, &order);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].starts_with("src/nets/llm.rs:2:"), "{v:?}");
}

#[test]
fn the_kernels_crate_does_not_depend_on_the_library() {
    let toml = std::fs::read_to_string(root().join("crates/imix-kernels/Cargo.toml")).unwrap();
    let deps = toml
        .split("[dependencies]")
        .nth(1)
        .expect("a [dependencies] table");
    let deps = deps.split("\n[").next().unwrap();
    assert!(
        !deps.contains("inversed-mixup") && !deps.contains("imix ="),
        "imix-kernels must not depend on the library or the CLI:\n{deps}"
    );
    let src = root().join("crates/imix-kernels/src");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    for (f, text) in files {
        assert!(
            !text.contains("inversed_mixup"),
            "imix-kernels/src/{f} names the library"
        );
    }
}

/// The `[dependencies]` table of a crate's manifest.
fn dependencies(krate: &str) -> String {
    let toml =
        std::fs::read_to_string(root().join("crates").join(krate).join("Cargo.toml")).unwrap();
    let deps = toml
        .split("[dependencies]")
        .nth(1)
        .expect("a [dependencies] table");
    deps.split("\n[").next().unwrap().to_string()
}

#[test]
fn the_library_depends_on_no_front_end_and_not_on_the_benchmark() {
    let deps = dependencies("inversed-mixup");
    for krate in ["imix-bench", "imix-py", "imix-serve", "imix ="] {
        assert!(
            !deps.contains(krate),
            "the library must not depend on {krate}:\n{deps}"
        );
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    for (f, text) in files {
        assert!(
            !text.contains("imix_bench"),
            "src/{f} names the benchmark crate"
        );
    }
    assert!(
        !src.join("fewshot").exists(),
        "the few-shot benchmark lives in crates/imix-bench"
    );
}
