#!/usr/bin/env bash
# Build round_robin_js.wasm with jco + componentize-js (from npm).
# Usage: bash plugins/js/round-robin/build.sh OUT_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-$root/plugins/target/wasm32-wasip2/release}
tools=${SWITCHYARD_TOOLS:-$HOME/.cache/switchyard/tools}/js
if [ ! -x "$tools/node_modules/.bin/jco" ]; then
    mkdir -p "$tools"
    (cd "$tools" && npm init -y >/dev/null && npm install --silent --no-fund --no-audit \
        @bytecodealliance/jco@1 @bytecodealliance/componentize-js@0 >/dev/null 2>&1)
fi
mkdir -p "$out"
# Only the clock import is used; leave out WASI interfaces the host would
# otherwise have to provide for the JS engine's optional features.
# componentize-js reads the WIT through a WASI sandbox: paths relative to the repo root.
cd "$root"
"$tools/node_modules/.bin/componentize-js" plugins/js/round-robin/round-robin.js --wit wit -n lb-policy \
    -d http fetch-event -o "$out/round_robin_js.wasm" >/dev/null
echo "built $out/round_robin_js.wasm"
