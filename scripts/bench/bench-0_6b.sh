#!/usr/bin/env bash
# Qwen3-0.6B at its 4096-token context on this machine: one process, micro-batch 1, every
# layer recomputed (recompute_config.recompute: True), trained for STEPS steps on the
# quickstart corpus (Qwen3 tokenizer) with a checkpoint at the end; then the same run stopped
# after STEPS-1 steps and resumed for the last one, which must end with the same checkpoint
# bytes. Prints the memory plan, s/step and MFU (metrics.jsonl), and the peak RSS (GNU time).
#
# Usage: scripts/bench/bench-0_6b.sh [STEPS=2]   (each step is minutes on 2 cores)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
steps=${1:-2}
out=${BENCH_OUT:-/tmp/bench-0_6b}
rm -rf "$out"
cargo build --release --locked -p pretrain-runtime 2>&1 | tail -1
bin=target/release/pretrain
data=output/quickstart/shakespeare_text_document
[ -f "$data.idx" ] || "$bin" preprocess --input data/shakespeare.jsonl \
  --output-prefix output/quickstart/shakespeare --tokenizer-dir .cache/tokenizers/qwen3 --append-eod
args=(--config configs/qwen3/pretrain_qwen3_0_6b_4k.yaml
  --parallel_config.data_parallel 1 --runner_config.batch_size 1
  --runner_config.gradient_accumulation_steps 1 --recompute_config.recompute True
  --load_checkpoint '' --resume_training False
  --tokenizer_dir .cache/tokenizers/qwen3
  --train_dataset.data_loader.sizes "[$steps, 0, 0]"
  --train_dataset.data_loader.config.data_path "['1', '$data']"
  --lr_schedule.total_steps 50000 --callbacks.1.async_save False
  --callbacks.1.save_checkpoint_steps 1 --callbacks.1.keep_checkpoint_max 2)
"$bin" train "${args[@]}" --output_dir "$out/straight" --dry-run
/usr/bin/time -v "$bin" train "${args[@]}" --output_dir "$out/straight" 2> "$out.time" \
  | tail -4
grep -E "Maximum resident|Elapsed" "$out.time"
python3 - "$out/straight/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:
    print(f"step {r['step']}: {r['step_time_ms']/1e3:.1f} s, loss {r['loss']:.4f}, "
          f"{r['tokens_per_sec']:.0f} tokens/s, MFU {100*r['mfu']:.1f}%, RSS {r['memory_rss_bytes']/2**30:.2f} GiB")
PY
# Stop after steps-1, resume for the last step.
"$bin" train "${args[@]}" --output_dir "$out/split" --runner_config.train_iters $((steps - 1)) | tail -1
"$bin" train "${args[@]}" --output_dir "$out/split" --load_checkpoint auto --resume_training True | tail -1
last=$(printf "iteration_%08d" "$steps")
for f in model.safetensors optimizer.safetensors; do
  cmp "$out/straight/checkpoint/$last/$f" "$out/split/checkpoint/$last/$f" \
    && echo "resume: $f identical"
done
