//! Reading config files: `base_config` parents merged first (child keys override parent keys,
//! mappings merged deeply, lists and scalars replaced), as MindFormers' `MindFormerConfig` does.

use std::path::{Path, PathBuf};

use super::yaml::{self, Node, Value};
use super::{Error, Files, Result};

/// The key naming parent files; removed from the merged tree.
const BASE_CONFIG: &str = "base_config";

/// Reads `path` and its `base_config` ancestors from `files` into one merged tree.
pub(crate) fn load_tree(path: &Path, files: &dyn Files) -> Result<Node> {
    load_with_chain(path, files, &mut Vec::new())
}

fn load_with_chain(path: &Path, files: &dyn Files, chain: &mut Vec<PathBuf>) -> Result<Node> {
    let (canonical, text) = files.read(path)?;
    if chain.contains(&canonical) {
        return Err(Error::BaseConfig {
            file: path.to_path_buf(),
            message: "base_config chain loops back to this file; remove the cycle".into(),
        });
    }
    let mut node = yaml::parse(&text, &path.display().to_string())?;
    if node.value == Value::Null {
        node.value = Value::Map(Vec::new());
    }
    let Value::Map(entries) = &mut node.value else {
        return Err(Error::Schema {
            at: node.origin.to_string(),
            message: "a config file must be a mapping of sections (`key: value` lines)".into(),
        });
    };
    let Some(i) = entries.iter().position(|e| e.key == BASE_CONFIG) else {
        return Ok(node);
    };
    let base = entries.remove(i).node;
    let parents = match base.value {
        Value::Null => Vec::new(),
        Value::Str(p) => vec![p],
        Value::Seq(items) => items
            .into_iter()
            .map(|item| match item.value {
                Value::Str(p) => Ok(p),
                other => Err(base_type_error(&item.origin, &other)),
            })
            .collect::<Result<_>>()?,
        other => return Err(base_type_error(&base.origin, &other)),
    };
    chain.push(canonical);
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut merged: Option<Node> = None;
    for parent in parents {
        let tree = load_with_chain(&dir.join(parent), files, chain)?;
        merged = Some(match merged {
            None => tree,
            Some(mut m) => {
                merge(&mut m, tree);
                m
            }
        });
    }
    chain.pop();
    Ok(match merged {
        None => node,
        Some(mut m) => {
            merge(&mut m, node);
            m
        }
    })
}

fn base_type_error(origin: &yaml::Origin, found: &Value) -> Error {
    Error::Schema {
        at: origin.to_string(),
        message: format!(
            "base_config: expected a path or a list of paths (relative to this file), found {}",
            found.describe()
        ),
    }
}

/// Merges `child` into `base`: mappings key by key (recursively), anything else replaced.
pub(crate) fn merge(base: &mut Node, child: Node) {
    match (&mut base.value, child.value) {
        (Value::Map(base_entries), Value::Map(child_entries)) => {
            for entry in child_entries {
                match base_entries.iter_mut().find(|e| e.key == entry.key) {
                    Some(existing) => merge(&mut existing.node, entry.node),
                    None => base_entries.push(entry),
                }
            }
        }
        (_, value) => {
            *base = Node {
                value,
                origin: child.origin,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Disk;
    use std::fs;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).expect("write test file");
        path
    }

    #[test]
    fn parents_merge_first_and_children_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a.yaml", "x: {p: 1, q: [1, 2]}\ny: 1\n");
        write(dir.path(), "b.yaml", "x: {p: 2}\nz: 3\n");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        let child = write(
            &dir.path().join("sub"),
            "c.yaml",
            "base_config: ['../a.yaml', '../b.yaml']\nx: {q: [3]}\ny: 5\n",
        );
        let tree = load_tree(&child, &Disk).expect("loads");
        let expected = yaml::parse("x: {p: 2, q: [3]}\ny: 5\nz: 3\n", "e").expect("valid");
        assert_eq!(yaml::emit(&tree), yaml::emit(&expected));
        // Each value remembers which file set it.
        let p = tree.get("x").and_then(|x| x.get("p")).expect("present");
        assert!(p.origin.source.ends_with("b.yaml"), "{:?}", p.origin);
    }

    #[test]
    fn base_config_cycles_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write(dir.path(), "a.yaml", "base_config: b.yaml\n");
        write(dir.path(), "b.yaml", "base_config: a.yaml\n");
        let e = load_tree(&a, &Disk).expect_err("cycle");
        assert!(e.to_string().contains("loops back"), "{e}");
        let c = write(dir.path(), "c.yaml", "base_config: nope.yaml\n");
        let e = load_tree(&c, &Disk).expect_err("missing parent");
        assert!(e.to_string().contains("nope.yaml"), "{e}");
    }
}
