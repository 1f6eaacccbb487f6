#!/usr/bin/env bash
# Data-pipeline benchmarks against the Python peers, side by side in one invocation:
#  1. preprocessing tokens/s: `pretrain preprocess` vs scripts/bench/preprocess_baseline.py
#     (what Megatron's tools/preprocess_data.py does: HF `tokenizers` in a multiprocessing pool
#     + megatron-core's IndexedDatasetBuilder), same input, same worker count;
#  2. sample fetch rate: `pretrain`'s GptDataset vs megatron-core's GPTDataset.__getitem__.
# Rounds alternate the two sides; each round prints its ratio, the end prints median and spread.
#
# Usage: scripts/bench/bench-data.sh [ROUNDS=3] [COPIES=4] [WORKERS=2]
# The Python side lives in a venv outside the repo ($BENCH_VENV, default /work/venvs/oracle;
# created on first use: megatron-core 0.16.1 --no-deps, numpy, packaging, tokenizers; no torch).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
rounds=${1:-3}; copies=${2:-4}; workers=${3:-2}
venv=${BENCH_VENV:-/work/venvs/oracle}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --no-deps megatron-core==0.16.1
  "$venv/bin/pip" install -q numpy packaging tokenizers
fi
scripts/setup.sh
cargo build --release --locked -p pretrain-runtime --bin pretrain --example sample_fetch 2>&1 | tail -1
tok=.cache/tokenizers/qwen3/tokenizer.json
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for _ in $(seq "$copies"); do cat data/shakespeare.jsonl; done > "$work/corpus.jsonl"
echo "input: data/shakespeare.jsonl x $copies = $(wc -c < "$work/corpus.jsonl") bytes; workers $workers"

rate() { grep -oE '[0-9.]+ (tokens|samples)/s' | tail -1 | cut -d' ' -f1; }
ratios_pp=(); ratios_sf=()
for r in $(seq "$rounds"); do
  ours=$(target/release/pretrain preprocess --input "$work/corpus.jsonl" --output-prefix "$work/ours" \
    --tokenizer-file "$tok" --append-eod --workers "$workers" | rate)
  theirs=$("$venv/bin/python" scripts/bench/preprocess_baseline.py --input "$work/corpus.jsonl" \
    --output-prefix "$work/theirs" --tokenizer-file "$tok" --workers "$workers" --append-eod | rate)
  cmp -s "$work/ours_text_document.bin" "$work/theirs_text_document.bin" || { echo "outputs differ!"; exit 1; }
  ratio=$(python3 -c "print(f'{$ours/$theirs:.2f}')")
  ratios_pp+=("$ratio")
  echo "round $r preprocess: pretrain $ours tokens/s, python $theirs tokens/s, ratio $ratio (outputs identical)"

  ours=$(target/release/examples/sample_fetch --prefix "$work/ours_text_document" --seq-length 512 -n 20000 2>/dev/null | rate)
  theirs=$("$venv/bin/python" scripts/bench/sample_fetch_baseline.py --prefix "$work/ours_text_document" \
    --seq-length 512 --sizes 2000 0 0 --split 1,0,0 -n 20000 2>/dev/null | rate)
  ratio=$(python3 -c "print(f'{$ours/$theirs:.2f}')")
  ratios_sf+=("$ratio")
  echo "round $r sample fetch: pretrain $ours samples/s, megatron $theirs samples/s, ratio $ratio"
done
summary() { python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[2:]]; print(f'{sys.argv[1]}: median ratio {statistics.median(v):.2f} (min {min(v):.2f}, max {max(v):.2f}, {len(v)} rounds)')" "$@"; }
summary "preprocess tokens/s, pretrain / python" "${ratios_pp[@]}"
summary "sample fetch samples/s, pretrain / megatron" "${ratios_sf[@]}"
