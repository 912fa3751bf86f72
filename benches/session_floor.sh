#!/usr/bin/env bash
# What a centralized session costs a gateway, timed beside its floor
# (issue 22 §1). Each row is one proxy process with one worker thread
# before the same cart app; the load is USERS closed-loop cart users (log
# in, add 5 items, read the cart: 6 of 7 requests change the session) from
# benches/examples/cart.rs, STEPS requests each, rows in turn for ROUNDS
# rounds so machine noise hits every row alike:
#   floor-bare       stock Pingora (examples/bare_pingora.rs), one memory
#                    cart backend: a proxy and nothing else;
#   floor-memcached  the same with BARE_MEMCACHED: one `mg` before and one
#                    CAS `ms` after each request, on pooled connections the
#                    request's own task drives: the floor of any gateway
#                    that reads and writes a central session per request;
#   floor-pipe       the same commands through one batching task per
#                    process, as Switchyard sends them (BARE_MEMCACHED_PIPE);
#   session-none, session-sticky, session-centralized, session-o-session:
#                    Switchyard as benches/instructions.sh configures it.
# Per row: median req/s, the proxy's CPU per request (utime + stime over
# requests answered) and memcached's. The summary sets the session cost
# (centralized over sticky) beside the floor's (floor-memcached and
# floor-pipe over floor-bare), as req/s and CPU ratios and as µs added per request, so a
# run shows how much of the gap any gateway pays on this machine and how
# much is Switchyard's.
# Usage: bash benches/session_floor.sh [STEPS per user, default 350] [ROUNDS, default 3]
# (USERS=N, default 64; FLOOR_ROWS="floor-bare session-sticky ..." picks rows;
# a session row ending in -base runs E2E_BASE_BIN, an earlier build, beside
# this one, one ending in -in-plugin (before any -base) runs the strategy
# with write_back = false, and one ending in -no-memo (after any -in-plugin)
# with memo = false; SESSION_THREADS=N and SESSION_WORK_STEALING=true|false set the
# proxies' [server] threads (default 1) and work_stealing.)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_apt cmake protobuf-compiler memcached
need_wasm_target
STEPS=${1:-350}
ROUNDS=${2:-3}
USERS=${USERS:-64}
. benches/lib.sh
build_rows
cargo build --release -p switchyard-benches --example cart -q
CART=$(dirname "$BARE")/cart
sessions_up

ROWS=(floor-bare floor-memcached floor-pipe session-none session-sticky session-centralized session-o-session)
[ -n "${FLOOR_ROWS:-}" ] && read -r -a ROWS <<<"$FLOOR_ROWS"
THREADS=${SESSION_THREADS:-1} WS=${SESSION_WORK_STEALING:-true}
declare -A PORT PID
for row in "${ROWS[@]}"; do
    P=$(port); PORT[$row]=$P
    case "$row" in
        floor-bare) "$BARE" "127.0.0.1:$P" "$THREADS" "$WS" "127.0.0.1:$memory_1" >"$WORK/$row.log" 2>&1 & ;;
        floor-memcached) BARE_MEMCACHED="127.0.0.1:$MC" "$BARE" "127.0.0.1:$P" "$THREADS" "$WS" "127.0.0.1:$memory_1" >"$WORK/$row.log" 2>&1 & ;;
        floor-pipe) BARE_MEMCACHED="127.0.0.1:$MC" BARE_MEMCACHED_PIPE=1 "$BARE" "127.0.0.1:$P" "$THREADS" "$WS" "127.0.0.1:$memory_1" >"$WORK/$row.log" 2>&1 & ;;
        session-*)
            session_config "$P" "${row%-base}" >"$WORK/$row.toml"
            bin=$BIN; case "$row" in *-base) bin=${E2E_BASE_BIN:?rows ending in -base need E2E_BASE_BIN} ;; esac
            "$bin" run --config "$WORK/$row.toml" >"$WORK/$row.log" 2>&1 & ;;
        *) echo "unknown row $row" >&2; exit 1 ;;
    esac
    PID[$row]=$!; pids+=("$!")
    wait_port "$P" 60 "$WORK/$row.log"
    # Warm-up: every user's first round (connections, instances, pools).
    "$CART" "127.0.0.1:$P" "$USERS" 7 >/dev/null || { echo "$row: the warm-up failed" >&2; tail -20 "$WORK/$row.log" >&2; exit 1; }
done

n=$((USERS * STEPS))
echo ">> $USERS cart users x $STEPS requests per row, $THREADS worker thread(s) per proxy (work stealing $WS), $ROUNDS rounds" >&2
for r in $(seq "$ROUNDS"); do
    for row in "${ROWS[@]}"; do
        c0=$(cpu "${PID[$row]}"); m0=$(cpu "$MC_PID"); t0=$(date +%s.%N)
        "$CART" "127.0.0.1:${PORT[$row]}" "$USERS" "$STEPS" >/dev/null || { echo "$row: the cart load failed" >&2; tail -20 "$WORK/$row.log" >&2; exit 1; }
        t1=$(date +%s.%N); c1=$(cpu "${PID[$row]}"); m1=$(cpu "$MC_PID")
        echo "$r $row $n $t0 $t1 $((c1 - c0)) $((m1 - m0))" >>"$WORK/results"
        awk -v r="$r" -v row="$row" -v n="$n" -v t0="$t0" -v t1="$t1" -v c="$((c1 - c0))" -v m="$((m1 - m0))" -v hz="$(getconf CLK_TCK)" \
            'BEGIN { printf "  round %d %-20s %8.0f req/s  %6.1f µs CPU/req  memcached %5.1f µs/req\n", r, row, n / (t1 - t0), c * 1e6 / hz / n, m * 1e6 / hz / n }' >&2
    done
done
[ -n "${FLOOR_KEEP:-}" ] && cp "$WORK/results" "$FLOOR_KEEP"

python3 - "$WORK/results" "$(getconf CLK_TCK)" <<'PY'
import statistics, sys
hz = int(sys.argv[2])
runs = {}
for line in open(sys.argv[1]):
    _, row, n, t0, t1, c, m = line.split()
    n = int(n)
    runs.setdefault(row, []).append((n / (float(t1) - float(t0)), int(c) * 1e6 / hz / n, int(m) * 1e6 / hz / n))
med = {row: tuple(statistics.median(v[i] for v in vals) for i in range(3)) for row, vals in runs.items()}
print("| row | req/s | proxy CPU µs/req | memcached CPU µs/req |")
print("|---|---|---|---|")
for row, (rps, cpu, mc) in med.items():
    print(f"| {row} | {rps:,.0f} | {cpu:.1f} | {mc:.1f} |")
pairs = [("floor-memcached", "floor-bare", "the floor: a read and a write per request"),
         ("floor-pipe", "floor-bare", "the floor, batched as Switchyard batches"),
         ("session-centralized", "session-sticky", "centralized over sticky"),
         ("session-o-session", "session-sticky", "o-session over sticky"),
         ("session-centralized", "session-none", "centralized over no session"),
         ("session-sticky", "session-none", "sticky over no session")]
print()
print("| pair | req/s ratio | CPU ratio | µs added per request |")
print("|---|---|---|---|")
for a, b, what in pairs:
    if a in med and b in med:
        print(f"| {what} | {med[a][0] / med[b][0]:.2f}x | {med[a][1] / med[b][1]:.2f}x | {med[a][1] - med[b][1]:+.1f} |")
PY
