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
        JobsCommand::List { status, job_type, tenant, limit } => list(ctx, &pool, JobFilter { status, job_type, tenant, limit }).await,
        JobsCommand::Show { id } => {
            let job = queue::get(&pool, &id).await?;
            if ctx.json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                show(&job);
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Retry { ids, failed, job_type, tenant, wait, timeout } => {
            let filter = failed.then(|| JobFilter { job_type, tenant, ..Default::default() });
            retry(ctx, &pool, &ids, filter, wait, timeout).await
        }
        JobsCommand::Cancel { ids, pending, failed, job_type, tenant, yes, actor } => {
            let actor = actor.unwrap_or_else(activity::default_actor);
            let statuses: Vec<&str> =
                [(pending, "pending"), (failed, "failed"), (failed, "dead")].into_iter().filter(|(on, _)| *on).map(|(_, s)| s).collect();
            if statuses.is_empty() {
                return cancel_each(ctx, &pool, &ids, &actor, false).await;
            }
            cancel_matching(ctx, &pool, &JobFilter { job_type, tenant, ..Default::default() }, &statuses, yes, &actor).await
        }
    }
}

async fn list(ctx: &Ctx, pool: &sqlx::PgPool, filter: JobFilter) -> anyhow::Result<ExitCode> {
    let jobs = queue::list(pool, &filter).await?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
    } else if jobs.is_empty() {
        println!("no jobs");
    } else {
        let rows = jobs
            .iter()
            .map(|j| {
                vec![
                    j.id.clone(),
                    j.job_type.clone(),
                    j.status.clone(),
                    format!("{}/{}", j.attempts, j.max_attempts),
                    j.run_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    j.tenant.clone().unwrap_or_else(|| "-".into()),
                    j.last_error.as_deref().map(first_line).unwrap_or_default(),
                ]
            })
            .collect();
        crate::output::table(&["ID", "TYPE", "STATUS", ">ATTEMPTS", "RUN AT", "TENANT", "LAST ERROR"], rows);
    }
    Ok(ExitCode::SUCCESS)
}

