#!/usr/bin/env bash
# HTTPS data path, side by side in one run: nginx (one worker, TLS 1.3,
# HTTP/1.1 keep-alive to the backends) against Switchyard's [server.tls]
# (rustls, threads = 1, builtin round robin), both in front of the same two
# nginx backends serving a 1 KB file, with the same ECDSA P-256 certificate.
# Three loads per balancer:
#   wrk     wrk -t1 -c64, HTTP/1.1 over TLS, keep-alive
#   h2      h2load -c10 -m100, HTTP/2 over TLS, 100 streams per connection
#   newconn h2load --h1 -c50 with "Connection: close": one TLS handshake
#           (full, no resumption) per request
# Reports median req/s and the balancer's CPU per request (utime + stime of
# its processes over requests served) over REPS rounds, run in turn so that
# machine noise hits every row alike. CPU per request is the steadier figure
# on a shared machine.
# Usage: bash benches/tls.sh [seconds per load, default 5] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_apt protobuf-compiler wrk nghttp2-client nginx-light openssl
DUR=${1:-5}
REPS=${2:-3}
cargo build --release -p switchyard -q
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$TARGET/release/switchyard
. benches/lib.sh

# A CA and an ECDSA P-256 leaf for localhost / 127.0.0.1 (webpki refuses a
# self-signed CA certificate as a server's own).
(
    cd "$WORK"
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 2 -subj /CN=bench-ca \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign -out ca.pem
    openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out key.pem
    openssl req -new -key key.pem -subj /CN=localhost -out leaf.csr
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' >leaf.ext
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -sha256 \
        -extfile leaf.ext -out leaf.pem 2>/dev/null
    cat leaf.pem ca.pem >cert.pem
    chmod 644 cert.pem key.pem
) >/dev/null

start_backends

gw_config() { # $1 plain port, $2 TLS port, $3 h2c upstream (true|false)
    printf '[server]\nlisten = "127.0.0.1:%s"\nthreads = 1\n' "$1"
    printf '[server.tls]\nlisten = "127.0.0.1:%s"\n' "$2"
    printf '[[server.tls.certs]]\ncert = "%s"\nkey = "%s"\n' "$WORK/cert.pem" "$WORK/key.pem"
    printf '[[upstreams]]\nname = "web"\n'
    if [ "$3" = true ]; then
        printf 'protocol = "h2c"\nbackends = [{ address = "127.0.0.1:%s" }, { address = "127.0.0.1:%s" }]\n' "${H2C[$B1]}" "${H2C[$B2]}"
    else
        printf 'backends = [{ address = "127.0.0.1:%s" }, { address = "127.0.0.1:%s" }]\n' "$B1" "$B2"
    fi
    printf '[[routes]]\nupstream = "web"\n'
}

start() { # $1 row -> sets LB_PIDS and LB_PORT
    LB_PORT=$(port)
    case "$1" in
        nginx)
            # nginx 1.22: http2 is a listen parameter.
            nginx_conf lb "listen 127.0.0.1:$LB_PORT ssl http2;
        ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem; ssl_protocols TLSv1.3;
        keepalive_requests 1000000;" \
                'location / { proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection ""; }'
            nginx -c "$WORK/lb.conf" -p "$WORK"; wait_port "$LB_PORT"
            LB_PIDS="$(cat "$WORK/lb.pid") $(pgrep -P "$(cat "$WORK/lb.pid")" | tr '\n' ' ')" ;;
        switchyard*)
            local h2c=false; [ "$1" = switchyard-h2c ] && h2c=true
            gw_config "$(port)" "$LB_PORT" "$h2c" >"$WORK/gw.toml"
            "$BIN" run --config "$WORK/gw.toml" >"$WORK/gw.log" 2>&1 &
            LB_PIDS=$!; pids+=($!); wait_port "$LB_PORT" ;;
    esac
}

