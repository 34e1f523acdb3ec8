#!/usr/bin/env bash
# Runs every test of the workspace, installing what the tests need first:
# Debian's Chromium (browser tests), Debian's prometheus (for promtool, which
# checks deploy/observability), Redis and PostgreSQL (started if they are
# installed but not running), cargo-nextest, and the npm packages of
# web-client/. Works from a fresh clone; run as root (or with rights to
# apt-get) on Debian.
set -uo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

install_debian_packages() {
  local missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
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
  fi
}

install_debian_packages
start_services
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

status=0

log "formatting and lints"
cargo fmt --all --check || status=1
cargo clippy --workspace --all-targets --locked -- -D warnings || status=1

log "Rust tests (cargo nextest)"
# One debug build serves the Rust tests and the browser tests' server.
cargo build --workspace --bins --locked || exit 1
cargo nextest run --workspace --locked --no-fail-fast || status=1

log "browser tests (Playwright + Chromium)"
(cd web-client && npm ci --no-audit --no-fund --loglevel=error && npm test) || status=1

exit $status
