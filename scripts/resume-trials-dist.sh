#!/usr/bin/env bash
# Exact-resume trials through the launcher: trains the tiny config with 4 workers
# (data_parallel 2 x pipeline_stage 2, ZeRO-1) straight through once; then, per trial, starts
# `pretrain launch --max-restarts 5`, kills one random worker (random rank) with SIGKILL at a
# random moment (mid-step, mid-checkpoint or at start-up), lets the launcher restart the gang
# from the newest complete checkpoint, and compares the final weights, every part's optimizer
# state and every step's loss with the uninterrupted run, bit for bit.
#
# Usage: scripts/resume-trials-dist.sh [TRIALS=20] [STEPS=60]
# Needs the quickstart's dataset (output/quickstart/shakespeare_text_document).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
trials=${1:-20}; steps=${2:-60}
bin=target/release/pretrain
[ -x "$bin" ] || cargo build --release --locked -p pretrain-runtime
data=output/quickstart/shakespeare_text_document
[ -f "$data.idx" ] || { echo "run scripts/quickstart.sh first (needs $data)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
args=(--config configs/qwen3/qwen3_tiny.yaml --tokenizer_dir= --runner_config.batch_size 1
  --train_dataset.data_loader.config.seq_length 32 --model.model_config.seq_length 32
  --runner_config.train_iters "$steps" --lr_schedule.warmup_steps 2
  --parallel_config.data_parallel 2 --parallel_config.pipeline_stage 2
  --parallel_config.micro_batch_num 2 --parallel.enable_parallel_optimizer True
  --callbacks.1.save_checkpoint_steps 3 --callbacks.1.keep_checkpoint_max 2)
final() { echo "$1/checkpoint/iteration_$(printf %08d "$steps")"; }
digest() { (cd "$(final "$1")" && sha256sum model.safetensors shards/*.safetensors); }
losses() { python3 -c 'import json,sys
by_step={}
for l in open(sys.argv[1]): m=json.loads(l); by_step[m["step"]]=m["loss"]
print(" ".join(repr(by_step[s]) for s in sorted(by_step)))' "$1/metrics.jsonl"; }
launch() { # out port [extra launcher options]
  local out=$1 port=$2; shift 2
  RUST_LOG=info "$bin" launch --worker-num 4 --master-port "$port" --log-dir "$out/log" \
    --grace-period 5 "$@" -- train "${args[@]}" --output_dir "$out"
}

launch "$work/straight" 29800 >/dev/null 2>&1
want=$(digest "$work/straight"); want_losses=$(losses "$work/straight")
pass=0; fail=0
for t in $(seq "$trials"); do
  out="$work/trial$t"
  delay=$(python3 -c "import random; print(round(random.uniform(0.5, 4.0), 2))")
  victim=$((RANDOM % 4))
  launch "$out" $((29800 + t)) --max-restarts 5 >/dev/null 2>"$work/launcher$t.err" &
  lpid=$!
  sleep "$delay"
  wpid=$(grep -oE "worker started rank=$victim pid=[0-9]+" "$work/launcher$t.err" | tail -1 | grep -oE '[0-9]+$' || true)
  killed=no
  if [ -n "$wpid" ] && kill -9 "$wpid" 2>/dev/null; then killed=yes; fi
  code=0; wait "$lpid" || code=$?
  restarts=$(grep -c "restarting the workers" "$work/launcher$t.err" || true)
  if [ "$code" -eq 0 ] && [ "$(digest "$out")" = "$want" ] && [ "$(losses "$out")" = "$want_losses" ]; then
    pass=$((pass + 1)); verdict=identical
  else
    fail=$((fail + 1)); verdict="DIFFERENT (launcher exit $code)"
  fi
  echo "trial $t: SIGKILL rank $victim after ${delay}s (killed: $killed, restarts: $restarts), finished step $steps: $verdict"
done
echo "distributed resume trials: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
