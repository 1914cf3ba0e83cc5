-- Carts of the embedded deployment (with Redis they live in Redis): a cart per member with
-- the instant of its last change (it expires 14 days after it), and its lines.
CREATE TABLE carts (
    member_id TEXT NOT NULL PRIMARY KEY,
    updated_at BIGINT NOT NULL
);
CREATE TABLE cart_items (
    member_id TEXT NOT NULL,
    variant_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    -- When the line was first put (ms): the cart lists its lines in that order.
    seq BIGINT NOT NULL,
    PRIMARY KEY (member_id, variant_id)
);
