//! Shipping addresses: at most [`crate::members::MAX_ADDRESSES`], one of them the default.

use super::*;

/// An address id in its one spelling (lower-case, hyphenated), so that the database (whose
/// comparison ignores case and trailing spaces) and the mirror (which compares bytes) name
/// the same address; anything that is not a UUID is no address.
fn canonical(id: &str) -> Result<String, MemberError> {
    uuid::Uuid::try_parse(id)
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| MemberError::NotFound)
}

impl Members {
    pub(super) fn address_row(
        &self,
        member_id: &str,
        id: String,
        input: &AddressInput,
        is_default: bool,
        prefix: &str,
        errors: &mut Vec<FieldError>,
    ) -> Option<AddressRow> {
        let line1 = collect(
            errors,
            &format!("{prefix}line1"),
            validation::address_line(&input.line1, true),
        );
        let line2 = collect(
            errors,
            &format!("{prefix}line2"),
            validation::address_line(&input.line2, false),
        );
        let postal = match &input.postal_code {
            Some(p) => collect(
                errors,
                &format!("{prefix}postal_code"),
                validation::postal_code(p),
            )
            .map(Some),
            None => Some(None),
        };
        Some(AddressRow {
            id,
            member_id: member_id.into(),
            line1_enc: self.keys.encrypt(LINE1, &line1?),
            line2_enc: self.keys.encrypt(LINE2, &line2?),
            postal_code_enc: postal?.map(|p| self.keys.encrypt(POSTAL, &p)),
            is_default,
            created_at: self.clock.now(),
        })
    }

    pub(super) fn address(&self, row: AddressRow) -> Result<Address, MemberError> {
        Ok(Address {
            line1: self.decrypt(LINE1, &row.line1_enc)?,
            line2: self.decrypt(LINE2, &row.line2_enc)?,
            postal_code: row
                .postal_code_enc
                .as_deref()
                .map(|p| self.decrypt(POSTAL, p))
                .transpose()?,
            id: row.id,
            is_default: row.is_default,
            created_at: row.created_at,
        })
    }

    /// The member's addresses.
    pub async fn addresses(&self, member_id: &str) -> Result<Vec<Address>, MemberError> {
        repository::addresses(&self.db, member_id)
            .await?
            .into_iter()
            .map(|r| self.address(r))
            .collect()
    }

    /// One of the member's addresses.
    pub async fn get_address(&self, member_id: &str, id: &str) -> Result<Address, MemberError> {
        let id = &canonical(id)?;
        match repository::address(&self.db, member_id, id).await? {
            Some(row) => self.address(row),
            None => Err(self.not_theirs(id).await),
        }
    }

