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
cargo test --workspace --release --locked
