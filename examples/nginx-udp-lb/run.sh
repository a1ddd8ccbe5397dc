#!/usr/bin/env bash
# Run nginx in the foreground, load-balancing UDP over two trioudp backends,
# all on loopback. Ctrl-C stops everything.
#
#   examples/nginx-udp-lb/run.sh
#   trioudp send --port 9000 --no-exit ping       # round robin
#   trioudp send --port 9010 --no-exit ping       # per-client affinity
#
# Ports come from LISTEN (9000), LISTEN_AFFINITY (9010), BACKEND_A (9001) and
# BACKEND_B (9002); PYTHON picks the interpreter that has trioudp.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
listen="${LISTEN:-9000}" listen_affinity="${LISTEN_AFFINITY:-9010}"
port_a="${BACKEND_A:-9001}" port_b="${BACKEND_B:-9002}"
prefix="$(mktemp -d "${TMPDIR:-/tmp}/trioudp-nginx.XXXXXX")"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$prefix"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Each backend must listen before nginx starts: a request nginx sends to a
# backend that is not there yet marks it failed for fail_timeout.
start_backend() {  # NAME PORT
    local out banner
    exec {out}< <(exec "$python" "$here/backend.py" --name "$1" --port "$2")
    pids+=($!)
    if ! read -r banner <&"$out"; then
        echo "backend $1 did not start" >&2
        exit 1
    fi
    echo "$banner"
}
start_backend a "$port_a"
start_backend b "$port_b"

module=/usr/lib/nginx/modules/ngx_stream_module.so
load_stream=""
[ -f "$module" ] && load_stream="load_module $module;"
sed -e "s|\${LOAD_STREAM}|$load_stream|" \
    -e "s|\${PREFIX}|$prefix|g" \
    -e "s|\${BACKEND_A}|127.0.0.1:$port_a|g" \
    -e "s|\${BACKEND_B}|127.0.0.1:$port_b|g" \
    -e "s|\${LISTEN}|127.0.0.1:$listen|" \
    -e "s|\${LISTEN_AFFINITY}|127.0.0.1:$listen_affinity|" \
    "$here/nginx.conf.template" > "$prefix/nginx.conf"

echo "nginx: round robin on 127.0.0.1:$listen, affinity on 127.0.0.1:$listen_affinity;" \
     "log in $prefix/error.log"
nginx -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" & pids+=($!)
wait "${pids[-1]}"
