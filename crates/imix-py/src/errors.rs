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
    /// An argument refused before any work (the command line's flag checks).
    Bad(String),
    /// Something that cannot go wrong with valid data did (a bug).
    Internal(String),
    /// The library panicked (a bug), caught before it reached Python.
    Panic(String),
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

/// A keyword's name for a request field: the same, but `lambda` (a Python keyword) is `lam`.
fn keyword(field: &str) -> String {
    match field {
        "lambda" => "lam".into(),
        f => f.into(),
    }
}

/// Errors of what the caller passed (settings, input rows, model and bundle files that do not fit)
/// are `ImixError` (a `ValueError`); failures of the machine (I/O, downloads, tensor errors) are
/// `RuntimeError`. Fields are named by their keyword.
fn exception(e: &Error, msg: String) -> PyErr {
    let msg = inversed_mixup::api::field_names(&msg, &keyword);
    match e.root() {
        Error::Config(_)
        | Error::Invalid(_)
        | Error::Input { .. }
        | Error::Model { .. }
        | Error::Checkpoint { .. } => ImixError::new_err(msg),
        Error::Candle(_)
        | Error::Io { .. }
        | Error::Fetch(_)
        | Error::Tokenizer(_)
        | Error::Context { .. } => PyRuntimeError::new_err(msg),
    }
}

impl From<Fail> for PyErr {
    fn from(f: Fail) -> PyErr {
        match f {
            Fail::Lib(e) => exception(&e, e.to_string()),
            Fail::Bad(m) => ImixError::new_err(m),
            Fail::Internal(m) => PyRuntimeError::new_err(m),
            Fail::Panic(m) => {
                ImixError::new_err(format!("internal error (a bug; please report it): {m}"))
            }
        }
    }
}
