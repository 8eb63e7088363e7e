//! Embeddings of a whole corpus, batched by length and cached on disk keyed by encoder and texts.

use crate::data::checkpoint;
use crate::nets::encoder::Encoder;
use crate::Result;
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// Indices of `texts` in batches of at most `size`, shortest first: similar lengths batched
/// together need far less padding (callers scatter the results back by index).
pub(crate) fn length_batches(texts: &[String], size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    order.chunks(size.max(1)).map(<[usize]>::to_vec).collect()
}

/// Embeddings `(n, dim)` of `texts`, read from `cache` when it holds exactly these texts.
pub fn embed_corpus(
    enc: &Encoder,
    texts: &[String],
    cache: Option<&Path>,
    progress: &dyn Fn(usize, usize),
) -> Result<Tensor> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(enc.name().as_bytes());
    for t in texts {
        h.update(t.as_bytes());
        h.update([0]);
    }
    let key = crate::nets::fetch::hex(&h.finalize());
    if let Some(p) = cache {
        if let Ok((t, meta)) = checkpoint::load(p, &candle_core::Device::Cpu) {
            if meta["key"].as_str() == Some(key.as_str()) {
                if let Some(e) = t.get("embeddings") {
                    return Ok(e.clone());
                }
            }
        }
    }
    let mut rows: Vec<Option<Tensor>> = vec![None; texts.len()];
    for (done, chunk) in length_batches(texts, 64).iter().enumerate() {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
        let e = enc.embed(&batch)?;
        for (j, &i) in chunk.iter().enumerate() {
            rows[i] = Some(e.get(j)?);
        }
        progress(((done + 1) * 64).min(texts.len()), texts.len());
    }
    let rows: Vec<Tensor> = rows
        .into_iter()
        .map(|r| r.expect("every row embedded"))
        .collect();
    let all = Tensor::stack(&rows, 0)?;
    if let Some(p) = cache {
        let mut m = HashMap::new();
        m.insert("embeddings".to_string(), all.clone());
        checkpoint::save(
            p,
            &m,
            &serde_json::json!({ "kind": "embeddings", "key": key }),
        )?;
    }
    Ok(all)
}
