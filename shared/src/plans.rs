//! Changing a tenant's plan, with its history (`tenant_master.plan_changes`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, PgPool};

use crate::{
    activity,
    error::{Context as _, Error, Result},
    naming::Plan,
    tenants::{self, Tenant},
};

/// One plan change.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PlanChange {
    #[serde(rename = "from")]
    pub from_plan: String,
    #[serde(rename = "to")]
    pub to_plan: String,
    pub actor: String,
    pub changed_at: DateTime<Utc>,
}

/// Puts tenant `slug` on `plan` and records who did it. A plan with the same isolation
/// (free/starter/business share a database; enterprise/lifetime have their own) is a
/// change of the registry only. Moving between the two needs the tenant's data moved,
/// which is not built yet: refused, nothing changed.
pub async fn change(pool: &PgPool, slug: &str, plan: &str, actor: &str) -> Result<(Tenant, bool)> {
    let to = Plan::parse(plan)?;
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    let tenant = tenants::get(&mut tx, slug).await?;
    // The row is locked before its plan is read, so two admins at once leave one
    // consistent history (the second starts from the first one's plan).
    let (status, current): (String, String) = sqlx::query_as("SELECT status, plan FROM tenant_master.tenants WHERE id = $1 FOR UPDATE")
        .bind(tenant.id)
        .fetch_one(&mut *tx)
        .await
        .context("failed to lock the tenant")?;
    if !matches!(status.as_str(), "active" | "paused" | "suspended") {
        return Err(Error::Conflict(format!("tenant '{slug}' is {status}: only a live tenant changes plan")));
    }
    if current == to.as_str() {
        return Ok((tenant, false));
    }
    let from = Plan::parse(&current)?;
    if from.isolation() != to.isolation() {
        return Err(Error::Conflict(format!(
            "'{slug}' would move from {} to {} and so between a shared and a dedicated database, which needs the tenant's data moved (MoveTenant, not built yet): nothing was changed",
            from.as_str(),
            to.as_str()
        )));
    }
    sqlx::query("UPDATE tenant_master.tenants SET plan = $2, updated_at = now() WHERE id = $1")
        .bind(tenant.id)
        .bind(to.as_str())
        .execute(&mut *tx)
        .await
        .context("failed to change the plan")?;
    sqlx::query("INSERT INTO tenant_master.plan_changes (tenant_id, from_plan, to_plan, actor) VALUES ($1, $2, $3, $4)")
        .bind(tenant.id)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(actor)
        .execute(&mut *tx)
        .await
        .context("failed to record the plan change")?;
    activity::record(&mut tx, actor, Some(tenant.id), "tenant.plan_changed", json!({ "from": from.as_str(), "to": to.as_str() })).await?;
    let tenant = tenants::get(&mut tx, slug).await?;
    tx.commit().await.context("failed to commit the plan change")?;
    Ok((tenant, true))
}

/// A tenant's plan changes, oldest first.
pub async fn history(conn: &mut PgConnection, tenant_id: i64) -> Result<Vec<PlanChange>> {
    sqlx::query_as("SELECT from_plan, to_plan, actor, changed_at FROM tenant_master.plan_changes WHERE tenant_id = $1 ORDER BY id")
        .bind(tenant_id)
        .fetch_all(conn)
        .await
        .context("failed to read the plan history")
}
