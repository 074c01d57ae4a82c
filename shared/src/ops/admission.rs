//! May this move or restore start? The checks a request passes before its job is
//! enqueued, in the enqueueing transaction where they read the registry, so the CLI, the
//! panel and a producer get the same refusal in one sentence and nothing is enqueued.

use sqlx::PgConnection;

use crate::{
    backups::{self, Backup},
    config::Config,
    error::{Context as _, Error, Result},
    hosts,
    naming::Plan,
    ops::{moves::refuse_same_server, place::Place},
    tenants::{self, Tenant},
};

/// Refuses a target host that is disabled, unknown, unreachable or the tenant's own server
/// under another name. Reads the host, so it runs outside the enqueueing transaction.
pub async fn check_move_target(cp: &mut PgConnection, config: &Config, tenant: &Tenant, host: Option<&str>) -> Result<()> {
    if let Some(host) = host.filter(|h| *h != tenant.host) {
        hosts::ensure_usable(cp, config, host).await?;
        refuse_same_server(cp, config, &tenant.host, host).await?;
    }
    Ok(())
}

/// Where a move of a tenant would go, once admitted.
#[derive(Debug)]
pub enum MoveAdmitted {
    /// The tenant is there already: nothing to do.
    AlreadyThere(Place),
    /// It may move.
    Go {
        /// The tenant, as read in the transaction (boxed: the variants stay alike in size).
        tenant: Box<Tenant>,
        /// Where it lives now.
        from: Place,
        /// Where it would go now (the job works its target out again when it first runs).
        to: Place,
    },
}

/// Admits a move of `slug` to `host` (default: where it is) and to the isolation of `plan`
/// (default: its plan's): the tenant must be live, and no other move of it under way.
pub async fn admit_move(
    tx: &mut PgConnection,
    config: &Config,
    slug: &str,
    host: Option<&str>,
    plan: Option<Plan>,
) -> Result<MoveAdmitted> {
    let tenant = tenants::get(tx, slug).await?;
    tenant.require_live("moved")?;
    // Two admins at once: the second waits here until the first has enqueued (or not),
    // then finds its move under way.
    sqlx::query("SELECT 1 FROM tenant_master.tenants WHERE id = $1 FOR UPDATE")
        .bind(tenant.id)
        .execute(&mut *tx)
        .await
        .context("failed to lock the tenant")?;
    refuse_while_moving(tx, slug).await?;
    let isolation = plan.unwrap_or(Plan::parse(&tenant.plan)?).isolation();
    let from = Place::of(&tenant);
    let to = Place::resolve(tx, config, &tenant, host.unwrap_or(&tenant.host), isolation).await?;
    if from == to {
        return Ok(MoveAdmitted::AlreadyThere(from));
    }
    Ok(MoveAdmitted::Go { tenant: Box::new(tenant), from, to })
}

/// Refuses a change of plan or place while a move of the tenant is under way (pending,
/// running or failed and to be retried): one at a time, each from where the last one ended.
pub async fn refuse_while_moving(conn: &mut PgConnection, slug: &str) -> Result<()> {
    let pending: Option<String> = sqlx::query_scalar(
        "SELECT id FROM tenant_master.jobs WHERE type = 'MoveTenant' AND tenant = $1 AND status IN ('pending', 'running', 'failed') LIMIT 1",
    )
    .bind(slug)
    .fetch_optional(conn)
    .await
    .context("failed to look for a move under way")?;
    match pending {
        Some(id) => Err(Error::Conflict(format!(
            "a move of '{slug}' is under way (job {id}): wait for it (`tenantctl jobs show {id}`), then ask again"
        ))),
        None => Ok(()),
    }
}

/// Admits a restore of backup `backup_id` (or, for `--latest`, the newest routine one) of
/// a live tenant; returns the tenant and the backup.
pub async fn admit_restore(tx: &mut PgConnection, slug: &str, backup_id: Option<i64>) -> Result<(Tenant, Backup)> {
    let tenant = tenants::get(tx, slug).await?;
    tenant.require_live("restored")?;
    let backup = match backup_id {
        Some(id) => {
            backups::get(tx, tenant.id, id).await.map_err(|e| match e {
                Error::NotFound(_) => Error::NotFound(format!("tenant '{slug}' has no finished backup {id}")),
                // A lost connection or a lock timeout is not "no such backup".
                e => e,
            })?
        }
        // --latest: the newest routine backup, never a safety copy (restoring twice would
        // otherwise restore the first restore's own pre_restore copy).
        None => backups::latest_routine(tx, tenant.id).await?.ok_or_else(|| {
            Error::NotFound(format!(
                "tenant '{slug}' has no routine backup to restore: `tenantctl backup list {slug}` shows its safety backups, restorable with --backup ID"
            ))
        })?,
    };
    Ok((tenant, backup))
}
