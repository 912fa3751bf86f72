#!/usr/bin/env bash
# One command: build, then start a 3-member etcd on loopback (clients
# 23791-23793, auth on, user `switchyard`), three demo backends
# (18181-18183) and three gateway nodes (HTTP 8081-8083, admin
# 9911-9913) sharing their plugin versions through it. Push on one node,
# watch the others follow (README.md here). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/common.sh
need_apt cmake protobuf-compiler etcd-server etcd-client
need_wasm_target
cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml --target-dir plugins/target
cargo build --release -p switchyard
bin="${CARGO_TARGET_DIR:-target}/release/switchyard"
dir="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT
cluster="m1=http://127.0.0.1:23801,m2=http://127.0.0.1:23802,m3=http://127.0.0.1:23803"
for i in 1 2 3; do
    etcd --name "m$i" --data-dir "$dir/m$i" \
        --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
        --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
        --initial-cluster "$cluster" --initial-cluster-token switchyard-example --initial-cluster-state new \
        2> "$dir/m$i.log" & pids+=($!)
done
etcdctl=(env ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793)
for _ in $(seq 1 50); do "${etcdctl[@]}" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
export SWITCHYARD_ETCD_PASSWORD="${SWITCHYARD_ETCD_PASSWORD:-examples-fleet-etcd-password}"
export SWITCHYARD_ADMIN_TOKEN="${SWITCHYARD_ADMIN_TOKEN:-examples-fleet-admin-token}"
root_pw="examples-fleet-root-password"
"${etcdctl[@]}" user add "root:$root_pw" --interactive=false >/dev/null
"${etcdctl[@]}" user grant-role root root >/dev/null
"${etcdctl[@]}" user add "switchyard:$SWITCHYARD_ETCD_PASSWORD" --interactive=false >/dev/null
"${etcdctl[@]}" role add switchyard >/dev/null
"${etcdctl[@]}" role grant-permission switchyard --prefix=true readwrite /switchyard/ >/dev/null
"${etcdctl[@]}" user grant-role switchyard switchyard >/dev/null
"${etcdctl[@]}" auth enable >/dev/null
for i in 1 2 3; do
    "$bin" demo-backend --listen "127.0.0.1:1818$i" --name "fleet-$i" & pids+=($!)
done
for n in 1 2 3; do
    config="$dir/node$n.toml"
    sed -e "s#\.\./\.\./plugins#$PWD/plugins#" -e "s#127.0.0.1:8081#127.0.0.1:808$n#" \
        -e "s#127.0.0.1:9911#127.0.0.1:991$n#" -e "s#node = \"node-1\"#node = \"node-$n\"#" \
        examples/fleet/switchyard.toml > "$config"
    "$bin" run --config "$config" & pids+=($!)
    echo ">> node-$n: http://127.0.0.1:808$n, admin 127.0.0.1:991$n"
done
echo ">> admin token: $SWITCHYARD_ADMIN_TOKEN; push on node 1, then ask node 3:"
echo "   $bin plugin push --admin http://127.0.0.1:9911 lb plugins/target/wasm32-wasip2/release/weighted_round_robin.wasm"
echo "   curl -s -H \"Authorization: Bearer \$SWITCHYARD_ADMIN_TOKEN\" http://127.0.0.1:9913/fleet"
echo ">> Ctrl-C stops everything"
wait
