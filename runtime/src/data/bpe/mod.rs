//! A fast encoder for byte-level BPE `tokenizer.json` files of the GPT-2/Qwen2/Qwen3 family that
//! returns exactly the ids of the `tokenizers` crate's `encode_fast(text, true)`.
//!
//! `tokenizers` is general: it keeps offsets and alignments for every normalized character,
//! runs the pre-tokenizer through a backtracking regex engine, allocates a `String` per
//! piece and guards its word cache with a lock. For producing ids only, none of that is
//! needed. This module does the same steps on byte slices:
//!
//! 1. added tokens that are not `normalized` are cut out of the raw text (leftmost-longest,
//!    as `AddedVocabulary` does with its Aho-Corasick automaton);
//! 2. each remaining piece is NFC-normalized (if the file says so), then normalized added
//!    tokens are cut out of it;
//! 3. the rest is split by a hand-written scanner equivalent to the Qwen2 regex (or GPT-2's,
//!    for a plain ByteLevel pre-tokenizer; module `pretokenize`), and
//! 4. each word's bytes are merged by BPE rank (module `merge`), through a per-[`Encoder`] cache.
//!
//! The byte-level mapping (bytes to printable characters) only matters when reading the
//! vocabulary: ids are looked up by the bytes a token stands for, so encoding never builds
//! the mapped strings. Files of any other shape are declined with `Ok(None)` by
//! [`FastBpe::from_tokenizer_json`], and callers then use `tokenizers` itself.

mod load;
mod merge;
mod pretokenize;
mod tables;
#[cfg(test)]
mod tests;

use std::path::Path;

// NFC comes from `unicode-normalization-alignments`, the crate `tokenizers` itself normalizes
// with (so it is already built as part of the dependency tree), rather than the newer
// `unicode-normalization`: its tables are those of Unicode 9, and characters assigned since
// then compose and reorder differently in newer tables, so only the same crate guarantees the
// same normalized text.
use unicode_normalization_alignments::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use merge::{FxHashMap, Merges, Scratch};

/// Words of at most this many bytes are cached; `tokenizers` uses the same bound.
const CACHE_MAX_WORD: usize = 256;
/// The cache is emptied when it reaches this many words, which bounds an encoder's memory
/// (to about 25 MB) on corpora with an unbounded vocabulary of words, such as hashes.
const CACHE_MAX_ENTRIES: usize = 1 << 18;

/// A byte-level BPE tokenizer loaded from a `tokenizer.json`, immutable and shareable
/// between threads. Encode with [`FastBpe::encoder`] (one per thread, it keeps a word cache)
/// or, for occasional calls, [`FastBpe::encode`].
pub struct FastBpe {
    merges: Merges,
    /// Whether the normalizer is NFC (otherwise there is none).
    nfc: bool,
    /// The pre-tokenizer regex.
    pattern: pretokenize::Pattern,
    /// Added tokens matched in the raw text.
    raw_added: AddedTokens,
    /// Added tokens matched in the normalized text (their content normalized).
    normalized_added: AddedTokens,
}

/// An added token's content and id.
type AddedToken = (Box<[u8]>, u32);

/// A set of added tokens to cut out of text: leftmost match first, longest at a position.
struct AddedTokens {
    /// For each first byte, the tokens starting with it, longest first: (content, id).
    by_first_byte: FxHashMap<u8, Vec<AddedToken>>,
    /// Whether any token starts with this byte, for a quick scan.
    starts: [bool; 256],
}

impl AddedTokens {
    fn new(mut tokens: Vec<(String, u32)>) -> AddedTokens {
        let mut set = AddedTokens {
            by_first_byte: FxHashMap::default(),
            starts: [false; 256],
        };
        // Longest first, so the first match at a position is the leftmost-longest one.
        tokens.sort_by_key(|(content, _)| std::cmp::Reverse(content.len()));
        for (content, id) in tokens {
            let Some(&first) = content.as_bytes().first() else {
                continue;
            };
            set.starts[usize::from(first)] = true;
            let list = set.by_first_byte.entry(first).or_default();
            list.push((content.into_bytes().into_boxed_slice(), id));
        }
        set
    }

    fn is_empty(&self) -> bool {
        self.by_first_byte.is_empty()
    }

    /// Splits `text` into pieces of plain text (`Err`) and added token ids (`Ok`), in order;
    /// empty text pieces are skipped, as `tokenizers` drops empty splits.
    fn split<'t>(&self, text: &'t str, mut piece: impl FnMut(Result<u32, &'t str>)) {
        let bytes = text.as_bytes();
        let mut plain_start = 0;
        let mut i = 0;
        while i < bytes.len() {
            if self.starts[usize::from(bytes[i])] {
                let candidates = self.by_first_byte.get(&bytes[i]).map_or(&[][..], |v| v);
                if let Some((content, id)) =
                    candidates.iter().find(|(c, _)| bytes[i..].starts_with(c))
                {
                    // Contents are whole strings, so a match ends on a char boundary.
                    if plain_start < i {
                        piece(Err(&text[plain_start..i]));
                    }
                    piece(Ok(*id));
                    i += content.len();
                    plain_start = i;
                    continue;
                }
            }
            i += 1;
        }
        if plain_start < bytes.len() {
            piece(Err(&text[plain_start..]));
        }
    }
}

