#!/usr/bin/env bash
# HTTP/2 abuse, long form (tests/h2_abuse.rs is the short one in the suite): the release build
# behind a TLS h2 listener and an h2c listener, an nginx upstream serving a small page and a
# 4 MiB file, and tests/h2_abuse/abuse.py running each attack for SECONDS against each
# listener while a normal client keeps asking for the page. Prints one JSON line per
# (listener, attack) and a table: the normal client's requests, success rate and p99, the
# proxy's RSS before and at its peak, and how many attacking connections the proxy ended.
#
# Env (defaults in brackets):
#   SECONDS_EACH [30]  ATTACKERS [2]  ZERO_WINDOW_CONNECTIONS [1]  BASE_PORT [18400]
#   MOODLE_EDGE_BIN [target/release/moodle-edge; built with cargo build --release if missing]
#   PROXY_CPU [1]  CLIENT_CPU [0]  KEEP_DIR [0]
#
# Only 127.0.0.1 is used. Every process the script starts is stopped by PID on exit.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECONDS_EACH="${SECONDS_EACH:-30}"
ATTACKERS="${ATTACKERS:-2}"
ZERO_WINDOW_CONNECTIONS="${ZERO_WINDOW_CONNECTIONS:-1}"
BASE_PORT="${BASE_PORT:-18400}"
PROXY_CPU="${PROXY_CPU:-1}"
CLIENT_CPU="${CLIENT_CPU:-0}"
require_positive SECONDS_EACH ATTACKERS ZERO_WINDOW_CONNECTIONS BASE_PORT
command -v nginx >/dev/null || die "nginx not found: run scripts/install-test-deps.sh"
python3 -c 'import h2' 2>/dev/null || die "python3 cannot import h2: run scripts/install-test-deps.sh"

bin="${MOODLE_EDGE_BIN:-$repo/target/release/moodle-edge}"
if [[ ! -x "$bin" ]]; then
    (cd "$repo" && cargo build --release)
fi

dir="$(mktemp -d)"
# nginx started as root serves as `nobody`, which must be able to read the pages (a 0700 temp
# dir made every normal request a 403).
chmod 755 "$dir"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ "${KEEP_DIR:-0}" == 1 ]]; then echo "$me: kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

up_port=$((BASE_PORT + 1))
tls_port=$((BASE_PORT + 2))
h2c_port=$((BASE_PORT + 3))
admin_port=$((BASE_PORT + 4))
mkdir -p "$dir/www" "$dir/data"
echo "normal page" >"$dir/www/normal"
head -c $((4 << 20)) /dev/zero >"$dir/www/large"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=lms.test \
    -addext subjectAltName=DNS:lms.test -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null

cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp; uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;
    keepalive_requests 100000;
    server { listen 127.0.0.1:$up_port; root $dir/www; location / { } }
}
EOF
mkdir -p "$dir/tmp"
taskset -c "$CLIENT_CPU" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/nginx-error.log" &
pids+=($!)

cat >"$dir/edge.yaml" <<EOF
server:
  listen:
    - addr: "127.0.0.1:$tls_port"
      tls:
        certificates:
          - cert_file: $dir/cert.pem
            key_file: $dir/key.pem
    - addr: "127.0.0.1:$h2c_port"
  admin_addr: "127.0.0.1:$admin_port"
  worker_threads: 1
upstream:
  url: "http://127.0.0.1:$up_port"
  health_check: { path: /normal }
moodle:
  wwwroot: "http://lms.test"
  dataroot: $dir/data
EOF
taskset -c "$PROXY_CPU" "$bin" run --config "$dir/edge.yaml" >"$dir/edge.log" 2>&1 &
edge_pid=$!
pids+=("$edge_pid")
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null || die "the proxy did not get ready: $(cat "$dir/edge.log")"

taskset -c "$CLIENT_CPU" python3 "$repo/tests/h2_abuse/abuse.py" \
    --target "h2c=h2c:127.0.0.1:$h2c_port" --target "tls=tls:127.0.0.1:$tls_port" \
    --pid "$edge_pid" --seconds "$SECONDS_EACH" --attackers "$ATTACKERS" \
    --zero-window-connections "$ZERO_WINDOW_CONNECTIONS" | tee "$dir/results.jsonl"

echo
printf '%-5s %-15s %8s %8s %10s %9s %9s %7s\n' target attack requests ok% p99_ms rss0_MiB peak_MiB closed
python3 - "$dir/results.jsonl" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    ok = 100.0 * r["normal_ok"] / r["normal_requests"] if r["normal_requests"] else 0.0
    p99 = r["normal_p99_ms"] or 0.0
    print("%-5s %-15s %8d %7.1f%% %10.1f %9.1f %9.1f %7d" % (
        r["target"], r["attack"], r["normal_requests"], ok, p99,
        r["rss_baseline_kib"] / 1024, r["rss_peak_kib"] / 1024, r["attacker_closed"]))
EOF
echo "connection errors by reason:"
curl -fs "http://127.0.0.1:$admin_port/metrics" | grep '^moodle_edge_connection_errors_total' || true
