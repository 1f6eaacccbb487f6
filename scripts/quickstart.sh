#!/usr/bin/env bash
# The quickstart: build `pretrain`, tokenize the bundled corpus (data/shakespeare.jsonl, 20
# Shakespeare plays) with the real Qwen3 tokenizer into a Megatron dataset, inspect it, and
# train the tiny Qwen3 config (configs/qwen3/qwen3_tiny.yaml) on it for 200 steps on the CPU.
# Outputs go to ./output/quickstart and ./output/qwen3_tiny.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh
out=output/quickstart
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

echo "== training configs/qwen3/qwen3_tiny.yaml (200 steps, a few minutes on 2 cores)"
# overwrite_output_dir: running the quickstart again starts over (a fresh run into a directory
# with committed checkpoints is otherwise refused).
"$bin" train --config configs/qwen3/qwen3_tiny.yaml --overwrite_output_dir True

cat <<TXT

Done.
  dataset:     $out/shakespeare_text_document.{bin,idx}
  checkpoints: output/qwen3_tiny/checkpoint/iteration_*/ (load with transformers'
               AutoModelForCausalLM.from_pretrained(dir) and AutoTokenizer.from_pretrained(dir))
  metrics:     output/qwen3_tiny/metrics.jsonl, TensorBoard files in output/qwen3_tiny/tensorboard
Next:
  $bin train --config configs/qwen3/qwen3_tiny.yaml --runner_config.epochs 2 \\
      --resume_training True --load_checkpoint auto      # continue where it stopped
  $bin inspect-data $out/shakespeare_text_document --tokenizer-dir $tok --sequence 5
  $bin preprocess --help        # your own JSONL (files, directories or globs)
TXT
