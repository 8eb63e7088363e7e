//! Atomic file output: write to a temporary file beside the target, then rename, so that an
//! interrupted run never leaves a half-written checkpoint or output behind.

use crate::{Error, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Temporary path beside `path` (same directory, so that rename is atomic).
fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Whether process `pid` may still be writing its temp file `file`: on Linux, whether it is alive
/// (two runs sharing a cache write the same file at once); without /proc, whether the file
/// changed within the last hour.
fn writer_may_be_alive(pid: &str, file: &Path) -> bool {
    let proc = Path::new("/proc");
    if proc.join("self").exists() {
        return proc.join(pid).exists();
    }
    fs::metadata(file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() < 3600)
}

/// Removes temp files that a killed run left beside `path` (`.NAME.tmpPID` of another process
/// that is gone), never one a live process is still writing.
fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.tmp", name.to_string_lossy());
    let mine = tmp_path(path);
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(&prefix)
            .filter(|pid| !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()));
        if p != mine && pid.is_some_and(|pid| !writer_may_be_alive(pid, &p)) {
            let _ = fs::remove_file(p);
        }
    }
}

/// Directories created for a command's outputs. Dropped without [`CreatedDirs::keep`] (the
/// command failed), the ones still empty are removed again, so a failed run leaves no empty
/// output directory; anything written into them (a checkpoint to resume from) stays.
#[must_use = "dropping it removes the directories again"]
pub struct CreatedDirs(Vec<PathBuf>);

impl CreatedDirs {
    /// Creates `dir` with its missing ancestors and remembers which of them are new.
    pub fn create(dir: &Path) -> Result<Self> {
        let mut new = Vec::new();
        let mut d = Some(dir).filter(|d| !d.as_os_str().is_empty());
        while let Some(p) = d.filter(|p| !p.exists()) {
            new.push(p.to_path_buf());
            d = p.parent().filter(|d| !d.as_os_str().is_empty());
        }
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Self(new))
    }

    /// Keeps the directories: the command succeeded.
    pub fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        // Deepest first; remove_dir fails (and leaves it) on a directory that is not empty.
        for d in &self.0 {
            let _ = fs::remove_dir(d);
        }
    }
}

/// Checks, before any work, that `path` can be written: its nearest existing ancestor is a
/// writable directory (nothing is created). An unwritable output is then reported at once, not
/// after the work.
pub fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        let msg = "is a directory: name a file to write";
        return Err(Error::io(path, std::io::Error::other(msg)));
    }
    let mut dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    while !dir.exists() {
        dir = match dir.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(p) => p,
            None => Path::new("."),
        };
    }
    let meta = fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::other(format!("{} is not a directory", dir.display())),
        ));
    }
    let probe = dir.join(format!(".imix-write-check.{}", std::process::id()));
    fs::File::create(&probe).map_err(|e| {
        Error::io(
            path,
            std::io::Error::new(e.kind(), format!("cannot write in {}: {e}", dir.display())),
        )
    })?;
    let _ = fs::remove_file(probe);
    Ok(())
}

/// Streams content into `path` atomically: `fill` writes to a buffered temp file that only
/// replaces `path` once everything was written and synced.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let dirs = match path.parent() {
        Some(dir) => CreatedDirs::create(dir)?,
        None => CreatedDirs(Vec::new()),
    };
    remove_stale_temps(path);
    let tmp = tmp_path(path);
    let res = (|| {
        let f = fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(f);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        pause_for_tests();
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    dirs.keep();
    Ok(())
}

/// Test hook: `IMIX_TEST_WRITE_PAUSE_MS` holds a finished temp file that long before its rename,
/// so that a test can kill the process inside the write and see the old output survive; with
/// `IMIX_TEST_WRITE_PAUSE_AT=N` only the process's Nth atomic write (1-based) is held.
fn pause_for_tests() {
    static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = env("IMIX_TEST_WRITE_PAUSE_MS") {
        if env("IMIX_TEST_WRITE_PAUSE_AT").is_none_or(|at| at == n as u64) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
}

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_runs_temp_file_is_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        fs::write(dir.path().join(".out.jsonl.tmp999999"), b"half").unwrap();
        fs::write(dir.path().join(".other.tmp1"), b"not ours").unwrap();
        // A live process's temp (two runs writing one cached file at once) is left to it: removing
        // it failed that run's rename (CI, stop 34).
        #[cfg(target_os = "linux")]
        let live = format!(".out.jsonl.tmp{}", std::os::unix::process::parent_id());
        #[cfg(target_os = "linux")]
        fs::write(dir.path().join(&live), b"being written").unwrap();
        write_atomic(&p, b"new").unwrap();
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        #[cfg(target_os = "linux")]
        assert_eq!(names, [".other.tmp1", live.as_str(), "out.jsonl"]);
        #[cfg(not(target_os = "linux"))]
        assert_eq!(names, [".other.tmp1", "out.jsonl"]);
    }

    #[test]
    fn created_dirs_are_removed_on_failure_unless_something_was_written() {
        let dir = tempfile::tempdir().unwrap();
        drop(CreatedDirs::create(&dir.path().join("a/b/c")).unwrap());
        assert!(
            !dir.path().join("a").exists(),
            "a failed run leaves no empty directory"
        );
        let g = CreatedDirs::create(&dir.path().join("a/b/c")).unwrap();
        fs::write(dir.path().join("a/b/ckpt"), b"x").unwrap();
        drop(g);
        assert!(
            dir.path().join("a/b/ckpt").exists() && !dir.path().join("a/b/c").exists(),
            "written files and their directories stay"
        );
        CreatedDirs::create(&dir.path().join("d/e")).unwrap().keep();
        assert!(dir.path().join("d/e").is_dir(), "kept on success");
        let e = write_atomic_with(&dir.path().join("f/g/out.jsonl"), |_| {
            Err(std::io::Error::other("disk full"))
        });
        assert!(
            e.is_err() && !dir.path().join("f").exists(),
            "a failed atomic write removes the directories it made"
        );
    }

    #[test]
    fn unwritable_outputs_are_found_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_writable(&dir.path().join("a/b/c.jsonl")).is_ok());
        assert!(
            !dir.path().join("a").exists(),
            "the check must not create directories"
        );
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let e = check_writable(&file.join("c.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
    }

    #[test]
    fn failed_write_leaves_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("interrupted"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temp file left behind: {names:?}");
    }
}
