-- Which process runs each projection (and the scheduler): a lease renewed by its holder and
-- taken over by another process once it has expired.
CREATE TABLE projection_leases (
    name       VARCHAR(64) NOT NULL PRIMARY KEY,
    owner      VARCHAR(64) NOT NULL,
    expires_at DATETIME(6) NOT NULL
) ENGINE = InnoDB;
