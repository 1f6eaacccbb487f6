#!/usr/bin/env bash
# Training-step benchmark against PyTorch eager, side by side in one invocation: the bench model
# of compute.md (hidden 512, 8 layers, 8 query / 4 KV heads, head_dim 64, intermediate 1536,
# vocab 32000, untied, seq 256, batch 4, f32, AdamW) with the same thread count on both sides.
# Rounds alternate the two; each prints its ratio (pretrain tokens/s / torch tokens/s), the end
# prints the median and spread.
#
# Usage: scripts/bench/bench-train.sh [ROUNDS=3] [THREADS=2] [STEPS=8] [PRECISION=f32|bf16]
# bf16: `compute_dtype: bfloat16` against the same model under torch.autocast(bfloat16).
# The PyTorch side needs a venv outside the repo ($TORCH_VENV, default /work/venvs/torch) with
# torch and transformers (PyPI's torch is the ~5 GB CUDA build; it runs on CPU):
#   python3 -m venv /work/venvs/torch && /work/venvs/torch/bin/pip install torch transformers
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
rounds=${1:-3}; threads=${2:-2}; steps=${3:-8}; precision=${4:-f32}
case "$precision" in
  f32) flag=() ;;
  bf16) flag=(--bf16) ;;
  *) echo "PRECISION must be f32 or bf16, not '$precision'" >&2; exit 2 ;;
esac
venv=${TORCH_VENV:-/work/venvs/torch}
[ -x "$venv/bin/python" ] || { echo "no PyTorch venv at $venv (see the header of this script)" >&2; exit 1; }
cargo build --release --locked -p pretrain-runtime --example train_step 2>&1 | tail -1
ratios=()
for r in $(seq "$rounds"); do
  ours=$(RAYON_NUM_THREADS=$threads target/release/examples/train_step --steps "$steps" "${flag[@]}" | tail -1)
  theirs=$(OMP_NUM_THREADS=$threads "$venv/bin/python" scripts/bench/torch_train_step.py \
    --threads "$threads" --steps "$steps" "${flag[@]}" | tail -1)
  o=$(echo "$ours" | grep -oE '[0-9.]+ tokens/s' | cut -d' ' -f1)
  t=$(echo "$theirs" | grep -oE '[0-9.]+ tokens/s' | cut -d' ' -f1)
  ratio=$(python3 -c "print(f'{$o/$t:.2f}')")
  ratios+=("$ratio")
  echo "round $r: $ours | $theirs | ratio $ratio"
done
python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f'train step tokens/s, pretrain / torch ($precision, $threads threads): median {statistics.median(v):.2f} (min {min(v):.2f}, max {max(v):.2f}, {len(v)} rounds)')" "${ratios[@]}"
