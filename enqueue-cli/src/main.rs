//! `tenantctl`: the admin and producer CLI. Exit 0 on success, 1 on failure, 2 on bad
//! usage; every error is one sentence on stderr.

mod args;
mod backup;
mod check;
mod host;
mod jobs;
mod maintenance;
mod output;
mod rollout;
mod tenant;
mod wait;

use std::process::ExitCode;

use clap::Parser;
use tenant_master::{telemetry, Config};

use crate::args::{Cli, Command};

/// What a command needs besides its own arguments.
pub struct Ctx {
    pub config: Config,
    pub json: bool,
}

impl Ctx {
    /// The control-plane pool, small: the CLI runs one thing at a time.
    pub async fn pool(&self) -> tenant_master::Result<sqlx::PgPool> {
        tenant_master::db::connect_pool(&self.config.database_url, 2).await
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init("warn");
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            let usage = e.downcast_ref::<tenant_master::Error>().is_some_and(|e| e.is_usage());
            eprintln!("error: {}", one_sentence(&e));
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(url) = cli.database_url {
        config.database_url = url;
    }
    let ctx = Ctx { config, json: cli.json };
    match cli.command {
        Command::Migrate => {
            let report = tenant_master::migrate::run(&ctx.config).await?;
            output::migrate_report(&ctx, &report);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { workers } => check::run(&ctx, workers).await,
        Command::Tenant(cmd) => tenant::run(&ctx, cmd).await,
        Command::Backup(cmd) => backup::run(&ctx, cmd).await,
        Command::Maintenance(args) => maintenance::run(&ctx, args).await,
        Command::Schedule(cmd) => maintenance::schedule(&ctx, cmd).await,
        Command::Jobs(cmd) => jobs::run(&ctx, cmd).await,
        Command::Key(cmd) => host::key(&ctx, cmd).await,
        Command::Host(cmd) => host::run(&ctx, cmd).await,
    }
}

/// The error chain on one line: "what failed: why".
fn one_sentence(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text.replace('\n', " ")
}
