//! The activity log: every state change and admin action, with who did it.

use serde_json::Value;
use sqlx::PgConnection;

use crate::error::{Context as _, Result};

/// Who asked: `--actor`, else the OS user; `worker` or `scheduler` for automatic actions.
pub fn default_actor() -> String {
    std::env::var("USER").ok().filter(|u| !u.is_empty()).or_else(crate::system::os_user).unwrap_or_else(|| "unknown".to_owned())
}

/// Appends one entry, from this machine.
pub async fn record(conn: &mut PgConnection, actor: &str, tenant_id: Option<i64>, action: &str, details: Value) -> Result<()> {
    record_from(conn, actor, tenant_id, action, details, crate::system::hostname().as_deref()).await
}

/// Appends one entry whose origin is given: the admin panel records its client's address.
pub async fn record_from(
    conn: &mut PgConnection,
    actor: &str,
    tenant_id: Option<i64>,
    action: &str,
    details: Value,
    origin: Option<&str>,
) -> Result<()> {
    sqlx::query("INSERT INTO tenant_master.activity_log (actor, tenant_id, action, details, origin) VALUES ($1, $2, $3, $4, $5)")
        .bind(actor)
        .bind(tenant_id)
        .bind(action)
        .bind(details)
        .bind(origin)
        .execute(conn)
        .await
        .context(format!("failed to write '{action}' to the activity log"))?;
    Ok(())
}

/// Whether job `job_id` recorded `action` (a step it records once, to know on a rerun).
pub async fn recorded_by_job(conn: &mut PgConnection, action: &str, job_id: &str) -> Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenant_master.activity_log WHERE action = $1 AND details ->> 'job_id' = $2)")
        .bind(action)
        .bind(job_id)
        .fetch_one(conn)
        .await
        .context(format!("failed to read whether job {job_id} recorded '{action}'"))
}

/// One entry, as `tenantctl tenant show` prints it.
#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub struct Entry {
    pub at: chrono::DateTime<chrono::Utc>,
    pub actor: String,
    pub action: String,
    pub details: Value,
    /// The machine it was done on, or the admin panel's client address.
    pub origin: Option<String>,
}

/// The newest `limit` entries of a tenant, newest first.
pub async fn recent(conn: &mut PgConnection, tenant_id: i64, limit: i64) -> Result<Vec<Entry>> {
    sqlx::query_as(
        "SELECT at, actor, action, details, origin FROM tenant_master.activity_log WHERE tenant_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
    )
    .bind(tenant_id)
    .bind(limit)
    .fetch_all(conn)
    .await
    .context("failed to read the activity log")
}
