//! The member, address and verification-token tables on both backends. The SQL is the same
//! text for MySQL / MariaDB and SQLite; [`with_pool!`] runs it on whichever pool is configured.
//! Values arrive here already encrypted: nothing in this module sees plaintext personal data.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use crate::db::{Database, with_pool};

/// Runs `$body` with `$pool` bound to the configured pool (each arm is type-checked apart).
/// A stored member (personal data encrypted).
#[derive(Debug, Clone, FromRow)]
pub struct MemberRow {
    /// UUIDv7 as text.
    pub id: String,
    /// Lower-case login id.
    pub login_id: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// The role's name.
    pub role: String,
    /// Encrypted name.
    pub name_enc: String,
    /// Encrypted e-mail.
    pub email_enc: String,
    /// Blind index of the e-mail.
    pub email_bidx: String,
    /// Encrypted phone, if any.
    pub phone_enc: Option<String>,
    /// Blind index of the phone, if any.
    pub phone_bidx: Option<String>,
    /// Sign-up time.
    pub created_at: DateTime<Utc>,
}

/// A stored address (lines encrypted).
#[derive(Debug, Clone, FromRow)]
pub struct AddressRow {
    /// UUIDv7 as text.
    pub id: String,
    /// Its member.
    pub member_id: String,
    /// Encrypted first line.
    pub line1_enc: String,
    /// Encrypted second line.
    pub line2_enc: String,
    /// Encrypted postal code, if any.
    pub postal_code_enc: Option<String>,
    /// The default shipping address.
    pub is_default: bool,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

/// Which unique field a write collided with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unique {
    /// `login_id`.
    LoginId,
    /// `email`.
    Email,
    /// `phone`.
    Phone,
}

/// A write failed on a unique key, or otherwise.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A unique key refused the row.
    #[error("duplicate {0:?}")]
    Duplicate(Unique),
    /// Anything else.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn classify(e: sqlx::Error) -> WriteError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        let message = db.message();
        for (needle, field) in [
            ("login_id", Unique::LoginId),
            ("email_bidx", Unique::Email),
            ("phone_bidx", Unique::Phone),
        ] {
            if message.contains(needle) {
                return WriteError::Duplicate(field);
            }
        }
    }
    WriteError::Db(e)
}

/// What presenting a verification token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenUse {
    /// The token was good: it is now used and the member id is returned.
    Verified(String),
    /// Already used.
    Used,
    /// Past its expiry.
    Expired,
    /// No such token.
    Unknown,
}

const MEMBER_COLUMNS: &str = "id, login_id, password_hash, role, name_enc, email_enc, \
     email_bidx, phone_enc, phone_bidx, created_at";
const ADDRESS_COLUMNS: &str =
    "id, member_id, line1_enc, line2_enc, postal_code_enc, is_default, created_at";

/// Which of login id, e-mail and phone are taken already.
pub async fn taken(
    db: &Database,
    login_id: &str,
    email_bidx: &str,
    phone_bidx: &str,
) -> Result<Vec<Unique>, sqlx::Error> {
    let sql = "SELECT login_id, email_bidx, phone_bidx FROM members \
               WHERE login_id = ? OR email_bidx = ? OR phone_bidx = ?";
    let rows: Vec<(String, String, Option<String>)> = with_pool!(db, pool => {
        sqlx::query_as(sql).bind(login_id).bind(email_bidx).bind(phone_bidx).fetch_all(pool).await
    })?;
    let mut taken = Vec::new();
    if rows.iter().any(|r| r.0 == login_id) {
        taken.push(Unique::LoginId);
    }
    if rows.iter().any(|r| r.1 == email_bidx) {
        taken.push(Unique::Email);
    }
    if rows.iter().any(|r| r.2.as_deref() == Some(phone_bidx)) {
        taken.push(Unique::Phone);
    }
    Ok(taken)
}

/// Inserts a member and, if given, its first address, in one transaction.
pub async fn insert_member(
    db: &Database,
    member: &MemberRow,
    address: Option<&AddressRow>,
) -> Result<(), WriteError> {
    let insert_member = "INSERT INTO members (id, login_id, password_hash, role, name_enc, \
        email_enc, email_bidx, phone_enc, phone_bidx, address_count, created_at, updated_at) \
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let count = i32::from(address.is_some());
    with_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query(insert_member)
            .bind(&member.id).bind(&member.login_id).bind(&member.password_hash)
            .bind(&member.role).bind(&member.name_enc).bind(&member.email_enc)
            .bind(&member.email_bidx).bind(&member.phone_enc).bind(&member.phone_bidx)
            .bind(count).bind(member.created_at).bind(member.created_at)
            .execute(&mut *tx).await.map_err(classify)?;
        if let Some(a) = address {
            insert_address_row(a).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    })
}

