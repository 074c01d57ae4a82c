//! `tenant-scheduler`: enqueues the nightly, weekly and monthly fan-outs until SIGTERM.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Parser;
use tenant_master::{scheduler, telemetry, worker, Config};

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
    telemetry::init("info,sqlx=warn,tokio_cron_scheduler=warn");
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref()).context("could not load the configuration")?;
    scheduler::run(config, worker::shutdown_signal()).await?;
    Ok(())
}
