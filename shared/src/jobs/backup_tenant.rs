//! `BackupTenant`: one verified `pg_dump` of a tenant, then retention (see `ops::backup`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    activity,
    backups::Kind,
    context::App,
    error::{Context as _, Error, Result},
    ops::backup,
    queue,
    queue::{
        payload::{optional, required, Field, Shape, SCHEDULED},
        Job, Policy, Run,
    },
    tenants::{self, Selection},
};

/// Payload. `schedule` and `slot` (set by the scheduler) make the job once per slot:
/// key `<schedule>:<slug>:<slot>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupTenant {
    /// The tenant to back up.
    pub slug: String,
    /// Why the backup is taken.
    pub kind: Kind,
    /// Routine backups to keep; default: the plan's or the configured retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
    /// The schedule that enqueued it; none when asked for by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The schedule's slot it was enqueued for (`YYYY-MM-DDTHH:MM:SSZ`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
}

/// Enqueues manual backups in one transaction; returns (slug, job id) pairs.
pub async fn enqueue_manual(pool: &sqlx::PgPool, selection: Selection, keep: Option<u32>, actor: &str) -> Result<Vec<(String, String)>> {
    if keep == Some(0) {
        return Err(Error::Invalid("--keep must be at least 1".into()));
    }
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    let mut jobs = Vec::new();
    for (id, slug) in tenants::select(&mut tx, &selection, "backed up").await? {
        let job = BackupTenant { slug: slug.clone(), kind: Kind::Manual, keep, schedule: None, slot: None };
        let job_id = queue::enqueue(&mut tx, &job).await?;
        activity::record(&mut tx, actor, Some(id), "backup.requested", json!({ "job_id": job_id })).await?;
        jobs.push((slug, job_id));
    }
    tx.commit().await.context("failed to commit the backup jobs")?;
    Ok(jobs)
}

impl Job for BackupTenant {
    const TYPE: &'static str = "BackupTenant";
    const FIELDS: &'static [Field] = &[
        required("slug", Shape::String),
        required("kind", Shape::OneOf(crate::backups::Kind::NAMES)),
        optional("keep", Shape::Count),
        SCHEDULED[0],
        SCHEDULED[1],
    ];
    const SLOT: Option<crate::lock::SlotKind> = Some(crate::lock::SlotKind::Heavy);
    const DESCRIPTION: &'static str = "pg_dump of one tenant schema, verified, then retention";
    const POLICY: Policy = Policy { max_attempts: 5, timeout_secs: 21600, ..Policy::DEFAULT };

    fn idempotency_key(&self) -> Option<String> {
        super::schedule_key(self.schedule.as_deref(), &self.slug, self.slot.as_deref())
    }

    fn tenant(&self) -> Option<&str> {
        Some(&self.slug)
    }

    async fn run(&self, app: &App, run: &Run) -> Result<Value> {
        let mut laps = crate::telemetry::Laps::default();
        let done = backup::backup_timed(app, &self.slug, self.kind, self.keep, &run.job_id, &mut laps).await?;
        Ok(json!({ "backup_id": done.id, "bytes": done.bytes, "sha256": done.sha256, "timings_ms": laps.to_json() }))
    }
}
