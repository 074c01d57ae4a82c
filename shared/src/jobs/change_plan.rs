//! Changing a tenant's plan: not a job of its own. A plan with the same isolation on the
//! same host is a change of the registry only; otherwise it enqueues a `MoveTenant`, and
//! the plan changes with the data.

use sqlx::PgPool;

use super::move_tenant::{self, Requested};
use crate::{
    config::Config,
    error::{Context as _, Error, Result},
    naming::Plan,
    ops::{admission, place::Place},
    plans::record,
    tenants::{self, Tenant},
};

/// What a plan change did.
#[derive(Debug)]
pub enum Changed {
    /// The tenant was on that plan (and host) already.
    Unchanged(Tenant),
    /// The registry says the new plan (same isolation, same host).
    Changed(Tenant),
    /// The tenant's data must move (another isolation or host): a `MoveTenant` job was
    /// enqueued, and the plan changes when the data has moved.
    Moving {
        /// The `MoveTenant` job's id.
        job_id: String,
        /// Where the tenant lives now.
        from: Place,
        /// Where it would go now (the job works its target out again when it first runs).
        to: Place,
    },
}

/// Puts tenant `slug` on `plan` (and on `host`, if given) and records who did it. A plan
/// with the same isolation (free/starter/business share a database; enterprise/lifetime
/// have their own) on the same host is a change of the registry only; otherwise a
/// `MoveTenant` is enqueued and the plan changes with the data.
pub async fn change(pool: &PgPool, config: &Config, slug: &str, plan: &str, host: Option<&str>, actor: &str) -> Result<Changed> {
    let to = Plan::parse(plan)?;
    let mut conn = pool.acquire().await.context("failed to connect to the control-plane database")?;
    let tenant = tenants::get(&mut conn, slug).await?;
    drop(conn);
    let other_host = host.is_some_and(|h| h != tenant.host);
    if other_host || to.isolation().as_str() != tenant.isolation {
        return match move_tenant::enqueue(pool, config, slug, host, Some(to), actor).await? {
            Requested::Enqueued { job_id, from, to } => Ok(Changed::Moving { job_id, from, to }),
            Requested::AlreadyThere(_) => change_in_place(pool, config, slug, to, actor).await,
        };
    }
    change_in_place(pool, config, slug, to, actor).await
}

/// A plan change that moves no data.
async fn change_in_place(pool: &PgPool, config: &Config, slug: &str, to: Plan, actor: &str) -> Result<Changed> {
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    let tenant = tenants::get(&mut tx, slug).await?;
    // The row is locked before its plan is read, so two admins at once leave one
    // consistent history (the second starts from the first one's plan).
    let (status, current): (String, String) = sqlx::query_as("SELECT status, plan FROM tenant_master.tenants WHERE id = $1 FOR UPDATE")
        .bind(tenant.id)
        .fetch_one(&mut *tx)
        .await
        .context("failed to lock the tenant")?;
    // A move under way switches the plan it was asked for when it ends: not overwritten.
    // Checked under the row lock, which a move request takes too.
    admission::refuse_while_moving(&mut tx, slug).await?;
    if !matches!(status.as_str(), "active" | "paused" | "suspended") {
        return Err(Error::Conflict(format!("tenant '{slug}' is {status}: only a live tenant changes plan")));
    }
    if current == to.as_str() {
        return Ok(Changed::Unchanged(tenant));
    }
    let from = Plan::parse(&current)?;
    if to.isolation().as_str() != tenant.isolation {
        return Err(Error::Conflict(format!("tenant '{slug}' was moved meanwhile: nothing was changed; run the command again")));
    }
    sqlx::query("UPDATE tenant_master.tenants SET plan = $2, updated_at = now() WHERE id = $1")
        .bind(tenant.id)
        .bind(to.as_str())
        .execute(&mut *tx)
        .await
        .context("failed to change the plan")?;
    record(&mut tx, tenant.id, from.as_str(), to.as_str(), actor).await?;
    let tenant = tenants::get(&mut tx, slug).await?;
    tx.commit().await.context("failed to commit the plan change")?;
    // The new plan's connection limit now; if the host does not answer, the tenant's next
    // job sets it (every job does).
    if let Err(e) = apply_connection_limit(pool, config, &tenant).await {
        tracing::warn!(tenant = %slug, error = %e, "plan changed; its connection limit is set by the tenant's next job");
    }
    Ok(Changed::Changed(tenant))
}

async fn apply_connection_limit(pool: &PgPool, config: &Config, tenant: &tenants::Tenant) -> Result<()> {
    let mut cp = pool.acquire().await.context("failed to connect to the control-plane database")?;
    // A tenant transaction may hold its role's catalog row: wait 5 s at most (then the
    // next job sets the limit).
    let options = crate::hosts::admin_options(&mut cp, config, &tenant.host).await?;
    let mut admin = crate::tenant_session::admin_connection(&options).await?;
    crate::db::limit_connections(&mut admin, &tenant.role, config.tenant_max_connections(&tenant.plan)).await
}
