# shellcheck shell=bash
# bench/lib.sh: the shell code bench/load.sh, bench/offload.sh and bench/ratelimit.sh share.
# Sourced by them (after `set -euo pipefail`), never run on its own.
#
# Sourcing it sets $repo (the checkout), $me (the script's file name, which prefixes its
# messages) and $clk_tck, and adds /usr/sbin and /sbin to PATH. The functions read and set the
# globals their comments name; the scripts use them, hence:
# shellcheck disable=SC2034

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
me="$(basename "$0")"
export PATH="$PATH:/usr/sbin:/sbin"
clk_tck="$(getconf CLK_TCK)"

# ---------------------------------------------------------------- checks

# die MESSAGE: MESSAGE on stderr after "$me: ", exit 1.
die() {
    echo "$me: $*" >&2
    exit 1
}

# bad_setting MESSAGE: the same, exit 2 (a setting the script cannot run with).
bad_setting() {
    echo "$me: $*" >&2
    exit 2
}

# require_whole VAR...: each named variable holds a whole number.
require_whole() {
    local v
    for v in "$@"; do
        [[ "${!v}" =~ ^[0-9]+$ ]] || bad_setting "$v must be a whole number"
    done
}

# require_positive VAR...: each named variable holds a whole number above 0.
require_positive() {
    local v
    for v in "$@"; do
        [[ "${!v}" =~ ^[0-9]+$ && "${!v}" -gt 0 ]] || bad_setting "$v must be a positive whole number"
    done
}

# require_scenarios NAMES: every word of $SCENARIOS is one of NAMES (an ERE alternation, a|b|c).
require_scenarios() {
    local s
    for s in $SCENARIOS; do
        [[ "$s" =~ ^($1)$ ]] || bad_setting "unknown scenario $s"
    done
}

# require_cmds CMD...: each CMD is on PATH.
require_cmds() {
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null || die "$cmd missing; run scripts/install-test-deps.sh"
    done
}

# ensure_edge_bin: $MOODLE_EDGE_BIN is executable; the default one is built if it is missing.
ensure_edge_bin() {
    [[ -x "$MOODLE_EDGE_BIN" ]] && return 0
    if [[ "$MOODLE_EDGE_BIN" == "$repo/target/release/moodle-edge" ]]; then
        echo "$me: $MOODLE_EDGE_BIN missing, building it (cargo build --release)"
        (cd "$repo" && cargo build --release --bin moodle-edge)
    else
        die "MOODLE_EDGE_BIN=$MOODLE_EDGE_BIN is not executable"
    fi
}

# check_ports_free PORT...: nothing listens on 127.0.0.1:PORT.
check_ports_free() {
    local port
    for port in "$@"; do
        if (: </dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
            die "127.0.0.1:$port is in use; pick another BASE_PORT"
        fi
    done
}

# ---------------------------------------------------------------- CPU pinning

# setup_pinning CLIENT: sets ncpu; pin_proxy and pin_client, the taskset prefixes for the
# proxies (PROXY_CPU) and for CLIENT (CLIENT_CPU), empty when pinning is impossible; and
# pinning, the line the report prints about it.
setup_pinning() {
    pin_proxy=() pin_client=()
    ncpu="$(nproc)"
    if command -v taskset >/dev/null && ((ncpu > PROXY_CPU && ncpu > CLIENT_CPU)) && [[ $PROXY_CPU != "$CLIENT_CPU" ]]; then
        pin_proxy=(taskset -c "$PROXY_CPU")
        pin_client=(taskset -c "$CLIENT_CPU")
        pinning="proxies on cpu $PROXY_CPU; $1 on cpu $CLIENT_CPU"
    else
        pinning="NOT pinned (need taskset and 2 distinct CPUs; have $ncpu)"
    fi
}

# ---------------------------------------------------------------- temp dir and processes

# make_workdir NAME: a fresh temp dir in $dir (moodle-edge-NAME.XXXXXX), an empty pids, and
# the traps that run cleanup on exit, Ctrl-C or TERM.
make_workdir() {
    dir="$(mktemp -d -t "moodle-edge-$1.XXXXXX")"
    pids=()
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

# cleanup: stops every process in pids by PID (TERM, at most 5 s, then KILL) and removes $dir,
# or keeps it and says so when KEEP_DIR=1.
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ "$KEEP_DIR" == 1 ]]; then
        echo "$me: kept $dir"
    else
        rm -rf "$dir"
    fi
}

