//! The YAML document tree the config is read into: every node remembers where it came from (file
//! and line/column, or the command-line override that set it), so that errors found after merging
//! `base_config` parents and applying overrides still point at the right place.
//!
//! Parsing uses `saphyr-parser`'s event stream (a maintained, pure-Rust YAML 1.2 parser with
//! positions and anchors) instead of a serde YAML crate: `serde_yaml` is deprecated, and its
//! successors deserialize straight into types or into a `Value` without positions, which would
//! lose the file/line of a key once parents are merged. Scalars are resolved with the YAML 1.2
//! core schema (so `True`/`False`, `1e-6` and `1.e-6` work as in MindFormers' PyYAML files).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::{Error, Result};

/// Where a node came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    /// A file path as given, or `override --a.b.c`.
    pub source: Arc<str>,
    /// 1-based line and column, when the parser knows them.
    pub pos: Option<(usize, usize)>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some((line, col)) => write!(f, "{}:{line}:{col}", self.source),
            None => write!(f, "{}", self.source),
        }
    }
}

/// A YAML node with its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it was set.
    pub origin: Origin,
}

/// A resolved YAML value. Mappings keep their key order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true`/`True`/`TRUE` and the false forms.
    Bool(bool),
    /// An integer with its source text.
    Int(i64, String),
    /// A float with its source text.
    Float(f64, String),
    /// A string.
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<Entry>),
}

/// One `key: value` of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// Where the key was written.
    pub at: Origin,
    /// Its value.
    pub node: Node,
}

impl Value {
    /// How the value is described in type errors.
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Bool(b) => format!("boolean `{b}`"),
            Value::Int(_, raw) => format!("integer `{raw}`"),
            Value::Float(_, raw) => format!("float `{raw}`"),
            Value::Str(s) => format!("string {s:?}"),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }
}

impl Node {
    /// The value under `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.node),
            _ => None,
        }
    }
}

/// Resolves a plain (unquoted) scalar with the YAML 1.2 core schema.
pub(crate) fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY, text.into())
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY, text.into()),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN, text.into()),
        _ => {}
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let int = if let Some(hex) = text.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = text.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()
    } else if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<i64>().ok()
    } else {
        None
    };
    if let Some(i) = int {
        return Value::Int(i, text.into());
    }
    if is_core_float(unsigned) {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f, text.into());
        }
    }
    Value::Str(text.into())
}

/// `( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?` without the sign.
fn is_core_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty()),
        None => !mantissa.is_empty() && digits(mantissa),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && digits(e)
        }
    };
    mantissa_ok && exponent_ok
}

/// A collection being built: the node, its anchor id (0 = none) and, for mappings, the key
/// waiting for its value.
struct Open {
    node: Node,
    anchor: usize,
    pending: Option<(String, Origin)>,
    /// The node count when the collection opened: its subtree's size is the difference.
    first: usize,
}

/// The most nodes a document may expand to, aliases counted at their full size: a
/// MindSpore Transformers config has a few hundred, and without a bound nine lines of nested
/// aliases ("billion laughs") expand to billions.
pub const MAX_NODES: usize = 100_000;

/// Builds [`Node`]s from parser events.
struct Builder {
    source: Arc<str>,
    /// Open collections, innermost last.
    stack: Vec<Open>,
    /// Anchored nodes with their sizes in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    /// Nodes so far, aliases counted at their full size.
    nodes: usize,
}

impl Builder {
    fn origin(&self, span: Span) -> Origin {
        Origin {
            source: self.source.clone(),
            pos: Some((span.start.line(), span.start.col() + 1)),
        }
    }

