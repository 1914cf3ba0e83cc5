-- Product categories: a plain table (not event-sourced). `name_key` is the name normalised
-- (NFKC, case-folded), unique, so "Shoes" and "ｓｈｏｅｓ" are one category. Who created and
-- who archived a category is kept with it.
CREATE TABLE categories (
    id          CHAR(36)     NOT NULL PRIMARY KEY,
    name        VARCHAR(200) NOT NULL,
    name_key    VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL UNIQUE,
    created_by  CHAR(36)     NOT NULL,
    created_at  DATETIME(6)  NOT NULL,
    archived_by CHAR(36),
    archived_at DATETIME(6)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
