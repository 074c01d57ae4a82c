//! `RestoreTenant`: replaces a tenant's live schema with a backup (see `ops::restore`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    activity,
    context::App,
    error::{Context as _, Result},
    ops::{admission, restore},
    queue,
    queue::{
        payload::{required, Field, Shape},
        Job, Policy, Run,
    },
};

/// Enqueues a restore of backup `backup_id` (or the newest routine one) of `slug`;
/// returns the backup id and the job id.
pub async fn enqueue(pool: &sqlx::PgPool, slug: &str, backup_id: Option<i64>, actor: &str) -> Result<(i64, String)> {
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    let (tenant, backup) = admission::admit_restore(&mut tx, slug, backup_id).await?;
    let job_id = queue::enqueue(&mut tx, &RestoreTenant { slug: slug.to_owned(), backup_id: backup.id }).await?;
    activity::record(&mut tx, actor, Some(tenant.id), "restore.requested", serde_json::json!({ "backup_id": backup.id, "job_id": job_id }))
        .await?;
    tx.commit().await.context("failed to commit the restore job")?;
    Ok((backup.id, job_id))
}

/// Payload: the backup is always a concrete id (`--latest` is resolved when enqueueing),
/// so a rerun never picks up the safety backup it took itself.
///
/// No idempotency key: restoring the same backup again next week is a new request, and
/// the tenant lock already keeps two restores of one tenant apart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreTenant {
    /// The tenant to restore.
    pub slug: String,
    /// The finished backup of that tenant to restore.
    pub backup_id: i64,
}

impl Job for RestoreTenant {
    const TYPE: &'static str = "RestoreTenant";
    const FIELDS: &'static [Field] = &[required("slug", Shape::String), required("backup_id", Shape::Integer)];
    const SLOT: Option<crate::lock::SlotKind> = Some(crate::lock::SlotKind::Heavy);
    const DESCRIPTION: &'static str = "safety backup, then restore a backup in place of the live schema";
    const POLICY: Policy = Policy { max_attempts: 3, timeout_secs: 21600, ..Policy::DEFAULT };

    fn idempotency_key(&self) -> Option<String> {
        None
    }

    fn tenant(&self) -> Option<&str> {
        Some(&self.slug)
    }

    async fn run(&self, app: &App, run: &Run) -> Result<Value> {
        let restored = restore::restore(app, &self.slug, self.backup_id, &run.job_id).await?;
        Ok(serde_json::to_value(restored).expect("restore outcome serializes"))
    }

    async fn on_dead(&self, app: &App, job_id: &str, _error: &str) -> Result<()> {
        restore::recover(app, &self.slug, self.backup_id, job_id).await
    }
}
