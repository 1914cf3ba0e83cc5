-- Carts when the shop runs without Redis (with Redis they live in Redis): a cart per member
-- with the instant of its last change (it expires 14 days after it), and its lines.
CREATE TABLE carts (
    member_id VARCHAR(64) CHARACTER SET ascii NOT NULL PRIMARY KEY,
    updated_at BIGINT NOT NULL
);
CREATE TABLE cart_items (
    member_id VARCHAR(64) CHARACTER SET ascii NOT NULL,
    variant_id VARCHAR(64) CHARACTER SET ascii NOT NULL,
    product_id VARCHAR(64) CHARACTER SET ascii NOT NULL,
    quantity BIGINT NOT NULL,
    -- When the line was first put (ms): the cart lists its lines in that order.
    seq BIGINT NOT NULL,
    PRIMARY KEY (member_id, variant_id)
);
