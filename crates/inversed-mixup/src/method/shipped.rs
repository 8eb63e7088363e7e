//! The adaptor shipped for the default encoder/LLM pair, embedded in the library: an installed
//! `imix` binary (or any program linking the library) has it wherever it runs, without the source
//! tree.

use crate::data::io::write_atomic;
use crate::nets::fetch::cache_dir;
use crate::Result;
use std::path::PathBuf;

/// The bytes of `assets/adaptor-minilm-smollm2.safetensors` at build time.
static SHIPPED: &[u8] = include_bytes!("../../../../assets/adaptor-minilm-smollm2.safetensors");

/// FNV-1a, 64 bit: names the cached copy by its content, so a newer build never reads an older file.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Path of the default adaptor: `IMIX_ADAPTOR` when set, else the shipped adaptor, written once
/// (atomically) into the model cache.
pub fn default_adaptor() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("IMIX_ADAPTOR") {
        return Ok(PathBuf::from(p));
    }
    crate::nets::fetch::check_cache_dir()?;
    let path = cache_dir().join(format!(
        "adaptor-minilm-smollm2-{:016x}.safetensors",
        fnv1a(SHIPPED)
    ));
    // The cached copy must be the embedded bytes, not just their size: a damaged copy (zeroed
    // weights keep the size) is written again.
    if std::fs::read(&path).map(|b| b != SHIPPED).unwrap_or(true) {
        write_atomic(&path, SHIPPED)?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cached copy is the shipped file, byte for byte, and is reused.
    #[test]
    fn the_default_adaptor_is_the_shipped_file_from_any_directory() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY of the test: only this test in the crate sets IMIX_CACHE or IMIX_ADAPTOR.
        std::env::set_var("IMIX_CACHE", dir.path());
        std::env::remove_var("IMIX_ADAPTOR");
        let p = default_adaptor().unwrap();
        assert!(p.starts_with(dir.path()));
        let shipped = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../assets/adaptor-minilm-smollm2.safetensors"
        ))
        .unwrap();
        assert!(std::fs::read(&p).unwrap() == shipped);
        let t = std::fs::metadata(&p).unwrap().modified().unwrap();
        assert_eq!(default_adaptor().unwrap(), p);
        assert_eq!(
            std::fs::metadata(&p).unwrap().modified().unwrap(),
            t,
            "written again"
        );
    }
}
