// Records the git commit the binary is built from (with `-dirty` when tracked files differ from
// it), so that benchmark records can name the code that produced them.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let o = Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn main() {
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c)
            if git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty()) =>
        {
            format!("{c}-dirty")
        }
        Some(c) => c,
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=IMIX_GIT_COMMIT={commit}");
    // Rebuilt when HEAD moves, the index changes or a source file is edited (an unstaged edit
    // leaves HEAD and the index alone but makes the build dirty); outside a repository (a source
    // package) never.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let watched = [
            Path::new(&dir).join("HEAD"),
            Path::new(&dir).join("index"),
            root.join("crates"),
            root.join("Cargo.toml"),
            root.join("Cargo.lock"),
        ];
        for p in watched.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}
