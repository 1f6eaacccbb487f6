//! `pretrain`: a runtime for pretraining Qwen3-class language models.
//!
//! The runtime knows nothing of Kubernetes: its inputs are a config file, dotted overrides,
//! the launch-contract environment and data/checkpoint paths; its outputs are logs, metrics,
//! checkpoints and an exit code (see `ARCHITECTURE.md`).
//!
//! Module map:
//! - [`checkpoint`]: HF-loadable safetensors checkpoints with optimizer and trainer state,
//!   committed atomically.
//! - [`config`]: the training YAML (MindSpore Transformers' shape), strict, with dotted
//!   overrides, validated once into a `TrainPlan`.
//! - [`data`]: Megatron `.bin/.idx` datasets, preprocessing, GPT sample building and blending.
//! - [`metrics`]: TensorBoard event files and JSONL metrics.
//! - [`model`]: the Qwen3 model: config, HF-named parameters, forward/backward ops.
//! - [`optim`]: AdamW and gradient clipping.
//! - [`train`]: the training loop.
//! - [`tensor`]: GEMM entry point and deterministic initialisation.
//! - [`dist`]: rendezvous store and collectives between processes.
//! - [`parallel`]: the data/tensor/pipeline layout, its groups and the 1F1B schedule.
//! - [`launch`]: `pretrain launch` (workers of one node).
//! - [`exit`]: process exit codes (the contract crate's). Each error type knows its own code
//!   (`exit_code()`); the binary alone reads the environment, handles signals and exits.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dist;
pub mod launch;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod parallel;
pub mod tensor;
pub mod train;

/// Process exit codes: the contract crate's, which launchers and the operator share.
pub use pretrain_contract::exit;
