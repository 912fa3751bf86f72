#!/usr/bin/env bash
# Start the SQL side of the sakai-cluster example: a MariaDB primary on
# 127.0.0.1:13306 and GTID replicas on 13307 and 13308, with the logins
# switchyard.toml uses. Data lives under ${SAKAI_DB_DIR:-/tmp/sakai-mariadb};
# stop with `bash start-mariadb.sh stop`. run.sh reuses it with
# SAKAI_DB_BIND (the address the servers listen on and replicate from,
# default 127.0.0.1) and SAKAI_DB_NETNS (a network namespace to run the
# servers in, default none).
set -euo pipefail
dir="${SAKAI_DB_DIR:-/tmp/sakai-mariadb}"
bind="${SAKAI_DB_BIND:-127.0.0.1}"
in_ns=(); [ -n "${SAKAI_DB_NETNS:-}" ] && in_ns=(ip netns exec "$SAKAI_DB_NETNS")
user_arg=(); [ "$(id -u)" -eq 0 ] && user_arg=(--user=root)

if [ "${1:-}" = stop ]; then
    for n in 0 1 2; do [ -f "$dir/$n/pid" ] && kill "$(cat "$dir/$n/pid")" 2>/dev/null || true; done
    exit 0
fi

sql() { mariadb --no-defaults --socket="$dir/$1/sock" -uroot -e "$2"; }

for n in 0 1 2; do
    port=$((13306 + n))
    mkdir -p "$dir/$n"
    [ -d "$dir/$n/data/mysql" ] || mariadb-install-db --no-defaults --datadir="$dir/$n/data" --auth-root-authentication-method=socket --skip-test-db "${user_arg[@]}" >/dev/null
    ro=(); [ "$n" -gt 0 ] && ro=(--read-only=1)
    "${in_ns[@]}" mariadbd --no-defaults --datadir="$dir/$n/data" --socket="$dir/$n/sock" --pid-file="$dir/$n/pid" \
        --port=$port --bind-address=$bind --server-id=$((n + 1)) --log-bin="$dir/$n/binlog" \
        --binlog-format=ROW --log-slave-updates=1 --gtid-strict-mode=1 --skip-name-resolve "${ro[@]}" "${user_arg[@]}" \
        >"$dir/$n/mariadbd.log" 2>&1 &
    up=0
    for _ in $(seq 150); do sql $n "SELECT 1" >/dev/null 2>&1 && { up=1; break; }; sleep 0.2; done
    [ $up = 1 ] || { echo "mariadbd $n did not start within 30 s; see $dir/$n/mariadbd.log" >&2; exit 1; }
done

sql 0 "CREATE USER IF NOT EXISTS 'sakai'@'%' IDENTIFIED BY 'sakai-secret';
       CREATE DATABASE IF NOT EXISTS sakai; GRANT ALL ON sakai.* TO 'sakai'@'%';
       CREATE USER IF NOT EXISTS 'monitor'@'%' IDENTIFIED BY 'monitor-secret'; GRANT SLAVE MONITOR ON *.* TO 'monitor'@'%';
       CREATE USER IF NOT EXISTS 'repl'@'%' IDENTIFIED BY 'repl'; GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';"
for n in 1 2; do
    sql $n "STOP SLAVE; CHANGE MASTER TO MASTER_HOST='$bind', MASTER_PORT=13306, MASTER_USER='repl',
            MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE;"
done
echo "MariaDB primary $bind:13306, replicas 13307 13308 (data in $dir)"
