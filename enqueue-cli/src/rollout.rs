//! `tenantctl tenant migrate`: roll product migrations out to existing tenants.

use std::process::ExitCode;

use serde_json::json;
use tenant_master::{
    activity,
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
    let mut conn = pool.acquire().await?;
    let plans = rollout::plan(&mut conn, &ctx.config, &filter).await?;
    drop(conn);
    let (pending, up_to_date): (Vec<&TenantPlan>, Vec<&TenantPlan>) = plans.iter().partition(|p| !p.pending.is_empty());
    if a.dry_run {
        if ctx.json {
            println!("{}", serde_json::to_string_pretty(&json!({ "pending": pending, "up_to_date": up_to_date.len() }))?);
        } else {
            for p in &pending {
                let version = p.version.map_or("-".to_owned(), |v| format!("{v:04}"));
                println!("{:<24} at {version:<5} would apply {}", p.slug, p.pending.join(", "));
            }
            println!(
                "{} tenant(s) with pending migrations, {} up to date (dry run: nothing was enqueued)",
                pending.len(),
                up_to_date.len()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let actor = a.actor.unwrap_or_else(activity::default_actor);
    let enqueued = rollout::enqueue(&pool, &plans, &actor).await?;
    if !a.wait {
        if ctx.json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({ "enqueued": enqueued.jobs.iter().map(|(s, id)| json!({ "tenant": s, "job_id": id })).collect::<Vec<_>>(), "up_to_date": enqueued.up_to_date })
                )?
            );
        } else {
            println!(
                "enqueued {} MigrateTenant job(s); {} tenant(s) up to date need none; follow with `tenantctl tenant migrate ... --wait` or `tenantctl jobs list --type MigrateTenant`",
                enqueued.jobs.len(),
                enqueued.up_to_date
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let ids: Vec<String> = enqueued.jobs.iter().map(|(_, id)| id.clone()).collect();
    let finished = if ids.is_empty() { Vec::new() } else { wait::jobs(ctx, &pool, &ids).await? };
    let failed: Vec<_> = finished.iter().filter(|j| j.status != "done").collect();
    let succeeded = finished.len() - failed.len();
    if ctx.json {
        let failures: Vec<_> = failed.iter().map(|j| json!({ "tenant": j.tenant, "job_id": j.id, "error": j.last_error })).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "succeeded": succeeded, "failed": failures, "up_to_date": enqueued.up_to_date }))?
        );
    } else {
        for j in &failed {
            println!(
                "FAILED {:<24} {} (job {})",
                j.tenant.as_deref().unwrap_or("-"),
                j.last_error.as_deref().unwrap_or("no error recorded"),
                j.id
            );
        }
        println!("migrated {succeeded} tenant(s), {} failed, {} up to date", failed.len(), enqueued.up_to_date);
        if !failed.is_empty() {
            println!("fix the failed tenants (see `tenantctl tenant show SLUG`), then run the same command again: it migrates only what is still pending");
        }
    }
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