fn insert_address_row<'q, DB: sqlx::Database>(
    a: &'q AddressRow,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    &'q String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    &'q Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    DateTime<Utc>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query(
        "INSERT INTO addresses (id, member_id, line1_enc, line2_enc, postal_code_enc, \
         is_default, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&a.id)
    .bind(&a.member_id)
    .bind(&a.line1_enc)
    .bind(&a.line2_enc)
    .bind(&a.postal_code_enc)
    .bind(a.is_default)
    .bind(a.created_at)
}

/// The member with this id.
pub async fn member_by_id(db: &Database, id: &str) -> Result<Option<MemberRow>, sqlx::Error> {
    let sql = format!("SELECT {MEMBER_COLUMNS} FROM members WHERE id = ?");
    with_pool!(db, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)
}

/// The member with this (lower-case) login id.
pub async fn member_by_login_id(
    db: &Database,
    login_id: &str,
) -> Result<Option<MemberRow>, sqlx::Error> {
    let sql = format!("SELECT {MEMBER_COLUMNS} FROM members WHERE login_id = ?");
    with_pool!(db, pool => sqlx::query_as(&sql).bind(login_id).fetch_optional(pool).await)
}

/// Every member, for re-encryption.
pub async fn all_members(db: &Database) -> Result<Vec<MemberRow>, sqlx::Error> {
    let sql = format!("SELECT {MEMBER_COLUMNS} FROM members ORDER BY id");
    with_pool!(db, pool => sqlx::query_as(&sql).fetch_all(pool).await)
}

/// Replaces the encrypted name and/or phone (with its blind index).
pub async fn update_profile(
    db: &Database,
    id: &str,
    name_enc: Option<&str>,
    phone: Option<(&str, &str)>,
    now: DateTime<Utc>,
) -> Result<bool, WriteError> {
    let sql = "UPDATE members SET name_enc = COALESCE(?, name_enc), \
        phone_enc = COALESCE(?, phone_enc), phone_bidx = COALESCE(?, phone_bidx), \
        updated_at = ? WHERE id = ?";
    let (phone_enc, phone_bidx) = phone.unzip();
    let done = with_pool!(db, pool => {
        sqlx::query(sql).bind(name_enc).bind(phone_enc).bind(phone_bidx).bind(now).bind(id)
            .execute(pool).await.map(|r| r.rows_affected() == 1)
    });
    done.map_err(classify)
}

/// Re-encrypted personal data of one member (same plaintext, current key).
pub async fn rewrite_member_ciphertexts(
    db: &Database,
    member: &MemberRow,
) -> Result<(), sqlx::Error> {
    let sql = "UPDATE members SET name_enc = ?, email_enc = ?, phone_enc = ? WHERE id = ?";
    with_pool!(db, pool => {
        sqlx::query(sql).bind(&member.name_enc).bind(&member.email_enc)
            .bind(&member.phone_enc).bind(&member.id).execute(pool).await.map(drop)
    })
}

/// Replaces the password hash.
pub async fn update_password(
    db: &Database,
    id: &str,
    password_hash: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let sql = "UPDATE members SET password_hash = ?, updated_at = ? WHERE id = ?";
    with_pool!(db, pool => {
        sqlx::query(sql).bind(password_hash).bind(now).bind(id).execute(pool).await.map(drop)
    })
}

/// Raises the member's role to `role` when it is one of `lower`; false when there is no
/// such member or the role is not among them.
pub async fn raise_role(
    db: &Database,
    id: &str,
    role: &str,
    lower: &[&str],
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    if lower.is_empty() {
        return Ok(false);
    }
    let marks = vec!["?"; lower.len()].join(", ");
    let sql =
        format!("UPDATE members SET role = ?, updated_at = ? WHERE id = ? AND role IN ({marks})");
    with_pool!(db, pool => {
        let mut query = sqlx::query(&sql).bind(role).bind(now).bind(id);
        for l in lower {
            query = query.bind(*l);
        }
        query.execute(pool).await.map(|r| r.rows_affected() == 1)
    })
}

