//! The `openrun` command line.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::config::Config;
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

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    telemetry::init_tracing(config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            Application::build(&config)
                .await?
                .run_until(startup::shutdown_signal())
                .await
        }
        Command::Migrate => {
            let db = startup::connect(&config).await?;
            db.migrate().await?;
            db.close().await;
            tracing::info!(database = %config.database_url_redacted(), "migrations applied");
            Ok(())
        }
        command => with_log(&config, command).await,
    }
}

/// Commands that read the log: they open the store, run, and shut it down again.
async fn with_log(config: &Config, command: Command) -> anyhow::Result<()> {
    let db = startup::connect(config).await?;
    db.migrate().await?;
    let events = eventstore::open(&db, &config.group_commit);
    let result = run_on_log(&db, Arc::clone(&events), command).await;
    events.shutdown().await;
    db.close().await;
    result
}

async fn run_on_log(
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
            let checks = ops::audit(db, events.as_ref()).await?;
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
        Command::Serve | Command::Migrate => bail!("serve and migrate do not run on an open log"),
    }
    Ok(())
}
