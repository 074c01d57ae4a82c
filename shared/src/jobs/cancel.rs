//! Cancelling a job so that its tenant is left in a state an admin can act on.
//!
//! A pending `ProvisionTenant` leaves its tenant `provisioning`, a pending `DeleteTenant`
//! leaves it `deleting`: states no command moves it out of. Cancelling one moves the tenant
//! on (`failed`, or back to the status it had before the delete was asked for); a delete
//! that has begun cannot be cancelled part way, only finished.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;

use crate::{
    activity,
    error::{Context as _, Error, Result},
    queue::{self, JobInfo},
    tenants,
};

/// A cancelled job and, in one sentence, where that leaves its tenant.
pub struct Cancelled {
    /// The cancelled job.
    pub job: JobInfo,
    /// Where the cancel left the tenant, in one sentence; none if the tenant was not touched.
    pub tenant_note: Option<String>,
    /// Who cancelled it and when, if it was cancelled already: nothing was done now.
    pub already: Option<(String, DateTime<Utc>)>,
}

/// Why job `id` (of `job_type`, now `status`, of tenant `slug`) cannot be cancelled, if it
/// has begun changing its tenant and so can only be finished (by its retry, or by its
/// giving up, which undoes it). Begun is what each job recorded before its first change,
/// not the attempts count (`jobs retry` resets it; waiting for a host slot adds to it).
async fn begun(conn: &mut PgConnection, id: &str, job_type: &str, status: &str, slug: &str) -> Result<Option<String>> {
    let (what, why, begun) = match job_type {
        "DeleteTenant" => ("delete", "", crate::ops::delete::has_started(conn, id).await?),
        "MoveTenant" => ("move", " (its login is held)", crate::ops::moves::has_held(conn, id).await?),
        // A dead restore put the data back when it gave up: cancelling it only tidies the list.
        "RestoreTenant" if status != "dead" => ("restore", " (its data may be set aside)", crate::ops::restore::has_begun(conn, id).await?),
        _ => return Ok(None),
    };
    Ok(begun.then(|| {
        format!("the {what} of '{slug}' has begun{why} and cannot be cancelled part way: `tenantctl jobs retry {id}` finishes it")
    }))
}

/// `ids` split into the ones a cancel can take and the others, each with the reason (its
/// work has begun changing its tenant). A cancel by filter counts and takes the first only.
pub async fn cancellable(pool: &sqlx::PgPool, ids: &[String]) -> Result<(Vec<String>, Vec<(String, String)>)> {
    let mut conn = pool.acquire().await.context("failed to connect to the control-plane database")?;
    // Only these types can have begun: one query for the list, then one per such job.
    let candidates: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, type, status, tenant FROM tenant_master.jobs WHERE id = ANY($1) AND type IN ('DeleteTenant', 'MoveTenant', 'RestoreTenant')",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .context("failed to read the jobs to cancel")?;
    let mut refused = Vec::new();
    for (id, job_type, status, slug) in candidates {
        if let Some(reason) = begun(&mut conn, &id, &job_type, &status, slug.as_deref().unwrap_or("")).await? {
            refused.push((id, reason));
        }
    }
    let open = ids.iter().filter(|id| !refused.iter().any(|(r, _)| r == *id)).cloned().collect();
    Ok((open, refused))
}

/// Cancels job `id` (not running, not done), on behalf of `actor`. A job cancelled already
/// is no error: [`Cancelled::already`] says by whom.
pub async fn cancel(pool: &sqlx::PgPool, id: &str, actor: &str) -> Result<Cancelled> {
    let job = queue::get(pool, id).await?;
    let slug = job.tenant.clone().unwrap_or_default();
    let mut conn = pool.acquire().await.context("failed to connect to the control-plane database")?;
    if let Some(reason) = begun(&mut conn, id, &job.job_type, &job.status, &slug).await? {
        return Err(Error::Conflict(reason));
    }
    drop(conn);
    let Some(job) = queue::cancel(pool, id, actor).await? else {
        let already = queue::cancellation(pool, id).await?;
        return Ok(Cancelled { job, tenant_note: None, already });
    };
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    let Some(tenant) = tenants::find(&mut tx, &slug).await? else {
        // A job of no tenant (pruning, the benchmark's): logged all the same.
        activity::record(&mut tx, actor, None, "job.cancelled", json!({ "job_id": job.id, "type": job.job_type })).await?;
        tx.commit().await.context("failed to commit the cancellation")?;
        return Ok(Cancelled { job, tenant_note: None, already: None });
    };
    let note = match (job.job_type.as_str(), tenant.status.as_str()) {
        ("ProvisionTenant", "provisioning") => {
            tenants::set_status(&mut tx, &tenant, "failed", Some(&format!("provisioning cancelled by {actor}")), actor).await?;
            Some(format!(
                "tenant '{slug}' is now failed: `tenantctl tenant delete {slug} --yes` removes whatever was created and frees the slug"
            ))
        }
        ("DeleteTenant", "deleting") => {
            let before: Option<String> = sqlx::query_scalar(
                "SELECT details ->> 'from' FROM tenant_master.activity_log WHERE tenant_id = $1 AND action = 'tenant.deleting'
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(tenant.id)
            .fetch_optional(&mut *tx)
            .await
            .context("failed to read the tenant's status before the delete")?
            .flatten();
            let before = before.filter(|s| s != "deleting").unwrap_or_else(|| "active".to_owned());
            tenants::set_status(&mut tx, &tenant, &before, Some(&format!("delete cancelled by {actor}")), actor).await?;
            Some(format!("tenant '{slug}' is {before} again; nothing of it was touched"))
        }
        _ => None,
    };
    activity::record(&mut tx, actor, Some(tenant.id), "job.cancelled", json!({ "job_id": job.id, "type": job.job_type })).await?;
    tx.commit().await.context("failed to commit the cancellation")?;
    Ok(Cancelled { job, tenant_note: note, already: None })
}
