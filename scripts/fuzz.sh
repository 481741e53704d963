#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for a bounded time and prints executions
# and findings per target. Needs a nightly toolchain (rustup) and cargo-fuzz
# (`cargo install cargo-fuzz`); without nightly it says so and exits 0.
#
# Each target starts from fuzz/seeds/TARGET and keeps what it finds new in fuzz/corpus/TARGET
# (not committed; tests/fuzz_replay.rs replays it when present). A crash is copied to
# fuzz/regressions/TARGET-<name>, which the replay test runs on stable from then on: fix the
# parser, keep the file.
#
# Env: FUZZ_SECONDS [60] per target; FUZZ_TARGETS [all]; FUZZ_JOBS [1];
#      FUZZ_SANITIZER [none] cargo-fuzz's -s: none (coverage-guided, no sanitizer) or address.
#      The crate forbids unsafe code, so AddressSanitizer only watches the unsafe code inside
#      its Rust dependencies (the C libraries, libxml2, xmlsec and OpenSSL, are Debian's and
#      not instrumented); it makes the build several times slower and each run about half as
#      fast, which a 2-core machine cannot afford in one session (docs/hardening.md). Without
#      it a panic, a hang or an out-of-memory is still a finding; address for a longer run.
# Exit: 0 when no target crashed, 1 otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -d "$HOME/.cargo/bin" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz.sh: no nightly toolchain (rustup toolchain install nightly); nothing fuzzed"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 1
fi

seconds="${FUZZ_SECONDS:-60}"
targets="${FUZZ_TARGETS:-$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^moodle-edge-fuzz$')}"
crashed=0
summary=()
sanitizer="${FUZZ_SANITIZER:-none}"
cargo +nightly fuzz build --fuzz-dir fuzz -O -s "$sanitizer" >/dev/null
for t in $targets; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" fuzz/regressions
    log="$(mktemp)"
    rc=0
    cargo +nightly fuzz run --fuzz-dir fuzz -O -s "$sanitizer" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -jobs="${FUZZ_JOBS:-1}" \
        >"$log" 2>&1 || rc=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    findings=0
    for a in "fuzz/artifacts/$t"/crash-* "fuzz/artifacts/$t"/oom-* "fuzz/artifacts/$t"/timeout-*; do
        [[ -e "$a" ]] || continue
        findings=$((findings + 1))
        cp "$a" "fuzz/regressions/$t-$(basename "$a")"
    done
    if [[ $rc -ne 0 || $findings -gt 0 ]]; then
        crashed=1
        tail -40 "$log"
    fi
    summary+=("$(printf '%-20s executions %-10s findings %s' "$t" "${execs:-?}" "$findings")")
    rm -f "$log"
done
echo
echo "==================== fuzz summary (${seconds}s per target) ===================="
printf '%s\n' "${summary[@]}"
exit "$crashed"
