//! The on-disk cache of GPT sample indices, as Megatron keeps it: files named
//! `<md5>-GPTDataset-<split>-{description.txt,document_index.npy,sample_index.npy,shuffle_index.npy}`
//! where `<md5>` hashes the JSON description of everything the indices depend on. A matching
//! cache entry is loaded instead of rebuilding; a damaged one is rebuilt with a warning; a cache
//! directory that cannot be written only costs the rebuild next time.

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use serde_json::json;

use super::blend::Split;
use super::gpt_dataset::{GptDatasetConfig, GptIndices};
use super::indexed::IndexedDataset;
use super::npy;
use super::Result;

/// The identity of one GPT dataset split: what its indices depend on.
pub fn description(
    dataset: &IndexedDataset,
    split: Split,
    documents: &std::ops::Range<usize>,
    num_samples: Option<usize>,
    config: &GptDatasetConfig,
) -> String {
    let value = json!({
        "class": "GPTDataset",
        "dataset_path": dataset.prefix().display().to_string(),
        "sequence_count": dataset.len(),
        "num_tokens": dataset.num_tokens(),
        "index_split": split.name(),
        "documents": [documents.start, documents.end],
        "num_samples": num_samples,
        "random_seed": config.random_seed,
        "sequence_length": config.sequence_length,
        "add_extra_token_to_sequence": config.add_extra_token_to_sequence,
        "drop_last_partial_validation_sequence": config.drop_last_partial_validation_sequence,
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// The default cache directory of a dataset: `<dir of prefix>/cache/GPTDataset_indices`.
pub fn default_dir(prefix: &Path) -> PathBuf {
    prefix
        .parent()
        .unwrap_or(Path::new("."))
        .join("cache")
        .join("GPTDataset_indices")
}

fn paths(dir: &Path, description: &str, split: Split) -> [PathBuf; 4] {
    let hash = format!("{:x}", Md5::digest(description.as_bytes()));
    let stem = format!("{hash}-GPTDataset-{}", split.name());
    [
        dir.join(format!("{stem}-description.txt")),
        dir.join(format!("{stem}-document_index.npy")),
        dir.join(format!("{stem}-sample_index.npy")),
        dir.join(format!("{stem}-shuffle_index.npy")),
    ]
}

fn load(files: &[PathBuf; 4], description: &str) -> Result<Option<GptIndices>> {
    match std::fs::read_to_string(&files[0]) {
        Ok(d) if d == description => {}
        _ => return Ok(None),
    }
    let (document_index, _) = npy::read::<i32>(&files[1])?;
    let sample_index = match npy::read::<i32>(&files[2]) {
        Ok((v, _)) => v.into_iter().map(i64::from).collect(),
        Err(_) => npy::read::<i64>(&files[2])?.0,
    };
    let (shuffle_index, _) = npy::read::<u32>(&files[3])?;
    Ok(Some(GptIndices {
        document_index,
        sample_index,
        shuffle_index,
    }))
}

fn store(dir: &Path, files: &[PathBuf; 4], description: &str, idx: &GptIndices) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| super::Error::io(dir, e))?;
    npy::write(&files[1], &idx.document_index, &[idx.document_index.len()])?;
    let rows = idx.sample_index.len() / 2;
    let fits_i32 = idx.sample_index.iter().all(|&v| v <= i32::MAX as i64);
    if fits_i32 {
        let narrow: Vec<i32> = idx.sample_index.iter().map(|&v| v as i32).collect();
        npy::write(&files[2], &narrow, &[rows, 2])?;
    } else {
        npy::write(&files[2], &idx.sample_index, &[rows, 2])?;
    }
    npy::write(&files[3], &idx.shuffle_index, &[idx.shuffle_index.len()])?;
    // The description goes last: its presence marks a complete entry.
    let tmp = files[0].with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, description).map_err(|e| super::Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &files[0]).map_err(|e| super::Error::io(&files[0], e))
}

/// Loads the indices described by `description` from `dir`, or builds and stores them.
pub fn load_or_build(
    dir: Option<&Path>,
    description: &str,
    split: Split,
    build: impl FnOnce() -> Result<GptIndices>,
) -> Result<GptIndices> {
    let Some(dir) = dir else {
        return build();
    };
    let files = paths(dir, description, split);
    match load(&files, description) {
        Ok(Some(idx)) => {
            tracing::debug!(dir = %dir.display(), split = split.name(), "loaded cached indices");
            return Ok(idx);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("ignoring a damaged index cache entry: {e}"),
    }
    let idx = build()?;
    if let Err(e) = store(dir, &files, description, &idx) {
        tracing::warn!("could not write the index cache (indices are rebuilt next time): {e}");
    }
    Ok(idx)
}
