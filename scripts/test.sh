#!/usr/bin/env bash
# The project's one test command (README, .ci/run): builds the wasm components,
# then runs the native unit tests and the end-to-end tests that load those
# components in the wasmtime test host.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

echo "== building the components (wasm32-wasip2, release)"
cargo build --target wasm32-wasip2 --release \
    -p detect -p tag -p search -p health -p metrics -p forwarder

echo "== native unit tests, manifest checks, test host and end-to-end tests"
cargo test --release --workspace --exclude detect --exclude tag --exclude search \
    --exclude health --exclude metrics --exclude forwarder