# One load against https://127.0.0.1:$LB_PORT/; prints "requests req/s".
# wrk runs DUR seconds; h2load runs a fixed request count (sized to take
# about DUR seconds on the 2-core development machine). timeout(1) bounds
# every load in time.
H2_N=$((DUR * 30000))
NC_N=$((DUR * 4000))
h2load_count() { # parse h2load's summary: 2xx count and 2xx per second
    awk '/^finished in/ {t=$3; sub(/,$/,"",t); if (t ~ /ms$/) {sub(/ms$/,"",t); t/=1000} else sub(/s$/,"",t)}
         /^requests:/ {bad=$10 + $12 + $14}
         /^status codes:/ {n=$3; bad+=$5 + $7 + $9}
         END {if (bad > 0 || n == 0) {print "h2load: " bad " failed, errored, timed out or non-2xx" > "/dev/stderr"; exit 1}
              printf "%d %.2f\n", n, n / t}'
}
load() { # $1 load
    local url="https://127.0.0.1:$LB_PORT/" out
    case "$1" in
        wrk)
            out=$(timeout $((DUR + 10)) wrk -t1 -c64 -d"${DUR}s" "$url" 2>&1)
            if echo "$out" | grep -q Non-2xx; then echo "wrk: non-2xx: $out" >&2; exit 1; fi
            echo "$out" | awk '/requests in/ {n=$1} /Requests\/sec/ {r=$2} END {print n, r}' ;;
        h2)
            out=$(timeout $((DUR * 6 + 10)) h2load -t1 -c10 -m100 -n"$H2_N" "$url" 2>&1) || { echo "h2load: $out" >&2; exit 1; }
            echo "$out" | grep -q 'Application protocol: h2' || { echo "h2load: no h2: $out" >&2; exit 1; }
            echo "$out" | h2load_count ;;
        newconn)
            out=$(timeout $((DUR * 6 + 10)) h2load -t1 -c50 -n"$NC_N" --h1 -H 'Connection: close' "$url" 2>&1) || { echo "h2load: $out" >&2; exit 1; }
            echo "$out" | h2load_count ;;
    esac
}

# switchyard-h2c: the same, with an h2c upstream to the same backends.
ROWS=(nginx switchyard switchyard-h2c)
LOADS=(wrk h2 newconn)
TICK=$(getconf CLK_TCK)
echo ">> ${DUR}s per load, 1 KB file, 2 nginx backends (1 worker each), each balancer 1 worker, TLS 1.3 ECDSA P-256; $REPS rounds" >&2
for rep in $(seq "$REPS"); do
    for row in "${ROWS[@]}"; do
        start "$row"
        timeout 10 wrk -t1 -c64 -d1s "https://127.0.0.1:$LB_PORT/" >/dev/null 2>&1  # warm the pools
        for l in "${LOADS[@]}"; do
            before=$(cpu $LB_PIDS)
            read -r reqs rps < <(load "$l")
            after=$(cpu $LB_PIDS)
            echo "$rep $row $l $rps $reqs $((after - before))" >>"$WORK/results"
            printf '  round %s %-10s %-8s %10s req/s  %8s requests\n' "$rep" "$row" "$l" "$rps" "$reqs" >&2
        done
        stop "$row"
    done
done

python3 - "$WORK/results" "$TICK" <<'PY'
import sys, statistics
res, tick = {}, int(sys.argv[2])
for line in open(sys.argv[1]):
    rep, row, load, rps, reqs, ticks = line.split()
    r = res.setdefault((row, load), {"rps": [], "cpu": []})
    r["rps"].append(float(rps))
    r["cpu"].append(int(ticks) / tick / max(int(reqs), 1) * 1e6)
med = statistics.median
loads = {"wrk": "wrk -t1 -c64 (h1)", "h2": "h2load -c10 -m100 (h2)", "newconn": "h2load -c50, new TLS conn per req"}
rows = sorted({row for row, _ in res}, key=lambda r: r != "nginx")
for load, title in loads.items():
    ng = res[("nginx", load)]
    print(f"\n{title}")
    print("| balancer | req/s (median, min–max) | CPU µs/req | req/s vs nginx | CPU vs nginx |")
    print("|---|---|---|---|---|")
    for row in rows:
        r = res[(row, load)]
        print(f"| {row} | {med(r['rps']):,.0f} ({min(r['rps']):,.0f}–{max(r['rps']):,.0f}) | "
              f"{med(r['cpu']):.1f} | {med(r['rps'])/med(ng['rps']):.2f} | {med(r['cpu'])/med(ng['cpu']):.2f} |")
PY
