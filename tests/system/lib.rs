//! Shared fixtures of the system tests: where the repository's assets are, and the real
//! tokenizer fetched by `scripts/fetch-assets.sh`.

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository root")
        .to_path_buf()
}

/// `tests/assets/<rel>`.
pub fn asset(rel: &str) -> PathBuf {
    repo_root().join("tests").join("assets").join(rel)
}

/// The Qwen3 `tokenizer.json` fetched by `scripts/fetch-assets.sh` (or `$PRETRAIN_CACHE_DIR`).
/// Panics with the command to run when it is missing: the tests need the real tokenizer.
pub fn qwen3_tokenizer() -> PathBuf {
    let cache = std::env::var_os("PRETRAIN_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache"));
    let path = cache.join("tokenizers/qwen3/tokenizer.json");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-assets.sh first",
        path.display()
    );
    path
}
