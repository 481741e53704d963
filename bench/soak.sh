#!/usr/bin/env bash
# Soak under reload: SOAK_SECONDS (ten minutes by default) of mixed traffic through moodle-edge
# on 127.0.0.1, with a SIGHUP every RELOAD_EVERY seconds and a new TLS certificate swapped in
# every SWAP_EVERY seconds (before that minute's SIGHUP). The traffic (bench/soak/driver.py):
# course pages (plain, and TLS on new connections), offloaded downloads with byte ranges
# (X-Accel-Redirect, bytes checked), web-service calls of one token over its rate limit and of
# another well under it, one WebSocket held open with a frame echoed every second, and slow
# clients (a head sent byte by byte, a download read slowly). The stand-in Moodle is
# bench/soak/upstream.py.
#
# Prints requests by kind and outcome, which of them failed that should have passed, the
# proxy's RSS, open fds and upstream connections at the start, every minute, at the end and
# idle after the traffic stopped, and the reloads and certificate swaps done. Exit 1 when a
# request failed that should have passed or a reload was not applied.
#
# Env (defaults in brackets):
#   SOAK_SECONDS [600]  RELOAD_EVERY [10]  SWAP_EVERY [60]  FILE_MIB [2]  BASE_PORT [18500]
#   MOODLE_EDGE_BIN [target/release/moodle-edge; built with cargo build --release if missing;
#                    target/debug/moodle-edge works too, the figures are about flatness]
#   KEEP_DIR [0]  1 keeps the temp dir (configs, the proxy's log, the JSON summary)
#
# Only 127.0.0.1 is used. The script stops by itself after SOAK_SECONDS (plus start-up) and
# ends only the processes it started, by PID.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SOAK_SECONDS="${SOAK_SECONDS:-600}"
RELOAD_EVERY="${RELOAD_EVERY:-10}"
SWAP_EVERY="${SWAP_EVERY:-60}"
FILE_MIB="${FILE_MIB:-2}"
BASE_PORT="${BASE_PORT:-18500}"
KEEP_DIR="${KEEP_DIR:-0}"
MOODLE_EDGE_BIN="${MOODLE_EDGE_BIN:-$repo/target/release/moodle-edge}"
require_positive SOAK_SECONDS RELOAD_EVERY SWAP_EVERY FILE_MIB BASE_PORT
require_cmds python3 openssl curl
ensure_edge_bin

make_workdir soak
port_up=$((BASE_PORT + 1))
port_http=$((BASE_PORT + 2))
port_tls=$((BASE_PORT + 3))
port_admin=$((BASE_PORT + 4))
check_ports_free "$port_up" "$port_http" "$port_tls" "$port_admin"

mkdir -p "$dir/dataroot" "$dir/tls"
head -c $((FILE_MIB << 20)) /dev/urandom >"$dir/dataroot/file.bin"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=lms.test -addext "subjectAltName=DNS:lms.test,IP:127.0.0.1" \
    -keyout "$dir/tls/key.pem" -out "$dir/tls/cert.pem" 2>/dev/null

cat >"$dir/moodle-edge.yaml" <<EOF
server:
  listen:
    - addr: "127.0.0.1:$port_http"
    - addr: "127.0.0.1:$port_tls"
      tls:
        certificates:
          - cert_file: "$dir/tls/cert.pem"
            key_file: "$dir/tls/key.pem"
  admin_addr: "127.0.0.1:$port_admin"
  worker_threads: 1
  shutdown_timeout: "2s"
upstream:
  url: "http://127.0.0.1:$port_up"
  health_check: { path: /ready, interval: 5s }
moodle:
  wwwroot: "http://lms.test"
  dataroot: "$dir/dataroot"
sendfile:
  mappings:
    - prefix: /moodledata-internal/
      root: "$dir/dataroot"
webservice:
  rate_limits:
    - key: token
      rate: 60/min
      burst: 5
  max_concurrent_per_token: 2
log:
  level: warn
  access:
    target: "off"
EOF
check_edge_config "$MOODLE_EDGE_BIN"

start upstream python3 "$repo/bench/soak/upstream.py" "$port_up"
wait_ready "http://127.0.0.1:$port_up/ready" upstream
start edge "$MOODLE_EDGE_BIN" run --config "$dir/moodle-edge.yaml"
edge_pid=$started_pid
wait_ready "http://127.0.0.1:$port_admin/readyz" edge

echo "$me: ${SOAK_SECONDS}s of mixed traffic; SIGHUP every ${RELOAD_EVERY}s, a new certificate every ${SWAP_EVERY}s; load: $(cut -d' ' -f1-3 /proc/loadavg)"
rc=0
python3 "$repo/bench/soak/driver.py" --http "$port_http" --tls "$port_tls" --admin "$port_admin" \
    --upstream "$port_up" --pid "$edge_pid" --seconds "$SOAK_SECONDS" \
    --reload-every "$RELOAD_EVERY" --swap-every "$SWAP_EVERY" \
    --cert "$dir/tls/cert.pem" --key "$dir/tls/key.pem" --file "$dir/dataroot/file.bin" \
    >"$dir/summary.json" || rc=$?
kill -0 "$edge_pid" 2>/dev/null || {
    echo "$me: the proxy died during the soak:" >&2
    show_output edge
    exit 1
}

python3 - "$dir/summary.json" <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
s = json.loads(lines[-1])
print("requests by outcome:")
for k, n in s["outcomes"].items():
    print("  %-28s %8d" % (k, n))
print("failed that should have passed: %d" % s["unexpected"])
for f in s["first_failures"]:
    print("  " + f)
print("reloads: %d sent, %d applied; certificate swaps: %d; distinct certificates served: %d" % (
    s["reloads_sent"], s["reloads_ok"], s["cert_swaps"], s["distinct_certs_seen"]))
print("%-7s %6s %9s %5s %15s" % ("sample", "t (s)", "RSS MiB", "fds", "upstream conns"))
for p in s["samples"]:
    print("%-7s %6d %9.1f %5d %15d" % (p["at"], p["t"], p["rss_kib"] / 1024, p["fds"], p["upstream_conns"]))
EOF
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
[[ "$KEEP_DIR" == 1 ]] && cat "$dir/summary.json" >"$dir/summary.kept.json"
exit "$rc"