/// Retries `ids`, or every failed and dead job matching `filter`; with `wait`, follows them.
async fn retry(
    ctx: &Ctx,
    pool: &sqlx::PgPool,
    ids: &[String],
    filter: Option<JobFilter>,
    wait: bool,
    timeout: Option<std::time::Duration>,
) -> anyhow::Result<ExitCode> {
    let retried = match &filter {
        Some(filter) => queue::retry_matching(pool, filter, None).await?,
        None => queue::retry_given(pool, ids).await?,
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
        let finished = crate::wait::jobs(ctx, pool, &retried, timeout).await?;
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
    Ok(ExitCode::SUCCESS)
}

/// Cancels the jobs with one of `statuses` that match `filter`, after a count and a
/// question (or `yes`).
async fn cancel_matching(
    ctx: &Ctx,
    pool: &sqlx::PgPool,
    filter: &JobFilter,
    statuses: &[&str],
    yes: bool,
    actor: &str,
) -> anyhow::Result<ExitCode> {
    let matched = queue::matching(pool, filter, statuses, None).await?;
    // Jobs that have begun changing their tenant can only be finished: named, not counted,
    // and no reason to fail (a nightly cleanup must end at 0).
    let (ids, begun) = cancel::cancellable(pool, &matched).await?;
    for (id, reason) in &begun {
        eprintln!("not cancellable: {id}: {reason}");
    }
    if ids.is_empty() {
        println!("no {} job that can be cancelled matched: nothing was cancelled", statuses.join(" or "));
        return Ok(ExitCode::SUCCESS);
    }
    if !yes && !confirm_cancel(pool, &ids).await? {
        return Err(Error::Invalid(format!(
            "nothing cancelled; {} job(s) match: run it in a terminal to be asked, or add --yes",
            ids.len()
        ))
        .into());
    }
    cancel_each(ctx, pool, &ids, actor, true).await
}

/// Shows how many jobs of which types a cancel by filter takes, and asks.
async fn confirm_cancel(pool: &sqlx::PgPool, ids: &[String]) -> anyhow::Result<bool> {
    let by_type: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT type, status, count(*) FROM tenant_master.jobs WHERE id = ANY($1) GROUP BY type, status ORDER BY 3 DESC, 1, 2",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let mut lines = vec![format!("{} job(s) match:", ids.len())];
    lines.extend(by_type.iter().map(|(job_type, status, n)| format!("  {n:>6}  {job_type} ({status})")));
    lines.push("Cancelled jobs stay listed as cancelled and are never run; the ones counted here are the only ones cancelled.".into());
    crate::confirm::ask(&lines, &format!("Cancel these {} job(s)?", ids.len()))
}

/// Cancels each id; one that cannot be (it started meanwhile, or has begun changing its
/// tenant) is named and skipped, and the command then exits 1. A single id given by hand
/// keeps the single-object JSON form scripts read.
async fn cancel_each(ctx: &Ctx, pool: &sqlx::PgPool, ids: &[String], actor: &str, by_filter: bool) -> anyhow::Result<ExitCode> {
    if let [id] = ids {
        if !by_filter {
            let done = cancel::cancel(pool, id, actor).await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::json!({ "cancelled": done.job.id, "tenant": done.job.tenant, "tenant_note": done.tenant_note, "changed": done.already.is_none() })
                );
            } else {
                print_cancelled(&done);
            }
            return Ok(ExitCode::SUCCESS);
        }
    }
    let (mut cancelled, mut skipped, mut already) = (Vec::new(), Vec::new(), 0);
    for (n, id) in ids.iter().enumerate() {
        match cancel::cancel(pool, id, actor).await {
            // Cancelled meanwhile by someone else: what was asked holds.
            Ok(done) if done.already.is_some() => already += 1,
            Ok(done) => {
                if !ctx.json && ids.len() <= 20 {
                    print_cancelled(&done);
                }
                cancelled.push(serde_json::json!({ "id": done.job.id, "type": done.job.job_type, "tenant": done.job.tenant, "tenant_note": done.tenant_note }));
            }
            // Refusals of this one job (it started, is done, has begun): the others go on.
            Err(e @ (Error::Conflict(_) | Error::NotFound(_))) => {
                eprintln!("skipped {id}: {e}");
                skipped.push(serde_json::json!({ "id": id, "reason": e.to_string() }));
            }
            Err(e) => return Err(anyhow::Error::from(e).context(format!("cancelled {} of {} job(s) before this error", n, ids.len()))),
        }
        crate::output::progress(ctx, "cancelling", n + 1, ids.len());
    }
    if ctx.json {
        println!("{}", serde_json::json!({ "cancelled": cancelled, "skipped": skipped }));
    } else {
        let already = if already > 0 { format!("; {already} cancelled already by someone else") } else { String::new() };
        println!("cancelled {} job(s); {} skipped{already}", cancelled.len(), skipped.len());
    }
    Ok(if skipped.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_cancelled(done: &cancel::Cancelled) {
    let job = &done.job;
    let tenant = job.tenant.as_deref().map(|t| format!(" of '{t}'")).unwrap_or_default();
    if let Some((actor, at)) = &done.already {
        println!(
            "job {} ({}{tenant}) was cancelled already, by {actor} at {}: nothing to do",
            job.id,
            job.job_type,
            at.format("%Y-%m-%d %H:%M:%S UTC")
        );
        return;
    }
    match &done.tenant_note {
        Some(note) => println!("cancelled {} ({}{tenant}); {note}", job.id, job.job_type),
        None => println!("cancelled {} ({}{tenant})", job.id, job.job_type),
    }
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
        "failed" | "dead" => println!("\nto run it again now: `tenantctl jobs retry {}`", job.id),
        "pending" => println!("\nto drop it: `tenantctl jobs cancel {}`", job.id),
        _ => {}
    }
}
