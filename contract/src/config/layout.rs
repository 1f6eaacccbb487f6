//! The parallel layout of a config: MindSpore Transformers' `parallel_config` sizes, whose
//! product is the number of worker processes the job needs.

use super::yaml::{Node, Value};
use super::{Error, Result};

/// `parallel_config.{data_parallel, model_parallel, pipeline_stage}` (each 1 when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParallelLayout {
    /// Data-parallel replicas.
    pub data_parallel: u64,
    /// Tensor-parallel ranks.
    pub model_parallel: u64,
    /// Pipeline stages.
    pub pipeline_stage: u64,
}

impl ParallelLayout {
    /// The layout of a loaded config tree (see [`super::load`]); `None` when the config sets
    /// none of the three sizes (the runtime then runs 1 × 1 × 1).
    pub fn of(tree: &Node) -> Result<Option<ParallelLayout>> {
        let section = tree.get("parallel_config");
        let keys = ["data_parallel", "model_parallel", "pipeline_stage"];
        if !keys
            .iter()
            .any(|k| section.and_then(|s| s.get(k)).is_some())
        {
            return Ok(None);
        }
        let size = |key: &str| -> Result<u64> {
            let Some(node) = section.and_then(|s| s.get(key)) else {
                return Ok(1);
            };
            match &node.value {
                Value::Int(v, _) if *v >= 1 => Ok(*v as u64),
                other => Err(Error::Schema {
                    at: node.origin.to_string(),
                    message: format!(
                        "parallel_config.{key}: expected a positive integer, found {}",
                        other.describe()
                    ),
                }),
            }
        };
        Ok(Some(ParallelLayout {
            data_parallel: size("data_parallel")?,
            model_parallel: size("model_parallel")?,
            pipeline_stage: size("pipeline_stage")?,
        }))
    }

    /// `data_parallel × model_parallel × pipeline_stage`, `None` when it overflows.
    pub fn world_size(&self) -> Option<u64> {
        self.data_parallel
            .checked_mul(self.model_parallel)?
            .checked_mul(self.pipeline_stage)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::{load, Files};

    /// Config files held in memory, as the operator sees a ConfigMap.
    struct Memory(HashMap<PathBuf, String>);

    impl Files for Memory {
        fn read(&self, path: &Path) -> Result<(PathBuf, String)> {
            match self.0.get(path) {
                Some(text) => Ok((path.to_path_buf(), text.clone())),
                None => Err(Error::Io {
                    path: path.to_path_buf(),
                    source: std::io::ErrorKind::NotFound.into(),
                }),
            }
        }
    }

    fn files(entries: &[(&str, &str)]) -> Memory {
        Memory(
            entries
                .iter()
                .map(|(p, t)| (PathBuf::from(p), t.to_string()))
                .collect(),
        )
    }

    fn layout(f: &Memory, overrides: &[&str]) -> Result<ParallelLayout> {
        let args: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let tree = load(Path::new("/c/config.yaml"), &args, f)?;
        Ok(ParallelLayout::of(&tree)?.expect("the tests set a layout"))
    }

    #[test]
    fn sizes_default_to_one_and_multiply() {
        let f = files(&[("/c/config.yaml", "seed: 1\n")]);
        let tree = load(Path::new("/c/config.yaml"), &[], &f).expect("valid");
        assert_eq!(ParallelLayout::of(&tree).expect("valid"), None);
        let f = files(&[("/c/config.yaml", "parallel_config: {pipeline_stage: 2}\n")]);
        assert_eq!(layout(&f, &[]).expect("valid").world_size(), Some(2));
        let f = files(&[(
            "/c/config.yaml",
            "parallel_config:\n  data_parallel: 2\n  model_parallel: 2\n  pipeline_stage: 3\n",
        )]);
        assert_eq!(layout(&f, &[]).expect("valid").world_size(), Some(12));
    }

    #[test]
    fn a_layout_set_in_a_parent_is_read() {
        let f = files(&[
            ("/c/config.yaml", "base_config: base.yaml\nseed: 3\n"),
            (
                "/c/base.yaml",
                "parallel_config: {data_parallel: 4, pipeline_stage: 2}\n",
            ),
        ]);
        let l = layout(&f, &[]).expect("valid");
        assert_eq!(
            (l.data_parallel, l.model_parallel, l.pipeline_stage),
            (4, 1, 2)
        );
    }

    #[test]
    fn both_override_forms_apply_and_the_last_wins() {
        let f = files(&[("/c/config.yaml", "parallel_config: {data_parallel: 4}\n")]);
        let l = layout(&f, &["--parallel_config.data_parallel", "2"]).expect("valid");
        assert_eq!(l.data_parallel, 2);
        let l = layout(
            &f,
            &[
                "--parallel_config.model_parallel=2",
                "--parallel_config.data_parallel=8",
                "--parallel_config.data_parallel",
                "1",
            ],
        )
        .expect("valid");
        assert_eq!((l.data_parallel, l.model_parallel), (1, 2));
    }

    #[test]
    fn bad_sizes_and_missing_parents_are_errors_that_say_where() {
        let f = files(&[("/c/config.yaml", "parallel_config:\n  data_parallel: 0\n")]);
        let e = layout(&f, &[]).expect_err("zero");
        assert!(
            e.to_string()
                .starts_with("/c/config.yaml:2:18: parallel_config.data_parallel"),
            "{e}"
        );
        let e = layout(&f, &["--parallel_config.data_parallel=two"]).expect_err("text");
        assert!(
            e.to_string()
                .contains("override --parallel_config.data_parallel"),
            "{e}"
        );
        let f = files(&[("/c/config.yaml", "base_config: /opt/base.yaml\n")]);
        assert!(matches!(layout(&f, &[]), Err(Error::Io { .. })));
    }

    #[test]
    fn overflowing_sizes_have_no_world_size() {
        let l = ParallelLayout {
            data_parallel: u64::MAX,
            model_parallel: 2,
            pipeline_stage: 1,
        };
        assert_eq!(l.world_size(), None);
    }
}
