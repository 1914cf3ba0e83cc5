//! Sign-up, e-mail verification and resending the link.

use super::*;

impl Members {
    /// Signs a member up as `unverified` and e-mails the verification link.
    pub async fn sign_up(&self, input: SignUp) -> Result<SignedUp, MemberError> {
        let mut errors = Vec::new();
        let login_id = collect(
            &mut errors,
            "login_id",
            validation::login_id(&input.login_id),
        );
        collect(
            &mut errors,
            "password",
            validation::password(input.password.expose_secret(), &input.login_id),
        );
        let name = collect(&mut errors, "name", validation::name(&input.name));
        let phone = collect(&mut errors, "phone", validation::phone(&input.phone));
        let email = collect(&mut errors, "email", validation::email(&input.email));
        let id = uuid::Uuid::now_v7().to_string();
        let address = self.address_row(
            &id,
            uuid::Uuid::now_v7().to_string(),
            &input.address,
            true,
            "address.",
            &mut errors,
        );
        let (Some(login_id), Some(name), Some(phone), Some(email), Some(address), true) =
            (login_id, name, phone, email, address, errors.is_empty())
        else {
            return Err(MemberError::Invalid(errors));
        };
        let email_bidx = self
            .keys
            .blind_index("email", &validation::email_key(&email));
        let phone_bidx = self
            .keys
            .blind_index("phone", &validation::phone_key(&phone));
        let taken = repository::taken(&self.db, &login_id, &email_bidx, &phone_bidx).await?;
        if !taken.is_empty() {
            return Err(duplicate(&taken));
        }
        let now = self.clock.now();
        let row = MemberRow {
            id: id.clone(),
            login_id: login_id.clone(),
            password_hash: crate::password::hash(input.password).await?,
            role: Role::Unverified.as_str().into(),
            name_enc: self.keys.encrypt(NAME, &name),
            email_enc: self.keys.encrypt(EMAIL, &email),
            email_bidx,
            phone_enc: Some(self.keys.encrypt(PHONE, &phone)),
            phone_bidx: Some(phone_bidx),
            created_at: now,
        };
        match repository::insert_member(&self.db, &row, Some(&address)).await {
            Ok(()) => {}
            Err(WriteError::Duplicate(field)) => return Err(duplicate(&[field])),
            Err(WriteError::Db(e)) => return Err(e.into()),
        }
        // The member exists now; a mail failure is logged and the member can ask again.
        if let Err(e) = self.send_verification(&id, &email).await {
            tracing::error!(member_id = %id, error = format!("{e:#}"), "verification e-mail not sent");
        }
        Ok(SignedUp {
            id,
            login_id,
            role: Role::Unverified,
        })
    }

    pub(super) async fn send_verification(
        &self,
        member_id: &str,
        email: &str,
    ) -> anyhow::Result<()> {
        let token = random_token();
        let ttl = chrono::Duration::from_std(self.verification_ttl).context("ttl")?;
        let now = self.clock.now();
        repository::insert_verification_token(
            &self.db,
            &token_hash(&token),
            member_id,
            now,
            now + ttl,
        )
        .await
        .context("storing the verification token")?;
        let mut link = self.verify_url.clone();
        link.query_pairs_mut().append_pair("token", &token);
        let message = mail::verification_message(&self.from, email, link.as_str())?;
        self.mailer.send(message).await
    }

    /// Follows a verification link: a good token makes an unverified member `basic`, once.
    /// Returns the member's role after it.
    pub async fn verify(&self, token: &str) -> Result<Role, MemberError> {
        match repository::use_verification_token(&self.db, &token_hash(token), self.clock.now())
            .await?
        {
            TokenUse::Verified(id) => {
                let member = self.member(&id).await?;
                Ok(Role::parse(&member.role).context("stored role")?)
            }
            TokenUse::Used => Err(MemberError::TokenUsed),
            TokenUse::Expired => Err(MemberError::TokenExpired),
            TokenUse::Unknown => Err(MemberError::TokenUnknown),
        }
    }

    /// Sends a new verification link to an unverified member.
    pub async fn resend_verification(&self, member_id: &str) -> Result<(), MemberError> {
        let member = self.member(member_id).await?;
        if member.role != Role::Unverified.as_str() {
            return Err(MemberError::AlreadyVerified);
        }
        let email = self.decrypt(EMAIL, &member.email_enc)?;
        self.send_verification(member_id, &email).await?;
        Ok(())
    }
}
