//! [`TrainPlan`]: a validated config with its derived values (world size, global batch, steps,
//! layer split, data and model configs), produced by [`Config::validate`](super::Config::validate).

use std::path::PathBuf;

use super::model::{Precision, Qwen3Config};
use super::schema::LrScheduleKind;
use crate::data::sampling::DataConfig;

/// A validated config with its derived values; what the training loop reads.
#[derive(Debug, Clone)]
pub struct TrainPlan {
    /// Global seed.
    pub seed: u64,
    /// Root of logs, checkpoints and event files.
    pub output_dir: PathBuf,
    /// What to load at start.
    pub load_checkpoint: LoadCheckpoint,
    /// Restore optimizer state, step and data position, not only weights.
    pub resume_training: bool,
    /// A run from step 0 deletes the checkpoints already in `checkpoint_root`.
    pub overwrite_output_dir: bool,
    /// Tokenizer files to copy into checkpoints.
    pub tokenizer_dir: Option<PathBuf>,
    /// dp × tp × pp.
    pub world_size: usize,
    /// Data-parallel replicas.
    pub dp_size: usize,
    /// Tensor-parallel ranks.
    pub tp_size: usize,
    /// Pipeline stages.
    pub pp_size: usize,
    /// ZeRO-1: shard the optimizer state over data-parallel replicas
    /// (`parallel.enable_parallel_optimizer`).
    pub zero1: bool,
    /// Sequence parallelism within tensor-parallel groups.
    pub sequence_parallel: bool,
    /// Samples per micro-batch per data-parallel rank (`runner_config.batch_size`).
    pub micro_batch_size: usize,
    /// Micro-batches per optimizer step: `gradient_accumulation_steps` (pp = 1) or
    /// `micro_batch_num` (pp > 1).
    pub micro_batches_per_step: usize,
    /// Samples per optimizer step over all replicas.
    pub global_batch_size: usize,
    /// Tokens per sample (S).
    pub seq_length: usize,
    /// `runner_config.epochs`.
    pub epochs: u64,
    /// `sizes[0] / global_batch_size`.
    pub steps_per_epoch: u64,
    /// Optimizer steps of the run: epochs × steps per epoch.
    pub train_steps: u64,
    /// Decoder layers held by each pipeline stage.
    pub layers_per_stage: Vec<usize>,
    /// Layers recomputed in the backward, per pipeline stage (the first ones of the stage):
    /// `recompute_config.recompute`.
    pub recompute_layers: Vec<usize>,
    /// AdamW hyper-parameters.
    pub optimizer: AdamWPlan,
    /// Learning rate per step.
    pub lr_schedule: LrSchedule,
    /// Steps to skip (loss or gradient-norm spikes), if any check is on.
    pub health: HealthPlan,
    /// Global-norm clipping threshold, if clipping is on.
    pub max_grad_norm: Option<f64>,
    /// The datasets to build.
    pub data: DataConfig,
    /// Data-loading threads.
    pub num_workers: usize,
    /// Batches prepared ahead.
    pub prefetch_batches: usize,
    /// Tensors fed to the model.
    pub input_columns: Vec<String>,
    /// The architecture (HF `config.json`).
    pub model: Qwen3Config,
    /// Master-weight dtype.
    pub params_dtype: Precision,
    /// Matmul dtype.
    pub compute_dtype: Precision,
    /// Keep the residual stream in f32.
    pub fp32_residual: bool,
    /// Log a step line every N steps.
    pub log_every_steps: u64,
    /// Periodic checkpoints, if a `CheckpointMonitor` is configured.
    pub checkpoint: Option<CheckpointPlan>,
    /// Where checkpoints are saved and `load_checkpoint: auto` / a resume looks: the
    /// `CheckpointMonitor`'s `directory`, else `<output_dir>/checkpoint`; the launch contract's
    /// `PRETRAIN_CHECKPOINT_DIR` replaces it.
    pub checkpoint_root: PathBuf,
    /// TensorBoard output, if configured.
    pub tensorboard: Option<TensorboardPlan>,
}

/// Spike checks: a step whose gradient norm or loss spikes is skipped (no update, its data
/// consumed), and training stops after `max_in_a_row` such steps in a row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthPlan {
    /// Skip when the global gradient norm exceeds this.
    pub norm_threshold: Option<f64>,
    /// Skip when the loss exceeds this factor times the mean of the previous 20 losses.
    pub loss_spike_factor: Option<f64>,
    /// Consecutive skipped steps that stop training.
    pub max_in_a_row: u64,
}

