//! How the work runs inside a Python process: without the GIL, on rayon's compute pool (as the
//! `imix` binary runs it, `imix_kernels::pool`), reporting progress to a Python callable.

use crate::errors::{Fail, Result};
use pyo3::prelude::*;
use std::sync::Mutex;

// The allocator of the `imix` binary, for the same speed: glibc returned large freed blocks to the
// OS, so every step faulted in fresh pages for its tensors (BENCHMARKS.md). It serves the Rust
// allocations of this module only; Python's own memory is untouched.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Process set-up done once, when the module is imported: mimalloc keeps the pages it frees (a
/// step frees and reallocates the same large tensors), as in the binary. (Candle's matmul workers
/// are told to sleep when idle by `CANDLE_BARRIER_POOL_SPIN_LIMIT=0`, which the Python package
/// sets in `os.environ` before importing this module: changing the environment from Rust while
/// Python threads may read it is not sound.)
pub fn init() {
    // 15 = mi_option_purge_delay in mimalloc v3 (libmimalloc-sys 0.1.49); -1 = never purge.
    // SAFETY: sets one process-wide integer option of the allocator; mimalloc reads options
    // without assuming they are constant.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) }
}

/// A Python progress callable `progress(done, total)`, called with the GIL re-acquired. The
/// library cannot be stopped from a progress report, so an exception the callable raises is kept
/// and raised when the call returns, and the callable is not called again.
struct Progress {
    callback: Option<Py<PyAny>>,
    error: Mutex<Option<PyErr>>,
}

impl Progress {
    fn report(&self, done: usize, total: usize) {
        let Some(cb) = &self.callback else { return };
        Python::with_gil(|py| {
            let mut err = self.error.lock().unwrap_or_else(|p| p.into_inner());
            if err.is_none() {
                if let Err(e) = cb.call1(py, (done, total)) {
                    *err = Some(e);
                }
            }
        });
    }
}

/// Runs `work` without the GIL, on the compute pool; `work` gets the progress reporter. All model
/// types of the library are `Send + Sync` (plain tensors and tokenizers), so no `unsendable`
/// class is needed and other Python threads run meanwhile.
pub fn compute<R: Send>(
    py: Python<'_>,
    progress: Option<Py<PyAny>>,
    work: impl FnOnce(&dyn Fn(usize, usize)) -> Result<R> + Send,
) -> PyResult<R> {
    let p = Progress {
        callback: progress,
        error: Mutex::new(None),
    };
    // A panic must not reach Python as PanicException (which `except Exception` misses): it is
    // caught here and raised as ImixError naming it as a bug.
    let run = || {
        let work = std::panic::AssertUnwindSafe(|| work(&|d, t| p.report(d, t)));
        std::panic::catch_unwind(work).unwrap_or_else(|e| Err(Fail::Panic(panic_message(&e))))
    };
    let r = py.allow_threads(|| imix_kernels::pool::on_compute_pool(run));
    if let Some(e) = p.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    r.map_err(PyErr::from)
}

/// Rows serialised as the JSON Lines `imix` writes (one object a line), byte for byte.
pub fn jsonl<T: serde::Serialize>(rows: &[T]) -> Result<String> {
    let mut out = Vec::new();
    for r in rows {
        inversed_mixup::data::jsonl::append(&mut out, r)
            .map_err(|e| Fail::Internal(format!("serialising a row: {e}")))?;
    }
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

/// A value as one line of JSON (a summary), as `serde_json` writes it.
pub fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Fail::Internal(format!("serialising a summary: {e}")))
}

/// The message of a caught panic.
fn panic_message(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| e.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
