//! The training config: MindSpore Transformers' YAML layout (config-conventions §1), read
//! strictly, with `base_config` parents and dotted command-line overrides, then validated once
//! into a [`TrainPlan`].
//!
//! Module map:
//! - [`schema`]: [`Config`], the file as written (every section strict, MindFormers' names).
//! - [`dataset`]: `train_dataset` (Megatron data description).
//! - [`model`]: `model.model_config` and [`Qwen3Config`], the HF `config.json` it resolves to.
//! - [`mindspore`]: MindSpore-only sections that are accepted, kept and ignored.
//! - [`plan`]: [`TrainPlan`], the validated config with derived values.
//! - `validate/`: [`Config::validate`], every cross-key check, once (`model` and `training`
//!   beside the orchestration).
//! - `de`: the strict deserializer of the YAML tree. The tree itself, `base_config` merging and
//!   `--a.b.c value` overrides are the contract crate's (`pretrain_contract::config`), which the
//!   operator reads the parallel layout with.
//!
//! Pipeline: file (+ parents) → YAML tree → overrides applied → strict deserialization →
//! [`Config`] → [`Config::validate`] → [`TrainPlan`]. Errors name the file, line and column (or
//! the override) and the dotted key, and suggest the closest valid key for typos.
//!
//! Ignored MindSpore-specific keys (accepted, kept in the resolved config, not acted on):
//! `context`, `parallel`, `recompute_config`, `train_dataset_task`, `monitor_config`, the
//! `profile*` keys, `src_strategy_path_or_dir`, `auto_trans_ckpt`, `only_save_strategy`,
//! `use_legacy`, `runner_config.sink_mode/sink_size`, `runner_wrapper.scale_sense`,
//! `parallel_config.vocab_emb_dp/gradient_aggregation_group`, `train_dataset`'s
//! `construct_args_key/python_multiprocessing/numa_enable/seed`, and the model's
//! `use_cache/use_flash_attention/input_sliced_sig/qkv_concat/use_contiguous_weight_layout_attention`.

pub mod dataset;
mod de;
pub mod mindspore;
pub mod model;
pub mod plan;
pub mod schema;
mod validate;

use std::path::Path;

pub use model::{Precision, Qwen3Config};
pub use plan::TrainPlan;
use pretrain_contract::config::{self as source, yaml};
pub use pretrain_contract::config::{parse_overrides, Override, ParallelLayout};
pub use schema::Config;

/// Errors of loading and validating a config. Messages name the file and position (or the
/// override) and the dotted key, and say how to fix the problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be read, is not YAML, has a bad `base_config`, or a malformed override.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// A key or value that does not fit the schema: unknown key (with suggestion), wrong type,
    /// missing required key.
    #[error("{at}: {message}")]
    Schema {
        /// `file:line:col`, or `override --a.b`.
        at: String,
        /// The dotted key and what is wrong.
        message: String,
    },
    /// Values that are well-typed but inconsistent or unsupported (found by
    /// [`Config::validate`]).
    #[error("{keys}: {message}")]
    Invalid {
        /// The dotted key(s) involved.
        keys: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code: every config error is one the same job would hit again.
    pub fn exit_code(&self) -> i32 {
        crate::exit::CONFIG_INVALID
    }
}

/// Loads `path` (and its `base_config` parents), applies the dotted overrides given as raw argv
/// tokens (`--a.b v` / `--a.b=v`, the tokens after `--config <file>`), and deserializes strictly.
/// The result is not validated yet; call [`Config::validate`].
pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
    let tree = source::load(path, overrides, &source::Disk)?;
    de::from_node(&tree)
}

impl Config {
    /// Parses a config from YAML text (no `base_config`, no overrides); `name` labels errors.
    pub fn from_yaml_str(text: &str, name: &str) -> Result<Config> {
        let tree = yaml::parse(text, name)?;
        de::from_node(&tree)
    }

