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
    /// When it happened.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Who did it: a user, `panel:<name>`, `worker` or `scheduler`.
    pub actor: String,
    /// What was done, e.g. `tenant.plan_changed`.
    pub action: String,
    /// The particulars (job id, reason, counts), as JSON.
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

/// Filters of the activity log page: every one optional, all of them must hold.
#[derive(Debug, Default, Clone)]
pub struct LogFilter {
    /// An exact action, e.g. `admin.retry`.
    pub action: Option<String>,
    /// An exact actor, e.g. `panel:alice` or `worker`.
    pub actor: Option<String>,
    /// A tenant's slug (its current or a deleted tenant's entries).
    pub tenant: Option<String>,
    /// Entries at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Entries before this time.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

/// One entry with its tenant's slug, as the activity page lists them.
#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub struct LogEntry {
    /// The entry's id; later entries have higher ones.
    pub id: i64,
    /// When it happened.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Who did it: a user, `panel:<name>`, `worker` or `scheduler`.
    pub actor: String,
    /// What was done, e.g. `admin.retry`.
    pub action: String,
    /// The tenant's slug; none for an action on no tenant.
    pub tenant: Option<String>,
    /// The particulars (job id, reason, counts), as JSON.
    pub details: Value,
    /// The machine it was done on, or the admin panel's client address.
    pub origin: Option<String>,
}

/// The filter's conditions, all bound values ($1 to $5).
macro_rules! log_where {
    () => {
        "($1::text IS NULL OR l.action = $1) AND ($2::text IS NULL OR l.actor = $2)
         AND ($3::text IS NULL OR t.slug = $3) AND ($4::timestamptz IS NULL OR l.at >= $4) AND ($5::timestamptz IS NULL OR l.at < $5)"
    };
}

/// Entries matching `filter`, newest first, `limit` of them after skipping `offset`.
pub async fn search(pool: &sqlx::PgPool, filter: &LogFilter, limit: i64, offset: i64) -> Result<Vec<LogEntry>> {
    sqlx::query_as(concat!(
        "SELECT l.id, l.at, l.actor, l.action, t.slug AS tenant, l.details, l.origin
         FROM tenant_master.activity_log l LEFT JOIN tenant_master.tenants t ON t.id = l.tenant_id WHERE ",
        log_where!(),
        " ORDER BY l.at DESC, l.id DESC LIMIT $6 OFFSET $7"
    ))
    .bind(&filter.action)
    .bind(&filter.actor)
    .bind(&filter.tenant)
    .bind(filter.since)
    .bind(filter.until)
    .bind(limit)
    .bind(offset.max(0))
    .fetch_all(pool)
    .await
    .context("failed to read the activity log")
}

/// How many entries match `filter`.
pub async fn count(pool: &sqlx::PgPool, filter: &LogFilter) -> Result<i64> {
    sqlx::query_scalar(concat!(
        "SELECT count(*) FROM tenant_master.activity_log l LEFT JOIN tenant_master.tenants t ON t.id = l.tenant_id WHERE ",
        log_where!()
    ))
    .bind(&filter.action)
    .bind(&filter.actor)
    .bind(&filter.tenant)
    .bind(filter.since)
    .bind(filter.until)
    .fetch_one(pool)
    .await
    .context("failed to count the activity log's entries")
}

/// The actions the log holds, for the activity page's choices (an index-only scan of
/// `activity_log_action_idx`).
pub async fn actions(pool: &sqlx::PgPool) -> Result<Vec<String>> {
    sqlx::query_scalar("SELECT DISTINCT action FROM tenant_master.activity_log ORDER BY 1")
        .fetch_all(pool)
        .await
        .context("failed to read the log's actions")
}
