//! Reading a `tokenizer.json` into a [`FastBpe`], or declining it.
//!
//! Every field that changes the ids `tokenizers` produces is checked against the shapes this
//! encoder reproduces; anything else returns `Ok(None)`. Fields that only affect offsets or
//! decoding (`decoder`, `trim_offsets`, the ByteLevel post-processor) are ignored.

use serde_json::Value;

use super::merge::{FxHashMap, Merges};
use super::pretokenize::{Pattern, QWEN2_PATTERN};
use super::{AddedTokens, FastBpe};
use unicode_normalization_alignments::UnicodeNormalization;

/// GPT-2's byte-to-character table: printable Latin-1 bytes stand for themselves, the other
/// 68 bytes map to U+0100 onwards in byte order. Vocabulary strings are written in it.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[usize::from(b)] = if printable {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or('\0')
        };
    }
    table
}

fn is_null(v: Option<&Value>) -> bool {
    v.is_none_or(Value::is_null)
}

fn str_field<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

fn bool_field(v: &Value, key: &str) -> Option<bool> {
    v.get(key).and_then(Value::as_bool)
}

/// Whether `v` is a ByteLevel pre-tokenizer that maps bytes and does not split.
fn is_plain_byte_level(v: &Value) -> bool {
    str_field(v, "type") == Some("ByteLevel")
        && bool_field(v, "add_prefix_space") == Some(false)
        && bool_field(v, "use_regex") == Some(false)
}

/// Builds the encoder from the parsed JSON: `Ok(None)` for an unsupported shape, `Err` with
/// a reason for a file that `tokenizers` would reject as well.
pub(super) fn from_json(json: &Value) -> Result<Option<FastBpe>, String> {
    if !is_null(json.get("truncation")) || !is_null(json.get("padding")) {
        return Ok(None);
    }
    let nfc = match json.get("normalizer") {
        None | Some(Value::Null) => false,
        Some(n) if str_field(n, "type") == Some("NFC") => true,
        Some(_) => return Ok(None),
    };
    // The pre-tokenizer must be Sequence[Split(Qwen2 regex, Isolated), ByteLevel(no regex)]
    // (Qwen2, Qwen3) or ByteLevel with its own regex and no prefix space (GPT-2 style).
    let Some(pre) = json.get("pre_tokenizer") else {
        return Ok(None);
    };
    let pattern = if str_field(pre, "type") == Some("ByteLevel") {
        if bool_field(pre, "add_prefix_space") != Some(false)
            || bool_field(pre, "use_regex") != Some(true)
        {
            return Ok(None);
        }
        Pattern::Gpt2
    } else {
        let steps = match pre.get("pretokenizers").and_then(Value::as_array) {
            Some(steps) if str_field(pre, "type") == Some("Sequence") => steps,
            _ => return Ok(None),
        };
        let [split, byte_level] = steps.as_slice() else {
            return Ok(None);
        };
        let regex = split.get("pattern").and_then(|p| str_field(p, "Regex"));
        if str_field(split, "type") != Some("Split")
            || regex != Some(QWEN2_PATTERN)
            || str_field(split, "behavior") != Some("Isolated")
            || bool_field(split, "invert") != Some(false)
            || !is_plain_byte_level(byte_level)
        {
            return Ok(None);
        }
        Pattern::Qwen2
    };
    // A ByteLevel post-processor only adjusts offsets; any other one may add tokens.
    match json.get("post_processor") {
        None | Some(Value::Null) => {}
        Some(p) if str_field(p, "type") == Some("ByteLevel") => {}
        Some(_) => return Ok(None),
    }
    let Some(model) = json.get("model") else {
        return Ok(None);
    };
    let Some(merges) = load_model(model)? else {
        return Ok(None);
    };
    let Some((raw, normalized)) = load_added(json, model, nfc)? else {
        return Ok(None);
    };
    Ok(Some(FastBpe {
        merges,
        nfc,
        pattern,
        raw_added: AddedTokens::new(raw),
        normalized_added: AddedTokens::new(normalized),
    }))
}

