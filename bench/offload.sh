#!/usr/bin/env bash
# Offload throughput benchmark: moodle-edge against nginx 1.22, each serving the same 1 GiB file
# (page-cache warm) in answer to the same X-Accel-Redirect from the same upstream, side by side
# in one run, alternating, several rounds. Prints medians and the ratios moodle-edge / nginx.
#
# The upstream is an nginx that answers every request the way Moodle's lib/xsendfilelib.php
# does: 200, an empty body, `X-Accel-Redirect: %2Fmoodledata-internal%2Fbig.bin` (the whole value
# rawurlencoded), Content-Type, Content-Disposition, Cache-Control and a content-hash ETag. No
# Rust runs on the upstream side, so only the two proxies differ.
#
# Scenarios (SCENARIOS, default "tls1 tls20 h2tls1 h2tls20 http1 http20"):
#   tls1    one download over TLS        curl -k --http1.1 -o /dev/null
#   tls20   CONC downloads over TLS      CONC curls at once, each cut at CONC_SECONDS; total MiB/s
#   h2tls1  one download over TLS, HTTP/2 as browsers fetch (curl --http2: ALPN picks h2 on both;
#           a run that did not get HTTP/2 counts as an error)
#   h2tls20 CONC downloads over TLS, HTTP/2, one connection each
#   http1   one download, plain HTTP     (nginx uses sendfile(2) here: zero-copy)
#   http20  CONC downloads, plain HTTP
#
# CPU layout on a 2-core machine: both proxies pinned to PROXY_CPU (1), curl and the upstream
# nginx to CLIENT_CPU (0). One worker each (nginx worker_processes 1, moodle-edge
# worker_threads 1; its blocking-pool readers share the pinned core). Only one proxy is under
# load at a time.
#
# Env (defaults in brackets):
#   ROUNDS [3]  CONC [20]  CONC_SECONDS [8]  SIZE_MIB [1024]
#   SCENARIOS ["tls1 tls20 h2tls1 h2tls20 http1 http20"]  PROXY_CPU [1]  CLIENT_CPU [0]  BASE_PORT [18300]
#              (uses BASE_PORT+10, +20, +21, +30, +31, +39)
#   MOODLE_EDGE_BIN [target/release/moodle-edge; built with cargo build --release if missing]
#   UNIT_ENV [1]  moodle-edge runs with the environment of systemd/moodle-edge.service (its
#                 Environment= lines, as a site runs it); 0 runs the bare binary
#   KEEP_DIR [0]  1 keeps the temp dir (configs, logs, raw curl output)
#
# Only 127.0.0.1 is used. Every process the script starts is stopped by PID on exit.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-3}"
CONC="${CONC:-20}"
CONC_SECONDS="${CONC_SECONDS:-8}"
SIZE_MIB="${SIZE_MIB:-1024}"
SCENARIOS="${SCENARIOS:-tls1 tls20 h2tls1 h2tls20 http1 http20}"
PROXY_CPU="${PROXY_CPU:-1}"
CLIENT_CPU="${CLIENT_CPU:-0}"
BASE_PORT="${BASE_PORT:-18300}"
KEEP_DIR="${KEEP_DIR:-0}"
MOODLE_EDGE_BIN="${MOODLE_EDGE_BIN:-$repo/target/release/moodle-edge}"

require_positive ROUNDS CONC CONC_SECONDS SIZE_MIB BASE_PORT
require_scenarios 'tls1|tls20|h2tls1|h2tls20|http1|http20'
require_cmds nginx openssl curl ps awk
ensure_edge_bin

setup_pinning "curl and the upstream"
make_workdir offload
# nginx started as root runs its worker as `nobody`, which must be able to read the file.
chmod 755 "$dir"

proxy_ports
size=$((SIZE_MIB * 1024 * 1024))
check_ports_free "$port_upstream" "$port_nginx_http" "$port_nginx_tls" "$port_edge_http" "$port_edge_tls" "$port_edge_admin"

# ---------------------------------------------------------------- files

