//! Dotted command-line overrides, `--a.b.c value` or `--a.b.c=value`, as MindFormers'
//! `run_mindformer.py` pairs them up, minus its quirks (config-conventions §2): the value is
//! split on the first `=` only, parsed as a YAML scalar or flow collection (so `[1, 2]` is a
//! list and `1.0` a float), and type-checked by the same strict deserialization as the file, so a
//! typo in a key is an error with a suggestion rather than a silently added key.

use std::sync::Arc;

use super::yaml::{self, Entry, Node, Origin, Value};
use super::{Error, Result};

/// One `--key value` pair from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// Dotted key, e.g. `optimizer.weight_decay`; a number selects a list item
    /// (`callbacks.1.save_checkpoint_steps`).
    pub key: String,
    /// The value as typed.
    pub value: String,
}

/// Pairs up raw argv tokens (`--k v` or `--k=v`, repeatable).
pub fn parse_overrides(args: &[String]) -> Result<Vec<Override>> {
    let mut out = Vec::new();
    let mut tokens = args.iter();
    while let Some(token) = tokens.next() {
        let Some(body) = token.strip_prefix("--") else {
            return Err(Error::Override(format!(
                "unexpected argument `{token}`; overrides look like --section.key value or \
                 --section.key=value"
            )));
        };
        let (key, value) = match body.split_once('=') {
            Some((key, value)) => (key, value.to_string()),
            None => match tokens.next() {
                Some(value) if !value.starts_with("--") => (body, value.clone()),
                _ => {
                    return Err(Error::Override(format!(
                        "--{body} has no value; write --{body} VALUE or --{body}=VALUE"
                    )))
                }
            },
        };
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(Error::Override(format!(
                "`{token}`: the key must be dotted words such as optimizer.weight_decay"
            )));
        }
        out.push(Override {
            key: key.to_string(),
            value,
        });
    }
    Ok(out)
}

/// The runtime's argv tokens for overrides as a manifest lists them: `key=value` and
/// `--key=value` items, or `--key` (or `key`) followed by its value as the next item. Bare keys
/// get their `--`; values stay as written.
pub fn override_args(items: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(items.len());
    let mut value_next = false;
    for item in items {
        if value_next {
            out.push(item.clone());
            value_next = false;
            continue;
        }
        let body = item.strip_prefix("--").unwrap_or(item);
        value_next = !body.contains('=');
        out.push(format!("--{body}"));
    }
    out
}

/// Applies one override to the merged tree. Missing intermediate mappings are created (the strict
/// deserialization later rejects unknown keys with a suggestion).
pub fn apply(root: &mut Node, o: &Override) -> Result<()> {
    let source: Arc<str> = format!("override --{}", o.key).into();
    let origin = Origin { source, pos: None };
    let value = parse_value(&o.value, &origin)?;
    let mut node = root;
    let mut walked = String::new();
    for segment in o.key.split('.') {
        let here = node.origin.clone();
        node = match &mut node.value {
            Value::Map(entries) => {
                let i = match entries.iter().position(|e| e.key == segment) {
                    Some(i) => i,
                    None => {
                        entries.push(Entry {
                            key: segment.to_string(),
                            at: origin.clone(),
                            node: Node {
                                value: Value::Map(Vec::new()),
                                origin: origin.clone(),
                            },
                        });
                        entries.len() - 1
                    }
                };
                &mut entries[i].node
            }
            Value::Seq(items) => {
                let len = items.len();
                match segment.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    Some(item) => item,
                    None => {
                        return Err(Error::Override(format!(
                            "--{}: {walked} is a list of {len} items (set at {here}); select an \
                             item with an index 0..{len}",
                            o.key
                        )))
                    }
                }
            }
            other => {
                return Err(Error::Override(format!(
                    "--{}: {walked} is {} (set at {here}), not a section with keys",
                    o.key,
                    other.describe()
                )))
            }
        };
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(segment);
    }
    *node = value;
    Ok(())
}

