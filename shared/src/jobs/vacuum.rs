//! `Vacuum`: VACUUM / ANALYZE / REINDEX of one tenant (see `ops::maintenance`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cleanup::Cleanup;
use crate::{
    activity,
    backups::Kind,
    context::App,
    error::{Context as _, Error, Result},
    ops::{backup, maintenance},
    queue,
    queue::{
        payload::{defaulted, required, Field, Shape, SCHEDULED},
        Job, Policy, Run,
    },
    tenants::{self, Selection},
};

/// What `tenantctl maintenance` asks for.
pub struct MaintenanceRequest {
    /// Vacuum, analyze, reindex or full: what a `Vacuum` job runs.
    pub tasks: maintenance::Tasks,
    /// Cleanup: rows older than this many days.
    pub cleanup_days: Option<u32>,
    /// Cleanup only: count the rows, delete nothing.
    pub dry_run: bool,
    /// Back each tenant up (`pre_maintenance`) before its first job changes anything.
    pub backup_first: bool,
}

/// Enqueues maintenance for the selected tenants in one transaction: a `Vacuum` job if any
/// of vacuum/analyze/reindex/full is asked, a `Cleanup` job if cleanup is. With
/// `backup_first`, the first of a tenant's jobs (cleanup, else vacuum) backs it up first.
pub async fn enqueue_maintenance(
    pool: &sqlx::PgPool,
    selection: Selection,
    req: &MaintenanceRequest,
    actor: &str,
) -> Result<Vec<(String, String)>> {
    let t = req.tasks;
    let wants_vacuum = t.vacuum || t.full || t.analyze || t.reindex;
    if !wants_vacuum && req.cleanup_days.is_none() {
        return Err(Error::Invalid("say what to do: --vacuum, --analyze, --reindex, --full and/or --cleanup --days N".into()));
    }
    if req.cleanup_days == Some(0) {
        return Err(Error::Invalid("--days must be at least 1".into()));
    }
    if req.dry_run && req.cleanup_days.is_none() {
        return Err(Error::Invalid("--dry-run applies to --cleanup only".into()));
    }
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    let mut jobs = Vec::new();
    for (id, slug) in tenants::select(&mut tx, &selection, "maintained").await? {
        if let Some(days) = req.cleanup_days {
            let job = Cleanup {
                slug: slug.clone(),
                older_than_days: days,
                dry_run: req.dry_run,
                backup_first: req.backup_first,
                schedule: None,
                slot: None,
            };
            jobs.push((slug.clone(), queue::enqueue(&mut tx, &job).await?));
        }
        if wants_vacuum {
            let backup_first = req.backup_first && req.cleanup_days.is_none();
            let job = Vacuum { slug: slug.clone(), tasks: t, backup_first, schedule: None, slot: None };
            jobs.push((slug.clone(), queue::enqueue(&mut tx, &job).await?));
        }
        activity::record(
            &mut tx,
            actor,
            Some(id),
            "maintenance.requested",
            serde_json::json!({ "tasks": t, "cleanup_days": req.cleanup_days, "dry_run": req.dry_run }),
        )
        .await?;
    }
    tx.commit().await.context("failed to commit the maintenance jobs")?;
    Ok(jobs)
}

/// Payload; `schedule` and `slot` are set by the scheduler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vacuum {
    /// The tenant to maintain.
    pub slug: String,
    /// What to run (its fields are the payload's).
    #[serde(flatten)]
    pub tasks: maintenance::Tasks,
    /// Take a pre-maintenance backup before touching anything.
    #[serde(default)]
    pub backup_first: bool,
    /// The schedule that enqueued it; none when asked for by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The schedule's slot it was enqueued for (`YYYY-MM-DDTHH:MM:SSZ`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
}

impl Job for Vacuum {
    const TYPE: &'static str = "Vacuum";
    const FIELDS: &'static [Field] = &[
        required("slug", Shape::String),
        defaulted("vacuum", Shape::Boolean),
        defaulted("full", Shape::Boolean),
        defaulted("analyze", Shape::Boolean),
        defaulted("reindex", Shape::Boolean),
        defaulted("backup_first", Shape::Boolean),
        SCHEDULED[0],
        SCHEDULED[1],
    ];
    const SLOT: Option<crate::lock::SlotKind> = Some(crate::lock::SlotKind::Heavy);
    const DESCRIPTION: &'static str = "VACUUM / ANALYZE / REINDEX of one tenant's tables";
    const POLICY: Policy = Policy { max_attempts: 3, timeout_secs: 21600, ..Policy::DEFAULT };

    fn idempotency_key(&self) -> Option<String> {
        super::schedule_key(self.schedule.as_deref(), &self.slug, self.slot.as_deref())
    }

    fn tenant(&self) -> Option<&str> {
        Some(&self.slug)
    }

    async fn run(&self, app: &App, run: &Run) -> Result<Value> {
        if self.backup_first {
            backup::backup(app, &self.slug, Kind::PreMaintenance, None, &run.job_id).await?;
            crate::fault::point(&self.slug, "maintenance:backup_first")?;
        }
        let actor = if self.schedule.is_some() { "scheduler" } else { "worker" };
        let report = maintenance::maintain(app, &self.slug, self.tasks, actor).await?;
        Ok(json!(report))
    }
}
