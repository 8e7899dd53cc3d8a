//! The error type of `mimic-core`: IO, configuration and checkpoint failures, each message
//! lowercase and naming what was expected and what was found.

use std::path::PathBuf;

/// Errors returned by `mimic-core`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {err}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying IO error (shown in the message, so not repeated as a cause).
        err: std::io::Error,
    },
    /// A weight file could not be parsed (truncated, corrupt, unsupported dtype, ...).
    #[error("{path}: cannot read weights: {reason}")]
    WeightFormat {
        /// The weight file (or a label for in-memory bytes).
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The tensors of a checkpoint do not match the model they are loaded into.
    #[error("{source_name}: weights do not match the model:\n{details}")]
    WeightMismatch {
        /// The weight file (or a label for in-memory bytes).
        source_name: String,
        /// One line per missing, unexpected or mis-shaped key.
        details: String,
    },
    /// An image could not be decoded or has an unusable size.
    #[error("{path}: {reason}")]
    Image {
        /// The image file (or a label for in-memory bytes).
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// A data set's files are malformed or incomplete: a bad label row, a missing image, an
    /// empty split.
    #[error("{location}: {reason}")]
    Dataset {
        /// The file, with `:line` (1-based) when one line is at fault, or the folder.
        location: String,
        /// What was wrong, with what was expected and what was found.
        reason: String,
    },
    /// A configuration value is impossible (unknown preset, sizes that do not divide, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
