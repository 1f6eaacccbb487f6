//! Checkpoints: `<root>/iteration_<step:08>/` holding
//! - `model.safetensors` (f32, HF parameter names), `config.json`, and the tokenizer files, so
//!   the directory loads with transformers' `from_pretrained`;
//! - `optimizer.safetensors` (`exp_avg.<name>`, `exp_avg_sq.<name>`), `trainer_state.json`
//!   (step, consumed samples, optimizer step), `config.yaml` (the resolved training config);
//! - `model.ckpt` with `checkpoint_format: ckpt`: the weights in MindSpore's format;
//! - `metadata.json`: size and sha256 of every other file.
//!
//! A checkpoint is written under a temporary name, synced, renamed into place, and only then
//! named in `<root>/latest_checkpointed_iteration.txt` (MindSpore Transformers' commit marker),
//! so a crash never leaves something that looks complete.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod mindspore_ckpt;
mod save;
pub mod sharded;

pub use save::{save, SaveRequest};

use crate::model::params::{write_safetensors, F32View, Layout, ParamSpec};
use crate::model::shard::Shard;
use crate::model::Qwen3Config;
use crate::optim::adamw::AdamWState;

/// The commit marker, as MindSpore Transformers names it.
pub const MARKER: &str = "latest_checkpointed_iteration.txt";

/// Errors of saving and loading checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// I/O on a checkpoint file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A checkpoint that is incomplete, corrupt, or does not fit the model.
    #[error("{path}: {reason}")]
    Invalid {
        /// The checkpoint file or directory.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code: I/O may pass on a retry, a bad checkpoint will not.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Io { .. } => crate::exit::RETRYABLE,
            Error::Invalid { .. } => crate::exit::DATA_INVALID,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Where training stands, saved with every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Samples consumed (over all data-parallel ranks).
    pub consumed_samples: u64,
    /// Loss of the last step.
    pub last_loss: f32,
}

/// Everything a checkpoint restores.
pub struct Loaded {
    /// The directory it came from.
    pub dir: PathBuf,
    /// Parameters in layout order (of the part asked for).
    pub params: Vec<f32>,
    /// Optimizer moments (absent in a weights-only HF directory).
    pub optimizer: Option<AdamWState>,
    /// Trainer state (absent in a weights-only HF directory).
    pub state: Option<TrainerState>,
}

/// The directory of iteration `step` under `root`.
pub fn iteration_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("iteration_{step:08}"))
}

/// Tensor `name` of `st`, an f32 tensor of `spec`'s shape (else an error naming it).
fn read_tensor(
    st: &safetensors::SafeTensors<'_>,
    name: &str,
    spec: &ParamSpec,
    path: &Path,
) -> Result<Vec<f32>> {
    let t = st
        .tensor(name)
        .map_err(|_| invalid(path, format!("missing {name}")))?;
    if t.shape() != spec.shape.as_slice() || t.dtype() != Dtype::F32 {
        return Err(invalid(path, format!("{name}: wrong shape or dtype")));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The optimizer step in a moments file's metadata.
fn moments_step(bytes: &[u8], path: &Path) -> Result<u64> {
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| invalid(path, e.to_string()))?;
    meta.metadata()
        .as_ref()
        .and_then(|m| m.get("step"))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(path, "no optimizer step in the metadata"))
}

/// A checkpoint file mapped read-only: its pages are read as they are parsed and, being the
/// file's, can be dropped again by the kernel, so loading does not hold a second copy.
fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = File::open(path).map_err(io(path))?;
    // SAFETY: checkpoint files are written once under a temporary name and renamed; nothing
    // writes to a committed file while it is mapped (a concurrent writer would be another run
    // on the same directory, which is outside what the runtime supports).
    unsafe { memmap2::Mmap::map(&file) }.map_err(io(path))
}

