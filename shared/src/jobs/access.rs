//! `PauseTenant` (pause or suspend) and `ResumeTenant` (see `ops::access`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    activity,
    context::App,
    error::{Context as _, Error, Result},
    ops::access::{self, Change},
    queue,
    queue::{
        payload::{defaulted, optional, required, Field, Shape},
        Job, Policy, Run,
    },
    tenants,
};

/// Payload of a pause or suspension.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PauseTenant {
    /// The tenant to pause or suspend.
    pub slug: String,
    /// Suspend (billing, abuse) rather than pause (the customer's own choice).
    #[serde(default)]
    pub suspend: bool,
    /// Why, for the activity log and the tenant's status reason; a suspension needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who asked, for the activity log.
    pub actor: String,
}

/// Payload of a resumption.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeTenant {
    /// The tenant to resume.
    pub slug: String,
    /// Who asked, for the activity log.
    pub actor: String,
}

impl Job for PauseTenant {
    const TYPE: &'static str = "PauseTenant";
    const FIELDS: &'static [Field] = &[
        required("slug", Shape::String),
        defaulted("suspend", Shape::Boolean),
        optional("reason", Shape::String),
        required("actor", Shape::String),
    ];
    const DESCRIPTION: &'static str = "pause or suspend: the tenant role loses LOGIN, its sessions end";
    const POLICY: Policy = Policy { max_attempts: 5, timeout_secs: 300, ..Policy::DEFAULT };

    fn idempotency_key(&self) -> Option<String> {
        None
    }

    fn tenant(&self) -> Option<&str> {
        Some(&self.slug)
    }

    async fn run(&self, app: &App, run: &Run) -> Result<Value> {
        let change = if self.suspend { Change::Suspend } else { Change::Pause };
        let tenant = access::change_access_for_job(app, &self.slug, change, self.reason.as_deref(), &self.actor, &run.job_id).await?;
        Ok(json!({ "status": tenant.status }))
    }
}

impl Job for ResumeTenant {
    const TYPE: &'static str = "ResumeTenant";
    const FIELDS: &'static [Field] = &[required("slug", Shape::String), required("actor", Shape::String)];
    const DESCRIPTION: &'static str = "give a paused or suspended tenant its LOGIN back";
    const POLICY: Policy = Policy { max_attempts: 5, timeout_secs: 300, ..Policy::DEFAULT };

    fn idempotency_key(&self) -> Option<String> {
        None
    }

    fn tenant(&self) -> Option<&str> {
        Some(&self.slug)
    }

    async fn run(&self, app: &App, run: &Run) -> Result<Value> {
        let tenant = access::change_access_for_job(app, &self.slug, Change::Resume, None, &self.actor, &run.job_id).await?;
        Ok(json!({ "status": tenant.status }))
    }
}

/// Checks the transition, then enqueues the job for it (and logs the request).
pub async fn request(pool: &sqlx::PgPool, slug: &str, change: Change, reason: Option<&str>, actor: &str) -> Result<String> {
    match request_change(pool, slug, change, reason, actor).await? {
        Requested::Enqueued(job_id) => Ok(job_id),
        Requested::Already(status) => Err(Error::Conflict(format!("tenant '{slug}' is {status} already: nothing to do"))),
        Requested::Underway(job_id) => Err(Error::Conflict(format!("tenant '{slug}' is changing already (job {job_id})"))),
    }
}

/// What a lifecycle request (pause, suspend, resume, delete) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// The job's id.
    Enqueued(String),
    /// The tenant is in the wanted status already (this status): nothing was enqueued.
    Already(String),
    /// The same change is under way already, in this job: nothing new was enqueued.
    Underway(String),
}

/// [`request`], telling "already in that state" apart: reconciling scripts treat it as
/// success.
pub async fn request_change(pool: &sqlx::PgPool, slug: &str, change: Change, reason: Option<&str>, actor: &str) -> Result<Requested> {
    if change == Change::Suspend && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(Error::Invalid("a suspension needs --reason".into()));
    }
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    let tenant = tenants::get(&mut tx, slug).await?;
    if !change.check(&tenant)? {
        return Ok(Requested::Already(tenant.status));
    }
    let (slug, actor_owned) = (slug.to_owned(), actor.to_owned());
    let job_id = match change {
        Change::Resume => queue::enqueue(&mut tx, &ResumeTenant { slug, actor: actor_owned }).await?,
        _ => {
            let job = PauseTenant { slug, suspend: change == Change::Suspend, reason: reason.map(str::to_owned), actor: actor_owned };
            queue::enqueue(&mut tx, &job).await?
        }
    };
    activity::record(
        &mut tx,
        actor,
        Some(tenant.id),
        &format!("tenant.{}_requested", change.target()),
        json!({ "job_id": job_id, "reason": reason }),
    )
    .await?;
    tx.commit().await.context("failed to commit the request")?;
    Ok(Requested::Enqueued(job_id))
}
