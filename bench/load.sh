#!/usr/bin/env bash
# Load benchmark: moodle-edge against nginx 1.22, both as reverse proxies with ONE worker, in
# front of the SAME upstream (an nginx answering a fixed 1 KiB body), measured side by side in
# one run, taking turns, several rounds. Prints medians and the ratios moodle-edge / nginx.
#
# nginx does moodle-edge's job (lib.sh proxy_nginx_conf "same": the forwarding headers and the
# request id moodle-edge adds by default). A second nginx, "nginx-bare", sets Host and
# X-Forwarded-For/-Proto only (less work than moodle-edge does); it is measured in the same
# rounds and reported beside, so the cost of that work can be seen (NGINX_BARE=0 leaves it out).
#
# Access logs (LOGS, default "file pipe off"), as every production site runs: nginx writes
# `access_log FILE combined buffer=64k flush=1s`; moodle-edge its default JSON access log,
# "file" into a file, "pipe" on standard output read through a pipe (as journald reads it).
# "off" adds nginx-off and moodle-edge-off, neither writing a log, for the figures beside.
# MOODLE_EDGE_BEFORE=BIN adds a second moodle-edge build (labelled "before-...") in the same
# rounds, with the same log variants, to compare two builds under the same load.
#
# Scenarios (SCENARIOS, default "http https h2"):
#   http   plain HTTP/1.1      wrk -t1 -cCONNS --latency
#   https  HTTP/1.1 over TLS   h2load --h1 -t1 -cCONNS        (self-signed cert, ALPN http/1.1)
#   h2     HTTP/2 over TLS     h2load -t1 -cCONNS -m1         (ALPN h2, one stream per connection)
#
# CPU layout on a 2-core machine (see bench/README.md), LAYOUT:
#   client-alone (default)  the load generator alone on CLIENT_CPU (0); the proxies and the
#                           upstream nginx on PROXY_CPU (1). The client is never the limit, so
#                           the figures are the proxy's.
#   shared                  the proxies alone on PROXY_CPU; the load generator and the upstream
#                           share CLIENT_CPU. With TLS that core is the limit (h2load's TLS plus
#                           the upstream), and the p99 then rewards the slower proxy: kept to
#                           show it (docs/performance.md).
# Only one proxy is under load at a time; the others sit idle.
#
# Env (defaults in brackets):
#   ROUNDS [3]  DURATION [10] seconds per measurement  CONNS [64]  WARMUP [2] seconds
#   SCENARIOS ["http https h2"]   PROXY_CPU [1]  CLIENT_CPU [0]  BASE_PORT [18000]
#   LAYOUT [client-alone]  or shared (see above)
#   MOODLE_EDGE_BIN [target/release/moodle-edge; built with cargo build --release if missing]
#   EDGE [moodle-edge]  set EDGE=nginx to put a second, identical nginx in moodle-edge's place:
#                       proves the harness and shows its noise (ratios should be about 1.00);
#                       EDGE=hyper-floor puts examples/hyper_floor.rs there: the bare hyper
#                       stack (server and pooled client) with none of moodle-edge's work;
#                       EDGE=direct-floor the same with moodle-edge's direct upstream path
#                       (src/proxy/direct.rs) in place of hyper's client
#   LOGS ["file pipe off"]  the access-log variants measured (see above)
#   MOODLE_EDGE_BEFORE []   a second moodle-edge binary measured beside (see above)
#   NGINX_BARE [0]      also measure nginx-bare (see above; no access log)
#   SESSIONS []         "redis": every request (to every proxy) carries a logged-in edge session
#                       cookie, and two more variants check it against a redis-server started
#                       here: moodle-edge-redis (replica cache on, the default) and
#                       moodle-edge-redis-nocache (one Redis round trip per request); both log
#                       nothing, so compare them with moodle-edge-off (docs/scale-out.md)
#   UNIT_ENV [1]  moodle-edge runs with the environment of systemd/moodle-edge.service (its
#                 Environment= lines, as a site runs it); 0 runs the bare binary
#   KEEP_DIR [0]        1 keeps the temp dir (configs, logs, raw tool output) for inspection
#   IDLE_WAIT [120]     seconds to wait for an otherwise idle machine before starting
#
# Only 127.0.0.1 is used. Every process the script starts is stopped by PID on exit.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-64}"
WARMUP="${WARMUP:-2}"
SCENARIOS="${SCENARIOS:-http https h2}"
PROXY_CPU="${PROXY_CPU:-1}"
CLIENT_CPU="${CLIENT_CPU:-0}"
BASE_PORT="${BASE_PORT:-18000}"
EDGE="${EDGE:-moodle-edge}"
KEEP_DIR="${KEEP_DIR:-0}"
NGINX_BARE="${NGINX_BARE:-0}"
LOGS="${LOGS:-file pipe off}"
MOODLE_EDGE_BEFORE="${MOODLE_EDGE_BEFORE:-}"
IDLE_WAIT="${IDLE_WAIT:-120}"
SESSIONS="${SESSIONS:-}"
[[ -z "$SESSIONS" || "$SESSIONS" == redis ]] || bad_setting "SESSIONS must be empty or redis"
LAYOUT="${LAYOUT:-client-alone}"
MOODLE_EDGE_BIN="${MOODLE_EDGE_BIN:-$repo/target/release/moodle-edge}"