/// The BPE model: vocabulary, merges and the flags that change merging.
fn load_model(model: &Value) -> Result<Option<Merges>, String> {
    if str_field(model, "type") != Some("BPE") {
        return Ok(None);
    }
    // Dropout makes merging random (0.0 is the same as none in `tokenizers`). A non-empty
    // prefix or suffix changes the initial symbols. `unk_token`, `fuse_unk` and
    // `byte_fallback` only act on characters missing from the vocabulary, and every byte
    // character is required to be present below.
    let dropout = model.get("dropout").and_then(Value::as_f64).unwrap_or(0.0);
    let affix_is_empty = |key| is_null(model.get(key)) || str_field(model, key) == Some("");
    if dropout != 0.0
        || !affix_is_empty("continuing_subword_prefix")
        || !affix_is_empty("end_of_word_suffix")
    {
        return Ok(None);
    }
    let ignore_merges = bool_field(model, "ignore_merges").unwrap_or(false);
    let vocab: FxHashMap<&str, u32> = match model.get("vocab").and_then(Value::as_object) {
        Some(v) => v
            .iter()
            .map(|(k, id)| {
                let id = id.as_u64().and_then(|i| u32::try_from(i).ok());
                id.map(|id| (k.as_str(), id))
                    .ok_or_else(|| format!("vocabulary entry {k:?} has an invalid id"))
            })
            .collect::<Result<_, _>>()?,
        None => return Err("model.vocab is missing or not an object".into()),
    };
    let chars = byte_chars();
    let mut byte_ids = [0u32; 256];
    for (b, c) in chars.iter().enumerate() {
        match vocab.get(c.to_string().as_str()) {
            Some(&id) => byte_ids[b] = id,
            None => return Ok(None),
        }
    }
    let lookup = |token: &str| {
        vocab
            .get(token)
            .copied()
            .ok_or_else(|| format!("merge token {token:?} is not in the vocabulary"))
    };
    // Merges are [a, b] pairs, or "a b" strings in older files (lines starting with
    // "#version" skipped before ranks are counted, as `tokenizers` does). A repeated pair
    // keeps its last rank, as collecting into `tokenizers`' hash map does.
    let list = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or("model.merges is missing or not a list")?;
    let mut pairs = FxHashMap::default();
    pairs.reserve(list.len());
    let mut rank = 0u32;
    for merge in list {
        let (a, b) = match merge {
            Value::Array(p) => match p.as_slice() {
                [Value::String(a), Value::String(b)] => (a.as_str(), b.as_str()),
                _ => return Err(format!("merge {merge} is not a pair of strings")),
            },
            Value::String(line) if line.starts_with("#version") => continue,
            Value::String(line) => match line.split(' ').collect::<Vec<_>>().as_slice() {
                [a, b] => (*a, *b),
                _ => return Err(format!("merge {line:?} is not two tokens")),
            },
            _ => return Err(format!("merge {merge} is not a pair of strings")),
        };
        let merged = lookup(&format!("{a}{b}"))?;
        let key = (u64::from(lookup(a)?) << 32) | u64::from(lookup(b)?);
        pairs.insert(key, (rank, merged));
        rank += 1;
    }
    // With `ignore_merges`, a word that is itself in the vocabulary is one token. Only
    // entries spelled entirely in byte characters can ever equal a word.
    let whole_words = ignore_merges.then(|| {
        let inverse: FxHashMap<char, u8> =
            chars.iter().zip(0..=255u8).map(|(&c, b)| (c, b)).collect();
        vocab
            .iter()
            .filter_map(|(token, &id)| {
                let bytes: Option<Vec<u8>> =
                    token.chars().map(|c| inverse.get(&c).copied()).collect();
                bytes.map(|b| (b.into_boxed_slice(), id))
            })
            .collect()
    });
    Ok(Some(Merges {
        byte_ids,
        pairs,
        whole_words,
    }))
}

/// Added tokens as (content, id), split into those matched in the raw text and those matched
/// after normalization (their content normalized). `Ok(None)` if a token uses `lstrip`,
/// `rstrip` or `single_word`, or would get another id than the file says.
#[allow(clippy::type_complexity)]
fn load_added(
    json: &Value,
    model: &Value,
    nfc: bool,
) -> Result<Option<(Vec<(String, u32)>, Vec<(String, u32)>)>, String> {
    let tokens = match json.get("added_tokens") {
        None | Some(Value::Null) => return Ok(Some((Vec::new(), Vec::new()))),
        Some(Value::Array(t)) => t,
        Some(_) => return Err("added_tokens is not a list".into()),
    };
    let vocab = model.get("vocab").and_then(Value::as_object);
    let vocab_len = vocab.map_or(0, |v| v.len()) as u64;
    // `tokenizers` assigns ids itself: a token already in the model's vocabulary keeps that
    // id, the others are numbered from the vocabulary size in file order. Files written by
    // `tokenizers` agree with that; a file that does not is declined rather than guessed.
    let mut next_id = vocab_len;
    let mut seen = std::collections::HashSet::new();
    let (mut raw, mut normalized) = (Vec::new(), Vec::new());
    for t in tokens {
        let content = str_field(t, "content").ok_or("an added token has no content")?;
        let id = t
            .get("id")
            .and_then(Value::as_u64)
            .ok_or("an added token has no id")?;
        if ["lstrip", "rstrip", "single_word"]
            .iter()
            .any(|k| bool_field(t, k) == Some(true))
        {
            return Ok(None);
        }
        if content.is_empty() || !seen.insert(content) {
            return Ok(None);
        }
        let expected = match vocab.and_then(|v| v.get(content)).and_then(Value::as_u64) {
            Some(v) => v,
            None => {
                next_id += 1;
                next_id - 1
            }
        };
        let Ok(id32) = u32::try_from(id) else {
            return Ok(None);
        };
        if expected != id {
            return Ok(None);
        }
        // `normalized` defaults to true for non-special tokens in `tokenizers`' serde, but
        // files always write it; a missing flag is treated as unsupported.
        match bool_field(t, "normalized") {
            Some(false) => raw.push((content.to_owned(), id32)),
            Some(true) if nfc => normalized.push((content.nfc().map(|(c, _)| c).collect(), id32)),
            Some(true) => normalized.push((content.to_owned(), id32)),
            None => return Ok(None),
        }
    }
    Ok(Some((raw, normalized)))
}
