-- The sandbox payment gateway's ledger: one charge per order (declines recorded too, so a
-- retry is answered the same), refunds once per refund id and never beyond the charge.
CREATE TABLE sandbox_charges (
    order_id   CHAR(36)    NOT NULL PRIMARY KEY,
    amount     BIGINT      NOT NULL,
    token      VARCHAR(32) NOT NULL,
    status     VARCHAR(16) NOT NULL,
    reference  VARCHAR(64) NOT NULL,
    refunded   BIGINT      NOT NULL DEFAULT 0,
    settled    BOOLEAN     NOT NULL DEFAULT FALSE,
    created_at DATETIME(6) NOT NULL,
    CHECK (refunded >= 0 AND refunded <= amount)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE sandbox_refunds (
    refund_id  CHAR(36)    NOT NULL PRIMARY KEY,
    order_id   CHAR(36)    NOT NULL,
    amount     BIGINT      NOT NULL,
    created_at DATETIME(6) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
