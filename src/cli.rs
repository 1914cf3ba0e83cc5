//! The `openrun` command line.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use secrecy::SecretString;

use crate::config::{Config, KeySource};
use crate::crypto::DataKey;
use crate::crypto::keyfile::KeyFile;
use crate::eventstore::{self, EventStore, StreamRef};
use crate::startup::{self, Application};
use crate::{ops, projections, telemetry};

/// openrun: the order and inventory core of a limited-drop shop.
#[derive(Debug, Parser)]
#[command(name = "openrun", version, about)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (applies migrations first).
    Serve,
    /// Apply the embedded database migrations and exit.
    Migrate,
    /// Administration of members.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Encryption keys of personal data.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print one stream as a timeline.
    Replay {
        /// The stream, as `type/id` (for example `order/0190c0de-...`).
        #[arg(long)]
        stream: String,
        /// One JSON object per event instead of the timeline.
        #[arg(long)]
        json: bool,
    },
    /// Re-derive the invariants from the log; exits non-zero on any violation.
    Audit,
    /// Rehearse a drop against a running instance: burst, rate or saturate.
    Drill(Box<crate::drill::DrillArgs>),
    /// Projection status and rebuild.
    Projections {
        /// What to do.
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
}

/// `openrun projections ...`.
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection's checkpoint and lag.
    Status,
    /// Replay a projection from zero into fresh tables and swap them in.
    Rebuild {
        /// The projection's name.
        name: String,
    },
}

/// `openrun admin ...`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a verified admin. The password comes from OPENRUN_ADMIN_PASSWORD, or a prompt
    /// on a terminal.
    Create {
        /// The admin's login id.
        #[arg(long)]
        login_id: String,
        /// The admin's e-mail address.
        #[arg(long)]
        email: String,
    },
}

/// `openrun keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-encrypt all personal data under the current key. With the generated key file, a new
    /// key is added to it first and becomes current; with OPENRUN_DATA_KEYS, put the new key
    /// first in the variable, then run this.
    Rotate,
}