impl HealthPlan {
    /// Why a step with this loss and gradient norm should be skipped, given earlier losses.
    pub fn spike(&self, loss: f32, norm: f32, recent: &[f32]) -> Option<String> {
        if let Some(t) = self.norm_threshold {
            if norm as f64 > t {
                return Some(format!(
                    "gradient norm {norm:.4} exceeds global_norm_spike_threshold {t}"
                ));
            }
        }
        if let Some(f) = self.loss_spike_factor {
            let window = &recent[recent.len().saturating_sub(20)..];
            if window.len() >= 5 {
                let mean = window.iter().map(|&l| l as f64).sum::<f64>() / window.len() as f64;
                if loss as f64 > f * mean {
                    return Some(format!(
                        "loss {loss:.4} exceeds loss_spike_factor {f} x the recent mean {mean:.4}"
                    ));
                }
            }
        }
        None
    }
}

/// What a supervisor (the launcher, the operator) decides on top of the config, given to
/// [`Config::validate_for`](super::Config::validate_for) so that the plan it returns is final.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchSettings {
    /// Resume from the newest committed checkpoint, or start fresh when there is none
    /// (`PRETRAIN_RESUME`: a restarted gang). Sets `resume_training`, and `load_checkpoint:
    /// auto` unless the config names a checkpoint.
    pub resume: bool,
    /// The checkpoint directory, in place of the config's, for saving and resuming
    /// (`PRETRAIN_CHECKPOINT_DIR`: the operator's checkpoint volume).
    pub checkpoint_dir: Option<PathBuf>,
}

/// `load_checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadCheckpoint {
    /// Start from random init.
    None,
    /// The newest committed checkpoint under the checkpoint directory; none = fresh start.
    Auto,
    /// This checkpoint directory.
    Path(PathBuf),
}

/// AdamW settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamWPlan {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Parameter-name patterns exempt from weight decay (`*` = any characters).
    pub no_decay_params: Vec<String>,
}

impl AdamWPlan {
    /// Whether the parameter called `name` (HF name) gets weight decay.
    pub fn decays(&self, name: &str) -> bool {
        !self.no_decay_params.iter().any(|p| wildcard_match(p, name))
    }
}

/// Matches `text` against `pattern`, where `*` stands for any (possibly empty) run of characters.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// MindFormers' learning-rate schedules (`mindformers/core/lr/lr_schedule.py`), resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    /// Shape.
    pub kind: LrScheduleKind,
    /// Peak rate.
    pub learning_rate: f64,
    /// Rate at step 0.
    pub warmup_lr_init: f64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Steps the schedule spans.
    pub total_steps: u64,
    /// Cosine floor.
    pub lr_end: f64,
    /// Cosine waves.
    pub num_cycles: f64,
    /// Cosine: from this step on the rate is `lr_end`.
    pub decay_steps: u64,
}

impl LrSchedule {
    /// The learning rate at 0-based optimizer step `step`, as MindFormers computes it.
    pub fn lr_at(&self, step: u64) -> f64 {
        let s = step as f64;
        if step < self.warmup_steps {
            let percent = s / self.warmup_steps as f64;
            return self.warmup_lr_init + (self.learning_rate - self.warmup_lr_init) * percent;
        }
        let after = (self.total_steps.saturating_sub(self.warmup_steps)).max(1) as f64;
        match self.kind {
            LrScheduleKind::ConstantWarmUpLR => self.learning_rate,
            LrScheduleKind::LinearWithWarmUpLR => {
                self.learning_rate * ((self.total_steps as f64 - s) / after).max(0.0)
            }
            LrScheduleKind::CosineWithWarmUpLR => {
                if step >= self.decay_steps {
                    return self.lr_end;
                }
                let progress = (s - self.warmup_steps as f64) / after;
                let angle = std::f64::consts::PI * self.num_cycles * 2.0 * progress;
                let percent = (0.5 * (1.0 + angle.cos())).max(0.0);
                self.lr_end + (self.learning_rate - self.lr_end) * percent
            }
        }
    }
}

/// Periodic checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointPlan {
    /// File-name prefix.
    pub prefix: String,
    /// Save every N steps (and at the last step).
    pub every_steps: u64,
    /// Checkpoints kept.
    pub keep_max: usize,
    /// Save on a background thread.
    pub async_save: bool,
    /// `checkpoint_format: ckpt`: also write the weights as a MindSpore `.ckpt` file.
    pub mindspore_ckpt: bool,
}

/// TensorBoard output.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorboardPlan {
    /// Event-file root.
    pub dir: PathBuf,
    /// Events buffered before a flush.
    pub queue_size: usize,
    /// Log `loss-scale`.
    pub log_loss_scale: bool,
    /// Log timers.
    pub log_timers: bool,
}

#[cfg(test)]
mod tests {
    use super::super::validate::fixtures::tiny;
    use super::*;

