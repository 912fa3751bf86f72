#!/usr/bin/env bash
# End-to-end throughput, one machine, same backends, bounded wrk runs:
#   direct to a backend | nginx (round robin, keep-alive upstreams)
#   | switchyard builtin round robin | switchyard Wasm round-robin plugin.
# Prints req/s, p99 and the ratios the issue sets targets for.
# Usage: bash benches/e2e.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_apt cmake wrk nginx-light
need_wasm_target
DUR=${1:-10}
CONNS=32
THREADS=2
cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml --target-dir plugins/target -q
cargo build --release -p switchyard -q
BIN=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/switchyard
WORK=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done
    echo "port $1 never opened" >&2; exit 1
}

B1=$(port); B2=$(port)
for p in $B1 $B2; do
    "$BIN" demo-backend --listen 127.0.0.1:$p --name "b$p" --threads 1 >"$WORK/b$p.log" 2>&1 & pids+=($!)
    wait_port $p
done

gw_config() { # $1 port, $2 lb line
    printf '[server]\nlisten = "127.0.0.1:%s"\nthreads = 2\n' "$1"
    printf '[plugins.rr]\npath = "%s/plugins/target/wasm32-wasip2/release/round_robin.wasm"\n' "$PWD"
    printf '[[upstreams]]\nname = "web"\n%s\n' "$2"
    printf 'backends = [{ address = "127.0.0.1:%s" }, { address = "127.0.0.1:%s" }]\n' "$B1" "$B2"
    printf '[[routes]]\nupstream = "web"\n'
}
GW_NATIVE=$(port); GW_WASM=$(port); NGINX=$(port)
gw_config $GW_NATIVE "" >"$WORK/native.toml"
gw_config $GW_WASM 'lb = "rr"' >"$WORK/wasm.toml"
cat >"$WORK/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    upstream web { server 127.0.0.1:$B1; server 127.0.0.1:$B2; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX;
        location / { proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF

run() { # $1 label, $2 port -> prints a row to stderr, req/s to stdout
    local out rps p99 err
    out=$(wrk -t$THREADS -c$CONNS -d${DUR}s --latency "http://127.0.0.1:$2/" 2>&1)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    err=$(echo "$out" | awk '/Non-2xx|Socket errors/' | tr '\n' ' ')
    printf '%-26s %12s req/s   p99 %8s   %s\n' "$1" "$rps" "$p99" "$err" >&2
    echo "$rps"
}

echo ">> wrk -t$THREADS -c$CONNS -d${DUR}s, 2 demo backends, keep-alive" >&2
DIRECT=$(run "direct (one backend)" $B1)
nginx -c "$WORK/nginx.conf" -p "$WORK"; wait_port $NGINX
NG=$(run "nginx round robin" $NGINX)
kill "$(cat "$WORK/nginx.pid")"; rm -f "$WORK/nginx.pid"
"$BIN" run --config "$WORK/native.toml" >"$WORK/native.log" 2>&1 & pids+=($!); wait_port $GW_NATIVE
NATIVE=$(run "switchyard builtin rr" $GW_NATIVE)
kill "${pids[-1]}"
"$BIN" run --config "$WORK/wasm.toml" >"$WORK/wasm.log" 2>&1 & pids+=($!); wait_port $GW_WASM
WASM=$(run "switchyard wasm rr" $GW_WASM)

python3 - "$DIRECT" "$NG" "$NATIVE" "$WASM" <<'PY'
import sys
d, n, nat, w = map(float, sys.argv[1:])
print(f"wasm rr / builtin rr      {w/nat:.3f}   (target >= 0.97)")
print(f"switchyard wasm / nginx   {w/n:.3f}   (target >= 1.0)")
print(f"switchyard wasm / direct  {w/d:.3f}")
print(f"nginx / direct            {n/d:.3f}")
PY
