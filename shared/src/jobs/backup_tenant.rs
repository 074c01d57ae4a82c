//! `BackupTenant`: one verified `pg_dump` of a tenant, then retention (see `ops::backup`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{App, Job, Run};
use crate::{
    activity,
    backups::Kind,
    error::{Context as _, Error, Result},
    naming::Slug,
    ops::backup,
    queue,
};

/// Which tenants `backup create` covers.
pub enum Selection {
    /// These slugs; every one must exist, or nothing is enqueued.
    Slugs(Vec<String>),
    /// Every active, paused or suspended tenant.
    All,
}

/// Enqueues manual backups in one transaction; returns (slug, job id) pairs.
pub async fn enqueue_manual(pool: &sqlx::PgPool, selection: Selection, keep: Option<u32>, actor: &str) -> Result<Vec<(String, String)>> {
    if keep == Some(0) {
        return Err(Error::Invalid("--keep must be at least 1".into()));
    }
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    let tenants: Vec<(i64, String, String)> = match &selection {
        Selection::All => sqlx::query_as(
            "SELECT id, slug, status FROM tenant_master.tenants WHERE status IN ('active', 'paused', 'suspended') ORDER BY slug",
        )
        .fetch_all(&mut *tx)
        .await
        .context("failed to list tenants")?,
        Selection::Slugs(slugs) => {
            for slug in slugs {
                Slug::parse(slug)?;
            }
            let found: Vec<(i64, String, String)> =
                sqlx::query_as("SELECT id, slug, status FROM tenant_master.tenants WHERE slug = ANY($1) ORDER BY slug")
                    .bind(slugs)
                    .fetch_all(&mut *tx)
                    .await
                    .context("failed to look up tenants")?;
            if let Some(missing) = slugs.iter().find(|s| !found.iter().any(|(_, f, _)| f == *s)) {
                return Err(Error::NotFound(format!("there is no tenant '{missing}': nothing was enqueued")));
            }
            if let Some((_, slug, status)) = found.iter().find(|(_, _, st)| !matches!(st.as_str(), "active" | "paused" | "suspended")) {
                return Err(Error::Conflict(format!("tenant '{slug}' is {status} and cannot be backed up: nothing was enqueued")));
            }
            found
        }
    };
    let mut jobs = Vec::with_capacity(tenants.len());
    for (id, slug, _) in tenants {
        let job = BackupTenant { slug: slug.clone(), kind: Kind::Manual, keep, slot: None };
        let job_id = queue::enqueue(&mut tx, &job).await?;
        activity::record(&mut tx, actor, Some(id), "backup.requested", json!({ "job_id": job_id })).await?;
        jobs.push((slug, job_id));
    }
    tx.commit().await.context("failed to commit the backup jobs")?;
    Ok(jobs)
}

/// Payload. `slot` (scheduled runs) makes the job once-per-slot: `backup:<slug>:<slot>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupTenant {
    pub slug: String,
    pub kind: Kind,
    /// Routine backups to keep; default: the plan's or the configured retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
}

impl Job for BackupTenant {
    const TYPE: &'static str = "BackupTenant";

    fn idempotency_key(&self) -> Option<String> {
        self.slot.as_ref().map(|slot| format!("backup:{}:{slot}", self.slug))
    }

    fn tenant(&self) -> Option<&str> {
        Some(&self.slug)
    }

    async fn run(&self, app: &App, run: &Run) -> Result<Value> {
        let done = backup::backup(app, &self.slug, self.kind, self.keep, &run.job_id).await?;
        Ok(json!({ "backup_id": done.id, "bytes": done.bytes, "sha256": done.sha256 }))
    }
}
