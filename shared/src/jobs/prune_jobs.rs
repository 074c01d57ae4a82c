//! `PruneJobs`: deletes finished queue rows after a retention (see `ops::prune`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    context::App,
    queue::{
        payload::{required, Field, Shape, SCHEDULED},
        Job, Policy, Run,
    },
};
use crate::{error::Result, ops::prune};

/// Payload; `schedule` and `slot` are set by the scheduler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PruneJobs {
    /// Done jobs older than this many days are deleted.
    pub done_older_than_days: u32,
    /// Dead jobs (kept longer, for admins) older than this many days are deleted.
    pub dead_older_than_days: u32,
    /// The schedule that enqueued it; none when asked for by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The schedule's slot it was enqueued for (`YYYY-MM-DDTHH:MM:SSZ`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
}

impl Job for PruneJobs {
    const TYPE: &'static str = "PruneJobs";
    const FIELDS: &'static [Field] =
        &[required("done_older_than_days", Shape::Count), required("dead_older_than_days", Shape::Count), SCHEDULED[0], SCHEDULED[1]];
    const DESCRIPTION: &'static str = "delete finished queue rows older than the retention";
    const POLICY: Policy = Policy { max_attempts: 3, timeout_secs: 1800, ..Policy::DEFAULT };

    fn idempotency_key(&self) -> Option<String> {
        super::schedule_key(self.schedule.as_deref(), "_queue", self.slot.as_deref())
    }

    fn tenant(&self) -> Option<&str> {
        None
    }

    async fn run(&self, app: &App, _run: &Run) -> Result<Value> {
        let report = prune::prune_jobs(&app.pool, self.done_older_than_days, self.dead_older_than_days).await?;
        let backups = prune::prune_deleted_tenant_backups(&app.pool, app.config.backups.keep_deleted_days).await?;
        let kept_sources = crate::ops::move_cleanup::prune_kept_sources(app).await?;
        Ok(json!({ "jobs": report, "deleted_tenant_backups": backups, "moved_sources_dropped": kept_sources }))
    }
}