require_whole ROUNDS DURATION CONNS WARMUP BASE_PORT IDLE_WAIT
[[ "$NGINX_BARE" == 0 || "$NGINX_BARE" == 1 ]] || bad_setting "NGINX_BARE must be 0 or 1"
require_scenarios 'http|https|h2'
[[ "$LAYOUT" == client-alone || "$LAYOUT" == shared ]] || bad_setting "LAYOUT must be client-alone or shared"
for l in $LOGS; do
    [[ "$l" =~ ^(file|pipe|off)$ ]] || bad_setting "LOGS: unknown variant $l (file, pipe, off)"
done
[[ -n "$LOGS" ]] || bad_setting "LOGS must name at least one of file, pipe, off"
[[ -z "$MOODLE_EDGE_BEFORE" || -x "$MOODLE_EDGE_BEFORE" ]] || bad_setting "MOODLE_EDGE_BEFORE=$MOODLE_EDGE_BEFORE is not executable"
logging=0 log_off=0
for l in $LOGS; do
    if [[ "$l" == off ]]; then log_off=1; else logging=1; fi
done
case "$EDGE" in
moodle-edge | nginx | hyper-floor | direct-floor) ;;
*) bad_setting "EDGE must be moodle-edge, nginx, hyper-floor or direct-floor" ;;
esac
FLOOR_BIN="$repo/target/release/examples/hyper_floor"
if [[ "$EDGE" == *-floor && ! -x "$FLOOR_BIN" ]]; then
    (cd "$repo" && cargo build --release --example hyper_floor)
fi
require_cmds nginx wrk h2load openssl curl ps
if [[ "$EDGE" == moodle-edge ]]; then
    ensure_edge_bin
fi

# Pinning: needs taskset and the two CPUs named.
if [[ "$LAYOUT" == shared ]]; then
    setup_pinning "load generator and upstream"
    pin_upstream=("${pin_client[@]}")
