//! Errors: library errors and refused arguments become Python exceptions carrying the message the
//! `imix` command prints (without its `error: ` prefix).

use inversed_mixup::Error;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::{create_exception, PyErr};

create_exception!(
    inversed_mixup,
    ImixError,
    PyValueError,
    "Bad input or configuration (an empty or malformed text, an unknown label, a decoding spec or shard \
     it cannot run, a model or bundle that does not fit), with the message the imix command prints."
);

/// Why a call failed, carried out of the section that runs without the GIL.
pub enum Fail {
    /// A library error.
    Lib(Error),
    /// A library error with the context the command line adds to it (`loading encoder DIR: ...`).
    Context(String, Error),
    /// An argument refused before any work (the command line's flag checks).
    Bad(String),
    /// Something that cannot go wrong with valid data did (a bug).
    Internal(String),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Lib(e)
    }
}

impl From<candle_core::Error> for Fail {
    fn from(e: candle_core::Error) -> Self {
        Fail::Lib(e.into())
    }
}

/// The result type of the GIL-free sections.
pub type Result<T> = std::result::Result<T, Fail>;

/// Errors of what the caller passed (settings, input rows, model and bundle files that do not fit)
/// are `ImixError` (a `ValueError`); failures of the machine (I/O, downloads, tensor errors) are
/// `RuntimeError`.
fn exception(e: &Error, msg: String) -> PyErr {
    match e {
        Error::Config(_) | Error::Input { .. } | Error::Model { .. } | Error::Checkpoint { .. } => ImixError::new_err(msg),
        Error::Candle(_) | Error::Io { .. } | Error::Fetch(_) | Error::Tokenizer(_) => PyRuntimeError::new_err(msg),
    }
}

impl From<Fail> for PyErr {
    fn from(f: Fail) -> PyErr {
        match f {
            Fail::Lib(e) => exception(&e, e.to_string()),
            // As anyhow's `{:#}` prints a context over its cause.
            Fail::Context(c, e) => exception(&e, format!("{c}: {e}")),
            Fail::Bad(m) => ImixError::new_err(m),
            Fail::Internal(m) => PyRuntimeError::new_err(m),
        }
    }
}

/// The command line's argument checks (`crates/imix/src/check.rs`), with its messages: arguments
/// are named by the flag that sets them in `imix`, which the Python keyword mirrors
/// (`--batch-size` is `batch_size`).
pub mod check {
    use super::{Fail, Result};

    /// A finite number above zero.
    pub fn positive(flag: &str, v: f64) -> Result<()> {
        if !(v.is_finite() && v > 0.0) {
            return Err(Fail::Bad(format!("{flag} {v}: must be a positive number")));
        }
        Ok(())
    }

    /// A finite number from 0 to 1.
    pub fn unit(flag: &str, v: f64) -> Result<()> {
        if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
            return Err(Fail::Bad(format!("{flag} {v}: must lie in [0, 1]")));
        }
        Ok(())
    }

    /// A count of at least one.
    pub fn at_least_one(flag: &str, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Fail::Bad(format!("{flag} 0: must be at least 1")));
        }
        Ok(())
    }

    /// A finite number that is not negative.
    pub fn non_negative(flag: &str, v: f64) -> Result<()> {
        if !(v.is_finite() && v >= 0.0) {
            return Err(Fail::Bad(format!("{flag} {v}: must be a number >= 0")));
        }
        Ok(())
    }

    /// `resume` needs a checkpoint to continue, and a new run must not overwrite one.
    pub fn resume_target(resume: bool, ckpt: &std::path::Path) -> Result<()> {
        match (resume, ckpt.exists()) {
            (true, false) => Err(Fail::Bad(format!("--resume: no checkpoint at {} to continue (leave out --resume to start a new run)", ckpt.display()))),
            (false, true) => Err(Fail::Bad(format!("{} exists: pass --resume to continue it, or delete it to start over", ckpt.display()))),
            _ => Ok(()),
        }
    }
}
