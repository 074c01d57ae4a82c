//! `tenantctl backup ...`

use std::process::ExitCode;

use anyhow::bail;
use tenant_master::{
    activity, backups,
    jobs::{backup_tenant, restore_tenant},
    tenants::{self, Selection},
    Error,
};

use crate::{args::BackupCommand, output, wait, Ctx};

pub async fn run(ctx: &Ctx, cmd: BackupCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BackupCommand::Create { slugs, all, keep, actor, wait, timeout } => {
            let selection = if all { Selection::All } else { Selection::Slugs(slugs) };
            create(ctx, selection, keep, actor, wait, timeout).await
        }
        BackupCommand::List { slug } => {
            let pool = ctx.pool().await?;
            let mut conn = pool.acquire().await?;
            let tenant = tenants::get(&mut conn, &slug).await?;
            output::backup_list(ctx, &backups::list(&mut conn, tenant.id).await?);
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Restore { slug, latest: _, backup, yes, actor, wait, timeout } => {
            restore(ctx, slug, backup, yes, actor, wait, timeout).await
        }
    }
}

/// `backup create`: a manual backup of each selected tenant, followed with `--wait`.
async fn create(
    ctx: &Ctx,
    selection: Selection,
    keep: Option<u32>,
    actor: Option<String>,
    wait: bool,
    timeout: Option<std::time::Duration>,
) -> anyhow::Result<ExitCode> {
    let pool = ctx.pool().await?;
    let actor = actor.unwrap_or_else(activity::default_actor);
    let jobs = backup_tenant::enqueue_manual(&pool, selection, keep, &actor).await?;
    let ids: Vec<String> = jobs.iter().map(|(_, id)| id.clone()).collect();
    if !wait {
        output::job_ids(ctx, &jobs);
        return Ok(ExitCode::SUCCESS);
    }
    let finished = wait::jobs(ctx, &pool, &ids, timeout).await?;
    output::finished_jobs(ctx, &finished);
    let failed: Vec<_> = finished.iter().filter(|j| j.status != "done").collect();
    if let Some(first) = failed.first() {
        bail!(
            "{} of {} backups failed, first {}: {}; see `tenantctl backup list {}`",
            failed.len(),
            finished.len(),
            first.tenant.as_deref().unwrap_or("?"),
            first.last_error.as_deref().unwrap_or("no error recorded"),
            first.tenant.as_deref().unwrap_or("SLUG")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `backup restore`: replaces the live data from a backup (a safety backup first).
async fn restore(
    ctx: &Ctx,
    slug: String,
    backup: Option<i64>,
    yes: bool,
    actor: Option<String>,
    wait: bool,
    timeout: Option<std::time::Duration>,
) -> anyhow::Result<ExitCode> {
    if !yes {
        return Err(Error::Invalid(format!(
            "restoring replaces the live data of '{slug}' (a safety backup is taken first): add --yes to go ahead"
        ))
        .into());
    }
    let pool = ctx.pool().await?;
    let actor = actor.unwrap_or_else(activity::default_actor);
    let (backup_id, job_id) = restore_tenant::enqueue(&pool, &slug, backup, &actor).await?;
    if !wait {
        output::job_ids(ctx, &[(slug, job_id)]);
        return Ok(ExitCode::SUCCESS);
    }
    let finished = wait::jobs(ctx, &pool, std::slice::from_ref(&job_id), timeout).await?;
    if let Some(dead) = finished.iter().find(|j| j.status != "done") {
        // The job's own error says what state the live data is in.
        bail!(
            "restore of backup {backup_id} into '{slug}' failed: {}; `tenantctl jobs show {job_id}` has the details",
            dead.last_error.as_deref().unwrap_or("no error recorded")
        );
    }
    output::finished_jobs(ctx, &finished);
    Ok(ExitCode::SUCCESS)
}
