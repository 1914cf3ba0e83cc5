//! Product categories: a plain table, listed by anyone, created and archived by admins.
//!
//! Names follow the rules of every one-line name ([`crate::members::validation::name`]: trimmed,
//! 1 to [`MAX_NAME_CHARS`] characters, something visible, no control or bidirectional
//! formatting characters), and unique after normalising ([`name_key`]: NFKC, case-folded), so
//! "Shoes", "SHOES" and the full-width "Ｓｈｏｅｓ" are one category. An archived category
//! stays readable (products keep it) but takes no new products. Who created and who archived
//! a category, and when, is kept with it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use unicode_normalization::UnicodeNormalization;
use utoipa::ToSchema;

use crate::clock::SharedClock;
use crate::db::{Database, with_pool};

/// The longest category name, in characters (that of every name people type).
pub const MAX_NAME_CHARS: usize = crate::members::validation::NAME_MAX;

/// A category as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
pub struct Category {
    /// Its id.
    pub id: String,
    /// Its name, as created.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was archived; `null` while it takes products.
    pub archived_at: Option<DateTime<Utc>>,
}

/// Why a category operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum CategoryError {
    /// The name is blank, too long, or holds control or invisible characters.
    #[error("{0}")]
    InvalidName(String),
    /// Another category has this name once normalised.
    #[error("a category with this name exists")]
    Duplicate,
    /// No such category.
    #[error("category not found")]
    NotFound,
    /// Archived already.
    #[error("the category is archived already")]
    AlreadyArchived,
    /// The database failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for CategoryError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            return Self::Duplicate;
        }
        Self::Internal(e.into())
    }
}

/// The key a name is unique by: NFKC, full Unicode case folding (`ß` is `ss`), NFKC again,
/// without invisible characters, so compatibility forms, case variants and names padded
/// with zero-width characters collide.
pub fn name_key(name: &str) -> String {
    let folded = caseless::default_case_fold_str(&name.trim().nfkc().collect::<String>());
    folded.nfkc().filter(|c| !is_format(*c)).collect()
}

/// Format characters (zero-width space, soft hyphen, byte order mark...): invisible inside a
/// word, so a name padded with them is the same name.
fn is_format(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    c.general_category() == GeneralCategory::Format
}

/// The rules of every one-line name people type: trimmed, something visible, no control or
/// bidirectional formatting characters, at most [`MAX_NAME_CHARS`].
fn valid_name(name: &str) -> Result<String, CategoryError> {
    crate::members::validation::name(name)
        .map_err(|message| CategoryError::InvalidName(format!("name {message}")))
}

/// The categories service.
pub struct Categories {
    db: Database,
    clock: SharedClock,
}

impl Categories {
    /// The service over `db`, stamping changes with `clock`.
    pub fn new(db: Database, clock: SharedClock) -> Self {
        Self { db, clock }
    }

    /// Every category, oldest first; archived ones only when asked.
    pub async fn list(&self, include_archived: bool) -> Result<Vec<Category>, CategoryError> {
        let sql = if include_archived {
            "SELECT id, name, created_at, archived_at FROM categories ORDER BY created_at, id"
        } else {
            "SELECT id, name, created_at, archived_at FROM categories \
             WHERE archived_at IS NULL ORDER BY created_at, id"
        };
        Ok(with_pool!(&self.db, pool => sqlx::query_as(sql).fetch_all(pool).await)?)
    }

    /// The category `id`, archived or not.
    pub async fn get(&self, id: &str) -> Result<Category, CategoryError> {
        let sql = "SELECT id, name, created_at, archived_at FROM categories WHERE id = ?";
        with_pool!(&self.db, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)?
            .ok_or(CategoryError::NotFound)
    }

    /// Creates a category by `admin_id`.
    pub async fn create(&self, admin_id: &str, name: &str) -> Result<Category, CategoryError> {
        let name = valid_name(name)?;
        let category = Category {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.clone(),
            created_at: self.clock.now(),
            archived_at: None,
        };
        let sql = "INSERT INTO categories (id, name, name_key, created_by, created_at) \
                   VALUES (?, ?, ?, ?, ?)";
        with_pool!(&self.db, pool => sqlx::query(sql)
            .bind(&category.id)
            .bind(&name)
            .bind(name_key(&name))
            .bind(admin_id)
            .bind(category.created_at)
            .execute(pool)
            .await
            .map(drop))?;
        Ok(category)
    }

    /// Archives the category `id` by `admin_id`: it takes no new products from now on.
    pub async fn archive(&self, admin_id: &str, id: &str) -> Result<(), CategoryError> {
        let sql = "UPDATE categories SET archived_by = ?, archived_at = ? \
                   WHERE id = ? AND archived_at IS NULL";
        let done = with_pool!(&self.db, pool => sqlx::query(sql)
            .bind(admin_id)
            .bind(self.clock.now())
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        if done == 1 {
            return Ok(());
        }
        self.get(id).await?;
        Err(CategoryError::AlreadyArchived)
    }
}

impl Categories {
    /// Takes back an archive that turned out not to be allowed (the category holds
    /// products).
    pub async fn unarchive(&self, id: &str) -> Result<(), CategoryError> {
        let sql = "UPDATE categories SET archived_by = NULL, archived_at = NULL WHERE id = ?";
        with_pool!(&self.db, pool => sqlx::query(sql).bind(id).execute(pool).await.map(drop))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_collide_after_nfkc_and_case_folding() {
        assert_eq!(name_key("Shoes"), name_key(" SHOES "));
        assert_eq!(name_key("Shoes"), name_key("Ｓｈｏｅｓ"));
        assert_eq!(name_key("\u{110B}\u{116E}\u{11AB}동화"), name_key("운동화"));
        assert_ne!(name_key("Shoes"), name_key("Shoe"));
        // Full case folding, and format characters inside a word.
        assert_eq!(name_key("Straße"), name_key("STRASSE"));
        assert_eq!(name_key("Shoes"), name_key("Sho\u{200B}es"));
        assert_eq!(name_key("Shoes"), name_key("Sho\u{00AD}es"));
        assert_eq!(name_key("ﬁt"), name_key("FIT"));
        assert_ne!(
            name_key("Air Max"),
            name_key("AirMax"),
            "spaces still count"
        );
    }

    #[test]
    fn names_are_trimmed_and_checked() {
        assert_eq!(valid_name("  Bags ").unwrap(), "Bags");
        assert!(valid_name("   ").is_err());
        assert!(valid_name(&"a".repeat(51)).is_err());
        assert!(valid_name("a\u{202E}b").is_err());
        assert!(valid_name("a\nb").is_err());
        assert!(valid_name(&"가".repeat(50)).is_ok());
    }
}