/// Stores the hash of a new verification token and retires the member's older unused ones
/// (they expire now), so only the newest link works.
pub async fn insert_verification_token(
    db: &Database,
    token_hash: &str,
    member_id: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let retire = "UPDATE verification_tokens SET expires_at = ? \
                  WHERE member_id = ? AND used_at IS NULL AND expires_at > ?";
    let insert =
        "INSERT INTO verification_tokens (token_hash, member_id, expires_at) VALUES (?, ?, ?)";
    with_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query(retire).bind(now).bind(member_id).bind(now).execute(&mut *tx).await?;
        sqlx::query(insert).bind(token_hash).bind(member_id).bind(expires_at)
            .execute(&mut *tx).await?;
        tx.commit().await
    })
}

/// Uses a verification token: marks it used and makes an unverified member `basic`, in one
/// transaction; the conditional UPDATE makes the token single-use under concurrency.
pub async fn use_verification_token(
    db: &Database,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<TokenUse, sqlx::Error> {
    let claim = "UPDATE verification_tokens SET used_at = ? \
                 WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?";
    let lookup =
        "SELECT member_id, expires_at, used_at FROM verification_tokens WHERE token_hash = ?";
    let promote =
        "UPDATE members SET role = 'basic', updated_at = ? WHERE id = ? AND role = 'unverified'";
    with_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        let claimed = sqlx::query(claim).bind(now).bind(token_hash).bind(now)
            .execute(&mut *tx).await?.rows_affected() == 1;
        let row: Option<(String, DateTime<Utc>, Option<DateTime<Utc>>)> =
            sqlx::query_as(lookup).bind(token_hash).fetch_optional(&mut *tx).await?;
        let outcome = match row {
            Some((member_id, _, _)) if claimed => {
                sqlx::query(promote).bind(now).bind(&member_id).execute(&mut *tx).await?;
                TokenUse::Verified(member_id)
            }
            Some((_, _, Some(_))) => TokenUse::Used,
            Some(_) => TokenUse::Expired,
            None => TokenUse::Unknown,
        };
        tx.commit().await?;
        Ok(outcome)
    })
}

/// Takes the member row's lock inside a transaction (a no-op update: a row lock on MySQL; on
/// SQLite the transaction is the single writer already), so that concurrent address changes
/// of one member run one after the other and see each other's default.
const LOCK_MEMBER: &str = "UPDATE members SET address_count = address_count WHERE id = ?";

/// Keeps "a member with addresses has a default one": inside the transaction `$tx`, when none
/// of `$member`'s addresses is the default, the oldest becomes it. Evaluates to the id it made
/// the default, if any.
macro_rules! ensure_default {
    ($tx:expr, $member:expr) => {{
        let defaults: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM addresses WHERE member_id = ? AND is_default = TRUE",
        )
        .bind($member)
        .fetch_one(&mut *$tx)
        .await?;
        let mut promoted: Option<String> = None;
        if defaults == 0 {
            promoted = sqlx::query_scalar(
                "SELECT id FROM addresses WHERE member_id = ? ORDER BY created_at, id LIMIT 1",
            )
            .bind($member)
            .fetch_optional(&mut *$tx)
            .await?;
            if let Some(id) = &promoted {
                let set = sqlx::query("UPDATE addresses SET is_default = TRUE WHERE id = ?")
                    .bind(id)
                    .execute(&mut *$tx)
                    .await?;
                if set.rows_affected() != 1 {
                    return Err(sqlx::Error::RowNotFound);
                }
            }
        }
        promoted
    }};
}

/// Adds an address unless the member has [`super::MAX_ADDRESSES`] already: the count is
/// raised by one conditional UPDATE of the member row (a row lock on MySQL, the single writer
/// on SQLite), so concurrent adds cannot pass the limit together. False when at the limit.
/// The first address becomes the default whatever it asked.
pub async fn add_address(db: &Database, address: &mut AddressRow) -> Result<bool, sqlx::Error> {
    let reserve = "UPDATE members SET address_count = address_count + 1 \
                   WHERE id = ? AND address_count < ?";
    let undefault = "UPDATE addresses SET is_default = FALSE WHERE member_id = ?";
    with_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        let reserved = sqlx::query(reserve).bind(&address.member_id).bind(super::MAX_ADDRESSES)
            .execute(&mut *tx).await?.rows_affected() == 1;
        if !reserved {
            return Ok(false);
        }
        if address.is_default {
            sqlx::query(undefault).bind(&address.member_id).execute(&mut *tx).await?;
        }
        insert_address_row(address).execute(&mut *tx).await?;
        if ensure_default!(tx, &address.member_id).is_some_and(|id| id == address.id) {
            address.is_default = true;
        }
        tx.commit().await?;
        Ok(true)
    })
}

