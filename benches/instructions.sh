#!/usr/bin/env bash
# Instructions per request, counted, not timed: bare Pingora, Switchyard
# builtin round robin and Switchyard Wasm round robin (E2E_ROWS picks rows:
# bare-pingora[-t2], switchyard-builtin|wasm[-t2][-base]), each run under
# callgrind while h2load sends N HTTP/1.1 keep-alive requests over 16
# connections to the same two nginx backends (no health checks: bare
# Pingora runs none). The counters are zeroed after a warm-up of N/10
# requests, so start-up (plugin compilation included) is left out. Every
# thread of the balancer counts (the epoch ticker too). A count moves by
# well under 1 % run to run, where req/s on a shared 2-core machine moves by
# 10 % or more, so this is the figure that shows what a change to the
# request path costs. It does not see what an instruction costs (a clock
# read, a cache miss, a system call): keep e2e.sh for that.
# Session rows (issue 22), one worker thread each, memcached as the central
# tier, three demo cart backends: session-none (the route without a
# plugin, one backend keeping the sessions), session-sticky,
# session-centralized, session-centralized-dynamic, session-o-session,
# session-replicated; the load is 16 closed-loop cart users (log in, add 5
# items, read the cart: 6 of 7 requests write) from benches/examples/cart.rs,
# one warm-up round of 7 requests each, then N/16 (rounded to whole rounds)
# each. Rows ending in -base run E2E_BASE_BIN. floor-bare, floor-memcached
# and floor-pipe are benches/session_floor.sh's stock-Pingora rows under the
# same cart load.
# INSTR_KEEP=DIR keeps each row's callgrind dump and its inclusive profile.
# Usage: bash benches/instructions.sh [N requests, default 4000]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_apt cmake protobuf-compiler nginx-light valgrind nghttp2-client memcached
need_wasm_target
N=${1:-4000}
. benches/lib.sh
build_rows
cargo build --release -p switchyard-benches --example cart -q
CART=$(dirname "$BARE")/cart
start_backends

gw_config() { # $1 port, $2 lb line, $3 threads
    printf '[server]\nlisten = "127.0.0.1:%s"\nthreads = %s\n' "$1" "$3"
    printf '[plugins.rr]\npath = "%s"\nlimits = { deadline_ms = 2000 }\n' "$RR"
    printf '[[upstreams]]\nname = "web"\n%s\nhealth = { check = "none" }\n' "$2"
    printf 'backends = [{ address = "127.0.0.1:%s" }, { address = "127.0.0.1:%s" }]\n' "$B1" "$B2"
    printf '[[routes]]\nupstream = "web"\n'
}

USERS=16
ROUNDS=$(( (N + USERS * 7 - 1) / (USERS * 7) ))

