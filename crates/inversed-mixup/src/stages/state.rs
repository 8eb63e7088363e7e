//! Checkpoints of the training stages (1 and 2 alike): trained variables and their optimiser
//! moments under group names, the step, and a JSON header that a resumed run must match.

use crate::data::checkpoint;
use crate::nets::optim::AdamW;
use crate::{Error, Result};
use candle_core::{Device, Tensor, Var};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A checkpoint being assembled.
pub struct Snapshot {
    tensors: HashMap<String, Tensor>,
    meta: serde_json::Map<String, serde_json::Value>,
}

impl Snapshot {
    /// An empty checkpoint of `kind` (e.g. `align-checkpoint`) at `step`.
    pub fn new(kind: &str, step: usize) -> Self {
        let mut meta = serde_json::Map::new();
        meta.insert("kind".into(), kind.into());
        meta.insert("step".into(), step.into());
        Self {
            tensors: HashMap::new(),
            meta,
        }
    }

    /// Adds the values of `vars` under `group`.
    pub fn vars(mut self, group: &str, vars: &[(String, Var)]) -> Self {
        for (n, v) in vars {
            self.tensors
                .insert(format!("{group}/{n}"), v.as_tensor().clone());
        }
        self
    }

    /// Adds the moments and step count of `opt` under `group`.
    pub fn optimizer(mut self, group: &str, opt: &AdamW) -> Self {
        for (n, t) in opt.state() {
            self.tensors.insert(format!("{group}/opt/{n}"), t);
        }
        self.meta.insert(format!("{group}/opt/t"), opt.t.into());
        self
    }

    /// Adds a header entry that a resumed run must match (settings, data size...).
    pub fn meta(mut self, key: &str, value: impl Serialize) -> Result<Self> {
        let v = serde_json::to_value(value)
            .map_err(|e| Error::Config(format!("checkpoint header {key}: {e}")))?;
        self.meta.insert(key.into(), v);
        Ok(self)
    }

    /// Writes the checkpoint atomically.
    pub fn save(self, path: &Path) -> Result<()> {
        checkpoint::save(path, &self.tensors, &serde_json::Value::Object(self.meta))
    }
}

/// A checkpoint read back, to restore from.
pub struct Restore {
    tensors: HashMap<String, Tensor>,
    meta: serde_json::Value,
    path: PathBuf,
}

impl Restore {
    /// Reads `path`, which must be a checkpoint of `kind`.
    pub fn read(path: &Path, kind: &str, device: &Device) -> Result<Self> {
        let (tensors, meta) = checkpoint::load(path, device)?;
        if meta["kind"] != kind {
            return Err(Error::checkpoint(
                path,
                format!("not a {kind} (it is {})", meta["kind"]),
            ));
        }
        Ok(Self {
            tensors,
            meta,
            path: path.to_path_buf(),
        })
    }

    fn bad(&self, msg: impl Into<String>) -> Error {
        Error::checkpoint(&self.path, msg)
    }

    /// Fails unless header entry `key` equals `want`; `what` says what differs, for the message.
    pub fn expect(&self, key: &str, want: impl Serialize, what: &str) -> Result<()> {
        let want = serde_json::to_value(want).map_err(|e| self.bad(e.to_string()))?;
        if self.meta[key] != want {
            return Err(self.bad(format!(
                "{what} differ from this run's; resume with the same flags and data"
            )));
        }
        Ok(())
    }

    /// Header entry `key`, read back as a `T`.
    pub fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T> {
        serde_json::from_value(self.meta[key].clone())
            .map_err(|e| self.bad(format!("header entry {key}: {e}")))
    }

    /// The step the checkpoint was written at.
    pub fn step(&self) -> Result<usize> {
        self.meta["step"]
            .as_u64()
            .map(|s| s as usize)
            .ok_or_else(|| self.bad("no step"))
    }

    /// The tensors stored under `group`, by name.
    fn group(&self, group: &str) -> HashMap<String, Tensor> {
        let p = format!("{group}/");
        self.tensors
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&p)
                    .filter(|n| !n.starts_with("opt/"))
                    .map(|n| (n.to_string(), v.clone()))
            })
            .collect()
    }

    /// Sets `vars` to the values stored under `group`; every one must be there, with its shape.
    pub fn vars(&self, group: &str, vars: &[(String, Var)]) -> Result<()> {
        let stored = self.group(group);
        for (n, v) in vars {
            let t = stored
                .get(n)
                .ok_or_else(|| self.bad(format!("missing {group} tensor {n}")))?;
            if t.dims() != v.dims() {
                return Err(self.bad(format!(
                    "{group} tensor {n} has shape {:?}, expected {:?}",
                    t.dims(),
                    v.dims()
                )));
            }
            v.set(t)?;
        }
        Ok(())
    }

    /// Restores the moments and step count of `opt` stored under `group`.
    pub fn optimizer(&self, group: &str, opt: &mut AdamW) -> Result<()> {
        let p = format!("{group}/opt/");
        let s: HashMap<String, Tensor> = self
            .tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&p).map(|n| (n.to_string(), v.clone())))
            .collect();
        opt.load_state(&s).map_err(|e| self.bad(e))?;
        opt.t = self.meta[format!("{group}/opt/t")]
            .as_u64()
            .ok_or_else(|| self.bad(format!("no {group} optimiser step")))?
            as usize;
        Ok(())
    }
}
