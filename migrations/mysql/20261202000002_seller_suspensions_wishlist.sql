-- Sellers an admin suspended: their commands are refused while a row is here.
CREATE TABLE seller_suspensions (
    member_id CHAR(36) NOT NULL PRIMARY KEY,
    suspended_by CHAR(36) NOT NULL,
    suspended_at DATETIME(6) NOT NULL,
    reason VARCHAR(2000) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Each member's wishlist: one row per product, no duplicates.
CREATE TABLE wishlist (
    member_id CHAR(36) NOT NULL,
    product_id CHAR(36) NOT NULL,
    added_at DATETIME(6) NOT NULL,
    PRIMARY KEY (member_id, product_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
