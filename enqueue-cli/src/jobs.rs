//! `tenantctl jobs ...`: what failed, why, and fixing it in one command.

use std::process::ExitCode;

use tenant_master::{
    activity,
    jobs::cancel,
    queue::{self, JobFilter, JobInfo},
    Error,
};

use crate::{args::JobsCommand, Ctx};

pub async fn run(ctx: &Ctx, cmd: JobsCommand) -> anyhow::Result<ExitCode> {
    let pool = ctx.pool().await?;
    match cmd {
        JobsCommand::List { status, job_type, tenant, limit } => {
            let jobs = queue::list(&pool, &JobFilter { status, job_type, tenant, limit }).await?;
            if ctx.json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else if jobs.is_empty() {
                println!("no jobs");
            } else {
                println!("{:<26} {:<16} {:<8} {:>8} {:<20} {:<24} LAST ERROR", "ID", "TYPE", "STATUS", "ATTEMPTS", "RUN AT", "TENANT");
                for j in &jobs {
                    println!(
                        "{:<26} {:<16} {:<8} {:>8} {:<20} {:<24} {}",
                        j.id,
                        j.job_type,
                        j.status,
                        format!("{}/{}", j.attempts, j.max_attempts),
                        j.run_at.format("%Y-%m-%d %H:%M:%S"),
                        j.tenant.as_deref().unwrap_or("-"),
                        j.last_error.as_deref().map(first_line).unwrap_or_default()
                    );
                }
            }
        }
        JobsCommand::Show { id } => {
            let job = queue::get(&pool, &id).await?;
            if ctx.json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                show(&job);
            }
        }
        JobsCommand::Retry { ids, failed, job_type, tenant, wait, timeout } => {
            let retried = if failed {
                queue::retry_matching(&pool, &JobFilter { job_type, tenant, ..Default::default() }, None).await?
            } else {
                retry_given(&pool, &ids).await?
            };
            if ctx.json {
                println!("{}", serde_json::json!({ "retried": retried }));
            } else {
                match retried.len() {
                    0 => println!("no failed or dead job matched: nothing was retried"),
                    n if wait => println!("retried {n} job(s): pending again with a fresh attempt budget; waiting for them"),
                    n => println!(
                        "retried {n} job(s): pending again with a fresh attempt budget; `tenantctl jobs list --status pending` shows them (or retry with --wait)"
                    ),
                }
            }
            if wait && !retried.is_empty() {
                let finished = crate::wait::jobs(ctx, &pool, &retried, timeout).await?;
                let failed: Vec<_> = finished.iter().filter(|j| j.status != "done").collect();
                for j in &failed {
                    eprintln!("FAILED {} ({}): {}", j.id, j.job_type, j.last_error.as_deref().unwrap_or("no error recorded"));
                }
                if !ctx.json {
                    println!("{} done, {} failed again", finished.len() - failed.len(), failed.len());
                }
                if !failed.is_empty() {
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        JobsCommand::Cancel { id, actor } => {
            let actor = actor.unwrap_or_else(activity::default_actor);
            let done = cancel::cancel(&pool, &id, &actor).await?;
            let job = done.job;
            if ctx.json {
                println!("{}", serde_json::json!({ "cancelled": job.id, "tenant": job.tenant, "tenant_note": done.tenant_note }));
            } else {
                let tenant = job.tenant.as_deref().map(|t| format!(" of '{t}'")).unwrap_or_default();
                match done.tenant_note {
                    Some(note) => println!("cancelled {} ({}{tenant}); {note}", job.id, job.job_type),
                    None => println!("cancelled {} ({}{tenant})", job.id, job.job_type),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Retries the given ids; every one must exist and be failed, dead or pending.
pub async fn retry_given(pool: &sqlx::PgPool, ids: &[String]) -> tenant_master::Result<Vec<String>> {
    for id in ids {
        let job = queue::get(pool, id).await?;
        if let Some((actor, at)) = queue::cancellation(pool, id).await? {
            return Err(Error::Conflict(format!(
                "job {id} ({} of '{}') was cancelled by {actor} at {}: it is not run again; enqueue the work anew if it is still wanted; nothing was retried",
                job.job_type,
                job.tenant.as_deref().unwrap_or("-"),
                at.format("%Y-%m-%d %H:%M:%S UTC")
            )));
        }
        if matches!(job.status.as_str(), "running" | "done") {
            return Err(Error::Conflict(format!(
                "job {id} is {}: only failed, dead or pending jobs can be retried; nothing was retried",
                job.status
            )));
        }
    }
    queue::retry(pool, ids).await
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > 80 {
        format!("{}...", line.chars().take(80).collect::<String>())
    } else {
        line.to_owned()
    }
}

fn show(job: &JobInfo) {
    println!("id          {}", job.id);
    println!("type        {}", job.job_type);
    println!("status      {}", job.status);
    println!("attempts    {}/{}", job.attempts, job.max_attempts);
    println!("run at      {}", job.run_at.to_rfc3339());
    println!("tenant      {}", job.tenant.as_deref().unwrap_or("-"));
    println!("last error  {}", job.last_error.as_deref().unwrap_or("-"));
    println!("payload     {}", job.payload);
    match job.status.as_str() {
        "failed" | "dead" => println!("\nto run it again now: tenantctl jobs retry {}", job.id),
        "pending" => println!("\nto drop it: tenantctl jobs cancel {}", job.id),
        _ => {}
    }
}
