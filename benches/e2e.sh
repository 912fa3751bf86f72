#!/usr/bin/env bash
# HTTP data path, side by side in one run (issue 10's setup): wrk -t1 -c64
# against a 1 KB file served by two nginx backends (one worker each), through
#   nginx | HAProxy | bare Pingora (stock ProxyHttp, atomic round robin)
#   | Switchyard builtin round robin | Switchyard Wasm round robin,
# each balancer with one worker thread, Pingora and Switchyard with and
# without tokio work stealing. Reports median req/s, p99 and the balancer's
# CPU per request (utime + stime of its processes over requests served)
# over REPS rounds, run in turn so that machine noise hits every row alike.
# Rows with an h2c upstream (to the same nginx backends, which serve both
# protocols) and with 2 worker threads follow. switchyard-builtin-log is the
# builtin row with the JSON access log on, to a file: its cost per request.
# Usage: bash benches/e2e.sh [seconds per run, default 8] [rounds, default 3]
# (E2E_ROWS="nginx switchyard-wasm ..." runs only those rows.)
# (E2E_KEEP=FILE keeps the raw per-round results: round row req/s p99 requests CPU-ticks.)
# (switchyard-wasm-canary: the same plugin's bytes again as a 20 % canary
# beside it; wrk's one client address stays on one side, so the row shows
# what a running canary costs the requests it does not take.)
# (E2E_BASE_BIN=PATH: rows ending in -base run that switchyard binary, an
# earlier build, so a change to the request path is measured side by side.)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_apt cmake protobuf-compiler wrk nginx-light haproxy
need_wasm_target
DUR=${1:-8}
REPS=${2:-3}
BENCH_TOKEN=bench-admin-token-0123456789abcdef
. benches/lib.sh
build_rows

start_backends

HAPROXY=$(port)
cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:$HAPROXY
    default_backend be
backend be
    balance roundrobin
    http-reuse always
    server b1 127.0.0.1:$B1
    server b2 127.0.0.1:$B2
EOF
gw_config() { # $1 port, $2 lb line, $3 work stealing, $4 threads, $5 h2c (true|false)
    printf '[server]\nlisten = "127.0.0.1:%s"\nthreads = %s\nwork_stealing = %s\n' "$1" "$4" "$3"
    printf '[plugins.rr]\npath = "%s"\n' "$RR"
    printf '[[upstreams]]\nname = "web"\n%s\n' "$2"
    if [ "$5" = true ]; then
        printf 'protocol = "h2c"\nbackends = [{ address = "127.0.0.1:%s" }, { address = "127.0.0.1:%s" }]\n' "${H2C[$B1]}" "${H2C[$B2]}"
    else
        printf 'backends = [{ address = "127.0.0.1:%s" }, { address = "127.0.0.1:%s" }]\n' "$B1" "$B2"
    fi
    printf '[[routes]]\nupstream = "web"\n'
}

# Each row: label | command that starts the balancer in the background and
# prints the pids whose CPU counts | port.
start() { # $1 label -> sets LB_PIDS and LB_PORT
    LB_PORT=$(port)
    case "$1" in
        nginx)
            nginx_conf lb "listen 127.0.0.1:$LB_PORT;" 'location / { proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection ""; }'
            nginx -c "$WORK/lb.conf" -p "$WORK"; wait_port "$LB_PORT"
            LB_PIDS="$(cat "$WORK/lb.pid") $(pgrep -P "$(cat "$WORK/lb.pid")" | tr '\n' ' ')" ;;
        haproxy)
            sed -i "s/bind 127.0.0.1:[0-9]*/bind 127.0.0.1:$LB_PORT/" "$WORK/haproxy.cfg"
            haproxy -f "$WORK/haproxy.cfg" -D -p "$WORK/haproxy.pid"; wait_port "$LB_PORT"
            LB_PIDS=$(cat "$WORK/haproxy.pid") ;;
        bare-pingora*)
            local ws=true t=1; [ "$1" = "bare-pingora-nosteal" ] && ws=false
            case "$1" in *-t2) t=2 ;; esac
            "$BARE" "127.0.0.1:$LB_PORT" $t $ws "127.0.0.1:$B1" "127.0.0.1:$B2" >"$WORK/bare.log" 2>&1 &
            LB_PIDS=$!; pids+=($!); wait_port "$LB_PORT" ;;
        switchyard-*)
            local lb='' ws=true t=1 h2c=false
            case "$1" in *wasm*) lb='lb = "rr"' ;; esac
            case "$1" in *nosteal*) ws=false ;; esac
            case "$1" in *-t2) t=2 ;; esac
            case "$1" in *-h2c) h2c=true ;; esac
            gw_config "$LB_PORT" "$lb" "$ws" "$t" "$h2c" >"$WORK/gw.toml"
            case "$1" in *-log*) printf '[log]\npath = "%s"\n' "$WORK/access.log" >>"$WORK/gw.toml" ;; esac
            local admin=''; case "$1" in *-canary) admin=$(port); printf '[admin]\nlisten = "127.0.0.1:%s"\ntoken = "%s"\n' "$admin" "$BENCH_TOKEN" >>"$WORK/gw.toml" ;; esac
            local bin=$BIN; case "$1" in *-base) bin=${E2E_BASE_BIN:?rows ending in -base need E2E_BASE_BIN} ;; esac
            "$bin" run --config "$WORK/gw.toml" >"$WORK/gw.log" 2>&1 &
            LB_PIDS=$!; pids+=($!); wait_port "$LB_PORT"
            if [ -n "$admin" ]; then
                wait_port "$admin"
                curl -sf -X PUT -H "Authorization: Bearer $BENCH_TOKEN" --data-binary @"$RR" "http://127.0.0.1:$admin/plugins/rr?canary=20" >/dev/null
            fi ;;
    esac
}

