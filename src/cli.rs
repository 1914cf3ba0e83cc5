//! The `openrun` command line.

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::startup::{self, Application};
use crate::telemetry;

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
    }
}
