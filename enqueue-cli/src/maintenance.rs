//! `tenantctl maintenance ...` and `tenantctl schedule ...`

use std::process::ExitCode;

use anyhow::bail;
use chrono::{DateTime, Utc};
use tenant_master::{
    activity,
    jobs::vacuum::{self, MaintenanceRequest},
    ops::maintenance::Tasks,
    schedule::{self, Schedule},
    tenants::Selection,
    Error,
};

use crate::{
    args::{MaintenanceArgs, ScheduleCommand},
    output, wait, Ctx,
};

pub async fn run(ctx: &Ctx, a: MaintenanceArgs) -> anyhow::Result<ExitCode> {
    let request = MaintenanceRequest {
        tasks: Tasks { vacuum: a.vacuum, full: a.full, analyze: a.analyze, reindex: a.reindex },
        cleanup_days: if a.cleanup { a.days } else { None },
        dry_run: a.dry_run,
        backup_first: a.backup_first,
    };
    let pool = ctx.pool().await?;
    let selection = if a.all { Selection::All } else { Selection::Slugs(a.slugs) };
    let actor = a.actor.unwrap_or_else(activity::default_actor);
    let jobs = vacuum::enqueue_maintenance(&pool, selection, &request, &actor).await?;
    if !a.wait {
        output::job_ids(ctx, &jobs);
        return Ok(ExitCode::SUCCESS);
    }
    let ids: Vec<String> = jobs.iter().map(|(_, id)| id.clone()).collect();
    let finished = wait::jobs(ctx, &pool, &ids, a.timeout).await?;
    output::finished_jobs(ctx, &finished);
    if let Some(dead) = finished.iter().find(|j| j.status != "done") {
        bail!(
            "maintenance of '{}' failed: {}; see `tenantctl tenant show {}`",
            dead.tenant.as_deref().unwrap_or("?"),
            dead.last_error.as_deref().unwrap_or("no error recorded"),
            dead.tenant.as_deref().unwrap_or("SLUG")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn schedule(ctx: &Ctx, cmd: ScheduleCommand) -> anyhow::Result<ExitCode> {
    let pool = ctx.pool().await?;
    let now = Utc::now();
    match cmd {
        ScheduleCommand::List => {
            let rows = schedule::overview(&pool, &ctx.config.scheduler, now).await?;
            if ctx.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<20} {:<16} {:<8} {:<22} LAST SLOT", "NAME", "CRON (UTC)", "JOB", "NEXT RUN");
                for r in rows {
                    let show = |t: Option<DateTime<Utc>>| t.map(schedule::slot_text).unwrap_or_else(|| "-".into());
                    println!("{:<20} {:<16} {:<8} {:<22} {}", r.name, r.cron, r.job, show(r.next_run), show(r.last_slot));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Run { name, slot } => {
            let s = Schedule::find(&ctx.config.scheduler, &name)?;
            let slot = match slot {
                Some(text) => {
                    let t = DateTime::parse_from_rfc3339(&text)
                        .map_err(|_| Error::Invalid(format!("--slot '{text}' is not a time like 2026-11-23T02:00:00Z")))?
                        .with_timezone(&Utc);
                    if !s.is_slot(t) {
                        return Err(Error::Invalid(format!("{text} is not a slot of {name} ({})", s.cron_text)).into());
                    }
                    t
                }
                None => s.current_slot(now).ok_or_else(|| Error::Invalid(format!("{name} has no slot before now")))?,
            };
            let by = format!("tenantctl:{}", activity::default_actor());
            let done = schedule::fan_out(&pool, &s, slot, &by).await?;
            if ctx.json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                let before = done.tenants.saturating_sub(done.enqueued as _);
                println!(
                    "{}: slot {}: {} tenant(s), {} new job(s) enqueued{}; see them with `tenantctl jobs list --type {}`",
                    done.schedule,
                    schedule::slot_text(done.slot),
                    done.tenants,
                    done.enqueued,
                    if before > 0 { format!(", {before} had their job for this slot already") } else { String::new() },
                    s.job_type()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
