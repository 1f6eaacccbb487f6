#!/usr/bin/env bash
# The quickstart: build `pretrain`, tokenize the bundled corpus (data/shakespeare.jsonl, 20
# Shakespeare plays) with the real Qwen3 tokenizer into a Megatron dataset, and inspect it.
# Outputs go to ./output/quickstart (override with OUT=...).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh
out=${OUT:-output/quickstart}
echo "== building pretrain (release)"
cargo build --release --locked -p pretrain-runtime
bin=target/release/pretrain
tok=.cache/tokenizers/qwen3

echo "== tokenizing data/shakespeare.jsonl"
"$bin" preprocess --input data/shakespeare.jsonl --output-prefix "$out/shakespeare" \
  --tokenizer-type HuggingFaceTokenizer --tokenizer-dir "$tok" --append-eod --workers 2

echo "== inspecting the dataset (training sample 0 at seq_length 64)"
"$bin" inspect-data "$out/shakespeare_text_document" --tokenizer-dir "$tok" \
  --sample 0 --seq-length 64 --split 969,30,1

cat <<TXT

Done. The Megatron dataset is $out/shakespeare_text_document.{bin,idx}.
Next:
  $bin inspect-data $out/shakespeare_text_document --tokenizer-dir $tok --sequence 5
  $bin preprocess --help        # your own JSONL (files, directories or globs)
TXT
