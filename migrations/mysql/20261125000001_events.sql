-- The event log: one row per event, totally ordered by global_position.
-- global_position is assigned by the writer while it holds the event_head row lock, so positions
-- are contiguous and commit in position order (see src/eventstore/mysql.rs).
CREATE TABLE events (
    global_position BIGINT UNSIGNED NOT NULL,
    stream_type     VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    stream_id       VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    version         BIGINT UNSIGNED NOT NULL,
    event_type      VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    event_version   VARCHAR(16)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    payload         LONGTEXT     CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    metadata        TEXT         CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    recorded_at     DATETIME(6)  NOT NULL,
    PRIMARY KEY (global_position),
    UNIQUE KEY events_stream_version (stream_type, stream_id, version)
) ENGINE = InnoDB;

-- A single row holding the last assigned global position. Every append transaction locks it
-- first, which serialises commits in position order across all service processes.
CREATE TABLE event_head (
    id       TINYINT UNSIGNED NOT NULL PRIMARY KEY,
    position BIGINT UNSIGNED  NOT NULL
) ENGINE = InnoDB;

INSERT INTO event_head (id, position) VALUES (1, 0);
