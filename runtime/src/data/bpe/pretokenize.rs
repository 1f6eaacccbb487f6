//! Hand-written scanners equivalent to the Qwen2 pre-tokenizer regex ([`QWEN2_PATTERN`]) and
//! the GPT-2 one of the ByteLevel pre-tokenizer ([`GPT2_PATTERN`]), as Oniguruma runs them
//! with the `Isolated` split behaviour.
//!
//! The regex is a list of alternatives tried in order at each position, with greedy
//! quantifiers and backtracking. Every position of any string starts some match (each code
//! point is a letter, a number, white space or "other", and each class has an alternative
//! that accepts it), so the matches tile the text and the scanner only needs to find where
//! the match that starts at a given position ends. Each alternative is decided below from
//! the classes of the next few code points, in the regex's order of preference.

use super::tables::RANGES;

/// The pre-tokenizer regex of Qwen2, Qwen2.5 and Qwen3 `tokenizer.json` files, exactly as
/// written there; any other pattern makes the fast encoder decline the file.
pub(crate) const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The regex of `tokenizers`' ByteLevel pre-tokenizer with `use_regex` (GPT-2's). The file
/// does not spell it out, so only the tests use it, to check the scanner against Oniguruma.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Which pre-tokenizer regex to reproduce.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Pattern {
    /// [`QWEN2_PATTERN`].
    Qwen2,
    /// [`GPT2_PATTERN`].
    Gpt2,
}

/// The classes of the regex that partition the code points: `\p{L}`, `\p{N}`, `\s`, and the
/// rest. In Unicode these three properties are disjoint, which the generated table relies on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Class {
    /// `\p{L}`: general category L (Lu, Ll, Lt, Lm, Lo).
    Letter,
    /// `\p{N}`: general category N (Nd, Nl, No).
    Number,
    /// `\s`: Oniguruma's Unicode white space.
    Space,
    /// Anything else (punctuation, symbols, marks, controls...).
    Other,
}

/// The class of each ASCII byte, built from the same generated table as the rest of Unicode
/// so the fast path cannot disagree with it.
static ASCII: [Class; 128] = ascii_classes();

const fn ascii_classes() -> [Class; 128] {
    let mut table = [Class::Other; 128];
    let mut r = 0;
    while r < RANGES.len() {
        let (start, end, class) = RANGES[r];
        let mut cp = start;
        while cp <= end && cp < 128 {
            table[cp as usize] = class;
            cp += 1;
        }
        r += 1;
    }
    table
}

