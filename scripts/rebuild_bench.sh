#!/usr/bin/env bash
# Measures `openrun projections rebuild streams` on 100,000 events in 25,000 streams, on
# MariaDB (127.0.0.1:3306, root) and on SQLite, with the release build. The log is written
# straight into fresh databases (the rebuild only reads it), which are dropped afterwards.
#   bash scripts/rebuild_bench.sh [events]
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-100000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/openrun-target}"
cargo build --release --quiet --bin openrun
BIN="$CARGO_TARGET_DIR/release/openrun"
export RUST_LOG=warn

DB="openrun_rebuild_bench_$$"
mysql --protocol=tcp -h127.0.0.1 -uroot -e "CREATE DATABASE $DB"
trap 'mysql --protocol=tcp -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS $DB"; rm -rf "$TMP"' EXIT
TMP=$(mktemp -d)
MYSQL_URL="mysql://root@127.0.0.1:3306/$DB"
DATABASE_URL="$MYSQL_URL" "$BIN" migrate >/dev/null
mysql --protocol=tcp -h127.0.0.1 -uroot "$DB" -e "
  INSERT INTO events (global_position, stream_type, stream_id, version, event_type, event_version,
                      payload, metadata, recorded_at)
  SELECT seq, 'order', CONCAT('s', (seq - 1) DIV 4), (seq - 1) MOD 4 + 1, 'Happened', '1.0',
         CONCAT('{\"n\":', seq, '}'), '{\"actor\":\"bench\"}', NOW(6)
  FROM seq_1_to_$EVENTS;
  UPDATE event_head SET position = $EVENTS WHERE id = 1;"
DATABASE_URL="$MYSQL_URL" "$BIN" projections rebuild streams 2>/dev/null | tail -1

SQLITE_URL="sqlite://$TMP/openrun.db"
DATABASE_URL="$SQLITE_URL" "$BIN" migrate >/dev/null
python3 - "$TMP/openrun.db" "$EVENTS" <<'PY'
import sqlite3, sys
db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
c.executemany(
    "INSERT INTO events (global_position, stream_type, stream_id, version, event_type, "
    "event_version, payload, metadata, recorded_at) VALUES (?, 'order', ?, ?, 'Happened', '1.0', ?, "
    "'{\"actor\":\"bench\"}', '2026-11-25T12:00:00.000000+00:00')",
    ((p, f"s{(p - 1) // 4}", (p - 1) % 4 + 1, f'{{"n":{p}}}') for p in range(1, n + 1)))
c.commit()
PY
DATABASE_URL="$SQLITE_URL" "$BIN" projections rebuild streams 2>/dev/null | tail -1
