//! Pause, suspend and resume: a real effect in PostgreSQL. A paused or
//! suspended tenant's role loses LOGIN and its open sessions are ended; resuming gives
//! LOGIN back. The database effect comes first and the status second, so a rerun after
//! a crash in between repeats the (idempotent) effect and then records the status.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{Acquire, PgConnection};

use crate::{
    activity,
    context::App,
    db::ddl,
    error::{Context as _, Error, Result},
    hosts,
    tenants::{self, Tenant},
};

/// A change of a tenant's access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Take the login away at the customer's own request; from active.
    Pause,
    /// Take the login away for billing or abuse, with a reason; from active or paused.
    Suspend,
    /// Give the login back; from paused or suspended.
    Resume,
}

impl Change {
    /// The status the change leads to.
    pub fn target(self) -> &'static str {
        match self {
            Change::Pause => "paused",
            Change::Suspend => "suspended",
            Change::Resume => "active",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Change::Pause => "pause",
            Change::Suspend => "suspend",
            Change::Resume => "resume",
        }
    }

    /// Refuses a change that the tenant's current status does not allow; Ok(false) if the
    /// tenant is in the target status already.
    pub fn check(self, tenant: &Tenant) -> Result<bool> {
        let allowed: &[&str] = match self {
            Change::Pause => &["active"],
            Change::Suspend => &["active", "paused"],
            Change::Resume => &["paused", "suspended"],
        };
        if tenant.status == self.target() {
            return Ok(false);
        }
        if allowed.contains(&tenant.status.as_str()) {
            return Ok(true);
        }
        Err(Error::Conflict(format!(
            "cannot {} tenant '{}': it is {} (only a tenant that is {} can be)",
            self.verb(),
            tenant.slug,
            tenant.status,
            allowed.join(" or ")
        )))
    }
}

/// Applies `change` to `slug`, as `actor`.
pub async fn change_access(app: &App, slug: &str, change: Change, reason: Option<&str>, actor: &str) -> Result<Tenant> {
    apply(app, slug, change, reason, actor, None).await
}

/// [`change_access`] on behalf of queue job `job_id`, which records its outcome with the
/// status. Run again after that (a lost acknowledgement), it changes nothing: a pause or
/// resume that came later stands, and the login is left as the status says now.
pub async fn change_access_for_job(
    app: &App,
    slug: &str,
    change: Change,
    reason: Option<&str>,
    actor: &str,
    job_id: &str,
) -> Result<Tenant> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    if let Some((owner, _)) = crate::outcomes::finished(&mut cp, job_id).await? {
        let tenant = tenants::get(&mut cp, slug).await?;
        if owner == tenant.id {
            let mut admin = hosts::connect(&mut cp, &app.config, &tenant.host, &tenant.database).await?;
            give_login_back(&mut admin, &tenant).await?;
        }
        return Ok(tenant);
    }
    drop(cp);
    apply(app, slug, change, reason, actor, Some(job_id)).await
}

async fn apply(app: &App, slug: &str, change: Change, reason: Option<&str>, actor: &str, job_id: Option<&str>) -> Result<Tenant> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    let tenant = tenants::get(&mut cp, slug).await?;
    let needs_status = change.check(&tenant)?;
    let mut admin = hosts::connect(&mut cp, &app.config, &tenant.host, &tenant.database).await?;
    // The safe side first, so a crash between the two steps never leaves a paused tenant
    // able to log in: a pause takes the login before it records the status, a resume
    // records the status before it gives the login back. A rerun repeats both.
    match change {
        Change::Pause | Change::Suspend => {
            block_login(&mut admin, &tenant).await?;
            crate::fault::point(slug, "pause:login_blocked")?;
            record_change(&mut cp, &tenant, change, needs_status, reason, actor, job_id).await?;
            crate::fault::point(slug, "pause:recorded")?;
        }
        Change::Resume => {
            record_change(&mut cp, &tenant, change, needs_status, reason, actor, job_id).await?;
            crate::fault::point(slug, "resume:recorded")?;
            ddl(&mut admin, "ALTER ROLE %I LOGIN", &[&tenant.role]).await?;
            crate::fault::point(slug, "resume:login")?;
        }
    }
    tenants::get(&mut cp, slug).await
}

/// The status (if it changes) and, for a queue job, its outcome, in one transaction.
async fn record_change(
    cp: &mut PgConnection,
    tenant: &Tenant,
    change: Change,
    needs_status: bool,
    reason: Option<&str>,
    actor: &str,
    job_id: Option<&str>,
) -> Result<()> {
    let mut tx = cp.begin().await.context("failed to start a transaction")?;
    if needs_status {
        tenants::set_status(&mut tx, tenant, change.target(), reason, actor).await?;
    } else {
        activity::record(&mut tx, actor, Some(tenant.id), &format!("tenant.{}", change.verb()), json!({ "already": change.target() }))
            .await?;
    }
    if let Some(job_id) = job_id {
        let job_type = if change == Change::Resume { "ResumeTenant" } else { "PauseTenant" };
        crate::outcomes::record(&mut tx, job_id, job_type, tenant.id, &json!({ "status": change.target() })).await?;
    }
    tx.commit().await.context("failed to commit the status change")
}

/// Whether the tenant's role may log in right now.
pub async fn can_log_in(admin: &mut PgConnection, tenant: &Tenant) -> Result<bool> {
    sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
        .bind(&tenant.role)
        .fetch_optional(admin)
        .await
        .context("failed to read the tenant role")
        .map(|can| can.unwrap_or(false))
}

/// No new sessions for the tenant's role or its operator role, and the open ones ended.
/// Admin statements on roles and the server's session list: no tenant object is involved.
pub async fn block_login(admin: &mut PgConnection, tenant: &Tenant) -> Result<()> {
    ddl(admin, "ALTER ROLE %I NOLOGIN", &[&tenant.role]).await?;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
        .bind(&tenant.role)
        .execute(&mut *admin)
        .await
        .context("failed to end the tenant's sessions")?;
    crate::tenant_session::end_operator_sessions(admin, &crate::naming::operator_role(&tenant.role)).await?;
    wait_until_gone(admin, &tenant.role).await
}

/// Login as the tenant's status says: only an active tenant may log in (after a restore or
/// a move held it).
pub async fn give_login_back(conn: &mut PgConnection, tenant: &Tenant) -> Result<()> {
    let template = if tenant.status == "active" { "ALTER ROLE %I LOGIN" } else { "ALTER ROLE %I NOLOGIN" };
    ddl(conn, template, &[&tenant.role]).await
}

/// Waits (up to 10 s) until the tenant's ended sessions have exited: a session told to end
/// may still be committing, and a copy taken before it is gone could miss that commit.
async fn wait_until_gone(admin: &mut PgConnection, role: &str) -> Result<()> {
    let started = std::time::Instant::now();
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1")
            .bind(role)
            .fetch_one(&mut *admin)
            .await
            .context("failed to look up the tenant's sessions")?;
        if left == 0 {
            return Ok(());
        }
        if started.elapsed() > std::time::Duration::from_secs(10) {
            return Err(Error::Busy(format!("{left} session(s) of {role} did not end within 10 s; the job will run again")));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
