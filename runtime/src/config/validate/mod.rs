//! [`Config::validate`]: every cross-key check, once, producing a [`TrainPlan`]. This file holds
//! the orchestration, the parallel-layout and the data checks; `model` (the model and its
//! pipeline split) and `training` (optimizer, schedule, health, callbacks) hold the rest.

use std::path::{Path, PathBuf};

use crate::config::plan::{LaunchSettings, LoadCheckpoint, TensorboardPlan, TrainPlan};
use crate::config::schema::{CheckpointFormat, Config};
use crate::config::{Error, Result};
use crate::data::gpt_dataset::GptDatasetConfig;
use crate::data::sampling::{CacheMode, DataConfig};
use model::{check_layers, check_recompute};

mod model;
mod training;

pub(super) fn invalid(keys: &str, message: impl Into<String>) -> Error {
    Error::Invalid {
        keys: keys.into(),
        message: message.into(),
    }
}

/// Fails with `invalid(keys, message())` unless `ok`.
pub(super) fn ensure(ok: bool, keys: &str, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(invalid(keys, message()))
    }
}

pub(super) fn to_usize(v: u64) -> usize {
    usize::try_from(v).expect("config values fit in usize on 64-bit hosts")
}

impl Config {
    /// Checks the whole config once and derives the training plan. Errors name the key(s) and
    /// the fix.
    pub fn validate(&self) -> Result<TrainPlan> {
        self.validate_for(&LaunchSettings::default())
    }

    /// [`Config::validate`] with a supervisor's settings applied: the plan is final.
    pub fn validate_for(&self, launch: &LaunchSettings) -> Result<TrainPlan> {
        self.check_trainer()?;
        let (dp, tp, pp, world, mbn) = self.check_parallel()?;
        let r = &self.runner_config;
        let micro_batches = self.check_runner(pp, mbn)?;
        let global_batch = r.batch_size * micro_batches * dp;
        let data = self.check_data(global_batch)?;
        let steps_per_epoch = self.train_dataset.data_loader.sizes[0] / global_batch;
        let train_steps = if r.train_iters > 0 {
            r.train_iters
        } else {
            steps_per_epoch * r.epochs
        };
        let model = self.check_model(tp, data.gpt.sequence_length)?;
        let layers_per_stage = check_layers(&self.model.model_config, pp)?;
        let recompute_layers = check_recompute(self.recompute_config.as_ref(), &layers_per_stage)?;
        let optimizer = self.check_optimizer()?;
        let lr_schedule = self.check_lr(train_steps)?;
        let max_grad_norm = self.check_clip()?;
        let health = self.check_health()?;
        let (log_every_steps, checkpoint) = self.check_callbacks()?;
        let tensorboard = self.check_tensorboard()?;
        let ds = &self.train_dataset;
        ensure(
            ds.num_parallel_workers >= 1,
            "train_dataset.num_parallel_workers",
            || "must be at least 1".into(),
        )?;
        let load_checkpoint = match self.load_checkpoint.as_str() {
            "" if launch.resume => LoadCheckpoint::Auto,
            "" => LoadCheckpoint::None,
            "auto" => LoadCheckpoint::Auto,
            p => LoadCheckpoint::Path(PathBuf::from(p)),
        };
        let mc = &self.model.model_config;
        Ok(TrainPlan {
            seed: self.seed,
            output_dir: PathBuf::from(&self.output_dir),
            checkpoint_root: launch
                .checkpoint_dir
                .clone()
                .unwrap_or_else(|| self.checkpoint_root()),
            load_checkpoint,
            resume_training: self.resume_training || launch.resume,
            overwrite_output_dir: self.overwrite_output_dir,
            tokenizer_dir: (!self.tokenizer_dir.is_empty())
                .then(|| PathBuf::from(&self.tokenizer_dir)),
            world_size: to_usize(world),
            dp_size: to_usize(dp),
            tp_size: to_usize(tp),
            pp_size: to_usize(pp),
            sequence_parallel: self.parallel_config.use_seq_parallel,
            health,
            zero1: matches!(
                self.parallel
                    .as_ref()
                    .and_then(|p| p.enable_parallel_optimizer.as_ref()),
                Some(super::mindspore::Opaque::Bool(true))
            ),
            micro_batch_size: to_usize(r.batch_size),
            micro_batches_per_step: to_usize(micro_batches),
            global_batch_size: to_usize(global_batch),
            seq_length: data.gpt.sequence_length,
            epochs: r.epochs,
            steps_per_epoch,
            train_steps,
            layers_per_stage,
            recompute_layers,
            optimizer,
            lr_schedule,
            max_grad_norm,
            data,
            num_workers: to_usize(ds.num_parallel_workers),
            prefetch_batches: to_usize(ds.prefetch_size),
            input_columns: ds.input_columns.clone(),
            model,
            params_dtype: mc.params_dtype,
            compute_dtype: mc.compute_dtype,
            fp32_residual: mc.fp32_residual_connection,
            log_every_steps,
            checkpoint,
            tensorboard,
        })
    }

