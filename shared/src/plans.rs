//! A tenant's plan history (`tenant_master.plan_changes`). Changing a plan is a request
//! of the queue layer (`jobs::change_plan`): across isolation modes or hosts it moves data.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;

use crate::{
    activity,
    error::{Context as _, Result},
};

/// One plan change.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PlanChange {
    /// The plan before.
    #[serde(rename = "from")]
    pub from_plan: String,
    /// The plan after.
    #[serde(rename = "to")]
    pub to_plan: String,
    /// Who changed it.
    pub actor: String,
    /// When it changed.
    pub changed_at: DateTime<Utc>,
}

/// Records a plan change in the history and the activity log (inside the caller's transaction).
pub async fn record(conn: &mut PgConnection, tenant_id: i64, from: &str, to: &str, actor: &str) -> Result<()> {
    sqlx::query("INSERT INTO tenant_master.plan_changes (tenant_id, from_plan, to_plan, actor) VALUES ($1, $2, $3, $4)")
        .bind(tenant_id)
        .bind(from)
        .bind(to)
        .bind(actor)
        .execute(&mut *conn)
        .await
        .context("failed to record the plan change")?;
    activity::record(conn, actor, Some(tenant_id), "tenant.plan_changed", json!({ "from": from, "to": to })).await
}

/// A tenant's plan changes, oldest first.
pub async fn history(conn: &mut PgConnection, tenant_id: i64) -> Result<Vec<PlanChange>> {
    sqlx::query_as("SELECT from_plan, to_plan, actor, changed_at FROM tenant_master.plan_changes WHERE tenant_id = $1 ORDER BY id")
        .bind(tenant_id)
        .fetch_all(conn)
        .await
        .context("failed to read the plan history")
}
