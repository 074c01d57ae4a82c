//! `tenant-worker`: runs the job pool until SIGTERM or Ctrl-C, then drains and exits 0.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Parser;
use tenant_master::{telemetry, worker, Config};

/// Runs Tenant Master's background jobs.
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
    telemetry::init("info,sqlx=warn");
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
    worker::run(config, worker::shutdown_signal()).await?;
    Ok(())
}
