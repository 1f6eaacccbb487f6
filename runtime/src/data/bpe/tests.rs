//! Equivalence of [`FastBpe`] with the `tokenizers` crate on the Qwen3 tokenizer: a real
//! corpus, hand-picked edge cases, random strings, every code point through the scanner, and
//! variants of the file (ignore_merges, normalized added tokens, declined shapes).

use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value;
use tokenizers::utils::SysRegex;
use tokenizers::Tokenizer;

use super::pretokenize::{class_of, split, Class, Pattern, GPT2_PATTERN, QWEN2_PATTERN};
use super::FastBpe;

const QWEN3: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../.cache/tokenizers/qwen3/tokenizer.json"
);
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/shakespeare.jsonl");

fn fast() -> &'static FastBpe {
    static FAST: OnceLock<FastBpe> = OnceLock::new();
    FAST.get_or_init(|| {
        FastBpe::from_tokenizer_json(Path::new(QWEN3))
            .expect("tokenizer.json loads")
            .expect("the Qwen3 shape is supported")
    })
}

fn hf() -> &'static Tokenizer {
    static HF: OnceLock<Tokenizer> = OnceLock::new();
    HF.get_or_init(|| Tokenizer::from_file(QWEN3).expect("tokenizers loads the file"))
}

fn qwen3_json() -> Value {
    serde_json::from_str(&std::fs::read_to_string(QWEN3).expect("read")).expect("json")
}

fn hf_ids(tok: &Tokenizer, text: &str) -> Vec<u32> {
    tok.encode_fast(text, true)
        .expect("encode")
        .get_ids()
        .to_vec()
}

/// Compares both encoders on `texts` (reusing one cached encoder, and for short texts also
/// the uncached path) and returns how many were compared.
fn assert_same<'t>(
    fast: &FastBpe,
    hf: &Tokenizer,
    texts: impl IntoIterator<Item = &'t str>,
) -> usize {
    let mut encoder = fast.encoder();
    let mut count = 0;
    for text in texts {
        let mut ours = Vec::new();
        encoder.encode(text, &mut ours);
        assert_eq!(ours, hf_ids(hf, text), "text {text:?}");
        if text.len() < 200 {
            let mut fresh = Vec::new();
            fast.encode(text, &mut fresh);
            assert_eq!(fresh, ours, "uncached, text {text:?}");
        }
        count += 1;
    }
    count
}

const TRICKY: &[&str] = &[
    "",
    " ",
    "  ",
    "a",
    "Hello, world! The quick brown fox.",
    "it's IT'S we'll WE'LL they're THEY'RE I've I'VE I'm I'M he'd HE'D don't DON'T 'S 'LL 'rE 'Ve",
    "'",
    "''",
    "'s's",
    "x'ſ",
    "'ſt",
    "'\u{17f}",
    "'K",
    "'\u{212a}",
    "'ll'",
    "'l",
    "'r",
    "'re'",
    "' s",
    "1234567890",
    "3.14159 2,718 1e10 ٣٤٥ ½ Ⅻ ²³",
    "v1.2.3-rc4",
    "0x1F 0b1010",
    "中文字符测试，你好世界！",
    "日本語のテキスト。カタカナ",
    "한국어 텍스트",
    "Привет, мир",
    "مرحبا بالعالم",
    "😀😃👍🏽 👨‍👩‍👧 🇺🇸🇫🇷 ❤️",
    "e\u{301} é E\u{301}\u{327} A\u{30a} \u{1100}\u{1161}\u{11a8} Å Ω K",
    "\u{301}abc",
    "a\u{301}\u{301}\u{301}b",
    "\u{0}\u{1}\u{7f}\u{80}\u{9f}",
    "\u{feff}BOM",
    "zero\u{200b}width\u{200d}joiner",
    "\u{fffd}\u{fffd}",
    "\u{d7ff}\u{e000}\u{f8ff}\u{ffff}\u{10ffff}",
    "line1\r\nline2\r\n\r\nline3\n\n\n",
    "\r\r\n\n\r",
    " \r\n ",
    "a \n b",
    "\n \n  \n",
    "trailing spaces   ",
    "trailing tab\t",
    "\t\tindented\ttabs",
    "a    b     c",
    "   leading",
    "x  \u{3000}y",
    "\u{a0}nbsp\u{a0} \u{2028}ls\u{2029}ps\u{85}nel\u{b}vt\u{c}ff",
    "a<|endoftext|>b",
    "<|im_start|>user\nHello<|im_end|>\n",
    "<|endoftext|><|endoftext|>",
    "<|endoftext|",
    "<|im_start|><think>x</think><tool_call>",
    " <|endoftext|> ",
    "<<|endoftext|>>",
    "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
    "e\u{301}<|endoftext|>\u{301}",
    "!!!???...",
    " !!!\n\n",
    "--- ***\r\n",
    "foo.bar(baz)",
    "http://example.com/a?b=c&d=e",
    "    def f(x):\n        return x  # comment\n",
    "{\"key\": [1, 2, 3]}",
    "ab\u{300}\u{316}cd",
    "\u{e9}\u{301}",
    "\u{fb01}fi ligature",
    "ǅǈǋ titlecase",
    "ǅ'S",
];