    /// Counts `n` more nodes against [`MAX_NODES`].
    fn count(&mut self, n: usize, span: Span) -> Result<()> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(Error::Syntax {
                at: self.origin(span).to_string(),
                message: format!(
                    "the document expands to more than {MAX_NODES} values (aliases of aliases?); \
                     a training config has a few hundred"
                ),
            });
        }
        Ok(())
    }

    /// Adds a finished node of `size` nodes to the collection on top of the stack (or makes it
    /// the root).
    fn push(&mut self, node: Node, anchor: usize, size: usize) -> Result<()> {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        let Some(Open {
            node: parent,
            pending,
            ..
        }) = self.stack.last_mut()
        else {
            self.root.get_or_insert(node);
            return Ok(());
        };
        match &mut parent.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match pending.take() {
                None => {
                    let key = match node.value {
                        Value::Str(s) | Value::Int(_, s) | Value::Float(_, s) => s,
                        Value::Bool(b) => b.to_string(),
                        Value::Null => "null".into(),
                        Value::Seq(_) | Value::Map(_) => {
                            return Err(Error::Syntax {
                                at: node.origin.to_string(),
                                message: "mapping keys must be plain words, not lists or mappings"
                                    .into(),
                            })
                        }
                    };
                    if entries.iter().any(|e| e.key == key) {
                        return Err(Error::Syntax {
                            at: node.origin.to_string(),
                            message: format!("duplicate key `{key}`; remove one of them"),
                        });
                    }
                    *pending = Some((key, node.origin));
                }
                Some((key, at)) => entries.push(Entry { key, at, node }),
            },
            _ => unreachable!("only collections are pushed on the stack"),
        }
        Ok(())
    }

    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<()> {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let value = match (style, tag) {
                    (_, Some(tag)) if tag.is_yaml_core_schema() && tag.suffix == "str" => {
                        Value::Str(text.into_owned())
                    }
                    (ScalarStyle::Plain, _) => resolve_plain(&text),
                    _ => Value::Str(text.into_owned()),
                };
                let node = Node {
                    value,
                    origin: self.origin(span),
                };
                self.count(1, span)?;
                self.push(node, anchor, 1)
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                let value = if matches!(event, Event::SequenceStart(..)) {
                    Value::Seq(Vec::new())
                } else {
                    Value::Map(Vec::new())
                };
                let origin = self.origin(span);
                let first = self.nodes;
                self.count(1, span)?;
                self.stack.push(Open {
                    node: Node { value, origin },
                    anchor,
                    pending: None,
                    first,
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let open = self.stack.pop().expect("parser balances start and end");
                let size = self.nodes - open.first;
                self.push(open.node, open.anchor, size)
            }
            Event::Alias(id) => {
                let Some(&(_, size)) = self.anchors.get(&id) else {
                    return Err(Error::Syntax {
                        at: self.origin(span).to_string(),
                        message: "alias to an unknown anchor".into(),
                    });
                };
                // Counted before it is copied: a copy never exceeds the budget.
                self.count(size, span)?;
                let node = self.anchors[&id].0.clone();
                self.push(node, 0, size)
            }
            Event::DocumentStart(_) if self.root.is_some() => Err(Error::Syntax {
                at: self.origin(span).to_string(),
                message: "a config file holds one YAML document; remove the extra `---`".into(),
            }),
            _ => Ok(()),
        }
    }
}

/// Parses one YAML document; `source` names it in errors. An empty document is `null`.
pub fn parse(text: &str, source: &str) -> Result<Node> {
    let mut builder = Builder {
        source: source.into(),
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        nodes: 0,
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| Error::Syntax {
            at: format!("{source}:{}:{}", e.marker().line(), e.marker().col() + 1),
            message: e.info().to_string(),
        })?;
        builder.on_event(event, span)?;
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Null,
        origin: Origin {
            source: source.into(),
            pos: None,
        },
    }))
}