/// The sha256 of a file, read in 8 MiB pieces (checkpoint files are gigabytes).
fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).map_err(io(path))?;
        if n == 0 {
            return Ok(format!("{:x}", hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// Files of `dir` and of its subdirectories, as paths relative to `dir`, sorted.
fn files_below(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let here = dir.join(&rel);
        for entry in std::fs::read_dir(&here).map_err(io(&here))? {
            let entry = entry.map_err(io(&here))?;
            let rel = rel.join(entry.file_name());
            if entry.file_type().map_err(io(&here))?.is_dir() {
                todo.push(rel);
            } else {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Checks every file listed in `metadata.json` (size and sha256).
pub fn verify(dir: &Path) -> Result<()> {
    let meta_path = dir.join("metadata.json");
    let text = std::fs::read_to_string(&meta_path)
        .map_err(|_| invalid(dir, "no metadata.json: the checkpoint is incomplete"))?;
    let meta: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| invalid(&meta_path, format!("invalid JSON: {e}")))?;
    let files = meta["files"]
        .as_object()
        .ok_or_else(|| invalid(&meta_path, "no file list"))?;
    for (name, want) in files {
        let path = dir.join(name);
        let len = std::fs::metadata(&path)
            .map_err(|_| invalid(&path, "listed in metadata.json but missing"))?
            .len();
        if Some(len) != want["bytes"].as_u64() {
            return Err(invalid(
                &path,
                format!("{len} bytes, metadata.json says {}", want["bytes"]),
            ));
        }
        if Some(sha256_file(&path)?.as_str()) != want["sha256"].as_str() {
            return Err(invalid(
                &path,
                "sha256 differs from metadata.json: the file is corrupt",
            ));
        }
    }
    Ok(())
}

/// Committed iterations under `root`, newest first.
pub fn iterations(root: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let step = name.strip_prefix("iteration_")?.parse().ok()?;
                    Some((step, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|e| std::cmp::Reverse(e.0));
    v
}

/// The newest complete checkpoint under `root`, verified (sizes and sha256 of every file).
///
/// The marker names the newest committed iteration; a directory newer than the marker was never
/// committed and is ignored. A corrupt or partial checkpoint is skipped with a warning naming it,
/// and the previous complete one is used. Without a marker (deleted, or never written after a
/// crash) the newest verified directory is used. `None` when `root` holds no checkpoint at all
/// (a fresh start); an error when checkpoints exist but none is intact.
pub fn latest(root: &Path) -> Result<Option<PathBuf>> {
    let marker = root.join(MARKER);
    let committed: Option<u64> = match std::fs::read_to_string(&marker) {
        Ok(text) => match text.trim().parse() {
            Ok(step) => Some(step),
            Err(_) => {
                tracing::warn!(
                    "{}: `{}` is not an iteration number; ignoring the marker",
                    marker.display(),
                    text.trim()
                );
                None
            }
        },
        Err(_) => None,
    };
    let all = iterations(root);
    if let Some(c) = committed {
        if !all.iter().any(|(step, _)| *step == c) {
            tracing::warn!(
                "{}: the marker names step {c}, whose checkpoint does not exist; resuming from \
                 the newest older one that verifies",
                marker.display()
            );
        }
    }
    let candidates: Vec<(u64, PathBuf)> = all
        .into_iter()
        .filter(|(step, _)| committed.is_none_or(|c| *step <= c))
        .collect();
    if committed.is_none() && !candidates.is_empty() {
        tracing::warn!(
            "{}: no commit marker; using the newest checkpoint that verifies",
            root.display()
        );
    }
    let mut skipped = Vec::new();
    for (_, dir) in candidates {
        match verify(&dir) {
            Ok(()) => return Ok(Some(dir)),
            Err(e) => {
                tracing::warn!("skipping checkpoint {}: {e}", dir.display());
                skipped.push(dir.display().to_string());
            }
        }
    }
    if skipped.is_empty() {
        Ok(None)
    } else {
        Err(invalid(
            root,
            format!(
                "no intact checkpoint: {} failed verification; restore one or remove the \
                 directory to start fresh",
                skipped.join(", ")
            ),
        ))
    }
}

/// Loads a checkpoint directory (ours, or any HF model directory with `config.json` and
/// `model.safetensors`) for `config`, refusing a different architecture with the differences.
pub fn load(dir: &Path, config: &Qwen3Config, layout: &Layout) -> Result<Loaded> {
    let whole = Shard::full(config);
    load_part(dir, config, &whole, layout)
}

/// The part `shard` holds (laid out as `local`) of a checkpoint, as [`load`] checks it:
/// the files are mapped and read one tensor at a time, so the whole model (or its moments)
/// is never held, whatever layout the checkpoint was saved under.
pub fn load_part(
    dir: &Path,
    config: &Qwen3Config,
    shard: &Shard,
    local: &Layout,
) -> Result<Loaded> {
    if dir.join("metadata.json").is_file() {
        verify(dir)?;
    }
    let cfg_path = dir.join("config.json");
    if let Ok(text) = std::fs::read_to_string(&cfg_path) {
        let saved =
            Qwen3Config::from_hf_json(&text).map_err(|e| invalid(&cfg_path, e.to_string()))?;
        let diffs = architecture_diff(&saved, config);
        if !diffs.is_empty() {
            return Err(invalid(
                dir,
                format!(
                    "checkpoint was saved for another model: {}",
                    diffs.join(", ")
                ),
            ));
        }
    }
    let global = Layout::new(config);
    let model_path = dir.join("model.safetensors");
    let bytes = map_file(&model_path)?;
    let params = global
        .load_safetensors_part(&bytes, &model_path, shard, local)
        .map_err(|e| invalid(&model_path, e.to_string()))?;
    drop(bytes);
    let opt_path = dir.join("optimizer.safetensors");
    let optimizer = if opt_path.is_file() {
        let bytes = map_file(&opt_path)?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| invalid(&opt_path, e.to_string()))?;
        let moment = |prefix: &str| {
            let name = |g: &ParamSpec| format!("{prefix}.{}", g.name);
            shard.read_part(local, &global, |g| read_tensor(&st, &name(g), g, &opt_path))
        };
        Some(AdamWState {
            m: moment("exp_avg")?,
            v: moment("exp_avg_sq")?,
            step: moments_step(&bytes, &opt_path)?,
        })
    } else {
        sharded::load_moments(dir, config, shard, local)?
    };
    let state_path = dir.join("trainer_state.json");
    let state = match std::fs::read_to_string(&state_path) {
        Ok(text) => Some(
            serde_json::from_str(&text)
                .map_err(|e| invalid(&state_path, format!("invalid JSON: {e}")))?,
        ),
        Err(_) => None,
    };
    Ok(Loaded {
        dir: dir.to_path_buf(),
        params,
        optimizer,
        state,
    })
}

/// Architecture fields that differ between a saved and the configured model.
pub fn architecture_diff(saved: &Qwen3Config, want: &Qwen3Config) -> Vec<String> {
    // The fields that decide the parameter layout and the numerics, rendered for comparison.
    let fields = |c: &Qwen3Config| -> [(&'static str, String); 10] {
        [
            ("vocab_size", c.vocab_size.to_string()),
            ("hidden_size", c.hidden_size.to_string()),
            ("intermediate_size", c.intermediate_size.to_string()),
            ("num_hidden_layers", c.num_hidden_layers.to_string()),
            ("num_attention_heads", c.num_attention_heads.to_string()),
            ("num_key_value_heads", c.num_key_value_heads.to_string()),
            ("head_dim", c.head_dim.to_string()),
            ("tie_word_embeddings", c.tie_word_embeddings.to_string()),
            ("rope_theta", c.rope_theta.to_string()),
            ("rms_norm_eps", c.rms_norm_eps.to_string()),
        ]
    };
    fields(saved)
        .into_iter()
        .zip(fields(want))
        .filter(|((_, a), (_, b))| a != b)
        .map(|((name, a), (_, b))| format!("{name} {a} in the checkpoint vs {b} in the config"))
        .collect()
}
