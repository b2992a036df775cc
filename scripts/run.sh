#!/usr/bin/env bash
# Build driftwatch and run the agent on this node with the embedded default
# config. Extra arguments go to `driftwatch run` (see `driftwatch run --help`).
# Needs root (loads eBPF programs). Installs missing build packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked
exec ./target/release/driftwatch run "$@"
