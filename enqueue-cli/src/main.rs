//! `tenantctl`: the admin and producer CLI. Exit 0 on success, 1 on failure, 2 on bad
//! usage, 3 when `--wait --timeout` stopped waiting (the jobs go on); every error is one
//! sentence on stderr.

mod admin_users;
mod args;
mod backup;
mod check;
mod confirm;
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

use crate::args::{AdminCommand, Cli, Command};

/// What a command needs besides its own arguments.
pub struct Ctx {
    /// The loaded configuration (with `--database-url` applied).
    pub config: Config,
    /// `--json`: print JSON instead of tables and sentences.
    pub json: bool,
}

impl Ctx {
    /// The control-plane pool, small: the CLI runs one thing at a time. Refused (typed
    /// `Error::NotMigrated`) if the control plane lacks this build's migrations.
    pub async fn pool(&self) -> tenant_master::Result<sqlx::PgPool> {
        let pool = self.server_pool().await?;
        tenant_master::migrate::ensure_current(&pool).await?;
        Ok(pool)
    }

    /// The control-plane pool, whatever its migrations (for `check`, which reports them).
    pub async fn server_pool(&self) -> tenant_master::Result<sqlx::PgPool> {
        tenant_master::db::connect_pool(&self.config.database_url, 2).await
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // `tenantctl jobs list | head -1`: a closed pipe ends the process quietly, as it does
    // every Unix tool, instead of a panic in println!. Not the panel: a server whose log
    // reader went away must keep serving (its log lines are lost, not its users).
    if !matches!(cli.command, Command::Admin(AdminCommand::Serve { .. })) {
        // SAFETY: before any thread is started (the runtime is current-thread, and clap
        // starts none); SIG_DFL is a valid disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    telemetry::init("warn");
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            if let Some(stopped) = e.downcast_ref::<wait::StoppedWaiting>() {
                eprintln!("{stopped}");
                return ExitCode::from(stopped.exit_code);
            }
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
        Command::Admin(AdminCommand::Serve { listen, behind_proxy }) => tenant_master_panel::serve(ctx.config, &listen, behind_proxy).await,
        Command::Admin(AdminCommand::User(cmd)) => admin_users::run(&ctx, cmd).await,
    }
}

/// The error chain on one line: "what failed: why". The CLI's own contexts come first;
/// our library's errors and sqlx's already end with their cause (see
/// `tenant_master::error`), so the chain stops there.
fn one_sentence(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in e.chain() {
        parts.push(cause.to_string());
        if cause.is::<tenant_master::Error>() || cause.is::<sqlx::Error>() {
            break;
        }
    }
    let text = parts.join(": ");
    text.replace('\n', " ")
}
