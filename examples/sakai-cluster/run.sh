#!/usr/bin/env bash
# Paper 001's whole topology in network namespaces, with one command (root):
# two Switchyard nodes under keepalived sharing a VIP (or two VIPs with
# --active-active), three weighted web backends (/portal, /resource and the
# /cart session app), memcached-backed sessions, and a MariaDB primary with
# two GTID replicas behind each node's SQL listener (read/write split).
#
#   bash examples/sakai-cluster/run.sh [--active-active]   start it all
#   bash examples/sakai-cluster/run.sh failover [--drain]  kill the MASTER gateway under load
#                                                          (--drain: SIGTERM, a planned stop)
#   bash examples/sakai-cluster/run.sh restart gw1|gw2     start a killed gateway again
#   bash examples/sakai-cluster/run.sh status              who holds the VIP(s), what runs
#   bash examples/sakai-cluster/run.sh metrics gw1|gw2     the metrics the README explains
#   bash examples/sakai-cluster/run.sh stop                kill everything, delete namespaces and files
#
# Environment: SWITCHYARD (the gateway binary; default `switchyard` on PATH,
# else release/ then debug/switchyard under $CARGO_TARGET_DIR,
# ~/.cache/switchyard/target, then target/: the first found),
# SWITCHYARD_PLUGIN_DIR (the *.wasm plugins; default the first of
# $CARGO_TARGET_DIR/plugins, ~/.cache/switchyard/target/plugins and
# plugins/target that has wasm32-wasip2/release/session_centralized.wasm),
# SAKAI_DIR (state, configs and logs; default /tmp/sakai-cluster).
#
# Only namespaces named sakai-* and addresses inside 198.18.0.0/24 in them
# are used; the host's own interfaces, ports and MariaDB are not touched.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

DIR="${SAKAI_DIR:-/tmp/sakai-cluster}"
P=sakai-                                   # namespace prefix
NS_BR=${P}br NS_CLIENT=${P}client NS_BACKEND=${P}backend NS_GW1=${P}gw1 NS_GW2=${P}gw2
IP_GW1=198.18.0.1 IP_GW2=198.18.0.2 IP_CLIENT=198.18.0.10 IP_BACKEND=198.18.0.50
VIP_A=198.18.0.100                         # gw1 is MASTER for it
VIP_B=198.18.0.101                         # --active-active: gw2 is MASTER for it
HTTP_PORT=8080 SQL_PORT=6033 ADMIN_PORT=9000 MEMCACHED_PORT=11211
WEB_PORTS=(18181 18182 18183) WEB_WEIGHTS=(3 2 1)
ADMIN_TOKEN=sakai-cluster-admin-token-change-me
SESSION_KEY=sakai-cluster-demo-session-key-change-me-0123456789
# keepalived: the settings tests/tests/ha_keepalived.rs proves with 2.2.7.
ADVERT_INT=0.2 CHECK_INTERVAL=1 CHECK_TIMEOUT=1 CHECK_FALL=2 CHECK_RISE=2
DRAIN_DELAY_MS=3000                        # > interval x fall: a SIGTERM loses nothing
GATEWAY_START_S=300                        # a debug build compiles its plugins before it listens

say() { echo ">> $*"; }
die() { echo "run.sh: $*" >&2; exit 1; }
other() { [ "$1" = gw1 ] && echo gw2 || echo gw1; }
ns_of() { echo "${P}$1"; }
in_ns() { local n="$1"; shift; ip netns exec "$n" "$@"; }

# ---------------------------------------------------------------- tools

need_root() { [ "$(id -u)" -eq 0 ] || die "needs root (ip netns, keepalived): sudo bash $0 $*"; }

need_tools() {
    if [ -f "$root/scripts/common.sh" ]; then
        # shellcheck source=../../scripts/common.sh
        . "$root/scripts/common.sh"
        need_apt iproute2 keepalived memcached mariadb-server mariadb-client curl jq
    fi
    for t in ip keepalived memcached mariadbd mariadb-install-db mariadb curl jq setsid; do
        command -v "$t" >/dev/null || die "$t is missing (apt-get install -y iproute2 keepalived memcached mariadb-server mariadb-client curl jq)"
    done
}

find_switchyard() {
    if [ -n "${SWITCHYARD:-}" ]; then
        [ -x "$SWITCHYARD" ] || SWITCHYARD="$(command -v "$SWITCHYARD" || true)"
        [ -n "$SWITCHYARD" ] && [ -x "$SWITCHYARD" ] || die "SWITCHYARD is not an executable"
    elif command -v switchyard >/dev/null; then
        SWITCHYARD="$(command -v switchyard)"
    else
        local t
        for t in "${CARGO_TARGET_DIR:-}" "$HOME/.cache/switchyard/target" "$root/target"; do
            [ -n "$t" ] || continue
            for p in release debug; do
                if [ -x "$t/$p/switchyard" ] && [ -z "${SWITCHYARD:-}" ]; then SWITCHYARD="$t/$p/switchyard"; fi
            done
        done
        [ -n "${SWITCHYARD:-}" ] || die "no switchyard binary: build it (cargo build --release -p switchyard) or set SWITCHYARD=/path/to/switchyard"
    fi
    SWITCHYARD="$(readlink -f "$SWITCHYARD")"
}

