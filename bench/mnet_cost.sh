#!/usr/bin/env bash
# MNet cost per 2 KB call, in one run on one machine: the gateway's inbound path (open the
# seal, verify, check the call, re-sign and re-seal Moodle's 2 KB answer) beside the same RSA
# and RC4 primitives done bare, and beside PHP (php-cli, tests/mnet_php/bench.php) doing the
# same envelope work as Moodle would. Runs `cargo bench --bench mnet` (criterion) and prints
# the medians, the ratios and the machine's load before and after.
#
# Env (defaults in brackets):
#   QUICK_BUILD [0]  1 builds the bench without fat LTO (CARGO_PROFILE_BENCH_LTO=false,
#                    16 codegen units): minutes less on a shared machine. The crypto is
#                    OpenSSL's (C) either way; gateway and primitives share the build.
#   PROFILE [bench]  dev reuses the debug build (no optimised build at all): the RSA work is
#                    still OpenSSL's, but the gateway's own Rust (XML, base64, RC4) runs
#                    unoptimised, so its ratio to the primitives is an upper bound.
#   CRITERION_ARGS [--noplot]  e.g. "--noplot --sample-size 30 --nresamples 2000" where
#                    criterion's own analysis is slow (an unoptimised build, a loaded machine)
#
# Needs php-cli (scripts/install-test-deps.sh); RC4 for PHP through tests/mnet_php's own
# OPENSSL_CONF, the system's config untouched. Nothing listens; nothing is started but cargo.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_cmds php cargo python3

if [[ "${QUICK_BUILD:-0}" == 1 ]]; then
    export CARGO_PROFILE_BENCH_LTO=false CARGO_PROFILE_BENCH_CODEGEN_UNITS=16
fi
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
echo "$me: load before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "$me: profile ${PROFILE:-bench}"
# shellcheck disable=SC2086 # CRITERION_ARGS is split into arguments on purpose
(cd "$repo" && cargo bench --profile "${PROFILE:-bench}" --bench mnet -- ${CRITERION_ARGS:---noplot}) | tee "$out"
echo "$me: load after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$repo/target/criterion/mnet_inbound_2KB" "$out" <<'EOF'
import json, re, sys
base, log = sys.argv[1], open(sys.argv[2]).read()
def median_us(name):
    e = json.load(open("%s/%s/new/estimates.json" % (base, name)))
    return e["median"]["point_estimate"] / 1000.0
gw, prim = median_us("gateway_path"), median_us("primitives")
m = re.search(r"php_same_envelope_work: median ([0-9.]+) us", log)
php = float(m.group(1)) if m else None
print()
print("median per 2 KB call:  gateway %.1f us   primitives %.1f us   php %s" % (
    gw, prim, "%.1f us" % php if php else "n/a"))
print("gateway / primitives = %.2fx (target <= 1.3x)" % (gw / prim))
if php:
    print("php / gateway        = %.2fx" % (php / gw))
EOF