/// The variable holding the first admin's password.
pub const ADMIN_PASSWORD_VAR: &str = "OPENRUN_ADMIN_PASSWORD";

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve);
    // The drill is a client: it reads the shop's settings only for --audit.
    if let Command::Drill(args) = command {
        telemetry::init_tracing(crate::telemetry::LogFormat::Text);
        let password = admin_password()?;
        return crate::drill::run(*args, secrecy::ExposeSecret::expose_secret(&password)).await;
    }
    let config = Config::from_env()?;
    telemetry::init_tracing(config.log_format);
    match command {
        Command::Serve => {
            let shutdown = startup::shutdown_signal()?;
            Application::build(&config).await?.run_until(shutdown).await
        }
        Command::Migrate => {
            let db = startup::connect(&config).await?;
            crate::db::migrate(&db).await?;
            db.close().await;
            tracing::info!(database = %config.database_url_redacted(), "migrations applied");
            Ok(())
        }
        command @ (Command::Replay { .. } | Command::Audit | Command::Projections { .. }) => {
            with_log(&config, command).await
        }
        Command::Admin(AdminCommand::Create { login_id, email }) => {
            let password = admin_password()?;
            let (members, _auth, db) = services(&config).await?;
            let created = members.create_admin(&login_id, &email, password).await;
            db.close().await;
            let id = created.map_err(|e| match e {
                crate::members::MemberError::Invalid(errors)
                | crate::members::MemberError::Duplicate(errors) => anyhow::anyhow!(
                    "{}",
                    errors
                        .iter()
                        .map(|f| format!("{} {}", f.field, f.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                other => anyhow::Error::new(other),
            })?;
            tracing::info!(member_id = %id, "admin created");
            Ok(())
        }
        Command::Drill(_) => unreachable!("run above"),
        Command::Keys(KeysCommand::Rotate) => {
            let config = match &config.secrets.source {
                KeySource::File(path) => add_key_to_file(path)?,
                _ => config,
            };
            let (members, _auth, db) = services(&config).await?;
            let done = members.reencrypt_all().await;
            db.close().await;
            let done = done.map_err(anyhow::Error::new)?;
            tracing::info!(
                key_id = config.secrets.keys.current_key_id(),
                members = done.members,
                addresses = done.addresses,
                "personal data re-encrypted under the current key"
            );
            Ok(())
        }
    }
}

type Services = (
    std::sync::Arc<crate::members::Members>,
    std::sync::Arc<crate::auth::AuthService>,
    crate::db::Database,
);

async fn services(config: &Config) -> anyhow::Result<Services> {
    let db = startup::connect(config).await?;
    crate::db::migrate(&db).await?;
    let (members, auth) = startup::members_and_auth(config, &db, crate::clock::system()).await?;
    Ok((members, auth, db))
}

fn admin_password() -> anyhow::Result<SecretString> {
    if let Ok(password) = std::env::var(ADMIN_PASSWORD_VAR) {
        return Ok(password.into());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{ADMIN_PASSWORD_VAR}: not set, and there is no terminal to ask on");
    }
    let password =
        rpassword::prompt_password("admin password: ").context("reading the password")?;
    Ok(password.into())
}

/// Adds a fresh key to the key file as the current one; older keys stay for reading.
fn add_key_to_file(path: &std::path::Path) -> anyhow::Result<Config> {
    let mut file = KeyFile::load_or_create(path).map_err(|e| anyhow::anyhow!(e))?;
    let n = file.data_keys.split(',').count() + 1;
    let id = format!("k{n}-{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    file.data_keys = format!("{},{}", DataKey::generate(id).to_setting(), file.data_keys);
    file.save(path).map_err(|e| anyhow::anyhow!(e))?;
    Ok(Config::from_env()?)
}

/// Commands that read the log: they open the store, run, and shut it down again.
async fn with_log(config: &Config, command: Command) -> anyhow::Result<()> {
    let db = startup::connect(config).await?;
    crate::db::migrate(&db).await?;
    let events = eventstore::open(&db, &config.group_commit);
    let result = run_on_log(config, &db, Arc::clone(&events), command).await;
    events.shutdown().await;
    db.close().await;
    result
}

async fn run_on_log(
    config: &Config,
    db: &crate::db::Database,
    events: Arc<dyn EventStore>,
    command: Command,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Replay { stream, json } => {
            let stream = StreamRef::parse(&stream)
                .context("--stream: expected type/id, for example order/0190c0de-...")?;
            let recorded = ops::stream_events(events.as_ref(), &stream).await?;
            if recorded.is_empty() {
                bail!("no stream {stream}");
            }
            if json {
                for event in &recorded {
                    writeln!(out, "{}", serde_json::to_string(event)?)?;
                }
            } else {
                ops::write_timeline(&mut out, &stream, &recorded)?;
            }
        }
        Command::Audit => {
            let stock = startup::shared_stock_store(config).await?;
            let checks = ops::audit(
                db,
                events.as_ref(),
                stock.as_deref(),
                config.orders.refund_settle_within,
            )
            .await?;
            if !ops::write_report(&mut out, &checks)? {
                bail!("the audit found violations");
            }
        }
        Command::Projections {
            command: ProjectionsCommand::Status,
        } => {
            writeln!(
                out,
                "{:<24} {:>12} {:>10}",
                "projection", "checkpoint", "lag"
            )?;
            for s in projections::status(db, events.as_ref()).await? {
                writeln!(out, "{:<24} {:>12} {:>10}", s.name, s.checkpoint, s.lag)?;
            }
        }
        Command::Projections {
            command: ProjectionsCommand::Rebuild { name },
        } => {
            let rebuilt = ops::rebuild(db, events, &name).await?;
            let secs = rebuilt.elapsed.as_secs_f64();
            let rate = rebuilt.position as f64 / secs.max(1e-3);
            writeln!(
                out,
                "{name}: replayed {} events in {secs:.2} s ({rate:.0} events/s) and swapped in",
                rebuilt.position
            )?;
        }
        _ => bail!("only replay, audit and projections run on an open log"),
    }
    Ok(())
}
