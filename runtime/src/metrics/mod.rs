//! Training metrics on disk: TensorBoard event files and JSON lines.
//!
//! Rank 0 of a training run calls, once per optimizer step, [`log_to_tensorboard`] with a
//! [`StepMetrics`] (MindFormers' tag names, so dashboards carry over; see
//! `mindformers-conventions.md` §7) and [`JsonlWriter::write`] with the same struct, then
//! [`EventWriter::flush`].
//!
//! ```no_run
//! # fn main() -> pretrain::metrics::Result<()> {
//! use pretrain::metrics::{log_to_tensorboard, EventWriter, JsonlWriter, StepMetrics};
//!
//! let mut tensorboard = EventWriter::new("output/tensorboard/rank_0")?;
//! let mut jsonl = JsonlWriter::open("output/metrics.jsonl")?;
//! let metrics = StepMetrics { step: 1, lr: 3e-4, loss: Some(10.9), ..StepMetrics::default() };
//! log_to_tensorboard(&mut tensorboard, &metrics, 32)?;
//! jsonl.write(&metrics)?;
//! tensorboard.flush()?;
//! # Ok(())
//! # }
//! ```
//!
//! Module map:
//! - [`tensorboard`]: [`EventWriter`] (`events.out.tfevents.*` files) and the strict reader
//!   [`read_events`], which checks every checksum and names the byte offset of damage.
//! - [`event`]: the `Event` protobuf message, limited to scalars and text, with its encoding.
//! - [`step_metrics`]: [`StepMetrics`] and the mapping to TensorBoard tags.
//! - [`jsonl`]: [`JsonlWriter`], one JSON object per line, appending on resume.
//! - `tfrecord`, `protobuf`, `crc32c` (private): the container, wire format and checksum,
//!   written by hand because the format is small and the available crates are stale or need
//!   `protoc` (test-infrastructure.md §8).
//!
//! The bytes are checked against TensorBoard itself: unit tests pin vectors produced by
//! tensorboard 2.21.0's protobuf classes, and `scripts/tensorboard-check/verify_events.py` reads
//! the committed fixture `tests/assets/tensorboard/` with TensorBoard's own readers.

mod crc32c;
pub mod event;
pub mod jsonl;
mod protobuf;
pub mod step_metrics;
pub mod tensorboard;
mod tfrecord;

use std::path::PathBuf;

pub use event::{Event, SummaryData, SummaryValue};
pub use jsonl::JsonlWriter;
pub use step_metrics::{log_to_tensorboard, StepMetrics};
pub use tensorboard::{read_events, EventWriter};

/// Errors of the metrics writers and readers. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error while creating, writing, syncing or reading `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An events file that fails a checksum, ends inside a record, or holds a record that is
    /// not a valid `Event`. Usually a file whose writer was killed mid-record, or one damaged
    /// on disk; the records before `offset` are intact.
    #[error("{path}: at byte offset {offset}: {reason}")]
    Corrupt {
        /// The events file.
        path: PathBuf,
        /// Byte offset of the damaged record (or field) from the start of the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A JSONL record that serde cannot turn into JSON (e.g. a map with non-string keys).
    #[error("{path}: cannot serialize record as JSON: {source}")]
    Json {
        /// The JSONL file being written.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
}

impl Error {
    /// The process exit code: metrics failures are I/O, which may pass on a retry.
    pub fn exit_code(&self) -> i32 {
        crate::exit::RETRYABLE
    }
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
