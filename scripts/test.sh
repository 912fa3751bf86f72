#!/usr/bin/env bash
# Install what the tests need, build the plugins and the gateway, run every
# test: SDK and plugin unit/property tests, gateway unit tests, end-to-end
# tests against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_apt cmake protobuf-compiler chromium memcached curl openssl nghttp2-client nghttp2-server testssl.sh keepalived iproute2 etcd-server etcd-client
need_mariadb
need_pymysql
need_wasm_target
build_plugins
build_polyglot_plugins
host=$(rustc -vV | sed -n 's/^host: //p')
cargo test --manifest-path plugins/Cargo.toml --target "$host" --target-dir "$(plugin_target_dir)"
cargo test --manifest-path plugins/sql/Cargo.toml --target "$host" --target-dir "$(plugin_target_dir)"
cargo test --manifest-path plugins/session/Cargo.toml --target "$host" --target-dir "$(plugin_target_dir)"
cargo test --manifest-path plugins/access/Cargo.toml --target "$host" --target-dir "$(plugin_target_dir)"
# Every binary: the gateway and switchyard-bench (tests/bench_cli.rs runs `switchyard bench`).
cargo build --workspace --bins
cargo test --workspace
# The SDK's session helpers (behind its `session` feature).
cargo test -p switchyard-sdk --features session
# The MySQL packet decoders under libFuzzer, for a bounded time.
bash scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
# The tests must not change tracked files or leave new ones behind.
if git rev-parse --git-dir >/dev/null 2>&1 && [ -n "$(git status --porcelain)" ]; then
    echo "the test run left the work tree dirty:" >&2
    git status --short >&2
    exit 1
fi
