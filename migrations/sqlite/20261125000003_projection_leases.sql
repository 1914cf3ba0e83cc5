-- Which process runs each projection: a lease renewed by its holder and taken over by another
-- process once it has expired. expires_at is microseconds since the Unix epoch.
CREATE TABLE projection_leases (
    name       TEXT    NOT NULL PRIMARY KEY,
    owner      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
