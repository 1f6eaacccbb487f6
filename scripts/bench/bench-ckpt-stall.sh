#!/usr/bin/env bash
# Checkpoint stall of Qwen3-0.6B: how long the step loop is blocked by each periodic save,
# synchronous (async_save: False: snapshot, write, verify, commit) against asynchronous
# (async_save: True: snapshot, then the write goes on in the background). Short sequences
# (256 tokens) keep the steps fast; the checkpoint is the full model (2.4 GB of weights,
# 4.8 GB of moments). Saves at steps 2, 4 and 6 of 7 (the first background save also allocates its snapshot
# buffers, which the later ones reuse); prints each stall and the ratio.
#
# Usage: scripts/bench/bench-ckpt-stall.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
out=${BENCH_OUT:-/tmp/bench-ckpt-stall}
rm -rf "$out"
cargo build --release --locked -p pretrain-runtime 2>&1 | tail -1
bin=target/release/pretrain
data=output/quickstart/shakespeare_text_document
[ -f "$data.idx" ] || "$bin" preprocess --input data/shakespeare.jsonl \
  --output-prefix output/quickstart/shakespeare --tokenizer-dir .cache/tokenizers/qwen3 --append-eod
args=(--config configs/qwen3/pretrain_qwen3_0_6b_4k.yaml
  --parallel_config.data_parallel 1 --runner_config.batch_size 1
  --runner_config.gradient_accumulation_steps 1 --load_checkpoint '' --resume_training False
  --tokenizer_dir .cache/tokenizers/qwen3 --lr_schedule.total_steps 50000
  --train_dataset.data_loader.config.seq_length 256 --model.model_config.seq_length 256
  --train_dataset.data_loader.sizes "[7, 0, 0]"
  --train_dataset.data_loader.config.data_path "['1', '$data']"
  --callbacks.1.save_checkpoint_steps 2 --callbacks.1.keep_checkpoint_max 1)
declare -A stall
for mode in False True; do
  "$bin" train "${args[@]}" --output_dir "$out/$mode" --callbacks.1.async_save "$mode" \
    > "$out.$mode.out" 2> "$out.$mode.log"
  # Periodic saves only (steps 2 and 4), not the one at the end of training.
  stall[$mode]=$(grep "checkpoint saved" "$out.$mode.log" | grep -E "step=(2|4|6) " \
    | grep -oE "blocked_ms=[0-9]+" | cut -d= -f2 | tr '\n' ' ')
  echo "async_save $mode: blocked ms per save: ${stall[$mode]}"
  grep -E "background checkpoint done" "$out.$mode.log" | sed 's/^.*INFO //' || true
done
python3 - "${stall[False]}" "${stall[True]}" <<'PY'
import statistics, sys
s = [float(x) for x in sys.argv[1].split()]
a = [float(x) for x in sys.argv[2].split()]
print(f"stall: synchronous median {statistics.median(s)/1e3:.2f} s, asynchronous median "
      f"{statistics.median(a)/1e3:.2f} s: {100*statistics.median(a)/statistics.median(s):.1f}% of synchronous")
PY
