#!/usr/bin/env bash
# The project's test command: unit and integration tests, the criterion benches run once each
# (test mode: `cargo test --all-targets` builds benches in the debug test profile and criterion
# runs every benchmark a single time, so they cost no release build), doc tests, the docs check
# (scripts/check-docs.sh: docs/metrics.md names every metric), and with MOODLE_EDGE_LINT=1 also
# rustfmt and clippy. Integration tests start their own nginx / redis on 127.0.0.1, so this only
# makes sure those programs are on PATH.
#
# Every step runs even when an earlier one failed; a summary follows; the exit code is non-zero
# if any step failed.
#
# Env:
#   MOODLE_EDGE_LINT=1     also run `cargo fmt --check` and `cargo clippy --all-targets -D warnings`
#   TEST_STEP_TIMEOUT=N    seconds one cargo step may take (build included), default 1500
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# nginx lives in /usr/sbin; cargo may be in ~/.cargo/bin on a non-login shell.
export PATH="$PATH:/usr/sbin:/sbin"
if [[ -d "$HOME/.cargo/bin" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
# A fresh CI clone never benefits from incremental artifacts; skipping them saves I/O.
if [[ "${CI:-}" == "true" ]]; then
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi

step_timeout="${TEST_STEP_TIMEOUT:-1500}"
log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT

for cmd in nginx redis-server redis-cli systemd-socket-activate python3 php cargo; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        echo "test.sh: $cmd not found; run scripts/install-test-deps.sh first" >&2
        exit 1
    fi
done

if ! python3 -c 'import h2, hyperframe' 2>/dev/null; then
    echo "test.sh: python3 cannot import h2; run scripts/install-test-deps.sh first" >&2
    exit 1
fi

step_names=()
step_results=()
step_times=()

# run_step NAME COMMAND... : runs a command with a time bound, records ok/FAILED and duration,
# and keeps its output in $log_dir/NAME.log for the test counts.
run_step() {
    local name="$1"
    shift
    echo
    echo "==> $name: $*"
    local start=$SECONDS rc=0
    timeout -k 30 "$step_timeout" "$@" 2>&1 | tee "$log_dir/$name.log" || rc=$?
    step_names+=("$name")
    step_times+=("$((SECONDS - start))s")
    if [[ $rc -eq 0 ]]; then
        step_results+=("ok")
    elif [[ $rc -eq 124 ]]; then
        step_results+=("FAILED (timed out after ${step_timeout}s)")
    else
        step_results+=("FAILED (exit $rc)")
    fi
}

if [[ "${MOODLE_EDGE_LINT:-}" == "1" ]]; then
    run_step fmt cargo fmt --all -- --check
fi
# --all-targets: lib, bins, tests/ and benches/ in one build (plain `cargo test` skips benches,
# and `cargo test --benches` would run the lib's unit tests a second time); it leaves out doc
# tests, hence the second step.
run_step tests cargo test --workspace --all-targets --no-fail-fast
run_step doctests cargo test --workspace --doc
run_step docs scripts/check-docs.sh
if [[ "${MOODLE_EDGE_LINT:-}" == "1" ]]; then
    run_step clippy cargo clippy --workspace --all-targets -- -D warnings
fi

# Add up cargo's "test result: ok. 12 passed; 0 failed; 1 ignored; ..." lines.
passed=0 failed=0 ignored=0
while read -r p f i; do
    passed=$((passed + p)) failed=$((failed + f)) ignored=$((ignored + i))
done < <(cat "$log_dir/tests.log" "$log_dir/doctests.log" 2>/dev/null |
    sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/p')

echo
echo "==================== moodle-edge test summary ===================="
any_failed=0
for i in "${!step_names[@]}"; do
    printf '  %-8s %-40s %s\n' "${step_names[$i]}" "${step_results[$i]}" "${step_times[$i]}"
    [[ "${step_results[$i]}" == ok ]] || any_failed=1
done
if [[ "${MOODLE_EDGE_LINT:-}" != "1" ]]; then
    echo "  (fmt and clippy skipped: set MOODLE_EDGE_LINT=1 to run them)"
fi
echo "=================================================================="
echo "tests: $passed passed, $failed failed, $ignored skipped"
exit "$any_failed"