else
    setup_pinning "load generator alone"
    pin_upstream=("${pin_proxy[@]}")
    if [[ ${#pin_proxy[@]} -gt 0 ]]; then
        pinning="proxies and upstream on cpu $PROXY_CPU; load generator alone on cpu $CLIENT_CPU"
    fi
fi
make_workdir load
proxy_ports

# ---------------------------------------------------------------- files

make_cert
mkdir -p "$dir/moodledata"
upstream_nginx_conf >"$dir/upstream.conf"
# The proxies measured, as label:kind:http_port:tls_port (kind: nginx, edge-MODE,
# before-MODE, floor); nginx (the baseline) first. Ports from BASE_PORT: +20.. nginx, +30..
# moodle-edge variants, ten apart (+N0 plain, +N1 TLS, +N9 admin).
variants=()
if ((logging)); then
    variants+=("nginx:nginx-on:$port_nginx_http:$port_nginx_tls")
    proxy_nginx_conf nginx "$port_nginx_http" "$port_nginx_tls" same on >"$dir/nginx.conf"
fi
if ((log_off)); then
    off_name=nginx-off
    ((logging)) || off_name=nginx
    variants+=("$off_name:nginx-off:$((BASE_PORT + 24)):$((BASE_PORT + 25))")
    proxy_nginx_conf "$off_name" "$((BASE_PORT + 24))" "$((BASE_PORT + 25))" same off >"$dir/$off_name.conf"
fi
if [[ "$NGINX_BARE" == 1 ]]; then
    variants+=("nginx-bare:nginx-off:$port_bare_http:$port_bare_tls")
    proxy_nginx_conf nginx-bare "$port_bare_http" "$port_bare_tls" bare off >"$dir/nginx-bare.conf"
fi

# edge_config LABEL BIN MODE PORT: moodle-edge's config for one variant, in $dir/LABEL.yaml.
edge_config() {
    local label="$1" mode="$3"
    port_edge_http="$4" port_edge_tls=$(($4 + 1)) port_edge_admin=$(($4 + 9))
    {
        edge_yaml_head
        cat <<EOF
moodle:
  wwwroot: "http://127.0.0.1:$port_edge_http"
  dataroot: "$dir/moodledata"
EOF
        edge_log_yaml "$mode" "$label"
    } >"$dir/$label.yaml"
}

# session_variants: a redis-server on BASE_PORT+90 holding one live edge session, and the two
# moodle-edge-redis variants.
session_variants() {
    local rport=$((BASE_PORT + 90)) ttl label
    start_session_redis "$rport"
    for ttl in 5s 0s; do
        label=moodle-edge-redis
        [[ "$ttl" == 0s ]] && label=moodle-edge-redis-nocache
        edge_config "$label" "$MOODLE_EDGE_BIN" off "$next_port"
        edge_sso_yaml "$rport" "$ttl" >>"$dir/$label.yaml"
        variants+=("$label:edge-off:$next_port:$((next_port + 1))")
        next_port=$((next_port + 10))
    done
}

next_port=$((BASE_PORT + 30))
if [[ "$EDGE" == nginx ]]; then
    proxy_nginx_conf nginx-b "$next_port" "$((next_port + 1))" same "$( ((logging)) && echo on || echo off)" >"$dir/nginx-b.conf"
    variants+=("nginx-b:nginx-b:$next_port:$((next_port + 1))")
elif [[ "$EDGE" == *-floor ]]; then
    variants+=("$EDGE:floor:$next_port:$((next_port + 1))")
else
    for mode in $LOGS; do
        edge_config "moodle-edge-$mode" "$MOODLE_EDGE_BIN" "$mode" "$next_port"
        variants+=("moodle-edge-$mode:edge-$mode:$next_port:$((next_port + 1))")
        next_port=$((next_port + 10))
    done
    [[ -n "$SESSIONS" ]] && session_variants
    if [[ -n "$MOODLE_EDGE_BEFORE" ]]; then
        for mode in $LOGS; do
            edge_config "before-$mode" "$MOODLE_EDGE_BEFORE" "$mode" "$next_port"
            variants+=("before-$mode:before-$mode:$next_port:$((next_port + 1))")
            next_port=$((next_port + 10))
        done
    fi
fi
for v in "${variants[@]}"; do
    IFS=: read -r _ _ hp tp <<<"$v"
    check_ports_free "$hp" "$tp" "$((hp + 9))"
done

# ---------------------------------------------------------------- processes

start upstream "${pin_upstream[@]}" nginx -p "$dir/upstream" -c "$dir/upstream.conf" -e "$dir/upstream/error.log"
upstream_pid=$started_pid
wait_ready "http://127.0.0.1:$port_upstream/" upstream

# The running proxies, as label:pid:http_port:tls_port, in the order of variants.
proxies=()
for v in "${variants[@]}"; do
    IFS=: read -r name kind hp tp <<<"$v"
    case "$kind" in
    nginx-* | nginx-b)
        start "$name" "${pin_proxy[@]}" nginx -p "$dir/$name" -c "$dir/$name.conf" -e "$dir/$name/error.log"
        ;;
    floor)
        floor_env=()
        [[ "$EDGE" == direct-floor ]] && floor_env=(env DIRECT=1)
        start "$EDGE" "${floor_env[@]}" "${pin_proxy[@]}" "$FLOOR_BIN" "127.0.0.1:$hp" "127.0.0.1:$tp" \
            "$dir/cert.pem" "$dir/key.pem" "http://127.0.0.1:$port_upstream"
        ;;
    edge-* | before-*)
        bin="$MOODLE_EDGE_BIN"
        [[ "$kind" == before-* ]] && bin="$MOODLE_EDGE_BEFORE"
        cp "$dir/$name.yaml" "$dir/moodle-edge.yaml"
        check_edge_config "$bin"
        if [[ "$kind" == *-pipe ]]; then
            start_piped "$name" "${pin_proxy[@]}" "${edge_env[@]}" "$bin" run --config "$dir/$name.yaml"
        else
            start "$name" "${pin_proxy[@]}" "${edge_env[@]}" "$bin" run --config "$dir/$name.yaml"
        fi
        ;;
    esac
    proxies+=("$name:$started_pid:$hp:$tp")