    #[test]
    fn tiny_plan_has_the_documented_numbers() {
        let plan = tiny(&[]).expect("valid");
        assert_eq!((plan.world_size, plan.global_batch_size), (1, 8));
        assert_eq!((plan.steps_per_epoch, plan.train_steps), (200, 200));
        assert_eq!(plan.lr_schedule.total_steps, 200);
        assert_eq!(plan.data.sizes, [Some(1600), Some(0), Some(0)]);
        assert_eq!(plan.data.gpt.eod, 151645);
        assert_eq!(
            plan.data.cache,
            crate::data::sampling::CacheMode::BesideData
        );
        assert_eq!(plan.checkpoint.as_ref().map(|c| c.every_steps), Some(100));
        assert_eq!(plan.log_every_steps, 10);
        assert_eq!(plan.max_grad_norm, Some(1.0));
        assert_eq!(plan.load_checkpoint, LoadCheckpoint::None);
    }

    #[test]
    fn schedules_follow_mindformers() {
        let plan = tiny(&[]).expect("valid");
        let lr = &plan.lr_schedule;
        assert_eq!(lr.lr_at(0), 0.0);
        assert!((lr.lr_at(10) - 5e-4).abs() < 1e-12);
        assert_eq!(lr.lr_at(20), 1e-3);
        assert!((lr.lr_at(110) - 5.5e-4).abs() < 1e-12, "{}", lr.lr_at(110));
        assert_eq!(lr.lr_at(200), 1e-4);
        let linear = LrSchedule {
            kind: LrScheduleKind::LinearWithWarmUpLR,
            lr_end: 0.0,
            ..lr.clone()
        };
        assert!((linear.lr_at(110) - 5e-4).abs() < 1e-12);
        let constant = LrSchedule {
            kind: LrScheduleKind::ConstantWarmUpLR,
            ..linear
        };
        assert_eq!(constant.lr_at(199), 1e-3);
        let plan = tiny(&[
            "--lr_schedule.warmup_steps=null",
            "--lr_schedule.warmup_ratio=0.1",
        ])
        .expect("valid");
        assert_eq!(plan.lr_schedule.warmup_steps, 20);
    }

    #[test]
    fn no_decay_patterns_match_norms_and_biases() {
        let plan = tiny(&[]).expect("valid");
        let o = &plan.optimizer;
        assert!(!o.decays("model.norm.weight"));
        assert!(!o.decays("model.layers.0.self_attn.q_norm.weight"));
        assert!(!o.decays("model.layers.0.input_layernorm.weight"));
        assert!(!o.decays("model.layers.0.self_attn.q_proj.bias"));
        assert!(o.decays("model.layers.0.mlp.up_proj.weight"));
        assert!(o.decays("model.embed_tokens.weight"));
        assert!(wildcard_match("a*b*c", "aXbYc") && !wildcard_match("a*b*c", "aXbY"));
        assert!(wildcard_match("exact", "exact") && !wildcard_match("exact", "exactly"));
    }

    #[test]
    fn qwen3_config_serializes_as_hf_config_json() {
        let plan = tiny(&[]).expect("valid");
        let json = plan.model.to_hf_json();
        assert_eq!(json["architectures"][0], "Qwen3ForCausalLM");
        assert_eq!(json["model_type"], "qwen3");
        assert_eq!(json["torch_dtype"], "float32");
        assert_eq!(json["head_dim"], 16);
        assert_eq!(json["tie_word_embeddings"], true);
        assert_eq!(json["hidden_act"], "silu");
        assert!(json["rope_scaling"].is_null());
    }

    #[test]
    fn load_checkpoint_modes() {
        assert_eq!(
            tiny(&["--load_checkpoint=auto"])
                .expect("valid")
                .load_checkpoint,
            LoadCheckpoint::Auto
        );
        assert_eq!(
            tiny(&["--load_checkpoint", "out/ckpt"])
                .expect("valid")
                .load_checkpoint,
            LoadCheckpoint::Path("out/ckpt".into())
        );
    }

    #[test]
    fn spike_checks() {
        let h = HealthPlan {
            norm_threshold: Some(2.0),
            loss_spike_factor: Some(3.0),
            max_in_a_row: 10,
        };
        let why = h.spike(1.0, 2.5, &[]).expect("norm spike");
        assert!(why.contains("gradient norm 2.5000 exceeds"), "{why}");
        assert!(
            h.spike(9.0, 1.0, &[1.0; 4]).is_none(),
            "fewer than 5 earlier losses"
        );
        let why = h.spike(3.5, 1.0, &[1.0; 5]).expect("loss spike");
        assert!(
            why.contains("loss 3.5000 exceeds loss_spike_factor 3"),
            "{why}"
        );
        assert!(h.spike(2.9, 1.0, &[1.0; 30]).is_none());
        assert!(HealthPlan::default().spike(1e9, 1e9, &[1.0; 30]).is_none());
    }
}