    /// One of the member's addresses sealed for an order's history: its lines as JSON,
    /// encrypted under the current data key (the order keeps it whatever the member changes
    /// later, and a dump of the log shows none of it). From the address mirror when it holds
    /// a current copy, so that the order path reads no database; else from the database,
    /// and the copy is offered to the mirror.
    pub async fn sealed_address(&self, member_id: &str, id: &str) -> Result<String, MemberError> {
        let id = &canonical(id)?;
        let current = format!("{}:", self.keys.current_key_id());
        let ticket = match self.mirror.get(member_id, id).await {
            Ok(Mirrored::Sealed { sealed, .. }) if sealed.starts_with(&current) => {
                return Ok(sealed);
            }
            Ok(Mirrored::Sealed { ticket, .. } | Mirrored::Missing { ticket }) => Some(ticket),
            Ok(Mirrored::Changing) => None,
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "the address mirror could not be read"
                );
                None
            }
        };
        let address = self.get_address(member_id, id).await?;
        let snapshot = serde_json::json!({
            "line1": address.line1,
            "line2": address.line2,
            "postal_code": address.postal_code,
        });
        let sealed = self.keys.encrypt(ORDER_ADDRESS, &snapshot.to_string());
        if let Some(ticket) = ticket
            && let Err(e) = self.mirror.fill(member_id, id, ticket, &sealed).await
        {
            tracing::warn!(
                error = format!("{e:#}"),
                "the address mirror could not be filled"
            );
        }
        Ok(sealed)
    }

    /// Runs `change` of the member's existing address `id` between the mirror's brackets, so
    /// that no order is sealed with the address as it was before.
    async fn changing<T>(
        &self,
        member_id: &str,
        id: &str,
        change: impl std::future::Future<Output = Result<T, MemberError>>,
    ) -> Result<T, MemberError> {
        self.mirror
            .begin_change(member_id, id)
            .await
            .map_err(MemberError::Unavailable)?;
        let result = change.await;
        // A database error may hide a commit still under way: then the entry stays pending,
        // and orders read this address from the database until it expires.
        if result.is_ok()
            && let Err(e) = self.mirror.end_change(member_id, id).await
        {
            tracing::warn!(
                error = format!("{e:#}"),
                "an address change was left pending in the mirror; orders read the address from the database until it expires"
            );
        }
        result
    }

    /// Why the member has no address `id`: it belongs to someone else (403) or does not
    /// exist (404).
    pub(super) async fn not_theirs(&self, id: &str) -> MemberError {
        match repository::address_exists(&self.db, id).await {
            Ok(true) => MemberError::Forbidden,
            Ok(false) => MemberError::NotFound,
            Err(e) => e.into(),
        }
    }

    /// Adds an address, at most [`super::MAX_ADDRESSES`].
    pub async fn add_address(
        &self,
        member_id: &str,
        input: AddressInput,
    ) -> Result<Address, MemberError> {
        let mut errors = Vec::new();
        let is_default = input.is_default.unwrap_or(false);
        let id = uuid::Uuid::now_v7().to_string();
        let Some(mut row) = self.address_row(member_id, id, &input, is_default, "", &mut errors)
        else {
            return Err(MemberError::Invalid(errors));
        };
        if !repository::add_address(&self.db, &mut row).await? {
            return Err(MemberError::AddressLimit);
        }
        self.address(row)
    }

    /// Replaces one of the member's addresses.
    pub async fn update_address(
        &self,
        member_id: &str,
        id: &str,
        input: AddressInput,
    ) -> Result<Address, MemberError> {
        let id = &canonical(id)?;
        let mut errors = Vec::new();
        let Some(current) = repository::address(&self.db, member_id, id).await? else {
            return Err(self.not_theirs(id).await);
        };
        let is_default = input.is_default.unwrap_or(current.is_default);
        let Some(mut row) =
            self.address_row(member_id, id.into(), &input, is_default, "", &mut errors)
        else {
            return Err(MemberError::Invalid(errors));
        };
        row.created_at = current.created_at;
        let updated = self
            .changing(member_id, id, async {
                Ok(repository::update_address(&self.db, &mut row).await?)
            })
            .await?;
        if !updated {
            return Err(self.not_theirs(id).await);
        }
        self.address(row)
    }

    /// Deletes one of the member's addresses.
    pub async fn delete_address(&self, member_id: &str, id: &str) -> Result<(), MemberError> {
        let id = &canonical(id)?;
        let deleted = self
            .changing(member_id, id, async {
                Ok(repository::delete_address(&self.db, member_id, id).await?)
            })
            .await?;
        if deleted {
            Ok(())
        } else {
            Err(self.not_theirs(id).await)
        }
    }
}

/// A shipping address as an order sealed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AddressSnapshot {
    /// The first line.
    pub line1: String,
    /// The second line.
    pub line2: String,
    /// The postal code, if one was given.
    pub postal_code: Option<String>,
}

impl Members {
    /// Opens an address an order sealed ([`Members::sealed_address`]), under whichever data
    /// key sealed it.
    pub fn open_address(&self, sealed: &str) -> Result<AddressSnapshot, MemberError> {
        let json = self.decrypt(ORDER_ADDRESS, sealed)?;
        Ok(serde_json::from_str(&json).context("a sealed address")?)
    }
}
