//! What the long-running binaries (`tenant-worker`, `tenant-scheduler`) share: logging,
//! configuration, the shutdown signal and a one-sentence error with exit code 1.

use std::{future::Future, path::Path, process::ExitCode};

use crate::{telemetry, worker::shutdown_signal, Config, Result};

/// Loads the configuration and runs `service` until SIGTERM or Ctrl-C.
pub async fn run<F, Fut>(config_file: Option<&Path>, default_log: &str, service: F) -> ExitCode
where
    F: FnOnce(Config, std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    telemetry::init(default_log);
    let outcome = match Config::load(config_file) {
        Ok(config) => service(config, Box::pin(shutdown_signal())).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
