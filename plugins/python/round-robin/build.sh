#!/usr/bin/env bash
# Build round_robin_py.wasm with componentize-py (from PyPI, in a venv).
# Usage: bash plugins/python/round-robin/build.sh OUT_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-$root/plugins/target/wasm32-wasip2/release}
venv=${SWITCHYARD_TOOLS:-$HOME/.cache/switchyard/tools}/py
if [ ! -x "$venv/bin/componentize-py" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "componentize-py==0.25.1"
fi
mkdir -p "$out"
cd "$here"
"$venv/bin/componentize-py" -d "$root/wit" -w lb-policy componentize app -o "$out/round_robin_py.wasm" >/dev/null
echo "built $out/round_robin_py.wasm"
