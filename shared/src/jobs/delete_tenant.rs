//! `DeleteTenant` (see `ops::delete`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::access::Requested;
use crate::{
    context::App,
    error::{Context as _, Error, Result},
    ops::delete,
    queue,
    queue::{
        payload::{optional, required, Field, Shape},
        Job, Policy, Run,
    },
    tenants,
};

/// Payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteTenant {
    /// The tenant to delete.
    pub slug: String,
    /// The tenant's id, so a late rerun never touches a newer tenant with the same slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<i64>,
    /// Who asked, for the activity log.
    pub actor: String,
}

impl Job for DeleteTenant {
    const TYPE: &'static str = "DeleteTenant";
    const FIELDS: &'static [Field] =
        &[required("slug", Shape::String), optional("tenant_id", Shape::Integer), required("actor", Shape::String)];
    const SLOT: Option<crate::lock::SlotKind> = Some(crate::lock::SlotKind::Heavy);
    const DESCRIPTION: &'static str = "verified pre_delete backup, then drop schema or database and role";
    const POLICY: Policy = Policy { max_attempts: 5, timeout_secs: 21600, ..Policy::DEFAULT };

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("delete:{}", self.slug))
    }

    fn tenant(&self) -> Option<&str> {
        Some(&self.slug)
    }

    async fn run(&self, app: &App, run: &Run) -> Result<Value> {
        delete::delete(app, &self.slug, self.tenant_id, &run.job_id, &self.actor).await?;
        Ok(json!({ "status": "deleted" }))
    }
}

/// Marks the tenant `deleting` (no further changes accepted) and enqueues its deletion.
pub async fn request(pool: &sqlx::PgPool, slug: &str, actor: &str) -> Result<String> {
    match request_delete(pool, slug, actor).await? {
        Requested::Enqueued(job_id) => Ok(job_id),
        Requested::Already(_) => Err(Error::Conflict(format!("tenant '{slug}' is deleted already"))),
        Requested::Underway(_) => Err(Error::Conflict(format!("tenant '{slug}' is being deleted already"))),
    }
}

/// [`request`], telling "deleted already" and "being deleted already" (with the job that
/// is deleting it) apart: reconciling scripts treat both as success.
pub async fn request_delete(pool: &sqlx::PgPool, slug: &str, actor: &str) -> Result<Requested> {
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    let tenant = tenants::get(&mut tx, slug).await?;
    let job = DeleteTenant { slug: slug.to_owned(), tenant_id: Some(tenant.id), actor: actor.to_owned() };
    match tenant.status.as_str() {
        "deleted" => return Ok(Requested::Already(tenant.status)),
        "deleting" => {
            let key = job.idempotency_key().expect("deletes have a key");
            if let Some(job_id) = queue::job_with_key(&mut tx, &key).await? {
                return Ok(Requested::Underway(job_id));
            }
        }
        _ => {}
    }
    delete::check(&tenant)?;
    tenants::set_status(&mut tx, &tenant, "deleting", None, actor).await?;
    let job_id = queue::enqueue(&mut tx, &job).await?;
    tx.commit().await.context("failed to commit the request")?;
    Ok(Requested::Enqueued(job_id))
}