ROWS=(bare-pingora switchyard-builtin switchyard-wasm)
[ -n "${E2E_ROWS:-}" ] && read -r -a ROWS <<<"$E2E_ROWS"
CG=(valgrind --tool=callgrind --dump-instr=no --separate-threads=no)
echo ">> callgrind, h2load --h1 -n $N -c 16 (after $((N / 10)) warm-up requests), 1 KB file, 2 nginx backends" >&2
for row in "${ROWS[@]}"; do
    P=$(port)
    OUT=$WORK/cg.$row
    case "$row" in
        bare-pingora*)
            t=1; case "$row" in *-t2) t=2 ;; esac
            "${CG[@]}" --callgrind-out-file="$OUT" "$BARE" "127.0.0.1:$P" $t true "127.0.0.1:$B1" "127.0.0.1:$B2" >"$WORK/$row.log" 2>&1 & ;;
        switchyard-*)
            lb=''; t=1
            case "$row" in *wasm*) lb='lb = "rr"' ;; esac
            case "$row" in *-t2) t=2 ;; esac
            gw_config "$P" "$lb" "$t" >"$WORK/$row.toml"
            bin=$BIN; case "$row" in *-base) bin=${E2E_BASE_BIN:?rows ending in -base need E2E_BASE_BIN} ;; esac
            "${CG[@]}" --callgrind-out-file="$OUT" "$bin" run --config "$WORK/$row.toml" >"$WORK/$row.log" 2>&1 & ;;
        floor-*)
            # benches/session_floor.sh's rows: stock Pingora before the
            # memory cart backend, with a memcached read and write per
            # request (floor-memcached, floor-pipe) or without (floor-bare).
            sessions_up
            env=(); case "$row" in floor-memcached) env=(BARE_MEMCACHED="127.0.0.1:$MC") ;; floor-pipe) env=(BARE_MEMCACHED="127.0.0.1:$MC" BARE_MEMCACHED_PIPE=1) ;; esac
            env "${env[@]}" "${CG[@]}" --callgrind-out-file="$OUT" "$BARE" "127.0.0.1:$P" 1 true "127.0.0.1:$memory_1" >"$WORK/$row.log" 2>&1 & ;;
        session-*)
            sessions_up
            session_config "$P" "${row%-base}" >"$WORK/$row.toml"
            bin=$BIN; case "$row" in *-base) bin=${E2E_BASE_BIN:?rows ending in -base need E2E_BASE_BIN} ;; esac
            "${CG[@]}" --callgrind-out-file="$OUT" "$bin" run --config "$WORK/$row.toml" >"$WORK/$row.log" 2>&1 & ;;
        *) echo "unknown row $row" >&2; exit 1 ;;
    esac
    pid=$!; pids+=("$pid")
    wait_port "$P" 300 "$WORK/$row.log"  # start-up under callgrind is slow
    case "$row" in
        session-* | floor-*)
            "$CART" "127.0.0.1:$P" "$USERS" 7 >/dev/null || { tail -20 "$WORK/$row.log" >&2; exit 1; }
            callgrind_control -z "$pid" >/dev/null 2>&1
            n=$((USERS * ROUNDS * 7))
            "$CART" "127.0.0.1:$P" "$USERS" $((ROUNDS * 7)) >/dev/null || { echo "$row: the cart load failed" >&2; tail -20 "$WORK/$row.log" >&2; exit 1; }
            callgrind_control -d "$pid" >/dev/null 2>&1 ;;
        *)
            n=$N
            h2load --h1 -n $((N / 10)) -c 16 -t 1 "http://127.0.0.1:$P/" >/dev/null
            callgrind_control -z "$pid" >/dev/null 2>&1
            load=$(h2load --h1 -n "$N" -c 16 -t 1 "http://127.0.0.1:$P/")
            callgrind_control -d "$pid" >/dev/null 2>&1
            ok=$(echo "$load" | awk '/^status codes:/ {print $3}')
            [ "$ok" = "$N" ] || { echo "$row: $ok of $N requests answered 2xx" >&2; echo "$load" >&2; exit 1; } ;;
    esac
    kill -INT "$pid"; wait "$pid" 2>/dev/null || true
    dump=$(ls -t "$OUT".* 2>/dev/null | head -1)
    [ -n "$dump" ] || { echo "$row: no callgrind dump" >&2; exit 1; }
    ir=$(awk '/^summary:/ {print $2}' "$dump")
    echo "$row $ir $n" >>"$WORK/results"
    awk -v r="$row" -v ir="$ir" -v n="$n" 'BEGIN { printf "  %-28s %14d Ir  %8.0f Ir/request\n", r, ir, ir / n }' >&2
    if [ -n "${INSTR_KEEP:-}" ]; then
        mkdir -p "$INSTR_KEEP"
        callgrind_annotate --inclusive=yes "$dump" >"$INSTR_KEEP/$row.txt" 2>/dev/null
        cp "$dump" "$INSTR_KEEP/callgrind.$row"
    fi
    rm -f "$OUT".*
done

python3 - "$WORK/results" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
ref = int(rows[0][1]) / int(rows[0][2])
print(f"| balancer | instructions per request | vs {rows[0][0]} |")
print("|---|---|---|")
for name, ir, n in rows:
    per = int(ir) / int(n)
    print(f"| {name} | {per:,.0f} | {per / ref:.3f} |")
PY
