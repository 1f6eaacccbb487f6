//! The config file as written: MindFormers' section and key names (config-conventions §1), every
//! section strict. Defaults are MindFormers' defaults; keys marked "ignored" are accepted so
//! MindFormers' files load unchanged, but this runtime does not act on them.

use serde::{Deserialize, Serialize};

use super::dataset::DatasetConfig;
use super::mindspore::{
    ContextConfig, DatasetTaskConfig, MonitorConfig, Opaque, ParallelContextConfig, RecomputeConfig,
};
use super::model::ModelSection;

/// A whole config file after `base_config` merging and overrides (not yet validated; see
/// [`Config::validate`](super::Config::validate)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Global seed (model init, dropout).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Root of logs, checkpoints and TensorBoard files.
    #[serde(default = "default_output_dir")]
    pub output_dir: String,
    /// Checkpoint to start from: `''` = none, `auto` = newest committed checkpoint under
    /// `output_dir/checkpoint` (none = fresh start), else a checkpoint directory.
    #[serde(default)]
    pub load_checkpoint: String,
    /// Format of `load_checkpoint`.
    #[serde(default)]
    pub load_ckpt_format: CheckpointFormat,
    /// Ignored (MindSpore strategy files for resharding).
    #[serde(default)]
    pub src_strategy_path_or_dir: String,
    /// Ignored (MindSpore checkpoint resharding).
    #[serde(default)]
    pub auto_trans_ckpt: bool,
    /// Ignored (MindSpore: save the parallel strategy and exit).
    #[serde(default)]
    pub only_save_strategy: bool,
    /// Restore step, optimizer state and data position too, not only weights.
    #[serde(default)]
    pub resume_training: bool,
    /// Our addition (HF Trainer's name): a run that starts at step 0 deletes the committed
    /// checkpoints already in its checkpoint directory instead of refusing to start.
    #[serde(default)]
    pub overwrite_output_dir: bool,
    /// Our addition: a directory holding `tokenizer.json` (and `tokenizer_config.json`), copied
    /// into every checkpoint so it loads with transformers' `from_pretrained`; `''` = none.
    #[serde(default)]
    pub tokenizer_dir: String,
    /// Multi-process run (launched by `pretrain launch` or the operator).
    #[serde(default)]
    pub use_parallel: bool,
    /// Only `train`.
    #[serde(default)]
    pub run_mode: RunMode,
    /// Ignored (MindFormers' legacy model implementations).
    #[serde(default)]
    pub use_legacy: bool,
    /// Trainer selection.
    #[serde(default)]
    pub trainer: TrainerConfig,
    /// Epochs and batch sizes.
    pub runner_config: RunnerConfig,
    /// The train-step wrapper: gradient clipping.
    #[serde(default)]
    pub runner_wrapper: RunnerWrapperConfig,
    /// AdamW hyper-parameters.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    pub lr_schedule: LrScheduleConfig,
    /// Training data.
    pub train_dataset: DatasetConfig,
    /// Ignored (MindFormers' dataset wrapper, usually an alias of `train_dataset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_dataset_task: Option<DatasetTaskConfig>,
    /// Ignored (MindSpore context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ContextConfig>,
    /// Parallel layout.
    #[serde(default)]
    pub parallel_config: ParallelConfig,
    /// Interleaved micro-batches per data-parallel step (only 1 is supported).
    #[serde(default = "one")]
    pub micro_batch_interleave_num: u64,
    /// Ignored (MindSpore auto-parallel context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<ParallelContextConfig>,
    /// Ignored (activation recomputation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recompute_config: Option<RecomputeConfig>,
    /// The model.
    pub model: ModelSection,
    /// Loss logging and checkpoint saving.
    #[serde(default)]
    pub callbacks: Vec<CallbackConfig>,
    /// TensorBoard event files (none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensorboard: Option<TensorboardConfig>,
    /// Kept, not acted on yet (training-state monitors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_config: Option<MonitorConfig>,
    /// Ignored (MindSpore profiler switch and options below).
    #[serde(default)]
    pub profile: bool,
    /// Ignored (profiler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_start_step: Option<u64>,
    /// Ignored (profiler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_stop_step: Option<u64>,
    /// Ignored (profiler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_start_profile: Option<bool>,
    /// Ignored (profiler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_communication: Option<bool>,
    /// Ignored (profiler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_memory: Option<bool>,
    /// Layer-wise learning-rate scaling; only `false` is supported.
    #[serde(default)]
    pub layer_scale: bool,
    /// Ignored unless `layer_scale` (which is unsupported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_decay: Option<f64>,
    /// Ignored (MindFormers scales the lr by global batch / this when set in some trainers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_scale_factor: Option<f64>,
}

