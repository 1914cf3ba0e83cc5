-- Members, their addresses and e-mail verification tokens (see the MySQL migration of the
-- same name for the why). Personal data is AES-256-GCM ciphertext; *_bidx are blind indexes.
CREATE TABLE members (
    id            TEXT    NOT NULL PRIMARY KEY,
    login_id      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    name_enc      TEXT    NOT NULL,
    email_enc     TEXT    NOT NULL,
    email_bidx    TEXT    NOT NULL UNIQUE,
    phone_enc     TEXT    NULL,
    phone_bidx    TEXT    NULL UNIQUE,
    address_count INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL
);

CREATE TABLE addresses (
    id              TEXT    NOT NULL PRIMARY KEY,
    member_id       TEXT    NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    line1_enc       TEXT    NOT NULL,
    line2_enc       TEXT    NOT NULL,
    postal_code_enc TEXT    NULL,
    is_default      BOOLEAN NOT NULL,
    created_at      TEXT    NOT NULL
);
CREATE INDEX addresses_member ON addresses (member_id, created_at);

CREATE TABLE verification_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    member_id  TEXT NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    expires_at TEXT NOT NULL,
    used_at    TEXT NULL
);
CREATE INDEX verification_tokens_member ON verification_tokens (member_id);