PLUGINS=(weighted_round_robin least_connections session_centralized rw_split)
find_plugins() {
    if [ -z "${SWITCHYARD_PLUGIN_DIR:-}" ]; then
        local d
        for d in "${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/plugins}" "$HOME/.cache/switchyard/target/plugins" "$root/plugins/target"; do
            [ -n "$d" ] && [ -f "$d/wasm32-wasip2/release/session_centralized.wasm" ] && { SWITCHYARD_PLUGIN_DIR="$d/wasm32-wasip2/release"; break; }
        done
    fi
    [ -n "${SWITCHYARD_PLUGIN_DIR:-}" ] || die "no plugins found: build them (bash -c '. scripts/common.sh; build_plugins') or set SWITCHYARD_PLUGIN_DIR"
    SWITCHYARD_PLUGIN_DIR="$(readlink -f "$SWITCHYARD_PLUGIN_DIR")"
    for p in "${PLUGINS[@]}"; do
        [ -f "$SWITCHYARD_PLUGIN_DIR/$p.wasm" ] || die "$SWITCHYARD_PLUGIN_DIR/$p.wasm is missing (bash -c '. scripts/common.sh; build_plugins')"
    done
}

# ---------------------------------------------------------------- processes

# Start a long-running process in a namespace, detached; its pid (`ip
# netns exec` and setsid exec, so it is the process's own) goes to
# $DIR/pids/WHAT.pid, its output to $DIR/logs/WHAT.log.
spawn() {
    local ns="$1" what="$2"; shift 2
    setsid ip netns exec "$ns" "$@" >"$DIR/logs/$what.log" 2>&1 </dev/null &
    echo $! >"$DIR/pids/$what.pid"
}

# Poll (every 0.1 s, at most $1 seconds) until the command succeeds.
wait_for() {
    local secs="$1" what="$2"; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || { echo "run.sh: $what: not within $secs s" >&2; return 1; }
        sleep 0.1
    done
}

# (No `| grep -q` here: with pipefail, grep quitting early can fail `ip`.)
holds() { local a; a=$(ip -n "$(ns_of "$1")" -4 addr show dev eth0 2>/dev/null) || return 1; [[ $a == *"inet $2/"* ]]; }
holder() { local n; for n in gw1 gw2; do holds $n "$1" && { echo $n; return 0; }; done; return 1; }
# /healthz in one word: ok, draining (503 after SIGTERM) or down (no answer).
health_word() { local w; w=$(in_ns "$(ns_of "$1")" curl -s --max-time 0.4 "http://127.0.0.1:$ADMIN_PORT/healthz" 2>/dev/null | awk 'NR == 1 { print $1 }' || true); echo "${w:-down}"; }
vips_home() { holds gw1 $VIP_A && holds gw2 $VIP_B && ! holds gw1 $VIP_B && ! holds gw2 $VIP_A; }
healthz() { in_ns "$(ns_of "$1")" curl -sf --max-time 1 "http://127.0.0.1:$ADMIN_PORT/healthz"; }
alive() { [ -f "$DIR/pids/$1.pid" ] && kill -0 "$(cat "$DIR/pids/$1.pid")" 2>/dev/null; }

# ---------------------------------------------------------------- start

make_namespaces() {
    local n ip
    for n in $NS_BR $NS_CLIENT $NS_BACKEND $NS_GW1 $NS_GW2; do
        ip netns add "$n"
        ip -n "$n" link set lo up
    done
    ip -n $NS_BR link add br0 type bridge forward_delay 0
    ip -n $NS_BR link set br0 up
    for pair in "gw1 $IP_GW1" "gw2 $IP_GW2" "client $IP_CLIENT" "backend $IP_BACKEND"; do
        set -- $pair; n="$1"; ip="$2"
        ip -n $NS_BR link add "p-$n" type veth peer name eth0 netns "$(ns_of "$n")"
        ip -n $NS_BR link set "p-$n" master br0 up
        ip -n "$(ns_of "$n")" addr add "$ip/24" dev eth0
        ip -n "$(ns_of "$n")" link set eth0 up
    done
}

