//! From a dataset description to the train/valid/test datasets, as megatron-core's
//! `BlendedMegatronDatasetBuilder(GPTDataset, sizes, ...).build()` does it.

use std::path::PathBuf;
use std::sync::Arc;

use super::blend::{
    normalize, parse_blend, parse_split, size_per_dataset, split_matrix, split_range,
    BlendedDataset, Split,
};
use super::cache;
use super::gpt_dataset::{build_indices, GptDataset, GptDatasetConfig, Sample};
use super::indexed::IndexedDataset;
use super::{Error, Result};

/// Megatron's default extra samples built per blended component (`mid_level_dataset_surplus`).
pub const MID_LEVEL_DATASET_SURPLUS: f64 = 0.005;

/// Everything needed to build the datasets of a training run.
#[derive(Debug, Clone)]
pub struct DataConfig {
    /// `data_path`: a prefix, several prefixes (blended by length, as megatron-core does), or
    /// weight/prefix pairs.
    pub data_path: Vec<String>,
    /// Split string such as `"969,30,1"`.
    pub split: String,
    /// Samples wanted per split (train, valid, test); `None` = one epoch of an unweighted
    /// dataset.
    pub sizes: [Option<usize>; 3],
    /// Sample shape options.
    pub gpt: GptDatasetConfig,
    /// Where index caches go; `None` = next to each dataset; see [`CacheMode`].
    pub cache: CacheMode,
}

/// Where to cache the built indices.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheMode {
    /// `<dataset dir>/cache/GPTDataset_indices`, as Megatron does by default.
    BesideData,
    /// One directory for all datasets (Megatron's `path_to_cache`).
    Dir(PathBuf),
    /// Always rebuild in memory.
    Off,
}

/// A top-level dataset of one split.
pub enum MegatronDataset {
    /// A single prefix without a weight.
    Gpt(GptDataset),
    /// A blend: weighted (also used for a single weighted prefix), or of several prefixes
    /// without weights, weighted by their lengths.
    Blended(BlendedDataset),
}

impl MegatronDataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            MegatronDataset::Gpt(d) => d.len(),
            MegatronDataset::Blended(d) => d.len(),
        }
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `i`.
    pub fn get(&self, i: usize) -> Result<Sample> {
        match self {
            MegatronDataset::Gpt(d) => d.get(i),
            MegatronDataset::Blended(d) => d.get(i),
        }
    }

    /// The prefix of the dataset that sample `i` comes from, and the sample's index there.
    pub fn source(&self, i: usize) -> Result<(&std::path::Path, usize)> {
        match self {
            MegatronDataset::Gpt(d) => Ok((d.prefix(), i)),
            MegatronDataset::Blended(b) => {
                let (d, s) = b.locate(i)?;
                Ok((b.part(d).prefix(), s))
            }
        }
    }
}

fn build_gpt(
    dataset: &Arc<IndexedDataset>,
    split: Split,
    documents: std::ops::Range<usize>,
    num_samples: Option<usize>,
    config: &DataConfig,
) -> Result<GptDataset> {
    let dir = match &config.cache {
        CacheMode::BesideData => Some(cache::default_dir(dataset.prefix())),
        CacheMode::Dir(d) => Some(d.clone()),
        CacheMode::Off => None,
    };
    let description = cache::description(dataset, split, &documents, num_samples, &config.gpt);
    let indices = cache::load_or_build(dir.as_deref(), &description, split, || {
        build_indices(dataset, &documents, num_samples, split, &config.gpt).map_err(|e| match e {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!(
                "{} ({} split, sequences {}..{}): {m}",
                dataset.prefix().display(),
                split.name(),
                documents.start,
                documents.end
            )),
            e => e,
        })
    })?;
    Ok(GptDataset::new(
        dataset.clone(),
        split,
        config.gpt.clone(),
        indices,
    ))
}