#[test]
fn known_vector() {
    // Workers share one `FastBpe` across threads.
    fn shareable<T: Send + Sync>() {}
    shareable::<FastBpe>();
    let mut ids = Vec::new();
    fast().encode("Hello, world! The quick brown fox.", &mut ids);
    assert_eq!(ids, [9707, 11, 1879, 0, 576, 3974, 13876, 38835, 13]);
}

#[test]
fn tricky_strings_match_tokenizers() {
    assert_same(fast(), hf(), TRICKY.iter().copied());
    // Long words go through the priority-queue merge path.
    let long: Vec<String> = vec![
        "a".repeat(500),
        "ab".repeat(300),
        "abcdefghij".repeat(40),
        "é".repeat(200),
        "中".repeat(150),
        "!".repeat(400),
        " ".repeat(300),
        "\n".repeat(300),
        format!("x{}y", "-".repeat(1000)),
    ];
    assert_same(fast(), hf(), long.iter().map(String::as_str));
}

#[test]
fn corpus_matches_tokenizers() {
    let text = std::fs::read_to_string(CORPUS).expect("read corpus");
    let docs: Vec<String> = text
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("json line");
            v["text"].as_str().expect("text field").to_owned()
        })
        .collect();
    let n = assert_same(fast(), hf(), docs.iter().map(String::as_str));
    assert!(n > 100, "only {n} documents");
}

/// A small deterministic generator (xorshift64*), to avoid a dependency for tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_text(rng: &mut Rng) -> String {
    const POOLS: &[&[&str]] = &[
        &["a", "b", "Z", "the", "The", "QUICK", "fox", "x", "I"],
        &[
            " ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\n\n", "\u{3000}", "\u{a0}", "\u{2028}",
            "\u{85}", "\u{b}",
        ],
        &[
            "'", "'s", "'S", "'ll", "'LL", "'Re", "'ve", "'d", "'M", ".", ",", "!", "?", "...",
            "--", "\"", "(", ")", "<", ">", "|", "#", "$", "_",
        ],
        &["0", "1", "42", "2024", "3.5", "٣", "½", "²"],
        &[
            "é",
            "e\u{301}",
            "ñ",
            "n\u{303}",
            "Å",
            "A\u{30a}",
            "ſ",
            "ß",
            "\u{301}",
            "\u{308}",
            "\u{327}\u{301}",
            "ǅ",
        ],
        &[
            "中",
            "文",
            "日本語",
            "한국어",
            "\u{1100}\u{1161}",
            "ア",
            "ｱ",
            "。",
            "，",
        ],
        &[
            "😀",
            "👍🏽",
            "👨\u{200d}👩\u{200d}👧",
            "🇺🇸",
            "❤\u{fe0f}",
            "\u{200b}",
        ],
        &[
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<think>",
            "<|",
            "|>",
            "endoftext",
        ],
    ];
    let mut s = String::new();
    for _ in 0..rng.below(40) {
        if rng.below(50) == 0 {
            // Now and then any code point at all.
            if let Some(c) = char::from_u32(rng.below(0x11_0000) as u32) {
                s.push(c);
            }
            continue;
        }
        let pool = POOLS[rng.below(POOLS.len())];
        s.push_str(pool[rng.below(pool.len())]);
    }
    s
}

