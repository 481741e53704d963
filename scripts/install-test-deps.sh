#!/usr/bin/env bash
# Installs the programs the tests and load benchmarks run beside moodle-edge, on Debian 12 as
# root. Idempotent and quick to repeat: apt is only touched when a command is missing.
#
# To add a dependency, add one line to NEEDED below: "<command> <debian-package>".
set -euo pipefail

# command-that-must-exist  debian-package-that-provides-it
NEEDED=(
    "nginx        nginx"          # the reference proxy and the fake Moodle upstream (1.22 in Debian 12)
    "redis-server redis-server"   # store back end for the integration tests (7.0)
    "redis-cli    redis-tools"    # stopping / probing that redis
    "wrk          wrk"            # HTTP/1.1 load generator (bench/load.sh)
    "h2load       nghttp2-client" # HTTP/2 and TLS load generator (bench/load.sh)
    "valgrind     valgrind"       # instruction counts per request (bench/instructions.sh)
    "curl         curl"           # smoke checks in scripts
    "openssl      openssl"        # self-signed certificates for TLS tests and benches
    "taskset      util-linux"     # pinning servers and load generator to separate cores
    "ps           procps"         # process inspection in scripts
    "systemd-socket-activate systemd"  # socket activation test (inherited listeners); systemd-analyze
    "adduser      adduser"        # the Debian package's postinst (scripts/package-test.sh)
    "python3      python3"        # the HTTP/2 abuse client (tests/h2_abuse/abuse.py)
    "php          php-cli"        # MNet test peers: Moodle's openssl_seal/openssl_sign envelope work (tests/mnet_php)
    "node         nodejs"         # the OpenID providers of the SSO tests (tests/peers/oidc)
    "npm          npm"            # installs oidc-provider for them
    "php          php-cli"        # runs SimpleSAMLphp, the SAML IdP of tests/sso_saml*.rs
    "xmlsec1      xmlsec1"        # checking SAML signatures by hand (docs/sso-saml.md)
    "chromium     chromium"       # the real browser of tests/sso_browser.rs (driven by playwright-core)
)

# Packages with no command of their own (build libraries, PHP modules), checked with dpkg.
NEEDED_PACKAGES=(
    libxml2-dev libxmlsec1-dev libclang-dev pkg-config   # build deps of samael's xmlsec feature
    simplesamlphp php8.2-xml php8.2-mbstring             # the SAML IdP the SAML tests start
)

# python3's `h2` package (PyPI `h2`, Debian python3-h2) for the HTTP/2 abuse test: Debian's
# package when python3 is Debian's, else pip for whichever python3 is first on PATH.
install_h2() {
    python3 -c 'import h2, hyperframe' 2>/dev/null && return 0
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -q || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-h2 </dev/null || true
        python3 -c 'import h2, hyperframe' 2>/dev/null && return 0
    fi
    python3 -m pip install -q 'h2>=4,<5' 2>/dev/null ||
        python3 -m pip install -q --break-system-packages 'h2>=4,<5'
    python3 -c 'import h2, hyperframe' || {
        echo "install-test-deps: python3 cannot import h2 after installing it" >&2
        exit 1
    }
}

# npm packages the SSO tests run, each folder from its own lock file: tests/peers/oidc
# (oidc-provider v9, jose) and tests/peers/browser (playwright-core, which drives Debian's
# Chromium: it downloads no browser of its own).
install_npm_peers() {
    local root dir
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/peers"
    for dir in "$root/oidc:oidc-provider jose" "$root/browser:playwright-core"; do
        local path="${dir%%:*}" mods="${dir#*:}" need=0 m
        for m in $mods; do
            [[ -d "$path/node_modules/$m" ]] || need=1
        done
        if [[ $need -eq 1 ]]; then
            echo "install-test-deps: npm ci in ${path#"$root/"}"
            (cd "$path" && npm ci --no-audit --no-fund)
        fi
    done
}

missing=()
for entry in "${NEEDED[@]}"; do
    read -r cmd pkg <<<"$entry"
    if ! command -v "$cmd" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done
for pkg in "${NEEDED_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    install_h2
    install_npm_peers
    echo "install-test-deps: all test dependencies already present"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-test-deps: missing packages (${missing[*]}) and not root; install them and rerun" >&2
    exit 1
fi

# Deduplicate (several commands can come from one package).
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "install-test-deps: installing ${packages[*]}"

export DEBIAN_FRONTEND=noninteractive
# Debian starts nginx and redis-server as services on install; the tests run their own copies
# on their own 127.0.0.1 ports, so the system services are harmless but not needed.
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}" </dev/null

for entry in "${NEEDED[@]}"; do
    read -r cmd pkg <<<"$entry"
    if ! command -v "$cmd" >/dev/null 2>&1; then
        echo "install-test-deps: $cmd still missing after installing $pkg" >&2
        exit 1
    fi
done
install_h2
install_npm_peers
for pkg in "${NEEDED_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
        echo "install-test-deps: package $pkg still missing after install" >&2
        exit 1
    fi
done
echo "install-test-deps: done"