make_cert
mkdir -p "$dir/moodledata"
echo "$me: writing a ${SIZE_MIB} MiB file of random bytes and reading it into the page cache"
head -c "$size" /dev/urandom >"$dir/moodledata/big.bin"
cat "$dir/moodledata/big.bin" >/dev/null

# The stand-in Moodle: exactly the headers xsendfile() leaves for the front server.
{
    nginx_common upstream
    cat <<EOF
http {
    access_log off;
$(nginx_temp_paths upstream)
    keepalive_requests 100000;
    server {
        listen 127.0.0.1:$port_upstream;
        location = /ready {
            return 200 "ok";
        }
        location / {
            default_type application/octet-stream;
            add_header X-Accel-Redirect "%2Fmoodledata-internal%2Fbig.bin";
            add_header Content-Disposition 'attachment; filename="big.bin"';
            add_header Cache-Control "private, max-age=10, no-transform";
            add_header ETag '"0123456789abcdef0123456789abcdef01234567"';
            add_header Accept-Ranges bytes;
            return 200 "";
        }
    }
}
EOF
} >"$dir/upstream.conf"

{
    nginx_common nginx
    cat <<EOF
http {
    access_log off;
$(nginx_temp_paths nginx)
    keepalive_requests 100000;
    sendfile on;
    tcp_nopush on;
    upstream moodle {
        server 127.0.0.1:$port_upstream;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$port_nginx_http;
        listen 127.0.0.1:$port_nginx_tls ssl http2;
        ssl_certificate $dir/cert.pem;
        ssl_certificate_key $dir/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location = /ready {
            return 200 "ok";
        }
        location / {
            proxy_pass http://moodle;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
        }
        location /moodledata-internal/ {
            internal;
            alias $dir/moodledata/;
        }
    }
}
EOF
} >"$dir/nginx.conf"

{
    edge_yaml_head
    cat <<EOF
  health_check:
    path: /ready
moodle:
  wwwroot: "http://127.0.0.1:$port_edge_http"
  dataroot: "$dir/moodledata"
sendfile:
  mappings:
    - prefix: /moodledata-internal/
      root: "$dir/moodledata"
log:
  level: warn
  access:
    target: "off"
EOF
} >"$dir/moodle-edge.yaml"

# ---------------------------------------------------------------- processes

# wait_size URL NAME: until URL serves the whole file (HEAD), at most 10 s.
wait_size() {
    local url="$1" name="$2" got=""
    for _ in $(seq 1 100); do
        got="$(curl -sk -I --max-time 2 "$url" | tr -d '\r' | awk -F': ' 'tolower($1) == "content-length" { print $2 }' || true)"
        [[ "$got" == "$size" ]] && return 0
        sleep 0.1
    done
    echo "$me: $name did not serve the file at $url (Content-Length '$got', want $size):" >&2
    show_output "$name"
    exit 1
}

start upstream "${pin_client[@]}" nginx -p "$dir/upstream" -c "$dir/upstream.conf" -e "$dir/upstream/error.log"
start nginx "${pin_proxy[@]}" nginx -p "$dir/nginx" -c "$dir/nginx.conf" -e "$dir/nginx/error.log"
nginx_pid=$started_pid
check_edge_config "$MOODLE_EDGE_BIN"
start moodle-edge "${pin_proxy[@]}" "${edge_env[@]}" "$MOODLE_EDGE_BIN" run --config "$dir/moodle-edge.yaml"
edge_pid=$started_pid
for p in nginx:"$port_nginx_http":"$port_nginx_tls" moodle-edge:"$port_edge_http":"$port_edge_tls"; do
    IFS=: read -r name hp tp <<<"$p"
    wait_size "http://127.0.0.1:$hp/pluginfile.php/1/big.bin" "$name"
    wait_size "https://127.0.0.1:$tp/pluginfile.php/1/big.bin" "$name"
done

