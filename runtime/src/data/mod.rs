//! The Megatron data pipeline: tokenised corpora on disk and the samples built from them.
//!
//! Module map:
//! - [`dtype`]: token element types and their `.idx` codes.
//! - [`indexed`]: [`indexed::IndexedDataset`], a validated, memory-mapped `.bin/.idx` reader.
//! - [`builder`]: [`builder::IndexedDatasetBuilder`], a streaming writer that produces files
//!   byte-identical to megatron-core's and only appear under their final name when complete.
//! - [`rng`]: numpy's legacy `RandomState` (MT19937) and its `shuffle`, for Megatron's sample order.
//! - [`gpt_dataset`]: Megatron's document / sample / shuffle indices and `__getitem__`.
//! - [`blend`]: blend and split strings, blending indices, [`blend::BlendedDataset`].
//! - [`sampling`]: from `data_path`, split and sizes to train/valid/test datasets.
//! - [`cache`]: the on-disk index cache, keyed by a hash of the dataset description.
//! - [`inspect`]: statistics and decoded samples of a dataset (`pretrain inspect-data`).
//! - [`bpe`]: a fast byte-level BPE encoder, id-for-id identical to `tokenizers` on GPT-2/Qwen
//!   style `tokenizer.json` files (about 19x faster single-threaded).
//! - [`tokenizer`]: loading a Hugging Face `tokenizer.json`.
//! - [`preprocess`]: JSONL → `.bin/.idx`, multithreaded and streaming.
//! - [`mindrecord`]: reading MindSpore MindRecord files with token-id fields.
//! - [`npy`]: the small subset of numpy's `.npy` format the cache uses.

pub mod blend;
pub mod bpe;
pub mod builder;
pub mod cache;
pub mod dtype;
pub mod gpt_dataset;
pub mod indexed;
pub mod inspect;
pub mod mapped;
pub mod mindrecord;
pub mod npy;
pub mod preprocess;
pub mod rng;
pub mod sampling;
pub mod tokenizer;

use std::path::PathBuf;

pub use dtype::DType;

/// Errors of the data pipeline. Every message names the file (and position where there is one)
/// and says how to fix the problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error while reading or writing `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `.idx`/`.bin` pair (or another binary input) that is not what it claims to be:
    /// wrong magic, unsupported version, truncated, or inconsistent with its partner file.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A JSONL input line that is not a JSON object with the requested keys.
    #[error("{path}:{line}: {reason}")]
    BadLine {
        /// The input file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The tokenizer file is missing or cannot be parsed.
    #[error("{path}: {reason}")]
    Tokenizer {
        /// The tokenizer file or directory.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A token id that does not fit the output dtype.
    #[error("{path}: token id {id} does not fit {dtype} (document {document}); {hint}")]
    TokenOutOfRange {
        /// The output being written (or input being read).
        path: PathBuf,
        /// The id.
        id: i64,
        /// The dtype.
        dtype: &'static str,
        /// 0-based document number.
        document: u64,
        /// How to fix it.
        hint: String,
    },
    /// An invalid option or dataset description (split string, blend, sizes, sequence length...).
    #[error("{0}")]
    InvalidArgument(String),
}

impl Error {
    /// The process exit code: I/O may pass on a retry; bad arguments, tokenizers and data will
    /// not.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Io { .. } => crate::exit::RETRYABLE,
            Error::InvalidArgument(_) | Error::Tokenizer { .. } => crate::exit::CONFIG_INVALID,
            Error::Corrupt { .. } | Error::BadLine { .. } | Error::TokenOutOfRange { .. } => {
                crate::exit::DATA_INVALID
            }
        }
    }
}

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A corrupt-file error for `path`.
    pub fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
