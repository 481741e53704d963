#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: moodle-edge, nginx and the
# direct floor, each as a reverse proxy (one worker) in front of the same upstream nginx
# answering 1 KiB, the same traffic as bench/load.sh's plain-HTTP scenario.
#
# Why: on a shared VM wall-clock req/s moves by 10-20% between rounds and there are no hardware
# counters, so a change worth 1-2% cannot be seen with wrk. An instruction count does not care
# what else the machine is doing: the same binary and traffic give the same count to within
# about 0.3%, run after run. It is not time (cache misses, branch misses and the kernel are not
# in it; callgrind counts user-space instructions only), so the load script stays the judge;
# this one tells whether a change made the proxy's own work smaller, and where it goes
# (KEEP_DIR=1 keeps the callgrind files for callgrind_annotate).
#
# Each proxy runs under callgrind; WARMUP requests, then the counters are zeroed, REQUESTS more
# requests are sent (h2load --h1, CONNS connections), the counters are dumped, and the proxy is
# stopped. Instructions per request = the dump's total / REQUESTS (housekeeping timers and
# epoll waits included, as a real run would have them).
#
# Env (defaults in brackets):
#   PROXIES ["moodle-edge nginx direct-floor"] (also: nginx-bare)   REQUESTS [10000]
#   WARMUP [1000]  CONNS [64]
#   nginx does moodle-edge's job, nginx-bare less (load.sh's two nginx configurations).
#   ACCESS_LOG [file]  file: each proxy writes its access log as load.sh's default (nginx
#     `combined buffer=64k flush=1s`, moodle-edge its default JSON) into a file; pipe: the
#     same, moodle-edge's on standard output read through a pipe; off: no access log
#   BASE_PORT [18500]   MOODLE_EDGE_BIN [target/release/moodle-edge]   KEEP_DIR [0]
#   SESSIONS []  "redis": every request carries a logged-in edge session cookie, which
#     moodle-edge checks against a redis-server started here, through its replica cache (the
#     default `store.session_cache.ttl`): the per-request cost of SSO being on (the other
#     proxies get the same header and ignore it; Redis's own instructions are not counted)
#
# Only 127.0.0.1 is used. Every process the script starts is stopped by PID on exit.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROXIES="${PROXIES:-moodle-edge nginx direct-floor}"
REQUESTS="${REQUESTS:-10000}"
WARMUP="${WARMUP:-1000}"
CONNS="${CONNS:-64}"
BASE_PORT="${BASE_PORT:-18500}"
KEEP_DIR="${KEEP_DIR:-0}"
ACCESS_LOG="${ACCESS_LOG:-file}"
SESSIONS="${SESSIONS:-}"
pin_proxy=()
pin_upstream=()
MOODLE_EDGE_BIN="${MOODLE_EDGE_BIN:-$repo/target/release/moodle-edge}"
FLOOR_BIN="$repo/target/release/examples/hyper_floor"

require_positive REQUESTS CONNS
[[ "$ACCESS_LOG" =~ ^(off|file|pipe)$ ]] || bad_setting "ACCESS_LOG must be off, file or pipe"
[[ -z "$SESSIONS" || "$SESSIONS" == redis ]] || bad_setting "SESSIONS must be empty or redis"
nginx_log=on
[[ "$ACCESS_LOG" == off ]] && nginx_log=off
require_whole WARMUP BASE_PORT
for p in $PROXIES; do
    case "$p" in
    moodle-edge | nginx | nginx-bare | direct-floor) ;;
    *) bad_setting "PROXIES: unknown proxy $p (moodle-edge, nginx, nginx-bare, direct-floor)" ;;
    esac
done
require_cmds nginx h2load curl valgrind callgrind_control
[[ " $PROXIES " == *" moodle-edge "* ]] && ensure_edge_bin
if [[ " $PROXIES " == *" direct-floor "* && ! -x "$FLOOR_BIN" ]]; then
    (cd "$repo" && cargo build --release --example hyper_floor)
fi

