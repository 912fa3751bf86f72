#!/usr/bin/env bash
# Fuzz the MySQL packet decoders (fuzz/fuzz_targets/mysql_packets.rs) for a
# bounded time: `bash scripts/fuzz.sh [seconds]` (default 60). Fails on any
# crash; the crashing input is left in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# This machine has one stable toolchain; cargo fuzz passes nightly flags.
export RUSTC_BOOTSTRAP=1
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
# New inputs go to a scratch corpus; the checked-in seeds stay as they are.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cargo fuzz run --fuzz-dir fuzz --target-dir "$target_dir" mysql_packets "$scratch" fuzz/corpus/mysql_packets -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1