start_backends() {
    local i
    for i in 0 1 2; do
        spawn $NS_BACKEND "web-$((i + 1))" "$SWITCHYARD" demo-backend --listen "$IP_BACKEND:${WEB_PORTS[$i]}" --name "web-$((i + 1))"
    done
    spawn $NS_BACKEND memcached memcached -l $IP_BACKEND -p $MEMCACHED_PORT -U 0 -m 64 -u nobody
    say "MariaDB primary and two replicas on $IP_BACKEND:13306-13308 (start-mariadb.sh)"
    SAKAI_DB_DIR="$DIR/mariadb" SAKAI_DB_BIND=$IP_BACKEND SAKAI_DB_NETNS=$NS_BACKEND \
        setsid bash "$here/start-mariadb.sh" >"$DIR/logs/start-mariadb.log" 2>&1 </dev/null \
        || { cat "$DIR/logs/start-mariadb.log" >&2; die "MariaDB did not start"; }
    for i in 0 1 2; do cp "$DIR/mariadb/$i/pid" "$DIR/pids/mariadb-$i.pid"; done
    for i in 0 1 2; do
        wait_for 10 "web-$((i + 1))" in_ns $NS_BACKEND curl -sf --max-time 1 "http://$IP_BACKEND:${WEB_PORTS[$i]}/healthz"
    done
    wait_for 10 memcached in_ns $NS_BACKEND bash -c "exec 3<>/dev/tcp/$IP_BACKEND/$MEMCACHED_PORT"
    for i in 1 2; do
        wait_for 30 "replica $i replicating" bash -c \
            "mariadb --no-defaults --socket='$DIR/mariadb/$i/sock' -uroot -e 'SHOW SLAVE STATUS\\G' | grep -q 'Slave_SQL_Running: Yes'"
    done
}

# The gateway config of node $1 (gw1 or gw2).
gateway_config() {
    local n="$1" pd="$SWITCHYARD_PLUGIN_DIR" web="" i
    for i in 0 1 2; do web+="    { address = \"$IP_BACKEND:${WEB_PORTS[$i]}\", weight = ${WEB_WEIGHTS[$i]} },"$'\n'; done
    cat <<EOF
# Generated by examples/sakai-cluster/run.sh for $n (namespace $(ns_of "$n")).
# Listens on 0.0.0.0 so whichever VIP keepalived gives this node reaches it.

[server]
listen = "0.0.0.0:$HTTP_PORT"
threads = 2
drain_delay_ms = $DRAIN_DELAY_MS

[admin]
listen = "127.0.0.1:$ADMIN_PORT"
token = "$ADMIN_TOKEN"

# Sessions: every attribute in the one memcached both nodes reach, so a
# cart started on one node is complete on the other.
[session]
keys = ["$SESSION_KEY"]
[session.central]
servers = ["$IP_BACKEND:$MEMCACHED_PORT"]
ttl_s = 1800

[plugins.session]
path = "$pd/session_centralized.wasm"
on_error = "fail-closed"
limits = { deadline_ms = 500 }
[plugins.session.config]
cookie = "sy_session"
prefix = "session:"
tier = "central"

[plugins.weighted]
path = "$pd/weighted_round_robin.wasm"
on_error = "fallback"

[plugins.least-conn]
path = "$pd/least_connections.wasm"
on_error = "fallback"

# The three web servers with the paper's 3:2:1 shares.
[[upstreams]]
name = "sakai_portal"
lb = "weighted"
backends = [
$web]
health = { check = "http", path = "/healthz", interval_ms = 1000, rise = 2, fall = 2 }

[[upstreams]]
name = "sakai_resource"
lb = "least-conn"
backends = [
$web]
health = { check = "http", path = "/healthz", interval_ms = 1000 }

[[routes]]
path_prefix = "/portal"
upstream = "sakai_portal"
session = "session"

[[routes]]
path_prefix = "/resource"
upstream = "sakai_resource"

# The session demo app of the web servers (login, add to a cart).
[[routes]]
path_prefix = "/cart"
upstream = "sakai_portal"
session = "session"

# The SQL side: writes to the primary, reads to the replicas.
[plugins.sql-rules]
path = "$pd/rw_split.wasm"
on_error = "fallback"
[plugins.sql-rules.config]
rules = [
    { statement = "(?i)\\\\bfrom\\\\s+gb_", class = "read", route = "group:reporting" },
    { user = "^sakai_admin\$", route = "primary" },
]

[plugins.replica-lb]
path = "$pd/least_connections.wasm"

[sql]
listen = "0.0.0.0:$SQL_PORT"
router = "sql-rules"
replica_lb = "replica-lb"
primary = "$IP_BACKEND:13306"
replicas = [
    { address = "$IP_BACKEND:13307" },
    { address = "$IP_BACKEND:13308", group = "reporting" },
]
users = [{ name = "sakai", password = "sakai-secret" }]
monitor = { name = "monitor", password = "monitor-secret" }
causal = "gtid"
causal_timeout_ms = 200
max_lag_s = 10
EOF
}

