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

/// Stopped waiting at `--timeout` (exit code 3): the jobs go on.
#[derive(Debug)]
pub struct StillRunning(pub String);

impl std::fmt::Display for StillRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StillRunning {}

/// Ctrl-C while waiting (exit code 130): the jobs go on.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Waits for `ids` to be done or dead (at most `timeout`); progress goes to stderr.
pub async fn jobs(ctx: &Ctx, pool: &PgPool, ids: &[String], timeout: Option<Duration>) -> anyhow::Result<Vec<JobInfo>> {
    let limit = timeout.unwrap_or(Duration::MAX);
    let follow_up = match ids {
        [one] => format!("`tenantctl jobs show {one}`"),
        _ => "`tenantctl jobs list --status pending` and `--status running`".to_owned(),
    };
    let end_progress_line = || {
        if std::io::stderr().is_terminal() && !ctx.json {
            eprintln!();
        }
    };
    tokio::select! {
        finished = tokio::time::timeout(limit, follow(ctx, pool, ids)) => match finished {
            Ok(finished) => finished,
            Err(_) => {
                end_progress_line();
                Err(StillRunning(format!("stopped waiting after {}s; the job(s) go on: follow them with {follow_up}", limit.as_secs())).into())
            }
        },
        _ = tokio::signal::ctrl_c() => {
            end_progress_line();
            Err(Interrupted(format!("stopped waiting (Ctrl-C); the job(s) go on: follow them with {follow_up}")).into())
        }
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