done
edge_label="${proxies[-1]%%:*}"
labels=()
for p in "${proxies[@]}"; do labels+=("${p%%:*}"); done

for p in "${proxies[@]}"; do
    IFS=: read -r name _ hp tp <<<"$p"
    wait_ready "http://127.0.0.1:$hp/" "$name"
    wait_ready "https://127.0.0.1:$tp/" "$name"
done

# Same body through both proxies, or the comparison is meaningless.
for p in "${proxies[@]}"; do
    IFS=: read -r _ _ hp _ <<<"$p"
    url="http://127.0.0.1:$hp/"
    size="$(curl -s -o /dev/null -w '%{size_download}' "$url")"
    [[ "$size" == 1024 ]] || die "$url gave $size bytes, expected 1024"
done

# ---------------------------------------------------------------- measuring

# to_ms VALUE: wrk latency ("812.00us", "4.53ms", "1.02s") in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}

# p99_from_log FILE: h2load --log-file third column (microseconds) -> p99 in milliseconds.
p99_from_log() {
    cut -f3 "$1" | sort -n | awk '{ a[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        i = int(NR * 0.99); if (i < NR * 0.99) i++; if (i < 1) i = 1
        printf "%.3f", a[i] / 1000 }'
}

# self_child_ticks: CPU time (ticks) of this shell's finished children, i.e. the load generator.
self_child_ticks() {
    local stat rest
    stat="$(cat /proc/$$/stat)"
    rest="${stat##*) }"
    # shellcheck disable=SC2086
    set -- $rest
    echo $((${14} + ${15})) # fields 16 and 17: cutime, cstime
}

# machine_busy_ticks: user+nice+system ticks of all CPUs together (from /proc/stat).
machine_busy_ticks() {
    awk '$1 == "cpu" { print $2 + $3 + $4; exit }' /proc/stat
}

