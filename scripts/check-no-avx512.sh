#!/usr/bin/env bash
# Proves the release build runs correctly on CPUs without AVX-512: the `gemm` crate is built with
# its `x86-v4` (AVX-512) kernels but must pick them at run time only when the CPU has them. Runs
# the Hugging Face parity tests (logits, loss, gradients, AdamW against transformers) under
# qemu-user emulating CPUs without AVX-512: Haswell (AVX2) and Nehalem (SSE4.2). QEMU 7.2 does not
# implement AVX-512, so an AVX-512 instruction would die with SIGILL rather than pass.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if ! command -v qemu-x86_64 >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user >/dev/null
fi
bin=$(cargo test --release --locked -p pretrain-system-tests --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="system" and m.get("executable"): print(m["executable"])' | tail -1)
cd tests
for cpu in Haswell-v4 Nehalem; do
  echo "== parity tests under qemu-x86_64 -cpu $cpu (no AVX-512)"
  qemu-x86_64 -cpu "$cpu" "$bin" hf_parity
done
