//! `tenant-scheduler`: enqueues the nightly, weekly and monthly fan-outs until SIGTERM.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use tenant_master::{scheduler, service};

/// Enqueues Tenant Master's scheduled jobs (backups, maintenance, cleanup).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (else TENANT_MASTER_CONFIG, else built-in defaults).
    #[arg(long, env = "TENANT_MASTER_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    service::run(args.config.as_deref(), "info,sqlx=warn,tokio_cron_scheduler=warn", scheduler::run).await
}