#[test]
fn random_strings_match_tokenizers() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let texts: Vec<String> = (0..5000).map(|_| random_text(&mut rng)).collect();
    assert_eq!(
        assert_same(fast(), hf(), texts.iter().map(String::as_str)),
        5000
    );
}

#[test]
fn class_table_matches_oniguruma() {
    let regexes = [
        (Class::Letter, SysRegex::new(r"\A\p{L}\z").expect("regex")),
        (Class::Number, SysRegex::new(r"\A\p{N}\z").expect("regex")),
        (Class::Space, SysRegex::new(r"\A\s\z").expect("regex")),
    ];
    let mut buf = [0u8; 4];
    for c in (0..=0x10_FFFFu32).filter_map(char::from_u32) {
        let s = c.encode_utf8(&mut buf);
        let onig = regexes
            .iter()
            .find(|(_, r)| r.find_iter(s).next().is_some())
            .map_or(Class::Other, |(class, _)| *class);
        assert_eq!(class_of(c), onig, "U+{:04X}", c as u32);
    }
}

/// Rewrites `tables.rs` from Oniguruma's classes, for a new `tokenizers`/Oniguruma version:
/// `cargo test --release regenerate_class_table -- --ignored`.
#[test]
#[ignore = "writes src/data/bpe/tables.rs"]
fn regenerate_class_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/data/bpe/tables.rs");
    let old = std::fs::read_to_string(path).expect("read tables.rs");
    let header = &old[..old.find("/// Sorted").expect("table start")];
    let regexes = [("L", r"\A\p{L}\z"), ("N", r"\A\p{N}\z"), ("S", r"\A\s\z")]
        .map(|(name, re)| (name, SysRegex::new(re).expect("regex")));
    let mut ranges: Vec<(u32, u32, &str)> = Vec::new();
    let mut buf = [0u8; 4];
    for c in (0..=0x10_FFFFu32).filter_map(char::from_u32) {
        let s = c.encode_utf8(&mut buf);
        let Some((name, _)) = regexes
            .iter()
            .find(|(_, r)| r.find_iter(s).next().is_some())
        else {
            continue;
        };
        match ranges.last_mut() {
            Some(last) if last.1 + 1 == c as u32 && last.2 == *name => last.1 = c as u32,
            _ => ranges.push((c as u32, c as u32, name)),
        }
    }
    let mut out = format!(
        "{header}/// Sorted, disjoint, inclusive code point ranges and their class ({} ranges).\n\
         #[rustfmt::skip]\npub(super) static RANGES: &[(u32, u32, Class)] = &[\n",
        ranges.len()
    );
    for chunk in ranges.chunks(5) {
        out.push_str("   ");
        for (a, b, name) in chunk {
            out.push_str(&format!(" ({a:#x}, {b:#x}, {name}),"));
        }
        out.push('\n');
    }
    out.push_str("];\n");
    std::fs::write(path, out).expect("write tables.rs");
}

/// The scanner against Oniguruma's own matches of the pattern, for every code point in a
/// few contexts that exercise each alternative.
#[test]
fn scanner_matches_oniguruma_for_every_code_point() {
    let regexes = [
        (Pattern::Qwen2, QWEN2_PATTERN),
        (Pattern::Gpt2, GPT2_PATTERN),
    ]
    .map(|(pattern, re)| (pattern, SysRegex::new(re).expect("regex")));
    let mut checked = 0;
    for c in (0..=0x10_FFFFu32).filter_map(char::from_u32) {
        // Every code point in a few contexts for the optional prefixes, and the contraction
        // and white space alternatives with their neighbours, for sampled ones.
        let mut contexts = vec![format!("'{c}x"), format!("a{c}b1 {c}")];
        if (c as u32) & 7 == 0 || c.is_whitespace() || (c as u32) < 0x3000 {
            contexts.extend([
                format!("'{c}{c}y"),
                format!(" {c}{c}\n"),
                format!("\t{c} \r\n{c}  "),
                format!("12{c}3 {c}"),
            ]);
        }
        for text in &contexts {
            for (pattern, regex) in &regexes {
                let mut ours = Vec::new();
                split(*pattern, text, |p| ours.push(p));
                let theirs: Vec<&str> = regex.find_iter(text).map(|(a, b)| &text[a..b]).collect();
                assert_eq!(ours, theirs, "{pattern:?}, text {text:?}");
                checked += 1;
            }
        }
    }
    assert!(checked > 4_000_000);
}

