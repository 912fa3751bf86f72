#!/usr/bin/env bash
# One command: make a local CA and a localhost certificate (ECDSA P-256,
# SANs localhost and 127.0.0.1) in examples/tls/certs unless they exist,
# build the gateway and serve HTTPS + HTTP/2 on 127.0.0.1:8443.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/common.sh
need_apt cmake openssl
dir=examples/tls/certs
mkdir -p "$dir"
if [ ! -f "$dir/localhost.pem" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
        -subj "/CN=Switchyard example CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$dir/localhost.key" -out "$dir/localhost.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/ext"
    openssl x509 -req -in "$dir/localhost.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 825 -extfile "$dir/ext" -out "$dir/localhost.pem" 2>/dev/null
    rm -f "$dir/localhost.csr" "$dir/ext" "$dir/ca.srl"
    echo ">> made $dir/ca.pem and a localhost certificate it signed"
fi
cargo build --release -p switchyard
export SWITCHYARD_ADMIN_TOKEN="${SWITCHYARD_ADMIN_TOKEN:-tls-example-admin-token}"
echo ">> try: curl --cacert $dir/ca.pem https://localhost:8443/          (HTTP/2, demo-1, demo-2, demo-3 in turn)"
echo ">>      curl -i http://127.0.0.1:8080/x                              (308 to https://127.0.0.1:8443/x)"
echo ">>      curl -s -X POST -H \"Authorization: Bearer \$SWITCHYARD_ADMIN_TOKEN\" http://127.0.0.1:9901/tls/reload"
exec cargo run --release -q -p switchyard -- run --config examples/tls/switchyard.toml