impl FastBpe {
    /// Loads `path` (a `tokenizer.json`). Returns `Ok(None)` when the file is valid JSON but
    /// has a shape this encoder does not reproduce exactly (another normalizer, pre-tokenizer
    /// regex or model type, a post-processor that adds tokens, added tokens with
    /// `lstrip`/`rstrip`/`single_word`, ...), in which case the caller should use
    /// `tokenizers`; errors are for unreadable or malformed files.
    pub fn from_tokenizer_json(path: &Path) -> Result<Option<FastBpe>, super::Error> {
        let text = std::fs::read_to_string(path).map_err(|e| super::Error::io(path, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| super::Error::Tokenizer {
                path: path.to_path_buf(),
                reason: format!("not valid JSON ({e}); pass a Hugging Face tokenizer.json"),
            })?;
        load::from_json(&json).map_err(|reason| super::Error::Tokenizer {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// A new encoder with an empty word cache; create one per worker thread.
    pub fn encoder(&self) -> Encoder<'_> {
        Encoder {
            bpe: self,
            cache: FxHashMap::default(),
            scratch: Scratch::default(),
            normalized: String::new(),
        }
    }

    /// Appends the ids of `text` to `out`. This builds a fresh encoder (and so an empty
    /// cache) per call; for many texts, keep an [`Encoder`] instead.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) {
        self.encoder().encode(text, out);
    }
}

/// Per-thread encoding state: a cache from word bytes to their ids and reusable buffers.
pub struct Encoder<'a> {
    bpe: &'a FastBpe,
    cache: FxHashMap<Box<[u8]>, Box<[u32]>>,
    scratch: Scratch,
    normalized: String,
}

impl Encoder<'_> {
    /// Appends the ids of `text` to `out`, the same ids as
    /// `tokenizers::Tokenizer::encode_fast(text, true)` on the same file.
    pub fn encode(&mut self, text: &str, out: &mut Vec<u32>) {
        let bpe = self.bpe;
        if bpe.raw_added.is_empty() {
            self.encode_plain(text, out);
            return;
        }
        bpe.raw_added.split(text, |piece| match piece {
            Ok(id) => out.push(id),
            Err(plain) => self.encode_plain(plain, out),
        });
    }

    /// Normalizes a piece of text without raw added tokens and encodes it.
    fn encode_plain(&mut self, text: &str, out: &mut Vec<u32>) {
        let bpe = self.bpe;
        // NFC changes nothing in ASCII text, and the quick check proves most other text
        // normalized without building a copy.
        let needs_nfc =
            bpe.nfc && !text.is_ascii() && is_nfc_quick(text.chars()) != IsNormalized::Yes;
        // The normalized copy lives in a buffer kept across calls; it is taken out of `self`
        // while the words borrow it.
        let mut buffer = std::mem::take(&mut self.normalized);
        let normalized = if needs_nfc {
            buffer.clear();
            buffer.extend(text.nfc().map(|(c, _)| c));
            buffer.as_str()
        } else {
            text
        };
        if bpe.normalized_added.is_empty() {
            self.encode_words(normalized, out);
        } else {
            bpe.normalized_added.split(normalized, |piece| match piece {
                Ok(id) => out.push(id),
                Err(plain) => self.encode_words(plain, out),
            });
        }
        self.normalized = buffer;
    }

    /// Pre-tokenizes normalized text and encodes each word.
    fn encode_words(&mut self, text: &str, out: &mut Vec<u32>) {
        pretokenize::split(self.bpe.pattern, text, |word| {
            self.encode_word(word.as_bytes(), out)
        });
    }

    #[inline]
    fn encode_word(&mut self, word: &[u8], out: &mut Vec<u32>) {
        let merges = &self.bpe.merges;
        if word.len() == 1 {
            out.push(merges.byte_ids[usize::from(word[0])]);
            return;
        }
        if word.len() > CACHE_MAX_WORD {
            merges.encode_word(word, out, &mut self.scratch);
            return;
        }
        if let Some(ids) = self.cache.get(word) {
            out.extend_from_slice(ids);
            return;
        }
        let start = out.len();
        merges.encode_word(word, out, &mut self.scratch);
        if self.cache.len() >= CACHE_MAX_ENTRIES {
            self.cache.clear();
        }
        self.cache.insert(word.into(), out[start..].into());
    }
}
