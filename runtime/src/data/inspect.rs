//! `pretrain inspect-data`: what a dataset holds, so a user can check it before training.

use std::fmt;
use std::sync::Arc;

use super::gpt_dataset::{build_indices, GptDataset, GptDatasetConfig};
use super::indexed::IndexedDataset;
use super::{blend, DType, Result};

/// Length statistics of an indexed dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetStats {
    /// Token dtype.
    pub dtype: DType,
    /// Sequences.
    pub sequences: usize,
    /// Documents.
    pub documents: usize,
    /// Tokens.
    pub tokens: u64,
    /// Shortest sequence.
    pub min_length: usize,
    /// Longest sequence.
    pub max_length: usize,
    /// Mean sequence length.
    pub mean_length: f64,
    /// Median sequence length.
    pub median_length: usize,
    /// 99th-percentile sequence length.
    pub p99_length: usize,
    /// Largest token id.
    pub max_token: i64,
    /// Smallest token id.
    pub min_token: i64,
}

/// Computes [`DatasetStats`] (reads every token once for the id range).
pub fn stats(ds: &IndexedDataset) -> Result<DatasetStats> {
    let mut lengths = ds.sequence_lengths();
    lengths.sort_unstable();
    let pick = |q: f64| -> usize {
        if lengths.is_empty() {
            0
        } else {
            lengths[((lengths.len() - 1) as f64 * q).round() as usize] as usize
        }
    };
    let (mut min_token, mut max_token) = (i64::MAX, i64::MIN);
    for i in 0..ds.len() {
        for t in ds.get(i, 0, None)?.iter() {
            min_token = min_token.min(t);
            max_token = max_token.max(t);
        }
    }
    let tokens = ds.num_tokens();
    Ok(DatasetStats {
        dtype: ds.dtype(),
        sequences: ds.len(),
        documents: ds.document_count(),
        tokens,
        min_length: lengths.first().copied().unwrap_or(0) as usize,
        max_length: lengths.last().copied().unwrap_or(0) as usize,
        mean_length: tokens as f64 / ds.len().max(1) as f64,
        median_length: pick(0.5),
        p99_length: pick(0.99),
        max_token: if ds.is_empty() { 0 } else { max_token },
        min_token: if ds.is_empty() { 0 } else { min_token },
    })
}

impl fmt::Display for DatasetStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "dtype:      {} (code {})",
            self.dtype.name(),
            self.dtype.code()
        )?;
        writeln!(f, "documents:  {}", self.documents)?;
        writeln!(f, "sequences:  {}", self.sequences)?;
        writeln!(f, "tokens:     {}", self.tokens)?;
        writeln!(
            f,
            "length:     min {} / median {} / mean {:.1} / p99 {} / max {}",
            self.min_length, self.median_length, self.mean_length, self.p99_length, self.max_length
        )?;
        write!(f, "token ids:  {} ..= {}", self.min_token, self.max_token)
    }
}

/// The GPT sample `index` of the train split, built (without cache) as training would.
pub fn train_sample_tokens(
    ds: Arc<IndexedDataset>,
    split: &str,
    num_samples: usize,
    config: &GptDatasetConfig,
    index: usize,
) -> Result<Vec<i64>> {
    let matrix = blend::split_matrix(blend::parse_split(split)?);
    let bookends = matrix[0].ok_or_else(|| {
        super::Error::InvalidArgument(format!("split `{split}` gives the train split no share"))
    })?;
    let range = blend::split_range(bookends, ds.len());
    let indices = build_indices(
        &ds,
        &range,
        Some(num_samples.max(index + 1)),
        blend::Split::Train,
        config,
    )?;
    let gpt = GptDataset::new(ds, blend::Split::Train, config.clone(), indices);
    let mut text = Vec::new();
    gpt.text(index, &mut text)?;
    Ok(text)
}