# load SCENARIO PORT_HTTP PORT_TLS SECONDS OUT: runs the load generator (no subshell, so its CPU
# time lands in this shell's cutime). Sets load_requests, load_p99 (ms), load_errors and
# load_client_ticks.
load() {
    local scenario="$1" hp="$2" tp="$3" secs="$4" out="$5"
    local -a cmd
    case "$scenario" in
    http) cmd=(wrk -t1 -c"$CONNS" -d"${secs}s" --latency "${session_hdr[@]}" "http://127.0.0.1:$hp/") ;;
    https) cmd=(h2load --h1 -t1 -c"$CONNS" -D "$secs" --log-file "$out.log" "${session_hdr[@]}" "https://127.0.0.1:$tp/") ;;
    h2) cmd=(h2load -t1 -c"$CONNS" -m1 -D "$secs" --log-file "$out.log" "${session_hdr[@]}" "https://127.0.0.1:$tp/") ;;
    esac
    local c0 c1
    c0="$(self_child_ticks)"
    timeout -k 5 $((secs + 30)) "${pin_client[@]}" "${cmd[@]}" >"$out" 2>&1 || {
        echo "$me: load generator failed: ${cmd[*]}" >&2
        cat "$out" >&2
        exit 1
    }
    c1="$(self_child_ticks)"
    load_client_ticks=$((c1 - c0))
    if [[ "$scenario" == http ]]; then
        load_requests="$(awk '/requests in/ { print $1 }' "$out")"
        load_p99="$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")"
        load_errors="$(awk '/Non-2xx/ { e += $NF } /Socket errors/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 } END { print e + 0 }' "$out")"
    else
        local proto want=http/1.1
        proto="$(awk -F': ' '/^Application protocol/ { print $2 }' "$out")"
        [[ "$scenario" == h2 ]] && want=h2
        [[ "$proto" == "$want" ]] || die "$scenario negotiated '$proto', expected $want"
        load_requests="$(awk '/^requests:/ { print $8 }' "$out")"
        load_p99="$(p99_from_log "$out.log")"
        load_errors="$(awk '/^requests:/ { e = $10 + $12 + $14 } /^status codes:/ { e += $5 + $7 + $9 } END { print e + 0 }' "$out")"
        grep -E '^(TLS Protocol|Cipher):' "$out" | tr '\n' ' ' >"$out.tls"
        rm -f "$out.log"
    fi
    if [[ -z "$load_requests" || "$load_requests" -eq 0 ]]; then
        echo "$me: no requests completed; output in $out:" >&2
        cat "$out" >&2
        exit 1
    fi
}

# measure SCENARIO LABEL PID HTTP_PORT TLS_PORT ROUND: one measured run; appends to results:
# scenario label round req/s p99_ms cpu_us_per_req proxy_cpu_% errors other_cpu_% upstream_cpu_%
# ctx_switches_per_1000_requests
# where other_cpu_% is CPU used on the machine by anything but the proxy, the upstream and the
# load generator (another job on the host skews the figures; the report warns about it).
measure() {
    local scenario="$1" label="$2" pid="$3" hp="$4" tp="$5" round="$6"
    local out="$dir/raw.$scenario.$label.$round"
    local t0 t1 u0 u1 m0 m1 w0 w1
    local x0 x1
    x0="$(ctx_switches "$pid")"
    t0="$(cpu_ticks "$pid")"
    u0="$(cpu_ticks "$upstream_pid")"
    m0="$(machine_busy_ticks)"
    w0="$(date +%s%N)"
    load "$scenario" "$hp" "$tp" "$DURATION" "$out"
    w1="$(date +%s%N)"
    m1="$(machine_busy_ticks)"
    u1="$(cpu_ticks "$upstream_pid")"
    t1="$(cpu_ticks "$pid")"
    x1="$(ctx_switches "$pid")"
    awk -v x=$((x1 - x0)) -v s="$scenario" -v l="$label" -v r="$round" -v n="$load_requests" -v p="$load_p99" \
        -v e="$load_errors" -v dt=$((t1 - t0)) -v other=$((m1 - m0 - (t1 - t0) - (u1 - u0) - load_client_ticks)) \
        -v hz="$clk_tck" -v wall=$((w1 - w0)) -v d="$DURATION" -v du=$((u1 - u0)) 'BEGIN {
        cpu_us = dt * 1e6 / hz
        other_pct = 100 * other * 1e9 / hz / wall; if (other_pct < 0) other_pct = 0
        printf "%s %s %s %.0f %s %.2f %.0f %d %.0f %.0f %.1f\n", s, l, r, n / d, p, cpu_us / n, 100 * cpu_us * 1000 / wall, e, other_pct,
            100 * du * 1e9 / hz / wall, 1000 * x / n
    }' >>"$dir/results"
    printf '  %-6s %-17s round %s: %s\n' "$scenario" "$label" "$round" "$(tail -1 "$dir/results" | awk '{
        printf "%s req/s, p99 %s ms, %s us CPU/req, %s cs/1k req, proxy CPU %s%%, upstream CPU %s%%, errors %s, other CPU %s%%", $4, $5, $6, $11, $7, $10, $8, $9 }')"
}

