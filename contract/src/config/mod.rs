//! Reading a training config the way the runtime does, for both halves: the position-tracking
//! YAML tree ([`yaml`]), `base_config` parents merged first ([`load`]), dotted command-line
//! overrides in both forms ([`parse_overrides`]), and the parallel layout ([`ParallelLayout`]).
//! The runtime deserializes the tree strictly into its config; the operator reads only the
//! layout, through a [`Files`] that sees what a pod will see.

mod layout;
mod overrides;
mod source;
pub mod yaml;

use std::path::{Path, PathBuf};

pub use layout::ParallelLayout;
pub use overrides::{apply, override_args, parse_overrides, Override};
pub use yaml::{Entry, Node, Origin, Value};

/// Errors of reading a config. Messages name the file and position (or the override) and say
/// how to fix the problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file (or a `base_config` parent) cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid YAML (or holds several documents, duplicate keys...).
    #[error("{at}: {message}")]
    Syntax {
        /// `file:line:col`.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// A `base_config` problem (a cycle).
    #[error("{file}: {message}")]
    BaseConfig {
        /// The file whose `base_config` is wrong.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Malformed command-line overrides (a dangling `--key`, a non-section in the key path).
    #[error("{0}")]
    Override(String),
    /// A value of the wrong shape (a file that is not a mapping, a layout size that is not a
    /// positive integer).
    #[error("{at}: {message}")]
    Schema {
        /// `file:line:col`, or `override --a.b`.
        at: String,
        /// The dotted key and what is wrong.
        message: String,
    },
}

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where config files come from.
pub trait Files {
    /// The file at `path`: an identity for cycle detection (the canonical path) and its text.
    fn read(&self, path: &Path) -> Result<(PathBuf, String)>;
}

/// The local file system.
pub struct Disk;

impl Files for Disk {
    fn read(&self, path: &Path) -> Result<(PathBuf, String)> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let canonical = std::fs::canonicalize(path).map_err(io)?;
        let text = std::fs::read_to_string(path).map_err(io)?;
        Ok((canonical, text))
    }
}

/// Loads `path` (and its `base_config` parents) from `files` and applies the dotted overrides
/// given as raw argv tokens (`--a.b v` / `--a.b=v`, the tokens after `--config <file>`).
pub fn load(path: &Path, overrides: &[String], files: &dyn Files) -> Result<Node> {
    let mut tree = source::load_tree(path, files)?;
    for o in parse_overrides(overrides)? {
        apply(&mut tree, &o)?;
    }
    Ok(tree)
}
