#!/usr/bin/env bash
# Build the plugins and the gateway, then serve the quickstart on
# 127.0.0.1:8080 with three embedded demo backends. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_apt cmake protobuf-compiler
need_wasm_target
cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml --target-dir plugins/target
cargo build --release -p switchyard
echo ">> try: curl -s http://127.0.0.1:8080/   (demo-1, demo-2, demo-3 in turn)"
exec cargo run --release -q -p switchyard -- run --config examples/quickstart/switchyard.toml