# start NAME CMD...: runs CMD in the background, output to $dir/NAME.out, its PID added to pids
# (so cleanup stops it); sets started_pid.
start() {
    local name="$1"
    shift
    "$@" >"$dir/$name.out" 2>&1 &
    started_pid=$!
    pids+=("$started_pid")
}

# edge_env: the environment the shipped systemd unit gives the proxy (its Environment= lines),
# as `env` arguments, so the benches run moodle-edge as a site's unit starts it; nginx runs as
# it is. UNIT_ENV=0 leaves it out (to measure what it changes).
edge_env=(env)
if [[ "${UNIT_ENV:-1}" != 0 ]]; then
    while IFS= read -r line; do
        edge_env+=("${line#Environment=}")
    done < <(grep '^Environment=' "$repo/systemd/moodle-edge.service")
fi

# show_output NAME: the last lines NAME printed and logged, on stderr.
show_output() {
    cat "$dir/$1.out" "$dir/$1/error.log" 2>/dev/null | tail -20 >&2
}

# wait_ready URL NAME: until URL answers 200, at most 10 s; otherwise NAME's output and exit 1.
wait_ready() {
    local url="$1" name="$2" code=""
    for _ in $(seq 1 100); do
        code="$(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)"
        [[ "$code" == 200 ]] && return 0
        sleep 0.1
    done
    echo "$me: $name did not answer 200 at $url (last: $code); its output:" >&2
    show_output "$name"
    exit 1
}

# check_edge_config BIN: `BIN check` accepts $dir/moodle-edge.yaml; otherwise why not, exit 1.
check_edge_config() {
    if ! "$1" check --config "$dir/moodle-edge.yaml" >"$dir/check.out" 2>&1; then
        echo "$me: moodle-edge check rejected the bench config:" >&2
        cat "$dir/check.out" >&2
        exit 1
    fi
}

# ---------------------------------------------------------------- files

# proxy_ports: the port layout of load.sh and offload.sh, from BASE_PORT.
proxy_ports() {
    port_upstream=$((BASE_PORT + 10))
    port_nginx_http=$((BASE_PORT + 20))
    port_nginx_tls=$((BASE_PORT + 21))
    port_bare_http=$((BASE_PORT + 22))
    port_bare_tls=$((BASE_PORT + 23))
    port_edge_http=$((BASE_PORT + 30))
    port_edge_tls=$((BASE_PORT + 31))
    port_edge_admin=$((BASE_PORT + 39))
}

# edge_yaml_head: the top of load.sh's and offload.sh's moodle-edge config, up to the upstream
# url: one plain and one TLS listener (make_cert's certificate), the admin port, one worker.
edge_yaml_head() {
    cat <<EOF
server:
  listen:
    - addr: "127.0.0.1:$port_edge_http"
    - addr: "127.0.0.1:$port_edge_tls"
      tls:
        certificates:
          - cert_file: "$dir/cert.pem"
            key_file: "$dir/key.pem"
  admin_addr: "127.0.0.1:$port_edge_admin"
  worker_threads: 1
  shutdown_timeout: "1s"
upstream:
  url: "http://127.0.0.1:$port_upstream"
EOF
}

# make_cert: a self-signed P-256 certificate for localhost and 127.0.0.1, in $dir/cert.pem and
# $dir/key.pem.
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
}

# nginx_common NAME: the top of every nginx config, everything kept inside $dir/NAME.
nginx_common() {
    local name="$1"
    mkdir -p "$dir/$name"
    cat <<EOF
worker_processes 1;
daemon off;
pid $dir/$name/nginx.pid;
error_log $dir/$name/error.log warn;
events { worker_connections 4096; }
EOF
}

