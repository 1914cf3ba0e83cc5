//! Shipping addresses: at most [`crate::members::MAX_ADDRESSES`], one of them the default.

use super::*;

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
        match repository::address(&self.db, member_id, id).await? {
            Some(row) => self.address(row),
            None => Err(self.not_theirs(id).await),
        }
    }

    /// One of the member's addresses sealed for an order's history: its lines as JSON,
    /// encrypted under the current data key (the order keeps it whatever the member changes
    /// later, and a dump of the log shows none of it).
    pub async fn sealed_address(&self, member_id: &str, id: &str) -> Result<String, MemberError> {
        let address = self.get_address(member_id, id).await?;
        let snapshot = serde_json::json!({
            "line1": address.line1,
            "line2": address.line2,
            "postal_code": address.postal_code,
        });
        Ok(self.keys.encrypt(ORDER_ADDRESS, &snapshot.to_string()))
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
        if !repository::update_address(&self.db, &mut row).await? {
            return Err(self.not_theirs(id).await);
        }
        self.address(row)
    }

    /// Deletes one of the member's addresses.
    pub async fn delete_address(&self, member_id: &str, id: &str) -> Result<(), MemberError> {
        if repository::delete_address(&self.db, member_id, id).await? {
            Ok(())
        } else {
            Err(self.not_theirs(id).await)
        }
    }
}
