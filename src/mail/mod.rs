//! Outgoing e-mail behind the [`Mailer`] trait: SMTP when `SMTP_URL` is set, otherwise `.eml`
//! files in `MAIL_OUTBOX_DIR` (lettre's file transport), for the embedded default. Both are
//! exercised by `tests/it/mail.rs`. Addresses are never logged.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::ConfigError;

/// The e-mail settings as read (`SMTP_URL`, `MAIL_FROM`, `MAIL_OUTBOX_DIR`).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct RawSettings {
    pub(crate) smtp_url: Option<String>,
    pub(crate) mail_from: String,
    pub(crate) mail_outbox_dir: PathBuf,
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            smtp_url: None,
            mail_from: "openrun <no-reply@localhost>".into(),
            mail_outbox_dir: "data/outbox".into(),
        }
    }
}

/// E-mail delivery.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// SMTP server URL (may hold a password); `.eml` files in `outbox_dir` when unset.
    pub smtp_url: Option<secrecy::SecretString>,
    /// The `From:` of every message.
    pub from: Mailbox,
    /// Where `.eml` files are written without SMTP.
    pub outbox_dir: PathBuf,
}

impl RawSettings {
    pub(crate) fn validate(self) -> Result<MailConfig, ConfigError> {
        if let Some(url) = &self.smtp_url {
            AsyncSmtpTransport::<Tokio1Executor>::from_url(url).map_err(|_| {
                ConfigError::new(
                    "SMTP_URL",
                    "expected smtp://user:pass@host:port[?tls=required] or smtps://...",
                )
            })?;
        }
        let from = self.mail_from.parse().map_err(|_| {
            ConfigError::new(
                "MAIL_FROM",
                "expected an address such as Shop <no-reply@shop.example>",
            )
        })?;
        Ok(MailConfig {
            smtp_url: self.smtp_url.map(Into::into),
            from,
            outbox_dir: self.mail_outbox_dir,
        })
    }
}

/// Sends a message.
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    /// Delivers `message` (to the SMTP server, or into the outbox).
    async fn send(&self, message: Message) -> anyhow::Result<()>;
}

/// Delivery through an SMTP server.
pub struct SmtpMailer(AsyncSmtpTransport<Tokio1Executor>);

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, message: Message) -> anyhow::Result<()> {
        // The server's reply text may quote the recipient: only its kind and code are kept,
        // so no address reaches the logs.
        self.0.send(message).await.map_err(|e| {
            let kind = if e.is_permanent() {
                "permanent"
            } else if e.is_transient() {
                "transient"
            } else if e.is_timeout() {
                "timeout"
            } else {
                "connection or protocol"
            };
            let code = e
                .status()
                .map(|c| format!(" (code {c})"))
                .unwrap_or_default();
            anyhow::anyhow!("SMTP delivery failed: {kind} error{code}")
        })?;
        Ok(())
    }
}

/// `.eml` files in a directory.
pub struct FileMailer {
    transport: AsyncFileTransport<Tokio1Executor>,
    dir: PathBuf,
}

#[async_trait]
impl Mailer for FileMailer {
    async fn send(&self, message: Message) -> anyhow::Result<()> {
        // The outbox holds live verification links: only the service's user may enter it,
        // and that holds before a message is written (the file itself gets the umask's mode
        // from lettre, then 0600).
        let mut dir = tokio::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        dir.mode(0o700);
        dir.create(&self.dir)
            .await
            .with_context(|| format!("cannot create the outbox {}", self.dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tokio::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
                .await
                .context("cannot restrict the outbox")?;
        }
        let id = self
            .transport
            .send(message)
            .await
            .context("cannot write to the outbox")?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let file = self.dir.join(format!("{id}.eml"));
            // The message is written: a failure here is no failure to send.
            if let Err(e) =
                tokio::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).await
            {
                tracing::warn!(error = %e, "cannot restrict a message file of the outbox");
            }
        }
        Ok(())
    }
}

/// The mailer the configuration asks for.
pub fn from_config(config: &MailConfig) -> anyhow::Result<Arc<dyn Mailer>> {
    Ok(match &config.smtp_url {
        Some(url) => Arc::new(SmtpMailer(
            AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                .context("SMTP_URL")?
                .build(),
        )),
        None => Arc::new(FileMailer {
            transport: AsyncFileTransport::new(&config.outbox_dir),
            dir: config.outbox_dir.clone(),
        }),
    })
}

/// The verification message with its link.
pub fn verification_message(from: &Mailbox, to: &str, link: &str) -> anyhow::Result<Message> {
    let to: Mailbox = to.parse().context("the recipient address")?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject("Confirm your e-mail address")
        .header(ContentType::TEXT_PLAIN)
        .body(format!(
            "Welcome!\n\nConfirm your e-mail address by opening this link:\n\n{link}\n\n\
             The link works once and expires. If you did not sign up, ignore this message.\n"
        ))
        .context("building the verification message")
}

/// The confirmation of a placed order. `lines` are already written out for the buyer.
pub fn order_confirmation_message(
    from: &Mailbox,
    to: &str,
    order_id: &str,
    lines: &[String],
    total: &str,
) -> anyhow::Result<Message> {
    let to: Mailbox = to.parse().context("the recipient address")?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(format!("Your order {order_id}"))
        .header(ContentType::TEXT_PLAIN)
        .body(format!(
            "Thank you for your order.\n\nOrder {order_id}\n\n{}\n\nTotal: {total}\n\n\
             You can follow it, cancel it before it ships, or return it after delivery from \
             your order page.\n",
            lines.join("\n")
        ))
        .context("building the order confirmation")
}
