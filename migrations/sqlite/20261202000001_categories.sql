-- Product categories: a plain table (not event-sourced). `name_key` is the name normalised
-- (NFKC, case-folded), unique, so "Shoes" and "ｓｈｏｅｓ" are one category. Who created and
-- who archived a category is kept with it.
CREATE TABLE categories (
    id          TEXT NOT NULL PRIMARY KEY,
    name        TEXT NOT NULL,
    name_key    TEXT NOT NULL UNIQUE,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    archived_by TEXT,
    archived_at TEXT
);