# nginx_temp_paths NAME: nginx's temp paths inside $dir/NAME, for its http block.
nginx_temp_paths() {
    local name="$1"
    cat <<EOF
    client_body_temp_path $dir/$name/client_body;
    proxy_temp_path $dir/$name/proxy;
    fastcgi_temp_path $dir/$name/fastcgi;
    uwsgi_temp_path $dir/$name/uwsgi;
    scgi_temp_path $dir/$name/scgi;
EOF
}

# upstream_nginx_conf: the upstream of load.sh and instructions.sh, an nginx answering every
# request with a fixed 1 KiB body, on $port_upstream.
upstream_nginx_conf() {
    local body
    body="$(head -c 1024 /dev/zero | tr '\0' 'x')"
    nginx_common upstream
    cat <<EOF
http {
    access_log off;
$(nginx_temp_paths upstream)
    keepalive_requests 100000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$port_upstream;
        location / {
            default_type text/html;
            return 200 "$body";
        }
    }
}
EOF
}

# proxy_nginx_conf NAME HTTP_PORT TLS_PORT [JOB] [LOG]: nginx as the reverse proxy under test.
# LOG "on" writes an access log as a production site does, into $dir/NAME/access.log:
# `combined buffer=64k flush=1s` (what load.sh compares moodle-edge's log against); "off" (the
# default) writes none.
# JOB "same" (the default) gives nginx moodle-edge's job: the request headers moodle-edge adds
# by default (X-Forwarded-For, -Proto, -Host, X-Real-IP, a new X-Request-Id) and the request id
# on the answer, as an operator fronting Moodle with nginx would configure it. JOB "bare" sets
# Host, X-Forwarded-For and -Proto only: less work than moodle-edge does, shown beside it.
proxy_nginx_conf() {
    local name="$1" http_port="$2" tls_port="$3" job="${4:-same}" log="${5:-off}" extra=""
    local access="access_log off;"
    [[ "$log" == on ]] && access="access_log $dir/$name/access.log combined buffer=64k flush=1s;"
    if [[ "$job" == same ]]; then
        # shellcheck disable=SC2016 # nginx variables, not shell ones
        extra='
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Request-Id $request_id;
            add_header X-Request-Id $request_id always;'
    fi
    nginx_common "$name"
    cat <<EOF
http {
    $access
$(nginx_temp_paths "$name")
    keepalive_requests 100000;
    keepalive_timeout 75s;
    upstream moodle {
        server 127.0.0.1:$port_upstream;
        keepalive 64;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$http_port;
        listen 127.0.0.1:$tls_port ssl http2;
        ssl_certificate $dir/cert.pem;
        ssl_certificate_key $dir/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://moodle;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;$extra
        }
    }
}
EOF
}

# ---------------------------------------------------------------- measuring

# cpu_ticks PID: utime+stime of PID and its direct children (nginx's workers), in clock ticks.
cpu_ticks() {
    local total=0 pid stat rest
    for pid in "$1" $(ps -o pid= --ppid "$1"); do
        stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
        rest="${stat##*) }" # fields from 3 (state) on; comm may hold spaces
        # shellcheck disable=SC2086
        set -- $rest
        total=$((total + ${12} + ${13})) # fields 14 and 15: utime, stime
    done
    echo "$total"
}

