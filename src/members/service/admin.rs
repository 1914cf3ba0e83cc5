//! Administration: roles, the first admin, re-encryption under a new key.

use super::*;

impl Members {
    /// Grants `basic` (verifies a member by hand), `seller` or `admin`; never lowers a role.
    pub async fn set_role(&self, member_id: &str, role: Role) -> Result<RoleChanged, MemberError> {
        // `basic` verifies a member by hand (support, or a drill preparing its buyers).
        if role < Role::Basic {
            return Err(MemberError::Invalid(vec![FieldError::new(
                "role",
                "must be basic, seller or admin",
            )]));
        }
        // Only ever raised: a grant never demotes (an admin's live tokens would keep the
        // higher role until they expire).
        let lower: Vec<&str> = Role::ALL
            .iter()
            .filter(|r| **r < role)
            .map(|r| r.as_str())
            .collect();
        if !repository::raise_role(&self.db, member_id, role.as_str(), &lower, self.clock.now())
            .await?
        {
            let member = repository::member_by_id(&self.db, member_id)
                .await?
                .ok_or(MemberError::NotFound)?;
            if member.role != role.as_str() {
                return Err(MemberError::RoleNotRaised);
            }
        }
        Ok(RoleChanged {
            id: member_id.into(),
            role,
        })
    }

    /// Creates a verified admin (the `openrun admin create` command).
    pub async fn create_admin(
        &self,
        login_id: &str,
        email: &str,
        password: SecretString,
    ) -> Result<String, MemberError> {
        let mut errors = Vec::new();
        let login = collect(&mut errors, "login_id", validation::login_id(login_id));
        collect(
            &mut errors,
            "password",
            validation::password(password.expose_secret(), login_id),
        );
        let email = collect(&mut errors, "email", validation::email(email));
        let (Some(login), Some(email), true) = (login, email, errors.is_empty()) else {
            return Err(MemberError::Invalid(errors));
        };
        let email_bidx = self
            .keys
            .blind_index("email", &validation::email_key(&email));
        let taken = repository::taken(&self.db, &login, &email_bidx, "").await?;
        if !taken.is_empty() {
            return Err(duplicate(&taken));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let row = MemberRow {
            id: id.clone(),
            password_hash: crate::password::hash(password).await?,
            role: Role::Admin.as_str().into(),
            name_enc: self.keys.encrypt(NAME, &login),
            login_id: login,
            email_enc: self.keys.encrypt(EMAIL, &email),
            email_bidx,
            phone_enc: None,
            phone_bidx: None,
            created_at: self.clock.now(),
        };
        match repository::insert_member(&self.db, &row, None).await {
            Ok(()) => Ok(id),
            Err(WriteError::Duplicate(field)) => Err(duplicate(&[field])),
            Err(WriteError::Db(e)) => Err(e.into()),
        }
    }

    /// Re-encrypts every value not under the current key (`openrun keys rotate`).
    pub async fn reencrypt_all(&self) -> Result<Reencrypted, MemberError> {
        let mut done = Reencrypted::default();
        let keys = &self.keys;
        let again = |field: &str, v: &str| keys.reencrypt(field, v).context("re-encrypting");
        for mut m in repository::all_members(&self.db).await? {
            let stale = keys.is_stale(&m.name_enc)
                || keys.is_stale(&m.email_enc)
                || m.phone_enc.as_deref().is_some_and(|p| keys.is_stale(p));
            if stale {
                m.name_enc = again(NAME, &m.name_enc)?;
                m.email_enc = again(EMAIL, &m.email_enc)?;
                m.phone_enc = m
                    .phone_enc
                    .as_deref()
                    .map(|p| again(PHONE, p))
                    .transpose()?;
                repository::rewrite_member_ciphertexts(&self.db, &m).await?;
                done.members += 1;
            }
        }
        for mut a in repository::all_addresses(&self.db).await? {
            let stale = keys.is_stale(&a.line1_enc)
                || keys.is_stale(&a.line2_enc)
                || a.postal_code_enc
                    .as_deref()
                    .is_some_and(|p| keys.is_stale(p));
            if stale {
                a.line1_enc = again(LINE1, &a.line1_enc)?;
                a.line2_enc = again(LINE2, &a.line2_enc)?;
                a.postal_code_enc = a
                    .postal_code_enc
                    .as_deref()
                    .map(|p| again(POSTAL, p))
                    .transpose()?;
                repository::rewrite_address_ciphertexts(&self.db, &a).await?;
                done.addresses += 1;
            }
        }
        Ok(done)
    }
}
