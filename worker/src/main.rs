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

fn main() -> ExitCode {
    let args = Args::parse();
    // Jobs nest large futures (a backup inside a restore inside the job wrapper): room for
    // them on every worker thread, not tokio's default 2 MiB.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(8 << 20).build();
    match runtime {
        Ok(runtime) => runtime.block_on(service::run(args.config.as_deref(), "info,sqlx=warn", worker::run)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