/// Writes a tree as block-style YAML (flow style for lists of scalars).
pub fn emit(node: &Node) -> String {
    let mut out = String::new();
    match &node.value {
        Value::Map(entries) if !entries.is_empty() => emit_map(&mut out, entries, 0),
        _ => {
            out.push_str(&inline(node).unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

fn emit_map(out: &mut String, entries: &[Entry], indent: usize) {
    for entry in entries {
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar_text(&entry.key));
        out.push(':');
        emit_value(out, &entry.node, indent);
    }
}

/// Writes the value after `key:` (or `-`), which is already on the line.
fn emit_value(out: &mut String, node: &Node, indent: usize) {
    if let Some(text) = inline(node) {
        out.push(' ');
        out.push_str(&text);
        out.push('\n');
        return;
    }
    out.push('\n');
    match &node.value {
        Value::Map(entries) => emit_map(out, entries, indent + 2),
        Value::Seq(items) => {
            for item in items {
                out.push_str(&" ".repeat(indent + 2));
                out.push('-');
                match &item.value {
                    Value::Map(entries) if !entries.is_empty() => {
                        // The first entry goes on the dash line, the rest align under it.
                        let mut first = String::new();
                        emit_map(&mut first, entries, indent + 4);
                        out.push(' ');
                        out.push_str(first.trim_start());
                    }
                    _ => emit_value(out, item, indent + 2),
                }
            }
        }
        _ => unreachable!("scalars are always inline"),
    }
}

/// The one-line form of scalars, empty collections and lists of scalars.
fn inline(node: &Node) -> Option<String> {
    Some(match &node.value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i, _) => i.to_string(),
        Value::Float(f, _) => float_text(*f),
        Value::Str(s) => scalar_text(s),
        Value::Map(entries) if entries.is_empty() => "{}".into(),
        Value::Seq(items) => {
            let parts = items.iter().map(|item| match item.value {
                Value::Seq(_) | Value::Map(_) => None,
                _ => inline(item),
            });
            format!("[{}]", parts.collect::<Option<Vec<_>>>()?.join(", "))
        }
        Value::Map(_) => return None,
    })
}

fn float_text(f: f64) -> String {
    if f.is_nan() {
        ".nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { ".inf" } else { "-.inf" }.into()
    } else {
        // `{:?}` always keeps a `.` or an exponent, so the text reads back as a float; a `.0`
        // before a bare exponent (`1.0e-8`, not `1e-8`) keeps it a float for YAML 1.1 readers
        // such as PyYAML too.
        let text = format!("{f:?}");
        match text.split_once('e') {
            Some((mantissa, exp)) if !mantissa.contains('.') => format!("{mantissa}.0e{exp}"),
            _ => text,
        }
    }
}

/// A string as a YAML scalar: plain when it reads back as the same string, else double-quoted
/// (JSON string syntax is valid YAML double-quoted syntax).
fn scalar_text(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && !s.starts_with('-')
        && matches!(resolve_plain(s), Value::Str(_));
    if safe {
        s.to_string()
    } else {
        serde_json::Value::String(s.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzzing, bounded: 3,000 random edits of a real config (characters deleted, doubled or
    /// replaced by YAML's special ones, anchors and aliases spliced in) never panic: each
    /// parses, or is an error that names the file.
    #[test]
    fn random_edits_parse_or_fail_cleanly() {
        let text = include_str!("../../../configs/qwen3/qwen3_tiny.yaml").as_bytes();
        let specials = b":-[]{}&*!|>'\"%@`#,? \n\t";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut t = text.to_vec();
            for _ in 0..1 + next() % 6 {
                let at = (next() as usize) % t.len();
                match next() % 5 {
                    0 => {
                        t.remove(at);
                    }
                    1 => t.insert(at, t[at]),
                    2 => t[at] = specials[(next() as usize) % specials.len()],
                    3 => t.splice(at..at, b"&a ".iter().copied()).for_each(drop),
                    _ => t.splice(at..at, b"*a".iter().copied()).for_each(drop),
                }
            }
            let t = String::from_utf8_lossy(&t);
            if let Err(e) = parse(&t, "fuzz.yaml") {
                assert!(e.to_string().starts_with("fuzz.yaml"), "{e}");
            }
        }
    }

    /// Nine lines of nested aliases would expand to 10^9 values: refused at the budget, at
    /// once, naming the position; aliases within it still work.
    #[test]
    fn alias_expansion_has_a_budget() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let t = std::time::Instant::now();
        let err = parse(&doc, "laughs.yaml").expect_err("too big").to_string();
        assert!(err.starts_with("laughs.yaml:"), "{err}");
        assert!(err.contains("more than 100000 values"), "{err}");
        assert!(t.elapsed().as_secs() < 5, "took {:?}", t.elapsed());
        let ok = parse("base: &b {lr: 1, wd: 2}\nx: *b\ny: [*b, *b]\n", "ok.yaml").expect("small");
        assert_eq!(emit(&ok).matches("lr: 1").count(), 4);
    }

    fn value(text: &str) -> Value {
        parse(text, "t.yaml").expect("valid yaml").value
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        assert_eq!(resolve_plain("True"), Value::Bool(true));
        assert_eq!(resolve_plain("false"), Value::Bool(false));
        assert_eq!(resolve_plain("42"), Value::Int(42, "42".into()));
        assert_eq!(resolve_plain("-1"), Value::Int(-1, "-1".into()));
        assert_eq!(resolve_plain("1.0"), Value::Float(1.0, "1.0".into()));
        assert_eq!(resolve_plain("1e-6"), Value::Float(1e-6, "1e-6".into()));
        assert_eq!(resolve_plain("1.e-6"), Value::Float(1e-6, "1.e-6".into()));
        assert_eq!(
            resolve_plain("1000000."),
            Value::Float(1e6, "1000000.".into())
        );
        assert_eq!(float_text(1e-8), "1.0e-8");
        assert_eq!(float_text(0.95), "0.95");
        assert_eq!(resolve_plain("~"), Value::Null);
        assert_eq!(resolve_plain("1, 0, 0"), Value::Str("1, 0, 0".into()));
        assert_eq!(resolve_plain("e5"), Value::Str("e5".into()));
        assert_eq!(resolve_plain("yes"), Value::Str("yes".into()));
    }

    #[test]
    fn quoted_scalars_are_strings() {
        let Value::Seq(items) = value("['1', \"2\", 3]") else {
            panic!("expected a list")
        };
        assert_eq!(items[0].value, Value::Str("1".into()));
        assert_eq!(items[1].value, Value::Str("2".into()));
        assert_eq!(items[2].value, Value::Int(3, "3".into()));
    }

    #[test]
    fn anchors_and_aliases_are_resolved() {
        let root = parse("a: &x\n  b: 1\nc: *x\nd: &n 4\ne: [*n]\n", "t.yaml").expect("valid");
        assert_eq!(
            root.get("c").map(|n| &n.value),
            root.get("a").map(|n| &n.value)
        );
        let Some(Value::Seq(e)) = root.get("e").map(|n| &n.value) else {
            panic!("expected a list")
        };
        assert_eq!(e[0].value, Value::Int(4, "4".into()));
    }

    #[test]
    fn positions_are_one_based() {
        let root = parse("a:\n  bb: 1\n", "t.yaml").expect("valid");
        let b = root.get("a").and_then(|a| a.get("bb")).expect("present");
        assert_eq!(b.origin.to_string(), "t.yaml:2:7");
    }

    #[test]
    fn syntax_and_duplicate_errors_have_positions() {
        let e = parse("a: [1, 2\n", "t.yaml").expect_err("unclosed flow list");
        assert!(e.to_string().starts_with("t.yaml:"), "{e}");
        let e = parse("a: 1\na: 2\n", "t.yaml").expect_err("duplicate key");
        assert!(
            e.to_string().contains("t.yaml:2:1: duplicate key `a`"),
            "{e}"
        );
    }

    #[test]
    fn emit_reads_back_to_the_same_tree() {
        let text = "a: 1\nb:\n  c: [0.9, 0.95]\n  d: 'x: y'\n  e: '1'\nf:\n  - type: A\n    \
                    g: 1.0e-6\n  - type: B\nh: []\ni: {}\nj: null\nk: ''\nl: [[1, 2], [3]]\n";
        let tree = parse(text, "t.yaml").expect("valid");
        let again = parse(&emit(&tree), "t.yaml").expect("emitted yaml is valid");
        fn strip(v: &Value) -> String {
            // Compare values without origins or raw texts.
            match v {
                Value::Int(i, _) => format!("i{i}"),
                Value::Float(f, _) => format!("f{f}"),
                Value::Seq(items) => {
                    let parts: Vec<_> = items.iter().map(|n| strip(&n.value)).collect();
                    format!("[{}]", parts.join(","))
                }
                Value::Map(entries) => {
                    let parts: Vec<_> = entries
                        .iter()
                        .map(|e| format!("{}={}", e.key, strip(&e.node.value)))
                        .collect();
                    format!("{{{}}}", parts.join(","))
                }
                other => format!("{other:?}"),
            }
        }
        assert_eq!(strip(&tree.value), strip(&again.value), "{}", emit(&tree));
    }
}
