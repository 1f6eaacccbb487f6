//! Integration tests of the `pretrain` binary, one test binary. Table of contents:
//! - `cli::preprocess`: JSONL inputs (files, directories, globs, several keys) and every bad input
//!   the issue names: each a one-line error naming file and position, a non-zero exit, and
//!   nothing under the final output name.
//! - `cli::inspect`: statistics, decoding and corrupt-file errors of `inspect-data`.

mod cli;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Qwen3 tokenizer directory fetched by `scripts/fetch-assets.sh`.
pub fn qwen3_dir() -> PathBuf {
    let cache = std::env::var_os("PRETRAIN_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache"));
    let dir = cache.join("tokenizers/qwen3");
    assert!(
        dir.join("tokenizer.json").is_file(),
        "{} is missing: run scripts/fetch-assets.sh first",
        dir.display()
    );
    dir
}

/// Runs `pretrain <args>`.
pub fn pretrain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pretrain"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pretrain")
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a failure with `code` whose last stderr line is one line containing every needle.
pub fn assert_fails(o: &Output, code: i32, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "last stderr line `{last}`");
    for n in needles {
        assert!(last.contains(n), "`{last}` lacks `{n}`");
    }
}

/// Names of the files in `dir`.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
