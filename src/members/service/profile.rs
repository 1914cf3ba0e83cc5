//! The member's own profile.

use super::*;

impl Members {
    pub(super) fn profile(&self, m: MemberRow) -> Result<Profile, MemberError> {
        Ok(Profile {
            name: self.decrypt(NAME, &m.name_enc)?,
            email: self.decrypt(EMAIL, &m.email_enc)?,
            phone: m
                .phone_enc
                .as_deref()
                .map(|p| self.decrypt(PHONE, p))
                .transpose()?,
            role: Role::parse(&m.role).context("stored role")?,
            id: m.id,
            login_id: m.login_id,
            created_at: m.created_at,
        })
    }

    /// The member's own profile.
    pub async fn me(&self, member_id: &str) -> Result<Profile, MemberError> {
        let member = self.member(member_id).await?;
        self.profile(member)
    }

    /// Changes the name and/or phone.
    pub async fn update_me(
        &self,
        member_id: &str,
        patch: ProfilePatch,
    ) -> Result<Profile, MemberError> {
        let mut errors = Vec::new();
        let name = patch
            .name
            .map(|n| collect(&mut errors, "name", validation::name(&n)));
        let phone = patch
            .phone
            .map(|p| collect(&mut errors, "phone", validation::phone(&p)));
        if !errors.is_empty() {
            return Err(MemberError::Invalid(errors));
        }
        let name_enc = name.flatten().map(|n| self.keys.encrypt(NAME, &n));
        let phone = phone.flatten().map(|p| {
            (
                self.keys.encrypt(PHONE, &p),
                self.keys.blind_index("phone", &validation::phone_key(&p)),
            )
        });
        let phone_ref = phone.as_ref().map(|(e, b)| (e.as_str(), b.as_str()));
        match repository::update_profile(
            &self.db,
            member_id,
            name_enc.as_deref(),
            phone_ref,
            self.clock.now(),
        )
        .await
        {
            Ok(true) => self.me(member_id).await,
            Ok(false) => Err(MemberError::NotFound),
            Err(WriteError::Duplicate(field)) => Err(duplicate(&[field])),
            Err(WriteError::Db(e)) => Err(e.into()),
        }
    }
}

impl Members {
    /// Sends the member the confirmation of their order: `lines` and `total` as the buyer
    /// reads them. The address is read here and never logged.
    pub async fn send_order_confirmation(
        &self,
        member_id: &str,
        order_id: &str,
        lines: &[String],
        total: &str,
    ) -> Result<(), MemberError> {
        let member = self.member(member_id).await?;
        let email = self.decrypt(EMAIL, &member.email_enc)?;
        let message = mail::order_confirmation_message(&self.from, &email, order_id, lines, total)?;
        self.mailer
            .send(message)
            .await
            .map_err(MemberError::Unavailable)
    }
}
