-- Sellers an admin suspended: their commands are refused while a row is here.
CREATE TABLE seller_suspensions (
    member_id TEXT NOT NULL PRIMARY KEY,
    suspended_by TEXT NOT NULL,
    suspended_at TEXT NOT NULL,
    reason TEXT NOT NULL
);

-- Each member's wishlist: one row per product, no duplicates.
CREATE TABLE wishlist (
    member_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    added_at TEXT NOT NULL,
    PRIMARY KEY (member_id, product_id)
);