fn variant(edit: impl FnOnce(&mut Value)) -> (Option<FastBpe>, Tokenizer) {
    let mut json = qwen3_json();
    edit(&mut json);
    let fast = super::load::from_json(&json).expect("loads");
    let hf: Tokenizer = json
        .to_string()
        .parse()
        .expect("tokenizers loads the variant");
    (fast, hf)
}

#[test]
fn ignore_merges_and_normalized_added_tokens_match_tokenizers() {
    let (fast, hf) = variant(|j| {
        j["model"]["ignore_merges"] = Value::Bool(true);
        j["added_tokens"][0]["normalized"] = Value::Bool(true);
        j["added_tokens"][1]["normalized"] = Value::Bool(true);
        // A normalized added token whose content changes under NFC.
        let mut extra = j["added_tokens"][25].clone();
        extra["id"] = Value::from(151669);
        extra["content"] = Value::from("<e\u{301}>");
        extra["normalized"] = Value::Bool(true);
        j["added_tokens"].as_array_mut().expect("list").push(extra);
    });
    let fast = fast.expect("supported");
    let mut rng = Rng(7);
    let mut texts: Vec<String> = (0..2000).map(|_| random_text(&mut rng)).collect();
    texts.extend(TRICKY.iter().map(|s| s.to_string()));
    texts.extend([
        "<é>x<e\u{301}> é<|endoftext|>".to_string(),
        "Ġ hello world".into(),
    ]);
    assert_same(&fast, &hf, texts.iter().map(String::as_str));
}

/// The GPT-2 shape (a ByteLevel pre-tokenizer with its regex, no normalizer), built from the
/// Qwen3 vocabulary since no GPT-2 file ships with the project.
#[test]
fn gpt2_style_pre_tokenizer_matches_tokenizers() {
    let (fast, hf) = variant(|j| {
        j["normalizer"] = Value::Null;
        j["pre_tokenizer"] = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false,
            "trim_offsets": true, "use_regex": true});
    });
    let fast = fast.expect("supported");
    let mut rng = Rng(11);
    let mut texts: Vec<String> = (0..3000).map(|_| random_text(&mut rng)).collect();
    texts.extend(TRICKY.iter().map(|s| s.to_string()));
    let corpus = std::fs::read_to_string(CORPUS).expect("read corpus");
    texts.extend(corpus.lines().take(40).map(|line| {
        let v: Value = serde_json::from_str(line).expect("json line");
        v["text"].as_str().expect("text field").to_owned()
    }));
    assert_same(&fast, &hf, texts.iter().map(String::as_str));
}

#[test]
fn unsupported_shapes_are_declined() {
    type Edit = Box<dyn Fn(&mut Value)>;
    let edits: Vec<Edit> = vec![
        Box::new(|j| j["normalizer"] = serde_json::json!({"type": "NFKC"})),
        Box::new(|j| {
            j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = Value::from(r"\s+|\S+")
        }),
        Box::new(|j| {
            j["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = Value::Bool(true)
        }),
        Box::new(|j| {
            j["pre_tokenizer"] = serde_json::json!({"type": "ByteLevel",
                "add_prefix_space": true, "trim_offsets": true, "use_regex": true})
        }),
        Box::new(|j| j["added_tokens"][0]["lstrip"] = Value::Bool(true)),
        Box::new(|j| j["added_tokens"][3]["id"] = Value::from(5)),
        Box::new(|j| j["model"]["dropout"] = Value::from(0.1)),
        Box::new(|j| j["model"]["continuing_subword_prefix"] = Value::from("##")),
        Box::new(|j| j["model"]["type"] = Value::from("WordPiece")),
        Box::new(|j| {
            j["post_processor"] = serde_json::json!({"type": "TemplateProcessing",
                "single": [], "pair": [], "special_tokens": {}})
        }),
    ];
    for (i, edit) in edits.iter().enumerate() {
        let mut json = qwen3_json();
        edit(&mut json);
        assert!(
            super::load::from_json(&json).expect("parses").is_none(),
            "edit {i}"
        );
    }
}
