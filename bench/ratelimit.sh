#!/usr/bin/env bash
# Rate-limit accuracy under load: moodle-edge's per-token rule against nginx's limit_req, the
# same rule, in front of the same fast upstream, measured one after the other in one run.
#
#   moodle-edge  webservice.rate_limits: [{key: token, rate: 60/min, burst: 10}]
#   nginx        limit_req_zone $arg_wstoken zone=ws:10m rate=60r/m;
#                limit_req zone=ws burst=10 nodelay; limit_req_status 429;
#
# wrk (bench/ratelimit/ws.lua) rotates TOKENS tokens over CONNS connections for DURATION seconds
# against each proxy. Admitted calls (those that reached the upstream) are counted per token from
# the upstream's access log and, as a cross-check, from wrk's response hook (the upstream echoes
# the token). Each count is compared with what the rule allows: burst + rate x duration.
#
# Env (defaults in brackets):
#   DURATION [30] seconds per proxy and round    CONNS [12]   TOKENS [3]   ROUNDS [1]
#   RATE [60] calls per minute    BURST [10]    CONCURRENCY_CAP [0] (moodle-edge's
#   max_concurrent_per_token; 0 measures the rate limiter alone)    BASE_PORT [18200]
#   MOODLE_EDGE_BIN [target/release/moodle-edge; built with cargo build --release if missing]
#   KEEP_DIR [0]  1 keeps the temp dir (configs, access logs, wrk output)
#
# Only 127.0.0.1 is used. Every process the script starts is stopped by PID on exit.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-30}"
CONNS="${CONNS:-12}"
TOKENS="${TOKENS:-3}"
ROUNDS="${ROUNDS:-1}"
RATE="${RATE:-60}"
BURST="${BURST:-10}"
CONCURRENCY_CAP="${CONCURRENCY_CAP:-0}"
BASE_PORT="${BASE_PORT:-18200}"
KEEP_DIR="${KEEP_DIR:-0}"
MOODLE_EDGE_BIN="${MOODLE_EDGE_BIN:-$repo/target/release/moodle-edge}"
lua="$repo/bench/ratelimit/ws.lua"

require_whole DURATION CONNS TOKENS ROUNDS RATE BURST CONCURRENCY_CAP BASE_PORT
((DURATION > 0 && TOKENS > 0 && RATE > 0 && BURST > 0)) || bad_setting "DURATION, TOKENS, RATE, BURST must be > 0"
require_cmds nginx wrk curl awk md5sum
ensure_edge_bin

make_workdir ratelimit

# A copy: a rebuild of the shared target/ during the run must not change the binary under test.
cp "$MOODLE_EDGE_BIN" "$dir/moodle-edge"
edge_bin="$dir/moodle-edge"

port_up_edge=$((BASE_PORT + 10)) # the upstream, as seen by moodle-edge (its own access log)
port_up_nginx=$((BASE_PORT + 11)) # the same upstream process, as seen by nginx
port_nginx=$((BASE_PORT + 20))
port_edge=$((BASE_PORT + 30))
port_edge_admin=$((BASE_PORT + 39))

# ---------------------------------------------------------------- configs

# nginx_top NAME: an nginx config up to inside its open http block, everything in $dir/NAME.
nginx_top() {
    nginx_common "$1"
    echo "http {"
    nginx_temp_paths "$1"
    cat <<EOF
    keepalive_requests 100000;
    keepalive_timeout 75s;
EOF
}

# The upstream: a fast "Moodle" answering a small JSON that names the token; one listener per
# proxy so each has its own access log of admitted calls ("TOKEN STATUS").
{
    nginx_top upstream
    echo "    log_format tok '\$arg_wstoken \$status';"
    for listener in "$port_up_edge:upstream-edge" "$port_up_nginx:upstream-nginx"; do
        cat <<EOF
    server {
        listen 127.0.0.1:${listener%%:*};
        access_log $dir/${listener#*:}.log tok;
        location / {
            default_type application/json;
            return 200 '{"ok":true,"wstoken":"\$arg_wstoken"}';
        }
    }
EOF
    done
    echo "}"
} >"$dir/upstream.conf"

{
    nginx_top nginx
    cat <<EOF
    access_log off;
    limit_req_zone \$arg_wstoken zone=ws:10m rate=${RATE}r/m;
    upstream moodle {
        server 127.0.0.1:$port_up_nginx;
        keepalive 64;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$port_nginx;
        location / {
            limit_req zone=ws burst=$BURST nodelay;
            limit_req_status 429;
            proxy_pass http://moodle;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
        }
    }
}
EOF
} >"$dir/nginx.conf"

cat >"$dir/moodle-edge.yaml" <<EOF
server:
  listen:
    - addr: "127.0.0.1:$port_edge"
  admin_addr: "127.0.0.1:$port_edge_admin"
  worker_threads: 2
  shutdown_timeout: "1s"
upstream:
  url: "http://127.0.0.1:$port_up_edge"
moodle:
  wwwroot: "http://127.0.0.1:$port_edge"
  dataroot: "$dir/moodledata"
webservice:
  rate_limits:
    - key: token
      rate: $RATE/min
      burst: $BURST
  max_concurrent_per_token: $CONCURRENCY_CAP
log:
  level: warn
  access:
    target: "off"
  audit:
    target: "off"
EOF
mkdir -p "$dir/moodledata"

# ---------------------------------------------------------------- processes

