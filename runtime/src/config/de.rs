//! Strict deserialization of a [`Node`] tree into the typed config. The deserializer tracks the
//! dotted path and the origin of every node, so an unknown key or a wrong type is reported as
//! `file:line:col: unknown key optimizer.weight_decy; did you mean optimizer.weight_decay?`.
//!
//! Types are taken from the YAML value, not guessed from the text: `1.0` is a float and is
//! rejected where an integer is expected, while an integer is accepted where a float is. Numbers
//! are accepted where a string is expected (as written), since MindFormers' `data_path` weights
//! are often unquoted.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::yaml::{Entry, Node, Origin, Value};
use super::{Error, Result};

/// Deserializes `T` from `node`, which came from the sources named in its origins.
pub(crate) fn from_node<'de, T: de::Deserialize<'de>>(node: &'de Node) -> Result<T> {
    T::deserialize(NodeDe {
        node,
        path: &Path::Root,
    })
    .map_err(DeError::into_error)
}

/// A dotted path such as `callbacks[1].prefix`, built on the stack while descending.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, key) => write!(f, "{key}"),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// What went wrong, before the path and origin are known.
#[derive(Debug)]
enum Kind {
    UnknownKey {
        key: String,
        expected: &'static [&'static str],
    },
    UnknownVariant {
        variant: String,
        expected: &'static [&'static str],
    },
    MissingKey(&'static str),
    InvalidType {
        expected: String,
    },
    Other(String),
}

/// The deserializer's error; the path and origin are filled in by the innermost node that sees
/// the error on its way out.
#[derive(Debug)]
pub(crate) struct DeError {
    kind: Box<Kind>,
    /// Dotted path of the offending key or value.
    path: Option<String>,
    /// Where the offending key or value was written, and its value's description.
    at: Option<Box<(Origin, String)>>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.kind)
    }
}

impl std::error::Error for DeError {}

impl DeError {
    fn new(kind: Kind) -> DeError {
        DeError {
            kind: Box::new(kind),
            path: None,
            at: None,
        }
    }

    /// Fills in the path and origin if no inner node did.
    fn locate(mut self, path: &Path<'_>, node: &Node) -> DeError {
        if self.path.is_none() {
            self.path = Some(path.to_string());
            self.at = Some(Box::new((node.origin.clone(), node.value.describe())));
        }
        self
    }

    fn into_error(self) -> Error {
        let (at, found) = match self.at.map(|b| *b) {
            Some((origin, found)) => (origin.to_string(), found),
            None => ("<config>".into(), String::new()),
        };
        let path = self.path.unwrap_or_default();
        let join = |key: &str| {
            if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            }
        };
        let message = match *self.kind {
            Kind::UnknownKey { key, expected } => {
                let hint = match closest(&key, expected) {
                    Some(best) => format!("did you mean {}?", join(best)),
                    None if expected.is_empty() => "this section takes no keys".into(),
                    None => format!("valid keys here: {}", expected.join(", ")),
                };
                format!("unknown key {}; {hint}", join(&key))
            }
            Kind::UnknownVariant { variant, expected } => {
                let hint = match closest(&variant, expected) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => format!("expected one of: {}", expected.join(", ")),
                };
                format!("{path}: unknown value `{variant}`; {hint}")
            }
            Kind::MissingKey(key) => format!("missing key {}; add it", join(key)),
            Kind::InvalidType { expected } => {
                format!("{path}: expected {expected}, found {found}")
            }
            Kind::Other(message) => format!("{path}: {message}"),
        };
        Error::Schema { at, message }
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(Kind::Other(msg.to_string()))
    }

    fn invalid_type(_unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(Kind::InvalidType {
            expected: friendly_expected(&exp.to_string()),
        })
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let expected = friendly_expected(&exp.to_string());
        DeError::new(Kind::Other(format!(
            "invalid value {unexp}, expected {expected}"
        )))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(Kind::UnknownKey {
            key: field.into(),
            expected,
        })
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(Kind::UnknownVariant {
            variant: variant.into(),
            expected,
        })
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::new(Kind::MissingKey(field))
    }
}

/// Serde's names for primitive types, in words.
fn friendly_expected(exp: &str) -> String {
    match exp {
        "u8" | "u16" | "u32" | "u64" | "usize" => format!("a non-negative integer ({exp})"),
        "i8" | "i16" | "i32" | "i64" | "isize" => format!("an integer ({exp})"),
        "f32" | "f64" => "a number".into(),
        other => other.into(),
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let (best, distance) = candidates
        .iter()
        .map(|c| (*c, edit_distance(word, c)))
        .min_by_key(|(_, d)| *d)?;
    let limit = (word.chars().count().max(best.chars().count()) / 3).max(2);
    (distance <= limit).then_some(best)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// A deserializer for one node.
#[derive(Clone, Copy)]
struct NodeDe<'de, 'p> {
    node: &'de Node,
    path: &'p Path<'p>,
}

impl<'de> NodeDe<'de, '_> {
    fn locate<T>(&self, result: Result<T, DeError>) -> Result<T, DeError> {
        result.map_err(|e| e.locate(self.path, self.node))
    }

    fn invalid_type<T>(&self, expected: &str) -> Result<T, DeError> {
        self.locate(Err(DeError::new(Kind::InvalidType {
            expected: expected.into(),
        })))
    }
}

macro_rules! via_any {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.deserialize_any(visitor)
        })*
    };
}

