//! Loading a Hugging Face `tokenizer.json` (and the `tokenizer_config.json` beside it) with the
//! `tokenizers` crate, with errors that say what to fix.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use super::bpe::{self, FastBpe};
use super::{Error, Result};

/// A loaded tokenizer and what the data pipeline needs to know about it.
pub struct HfTokenizer {
    /// The tokenizer.
    pub inner: Tokenizer,
    /// The `tokenizer.json` it came from.
    pub path: PathBuf,
    /// Vocabulary size including added tokens (what Megatron's `vocab_size` reports).
    pub vocab_size: usize,
    /// `eos_token` of `tokenizer_config.json`, when present: (token, id).
    pub eos: Option<(String, u32)>,
    /// `pad_token` of `tokenizer_config.json`, when present: (token, id).
    pub pad: Option<(String, u32)>,
    /// The fast encoder for byte-level BPE files it supports (same ids, much faster).
    fast: Option<FastBpe>,
}

/// A per-thread encoder: the fast BPE with its word cache where the file allows, else the
/// `tokenizers` crate.
pub enum WorkerEncoder<'a> {
    /// [`bpe::Encoder`], for GPT-2/Qwen-style byte-level BPE files.
    Fast(bpe::Encoder<'a>),
    /// The `tokenizers` crate, for everything else.
    Hf(&'a HfTokenizer),
}

impl WorkerEncoder<'_> {
    /// Appends the ids of `text` to `out`.
    pub fn encode(&mut self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        match self {
            WorkerEncoder::Fast(e) => {
                e.encode(text, out);
                Ok(())
            }
            WorkerEncoder::Hf(t) => {
                out.extend(t.encode_hf(text)?);
                Ok(())
            }
        }
    }
}

/// Finds `tokenizer.json`: `file` if given, else `<dir>/tokenizer.json`.
pub fn resolve(dir: Option<&Path>, file: Option<&Path>) -> Result<PathBuf> {
    match (dir, file) {
        (_, Some(f)) => Ok(f.to_path_buf()),
        (Some(d), None) => Ok(d.join("tokenizer.json")),
        (None, None) => Err(Error::InvalidArgument(
            "no tokenizer given; pass --tokenizer-dir <dir with tokenizer.json> or \
             --tokenizer-file <tokenizer.json>"
                .into(),
        )),
    }
}

fn config_token(config: &serde_json::Value, key: &str) -> Option<String> {
    match config.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

impl HfTokenizer {
    /// Loads `path` (a `tokenizer.json`) and, if present, the `tokenizer_config.json` beside it.
    pub fn load(path: &Path) -> Result<HfTokenizer> {
        let err = |reason: String| Error::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(err(
                "no such file; point --tokenizer-dir at a directory holding a Hugging Face \
                 tokenizer.json (scripts/fetch-assets.sh downloads Qwen3's)"
                    .into(),
            ));
        }
        let inner = Tokenizer::from_file(path).map_err(|e| {
            err(format!(
                "not a valid Hugging Face tokenizer.json ({e}); use the tokenizer.json of a \
                 model repository"
            ))
        })?;
        let vocab_size = inner.get_vocab_size(true);
        let config_path = path.with_file_name("tokenizer_config.json");
        let config: serde_json::Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| Error::Tokenizer {
                path: config_path.clone(),
                reason: format!("invalid JSON ({e}); fix or remove the file"),
            })?,
            Err(_) => serde_json::Value::Null,
        };
        let lookup = |key: &str| {
            let token = config_token(&config, key)?;
            let id = inner.token_to_id(&token)?;
            Some((token, id))
        };
        let eos = lookup("eos_token");
        let pad = lookup("pad_token");
        let fast = FastBpe::from_tokenizer_json(path)?;
        if fast.is_none() {
            tracing::info!(
                "{}: using the tokenizers crate (the fast BPE encoder does not support this file)",
                path.display()
            );
        }
        Ok(HfTokenizer {
            path: path.to_path_buf(),
            vocab_size,
            eos,
            pad,
            inner,
            fast,
        })
    }

    /// The end-of-document id to append: `token` if given, else the configured `eos_token`,
    /// else `<|endoftext|>` or `</s>` if the vocabulary has them.
    pub fn eod(&self, token: Option<&str>) -> Result<(String, u32)> {
        if let Some(t) = token {
            return self
                .inner
                .token_to_id(t)
                .map(|id| (t.to_owned(), id))
                .ok_or_else(|| Error::Tokenizer {
                    path: self.path.clone(),
                    reason: format!("--eod-token `{t}` is not in the vocabulary"),
                });
        }
        if let Some(eos) = &self.eos {
            return Ok(eos.clone());
        }
        for t in ["<|endoftext|>", "</s>"] {
            if let Some(id) = self.inner.token_to_id(t) {
                return Ok((t.to_owned(), id));
            }
        }
        Err(Error::Tokenizer {
            path: self.path.clone(),
            reason: "no end-of-document token: no eos_token in tokenizer_config.json and no \
                     <|endoftext|> or </s>; pass --eod-token"
                .into(),
        })
    }

    /// An encoder for one thread (keeps a word cache when the fast encoder applies).
    pub fn worker(&self) -> WorkerEncoder<'_> {
        match &self.fast {
            Some(f) => WorkerEncoder::Fast(f.encoder()),
            None => WorkerEncoder::Hf(self),
        }
    }

    /// Whether the fast BPE encoder is in use.
    pub fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    /// Token ids of `text`, exactly as `tokenizer(text).input_ids` in Python.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        self.worker().encode(text, &mut out)?;
        Ok(out)
    }

    /// Token ids of `text` from the `tokenizers` crate.
    pub fn encode_hf(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode_fast(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                reason: format!("encoding failed: {e}"),
            })
    }

    /// Text of `ids` (special tokens kept), for inspecting data.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| Error::Tokenizer {
            path: self.path.clone(),
            reason: format!("decoding failed: {e}"),
        })
    }
}