check_edge_config "$edge_bin"
start upstream nginx -p "$dir/upstream" -c "$dir/upstream.conf" -e "$dir/upstream/error.log"
wait_ready "http://127.0.0.1:$port_up_edge/" upstream
start nginx nginx -p "$dir/nginx" -c "$dir/nginx.conf" -e "$dir/nginx/error.log"
start moodle-edge "$edge_bin" run --config "$dir/moodle-edge.yaml"
# The readiness calls carry no token: they use no limiter bucket.
wait_ready "http://127.0.0.1:$port_nginx/webservice/rest/server.php" nginx
wait_ready "http://127.0.0.1:$port_edge/webservice/rest/server.php" moodle-edge
# The readiness calls carried no token; start the counts from here.
: >"$dir/upstream-edge.log"
: >"$dir/upstream-nginx.log"
kill -USR1 "$(cat "$dir/upstream/nginx.pid")" # reopen the (truncated) logs

# ---------------------------------------------------------------- measuring

# tokens LABEL ROUND: TOKENS fresh 32-hex tokens (fresh buckets every run).
tokens() {
    local i
    for i in $(seq 1 "$TOKENS"); do
        printf '%s-%s-%s-%s' "$1" "$2" "$i" "$$" | md5sum | cut -c1-32
    done
}

expected="$(awk -v b="$BURST" -v r="$RATE" -v d="$DURATION" 'BEGIN { printf "%.1f", b + r / 60 * d }')"
: >"$dir/results"

# run LABEL PORT LOG ROUND: one wrk run against a proxy, then one result line per token:
#   label round token admitted_upstream admitted_wrk
run() {
    local label="$1" port="$2" log="$3" round="$4" out="$dir/wrk.$1.$4"
    local -a toks
    mapfile -t toks < <(tokens "$label" "$round")
    timeout -k 5 $((DURATION + 30)) wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$lua" \
        "http://127.0.0.1:$port/" -- "${toks[@]}" >"$out" 2>&1 || {
        echo "$me: wrk failed against $label:" >&2
        cat "$out" >&2
        exit 1
    }
    # Let the last answers reach the upstream log (nginx writes a line per request at its end).
    sleep 0.5
    local t up wk
    for t in "${toks[@]}"; do
        up="$(awk -v t="$t" '$1 == t && $2 == 200 { n++ } END { print n + 0 }' "$log")"
        wk="$(awk -v t="$t" '$1 == "admitted" && $2 == t { print $3 }' "$out")"
        echo "$label $round $t $up ${wk:-0}" >>"$dir/results"
    done
    local total s200 s429 other
    total="$(awk '/requests in/ { print $1 }' "$out")"
    s200="$(awk '$1 == "status" && $2 == 200 { print $3 }' "$out")"
    s429="$(awk '$1 == "status" && $2 == 429 { print $3 }' "$out")"
    other="$(awk '$1 == "status" && $2 != 200 && $2 != 429 { n += $3 } END { print n + 0 }' "$out")"
    printf '  %-12s round %s: %s requests (%s req/s), %s admitted, %s x 429, %s other\n' \
        "$label" "$round" "${total:-?}" "$(awk '/Requests\/sec/ { printf "%.0f", $2 }' "$out")" \
        "${s200:-0}" "${s429:-0}" "$other"
}

echo "web-service rate-limit accuracy: moodle-edge against nginx limit_req"
echo "  rule: $RATE/min, burst $BURST, per token; $TOKENS tokens rotated by wrk -t1 -c$CONNS -d${DURATION}s"
echo "  $(nginx -v 2>&1 | sed 's/.*: //'); $(wrk -v 2>&1 | head -1 | awk '{ print "wrk", $2 }'); moodle-edge: $MOODLE_EDGE_BIN"
echo "  moodle-edge max_concurrent_per_token: $CONCURRENCY_CAP; host: $(nproc) CPUs"
echo "  expected admitted per token = burst + rate x duration = $BURST + $RATE/60 x $DURATION = $expected"
echo
for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then
        run moodle-edge "$port_edge" "$dir/upstream-edge.log" "$round"
        run nginx "$port_nginx" "$dir/upstream-nginx.log" "$round"
    else
        run nginx "$port_nginx" "$dir/upstream-nginx.log" "$round"
        run moodle-edge "$port_edge" "$dir/upstream-edge.log" "$round"
    fi
done

edge_ok="$(curl -s "http://127.0.0.1:$port_edge_admin/metrics" |
    awk '/^moodle_edge_ws_calls_total\{/ && /function="core_webservice_get_site_info"/ && /outcome="ok"/ { n += $NF } END { print n + 0 }')"

echo
printf '  %-12s %-5s %-32s %9s %9s %9s %8s\n' proxy round token upstream wrk expected error
awk -v e="$expected" '{
    err = ($4 - e) / e * 100
    printf "  %-12s %-5s %-32s %9d %9d %9.1f %+7.1f%%\n", $1, $2, $3, $4, $5, e, err
}' "$dir/results"
echo
awk -v e="$expected" -v edge_ok="$edge_ok" '{
    err = ($4 - e) / e * 100; a = err < 0 ? -err : err
    n[$1]++; sum[$1] += a; tot[$1] += $4; if (a > max[$1]) max[$1] = a
    if ($4 != $5) mismatch[$1]++
}
END {
    for (p in n) {
        verdict = ""
        if (p == "moodle-edge") verdict = (max[p] <= 5 ? "  -> within 5% of the rule" : "  -> NOT within 5% of the rule")
        printf "  %-12s mean |error| %.1f%%, max |error| %.1f%%, admitted %d in all%s\n", p, sum[p] / n[p], max[p], tot[p], verdict
        if (mismatch[p]) printf "  %-12s %d token(s) where the upstream log and wrk disagree\n", p, mismatch[p]
    }
    printf "  moodle-edge metric moodle_edge_ws_calls_total{function=\"core_webservice_get_site_info\",outcome=\"ok\"}: %d\n", edge_ok
}' "$dir/results"
echo "  (nginx admits 1 + burst at once by design: its burst counts calls beyond the first)"
