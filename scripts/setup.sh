#!/usr/bin/env bash
# Installs what building, the quickstart and the tests need on a fresh Debian 12 machine that
# reaches only the package registries (through their ordinary clients), then fetches the real
# assets (scripts/fetch-assets.sh). Idempotent and quick when everything is present.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

missing=()
command -v cc >/dev/null || missing+=(gcc libc6-dev)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found. This project builds with the stable Rust toolchain (rustup);" >&2
  echo "       on Debian without rustup: apt-get install cargo rustc (1.63 is too old: need >= 1.85)" >&2
  exit 1
fi
if command -v rustup >/dev/null; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi

"$root/scripts/fetch-assets.sh" >/dev/null
