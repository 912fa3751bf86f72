#!/usr/bin/env bash
# One command: build, then start memcached (127.0.0.1:21211), three cart
# backends (18091-18093) and the gateway (8080, admin 9901) with the
# session strategy named by $1: centralized (default), o-session or sticky.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/common.sh
need_apt cmake memcached
need_wasm_target
strategy="${1:-centralized}"
case "$strategy" in
    centralized|o-session) mode=header ;;
    sticky) mode=memory ;;
    *) echo "usage: $0 [centralized|o-session|sticky]" >&2; exit 2 ;;
esac
cargo build --release --target wasm32-wasip2 --manifest-path plugins/session/Cargo.toml --target-dir plugins/target
cargo build --release -p switchyard
bin="${CARGO_TARGET_DIR:-target}/release/switchyard"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
user=(); [ "$(id -u)" -eq 0 ] && user=(-u nobody)
memcached -l 127.0.0.1 -p 21211 -U 0 "${user[@]}" & pids+=($!)
for i in 1 2 3; do
    "$bin" demo-backend --listen "127.0.0.1:1809$i" --name "cart-$i" --sessions "$mode" & pids+=($!)
done
config="$(mktemp -d)/switchyard.toml"
file="session_${strategy//-/_}.wasm"
sed -e "s#session_centralized.wasm#$file#" -e "s#\.\./\.\./plugins#$PWD/plugins#" examples/sessions/switchyard.toml > "$config"
if [ "$strategy" = sticky ]; then
    # sticky takes only cookie, ttl_s and secure
    sed -i -e '/^prefix = /d' -e '/^tier = /d' -e 's/^cookie = "sy_session"/cookie = "sy_backend"/' "$config"
fi
export SWITCHYARD_ADMIN_TOKEN="${SWITCHYARD_ADMIN_TOKEN:-examples-sessions-admin-token}"
echo ">> $strategy on http://127.0.0.1:8080 (cart at /cart); admin token: $SWITCHYARD_ADMIN_TOKEN"
"$bin" run --config "$config"