fn default_seed() -> u64 {
    42
}
fn default_output_dir() -> String {
    "./output".into()
}
pub(super) fn one() -> u64 {
    1
}
pub(super) fn default_true() -> bool {
    true
}

/// `run_mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    /// Pretraining.
    #[default]
    Train,
}

/// Checkpoint file format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointFormat {
    /// Safetensors with HF tensor names (the only format this runtime writes).
    #[default]
    Safetensors,
    /// MindSpore's protobuf `.ckpt` (accepted in files, rejected by validation).
    Ckpt,
}

/// `trainer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainerConfig {
    /// `CausalLanguageModelingTrainer` (the only one).
    #[serde(rename = "type")]
    pub kind: String,
    /// Used as a label only (`Qwen3`).
    pub model_name: String,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            kind: "CausalLanguageModelingTrainer".into(),
            model_name: "Qwen3".into(),
        }
    }
}

/// `runner_config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// Passes over `train_dataset.data_loader.sizes[0]` samples.
    #[serde(default = "one")]
    pub epochs: u64,
    /// Our addition (Megatron's `train_iters`): stop after this many optimizer steps instead of
    /// `epochs` passes; 0 = use `epochs`.
    #[serde(default)]
    pub train_iters: u64,
    /// Micro-batch size per data-parallel rank.
    pub batch_size: u64,
    /// Micro-batches accumulated per optimizer step (without pipeline parallelism).
    #[serde(default = "one")]
    pub gradient_accumulation_steps: u64,
    /// Ignored (MindSpore data sinking).
    #[serde(default = "default_true")]
    pub sink_mode: bool,
    /// Ignored (MindSpore data sinking; steps per sink).
    #[serde(default = "one")]
    pub sink_size: u64,
}

/// `runner_wrapper`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunnerWrapperConfig {
    /// `MFTrainOneStepCell` (or `MFPipelineWithLossScaleCell`; both mean the same here).
    #[serde(rename = "type")]
    pub kind: String,
    /// Ignored (MindSpore loss scaling; bf16 training needs none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_sense: Option<Opaque>,
    /// Clip the global gradient norm to `max_grad_norm`.
    pub use_clip_grad: bool,
    /// Clipping threshold.
    pub max_grad_norm: f64,
    /// Skip the update of a step whose global gradient norm exceeds
    /// `global_norm_spike_threshold` (MindFormers' data skipping); stop after
    /// `monitor_config.global_norm_spike_count_threshold` such steps in a row.
    pub use_skip_data_by_global_norm: bool,
    /// Gradient-norm threshold of the data skipping.
    pub global_norm_spike_threshold: f64,
    /// Also skip a step whose loss exceeds this factor times the mean of the previous 20
    /// steps' losses (counted with the norm spikes); off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_spike_factor: Option<f64>,
}

impl Default for RunnerWrapperConfig {
    fn default() -> Self {
        RunnerWrapperConfig {
            kind: "MFTrainOneStepCell".into(),
            scale_sense: None,
            use_clip_grad: true,
            max_grad_norm: 1.0,
            use_skip_data_by_global_norm: false,
            global_norm_spike_threshold: 1.0,
            loss_spike_factor: None,
        }
    }
}

/// `optimizer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Only AdamW.
    #[serde(rename = "type")]
    pub kind: OptimizerKind,
    /// `[beta1, beta2]`.
    pub betas: Vec<f64>,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay (AdamW), applied to parameters not matched by `no_decay_params`.
    pub weight_decay: f64,
    /// Our addition: HF parameter-name patterns (`*` = any characters) exempt from weight
    /// decay; by default norm weights and biases.
    pub no_decay_params: Vec<String>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::AdamW,
            betas: vec![0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            no_decay_params: vec!["*norm.weight".into(), "*.bias".into()],
        }
    }
}

/// `optimizer.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizerKind {
    /// Adam with decoupled weight decay.
    AdamW,
}