# Same bytes through both, or the comparison is meaningless.
want_sum="$(cksum <"$dir/moodledata/big.bin")"
for url in "http://127.0.0.1:$port_nginx_http" "https://127.0.0.1:$port_edge_tls"; do
    got_sum="$(curl -sk --http1.1 "$url/pluginfile.php/1/big.bin" | cksum)"
    [[ "$got_sum" == "$want_sum" ]] || die "$url served different bytes"
done

# ---------------------------------------------------------------- measuring

# cpu_busy CPU: "busy total" jiffies of one CPU from /proc/stat (busy = all but idle and iowait).
cpu_busy() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# run_load SCENARIO URL OUT: prints "bytes wall_ns errors".
run_load() {
    local scenario="$1" url="$2" out="$3" n=1 limit=() w0 w1 i proto=--http1.1 want=1.1
    case "$scenario" in
    *20) n="$CONC" limit=(--max-time "$CONC_SECONDS") ;;
    esac
    case "$scenario" in
    h2*) proto=--http2 want=2 ;;
    esac
    w0="$(date +%s%N)"
    for i in $(seq 1 "$n"); do
        # curl exits 28 when --max-time cuts it: expected for the concurrent runs.
        "${pin_client[@]}" curl -sk "$proto" -o /dev/null "${limit[@]}" \
            -w '%{http_code} %{size_download} %{http_version}\n' "$url/pluginfile.php/$i/big.bin" >"$out.$i" 2>&1 &
    done
    wait
    w1="$(date +%s%N)"
    local bytes errors
    bytes="$(cat "$out".* | awk '{ b += $2 } END { print b + 0 }')"
    errors="$(cat "$out".* | awk -v want="$want" '$1 != 200 || $3 != want { e++ } END { print e + 0 }')"
    if [[ "$n" == 1 && "$bytes" != "$size" ]]; then
        errors=$((errors + 1))
    fi
    echo "$bytes $((w1 - w0)) $errors"
}

# measure SCENARIO LABEL PID URL ROUND: one measured run; appends to results.
measure() {
    local scenario="$1" label="$2" pid="$3" url="$4" round="$5"
    local t0 t1 bytes wall errors cb0 ct0 cb1 ct1
    t0="$(cpu_ticks "$pid")"
    read -r cb0 ct0 < <(cpu_busy "$CLIENT_CPU")
    read -r bytes wall errors < <(run_load "$scenario" "$url" "$dir/raw.$scenario.$label.$round")
    read -r cb1 ct1 < <(cpu_busy "$CLIENT_CPU")
    t1="$(cpu_ticks "$pid")"
    awk -v s="$scenario" -v l="$label" -v r="$round" -v b="$bytes" -v w="$wall" -v e="$errors" \
        -v dt=$((t1 - t0)) -v hz="$clk_tck" -v cb=$((cb1 - cb0)) -v ct=$((ct1 - ct0)) 'BEGIN {
        secs = w / 1e9
        gib = b / 1073741824
        printf "%s %s %s %.1f %.0f %d %.0f %.0f\n", s, l, r, b / 1048576 / secs, 100 * dt / hz / secs, e,
            (gib > 0 ? 1000 * dt / hz / gib : 0), (ct > 0 ? 100 * cb / ct : 0)
    }' >>"$dir/results"
    printf '  %-7s %-12s round %s: %s\n' "$scenario" "$label" "$round" \
        "$(tail -1 "$dir/results" | awk '{ printf "%8.1f MiB/s, proxy CPU %s%% (%s ms/GiB), client cpu %s%%, errors %s", $4, $5, $7, $8, $6 }')"
}

url_for() {
    local scenario="$1" proxy="$2"
    case "$scenario:$proxy" in
    tls*:nginx | h2*:nginx) echo "https://127.0.0.1:$port_nginx_tls" ;;
    tls*:moodle-edge | h2*:moodle-edge) echo "https://127.0.0.1:$port_edge_tls" ;;
    http*:nginx) echo "http://127.0.0.1:$port_nginx_http" ;;
    http*:moodle-edge) echo "http://127.0.0.1:$port_edge_http" ;;
    esac
}

