#!/usr/bin/env bash
# One command: build, start memcached (127.0.0.1:21211), two exam backends
# (18091-18092) and the gateway (8080) with an exam window of
# ${EXAM_MINUTES:-60} minutes from now, and print tokens and requests to try.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/common.sh
need_apt cmake memcached
need_wasm_target
for ws in session access; do
    cargo build --release --target wasm32-wasip2 --manifest-path "plugins/$ws/Cargo.toml" --target-dir plugins/target
done
cargo build --release -p switchyard
bin="${CARGO_TARGET_DIR:-target}/release/switchyard"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
user=(); [ "$(id -u)" -eq 0 ] && user=(-u nobody)
memcached -l 127.0.0.1 -p 21211 -U 0 "${user[@]}" & pids+=($!)
for i in 1 2; do "$bin" demo-backend --listen "127.0.0.1:1809$i" --name "exam-$i" & pids+=($!); done
dir="$(mktemp -d)"
now_ms=$(($(date +%s) * 1000))
end_ms=$((now_ms + ${EXAM_MINUTES:-60} * 60000))
sed -e "s#\[0, 4102444800000\]#[$now_ms, $end_ms]#" -e "s#\.\./\.\./plugins#$PWD/plugins#" \
    examples/online-exam/switchyard.toml > "$dir/switchyard.toml"
cp examples/online-exam/attributes.toml "$dir/"
export SWITCHYARD_ADMIN_TOKEN="${SWITCHYARD_ADMIN_TOKEN:-online-exam-admin-token}"
"$bin" run --config "$dir/switchyard.toml" & pids+=($!)
token() {
    python3 - "$1" <<'PY'
import base64, hashlib, hmac, json, sys, time
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
head = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b(json.dumps({"sub": sys.argv[1], "exp": int(time.time()) + 4 * 3600}).encode())
key = b"online-exam-demo-jwt-key-change-me-0123456"
print(f"{head}.{body}." + b(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()))
PY
}
alice=$(token alice); tom=$(token tom)
cat <<EOM
>> exam open for ${EXAM_MINUTES:-60} minutes on http://127.0.0.1:8080
   A=$alice
   T=$tom
   curl -H "Authorization: Bearer \$A" localhost:8080/paper/c1          # 200: her course
   curl -H "Authorization: Bearer \$A" localhost:8080/paper/c2          # 403 not your course
   curl -XPOST -H "Authorization: Bearer \$A" localhost:8080/exam/c1/submit   # 403 accept the exam rules first: POST /exam/rules
   curl -XPOST -H "Authorization: Bearer \$A" localhost:8080/exam/rules       # 200
   curl -XPOST -H "Authorization: Bearer \$A" localhost:8080/exam/c1/submit   # 200 three times, then 403 no submission attempts left
   curl -H "Authorization: Bearer \$T" localhost:8080/submissions/c1    # 200: teachers see submissions
EOM
wait