impl<'de> de::Deserializer<'de> for NodeDe<'de, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i, _) => visitor.visit_i64(*i),
            Value::Float(f, _) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_borrowed_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter().enumerate(),
                path: self.path,
            }),
            Value::Map(entries) => visitor.visit_map(MapDe {
                entries: entries.iter(),
                value: None,
                path: self.path,
            }),
        };
        self.locate(result)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Int(i, _) => self.locate(visitor.visit_f64(*i as f64)),
            Value::Float(..) => self.deserialize_any(visitor),
            _ => self.invalid_type("a number"),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(s) => self.locate(visitor.visit_borrowed_str(s)),
            Value::Int(_, raw) | Value::Float(_, raw) => {
                self.locate(visitor.visit_borrowed_str(raw))
            }
            _ => self.invalid_type("a string (quote it, e.g. '')"),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(s) => {
                let de: de::value::StrDeserializer<'_, DeError> = s.as_str().into_deserializer();
                self.locate(visitor.visit_enum(de))
            }
            _ => self.invalid_type("one of the names listed in the docs, as a string"),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(_) => self.deserialize_any(visitor),
            _ => self.invalid_type("a mapping of `key: value` lines"),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(_) => self.deserialize_any(visitor),
            _ => self.invalid_type("a list such as [a, b]"),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    via_any! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_char deserialize_bytes deserialize_byte_buf
        deserialize_unit deserialize_map
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }
}

struct SeqDe<'de, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'de, Node>>,
    path: &'p Path<'p>,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some((i, node)) = self.items.next() else {
            return Ok(None);
        };
        let path = Path::Index(self.path, i);
        let de = NodeDe { node, path: &path };
        de.locate(seed.deserialize(de)).map(Some)
    }
}

struct MapDe<'de, 'p> {
    entries: std::slice::Iter<'de, Entry>,
    value: Option<&'de Entry>,
    path: &'p Path<'p>,
}

impl<'de> de::MapAccess<'de> for MapDe<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(entry);
        let key: de::value::BorrowedStrDeserializer<'de, DeError> =
            de::value::BorrowedStrDeserializer::new(&entry.key);
        let parent = self.path;
        seed.deserialize(key).map(Some).map_err(|mut e| {
            // Unknown keys are reported at the parent path with the key's own origin.
            if e.path.is_none() {
                e.path = Some(parent.to_string());
                e.at = Some(Box::new((entry.at.clone(), entry.node.value.describe())));
            }
            e
        })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let entry = self
            .value
            .take()
            .expect("serde asks for a value after its key");
        let path = Path::Key(self.path, &entry.key);
        let de = NodeDe {
            node: &entry.node,
            path: &path,
        };
        de.locate(seed.deserialize(de))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::super::yaml::parse;
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        weight_decay: f64,
        steps: u64,
        #[serde(default)]
        name: String,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        optimizer: Inner,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        flag: Option<bool>,
    }

    fn load(text: &str) -> Result<Outer> {
        let node = parse(text, "x.yaml")?;
        from_node(&node)
    }

    #[test]
    fn reads_typed_values() {
        let o = load("optimizer:\n  weight_decay: 0\n  steps: 3\n  name: 12\nflag: True\n")
            .expect("valid");
        assert_eq!(o.optimizer.weight_decay, 0.0);
        assert_eq!(o.optimizer.name, "12");
        assert_eq!(o.flag, Some(true));
    }

    #[test]
    fn unknown_key_names_path_position_and_suggestion() {
        let e = load("optimizer:\n  weight_decy: 0.1\n  steps: 1\n").expect_err("typo");
        assert_eq!(
            e.to_string(),
            "x.yaml:2:3: unknown key optimizer.weight_decy; did you mean optimizer.weight_decay?"
        );
        let e = load(
            "optimizer: {weight_decay: 0.1, steps: 1}\nlist:\n  - {weight_decay: 1, \
                      steps: 1, zzzzzzzz: 1}\n",
        )
        .expect_err("unknown");
        assert!(
            e.to_string()
                .contains("unknown key list[0].zzzzzzzz; valid keys here"),
            "{e}"
        );
    }

    #[test]
    fn float_for_int_is_an_error() {
        let e = load("optimizer:\n  weight_decay: 0.1\n  steps: 1.0\n").expect_err("float");
        assert_eq!(
            e.to_string(),
            "x.yaml:3:10: optimizer.steps: expected a non-negative integer (u64), found float `1.0`"
        );
    }

    #[test]
    fn missing_key_is_named() {
        let e = load("optimizer:\n  weight_decay: 0.1\n").expect_err("missing");
        assert!(
            e.to_string()
                .ends_with("missing key optimizer.steps; add it"),
            "{e}"
        );
    }

    #[test]
    fn suggestions_need_a_close_match() {
        assert_eq!(
            closest("weight_decy", &["weight_decay", "eps"]),
            Some("weight_decay")
        );
        assert_eq!(closest("zzz", &["weight_decay", "eps"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