echo "moodle-edge offload throughput benchmark"
echo "  $(nginx -v 2>&1 | sed 's/.*: //'); $(curl --version | head -1 | awk '{ print $1, $2, $5 }')"
echo "  moodle-edge: $MOODLE_EDGE_BIN ($("$MOODLE_EDGE_BIN" --version 2>/dev/null || echo 'version unknown'))"
echo "  moodle-edge environment (the unit's): ${edge_env[*]:1}"
echo "  file: ${SIZE_MIB} MiB, page-cache warm; upstream: nginx answering X-Accel-Redirect with an empty body"
echo "  nginx: 1 worker, sendfile on, tcp_nopush on; moodle-edge: worker_threads 1; no access log on either"
echo "  $pinning"
echo "  $ROUNDS rounds; concurrent runs: $CONC curls cut at ${CONC_SECONDS}s; order alternates per round"
echo "  host: $ncpu CPUs, $(uname -r)"
for p in nginx:"$port_nginx_tls" moodle-edge:"$port_edge_tls"; do
    IFS=: read -r name tp <<<"$p"
    echo "  TLS $name: $(curl -skv --http1.1 -r 0-0 -o /dev/null "https://127.0.0.1:$tp/pluginfile.php/1/big.bin" 2>&1 |
        sed -n 's/^\* SSL connection using //p' | head -1); with --http2: HTTP/$(curl -sk --http2 -r 0-0 -o /dev/null -w '%{http_version}' "https://127.0.0.1:$tp/pluginfile.php/1/big.bin")"
done
echo

: >"$dir/results"
for round in $(seq 1 "$ROUNDS"); do
    for s in $SCENARIOS; do
        if ((round % 2)); then order=(nginx moodle-edge); else order=(moodle-edge nginx); fi
        for p in "${order[@]}"; do
            if [[ "$p" == nginx ]]; then pid=$nginx_pid; else pid=$edge_pid; fi
            measure "$s" "$p" "$pid" "$(url_for "$s" "$p")" "$round"
        done
    done
done

# ---------------------------------------------------------------- report

echo
echo "Medians of $ROUNDS rounds (MiB/s: higher is better)"
printf '%-8s %12s %12s %11s %15s %15s %11s %7s\n' scenario "nginx MiB/s" "edge MiB/s" "edge/nginx" \
    "nginx CPU" "edge CPU" "client cpu" errors
for s in $SCENARIOS; do
    awk -v s="$s" -v n="$(median 4 "$s" nginx)" -v m="$(median 4 "$s" moodle-edge)" \
        -v cn="$(median 5 "$s" nginx)" -v cm="$(median 5 "$s" moodle-edge)" \
        -v gn="$(median 7 "$s" nginx)" -v gm="$(median 7 "$s" moodle-edge)" \
        -v kn="$(median 8 "$s" nginx)" -v km="$(median 8 "$s" moodle-edge)" \
        -v e="$(awk -v s="$s" '$1 == s { e += $6 } END { print e + 0 }' "$dir/results")" 'BEGIN {
        printf "%-8s %12.1f %12.1f %10.2fx %4.0f%% %5.0fms %4.0f%% %5.0fms %4.0f%%/%3.0f%% %7d\n",
            s, n, m, m / n, cn, gn, cm, gm, kn, km, e }'
done
echo
echo "CPU = the proxy's CPU time / wall time on its one pinned core, then its CPU per GiB sent"
echo "(lower is better; the capacity figure that does not depend on who was the bottleneck)."
echo "client cpu = how busy cpu $CLIENT_CPU (curl and the upstream) was, nginx run / moodle-edge run:"
echo "near 100% there means the client, not the proxy, set the MiB/s."
if [[ -s "$dir/nginx/error.log" ]]; then
    echo "note: nginx error.log is not empty:"
    tail -5 "$dir/nginx/error.log"
fi
if [[ -s "$dir/moodle-edge.out" ]]; then
    echo "note: moodle-edge printed (last lines):"
    tail -5 "$dir/moodle-edge.out"
fi