start_gateway() {
    local n="$1"
    gateway_config "$n" >"$DIR/$n.toml"
    RUST_LOG="${RUST_LOG:-info}" spawn "$(ns_of "$n")" "gateway-$n" "$SWITCHYARD" run --config "$DIR/$n.toml"
}

wait_gateway() {
    local n="$1" end=$((SECONDS + GATEWAY_START_S))
    until healthz "$n" >/dev/null 2>&1; do
        alive "gateway-$n" || { tail -20 "$DIR/logs/gateway-$n.log" >&2; die "the gateway in $n exited"; }
        [ $SECONDS -lt $end ] || { tail -20 "$DIR/logs/gateway-$n.log" >&2; die "the gateway in $n is not healthy within $GATEWAY_START_S s"; }
        sleep 0.2
    done
}

# keepalived in node $1 with instances "NAME VRID PRIORITY VIP" ($3...);
# $2 = nopreempt or preempt.
start_keepalived() {
    local n="$1" preempt="$2"; shift 2
    local conf="$DIR/keepalived-$n.conf" inst
    cat >"$conf" <<EOF
global_defs {
  enable_script_security
  script_user root
  vrrp_version 3
}
vrrp_script gateway_healthz {
  script "$(command -v curl) -sf -o /dev/null --max-time 0.8 http://127.0.0.1:$ADMIN_PORT/healthz"
  interval $CHECK_INTERVAL
  timeout $CHECK_TIMEOUT
  fall $CHECK_FALL
  rise $CHECK_RISE
}
EOF
    for inst in "$@"; do
        set -- $inst
        {
            echo "vrrp_instance $1 {"
            echo "  state BACKUP"
            [ "$preempt" = nopreempt ] && echo "  nopreempt"
            echo "  interface eth0"
            echo "  virtual_router_id $2"
            echo "  priority $3"
            echo "  advert_int $ADVERT_INT"
            echo "  virtual_ipaddress {"
            echo "    $4/24"
            echo "  }"
            echo "  track_script {"
            echo "    gateway_healthz"
            echo "  }"
            echo "}"
        } >>"$conf"
    done
    spawn "$(ns_of "$n")" "keepalived-$n" keepalived -n -l -D -f "$conf" \
        -p "$DIR/run/keepalived-$n.pid" -r "$DIR/run/keepalived-$n.vrrp.pid" -c "$DIR/run/keepalived-$n.check.pid"
}

