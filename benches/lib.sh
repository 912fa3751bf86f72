# Shared by benches/e2e.sh, tls.sh, instructions.sh and session_floor.sh (sourced): a scratch
# directory removed on exit with every process a run started, free ports,
# a wait for a port, the 1 KB file the nginx backends serve, stopping a
# balancer and its CPU ticks, the nginx config and the two nginx backends.
WORK=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for f in "$WORK"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
    sleep 0.3
    # E2E_KEEP=FILE keeps the raw results.
    [ -n "${E2E_KEEP:-}" ] && cp "$WORK/results" "$E2E_KEEP"; rm -rf "$WORK"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # $1 port, [$2 seconds, default 30], [$3 a log to show if it never opens]
    for _ in $(seq $((${2:-30} * 10))); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done
    echo "port $1 never opened" >&2; [ -n "${3:-}" ] && tail -20 "$3" >&2; exit 1
}
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 >"$WORK/1k"
# nginx workers run as nobody: they must reach the file.
chmod 755 "$WORK"; chmod 644 "$WORK/1k"
stop() {
    case "$1" in
        nginx) kill "$(cat "$WORK/lb.pid")"; rm -f "$WORK/lb.pid" ;;
        haproxy) kill "$(cat "$WORK/haproxy.pid")"; rm -f "$WORK/haproxy.pid" ;;
        *) kill -INT $LB_PIDS; wait $LB_PIDS 2>/dev/null || true ;;
    esac
    sleep 0.3
}
cpu() { # total utime+stime ticks of the pids
    local t=0
    for p in $*; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
    echo $t
}

nginx_conf() { # $1 name, $2 listen directives, $3 server block body; upstream web = the backends
    cat >"$WORK/$1.conf" <<EOF
worker_processes 1;
pid $WORK/$1.pid;
error_log $WORK/$1-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    upstream web { server 127.0.0.1:$B1; server 127.0.0.1:$B2; keepalive 64; }
    server { $2 $3 }
}
EOF
}

# The plugins, the release gateway and bare Pingora, built if stale; sets
# BIN, BARE and RR (the round-robin plugin) for the rows.
build_rows() {
    build_plugins >/dev/null
    cargo build --release -p switchyard -q
    cargo build --release -p switchyard-benches --example bare_pingora -q
    local target
    target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    BIN=$target/release/switchyard
    BARE=$target/release/examples/bare_pingora
    RR=$SWITCHYARD_PLUGIN_DIR/round_robin.wasm
}

# Two nginx backends (one worker each) serving the 1 KB file on B1 and B2,
# each also serving cleartext HTTP/2 (prior knowledge) on ${H2C[port]}.
B1=$(port); B2=$(port)
declare -A H2C
start_backends() {
    for b in $B1 $B2; do
        H2C[$b]=$(port)
        nginx_conf "backend$b" "listen 127.0.0.1:$b; listen 127.0.0.1:${H2C[$b]} http2;" "location / { root $WORK; try_files /1k =404; }"
        nginx -c "$WORK/backend$b.conf" -p "$WORK"
        wait_port "$b"
    done
}

# Session rows (instructions.sh, session_floor.sh): memcached (its pid in
# MC_PID) and the cart backends, started at the first; the config of a
# one-worker gateway per row.
KEY=instructions-session-signing-key-0123456789
sessions_up() {
    [ -n "${MC:-}" ] && return 0
    MC=$(port)
    memcached -l 127.0.0.1 -p "$MC" -U 0 -m 64 -c 4096 -u nobody >/dev/null 2>&1 &
    MC_PID=$!; pids+=("$!")
    wait_port "$MC"
    for kind in memory header; do
        for i in 1 2 3; do
            local p; p=$(port)
            "$BIN" demo-backend --listen "127.0.0.1:$p" --name "${kind:0:1}$i" --sessions "$kind" --threads 1 >"$WORK/backend-$kind$i.log" 2>&1 &
            pids+=("$!"); wait_port "$p" 30 "$WORK/backend-$kind$i.log"
            eval "${kind}_$i=$p"
        done
    done
}
session_config() { # $1 port, $2 row; a row ending in -in-plugin keeps every write in the plugin (write_back = false), one ending in -no-memo calls it on every request (memo = false)
    local plugin=${2#session-} list in_plugin= no_memo=
    case "$plugin" in *-no-memo) plugin=${plugin%-no-memo}; no_memo=1 ;; esac
    case "$plugin" in *-in-plugin) plugin=${plugin%-in-plugin}; in_plugin=1 ;; esac
    case "$plugin" in
        none) list="{ address = \"127.0.0.1:$memory_1\" }" ;;
        sticky) list="{ address = \"127.0.0.1:$memory_1\" }, { address = \"127.0.0.1:$memory_2\" }, { address = \"127.0.0.1:$memory_3\" }" ;;
        *) list="{ address = \"127.0.0.1:$header_1\" }, { address = \"127.0.0.1:$header_2\" }, { address = \"127.0.0.1:$header_3\" }" ;;
    esac
    printf '[server]\nlisten = "127.0.0.1:%s"\nthreads = %s\n' "$1" "${SESSION_THREADS:-1}"
    [ -n "${SESSION_WORK_STEALING:-}" ] && printf 'work_stealing = %s\n' "$SESSION_WORK_STEALING"
    printf '[session]\nkeys = ["%s"]\nlocal = { max_mb = 1024 }\n' "$KEY"
    printf '[session.central]\nservers = ["127.0.0.1:%s"]\npool = 32\ntimeout_ms = 1000\n' "$MC"
    printf '[[upstreams]]\nname = "app"\nbackends = [%s]\n[[routes]]\nupstream = "app"\n' "$list"
    [ "$plugin" = none ] && return 0
    printf 'session = "sess"\n[plugins.sess]\npath = "%s/session_%s.wasm"\n' "$SWITCHYARD_PLUGIN_DIR" "${plugin//-/_}"
    printf 'on_error = "fail-closed"\nlimits = { deadline_ms = 2000, instances = 1024 }\n'
    local off=()
    [ -n "$in_plugin" ] && off+=("write_back = false")
    [ -n "$no_memo" ] && off+=("memo = false")
    [ ${#off[@]} -gt 0 ] && (IFS=,; printf 'config = { %s }\n' "${off[*]}")
    # The replicated tier (replicated, and the static part of
    # centralized-dynamic) needs a cluster: one node without peers.
    case "$plugin" in
        replicated | centralized-dynamic) printf '[cluster]\nid = 1\nlisten = "127.0.0.1:%s"\nkey = "%s"\n' "$(port)" "$KEY" ;;
    esac
}
