//! `--wait`: follow jobs until they finish, with a one-line progress display on a terminal.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tenant_master::queue::{self, JobInfo};

use crate::Ctx;

/// After this long with nothing picked up, say that a worker may be missing.
const NO_WORKER_HINT_AFTER: Duration = Duration::from_secs(10);

/// Stopped waiting while the jobs go on: at `--timeout` (exit code 3) or at Ctrl-C (130).
#[derive(Debug)]
pub struct StoppedWaiting {
    pub exit_code: u8,
    message: String,
}

impl std::fmt::Display for StoppedWaiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoppedWaiting {}

/// Waits for `ids` to be done or dead (at most `timeout`); progress goes to stderr.
pub async fn jobs(ctx: &Ctx, pool: &PgPool, ids: &[String], timeout: Option<Duration>) -> anyhow::Result<Vec<JobInfo>> {
    let limit = timeout.unwrap_or(Duration::MAX);
    let follow_up = match ids {
        [one] => format!("`tenantctl jobs show {one}`"),
        _ => "`tenantctl jobs list --status pending` and `--status running`".to_owned(),
    };
    let stopped = |exit_code: u8, why: String| {
        if std::io::stderr().is_terminal() && !ctx.json {
            eprintln!(); // ends the progress line
        }
        StoppedWaiting { exit_code, message: format!("stopped waiting {why}; the job(s) go on: follow them with {follow_up}") }.into()
    };
    tokio::select! {
        finished = tokio::time::timeout(limit, follow(ctx, pool, ids)) => match finished {
            Ok(finished) => finished,
            Err(_) => Err(stopped(3, format!("after {}s", limit.as_secs()))),
        },
        _ = tokio::signal::ctrl_c() => Err(stopped(130, "(Ctrl-C)".to_owned())),
    }
}

/// Waits for `ids` to be done or dead; progress goes to stderr.
async fn follow(ctx: &Ctx, pool: &PgPool, ids: &[String]) -> anyhow::Result<Vec<JobInfo>> {
    let tty = std::io::stderr().is_terminal() && !ctx.json;
    let started = Instant::now();
    let mut last_line = String::new();
    let mut hinted = false;
    let jobs = queue::wait_for(pool, ids, |jobs| {
        let done = jobs.iter().filter(|j| j.status == "done").count();
        let dead = jobs.iter().filter(|j| j.status == "dead").count();
        let first = &jobs[0];
        let line = if jobs.len() == 1 {
            let retry =
                first.last_error.as_deref().filter(|_| first.status == "failed").map(|e| format!(" (retrying: {e})")).unwrap_or_default();
            format!(
                "{} {}: {} (attempt {}/{}){retry}",
                first.job_type,
                first.tenant.as_deref().unwrap_or(""),
                first.status,
                current_attempt(first),
                first.max_attempts
            )
        } else {
            format!("{} jobs: {done} done, {dead} failed, {} to go", jobs.len(), jobs.len() - done - dead)
        };
        if tty {
            let rate = match jobs.len() {
                1 => String::new(),
                _ => format!(", {:.1}/s", (done + dead) as f64 / started.elapsed().as_secs_f64().max(0.001)),
            };
            eprint!("\r\x1b[2K{line} [{:.0}s{rate}]", started.elapsed().as_secs_f64());
            let _ = std::io::stderr().flush();
        } else if line != last_line && !ctx.json {
            eprintln!("{line}");
        }
        last_line = line;
        if !hinted && started.elapsed() > NO_WORKER_HINT_AFTER && jobs.iter().all(|j| j.status == "pending") {
            hinted = true;
            eprintln!(
                "{}no worker has picked the job up yet: is tenant-worker running against this database?",
                if tty { "\n" } else { "" }
            );
        }
    })
    .await?;
    if tty {
        eprintln!();
    }
    Ok(jobs)
}

/// The attempt a job is on: `attempts` counts the attempts that ended, so a job running
/// (or waiting to run) again after a failure is on the next one.
fn current_attempt(job: &JobInfo) -> i32 {
    match job.status.as_str() {
        "running" | "pending" | "failed" if job.attempts > 0 && job.last_error.is_some() => (job.attempts + 1).min(job.max_attempts),
        _ => job.attempts.max(1),
    }
}