/// megatron-core's blend of several prefixes without weights (`--data-path A B`) for one
/// split: one epoch of each prefix's share, weighted by their lengths; `size` samples of it
/// (at most all of them), or every sample once when `size` is `None`. A prefix with no sample
/// in the split is an error, as megatron-core asserts every weight is positive.
fn unweighted_blend(
    datasets: &[Arc<IndexedDataset>],
    split: Split,
    bookends: (f64, f64),
    size: Option<usize>,
    config: &DataConfig,
) -> Result<BlendedDataset> {
    let mut parts = Vec::with_capacity(datasets.len());
    for ds in datasets {
        let range = split_range(bookends, ds.len());
        let gpt = build_gpt(ds, split, range.clone(), None, config)?;
        if gpt.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} ({} split, sequences {}..{}): not one sample of {} tokens in one epoch, so \
                 it cannot join an unweighted blend (megatron-core refuses it too); change \
                 `split` or `seq_length`, give the blend weights, or drop this prefix",
                ds.prefix().display(),
                split.name(),
                range.start,
                range.end,
                config.gpt.sequence_length
            )));
        }
        parts.push(gpt);
    }
    let lens: Vec<f64> = parts.iter().map(|p| p.len() as f64).collect();
    let total: usize = parts.iter().map(GptDataset::len).sum();
    match size {
        Some(size) => BlendedDataset::new(parts, &normalize(&lens), size.min(total)),
        None => BlendedDataset::exhaustive(parts),
    }
}

/// Checks that every token of every dataset of `config` is below `vocab`, before training
/// reads any: a dataset tokenized for another vocabulary is an error naming its `.bin`, the
/// sequence and the token, instead of a failure at whichever step first reads it.
pub fn check_vocabulary(config: &DataConfig, vocab: usize) -> Result<()> {
    for prefix in parse_blend(&config.data_path)?.prefixes {
        let ds = IndexedDataset::open(&prefix)?;
        if let Some((seq, id)) = ds.find_token_outside(vocab as u64)? {
            return Err(Error::Corrupt {
                path: PathBuf::from(format!("{}.bin", prefix.display())),
                reason: format!(
                    "token id {id} in sequence {seq} is not below the model's vocab_size \
                     {vocab}: the data was tokenized for another vocabulary; tokenize it with \
                     the model's tokenizer, or fix model.model_config.vocab_size"
                ),
            });
        }
    }
    Ok(())
}

/// Builds the train, valid and test datasets (`None` where the split string gives a split no
/// share).
pub fn build_datasets(config: &DataConfig) -> Result<[Option<MegatronDataset>; 3]> {
    let blend = parse_blend(&config.data_path)?;
    let matrix = split_matrix(parse_split(&config.split)?);
    let datasets = blend
        .prefixes
        .iter()
        .map(|p| IndexedDataset::open(p).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    let mut out: [Option<MegatronDataset>; 3] = [None, None, None];
    match &blend.weights {
        None if datasets.len() == 1 => {
            let ds = &datasets[0];
            for split in Split::ALL {
                if let Some(bookends) = matrix[split.index()] {
                    let range = split_range(bookends, ds.len());
                    let gpt = build_gpt(ds, split, range, config.sizes[split.index()], config)?;
                    out[split.index()] = Some(MegatronDataset::Gpt(gpt));
                }
            }
        }
        None => {
            for split in Split::ALL {
                if let Some(bookends) = matrix[split.index()] {
                    let size = config.sizes[split.index()];
                    let blended = unweighted_blend(&datasets, split, bookends, size, config)?;
                    out[split.index()] = Some(MegatronDataset::Blended(blended));
                }
            }
        }
        Some(weights) => {
            for split in Split::ALL {
                let Some(bookends) = matrix[split.index()] else {
                    continue;
                };
                let size = config.sizes[split.index()].ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "sizes: the {} split of a weighted blend needs a sample count",
                        split.name()
                    ))
                })?;
                let target = size_per_dataset(weights, size, 0.0);
                let buffer = size_per_dataset(weights, size, MID_LEVEL_DATASET_SURPLUS);
                let mut parts = Vec::with_capacity(datasets.len());
                for (ds, n) in datasets.iter().zip(buffer) {
                    let range = split_range(bookends, ds.len());
                    parts.push(build_gpt(ds, split, range, Some(n), config)?);
                }
                let blended = BlendedDataset::new(parts, weights, target.iter().sum())?;
                out[split.index()] = Some(MegatronDataset::Blended(blended));
            }
        }
    }
    Ok(out)
}
