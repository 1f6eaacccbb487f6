#!/usr/bin/env bash
# Exact-resume trials: trains the tiny config straight through once, then, per trial, kills the
# trainer with SIGKILL at a random moment (mid-step or mid-checkpoint), relaunches it with
# `--resume_training True --load_checkpoint auto` until it finishes, and compares the final
# weights, optimizer state and per-step losses with the uninterrupted run, bit for bit.
#
# Usage: scripts/resume-trials.sh [TRIALS=20] [STEPS=40]
# Needs the quickstart's dataset (output/quickstart/shakespeare_text_document).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
trials=${1:-20}; steps=${2:-40}
bin=target/release/pretrain
[ -x "$bin" ] || cargo build --release --locked -p pretrain-runtime
data=output/quickstart/shakespeare_text_document
[ -f "$data.idx" ] || { echo "run scripts/quickstart.sh first (needs $data)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
args=(--config configs/qwen3/qwen3_tiny.yaml --tokenizer_dir= --runner_config.batch_size 2
  --train_dataset.data_loader.config.seq_length 32 --model.model_config.seq_length 32
  --runner_config.train_iters "$steps" --lr_schedule.warmup_steps 2
  --callbacks.1.save_checkpoint_steps 3 --callbacks.1.keep_checkpoint_max 2)
final() { echo "$1/checkpoint/iteration_$(printf %08d "$steps")"; }
losses() { python3 -c 'import json,sys
by_step={}
for l in open(sys.argv[1]): m=json.loads(l); by_step[m["step"]]=m["loss"]
print(" ".join(repr(by_step[s]) for s in sorted(by_step)))' "$1/metrics.jsonl"; }

RUST_LOG=warn "$bin" train "${args[@]}" --output_dir "$work/straight" >/dev/null
want_model=$(sha256sum "$(final "$work/straight")/model.safetensors" | cut -d' ' -f1)
want_opt=$(sha256sum "$(final "$work/straight")/optimizer.safetensors" | cut -d' ' -f1)
want_losses=$(losses "$work/straight")
pass=0; fail=0
for t in $(seq "$trials"); do
  out="$work/trial$t"; kills=0
  # Startup takes about a second; steps follow every ~0.1 s: kill anywhere in the run.
  delay=$(python3 -c "import random; print(round(random.uniform(0.3, 5.0), 2))")
  RUST_LOG=warn "$bin" train "${args[@]}" --output_dir "$out" >/dev/null 2>&1 &
  pid=$!
  sleep "$delay"
  if kill -9 "$pid" 2>/dev/null; then kills=1; fi
  wait "$pid" 2>/dev/null || true
  killed_at=$({ wc -l < "$out/metrics.jsonl"; } 2>/dev/null || echo 0)
  until [ -d "$(final "$out")" ]; do
    RUST_LOG=warn "$bin" train "${args[@]}" --output_dir "$out" --resume_training True \
      --load_checkpoint auto >/dev/null
  done
  got_model=$(sha256sum "$(final "$out")/model.safetensors" | cut -d' ' -f1)
  got_opt=$(sha256sum "$(final "$out")/optimizer.safetensors" | cut -d' ' -f1)
  got_losses=$(losses "$out")
  if [ "$got_model" = "$want_model" ] && [ "$got_opt" = "$want_opt" ] && [ "$got_losses" = "$want_losses" ]; then
    pass=$((pass + 1)); verdict=identical
  else
    fail=$((fail + 1)); verdict=DIFFERENT
  fi
  echo "trial $t: SIGKILL after ${delay}s (killed: $kills, $killed_at steps logged), resumed to step $steps: $verdict"
done
echo "resume trials: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