    /// The resolved config as YAML (logged once at start and stored with every checkpoint);
    /// [`Config::from_yaml_str`] reads it back to an equal config.
    pub fn to_yaml(&self) -> String {
        // Serde → JSON text keeps the field order; JSON is YAML, so the YAML reader turns it
        // into a tree that the block emitter writes out.
        let json = serde_json::to_string(self).expect("a Config always serializes to JSON");
        let tree = yaml::parse(&json, "<json>").expect("JSON text is valid YAML");
        yaml::emit(&tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The example configs, sorted.
    fn example_configs() -> Vec<PathBuf> {
        let mut names: Vec<_> = std::fs::read_dir(configs_dir())
            .expect("configs/qwen3 exists")
            .map(|e| e.expect("readable dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        names.sort();
        names
    }

    /// Directory of the example configs, relative to this crate.
    fn configs_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/qwen3")
    }

    fn example(name: &str) -> PathBuf {
        configs_dir().join(name)
    }

    fn strings(tokens: &[&str]) -> Vec<String> {
        tokens.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn every_example_config_loads_validates_and_round_trips() {
        let names = example_configs();
        assert!(names.len() >= 3, "{names:?}");
        for path in names {
            let config = load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            config
                .validate()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let again = Config::from_yaml_str(&config.to_yaml(), "resolved")
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), config.to_yaml()));
            assert_eq!(config, again, "{}", path.display());
        }
    }

    /// The contract's layout reader (which the operator checks pods against) reads every
    /// example as the runtime's validation does, with overrides in either form.
    #[test]
    fn the_contract_reads_the_layout_the_runtime_validates() {
        let names = example_configs();
        let overrides: [&[&str]; 3] = [
            &[],
            &["--parallel_config.data_parallel", "1"],
            &[
                "--parallel_config.pipeline_stage=1",
                "--parallel_config.model_parallel=1",
            ],
        ];
        for path in names {
            for o in overrides {
                let args: Vec<String> = o.iter().map(|s| s.to_string()).collect();
                let tree = source::load(&path, &args, &source::Disk).expect("loads");
                let layout = ParallelLayout::of(&tree)
                    .expect("valid")
                    .unwrap_or(ParallelLayout {
                        data_parallel: 1,
                        model_parallel: 1,
                        pipeline_stage: 1,
                    });
                let Ok(plan) = load(&path, &args).and_then(|c| c.validate()) else {
                    continue; // a layout the example's model cannot take
                };
                let ours = (plan.dp_size, plan.tp_size, plan.pp_size);
                let theirs = (
                    layout.data_parallel as usize,
                    layout.model_parallel as usize,
                    layout.pipeline_stage as usize,
                );
                assert_eq!(ours, theirs, "{} {o:?}", path.display());
                assert_eq!(layout.world_size(), Some(plan.world_size as u64));
            }
        }
    }

    #[test]
    fn qwen3_32b_matches_mindformers_numbers() {
        let plan = load(&example("pretrain_qwen3_32b_4k.yaml"), &[])
            .and_then(|c| c.validate())
            .expect("valid");
        assert_eq!(plan.world_size, 16);
        assert_eq!(plan.global_batch_size, 4);
        assert_eq!(plan.steps_per_epoch, 2000);
        assert_eq!(plan.train_steps, 4000);
        assert_eq!(plan.layers_per_stage, [15, 15, 17, 17]);
        assert_eq!(plan.model.head_dim, 128);
        assert!(!plan.model.tie_word_embeddings);
    }

    #[test]
    fn qwen3_0_6b_is_tied() {
        let plan = load(&example("pretrain_qwen3_0_6b_4k.yaml"), &[])
            .and_then(|c| c.validate())
            .expect("valid");
        assert!(plan.model.tie_word_embeddings);
        assert_eq!(plan.model.num_hidden_layers, 28);
    }

    #[test]
    fn overrides_are_applied_after_the_file() {
        let args = strings(&[
            "--optimizer.weight_decay",
            "0.1",
            "--lr_schedule.learning_rate=3e-4",
            "--train_dataset.data_loader.config.data_path=['0.5', a=b, '0.5', c]",
            "--optimizer.betas",
            "[0.8, 0.9]",
            "--callbacks.1.save_checkpoint_steps",
            "7",
        ]);
        let config = load(&example("qwen3_tiny.yaml"), &args).expect("valid overrides");
        assert_eq!(config.optimizer.weight_decay, 0.1);
        assert_eq!(config.lr_schedule.learning_rate, 3e-4);
        assert_eq!(config.optimizer.betas, [0.8, 0.9]);
        assert_eq!(
            config.train_dataset.data_loader.config.data_path,
            ["0.5", "a=b", "0.5", "c"]
        );
        assert_eq!(config.callbacks[1].save_checkpoint_steps, Some(7));
    }

    #[test]
    fn override_of_an_unknown_key_suggests_the_right_one() {
        let e = load(
            &example("qwen3_tiny.yaml"),
            &strings(&["--optimizer.weight_decy", "0.1"]),
        )
        .expect_err("typo");
        assert_eq!(
            e.to_string(),
            "override --optimizer.weight_decy: unknown key optimizer.weight_decy; did you mean \
             optimizer.weight_decay?"
        );
    }

    #[test]
    fn override_with_the_wrong_type_is_an_error() {
        let e = load(
            &example("qwen3_tiny.yaml"),
            &strings(&["--runner_config.batch_size=8.0"]),
        )
        .expect_err("float for int");
        assert_eq!(
            e.to_string(),
            "override --runner_config.batch_size: runner_config.batch_size: expected a \
             non-negative integer (u64), found float `8.0`"
        );
        let e = load(&example("qwen3_tiny.yaml"), &strings(&["--seed"])).expect_err("dangling");
        assert!(e.to_string().contains("--seed has no value"), "{e}");
    }

    #[test]
    fn unknown_key_in_a_file_names_file_position_and_suggestion() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.yaml");
        let text = std::fs::read_to_string(example("qwen3_tiny.yaml")).expect("readable")
            + "optimzer:\n  type: AdamW\n";
        std::fs::write(&path, &text).expect("write");
        let e = load(&path, &[]).expect_err("typo");
        let line = text.lines().count() - 1;
        assert_eq!(
            e.to_string(),
            format!(
                "{}:{line}:1: unknown key optimzer; did you mean optimizer?",
                path.display()
            )
        );
    }

    #[test]
    fn base_config_children_override_parents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("child.yaml");
        let parent = example("qwen3_tiny.yaml");
        std::fs::write(
            &path,
            format!(
                "base_config: {}\nrunner_config:\n  batch_size: 4\nseed: 7\n",
                parent.display()
            ),
        )
        .expect("write");
        let child = load(&path, &[]).expect("valid");
        let base = load(&parent, &[]).expect("valid");
        assert_eq!(child.seed, 7);
        assert_eq!(child.runner_config.batch_size, 4);
        assert_eq!(child.runner_config.epochs, base.runner_config.epochs);
        assert_eq!(child.model, base.model);
    }

    #[test]
    fn floats_stay_floats_through_a_round_trip() {
        let config = load(
            &example("qwen3_tiny.yaml"),
            &strings(&["--runner_wrapper.max_grad_norm=1.0"]),
        )
        .expect("valid");
        let yaml = config.to_yaml();
        assert!(yaml.contains("max_grad_norm: 1.0\n"), "{yaml}");
        assert_eq!(
            Config::from_yaml_str(&yaml, "again").expect("valid"),
            config
        );
    }
}
