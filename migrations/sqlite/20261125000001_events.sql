-- The event log: one row per event, totally ordered by global_position.
-- SQLite has one writer at a time (BEGIN IMMEDIATE), so positions commit in order.
CREATE TABLE events (
    global_position INTEGER PRIMARY KEY,
    stream_type     TEXT    NOT NULL,
    stream_id       TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    event_type      TEXT    NOT NULL,
    event_version   TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    recorded_at     TEXT    NOT NULL,
    UNIQUE (stream_type, stream_id, version)
);