# wait_for_quiet: a busy machine (a build, another benchmark) makes every figure wrong. Waits
# up to IDLE_WAIT seconds for a second with under 10% of one CPU busy, then goes on with a warning.
wait_for_quiet() {
    local waited=0 m0 m1 busy
    while :; do
        m0="$(machine_busy_ticks)"
        sleep 1
        m1="$(machine_busy_ticks)"
        busy=$(((m1 - m0) * 100 / clk_tck))
        if ((busy < 10)); then
            return 0
        fi
        if ((waited >= IDLE_WAIT)); then
            echo "WARNING: the machine is busy (${busy}% of one CPU used by other processes); figures will be skewed"
            return 0
        fi
        ((waited == 0)) && echo "$me: machine busy (${busy}% of one CPU), waiting up to ${IDLE_WAIT}s for it to calm down"
        waited=$((waited + 1))
    done
}

echo "moodle-edge load benchmark"
echo "  $(nginx -v 2>&1 | sed 's/.*: //'); $(wrk -v 2>&1 | head -1 | awk '{ print "wrk", $2 }'); $(h2load --version | head -1)"
if [[ "$EDGE" == moodle-edge ]]; then
    echo "  moodle-edge: $MOODLE_EDGE_BIN ($("$MOODLE_EDGE_BIN" --version 2>/dev/null || echo 'version unknown'))"
    echo "  moodle-edge environment (the unit's): ${edge_env[*]:1}"
elif [[ "$EDGE" == nginx ]]; then
    echo "  EDGE=nginx: a second identical nginx stands in for moodle-edge (harness check)"
else
    echo "  EDGE=$EDGE: $FLOOR_BIN stands in for moodle-edge (the stack's floor, no proxy work)"
fi
echo "  upstream: nginx, 1 worker, fixed 1024-byte body; both proxies: 1 worker, upstream keepalive 64,"
if ((logging)); then
    echo "  keepalive_requests 100000 on both sides; access logs: nginx combined buffer=64k flush=1s to a file;"
    echo "  moodle-edge its default JSON: $LOGS (file; pipe = standard output read by cat through a FIFO)"
else
    echo "  keepalive_requests 100000 on both sides; no access log on either proxy"
fi
[[ -n "$MOODLE_EDGE_BEFORE" ]] && echo "  before: $MOODLE_EDGE_BEFORE (a second build, the same log variants: $LOGS)"
echo "  layout $LAYOUT: $pinning"
echo "  $ROUNDS rounds x ${DURATION}s per scenario and proxy, $CONNS connections, order alternates per round"
echo "  host: $(nproc) CPUs, $(uname -r)"
echo

# Warm-up (not measured): fills the proxies' upstream pools and caches.
for s in $SCENARIOS; do
    for p in "${proxies[@]}"; do
        IFS=: read -r name _ hp tp <<<"$p"
        load "$s" "$hp" "$tp" "$WARMUP" "$dir/warm.$name.$s"
    done
done

