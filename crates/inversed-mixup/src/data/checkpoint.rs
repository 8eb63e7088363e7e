//! Safetensors files with a JSON metadata header, written atomically and read with clear errors.

use crate::{Error, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Metadata key under which our JSON header is stored in the safetensors `__metadata__` map.
pub const META_KEY: &str = "inversed_mixup";

/// Writes `tensors` plus a JSON header to `path` atomically (temp file + rename).
pub fn save(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    meta: &serde_json::Value,
) -> Result<()> {
    let mut info = HashMap::new();
    info.insert(META_KEY.to_string(), meta.to_string());
    let mut items: Vec<(&String, &Tensor)> = tensors.iter().collect();
    items.sort_by(|a, b| a.0.cmp(b.0));
    let bytes = safetensors::serialize(items, Some(info))
        .map_err(|e| Error::checkpoint(path, e.to_string()))?;
    crate::data::io::write_atomic(path, &bytes)
}

/// Reads tensors and the JSON header; a truncated or foreign file is a [`Error::Checkpoint`].
pub fn load(path: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, serde_json::Value)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::checkpoint(path, format!("not a valid safetensors file ({e})")))?;
    let meta = md
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| {
            Error::checkpoint(
                path,
                "no inversed-mixup metadata header: not written by this tool",
            )
        })?;
    let meta: serde_json::Value = serde_json::from_str(meta)
        .map_err(|e| Error::checkpoint(path, format!("corrupt metadata header: {e}")))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| Error::checkpoint(path, format!("corrupt tensor data: {e}")))?;
    Ok((tensors, meta))
}
