#!/usr/bin/env bash
# Runs `openrun drill` against a fresh shop on this machine: starts `openrun serve` (release
# build) with the drill's server settings on MariaDB + Redis or on the embedded default,
# creates its admin, runs the scenario given, and stops the shop.
#
#   cargo build --release
#   bash scripts/drill.sh mariadb burst                       # 5,000 buyers, 4 products
#   bash scripts/drill.sh mariadb burst --stock 100
#   bash scripts/drill.sh mariadb rate --rps 2000 --find-max --duration 10s
#   bash scripts/drill.sh sqlite saturate --duration 30s
#
# Any further arguments go to the drill. OPENRUN_DRILL_DIR keeps the shop's files and the
# drill's output (default: a directory under /tmp, kept for the report and chart; its
# buyers.json lets a later run against the same database sign the buyers in without a hash).
set -euo pipefail

backend=${1:?usage: drill.sh mariadb|sqlite scenario [drill arguments...]}
shift
here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
binary=${OPENRUN_BIN:-$target/release/openrun}
dir=${OPENRUN_DRILL_DIR:-/tmp/openrun-drill-$backend}
mkdir -p "$dir"

# 5,000 buyers hold 5,000 connections on each side of loopback.
ulimit -n "$(ulimit -Hn)"

export OPENRUN_KEYS_FILE=$dir/keys.toml
export MAIL_OUTBOX_DIR=$dir/outbox
export RUST_LOG=${RUST_LOG:-warn}
# The drill's buyers all come from one address and sign in within a minute.
export SIGNUPS_PER_ADDRESS_PER_HOUR=1000000
export LOGIN_PER_ADDRESS_PER_MINUTE=1000000
export ORDERS_PER_ADDRESS_PER_MINUTE=100000000
export ORDERS_PER_MEMBER_PER_MINUTE=100000
export HTTP_MAX_CONCURRENT_REQUESTS=20000
case $backend in
mariadb)
    database=${OPENRUN_DRILL_DATABASE:-openrun_drill}
    mysql -uroot -e "CREATE DATABASE IF NOT EXISTS $database"
    export DATABASE_URL=mysql://root@127.0.0.1:3306/$database
    export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
    export REDIS_KEY_PREFIX="drill-$database:"
    ;;
sqlite)
    export DATABASE_URL=sqlite://$dir/openrun.db
    unset REDIS_URL
    ;;
*)
    echo "backend: mariadb or sqlite" >&2
    exit 2
    ;;
esac

port=${OPENRUN_DRILL_PORT:-18080}
export LISTEN_ADDR=127.0.0.1:$port
export OPENRUN_ADMIN_PASSWORD=${OPENRUN_ADMIN_PASSWORD:-drill admin password}
"$binary" migrate
"$binary" admin create --login-id drilladmin --email drilladmin@example.com 2>/dev/null || true

"$binary" serve >"$dir/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    curl -fsS "http://$LISTEN_ADDR/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done

status=0
"$binary" drill --url "http://$LISTEN_ADDR" --admin drilladmin --out "$dir/out" \
    --server-pid "$server" --audit "$@" || status=$?
# The shop's own view of the run (step latencies, batch sizes), beside the drill's report.
curl -fsS "http://$LISTEN_ADDR/metrics" >"$dir/out/metrics.txt" || true
exit $status
