//! `tenant-worker`: runs the job pool until SIGTERM or Ctrl-C, then drains and exits 0.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use tenant_master::{service, worker};

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
    service::run(args.config.as_deref(), "info,sqlx=warn", worker::run).await
}
