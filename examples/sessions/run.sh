#!/usr/bin/env bash
# One command: build, then start memcached (127.0.0.1:21211), three cart
# backends (18091-18093) and the gateway with the session strategy named
# by $1: centralized (default), o-session, sticky, replicated or
# centralized-dynamic. `--nodes N` starts N gateway nodes as a cluster
# (HTTP 8080.., admin 9901.., peers 7946..); replicated and
# centralized-dynamic default to 3. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/common.sh
strategy="${1:-centralized}"
nodes=1
case "$strategy" in
    centralized|o-session) mode=header ;;
    replicated|centralized-dynamic) mode=header; nodes=3 ;;
    sticky) mode=memory ;;
    *) echo "usage: $0 [centralized|o-session|sticky|replicated|centralized-dynamic] [--nodes N]" >&2; exit 2 ;;
esac
if [ "${2:-}" = "--nodes" ]; then nodes="${3:?--nodes needs a number}"; fi
need_apt cmake memcached
need_wasm_target
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
dir="$(mktemp -d)"
file="session_${strategy//-/_}.wasm"
export SWITCHYARD_ADMIN_TOKEN="${SWITCHYARD_ADMIN_TOKEN:-examples-sessions-admin-token}"
for n in $(seq 1 "$nodes"); do
    config="$dir/node$n.toml"
    sed -e "s#session_centralized.wasm#$file#" -e "s#\.\./\.\./plugins#$PWD/plugins#" \
        -e "s#127.0.0.1:8080#127.0.0.1:$((8079 + n))#" -e "s#127.0.0.1:9901#127.0.0.1:$((9900 + n))#" \
        examples/sessions/switchyard.toml > "$config"
    if [ "$strategy" = sticky ]; then
        # sticky takes only cookie, ttl_s and secure
        sed -i -e '/^prefix = /d' -e '/^tier = /d' -e '/^static_keys = /d' -e 's/^cookie = "sy_session"/cookie = "sy_backend"/' "$config"
    fi
    if [ "$strategy" = replicated ]; then sed -i 's/^tier = "central"/tier = "replicated"/' "$config"; fi
    if [ "$nodes" -gt 1 ]; then
        {
            echo; echo "[cluster]"; echo "id = $n"; echo "listen = \"127.0.0.1:$((7945 + n))\""
            echo 'key = "examples-sessions-cluster-key-change-me-0123456789"'
            for p in $(seq 1 "$nodes"); do
                [ "$p" = "$n" ] && continue
                echo "[[cluster.peers]]"; echo "id = $p"; echo "address = \"127.0.0.1:$((7945 + p))\""
            done
        } >> "$config"
    fi
    "$bin" run --config "$config" & pids+=($!)
    echo ">> node $n: $strategy on http://127.0.0.1:$((8079 + n)) (cart at /cart), admin 127.0.0.1:$((9900 + n))"
done
echo ">> admin token: $SWITCHYARD_ADMIN_TOKEN; Ctrl-C stops everything"
wait