/// The class of a code point: a table lookup for ASCII, a binary search otherwise.
#[inline]
pub(crate) fn class_of(c: char) -> Class {
    let cp = c as u32;
    if cp < 128 {
        return ASCII[cp as usize];
    }
    match RANGES.binary_search_by(|&(start, end, _)| {
        if end < cp {
            std::cmp::Ordering::Less
        } else if start > cp {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    }) {
        Ok(i) => RANGES[i].2,
        Err(_) => Class::Other,
    }
}

/// The code point at byte offset `i` of `text` (which must be a char boundary below
/// `text.len()`), its class and its UTF-8 length.
#[inline]
fn at(text: &str, i: usize) -> (char, Class, usize) {
    let b = text.as_bytes()[i];
    if b < 128 {
        return (b as char, ASCII[b as usize], 1);
    }
    // A char boundary that is not ASCII always starts a code point, so this cannot fail;
    // the fallback keeps the function total without a panic path.
    let c = text[i..].chars().next().unwrap_or('\u{FFFD}');
    (c, class_of(c), c.len_utf8())
}

/// Calls `piece` with each non-empty piece of `text`, in order, as Oniguruma's `find_iter`
/// with `pattern` and the `Isolated` behaviour would produce them.
#[inline]
pub(crate) fn split<'t>(pattern: Pattern, text: &'t str, mut piece: impl FnMut(&'t str)) {
    let mut i = 0;
    while i < text.len() {
        let end = match pattern {
            Pattern::Qwen2 => qwen2_match_end(text, i),
            Pattern::Gpt2 => gpt2_match_end(text, i),
        };
        piece(&text[i..end]);
        i = end;
    }
}

/// The white space run starting at `i`: its end, the start of its last character, and the
/// offset of its last `\r` or `\n` if any.
#[inline]
fn space_run(text: &str, i: usize) -> (usize, usize, Option<usize>) {
    let mut run_end = i;
    let mut last_start = i;
    let mut last_break = None;
    while run_end < text.len() {
        let (d, class, m) = at(text, run_end);
        if class != Class::Space {
            break;
        }
        if d == '\r' || d == '\n' {
            last_break = Some(run_end);
        }
        last_start = run_end;
        run_end += m;
    }
    (run_end, last_start, last_break)
}

/// The end of the [`GPT2_PATTERN`] match that starts at byte offset `i`.
fn gpt2_match_end(text: &str, i: usize) -> usize {
    let (c, class, _) = at(text, i);
    // 1. 's|'t|'re|'ve|'m|'ll|'d, case-sensitive.
    if c == '\'' {
        let rest = &text.as_bytes()[i + 1..];
        for suffix in [&b"s"[..], b"t", b"re", b"ve", b"m", b"ll", b"d"] {
            if rest.starts_with(suffix) {
                return i + 1 + suffix.len();
            }
        }
    }
    // 2.-4. ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: a space is only kept when the run
    //    follows it, and a space itself is in none of the three classes.
    let (start, run_class) = if c == ' ' && i + 1 < text.len() {
        (i + 1, at(text, i + 1).1)
    } else {
        (i, class)
    };
    if run_class != Class::Space {
        let mut end = start;
        while end < text.len() {
            let (_, class, m) = at(text, end);
            if class != run_class {
                break;
            }
            end += m;
        }
        return end;
    }
    // 5. \s+(?!\S), else 6. \s+, as in the Qwen2 pattern.
    let (run_end, last_start, _) = space_run(text, i);
    if run_end == text.len() || last_start == i {
        return run_end;
    }
    last_start
}

/// The end of the [`QWEN2_PATTERN`] match that starts at byte offset `i`.
fn qwen2_match_end(text: &str, i: usize) -> usize {
    let len = text.len();
    let (c, class, n) = at(text, i);

    // 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if c == '\'' {
        if let Some(end) = contraction(text, i + n) {
            return end;
        }
    }
    // 2. [^\r\n\p{L}\p{N}]?\p{L}+ : the optional character is tried first, and it can only
    //    be consumed when a letter follows it; a letter itself is never in that class.
    if class == Class::Letter {
        return letters(text, i + n);
    }
    if class != Class::Number && c != '\r' && c != '\n' && i + n < len {
        let (_, next, m) = at(text, i + n);
        if next == Class::Letter {
            return letters(text, i + n + m);
        }
    }
    // 3. \p{N} : a single number character.
    if class == Class::Number {
        return i + n;
    }
    // 4. ` ?[^\s\p{L}\p{N}]+[\r\n]*` : the optional space is only kept when "other"
    //    characters follow it; a space itself is white space, so it cannot start the run.
    if c == ' ' && i + 1 < len && at(text, i + 1).1 == Class::Other {
        return line_breaks(text, others(text, i + 1));
    }
    if class == Class::Other {
        return line_breaks(text, others(text, i));
    }
    // From here on `c` is white space. Find the maximal white space run [i, run_end) and the
    // start of its last character.
    let (run_end, last_start, last_break) = space_run(text, i);
    // 5. \s*[\r\n]+ : `\s*` backtracks from the whole run until `[\r\n]+` can match, i.e. to
    //    the last line break of the run, and `[\r\n]+` then takes just that one character
    //    (any line break after it would have been found first).
    if let Some(k) = last_break {
        return k + 1;
    }
    // 6. \s+(?!\S) : at the end of the text the whole run matches; before a non-space the
    //    run gives back its last character, if that leaves at least one.
    if run_end == len {
        return run_end;
    }
    if last_start > i {
        return last_start;
    }
    // 7. \s+ : a single white space character before a non-space.
    run_end
}

/// Matches the rest of a contraction after the apostrophe at `i`, case-insensitively with
/// Unicode simple case folding, as Oniguruma's `(?i:...)` does: `ſ` (U+017F, which folds to
/// `s`) counts as an `s`, and no other non-ASCII character folds to one of these letters.
fn contraction(text: &str, i: usize) -> Option<usize> {
    let rest = &text[i..];
    let mut chars = rest.chars();
    let first = chars.next()?;
    let lower = |c: char| {
        if c == '\u{17F}' {
            's'
        } else {
            c.to_ascii_lowercase()
        }
    };
    match lower(first) {
        's' | 't' | 'm' | 'd' => Some(i + first.len_utf8()),
        f @ ('r' | 'v' | 'l') => {
            let second = chars.next().map(lower);
            let want = if f == 'l' { 'l' } else { 'e' };
            (second == Some(want)).then_some(i + first.len_utf8() + 1)
        }
        _ => None,
    }
}

/// The end of the run of letters starting at `i`.
#[inline]
fn letters(text: &str, mut i: usize) -> usize {
    while i < text.len() {
        let (_, class, m) = at(text, i);
        if class != Class::Letter {
            break;
        }
        i += m;
    }
    i
}

/// The end of the run of "other" characters (not letter, number or space) starting at `i`.
#[inline]
fn others(text: &str, mut i: usize) -> usize {
    while i < text.len() {
        let (_, class, m) = at(text, i);
        if class != Class::Other {
            break;
        }
        i += m;
    }
    i
}

/// The end of the run of `\r` and `\n` starting at `i`.
#[inline]
fn line_breaks(text: &str, mut i: usize) -> usize {
    let bytes = text.as_bytes();
    while i < bytes.len() && (bytes[i] == b'\r' || bytes[i] == b'\n') {
        i += 1;
    }
    i
}