/// The member's addresses, oldest first.
pub async fn addresses(db: &Database, member_id: &str) -> Result<Vec<AddressRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {ADDRESS_COLUMNS} FROM addresses WHERE member_id = ? ORDER BY created_at, id"
    );
    with_pool!(db, pool => sqlx::query_as(&sql).bind(member_id).fetch_all(pool).await)
}

/// Every address, for re-encryption.
pub async fn all_addresses(db: &Database) -> Result<Vec<AddressRow>, sqlx::Error> {
    let sql = format!("SELECT {ADDRESS_COLUMNS} FROM addresses ORDER BY id");
    with_pool!(db, pool => sqlx::query_as(&sql).fetch_all(pool).await)
}

/// One of the member's addresses (another member's address is not found).
pub async fn address(
    db: &Database,
    member_id: &str,
    id: &str,
) -> Result<Option<AddressRow>, sqlx::Error> {
    let sql = format!("SELECT {ADDRESS_COLUMNS} FROM addresses WHERE member_id = ? AND id = ?");
    with_pool!(db, pool => sqlx::query_as(&sql).bind(member_id).bind(id).fetch_optional(pool).await)
}

/// Whether an address `id` exists, whoever it belongs to.
pub async fn address_exists(db: &Database, id: &str) -> Result<bool, sqlx::Error> {
    let sql = "SELECT COUNT(*) FROM addresses WHERE id = ?";
    with_pool!(db, pool => {
        sqlx::query_scalar::<_, i64>(sql).bind(id).fetch_one(pool).await.map(|n| n > 0)
    })
}

/// Replaces the lines of one of the member's addresses; false when not found. Unsetting the
/// default makes the oldest address the default (the same one when it is the only one).
pub async fn update_address(db: &Database, a: &mut AddressRow) -> Result<bool, sqlx::Error> {
    let undefault = "UPDATE addresses SET is_default = FALSE WHERE member_id = ?";
    let sql = "UPDATE addresses SET line1_enc = ?, line2_enc = ?, postal_code_enc = ?, \
               is_default = ? WHERE member_id = ? AND id = ?";
    with_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query(LOCK_MEMBER).bind(&a.member_id).execute(&mut *tx).await?;
        if a.is_default {
            sqlx::query(undefault).bind(&a.member_id).execute(&mut *tx).await?;
        }
        let found = sqlx::query(sql).bind(&a.line1_enc).bind(&a.line2_enc)
            .bind(&a.postal_code_enc).bind(a.is_default).bind(&a.member_id).bind(&a.id)
            .execute(&mut *tx).await?.rows_affected() == 1;
        if found {
            if ensure_default!(tx, &a.member_id).is_some_and(|id| id == a.id) {
                a.is_default = true;
            }
            tx.commit().await?;
        }
        Ok(found)
    })
}

/// Deletes one of the member's addresses and lowers the count; false when not found. When it
/// was the default, the oldest remaining address becomes the default.
pub async fn delete_address(db: &Database, member_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let delete = "DELETE FROM addresses WHERE member_id = ? AND id = ?";
    let release = "UPDATE members SET address_count = address_count - 1 WHERE id = ?";
    with_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query(LOCK_MEMBER).bind(member_id).execute(&mut *tx).await?;
        let found = sqlx::query(delete).bind(member_id).bind(id)
            .execute(&mut *tx).await?.rows_affected() == 1;
        if found {
            sqlx::query(release).bind(member_id).execute(&mut *tx).await?;
            ensure_default!(tx, member_id);
            tx.commit().await?;
        }
        Ok(found)
    })
}

/// Re-encrypted lines of one address.
pub async fn rewrite_address_ciphertexts(db: &Database, a: &AddressRow) -> Result<(), sqlx::Error> {
    let sql = "UPDATE addresses SET line1_enc = ?, line2_enc = ?, postal_code_enc = ? WHERE id = ?";
    with_pool!(db, pool => {
        sqlx::query(sql).bind(&a.line1_enc).bind(&a.line2_enc).bind(&a.postal_code_enc)
            .bind(&a.id).execute(pool).await.map(drop)
    })
}
