-- The sandbox payment gateway's ledger: one charge per order (declines recorded too, so a
-- retry is answered the same), refunds once per refund id and never beyond the charge.
CREATE TABLE sandbox_charges (
    order_id   TEXT    NOT NULL PRIMARY KEY,
    amount     INTEGER NOT NULL,
    token      TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    reference  TEXT    NOT NULL,
    refunded   INTEGER NOT NULL DEFAULT 0,
    settled    INTEGER NOT NULL DEFAULT 0,
    created_at TEXT    NOT NULL,
    CHECK (refunded >= 0 AND refunded <= amount)
);

CREATE TABLE sandbox_refunds (
    refund_id  TEXT    NOT NULL PRIMARY KEY,
    order_id   TEXT    NOT NULL,
    amount     INTEGER NOT NULL,
    created_at TEXT    NOT NULL
);
