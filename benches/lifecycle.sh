#!/usr/bin/env bash
# Bytes written to disk per record over its whole life, through the `outbox` binary only (so
# any release can be measured the same way): accept (posts over HTTP, delivery off), deliver
# (to a stub dashboard that answers 200 at once) and purge (the server's periodic purge of
# tombstones once the idempotency window is over), each phase its own `outbox serve` on the
# same data directory, started and stopped. The bytes are the sectors written by a fresh loop
# device holding the data directory (this script runs itself through loop-device.sh: root).
#   benches/lifecycle.sh [path/to/outbox]      (default target/release/outbox)
# OUTBOX_LIFE_RECORDS sets the number of posts (default 50000). Needs wrk, curl, python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${OUTBOX_BENCH_DEVICE:-}" ]; then
    exec "$here/loop-device.sh" "$0" "$@"
fi
bin=$(realpath "${1:-target/release/outbox}")
records=${OUTBOX_LIFE_RECORDS:-50000}
for tool in wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "lifecycle.sh: $tool is not installed" >&2; exit 2; }
done
work=$(mktemp -d)
stub_pid=
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    [ -n "$stub_pid" ] && kill "$stub_pid" 2>/dev/null || true
}
trap cleanup EXIT

device_bytes() { awk '{printf "%.0f\n", $7 * 512}' "/sys/block/$OUTBOX_BENCH_DEVICE/stat"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
base="http://127.0.0.1:$port"

# A gauge of outbox_outbox_records, by status (0 when absent).
records_with() {
    curl -sf "$base/metrics" | awk -v s="status=\"$1\"" '$1 ~ /^outbox_outbox_records\{/ && index($1, s) {print int($2); f=1} END {if (!f) print 0}'
}

start() {
    "$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" --rate-limit off \
        --log-level warn "$@" >>"$work/serve.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 600); do
        curl -sf "$base/health/ready" >/dev/null && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "lifecycle.sh: outbox did not become ready; its log:" >&2
    cat "$work/serve.log" >&2
    exit 1
}

stop() {
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=
    sync
}

# Waits until the gauge for status $1 reaches $2 (bounded: 10 minutes).
wait_for() {
    for _ in $(seq 6000); do
        [ "$(records_with "$1")" -ge "$2" ] && return 0
        sleep 0.1
    done
    echo "lifecycle.sh: $1 did not reach $2 in 10 minutes" >&2
    exit 1
}

python3 "$here/support/stub_dashboard.py" >"$work/stub.port" &
stub_pid=$!
for _ in $(seq 50); do [ -s "$work/stub.port" ] && break; sleep 0.1; done
[ -s "$work/stub.port" ] || { echo "lifecycle.sh: the stub dashboard did not start" >&2; exit 1; }
dashboard=(--dashboard-url "http://127.0.0.1:$(cat "$work/stub.port")"
    --ingest-key bench-ingest-key-0123456789)

cat >"$work/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[{"name":"Maria Lopez","email":"maria.lopez@example.com","company":"Northwind Health","phone":"+1 555 0100","message":"We would like a demo for our support team of about forty agents, ideally next week. Please send a few time slots.","consent":true,"page":"/pricing"}]]
local n = 0
function response(status, headers, body)
    n = n + 1
    if n >= $records then wrk.thread:stop() end
end
EOF

echo "outbox: $("$bin" --version 2>/dev/null || echo "$bin")"
echo "bytes written: sectors written by /dev/$OUTBOX_BENCH_DEVICE (the data directory's own filesystem), per record"

b0=$(device_bytes)
start
wrk -t1 -c64 -d120s -s "$work/post.lua" "$base/api/collect" >"$work/wrk.txt"
accepted=$(records_with pending)
stop
if [ "$accepted" -le 0 ]; then
    echo "lifecycle.sh: no post was stored; wrk said:" >&2
    cat "$work/wrk.txt" >&2
    exit 1
fi
b1=$(device_bytes)

start "${dashboard[@]}"
wait_for delivered "$accepted"
stop
b2=$(device_bytes)

start "${dashboard[@]}" --idempotency-window 1s --purge-interval 1s
wait_for purged "$accepted"
stop
b3=$(device_bytes)

awk -v n="$accepted" -v a=$((b1 - b0)) -v d=$((b2 - b1)) -v p=$((b3 - b2)) 'BEGIN {
    printf "records: %d (%s)\n", n, "posted over HTTP at 64 connections"
    printf "accept:  %8.0f B/record\n", a / n
    printf "deliver: %8.0f B/record\n", d / n
    printf "purge:   %8.0f B/record\n", p / n
    printf "life:    %8.0f B/record (accept + deliver + purge)\n", (a + d + p) / n
}'
du -sh "$work/data" | awk '{print "data directory after the purge: " $1}'