    /// The trainer, checkpoint format and output keys.
    fn check_trainer(&self) -> Result<()> {
        ensure(
            self.trainer.kind == "CausalLanguageModelingTrainer",
            "trainer.type",
            || {
                format!(
                    "`{}` is not supported; use CausalLanguageModelingTrainer",
                    self.trainer.kind
                )
            },
        )?;
        ensure(
            self.load_ckpt_format == CheckpointFormat::Safetensors,
            "load_ckpt_format",
            || {
                "only safetensors checkpoints can be loaded; convert MindSpore .ckpt files first"
                    .into()
            },
        )?;
        ensure(!self.layer_scale, "layer_scale", || {
            "layer-wise lr scaling is not supported; set layer_scale: False".into()
        })?;
        ensure(!self.output_dir.is_empty(), "output_dir", || {
            "is empty; give a directory for logs and checkpoints such as ./output".into()
        })
    }

    /// `runner_config`; returns the micro-batches per step: `micro_batch_num` with pipeline
    /// stages (`mbn`), else `gradient_accumulation_steps`.
    fn check_runner(&self, pp: u64, mbn: u64) -> Result<u64> {
        let r = &self.runner_config;
        ensure(r.batch_size >= 1, "runner_config.batch_size", || {
            "must be at least 1".into()
        })?;
        ensure(r.epochs >= 1, "runner_config.epochs", || {
            "must be at least 1".into()
        })?;
        ensure(
            r.gradient_accumulation_steps >= 1,
            "runner_config.gradient_accumulation_steps",
            || "must be at least 1".into(),
        )?;
        if pp == 1 {
            return Ok(r.gradient_accumulation_steps);
        }
        ensure(
            r.gradient_accumulation_steps == 1,
            "runner_config.gradient_accumulation_steps, parallel_config.micro_batch_num",
            || {
                "with pipeline_stage > 1 the micro-batches per step come from \
                 micro_batch_num; set gradient_accumulation_steps: 1"
                    .into()
            },
        )?;
        Ok(mbn)
    }

    /// `runner_wrapper`: the gradient-norm clip, if any.
    fn check_clip(&self) -> Result<Option<f64>> {
        let w = &self.runner_wrapper;
        ensure(
            !w.use_clip_grad || (w.max_grad_norm > 0.0 && w.max_grad_norm.is_finite()),
            "runner_wrapper.max_grad_norm",
            || {
                format!(
                    "{} must be a positive number (or set use_clip_grad: False)",
                    w.max_grad_norm
                )
            },
        )?;
        Ok(w.use_clip_grad.then_some(w.max_grad_norm))
    }

    /// `tensorboard`: event files under `tensorboard_dir`, by default `<output_dir>/tensorboard`.
    fn check_tensorboard(&self) -> Result<Option<TensorboardPlan>> {
        let Some(t) = &self.tensorboard else {
            return Ok(None);
        };
        ensure(
            t.tensorboard_queue_size >= 1,
            "tensorboard.tensorboard_queue_size",
            || "must be at least 1".into(),
        )?;
        Ok(Some(TensorboardPlan {
            dir: t.tensorboard_dir.as_ref().map_or_else(
                || Path::new(&self.output_dir).join("tensorboard"),
                PathBuf::from,
            ),
            queue_size: to_usize(t.tensorboard_queue_size),
            log_loss_scale: t.log_loss_scale_to_tensorboard,
            log_timers: t.log_timers_to_tensorboard,
        }))
    }

    /// Returns (dp, tp, pp, world size, micro_batch_num).
    fn check_parallel(&self) -> Result<(u64, u64, u64, u64, u64)> {
        let p = &self.parallel_config;
        for (key, v) in [
            ("parallel_config.data_parallel", p.data_parallel),
            ("parallel_config.model_parallel", p.model_parallel),
            ("parallel_config.pipeline_stage", p.pipeline_stage),
            ("parallel_config.micro_batch_num", p.micro_batch_num),
        ] {
            ensure(v >= 1, key, || "must be at least 1".into())?;
        }
        ensure(
            p.context_parallel == 1,
            "parallel_config.context_parallel",
            || "context parallelism is not supported yet; set it to 1".into(),
        )?;
        ensure(
            self.micro_batch_interleave_num == 1,
            "micro_batch_interleave_num",
            || "interleaved micro-batches are not supported; set it to 1".into(),
        )?;
        if p.pipeline_stage > 1 {
            ensure(
                p.micro_batch_num >= p.pipeline_stage,
                "parallel_config.micro_batch_num, parallel_config.pipeline_stage",
                || {
                    format!(
                        "micro_batch_num {} is less than pipeline_stage {}: some stages would \
                         idle every step; set micro_batch_num >= pipeline_stage (4x is a good \
                         start)",
                        p.micro_batch_num, p.pipeline_stage
                    )
                },
            )?;
        }
        let world = p.data_parallel * p.model_parallel * p.pipeline_stage;
        Ok((
            p.data_parallel,
            p.model_parallel,
            p.pipeline_stage,
            world,
            p.micro_batch_num,
        ))
    }

