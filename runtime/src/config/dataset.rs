//! `train_dataset`: MindFormers' `BlendedMegatronDatasetDataLoader` section, which becomes a
//! [`DataConfig`](crate::data::sampling::DataConfig) after validation.

use serde::{Deserialize, Serialize};

use super::schema::{default_true, minus_one, one};

/// `train_dataset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// The Megatron dataset description.
    pub data_loader: DataLoaderConfig,
    /// Tensors fed to the model, from `input_ids`, `labels`, `loss_mask`, `position_ids`,
    /// `attention_mask`.
    #[serde(default = "default_columns")]
    pub input_columns: Vec<String>,
    /// Ignored (MindFormers' mapping of columns to model arguments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub construct_args_key: Option<Vec<String>>,
    /// Data-loading threads.
    #[serde(default = "default_workers")]
    pub num_parallel_workers: u64,
    /// Ignored (MindSpore dataset multiprocessing).
    #[serde(default)]
    pub python_multiprocessing: bool,
    /// Drop the last incomplete global batch (only `true` is supported).
    #[serde(default = "default_true")]
    pub drop_remainder: bool,
    /// Ignored (NUMA binding of loader threads).
    #[serde(default)]
    pub numa_enable: bool,
    /// Batches prepared ahead of the training step.
    #[serde(default = "one")]
    pub prefetch_size: u64,
    /// Ignored (MindSpore dataset seed; sample order comes from `data_loader.config.seed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

fn default_columns() -> Vec<String> {
    ["input_ids", "labels", "loss_mask", "position_ids"]
        .map(String::from)
        .to_vec()
}
fn default_workers() -> u64 {
    8
}

/// `train_dataset.data_loader`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataLoaderConfig {
    /// `BlendedMegatronDatasetDataLoader` (the only one).
    #[serde(rename = "type")]
    pub kind: DataLoaderKind,
    /// `GPTDataset` (the only one).
    #[serde(default)]
    pub datasets_type: DatasetsType,
    /// Samples per split: `[train, valid, test]`.
    pub sizes: Vec<u64>,
    /// Megatron `GPTDatasetConfig` options.
    pub config: GptDataConfig,
}

/// `data_loader.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataLoaderKind {
    /// Megatron `.bin/.idx` datasets, blended and split as megatron-core does.
    BlendedMegatronDatasetDataLoader,
}

/// `data_loader.datasets_type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DatasetsType {
    /// Megatron's GPT dataset.
    #[default]
    GPTDataset,
}

/// `train_dataset.data_loader.config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptDataConfig {
    /// Seed of Megatron's document and sample shuffles.
    #[serde(default = "default_data_seed")]
    pub seed: u32,
    /// Split proportions, e.g. `"969, 30, 1"`.
    #[serde(default = "default_split")]
    pub split: String,
    /// Tokens per sample.
    pub seq_length: u64,
    /// Zero the loss where the label is `eod`.
    #[serde(default)]
    pub eod_mask_loss: bool,
    /// Restart position ids after each `eod`.
    #[serde(default)]
    pub reset_position_ids: bool,
    /// Return the attention mask with each sample.
    #[serde(default)]
    pub create_attention_mask: bool,
    /// No attention across `eod` (needs `create_attention_mask`).
    #[serde(default)]
    pub reset_attention_mask: bool,
    /// MindFormers' compressed EOD mask; only `false` is supported.
    #[serde(default)]
    pub create_compressed_eod_mask: bool,
    /// Ignored unless `create_compressed_eod_mask` (unsupported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eod_pad_length: Option<u64>,
    /// End-of-document token id.
    pub eod: i64,
    /// Padding token id (-1 = none).
    #[serde(default = "minus_one")]
    pub pad: i64,
    /// Prefix, or weight/prefix pairs such as `['0.3', a_text_document, '0.7', b_text_document]`.
    pub data_path: Vec<String>,
    /// Our addition (Megatron's `path_to_cache`): where index caches go; `''` = next to each
    /// dataset, `off` = rebuild in memory every run.
    #[serde(default)]
    pub path_to_cache: String,
}

fn default_data_seed() -> u32 {
    1234
}
fn default_split() -> String {
    "1, 0, 0".into()
}
