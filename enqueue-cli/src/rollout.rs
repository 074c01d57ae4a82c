//! `tenantctl tenant migrate`: roll product migrations out to existing tenants.

use std::process::ExitCode;

use serde_json::json;
use tenant_master::{
    activity,
    jobs::migrate_tenant::Enqueued,
    ops::rollout::{self, RolloutFilter, TenantPlan},
    Error,
};

use crate::{args::MigrateArgs, wait, Ctx};

pub async fn run(ctx: &Ctx, a: MigrateArgs) -> anyhow::Result<ExitCode> {
    // Exactly one of the two.
    if a.all != a.slugs.is_empty() {
        return Err(Error::Invalid("name the tenants to migrate, or say --all (not both)".into()).into());
    }
    let filter = RolloutFilter { slugs: a.slugs, product: a.product, plan: a.plan, host: a.host, limit: a.limit, to: a.to };
    let pool = ctx.pool().await?;
    tenant_master::tenants::check_filter(&pool, None, filter.product.as_deref(), filter.plan.as_deref(), filter.host.as_deref()).await?;
    let mut conn = pool.acquire().await?;
    let plans = rollout::plan(&mut conn, &ctx.config, &filter).await?;
    drop(conn);
    // A tenant whose database cannot be read is skipped, said so, and makes the exit code 1.
    let unreachable: Vec<&TenantPlan> = plans.iter().filter(|p| p.unreachable.is_some()).collect();
    for p in &unreachable {
        eprintln!(
            "skipped {}: its database could not be read ({}); run the command again when its host is back",
            p.slug,
            p.unreachable.as_deref().unwrap_or("")
        );
    }
    // A tenant whose own ledger disagrees with the product stops itself only: skipped,
    // named, and the exit code is 1.
    let conflicts: Vec<&TenantPlan> = plans.iter().filter(|p| p.conflict.is_some()).collect();
    for p in &conflicts {
        eprintln!("skipped {}: {}", p.slug, p.conflict.as_deref().unwrap_or(""));
    }
    let (pending, up_to_date): (Vec<&TenantPlan>, Vec<&TenantPlan>) =
        plans.iter().filter(|p| p.unreachable.is_none() && p.conflict.is_none()).partition(|p| !p.pending.is_empty());
    let skipped_none = unreachable.is_empty() && conflicts.is_empty();
    if a.dry_run {
        print_dry_run(ctx, &pending, up_to_date.len(), unreachable.len(), &conflicts)?;
        return Ok(exit(skipped_none));
    }
    let actor = a.actor.unwrap_or_else(activity::default_actor);
    let enqueued = tenant_master::jobs::migrate_tenant::enqueue(&pool, &plans, &actor).await?;
    if !a.wait {
        if ctx.json {
            let jobs: Vec<_> = enqueued.jobs.iter().map(|(s, id)| json!({ "tenant": s, "job_id": id })).collect();
            let report = json!({
                "enqueued": jobs,
                "up_to_date": enqueued.up_to_date,
                "unreachable": enqueued.unreachable.len(),
                "conflicts": enqueued.conflicts.len(),
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!(
                "enqueued {} MigrateTenant job(s); {} tenant(s) up to date need none; follow with `tenantctl tenant migrate ... --wait` or `tenantctl jobs list --type MigrateTenant`",
                enqueued.jobs.len(),
                enqueued.up_to_date
            );
        }
        return Ok(exit(skipped_none));
    }
    follow(ctx, &pool, &enqueued, a.timeout, skipped_none).await
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What `--dry-run` would enqueue.
fn print_dry_run(
    ctx: &Ctx,
    pending: &[&TenantPlan],
    up_to_date: usize,
    unreachable: usize,
    conflicts: &[&TenantPlan],
) -> anyhow::Result<()> {
    if ctx.json {
        let conflicts: Vec<_> = conflicts.iter().map(|p| json!({ "slug": p.slug, "reason": p.conflict })).collect();
        let report = json!({ "pending": pending, "up_to_date": up_to_date, "unreachable": unreachable, "conflicts": conflicts });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in pending {
            let version = p.version.map_or("-".to_owned(), |v| format!("{v:04}"));
            println!("{:<24} at {version:<5} would apply {}", p.slug, p.pending.join(", "));
        }
        println!(
            "{} tenant(s) with pending migrations, {} up to date, {} unreachable, {} with a conflicting ledger (dry run: nothing was enqueued)",
            pending.len(),
            up_to_date,
            unreachable,
            conflicts.len()
        );
    }
    Ok(())
}

/// Waits for the enqueued migrations and says how each tenant came out.
async fn follow(
    ctx: &Ctx,
    pool: &sqlx::PgPool,
    enqueued: &Enqueued,
    timeout: Option<std::time::Duration>,
    skipped_none: bool,
) -> anyhow::Result<ExitCode> {
    let ids: Vec<String> = enqueued.jobs.iter().map(|(_, id)| id.clone()).collect();
    let finished = if ids.is_empty() { Vec::new() } else { wait::jobs(ctx, pool, &ids, timeout).await? };
    let failed: Vec<_> = finished.iter().filter(|j| j.status != "done").collect();
    let succeeded = finished.len() - failed.len();
    if ctx.json {
        let failures: Vec<_> = failed.iter().map(|j| json!({ "tenant": j.tenant, "job_id": j.id, "error": j.last_error })).collect();
        let report = json!({
            "succeeded": succeeded,
            "failed": failures,
            "up_to_date": enqueued.up_to_date,
            "unreachable": enqueued.unreachable.len(),
            "conflicts": enqueued.conflicts.len(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for j in &failed {
            println!(
                "FAILED {:<24} {} (job {})",
                j.tenant.as_deref().unwrap_or("-"),
                j.last_error.as_deref().unwrap_or("no error recorded"),
                j.id
            );
        }
        println!(
            "migrated {succeeded} tenant(s), {} failed, {} up to date, {} unreachable, {} with a conflicting ledger",
            failed.len(),
            enqueued.up_to_date,
            enqueued.unreachable.len(),
            enqueued.conflicts.len()
        );
        if !failed.is_empty() {
            println!("fix the failed tenants (see `tenantctl tenant show SLUG`), then run the same command again: it migrates only what is still pending");
        }
    }
    Ok(exit(failed.is_empty() && skipped_none))
}
