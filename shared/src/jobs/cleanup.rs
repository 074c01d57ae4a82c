//! `Cleanup`: prunes rows older than N days (see `ops::maintenance::cleanup`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    backups::Kind,
    context::App,
    error::Result,
    ops::{backup, maintenance},
    queue::{
        payload::{defaulted, required, Field, Shape, SCHEDULED},
        Job, Policy, Run,
    },
};

/// Payload; `schedule` and `slot` are set by the scheduler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cleanup {
    /// The tenant to clean up.
    pub slug: String,
    /// Rows older than this many days are deleted.
    pub older_than_days: u32,
    /// Only count what would be deleted.
    #[serde(default)]
    pub dry_run: bool,
    /// Take a safety backup (`pre_maintenance`) before deleting anything.
    #[serde(default)]
    pub backup_first: bool,
    /// The schedule that enqueued it; none when asked for by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The schedule's slot it was enqueued for (`YYYY-MM-DDTHH:MM:SSZ`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
}

impl Job for Cleanup {
    const TYPE: &'static str = "Cleanup";
    const FIELDS: &'static [Field] = &[
        required("slug", Shape::String),
        required("older_than_days", Shape::Count),
        defaulted("dry_run", Shape::Boolean),
        defaulted("backup_first", Shape::Boolean),
        SCHEDULED[0],
        SCHEDULED[1],
    ];
    const SLOT: Option<crate::lock::SlotKind> = Some(crate::lock::SlotKind::Heavy);
    const DESCRIPTION: &'static str = "delete rows older than N days from the product's prunable tables";
    const POLICY: Policy = Policy { max_attempts: 3, timeout_secs: 7200, ..Policy::DEFAULT };

    fn idempotency_key(&self) -> Option<String> {
        super::schedule_key(self.schedule.as_deref(), &self.slug, self.slot.as_deref())
    }

    fn tenant(&self) -> Option<&str> {
        Some(&self.slug)
    }

    async fn run(&self, app: &App, run: &Run) -> Result<Value> {
        if self.backup_first && !self.dry_run {
            backup::backup(app, &self.slug, Kind::PreMaintenance, None, &run.job_id).await?;
            crate::fault::point(&self.slug, "maintenance:backup_first")?;
        }
        let actor = if self.schedule.is_some() { "scheduler" } else { "worker" };
        let report = maintenance::cleanup(app, &self.slug, self.older_than_days, self.dry_run, actor).await?;
        Ok(json!(report))
    }
}