    /// `train_dataset`: the Megatron data description, sized for the global batch.
    fn check_data(&self, global_batch: u64) -> Result<DataConfig> {
        let ds = &self.train_dataset;
        let dl = &ds.data_loader;
        let c = &dl.config;
        let sizes: [u64; 3] = dl.sizes.as_slice().try_into().map_err(|_| {
            invalid(
                "train_dataset.data_loader.sizes",
                format!(
                    "expected [train, valid, test] sample counts, got {} values",
                    dl.sizes.len()
                ),
            )
        })?;
        ensure(
            sizes[0] >= global_batch,
            "train_dataset.data_loader.sizes",
            || {
                format!(
                    "sizes[0] = {} train samples is less than one global batch of {global_batch} \
                 (batch_size x micro-batches x data_parallel); raise sizes[0]",
                    sizes[0]
                )
            },
        )?;
        let key = "train_dataset.data_loader.config.data_path";
        ensure(!c.data_path.is_empty(), key, || {
            "is empty; give a dataset prefix such as ['1', 'data/wiki_text_document']".into()
        })?;
        ensure(
            c.data_path.iter().all(|p| !p.trim().is_empty()),
            key,
            || "holds an empty entry; remove it".into(),
        )?;
        ensure(
            c.seq_length >= 1,
            "train_dataset.data_loader.config.seq_length",
            || "must be at least 1".into(),
        )?;
        let vocab = self.model.model_config.vocab_size as i64;
        ensure(
            (0..vocab).contains(&c.eod),
            "train_dataset.data_loader.config.eod",
            || {
                format!(
                    "eod {} is outside the vocabulary 0..{vocab} (model.model_config.vocab_size)",
                    c.eod
                )
            },
        )?;
        ensure(
            c.pad < vocab && c.pad >= -1,
            "train_dataset.data_loader.config.pad",
            || {
                format!(
                    "pad {} must be -1 (none) or a token id below vocab_size {vocab}",
                    c.pad
                )
            },
        )?;
        ensure(
            !c.create_compressed_eod_mask,
            "train_dataset.data_loader.config.create_compressed_eod_mask",
            || "is not supported; use reset_attention_mask with create_attention_mask".into(),
        )?;
        ensure(ds.drop_remainder, "train_dataset.drop_remainder", || {
            "only True is supported (every step needs a full global batch)".into()
        })?;
        check_input_columns(&ds.input_columns, c.create_attention_mask)?;
        let cache = match c.path_to_cache.as_str() {
            "" => CacheMode::BesideData,
            "off" => CacheMode::Off,
            dir => CacheMode::Dir(PathBuf::from(dir)),
        };
        Ok(DataConfig {
            data_path: c.data_path.clone(),
            split: c.split.clone(),
            sizes: sizes.map(|s| Some(to_usize(s))),
            gpt: GptDatasetConfig {
                sequence_length: to_usize(c.seq_length),
                random_seed: c.seed,
                eod: c.eod,
                pad: c.pad,
                eod_mask_loss: c.eod_mask_loss,
                reset_position_ids: c.reset_position_ids,
                reset_attention_mask: c.reset_attention_mask,
                create_attention_mask: c.create_attention_mask,
                ..GptDatasetConfig::default()
            },
            cache,
        })
    }
}

/// `train_dataset.input_columns`: known names, ids and labels included, a mask only when created.
fn check_input_columns(columns: &[String], create_attention_mask: bool) -> Result<()> {
    const COLUMNS: [&str; 5] = [
        "input_ids",
        "labels",
        "loss_mask",
        "position_ids",
        "attention_mask",
    ];
    for column in columns {
        ensure(
            COLUMNS.contains(&column.as_str()),
            "train_dataset.input_columns",
            || {
                format!(
                    "unknown column `{column}`; choose from {}",
                    COLUMNS.join(", ")
                )
            },
        )?;
    }
    for needed in ["input_ids", "labels"] {
        ensure(
            columns.iter().any(|c| c == needed),
            "train_dataset.input_columns",
            || format!("must include {needed}"),
        )?;
    }
    let wants_mask = columns.iter().any(|c| c == "attention_mask");
    ensure(
        !wants_mask || create_attention_mask,
        "train_dataset.input_columns, train_dataset.data_loader.config.create_attention_mask",
        || "attention_mask is listed but not created; set create_attention_mask: True".into(),
    )?;
    Ok(())
}