: >"$dir/results"
wait_for_quiet
count=${#proxies[@]}
for round in $(seq 1 "$ROUNDS"); do
    for s in $SCENARIOS; do
        # Each round starts with the next proxy in turn, so none is always first after a pause.
        for i in $(seq 0 $((count - 1))); do
            IFS=: read -r name pid hp tp <<<"${proxies[$(((round - 1 + i) % count))]}"
            measure "$s" "$name" "$pid" "$hp" "$tp" "$round"
        done
    done
done

# ---------------------------------------------------------------- report

echo
echo "Medians of $ROUNDS rounds (req/s higher is better; p99, CPU/request and context switches lower is better)"
printf '%-7s %-17s %10s %9s %12s %10s %10s %13s %7s\n' scenario proxy "req/s" "p99 ms" "CPU us/req" "cs/1k req" "proxy CPU" "upstream CPU" errors
for s in $SCENARIOS; do
    for l in "${labels[@]}"; do
        printf '%-7s %-17s %10.0f %9.2f %12.1f %10.1f %9.0f%% %12.0f%% %7d\n' "$s" "$l" \
            "$(median 4 "$s" "$l")" "$(median 5 "$s" "$l")" "$(median 6 "$s" "$l")" "$(median 11 "$s" "$l")" "$(median 7 "$s" "$l")" "$(median 10 "$s" "$l")" \
            "$(awk -v s="$s" -v l="$l" '$1 == s && $2 == l { e += $8 } END { print e + 0 }' "$dir/results")"
    done
    # Each proxy against the nginx writing the same kind of log (or none): nginx for a logging
    # variant, nginx-off for an -off one; an -off variant also against nginx-bare.
    for l in "${labels[@]}"; do
        [[ "$l" == nginx || "$l" == nginx-off || "$l" == nginx-bare ]] && continue
        bases=(nginx)
        if [[ "$l" == *-off ]] && ((logging)); then bases=(nginx-off); fi
        if [[ "$l" == *-off || "$l" == *-floor ]] && [[ "$NGINX_BARE" == 1 ]]; then bases+=(nginx-bare); fi
        for base in "${bases[@]}"; do
            awk -v r="$(median 4 "$s" "$l")" -v rn="$(median 4 "$s" "$base")" \
                -v p="$(median 5 "$s" "$l")" -v pn="$(median 5 "$s" "$base")" \
                -v c="$(median 6 "$s" "$l")" -v cn="$(median 6 "$s" "$base")" -v s="$s" -v l="$l/$base" \
                -v paired="$(paired_ratios "$s" "$l" "$base")" 'BEGIN {
                printf "%-7s %-28s %8.2fx %8.2fx %11.2fx   (paired rounds: %s)\n", s, l, r / rn, p / pn, c / cn, paired }'
        done
    done
    if [[ -f "$dir/raw.$s.nginx.1.tls" ]]; then
        echo "        TLS nginx: $(cat "$dir/raw.$s.nginx.1.tls")"
        echo "        TLS $edge_label: $(cat "$dir/raw.$s.$edge_label.1.tls")"
    fi
done
echo
echo "ratios: of the medians above, then (paired rounds) the median of each round's own ratio"
echo "(req/s, p99) from runs taken back to back: steadier when the machine's speed drifts."
echo "nginx does moodle-edge's job (its forwarding headers and request id); nginx-bare less."
echo
if [[ "$LAYOUT" == shared ]]; then
    echo "proxy CPU = the proxy's CPU time / wall time during the run; near 100% means the proxy's"
    echo "one core was the limit, well below it means the load generator or upstream (sharing cpu"
    echo "$CLIENT_CPU) was, and req/s then understates the proxy: compare CPU us/req instead."
else
    echo "proxy CPU = the proxy's CPU time / wall time during the run, upstream CPU the same for the"
    echo "upstream nginx on the proxy's core: together near 100% means that core was the limit (the"
    echo "figures are the proxy's); well below it means the load generator was."
fi
awk '$9 > 5 { n++; if ($9 > m) m = $9 } END {
    if (n) printf "WARNING: in %d of %d runs other processes used up to %d%% of a CPU: those figures are skewed; rerun on a quiet machine\n", n, NR, m
    else print "other CPU stayed under 5% of a CPU in every run (no outside contention seen)" }' "$dir/results"
for l in "${labels[@]}"; do
    if [[ -s "$dir/$l/error.log" ]]; then
        echo "note: $l error.log is not empty:"
        tail -5 "$dir/$l/error.log"
    fi
done
for l in "${labels[@]}"; do
    if [[ "$l" == moodle-edge-* || "$l" == before-* ]] && [[ -s "$dir/$l.out" ]] && grep -qv '"level":"INFO"' "$dir/$l.out"; then
        echo "note: $l printed (last lines):"
        tail -5 "$dir/$l.out"
    fi
done
# Every logging proxy wrote its lines (after the run, within the flush interval).
sleep 2
for l in "${labels[@]}"; do
    [[ -f "$dir/$l/access.log" ]] || continue
    printf 'access log %-17s %10d lines\n' "$l" "$(wc -l <"$dir/$l/access.log")"
done
