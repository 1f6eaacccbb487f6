//! The Qwen3 dense model, computed explicitly layer by layer (forward and backward).
//!
//! Dimension legend used in shape comments throughout:
//! B batch (micro-batch), T sequence, N = B·T tokens, H hidden, Nq query heads, Nkv key/value
//! heads, d head dimension, F MLP width, V vocabulary, L layers.
//!
//! Modules: [`config`] (HF `config.json`), [`params`] (HF-named parameter layout in one
//! contiguous buffer), [`ops`] (forward/backward pairs of single ops), `blocks` (attention, MLP,
//! decoder layer, embedding and head as forward/backward pairs, tensor parallelism at named
//! points), [`qwen3`] (the model step over the blocks), [`shard`] (a rank's part).

pub mod activations;
mod blocks;
pub mod config;
pub mod ops;
pub mod params;
pub mod qwen3;
pub mod shard;

pub use config::Qwen3Config;

/// Errors of the model: configurations it cannot run and weights that do not fit it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model configuration is invalid or unsupported.
    #[error("model config: {0}")]
    Config(String),
    /// Weights that do not match the model (names, shapes, dtypes), with every mismatch listed.
    #[error("{path}: {reason}")]
    Weights {
        /// The weights file or directory.
        path: std::path::PathBuf,
        /// What does not match.
        reason: String,
    },
    /// Token ids outside the vocabulary.
    #[error("token id {id} at position {position} is outside the vocabulary of {vocab_size}; the data was tokenized with a larger tokenizer than model.model_config.vocab_size")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// Its position in the batch.
        position: usize,
        /// V.
        vocab_size: usize,
    },
    /// A collective between tensor- or pipeline-parallel ranks failed.
    #[error(transparent)]
    Dist(#[from] crate::dist::Error),
    /// I/O while reading or writing weights.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code: a model config that cannot run is a configuration error, weights
    /// or tokens that do not fit are bad input, I/O and lost peers may pass on a retry.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => crate::exit::CONFIG_INVALID,
            Error::Dist(d) => d.exit_code(),
            Error::Io { .. } => crate::exit::RETRYABLE,
            Error::Weights { .. } | Error::TokenOutOfRange { .. } => crate::exit::DATA_INVALID,
        }
    }
}