make_workdir instructions
port_upstream=$((BASE_PORT + 10))
port_proxy=$((BASE_PORT + 20))
port_tls=$((BASE_PORT + 21))
port_admin=$((BASE_PORT + 29))
check_ports_free "$port_upstream" "$port_proxy" "$port_tls" "$port_admin"
make_cert
mkdir -p "$dir/moodledata"
upstream_nginx_conf >"$dir/upstream.conf"
[[ -n "$SESSIONS" ]] && start_session_redis $((BASE_PORT + 90))
# The proxy nginxes of load.sh, without a master process, so callgrind sees the worker itself.
for job in same bare; do
    name=nginx
    [[ "$job" == bare ]] && name=nginx-bare
    {
        echo "master_process off;"
        proxy_nginx_conf "$name" "$port_proxy" "$port_tls" "$job" "$nginx_log"
    } >"$dir/$name.conf"
done

{
cat <<EOF
server:
  listen:
    - addr: "127.0.0.1:$port_proxy"
  admin_addr: "127.0.0.1:$port_admin"
  worker_threads: 1
  shutdown_timeout: "1s"
upstream:
  url: "http://127.0.0.1:$port_upstream"
moodle:
  wwwroot: "http://127.0.0.1:$port_proxy"
  dataroot: "$dir/moodledata"
EOF
edge_log_yaml "$ACCESS_LOG" moodle-edge
[[ -z "$SESSIONS" ]] || edge_sso_yaml $((BASE_PORT + 90)) 5s
} >"$dir/moodle-edge.yaml"

start upstream nginx -p "$dir/upstream" -c "$dir/upstream.conf" -e "$dir/upstream/error.log"
wait_ready "http://127.0.0.1:$port_upstream/" upstream
[[ " $PROXIES " == *" moodle-edge "* ]] && check_edge_config "$MOODLE_EDGE_BIN"

echo "instructions per request (callgrind; user space only), $REQUESTS requests over $CONNS connections after $WARMUP; access log: $ACCESS_LOG${SESSIONS:+; an edge session checked in $SESSIONS}"
for proxy in $PROXIES; do
    out="$dir/$proxy.callgrind"
    grind=(valgrind --tool=callgrind --callgrind-out-file="$out")
    case "$proxy" in
    moodle-edge)
        if [[ "$ACCESS_LOG" == pipe ]]; then
            start_piped "$proxy" "${grind[@]}" "$MOODLE_EDGE_BIN" run --config "$dir/moodle-edge.yaml"
        else
            start "$proxy" "${grind[@]}" "$MOODLE_EDGE_BIN" run --config "$dir/moodle-edge.yaml"
        fi
        ;;
    nginx | nginx-bare) start "$proxy" "${grind[@]}" nginx -p "$dir/$proxy" -c "$dir/$proxy.conf" -e "$dir/$proxy/error.log" ;;
    direct-floor)
        start "$proxy" env DIRECT=1 "${grind[@]}" "$FLOOR_BIN" "127.0.0.1:$port_proxy" \
            "127.0.0.1:$port_tls" "$dir/cert.pem" "$dir/key.pem" "http://127.0.0.1:$port_upstream"
        ;;
    esac
    pid=$started_pid
    # Under valgrind a start takes seconds.
    for _ in $(seq 1 300); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port_proxy/" || true)" == 200 ]] && break
        sleep 0.2
    done
    if ((WARMUP > 0)); then
        h2load --h1 -n "$WARMUP" -c "$CONNS" -t1 "${session_hdr[@]}" "http://127.0.0.1:$port_proxy/" >/dev/null
    fi
    # `env` execs valgrind, so this PID is valgrind's own.
    callgrind_control --zero "$pid" >/dev/null 2>&1
    h2load --h1 -n "$REQUESTS" -c "$CONNS" -t1 "${session_hdr[@]}" "http://127.0.0.1:$port_proxy/" >"$dir/$proxy.h2load"
    callgrind_control --dump "$pid" >/dev/null 2>&1
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    ok="$(awk '/^requests:/ {print $8}' "$dir/$proxy.h2load")"
    [[ "$ok" == "$REQUESTS" ]] || die "$proxy: $ok of $REQUESTS requests succeeded"
    total="$(awk '/^(summary|totals):/ {print $2; exit}' "$out.1")"
    [[ -n "$total" ]] || die "$proxy: no callgrind totals in $out.1"
    printf '  %-13s %7d instructions/request\n' "$proxy" $((total / REQUESTS))
done