/// `lr_schedule`, with the argument names of MindFormers' `mindformers/core/lr/lr_schedule.py`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrScheduleConfig {
    /// Schedule shape.
    #[serde(rename = "type")]
    pub kind: LrScheduleKind,
    /// Peak learning rate (reached at the end of warm-up).
    pub learning_rate: f64,
    /// Learning rate at step 0 of warm-up.
    #[serde(default)]
    pub warmup_lr_init: f64,
    /// Warm-up as a fraction of `total_steps` (exclusive with `warmup_steps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_ratio: Option<f64>,
    /// Warm-up steps (exclusive with `warmup_ratio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u64>,
    /// Steps the schedule spans; -1 = the training steps derived from the data.
    #[serde(default = "minus_one")]
    pub total_steps: i64,
    /// Floor of the cosine decay (`CosineWithWarmUpLR` only).
    #[serde(default)]
    pub lr_end: f64,
    /// Cosine waves over the decay (0.5 = half a cosine, `CosineWithWarmUpLR` only).
    #[serde(default = "half")]
    pub num_cycles: f64,
    /// Step after which the cosine schedule stays at `lr_end` (default `total_steps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decay_steps: Option<u64>,
}

pub(super) fn minus_one() -> i64 {
    -1
}
fn half() -> f64 {
    0.5
}

/// `lr_schedule.type`: MindFormers' class names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LrScheduleKind {
    /// Linear warm-up, then constant.
    ConstantWarmUpLR,
    /// Linear warm-up, then linear decay to 0 at `total_steps`.
    LinearWithWarmUpLR,
    /// Linear warm-up, then cosine decay to `lr_end`.
    CosineWithWarmUpLR,
}

/// `parallel_config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParallelConfig {
    /// Data-parallel replicas (dp).
    pub data_parallel: u64,
    /// Tensor-parallel ranks (tp).
    pub model_parallel: u64,
    /// Context-parallel ranks (cp); only 1 is supported.
    pub context_parallel: u64,
    /// Pipeline stages (pp).
    pub pipeline_stage: u64,
    /// Micro-batches per step with pipeline parallelism.
    pub micro_batch_num: u64,
    /// Sequence parallelism within tensor-parallel groups; ignored for now.
    pub use_seq_parallel: bool,
    /// Ignored (MindSpore: embedding sharded by data parallel).
    pub vocab_emb_dp: bool,
    /// Ignored (MindSpore gradient-fusion group size).
    pub gradient_aggregation_group: u64,
}

impl Default for ParallelConfig {
    fn default() -> Self {
        ParallelConfig {
            data_parallel: 1,
            model_parallel: 1,
            context_parallel: 1,
            pipeline_stage: 1,
            micro_batch_num: 1,
            use_seq_parallel: false,
            vocab_emb_dp: true,
            gradient_aggregation_group: 4,
        }
    }
}

/// One entry of `callbacks`. One flat struct for every callback type, so that every key is
/// checked against the file with its position; validation rejects keys that do not belong to
/// the entry's `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackConfig {
    /// Which callback.
    #[serde(rename = "type")]
    pub kind: CallbackKind,
    /// `MFLossMonitor`: log every N steps (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_print_times: Option<u64>,
    /// `CheckpointMonitor`: file-name prefix (default `qwen3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// `CheckpointMonitor`: save every N steps (the last step is always saved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_checkpoint_steps: Option<u64>,
    /// `CheckpointMonitor`: checkpoints kept (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_checkpoint_max: Option<u64>,
    /// `CheckpointMonitor`: ignored (MindSpore: gather shards before saving).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrated_save: Option<bool>,
    /// `CheckpointMonitor`: write checkpoints on a background thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_save: Option<bool>,
    /// `CheckpointMonitor`: file format (only safetensors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_format: Option<CheckpointFormat>,
    /// `CheckpointMonitor`: directory (default `<output_dir>/checkpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
}

/// `callbacks[].type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallbackKind {
    /// Per-step log line.
    MFLossMonitor,
    /// Periodic checkpoints.
    CheckpointMonitor,
}

/// `tensorboard`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorboardConfig {
    /// Event-file root; each rank writes `<dir>/rank_<id>/`. Default `<output_dir>/tensorboard`,
    /// so that moving `output_dir` (e.g. onto a job's volume) moves the event files with it.
    #[serde(default)]
    pub tensorboard_dir: Option<String>,
    /// Events buffered before a flush.
    #[serde(default = "default_queue")]
    pub tensorboard_queue_size: u64,
    /// Also log `loss-scale`.
    #[serde(default)]
    pub log_loss_scale_to_tensorboard: bool,
    /// Also log `iteration-time` and other timers.
    #[serde(default)]
    pub log_timers_to_tensorboard: bool,
}

fn default_queue() -> u64 {
    10
}
