#!/usr/bin/env bash
# Runs every test: formatting, lints, unit, integration and system tests (the Megatron oracle
# fixtures included). The README's test command; CI (.ci/run) runs exactly this.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --release --locked -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --release --locked 2>&1 | tee "$log"
echo "== operator: Dockerfile, chart and API-server tests (scripts/test-apiserver.sh)"
scripts/test-apiserver.sh 2>&1 | tee -a "$log"
echo "== the release build on CPUs without AVX-512 (qemu-user)"
scripts/check-no-avx512.sh 2>&1 | tee -a "$log"
# One closing line over all test binaries (cargo prints one per binary, the last often a
# doc-test binary with 0 tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