# ctx_switches PID: context switches (voluntary and not) of every thread of PID and of its
# direct children (nginx's workers) so far. A log writer woken per line shows here.
ctx_switches() {
    local pid
    for pid in "$1" $(ps -o pid= --ppid "$1"); do
        cat /proc/"$pid"/task/*/status 2>/dev/null
    done | awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}

# median COLUMN SCENARIO LABEL: the median of COLUMN over the lines of $dir/results whose first
# two columns are SCENARIO and LABEL.
median() {
    awk -v c="$1" -v s="$2" -v l="$3" '$1 == s && $2 == l { print $c }' "$dir/results" | sort -g |
        awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# paired_ratios SCENARIO LABEL BASE: each round's req/s and p99 of LABEL over BASE's in the same
# round (runs taken back to back), summarised as "req/s MEDIANx [each round], p99 MEDIANx".
paired_ratios() {
    awk -v s="$1" -v l="$2" -v b="$3" '
        function med(v, n,    i, j, t) {
            for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
            return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        }
        $1 == s && $2 == l { r[$3] = $4; p[$3] = $5 }
        $1 == s && $2 == b { rb[$3] = $4; pb[$3] = $5 }
        END {
            n = 0; each = ""
            for (k = 1; k in r || k in rb; k++) {
                if (!(k in r) || !(k in rb) || rb[k] == 0 || pb[k] == 0) continue
                n++; rr[n] = r[k] / rb[k]; pp[n] = p[k] / pb[k]
                each = each (n > 1 ? " " : "") sprintf("%.2f", rr[n])
            }
            if (n == 0) { print "none"; exit }
            printf "req/s %.2fx [%s], p99 %.2fx", med(rr, n), each, med(pp, n)
        }' "$dir/results"
}

# ---------------------------------------------------------------- access logs

# edge_log_yaml MODE NAME: moodle-edge's `log:` section. MODE file: its default JSON access log
# into $dir/NAME/access.log; pipe: the same on standard output (start_piped reads it, as
# journald would); off: no access log.
edge_log_yaml() {
    local mode="$1" name="$2"
    mkdir -p "$dir/$name"
    echo "log:"
    echo "  level: warn"
    echo "  access:"
    case "$mode" in
    file) echo "    target: file" && echo "    path: \"$dir/$name/access.log\"" ;;
    pipe) echo "    target: stdout" ;;
    off) echo '    target: "off"' ;;
    esac
}

# start_piped NAME CMD...: as start, but CMD's standard output goes into a pipe (a FIFO) that
# a `cat` on the proxies' core copies to $dir/NAME/access.log, as journald reads a service's
# output; standard error goes to $dir/NAME.out. Sets started_pid (CMD's PID, not cat's).
start_piped() {
    local name="$1"
    shift
    mkdir -p "$dir/$name"
    mkfifo "$dir/$name/stdout.fifo"
    "${pin_proxy[@]}" cat "$dir/$name/stdout.fifo" >"$dir/$name/access.log" &
    pids+=("$!")
    "$@" >"$dir/$name/stdout.fifo" 2>"$dir/$name.out" &
    started_pid=$!
    pids+=("$started_pid")
}

# start_session_redis PORT: a redis-server on PORT (pinned like the upstream, "${pin_upstream[@]}")
# holding one live edge session, written as the proxy writes it (under the sha256 of the id, a
# JSON record); sets session_hdr to the request header that carries it.
session_hdr=()
start_session_redis() {
    local rport="$1" id now
    require_cmds redis-server redis-cli sha256sum openssl
    check_ports_free "$rport"
    start redis "${pin_upstream[@]}" redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no
    for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    id="$(openssl rand -hex 32)" now="$(date +%s)"
    redis-cli -p "$rport" set "moodle-edge:sso:s:$(printf %s "$id" | sha256sum | cut -c1-64)" \
        "{\"tenant\":null,\"provider\":\"campus\",\"user\":\"bench\",\"firstname\":null,\"lastname\":null,\"email\":null,\"handle\":{\"kind\":\"oidc\",\"sub\":\"bench\",\"sid\":null,\"id_token\":\"x\"},\"csrf\":\"00\",\"created\":$now,\"last_seen\":$now}" \
        px 7200000 >/dev/null
    session_hdr=(-H "cookie: moodle-edge-sso=$id; __Host-moodle-edge-sso=$id")
    echo "x" >"$dir/secret"
}

# edge_sso_yaml PORT TTL: the store and sso sections of a moodle-edge config that checks every
# request's edge session against the redis-server on PORT, with that replica-cache TTL.
edge_sso_yaml() {
    cat <<EOF
store:
  backend: redis
  redis_url: "redis://127.0.0.1:$1/0"
  session_cache: { ttl: "$2" }
sso:
  moodle_handoff: { token_file: "$dir/secret" }
  providers:
    - { id: campus, kind: oidc, label: { en: Campus }, issuer: "http://127.0.0.1:9", client_id: bench, client_secret_file: "$dir/secret", user_claim: sub }
EOF
}
