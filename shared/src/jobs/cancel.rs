//! Cancelling a job so that its tenant is left in a state an admin can act on.
//!
//! A pending `ProvisionTenant` leaves its tenant `provisioning`, a pending `DeleteTenant`
//! leaves it `deleting`: states no command moves it out of. Cancelling one moves the tenant
//! on (`failed`, or back to the status it had before the delete was asked for); a delete
//! that has begun cannot be cancelled part way, only finished.

use serde_json::json;

use crate::{
    activity,
    error::{Context as _, Error, Result},
    queue::{self, JobInfo},
    tenants,
};

/// A cancelled job and, in one sentence, where that leaves its tenant.
pub struct Cancelled {
    pub job: JobInfo,
    pub tenant_note: Option<String>,
}

/// What job `job` is (and, in words, how far it went), if it has begun changing its tenant
/// and so can only be finished (by its retry, or by its giving up, which undoes it). Begun
/// is what each job recorded before its first change, not the attempts count (`jobs retry`
/// resets it; waiting for a host slot adds to it and changes nothing).
async fn begun(pool: &sqlx::PgPool, job: &JobInfo) -> Result<Option<(&'static str, &'static str)>> {
    let mut conn = pool.acquire().await.context("failed to connect to the control-plane database")?;
    let (what, begun) = match job.job_type.as_str() {
        "DeleteTenant" => (("delete", ""), crate::ops::delete::has_started(&mut conn, &job.id).await?),
        "MoveTenant" => (("move", " (its login is held)"), crate::ops::moves::has_held(&mut conn, &job.id).await?),
        // A dead restore put the data back when it gave up: cancelling it only tidies the list.
        "RestoreTenant" if job.status != "dead" => {
            (("restore", " (its data may be set aside)"), crate::ops::restore::has_begun(&mut conn, &job.id).await?)
        }
        _ => return Ok(None),
    };
    Ok(begun.then_some(what))
}

/// Cancels job `id` (not running, not done), on behalf of `actor`.
pub async fn cancel(pool: &sqlx::PgPool, id: &str, actor: &str) -> Result<Cancelled> {
    let job = queue::get(pool, id).await?;
    let slug = job.tenant.clone().unwrap_or_default();
    if let Some((what, why)) = begun(pool, &job).await? {
        return Err(Error::Conflict(format!(
            "the {what} of '{slug}' has begun{why} and cannot be cancelled part way: `tenantctl jobs retry {id}` finishes it"
        )));
    }
    let job = queue::cancel(pool, id, actor).await?;
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    let Some(tenant) = tenants::find(&mut tx, &slug).await? else {
        // A job of no tenant (pruning, the benchmark's): logged all the same.
        activity::record(&mut tx, actor, None, "job.cancelled", json!({ "job_id": job.id, "type": job.job_type })).await?;
        tx.commit().await.context("failed to commit the cancellation")?;
        return Ok(Cancelled { job, tenant_note: None });
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
    Ok(Cancelled { job, tenant_note: note })
}
