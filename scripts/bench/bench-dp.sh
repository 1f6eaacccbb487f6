#!/usr/bin/env bash
# Data-parallel scaling on one machine, side by side in one invocation: the quickstart model
# (configs/qwen3/qwen3_tiny.yaml, global batch 8 x 128 tokens) trained by
#   A: one process with 2 threads (RAYON_NUM_THREADS=2), and
#   B: `pretrain launch` with data_parallel 2, one thread each (RAYON_NUM_THREADS=1),
# alternating. Each round prints both throughputs (median tokens/s over the steps after the
# first two, from metrics.jsonl) and B/A; the end prints the median and spread. The issue's
# goal is B/A >= 0.90.
#
# Usage: scripts/bench/bench-dp.sh [ROUNDS=3] [STEPS=12]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
rounds=${1:-3}; steps=${2:-12}
cargo build --release --locked -p pretrain-runtime 2>&1 | tail -1
bin=target/release/pretrain
data=output/quickstart/shakespeare_text_document
if [ ! -f "$data.bin" ]; then
  scripts/fetch-assets.sh >/dev/null
  "$bin" preprocess --input data/shakespeare.jsonl --output-prefix output/quickstart/shakespeare \
    --tokenizer-dir .cache/tokenizers/qwen3 --append-eod --workers 2 >/dev/null
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
common=(--config configs/qwen3/qwen3_tiny.yaml --runner_config.train_iters "$steps"
  --lr_schedule.warmup_steps 1 --runner_config.batch_size 4)
median_tps() {
  python3 - "$1" <<'PY'
import json, statistics, sys
v = [json.loads(l)["tokens_per_sec"] for l in open(sys.argv[1])][2:]
print(f"{statistics.median(v):.0f}")
PY
}
ratios=()
for r in $(seq "$rounds"); do
  rm -rf "$tmp/a" "$tmp/b"
  RAYON_NUM_THREADS=2 RUST_LOG=warn "$bin" train "${common[@]}" --output_dir "$tmp/a" \
    --runner_config.gradient_accumulation_steps 2 >/dev/null
  RAYON_NUM_THREADS=1 RUST_LOG=warn "$bin" launch --worker-num 2 --master-port $((29700 + r)) \
    --log-dir "$tmp/b/log" -- train "${common[@]}" --output_dir "$tmp/b" \
    --parallel_config.data_parallel 2 --runner_config.gradient_accumulation_steps 1 >/dev/null
  a=$(median_tps "$tmp/a/metrics.jsonl"); b=$(median_tps "$tmp/b/metrics.jsonl")
  ratio=$(python3 -c "print(f'{$b/$a:.3f}')")
  ratios+=("$ratio")
  echo "round $r: dp1 x 2 threads $a tokens/s | dp2 x 1 thread $b tokens/s | ratio $ratio"
done
python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f'tokens/s, data_parallel 2 x 1 thread / 1 process x 2 threads: median {statistics.median(v):.3f} (min {min(v):.3f}, max {max(v):.3f}, {len(v)} rounds)')" "${ratios[@]}"
