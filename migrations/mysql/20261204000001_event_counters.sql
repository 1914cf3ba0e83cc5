-- Guarded counters: named integers that appends move in their own transaction, under the
-- event_head lock, and that an append may require to stay at or above a floor (the order path
-- keeps the units sold of a variant within its supply this way). Written only by the event
-- store's writers; `openrun audit` checks them against the log.
CREATE TABLE event_counters (
    name  VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    value BIGINT NOT NULL
) ENGINE = InnoDB;
