-- Members, their addresses and e-mail verification tokens: plain tables, not event streams, so
-- personal data stays erasable. Personal data (name, e-mail, phone, address lines) is stored
-- only as AES-256-GCM ciphertext `{key_id}:{base64}`; e-mail and phone are unique and looked up
-- through an HMAC blind index (`*_bidx`). Blind indexes and token hashes are lower-case hex, so
-- the case-insensitive collation cannot merge two of them (sqlx reads `_bin` columns as bytes).
CREATE TABLE members (
    id            CHAR(36)     NOT NULL PRIMARY KEY,
    login_id      VARCHAR(25)  NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    role          VARCHAR(16)  NOT NULL,
    name_enc      TEXT         NOT NULL,
    email_enc     TEXT         NOT NULL,
    email_bidx    CHAR(64)     NOT NULL,
    phone_enc     TEXT         NULL,
    phone_bidx    CHAR(64)     NULL,
    -- Kept by the same statements that add and delete addresses: the limit of 5 is one
    -- conditional UPDATE of this row, which is race-free.
    address_count INT          NOT NULL DEFAULT 0,
    created_at    DATETIME(6)  NOT NULL,
    updated_at    DATETIME(6)  NOT NULL,
    UNIQUE KEY members_login_id (login_id),
    UNIQUE KEY members_email_bidx (email_bidx),
    UNIQUE KEY members_phone_bidx (phone_bidx)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE addresses (
    id              CHAR(36)    NOT NULL PRIMARY KEY,
    member_id       CHAR(36)    NOT NULL,
    line1_enc       TEXT        NOT NULL,
    line2_enc       TEXT        NOT NULL,
    postal_code_enc TEXT        NULL,
    is_default      BOOLEAN     NOT NULL,
    created_at      DATETIME(6) NOT NULL,
    KEY addresses_member (member_id, created_at),
    CONSTRAINT addresses_member_fk FOREIGN KEY (member_id) REFERENCES members (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Only the SHA-256 of a token is stored: a database read cannot replay a link.
CREATE TABLE verification_tokens (
    token_hash CHAR(64)    NOT NULL PRIMARY KEY,
    member_id  CHAR(36)    NOT NULL,
    expires_at DATETIME(6) NOT NULL,
    used_at    DATETIME(6) NULL,
    KEY verification_tokens_member (member_id),
    CONSTRAINT verification_tokens_member_fk FOREIGN KEY (member_id) REFERENCES members (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
