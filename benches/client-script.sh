#!/usr/bin/env bash
# What outbox.js costs a site: its size raw and gzipped, and the bytes a page load moves for it
# when nothing is waiting in the browser (the script sends nothing then: it opens its
# IndexedDB queue, finds it empty, and only listens). Measured against the `outbox` binary:
#   benches/client-script.sh [path/to/outbox]      (default target/debug/outbox)
# First visit: the whole response (headers and body; gzipped if a proxy in front compresses
# it). Within the hour of Cache-Control: no request at all. After it: a revalidation, 304.
set -euo pipefail
bin=$(realpath "${1:-target/debug/outbox}")
for tool in curl gzip python3; do
    command -v "$tool" >/dev/null || { echo "client-script.sh: $tool is not installed" >&2; exit 2; }
done
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/data" --log-format json >/dev/null 2>&1 &
server_pid=$!
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
done
url="http://127.0.0.1:$port/outbox.js"
file="$here/src/http/outbox.js"
raw=$(wc -c <"$file")
gz=$(gzip -9 -c "$file" | wc -c)
# size_request: what the browser sends; size_header + size_download: what it receives.
first=$(curl -sS -o /dev/null -H 'Origin: https://www.example.com' \
    -w '%{size_request} %{size_header} %{size_download}' "$url")
etag=$(curl -sS -D - -o /dev/null "$url" | awk 'tolower($1)=="etag:" {print $2}' | tr -d '\r')
again=$(curl -sS -o /dev/null -H 'Origin: https://www.example.com' -H "If-None-Match: $etag" \
    -w '%{http_code} %{size_request} %{size_header} %{size_download}' "$url")
read -r f_req f_head f_body <<<"$first"
read -r a_code a_req a_head a_body <<<"$again"
echo "outbox.js: $raw bytes raw, $gz bytes gzipped (gzip -9)"
echo "first page load: request $f_req B, answer $f_head B headers + $f_body B body = $((f_req + f_head + f_body)) B"
echo "  (behind a proxy that gzips: about $((f_req + f_head + gz)) B)"
echo "page load within an hour of the last: 0 B (Cache-Control: public, max-age=3600)"
echo "page load after that: $a_code, request $a_req B + answer $a_head B headers + $a_body B body = $((a_req + a_head + a_body)) B"