start() {
    local mode=active-standby
    [ "${1:-}" = --active-active ] && mode=active-active
    need_root "$@"
    need_tools
    find_switchyard
    find_plugins
    if [[ $'\n'"$(ip netns list)" == *$'\n'"${P}"* ]]; then die "sakai-* namespaces exist already: bash $0 stop first"; fi
    [ -e "$DIR" ] && { [ -f "$DIR/.sakai-cluster" ] || die "$DIR exists and is not ours; set SAKAI_DIR"; rm -rf "$DIR"; }
    mkdir -p "$DIR"/{pids,logs,run}
    touch "$DIR/.sakai-cluster"
    # A start that fails half-way takes down what it started; its logs are kept.
    trap 'rc=$?; if [ $rc -ne 0 ]; then
            rm -rf "$DIR.failed-logs"; cp -r "$DIR/logs" "$DIR.failed-logs" 2>/dev/null || true
            echo "run.sh: start failed; cleaning up (logs kept in $DIR.failed-logs)" >&2; stop >&2 || true
          fi' EXIT
    echo $mode >"$DIR/mode"
    say "switchyard: $SWITCHYARD"
    say "plugins:    $SWITCHYARD_PLUGIN_DIR"
    say "namespaces ${P}{br,client,backend,gw1,gw2} on a bridge, 198.18.0.0/24"
    make_namespaces
    say "backends in $NS_BACKEND: web-1..3 on $IP_BACKEND:${WEB_PORTS[0]}-${WEB_PORTS[2]}, memcached :$MEMCACHED_PORT"
    start_backends
    say "gateways in $NS_GW1 ($IP_GW1) and $NS_GW2 ($IP_GW2); waiting for /healthz (a debug build compiles its plugins first)"
    start_gateway gw1
    start_gateway gw2
    wait_gateway gw1
    wait_gateway gw2
    if [ $mode = active-standby ]; then
        say "keepalived ($mode): gw1 priority 150, gw2 100, both BACKUP + nopreempt; VIP $VIP_A"
        start_keepalived gw1 nopreempt "VI_1 51 150 $VIP_A"
        wait_for 15 "gw1 takes $VIP_A" holds gw1 $VIP_A
        start_keepalived gw2 nopreempt "VI_1 51 100 $VIP_A"
        wait_for 15 "keepalived on gw2 is BACKUP" grep -q "Entering BACKUP STATE" "$DIR/logs/keepalived-gw2.log"
    else
        say "keepalived ($mode): VIP A $VIP_A (gw1 150 / gw2 100), VIP B $VIP_B (gw1 100 / gw2 150), preempt"
        start_keepalived gw1 preempt "VI_A 51 150 $VIP_A" "VI_B 52 100 $VIP_B"
        start_keepalived gw2 preempt "VI_A 51 100 $VIP_A" "VI_B 52 150 $VIP_B"
        wait_for 20 "VIP A on gw1 and VIP B on gw2" vips_home
    fi
    wait_for 10 "the VIP answers /portal" in_ns $NS_CLIENT curl -sf --max-time 1 "http://$VIP_A:$HTTP_PORT/portal"
    wait_for 30 "SQL through the VIP" in_ns $NS_CLIENT mariadb --no-defaults -h $VIP_A -P $SQL_PORT -usakai -psakai-secret -e 'select 1'
    status
    cat <<EOF

Browse (from the client namespace):
  ip netns exec $NS_CLIENT curl http://$VIP_A:$HTTP_PORT/portal        # web-1, web-2, web-3 in 3:2:1
  ip netns exec $NS_CLIENT curl http://$VIP_A:$HTTP_PORT/resource
  jar=$DIR/jar
  ip netns exec $NS_CLIENT curl -c \$jar -b \$jar -XPOST 'http://$VIP_A:$HTTP_PORT/cart/login?user=alice'
  ip netns exec $NS_CLIENT curl -c \$jar -b \$jar -XPOST 'http://$VIP_A:$HTTP_PORT/cart/add?item=tea'
  ip netns exec $NS_CLIENT curl -b \$jar http://$VIP_A:$HTTP_PORT/cart
SQL (read/write split; reads answer with a replica's server_id, 2 or 3):
  ip netns exec $NS_CLIENT mariadb -h $VIP_A -P $SQL_PORT -usakai -psakai-secret -e 'select @@server_id'
Kill the MASTER by hand and keep browsing:
  kill -KILL \$(cat $DIR/pids/gateway-gw1.pid)      # the gateway in $NS_GW1
  ip -n $NS_GW2 -4 addr show dev eth0              # $VIP_A arrives within ~2 s
Or the whole demonstration: bash $0 failover
Metrics: bash $0 metrics gw2  (admin token $ADMIN_TOKEN, admin on 127.0.0.1:$ADMIN_PORT in each gateway namespace)
Logs: $DIR/logs.  Stop everything: bash $0 stop
EOF
    trap - EXIT
}

# ---------------------------------------------------------------- status, metrics

status() {
    [ -f "$DIR/mode" ] || die "not running (no $DIR/mode)"
    local mode vip n w
    mode=$(cat "$DIR/mode")
    echo "mode: $mode"
    local vips=($VIP_A)
    if [ "$mode" = active-active ]; then vips+=($VIP_B); fi
    for vip in "${vips[@]}"; do
        echo "VIP $vip: held by $(holder $vip || echo nobody)"
    done
    for n in gw1 gw2; do
        echo "$n: gateway $(alive gateway-$n && echo running || echo stopped), /healthz $(healthz $n 2>/dev/null || echo 'no answer'), keepalived $(alive keepalived-$n && echo running || echo stopped)"
    done
    for w in web-1 web-2 web-3 memcached mariadb-0 mariadb-1 mariadb-2; do
        printf '%s %s  ' "$w" "$(alive $w && echo up || echo DOWN)"
    done
    echo
}

# The metrics the README explains, from node $1's admin listener.
metrics() {
    local n="${1:-}"
    [ "$n" = gw1 ] || [ "$n" = gw2 ] || die "usage: $0 metrics gw1|gw2"
    in_ns "$(ns_of "$n")" curl -sf --max-time 2 -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:$ADMIN_PORT/metrics" \
        | grep -E '^switchyard_(requests_total|backend_up|health_transitions_total|http_connections|session_store_calls_total|session_central_up|session_tokens_rejected_total|session_replies_total|sql_backend_up|sql_statements_total|sql_replica_lag_seconds|sql_clients_total|sql_causal_total)[{ ]' \
        | awk '$NF != 0 || /_up[{]/' \
        || die "no metrics from $n (is its gateway running?)"
}

# ---------------------------------------------------------------- failover

# A bounded loop in the client namespace: GET $2 on $1 every 10 ms for
# $3 seconds (at most 3000 requests), new connection each; lines
# "time status body".
browse_loop() {
    local vip="$1" path="$2" secs="$3" out="$4"
    spawn $NS_CLIENT "$out" bash -c "end=\$((SECONDS+$secs)); i=0
        while [ \$i -lt 3000 ] && [ \$SECONDS -lt \$end ]; do
            t=\$EPOCHREALTIME; r=\$(curl -s --max-time 1 -w '\n%{http_code}' http://$vip:$HTTP_PORT$path)
            echo \"\$t \${r##*\$'\n'} \${r%%\$'\n'*}\"; i=\$((i+1)); sleep 0.01
        done"
}

# The cart loop: with the cookie jar, POST /cart/add?item=during-N every
# 50 ms for $2 seconds (at most 400); lines "time status item backend".
cart_loop() {
    local vip="$1" secs="$2" jar="$3"
    spawn $NS_CLIENT cart-loop bash -c "end=\$((SECONDS+$secs)); i=0
        while [ \$i -lt 400 ] && [ \$SECONDS -lt \$end ]; do
            i=\$((i+1)); t=\$EPOCHREALTIME
            r=\$(curl -s --max-time 1 -c $jar -b $jar -XPOST -w '\n%{http_code}' 'http://$vip:$HTTP_PORT/cart/add?item=during-'\$i)
            b=\$(printf '%s' \"\${r%\$'\n'*}\" | jq -r .backend 2>/dev/null)
            echo \"\$t \${r##*\$'\n'} during-\$i \${b:--}\"; sleep 0.05
        done"
}

# keepalived's state for VIP A (instance VI_1, or VI_A with --active-active)
# in node $1, from its log.
vrrp_state() { grep -oE "\((VI_1|VI_A)\) Entering [A-Z]+ STATE" "$DIR/logs/keepalived-$1.log" 2>/dev/null | awk '{ s = $3 } END { print (s == "" ? "-" : s) }'; }

# Every 0.5 s for $3 seconds: who holds VIP A, each node's /healthz and
# keepalived state, the survivor's requests, session reads and refused
# session tokens, and the client's failures so far. Lines start with the
# unix time; failover prints them relative to the kill.
timeline() {
    local master="$1" survivor="$2" end=$((SECONDS + $3)) m now
    while [ $SECONDS -lt $end ]; do
        now=$EPOCHREALTIME
        m=$(in_ns "$(ns_of "$survivor")" curl -sf --max-time 0.4 -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:$ADMIN_PORT/metrics" || true)
        printf '%s %s %s %s %s %s %s %s %s %s %s\n' "$now" "$(holder $VIP_A || echo none)" \
            "$(health_word "$master")" "$(vrrp_state "$master")" \
            "$(health_word "$survivor")" "$(vrrp_state "$survivor")" \
            "$(awk '/^switchyard_requests_total[{]/ { s += $NF } END { print s + 0 }' <<<"$m")" \
            "$(awk '/^switchyard_session_store_calls_total[{]op="get",result="ok"/ { s += $NF } END { print s + 0 }' <<<"$m")" \
            "$(awk '/^switchyard_session_tokens_rejected_total[{]/ { s += $NF } END { print s + 0 }' <<<"$m")" \
            "$(cat "$DIR/logs/browse-A.log" "$DIR/logs/cart-loop.log" 2>/dev/null | awk '$2 != 200' | wc -l)" \
            "$(holder $VIP_B || echo none)"
        sleep 0.5
    done
}

wait_done() { # $1 = pid name, $2 = seconds
    local end=$((SECONDS + $2))
    while alive "$1"; do [ $SECONDS -lt $end ] || { kill -KILL "$(cat "$DIR/pids/$1.pid")" 2>/dev/null; break; }; sleep 0.1; done
}

cart_req() { # METHOD PATH -> body (status on the last line)
    in_ns $NS_CLIENT curl -s --max-time 2 -c "$DIR/failover/jar" -b "$DIR/failover/jar" -X "$1" -w '\n%{http_code}' "http://$VIP_A:$HTTP_PORT$2"
}

# Figures of a loop's log around the signal at $2: requests, failed, when
# the failures were (from the signal), and the longest time between two
# answered requests (what the client saw of the outage).
browse_figures() {
    awk -v k="$2" -v name="$3" '
        { n++
          if ($2 != 200) { f++; if (!ff) ff = $1; lf = $1 }
          else { if (last && $1 - last > gap) gap = $1 - last; last = $1 } }
        END {
            printf "%s: %d requests, %d failed", name, n, f + 0
            if (ff) printf " (from %.2f s to %.2f s after the signal)", ff - k, lf - k
            printf "; longest time without an answer %.2f s\n", gap
        }' "$1"
}

failover() {
    need_root
    local sig=KILL
    case "${1:-}" in --drain) sig=TERM ;; "") ;; *) die "usage: $0 failover [--drain]" ;; esac
    [ -f "$DIR/mode" ] || die "not running: bash $0 [--active-active] first"
    local mode master survivor t_kill t_vip b
    mode=$(cat "$DIR/mode")
    master=$(holder $VIP_A) || die "nobody holds $VIP_A"
    survivor=$(other "$master")
    alive "gateway-$survivor" && healthz "$survivor" >/dev/null || die "$survivor is not healthy: nothing to fail over to (bash $0 restart $survivor)"
    [ "$(ip netns identify "$(cat "$DIR/pids/gateway-$master.pid")")" = "$(ns_of "$master")" ] || die "gateway-$master's pid is not in $(ns_of "$master")"
    rm -rf "$DIR/failover"; mkdir -p "$DIR/failover"
    if [ "$mode" = active-active ]; then
        say "$master holds $VIP_A (MASTER for it); $survivor holds $VIP_B and is BACKUP for $VIP_A"
    else
        say "$master holds $VIP_A (MASTER); $survivor is BACKUP"
    fi
    say "a session cart through the VIP: login and three items (each request may go to another web server)"
    cart_req POST "/cart/login?user=alice" | head -1
    for i in 1 2 3; do cart_req POST "/cart/add?item=before-$i" | head -1; done
    say "load for 10 s: /portal every 10 ms, and the cart loop adding an item every 50 ms; sending SIG$sig to $master's gateway in 3 s"
    browse_loop $VIP_A /portal 10 browse-A
    if [ "$mode" = active-active ]; then browse_loop $VIP_B /portal 10 browse-B; fi
    cart_loop $VIP_A 10 "$DIR/failover/jar"
    timeline "$master" "$survivor" 11 >"$DIR/failover/timeline.raw" &
    local timeline_pid=$!
    sleep 3
    t_kill=$EPOCHREALTIME
    kill -$sig "$(cat "$DIR/pids/gateway-$master.pid")"
    say "SIG$sig sent to the gateway in $(ns_of "$master") (pid $(cat "$DIR/pids/gateway-$master.pid"))"
    local end=$((SECONDS + 10))
    until holds "$survivor" $VIP_A; do
        [ $SECONDS -lt $end ] || die "$VIP_A did not move to $survivor within 10 s (see $DIR/logs/keepalived-*.log)"
        sleep 0.02
    done
    t_vip=$EPOCHREALTIME
    say "$VIP_A is on $survivor $(awk -v a="$t_kill" -v b="$t_vip" 'BEGIN { printf "%.2f", b - a }') s after the kill; $master holds it: $(holds "$master" $VIP_A && echo yes || echo no)"
    wait_done browse-A 20; wait_done cart-loop 20
    if [ "$mode" = active-active ]; then wait_done browse-B 20; fi
    for _ in $(seq 150); do kill -0 $timeline_pid 2>/dev/null || break; sleep 0.1; done
    kill $timeline_pid 2>/dev/null || true
    say "while it happened (t = seconds from the kill; requests, session gets ok and refused session tokens are $survivor's metrics; failed = the client's failed requests so far):"
    awk -v k="$t_kill" -v m="$master" -v s="$survivor" -v aa="$([ "$mode" = active-active ] && echo 1)" '
        BEGIN { printf "   %6s %-7s%s %-11s %-11s %-11s %-11s %8s %12s %15s %6s\n", "t", "VIP A", (aa ? " VIP B  " : ""), m " healthz", m " vrrp", s " healthz", s " vrrp", "requests", "session gets", "tokens refused", "failed" }
        { printf "   %6.1f %-7s%s %-11s %-11s %-11s %-11s %8s %12s %15s %6s\n", $1 - k, $2, (aa ? sprintf(" %-7s", $11) : ""), $3, $4, $5, $6, $7, $8, $9, $10 }' "$DIR/failover/timeline.raw"
    cp "$DIR/logs/browse-A.log" "$DIR/logs/cart-loop.log" "$DIR/failover/"
    browse_figures "$DIR/failover/browse-A.log" "$t_kill" "/portal on VIP A $VIP_A"
    if [ "$mode" = active-active ]; then
        cp "$DIR/logs/browse-B.log" "$DIR/failover/"
        browse_figures "$DIR/failover/browse-B.log" "$t_kill" "/portal on VIP B $VIP_B ($survivor's own)"
    fi
    browse_figures "$DIR/failover/cart-loop.log" "$t_kill" "cart adds on VIP A"
    # The cart as the survivor sees it: every acknowledged item must be in it.
    local body code
    for _ in $(seq 20); do
        body=$(cart_req GET /cart); code=${body##*$'\n'}; body=${body%$'\n'*}
        [ "$code" = 200 ] && break; sleep 0.1
    done
    [ "$code" = 200 ] || die "GET /cart answered $code after the failover: $body"
    jq -r '.cart[]' <<<"$body" | sort >"$DIR/failover/cart.txt"
    { printf 'before-%s\n' 1 2 3; awk '$2 == 200 { print $3 }' "$DIR/failover/cart-loop.log"; } | sort >"$DIR/failover/acked.txt"
    local acked missing extra
    acked=$(wc -l <"$DIR/failover/acked.txt")
    missing=$(comm -23 "$DIR/failover/acked.txt" "$DIR/failover/cart.txt" | wc -l)
    extra=$(comm -13 "$DIR/failover/acked.txt" "$DIR/failover/cart.txt" | tr '\n' ' ')
    say "the cart after the failover (GET /cart, answered by web server $(jq -r .backend <<<"$body") through $survivor): user $(jq -r .user <<<"$body"), $(jq '.cart | length' <<<"$body") items"
    say "acknowledged adds: $acked; missing from the cart: $missing${extra:+; in the cart but never acknowledged (in flight at the kill): $extra}"
    if [ "$missing" = 0 ]; then
        say "session intact: every acknowledged item is in the cart"
    else
        echo "run.sh: SESSION LOST ITEMS: $(comm -23 "$DIR/failover/acked.txt" "$DIR/failover/cart.txt" | tr '\n' ' ')" >&2
    fi
    say "what $survivor's keepalived logged:"
    grep -E "Entering (MASTER|BACKUP|FAULT) STATE|Script .* failed|succeeded" "$DIR/logs/keepalived-$survivor.log" | tail -3 | sed 's/^/   /'
    say "what $master's keepalived logged:"
    grep -E "Entering (MASTER|BACKUP|FAULT) STATE|Script .* failed|succeeded" "$DIR/logs/keepalived-$master.log" | tail -3 | sed 's/^/   /'
    say "SQL through the VIP, now $survivor's listener: a write, then a read (server_id 1 = primary, 2/3 = replicas)"
    in_ns $NS_CLIENT mariadb --no-defaults -h $VIP_A -P $SQL_PORT -usakai -psakai-secret -N sakai \
        -e "CREATE TABLE IF NOT EXISTS failover (at DATETIME(3)); INSERT INTO failover VALUES (NOW(3)); SELECT @@server_id AS read_from, COUNT(*) AS rows_seen FROM failover;" | sed 's/^/   /'
    say "$survivor's metrics (bash $0 metrics $survivor):"
    metrics "$survivor" | grep -E 'requests_total|session_store_calls_total|session_central_up|sql_backend_up|health_transitions' | sed 's/^/   /'
    echo "Logs of this run: $DIR/failover.  Start $master's gateway again: bash $0 restart $master"
}

restart() {
    need_root
    local n="${1:-}"
    [ "$n" = gw1 ] || [ "$n" = gw2 ] || die "usage: $0 restart gw1|gw2"
    alive "gateway-$n" && die "the gateway in $n is running"
    find_switchyard
    find_plugins
    start_gateway "$n"
    wait_gateway "$n"
    say "the gateway in $n is healthy again; keepalived there leaves FAULT after $CHECK_RISE good checks"
    sleep $((CHECK_INTERVAL * CHECK_RISE + 1))
    status
}

# ---------------------------------------------------------------- stop

stop() {
    need_root
    local f pid n
    if [ -d "$DIR/pids" ]; then
        for f in "$DIR"/pids/*.pid; do
            [ -f "$f" ] || continue
            pid=$(cat "$f")
            # Only a process still in one of our namespaces is ours.
            case "$(ip netns identify "$pid" 2>/dev/null)" in ${P}*) kill -TERM "$pid" 2>/dev/null || true ;; esac
        done
        # Bounded: MariaDB shuts down cleanly within a few seconds.
        for _ in $(seq 50); do
            local left=0
            for f in "$DIR"/pids/*.pid; do [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && left=1; done
            [ $left = 0 ] && break
            sleep 0.1
        done
    fi
    # Whatever still runs in our namespaces (keepalived's children, check
    # scripts, a mariadbd slow to stop) is ours too.
    for n in $(ip netns list | awk '{ print $1 }' | grep "^${P}" || true); do
        for pid in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    done
    sleep 0.3
    for n in $(ip netns list | awk '{ print $1 }' | grep "^${P}" || true); do
        ip netns del "$n"
        say "deleted namespace $n"
    done
    if [ -f "$DIR/.sakai-cluster" ]; then rm -rf "$DIR"; say "removed $DIR"; fi
}

case "${1:-start}" in
    start) shift || true; start "$@" ;;
    --active-active) start --active-active ;;
    failover) failover "${2:-}" ;;
    restart) restart "${2:-}" ;;
    status) status ;;
    metrics) metrics "${2:-}" ;;
    stop) stop ;;
    -h|--help|help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command ${1}; see bash $0 --help" ;;
esac