/// Shared test helpers for the validation tests.
#[cfg(test)]
pub(super) mod fixtures {
    use std::path::Path;

    use crate::config::{Error, Result, TrainPlan};

    /// The tiny example config with `overrides` applied, validated.
    pub fn tiny(overrides: &[&str]) -> Result<TrainPlan> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/qwen3/qwen3_tiny.yaml");
        let args: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        crate::config::load(&path, &args)?.validate()
    }

    /// Asserts that validation fails naming `keys`, with `words` in the message.
    pub fn rejects(overrides: &[&str], keys: &str, words: &str) {
        match tiny(overrides) {
            Err(Error::Invalid { keys: k, message }) => {
                assert!(k.contains(keys), "{overrides:?}: keys {k}: {message}");
                assert!(message.contains(words), "{overrides:?}: {message}");
            }
            other => panic!("{overrides:?}: expected a validation error, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{rejects, tiny};

    #[test]
    fn global_batch_uses_micro_batch_num_only_with_pipelines() {
        let plan = tiny(&[
            "--parallel_config.data_parallel=2",
            "--runner_config.gradient_accumulation_steps=3",
        ])
        .expect("valid");
        assert_eq!((plan.world_size, plan.global_batch_size), (2, 48));
        let plan = tiny(&[
            "--parallel_config.pipeline_stage=2",
            "--parallel_config.micro_batch_num=4",
        ])
        .expect("valid");
        assert_eq!((plan.world_size, plan.global_batch_size), (2, 32));
        assert_eq!(plan.layers_per_stage, [1, 1]);
    }

    /// Event files follow `output_dir` unless placed explicitly (a job that moves its output
    /// onto a volume must not leave them in the working directory).
    #[test]
    fn tensorboard_dir_defaults_under_output_dir() {
        let dir = |o: &[&str]| tiny(o).expect("valid").tensorboard.expect("tb").dir;
        assert_eq!(
            dir(&["--output_dir=/ckpt/run"]),
            std::path::Path::new("/ckpt/run/tensorboard")
        );
        assert_eq!(
            dir(&[
                "--output_dir=/ckpt/run",
                "--tensorboard.tensorboard_dir=/tb"
            ]),
            std::path::Path::new("/tb")
        );
    }

    #[test]
    fn parallel_layout_errors() {
        rejects(
            &["--parallel_config.model_parallel=4"],
            "num_key_value_heads",
            "divisible by model_parallel (4)",
        );
        rejects(
            &[
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=1",
            ],
            "micro_batch_num",
            "less than pipeline_stage",
        );
        rejects(
            &[
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=2",
                "--runner_config.gradient_accumulation_steps=2",
            ],
            "gradient_accumulation_steps",
            "micro_batch_num",
        );
        rejects(
            &[
                "--parallel_config.pipeline_stage=3",
                "--parallel_config.micro_batch_num=3",
            ],
            "num_hidden_layers",
            "make the offsets sum to 2",
        );
        rejects(
            &[
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=2",
                "--model.model_config.offset=[1]",
            ],
            "offset",
            "one per stage",
        );
        rejects(
            &[
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=2",
                "--model.model_config.offset=[-1, 1]",
            ],
            "offset",
            "at least 1",
        );
        rejects(
            &["--model.model_config.offset=1"],
            "offset",
            "single offset",
        );
        rejects(
            &["--parallel_config.data_parallel=0"],
            "parallel_config.data_parallel",
            "at least 1",
        );
        rejects(
            &["--parallel_config.context_parallel=2"],
            "context_parallel",
            "not supported",
        );
        rejects(
            &["--micro_batch_interleave_num=2"],
            "micro_batch_interleave_num",
            "not supported",
        );
    }

    #[test]
    fn data_errors() {
        rejects(
            &["--train_dataset.data_loader.config.data_path=[]"],
            "data_path",
            "is empty",
        );
        rejects(
            &["--train_dataset.data_loader.sizes=[4, 0, 0]"],
            "sizes",
            "less than one global batch",
        );
        rejects(
            &["--train_dataset.data_loader.sizes=[1600]"],
            "sizes",
            "got 1 values",
        );
        rejects(
            &["--train_dataset.data_loader.config.eod=151936"],
            "eod",
            "outside the vocabulary",
        );
        rejects(
            &["--train_dataset.input_columns=[input_ids, labels, attention_mask]"],
            "create_attention_mask",
            "not created",
        );
        rejects(
            &["--train_dataset.input_columns=[input_ids, lables]"],
            "input_columns",
            "unknown column",
        );
        rejects(&["--output_dir="], "output_dir", "is empty");
        rejects(
            &["--train_dataset.drop_remainder=False"],
            "drop_remainder",
            "only True",
        );
    }
}
