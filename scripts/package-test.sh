#!/usr/bin/env bash
# Builds the Debian package with cargo-deb, installs it with dpkg, checks what it installed
# (files, owners, modes, the service user, the conffile), runs `moodle-edge check` as the
# service user and `systemd-analyze verify` on the units, purges it, then does the same for
# the README's manual install steps, and leaves the machine as it found it.
#
# Run as root on Debian 12 (CI: a fresh container, systemd not PID 1: nothing here starts a
# unit). Needs dpkg, runuser, systemd-analyze (package systemd, from install-test-deps.sh);
# installs cargo-deb from crates.io when it is missing.
#
# Env: PACKAGE_PROFILE=release builds the package as shipped (fat LTO: minutes); the default
# profile `package-test` is the release settings without LTO.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/sbin:/sbin"
if [[ -d "$HOME/.cargo/bin" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

profile="${PACKAGE_PROFILE:-package-test}"
failures=0
say() { printf 'package-test: %s\n' "$*"; }
fail() { printf 'package-test: FAIL: %s\n' "$*" >&2; failures=$((failures + 1)); }
die() { printf 'package-test: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs and purges a package)"
for cmd in dpkg runuser systemd-analyze getent stat; do
    command -v "$cmd" >/dev/null || die "$cmd not found; run scripts/install-test-deps.sh first"
done

# The machine as found: nothing of ours may be there already, or "as found" could not hold.
manual_paths=(/usr/local/bin/moodle-edge /usr/lib/sysusers.d/moodle-edge.conf /etc/moodle-edge
    /usr/share/moodle-edge /etc/systemd/system/moodle-edge.service
    /etc/systemd/system/moodle-edge.socket)
if dpkg-query -W -f='${Status}' moodle-edge 2>/dev/null | grep -q installed; then
    die "the moodle-edge package is already installed here; refusing to touch it"
fi
for p in "${manual_paths[@]}"; do
    [[ ! -e $p ]] || die "$p already exists; refusing to touch it"
done
if getent passwd moodle-edge >/dev/null || getent group moodle-edge >/dev/null; then
    die "a moodle-edge user or group already exists; refusing to touch it"
fi

cleanup() {
    if dpkg-query -W -f='${Status}' moodle-edge 2>/dev/null | grep -qv not-installed; then
        dpkg --purge moodle-edge >/dev/null 2>&1 || true
    fi
    rm -rf "${manual_paths[@]}"
    getent passwd moodle-edge >/dev/null && userdel moodle-edge
    getent group moodle-edge >/dev/null && groupdel moodle-edge
    true
}
trap cleanup EXIT

if ! cargo deb --version >/dev/null 2>&1; then
    say "installing cargo-deb from crates.io"
    cargo install cargo-deb --locked --version 3.8.0
fi

say "building the package (profile $profile)"
rm -rf target/debian
cargo deb --profile "$profile" >/dev/null
deb=$(ls target/debian/moodle-edge_*.deb)
say "built $deb"
bin_built="target/$profile/moodle-edge"

# expect_stat PATH OWNER:GROUP MODE
expect_stat() {
    local got
    got=$(stat -c '%U:%G %a' "$1" 2>/dev/null) || { fail "$1 is missing"; return; }
    [[ $got == "$2 $3" ]] || fail "$1 is $got, want $2 $3"
}

# check_as_service_user: `moodle-edge check` as the user the unit runs as.
check_as_service_user() {
    local out
    if out=$(runuser -u moodle-edge -- "$1" check --config /etc/moodle-edge/config.yaml 2>&1); then
        say "check as moodle-edge: $out"
    else
        fail "moodle-edge check as the service user: $out"
    fi
}

verify_units() {
    local out
    if out=$(systemd-analyze verify "$@" 2>&1); then
        say "systemd-analyze verify: ok"
    else
        fail "systemd-analyze verify $*: $out"
    fi
}

# ---- the package ------------------------------------------------------------------------
say "dpkg -i"
dpkg -i "$deb" >/dev/null

getent passwd moodle-edge >/dev/null || fail "the moodle-edge user was not created"
shell=$(getent passwd moodle-edge | cut -d: -f7)
[[ $shell == /usr/sbin/nologin ]] || fail "the moodle-edge user's shell is $shell"
expect_stat /usr/bin/moodle-edge root:root 755
expect_stat /etc/moodle-edge root:moodle-edge 750
expect_stat /etc/moodle-edge/config.yaml root:moodle-edge 640
expect_stat /usr/lib/systemd/system/moodle-edge.service root:root 644
expect_stat /usr/lib/systemd/system/moodle-edge.socket root:root 644
expect_stat /usr/lib/sysusers.d/moodle-edge.conf root:root 644
expect_stat /usr/share/moodle-edge/placeholder-dataroot/README root:root 644
for doc in README.md operations.md config.example.yaml; do
    expect_stat "/usr/share/doc/moodle-edge/$doc" root:root 644
done
dpkg-query -W -f='${Conffiles}\n' moodle-edge | grep -q ' /etc/moodle-edge/config.yaml ' ||
    fail "/etc/moodle-edge/config.yaml is not a conffile"
# Nobody but root and the service group may read the config directory.
if runuser -u nobody -- cat /etc/moodle-edge/config.yaml >/dev/null 2>&1; then
    fail "user nobody can read /etc/moodle-edge/config.yaml"
fi
check_as_service_user /usr/bin/moodle-edge
# The socket unit's ListenStream= lines are the config's listeners.
streams=$(sed -n 's/^ListenStream=//p' /usr/lib/systemd/system/moodle-edge.socket | sort)
listens=$(sed -n 's/^ *- addr: "\([^"]*\)".*/\1/p' /etc/moodle-edge/config.yaml | sort)
[[ $streams == "$listens" ]] || fail "socket unit listens on [$streams], config on [$listens]"
verify_units /usr/lib/systemd/system/moodle-edge.service /usr/lib/systemd/system/moodle-edge.socket

say "dpkg --purge"
dpkg --purge moodle-edge >/dev/null
for p in /usr/bin/moodle-edge /etc/moodle-edge /usr/lib/systemd/system/moodle-edge.service \
    /usr/lib/sysusers.d/moodle-edge.conf /usr/share/moodle-edge /usr/share/doc/moodle-edge; do
    [[ ! -e $p ]] || fail "$p is still there after purge"
done
getent passwd moodle-edge >/dev/null && fail "the moodle-edge user is still there after purge"
getent group moodle-edge >/dev/null && fail "the moodle-edge group is still there after purge"

# ---- the README's manual steps ------------------------------------------------------------
# The lines between the markers in the README, as written, with the binary built above in
# place of `cargo build --release` (same code, quicker profile).
say "README manual install steps"
steps=$(sed -n '/<!-- manual-install:begin -->/,/<!-- manual-install:end -->/p' README.md |
    sed -n 's/^    //p' | grep -v '^cargo build')
[[ -n $steps ]] || fail "no manual install steps found between the README's markers"
steps=${steps//target\/release\/moodle-edge/$bin_built}
while IFS= read -r line; do
    [[ -z $line || $line == \#* ]] && continue
    say "  \$ $line"
    if ! out=$(bash -c "$line" 2>&1); then
        fail "README step failed: $line: $out"
    fi
done <<<"$steps"
expect_stat /etc/moodle-edge root:moodle-edge 750
expect_stat /etc/moodle-edge/config.yaml root:moodle-edge 640
check_as_service_user /usr/local/bin/moodle-edge
verify_units /etc/systemd/system/moodle-edge.service /etc/systemd/system/moodle-edge.socket

cleanup
trap - EXIT
for p in "${manual_paths[@]}"; do
    [[ ! -e $p ]] || fail "$p is still there after cleaning up"
done
if getent passwd moodle-edge >/dev/null; then fail "the moodle-edge user is still there"; fi

if [[ $failures -gt 0 ]]; then
    say "$failures check(s) failed"
    exit 1
fi
say "all checks passed; the machine is as it was"
