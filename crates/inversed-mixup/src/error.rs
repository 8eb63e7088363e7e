//! One error type for the library, grouped by where things go wrong.

use std::path::PathBuf;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),

    /// Reading or writing a file failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error (shown in the message, not chained: the OS error is printed once).
        cause: std::io::Error,
    },

    /// A line of an input file is unusable (empty, too long, not UTF-8, malformed row...).
    #[error("{path}:{line}: {msg}")]
    Input {
        /// The input file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        msg: String,
    },

    /// A model directory or file is missing pieces or is not what it claims to be.
    #[error("model {path}: {msg}")]
    Model {
        /// The model file or directory.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },

    /// An adaptor or checkpoint file is corrupt or does not fit the models it is used with.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint {
        /// The adaptor or checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },

    /// Downloading or installing the default models failed.
    #[error("fetch: {0}")]
    Fetch(String),

    /// Tokenizer construction or encoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A caller passed an inconsistent configuration.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A setting refused before any work; the message names the field in backticks
    /// (`` `batch_size` ``), which each front end writes as its flag or keyword
    /// (`api::field_names`).
    #[error("{0}")]
    Invalid(String),

    /// An error with what was being done when it happened (`loading encoder DIR`).
    #[error("{context}: {source}")]
    Context {
        /// What was being done.
        context: String,
        /// The error.
        source: Box<Error>,
    },
}

/// Library result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }
    /// A model-file error.
    pub fn model(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            msg: msg.into(),
        }
    }
    /// This error with what was being done when it happened.
    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }
    /// The error under any context.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            e => e,
        }
    }
    /// A checkpoint/adaptor-file error.
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
