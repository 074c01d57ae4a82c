//! `MigrateTenant`: brings one tenant's schema to a product version (see `ops::rollout`
//! for the fan-out and `ops::migrations` for how each migration is applied).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    payload::{optional, required, Field, Shape},
    App, Job, Run,
};
use crate::{error::Result, lock::SlotKind, ops::migrations};

/// Payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrateTenant {
    pub slug: String,
    /// The tenant's id, so a late rerun never touches a newer tenant with the same slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<i64>,
    /// Apply the product's migrations up to and including this version.
    pub to: i64,
    /// Who asked, for the activity log.
    pub actor: String,
}

impl Job for MigrateTenant {
    const TYPE: &'static str = "MigrateTenant";
    const FIELDS: &'static [Field] = &[
        required("slug", Shape::String),
        optional("tenant_id", Shape::Integer),
        required("to", Shape::Integer),
        required("actor", Shape::String),
    ];
    const SLOT: Option<SlotKind> = Some(SlotKind::Migration);
    const TIMEOUT_SECS: u64 = 3600;

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("migrate:{}:{}", self.slug, self.to))
    }

    fn tenant(&self) -> Option<&str> {
        Some(&self.slug)
    }

    async fn run(&self, app: &App, _run: &Run) -> Result<Value> {
        let applied = migrations::migrate_tenant_to(app, &self.slug, self.tenant_id, Some(self.to), &self.actor).await?;
        Ok(json!({ "applied": applied }))
    }

    async fn on_dead(&self, app: &App, _job_id: &str, error: &str) -> Result<()> {
        migrations::record_failure(app, &self.slug, self.tenant_id, error).await
    }
}