/// Parses an override value as a one-line YAML document; an empty value is the empty string.
fn parse_value(text: &str, origin: &Origin) -> Result<Node> {
    if text.is_empty() {
        return Ok(Node {
            value: Value::Str(String::new()),
            origin: origin.clone(),
        });
    }
    let mut node = yaml::parse(text, &origin.source).map_err(|e| {
        Error::Override(format!("{e}; quote the value if it is meant as plain text"))
    })?;
    strip_positions(&mut node);
    Ok(node)
}

/// Positions within a one-line override are noise; the key is named instead.
fn strip_positions(node: &mut Node) {
    node.origin.pos = None;
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(strip_positions),
        Value::Map(entries) => entries.iter_mut().for_each(|e| {
            e.at.pos = None;
            strip_positions(&mut e.node)
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(tokens: &[&str]) -> Vec<String> {
        tokens.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn manifest_items_become_argv_tokens() {
        let items = args(&["a.b=1", "--c.d=2", "--e.f", "x=y", "g.h", "-3", "i.j=--k"]);
        let tokens = override_args(&items);
        assert_eq!(
            tokens,
            args(&[
                "--a.b=1",
                "--c.d=2",
                "--e.f",
                "x=y",
                "--g.h",
                "-3",
                "--i.j=--k"
            ])
        );
        let parsed = parse_overrides(&tokens).expect("valid");
        let pairs: Vec<_> = parsed
            .iter()
            .map(|o| (o.key.as_str(), o.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("a.b", "1"),
                ("c.d", "2"),
                ("e.f", "x=y"),
                ("g.h", "-3"),
                ("i.j", "--k")
            ]
        );
    }

    #[test]
    fn pairs_both_forms_and_splits_on_the_first_equals() {
        let parsed = parse_overrides(&args(&["--a.b", "v", "--c.d=x=y", "--e=", "--f", "[1,2]"]))
            .expect("valid");
        let pairs: Vec<_> = parsed
            .iter()
            .map(|o| (o.key.as_str(), o.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("a.b", "v"), ("c.d", "x=y"), ("e", ""), ("f", "[1,2]")]
        );
    }

    #[test]
    fn dangling_and_malformed_tokens_are_errors() {
        let e = parse_overrides(&args(&["--a.b"])).expect_err("dangling");
        assert!(e.to_string().contains("--a.b has no value"), "{e}");
        let e = parse_overrides(&args(&["--a.b", "--c", "1"])).expect_err("dangling");
        assert!(e.to_string().contains("--a.b has no value"), "{e}");
        assert!(parse_overrides(&args(&["a.b", "1"])).is_err());
        assert!(parse_overrides(&args(&["--a..b", "1"])).is_err());
    }

    #[test]
    fn applies_values_typed_as_yaml() {
        let mut root = yaml::parse("a:\n  b: 1\nl: [{x: 1}, {x: 2}]\n", "t.yaml").expect("valid");
        for (key, value) in [
            ("a.b", "1.0"),
            ("a.c", "[1, 2]"),
            ("l.1.x", "x=y"),
            ("n.m", ""),
        ] {
            let o = Override {
                key: key.into(),
                value: value.into(),
            };
            apply(&mut root, &o).expect("applies");
        }
        let expected = "a:\n  b: 1.0\n  c: [1, 2]\nl:\n  - x: 1\n  - x: \"x=y\"\nn:\n  m: \"\"\n";
        assert_eq!(yaml::emit(&root), expected);
        let b = root.get("a").and_then(|a| a.get("b")).expect("present");
        assert_eq!(b.origin.to_string(), "override --a.b");
    }

    #[test]
    fn cannot_descend_into_scalars_or_past_list_ends() {
        let mut root = yaml::parse("a: 1\nl: [1]\n", "t.yaml").expect("valid");
        let o = |key: &str| Override {
            key: key.into(),
            value: "1".into(),
        };
        let e = apply(&mut root, &o("a.b")).expect_err("scalar");
        assert!(
            e.to_string()
                .contains("a is integer `1` (set at t.yaml:1:4)"),
            "{e}"
        );
        let e = apply(&mut root, &o("l.3")).expect_err("index");
        assert!(e.to_string().contains("l is a list of 1 items"), "{e}");
    }
}