# -h2c: the upstream speaks cleartext HTTP/2 to the same nginx backends;
# -t2: two worker threads (wrk shares the 2 cores, so these show contention).
ROWS=(direct nginx haproxy bare-pingora bare-pingora-nosteal switchyard-builtin switchyard-builtin-log switchyard-wasm switchyard-builtin-nosteal
      switchyard-wasm-nosteal switchyard-builtin-h2c switchyard-wasm-h2c bare-pingora-t2 switchyard-builtin-t2 switchyard-wasm-t2)
[ -n "${E2E_ROWS:-}" ] && read -r -a ROWS <<<"$E2E_ROWS"
TICK=$(getconf CLK_TCK)
echo ">> wrk -t1 -c64 -d${DUR}s, 1 KB file, 2 nginx backends (1 worker each), each balancer 1 worker; $REPS rounds" >&2
for rep in $(seq "$REPS"); do
    for row in "${ROWS[@]}"; do
        if [ "$row" = direct ]; then LB_PORT=$B1; LB_PIDS=""; else start "$row"; fi
        wrk -t1 -c64 -d1s "http://127.0.0.1:$LB_PORT/" >/dev/null 2>&1  # warm the pools
        before=$(cpu $LB_PIDS)
        out=$(wrk -t1 -c64 -d"${DUR}s" --latency "http://127.0.0.1:$LB_PORT/" 2>&1)
        after=$(cpu $LB_PIDS)
        [ "$row" = direct ] || stop "$row"
        case "$row" in *-log*) echo "  access log: $(wc -l <"$WORK/access.log") lines so far (requests served: see reqs)" >&2 ;; esac
        reqs=$(echo "$out" | awk '/requests in/ {print $1}')
        rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        p99=$(echo "$out" | awk '$1=="99%" {print $2}')
        bad=$(echo "$out" | awk '/Non-2xx|Socket errors/' | tr '\n' ' ')
        if echo "$bad" | grep -q Non-2xx; then echo "$row answered non-2xx: $bad" >&2; exit 1; fi
        echo "$rep $row $rps $p99 $reqs $((after - before)) $bad" >>"$WORK/results"
        printf '  round %s %-28s %10s req/s  p99 %8s  %s\n' "$rep" "$row" "$rps" "$p99" "$bad" >&2
    done
done

python3 - "$WORK/results" "$TICK" <<'PY'
import sys, statistics
rows, tick = {}, int(sys.argv[2])
def ms(v):
    return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000
for line in open(sys.argv[1]):
    rep, row, rps, p99, reqs, ticks, *bad = line.split()
    r = rows.setdefault(row, {"rps": [], "p99": [], "cpu": []})
    r["rps"].append(float(rps)); r["p99"].append(ms(p99))
    if row != "direct":
        r["cpu"].append(int(ticks) / tick / int(reqs) * 1e6)
med = lambda xs: statistics.median(xs) if xs else float("nan")
# The reference is nginx, or the first row when E2E_ROWS left nginx out.
ref = "nginx" if "nginx" in rows else next(iter(rows))
ng = rows[ref]
print(f"| balancer | req/s (median, min–max) | p99 ms | CPU µs/req | req/s vs {ref} | CPU vs {ref} |")
print("|---|---|---|---|---|---|")
for name, r in rows.items():
    cpu = med(r["cpu"])
    print(f"| {name} | {med(r['rps']):,.0f} ({min(r['rps']):,.0f}–{max(r['rps']):,.0f}) | {med(r['p99']):.2f} | "
          f"{cpu:.1f} | {med(r['rps'])/med(ng['rps']):.2f} | {cpu/med(ng['cpu']) if r['cpu'] else float('nan'):.2f} |")
PY
