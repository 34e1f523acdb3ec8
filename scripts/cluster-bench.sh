#!/usr/bin/env bash
# The `consult` load preset on a cluster of three nodes on this machine
# (processes on 127.0.0.1 sharing the local Redis and PostgreSQL), each
# room's clinician and patient opening their WebSockets on different nodes;
# then the same preset on one node, for comparison. BENCHMARKS.md,
# "Cluster". Extra arguments go to both load runs (e.g. --rooms 10).
#
#   scripts/cluster-bench.sh [--duration 20]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p teleconsult-signaling -p teleconsult-loadtest
bin=target/release/teleconsult
admin="${TELECONSULT_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"
name="tc_bench_cluster_$$"
psql "$admin" -q -c "CREATE DATABASE $name"
db="${admin%/*}/$name"
secret="cluster-bench-$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
prefix="tc-bench-$$"
email=load@teleconsult.test
password="load test password"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$admin" -q -c "DROP DATABASE IF EXISTS $name" >/dev/null 2>&1 || true
  redis-cli --scan --pattern "$prefix*" | xargs -r redis-cli del >/dev/null
}
trap cleanup EXIT

printf '%s\n' "$password" | "$bin" admin create-clinician --db "$db" --email "$email" --name "Dr Load" --specialty oncologist >/dev/null
nodes=()
for i in 0 1 2; do
  port=$((18180 + i))
  TELECONSULT_LOG=warn "$bin" serve --db "$db" --redis redis://127.0.0.1:6379 --redis-prefix "$prefix" \
    --node-id "n$i" --http-addr "127.0.0.1:$port" --media-port $((51000 + 10 * i)) --media-ips 127.0.0.1 \
    --max-participants 20 --ws-max-per-address 1000 --token-secret "$secret" &
  pids+=($!)
  nodes+=("127.0.0.1:$port")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
done
sleep 2
list=$(IFS=,; echo "${nodes[*]}")
echo "== consult preset on three nodes ($list)"
target/release/teleconsult-loadtest run --preset consult --target "${nodes[0]}" --nodes "$list" \
  --email "$email" --password "$password" "$@" || true
for pid in "${pids[@]}"; do kill "$pid"; done
wait 2>/dev/null || true
pids=()

echo "== consult preset on one node"
target/release/teleconsult-loadtest run --preset consult "$@" || true
