//! Sessions with the tenant's rights, and nothing more.
//!
//! A tenant owns its schema and can plant triggers, CHECK / default / index-expression
//! functions and views there. Over an admin connection that code runs with admin rights,
//! and `SET ROLE` does not contain it (tenant code calls `RESET ROLE`). So everything that
//! can execute tenant-defined code (DML on tenant tables, COPY, `pg_dump`, `pg_restore`,
//! VACUUM / ANALYZE / REINDEX, product migrations) runs in a session *logged in* as the
//! tenant's operator role `t_<slug>__op`:
//!
//! - LOGIN, INHERIT, a member of the tenant role `t_<slug>` and of nothing else, with no
//!   attribute (no SUPERUSER, CREATEDB, CREATEROLE, REPLICATION, BYPASSRLS): its rights
//!   are exactly the tenant's, so tenant code that runs in it gains nothing;
//! - a login of its own, so the tenant's login can be held (pause, restore, delete) while
//!   we work;
//! - its password is derived from the secret key, so nothing stores it, every worker knows
//!   it, and it is set again (with the attributes) each time a session is prepared;
//! - it may log in only for the moment our own sessions connect: each connection (ours, or
//!   `pg_dump`'s / `pg_restore`'s) resets the password, opens LOGIN with a `VALID UNTIL` a
//!   few seconds ahead, connects, and takes LOGIN away again as soon as the session is in.
//!   Tenant code running in an operator session can change that role's password or
//!   settings (any role may), but not its LOGIN or `VALID UNTIL`, and every window starts
//!   with our password again: a password the tenant set never opens a session, while it
//!   is paused or not. A worker killed inside a window leaves a login that expires with
//!   its `VALID UNTIL`, and the next job of the tenant closes it; [`scoped`] ends every
//!   operator session when a job is over, first, and never waits on one.
//! - its sessions are bounded by the job's remaining time (`statement_timeout`,
//!   `idle_in_transaction_session_timeout`) and wait for a tenant's lock at most
//!   [`OPERATOR_LOCK_TIMEOUT`].
//!
//! Every session here pins `search_path` to `pg_catalog`, so a function or operator the
//! tenant named like a built-in can never stand in for it.

use std::{cell::RefCell, future::Future, time::Duration};

use sqlx::{postgres::PgConnectOptions, Connection, PgConnection};

use crate::{
    config::Config,
    db::{self, ddl},
    deployment,
    error::{Context as _, Error, Result},
    hosts,
    naming::operator_role,
    password,
    pg_tools::Target,
    secrets::Keyring,
    tenants::Tenant,
};

/// What it takes to open sessions with one tenant's rights.
pub struct TenantAccess {
    options: PgConnectOptions,
    admin_url: String,
    admin: PgConnectOptions,
    role: String,
    password: String,
    /// The job's remaining time, in milliseconds: no statement of ours outlives it.
    remaining_ms: String,
}

impl TenantAccess {
    /// Makes sure the tenant's operator role is in shape (see the module comment) and
    /// returns how to log in with it. Needs the secret key.
    pub async fn prepare(config: &Config, cp: &mut PgConnection, tenant: &Tenant) -> Result<TenantAccess> {
        let keys = Keyring::load(&config.key_sources())?;
        let role = operator_role(&tenant.role);
        let password = keys.current()?.derive_password(&format!("operator:{}", role));
        let marker = deployment::marker(cp, &tenant.slug).await?;
        let admin_url = hosts::admin_url(cp, config, &tenant.host).await?;
        let admin_options = hosts::admin_options(cp, config, &tenant.host).await?;
        let mut admin = admin_connection(&admin_options).await?;
        let remaining = OPENED.try_with(|o| o.borrow().remaining()).unwrap_or(UNSCOPED_VALIDITY);
        // Under the tenant's lock no job of ours has an operator session: any that is open
        // was opened by someone else (tenant code in an earlier job) and ends now.
        terminate_sessions(&mut admin, &role).await?;
        ensure_operator(&mut admin, tenant, &role, &marker).await?;
        // Tenants provisioned before the limit existed get it with their next job.
        crate::db::limit_connections(&mut admin, &tenant.role, config.tenant_max_connections(&tenant.plan)).await?;
        let _ = OPENED.try_with(|o| o.borrow_mut().remember(admin_options.clone(), &role));
        let options = db::options(&admin_url)?.username(&role).password(&password).database(&tenant.database);
        // Tenant code can hold locks on its own tables: our statements wait for them at most
        // this long (then the job fails and retries later) instead of holding a host's slot.
        // Nothing it runs in our session outlives the job's time limit.
        let remaining_ms = remaining.as_millis().max(1000).to_string();
        let options = db::pin_search_path(options).options([
            ("lock_timeout", OPERATOR_LOCK_TIMEOUT),
            ("statement_timeout", remaining_ms.as_str()),
            ("idle_in_transaction_session_timeout", remaining_ms.as_str()),
        ]);
        Ok(TenantAccess { options, admin_url, admin: admin_options, role, password, remaining_ms })
    }

    /// A session in the tenant's database, logged in as its operator role (the login is
    /// open only while it connects).
    pub async fn connect(&self) -> Result<PgConnection> {
        let mut admin = self.admin_session().await?;
        self.open_login(&mut admin).await?;
        let connected = PgConnection::connect_with(&self.options).await;
        self.close_login_or_warn(&mut admin).await;
        connected.context(format!(
            "failed to connect to database {} on {}:{} as {}",
            self.options.get_database().unwrap_or("?"),
            self.options.get_host(),
            self.options.get_port(),
            self.role
        ))
    }

    /// `pg_dump` of `schema` into `out`, as the operator role.
    pub async fn dump_schema(&self, schema: &str, out: &std::path::Path) -> Result<()> {
        let target = self.tool_target()?;
        self.with_tool_login(target.dump_schema(schema, out)).await
    }

    /// `pg_restore` of `file` into `schema` (which exists), as the operator role.
    pub async fn restore_into_schema(&self, file: &std::path::Path, schema: &str) -> Result<()> {
        let target = self.tool_target()?;
        self.with_tool_login(target.restore_into_schema(file, schema)).await
    }

    /// Runs a client tool with the login open until its session is in (or it is done).
    async fn with_tool_login(&self, tool: impl Future<Output = Result<()>>) -> Result<()> {
        let mut admin = self.admin_session().await?;
        let before = sessions(&mut admin, &self.role).await?;
        self.open_login(&mut admin).await?;
        let finished = std::sync::atomic::AtomicBool::new(false);
        let finished = &finished;
        let tool = async {
            let result = tool.await;
            finished.store(true, std::sync::atomic::Ordering::Relaxed);
            result
        };
        // Owns the admin session, which closes as soon as the login is taken away again
        // (not when the tool is done): one session more per job for a moment only.
        let closer = async move {
            let mut admin = admin;
            let started = std::time::Instant::now();
            while !finished.load(std::sync::atomic::Ordering::Relaxed) && started.elapsed() < LOGIN_WINDOW {
                match sessions(&mut admin, &self.role).await {
                    Ok(n) if n > before => break,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    Err(e) => {
                        tracing::warn!(role = %self.role, error = %e, "could not watch the operator role's sessions");
                        break;
                    }
                }
            }
            self.close_login_or_warn(&mut admin).await;
        };
        // Boxed: a tool's future is large, and two of them side by side overflowed a
        // worker thread's stack in debug builds.
        let (result, ()) = tokio::join!(Box::pin(tool), Box::pin(closer));
        result
    }

    async fn admin_session(&self) -> Result<PgConnection> {
        admin_connection(&self.admin).await
    }

    /// Our password again (tenant code may have set another), and LOGIN for a moment. The
    /// moment is the server's clock, not ours: a worker whose clock lags would otherwise
    /// open logins that had expired already.
    async fn open_login(&self, admin: &mut PgConnection) -> Result<()> {
        let verifier = password::scram_verifier(&self.password);
        let window = format!("{} seconds", LOGIN_WINDOW.as_secs());
        let valid_until: String = sqlx::query_scalar("SELECT (now() + $1::interval)::text")
            .bind(&window)
            .fetch_one(&mut *admin)
            .await
            .context("failed to read the server's clock")?;
        ddl(admin, "ALTER ROLE %I LOGIN PASSWORD %L VALID UNTIL %L", &[&self.role, &verifier, &valid_until]).await
    }

    /// LOGIN taken away again, and the password expired. A failure here is logged, not
    /// returned: our session is in, the login expires with its VALID UNTIL, and the job's
    /// end closes it in any case.
    ///
    /// Why expired: tenant code running as the operator may set the role's password (any
    /// role may set its own) but not its VALID UNTIL. The server checks a password against
    /// the role's row and LOGIN against a later read, so a login attempt whose password
    /// passed just before we open the next window would get in through it, unless that
    /// password had expired. Every NOLOGIN of an operator role here comes with this date.
    async fn close_login_or_warn(&self, admin: &mut PgConnection) {
        if let Err(e) = ddl(admin, "ALTER ROLE %I NOLOGIN VALID UNTIL '1970-01-01 00:00:00+00'", &[&self.role]).await {
            tracing::warn!(role = %self.role, error = %e, "could not take the operator's login away at once; it expires in seconds");
        }
    }

    /// Where `pg_dump` / `pg_restore` connect: the tenant's database, as its operator role.
    fn tool_target(&self) -> Result<Target> {
        // pg_dump sets its own statement_timeout (none); pg_restore keeps this one.
        let limits = [
            ("statement_timeout", self.remaining_ms.as_str()),
            ("idle_in_transaction_session_timeout", self.remaining_ms.as_str()),
            ("lock_timeout", OPERATOR_LOCK_TIMEOUT),
        ];
        Ok(Target::new(&self.admin_url, self.options.get_database().unwrap_or("postgres"))?
            .login_as(&self.role, &self.password)
            .settings(&limits))
    }

    /// The operator role's name.
    pub fn role(&self) -> &str {
        &self.role
    }
}

/// How long a statement in an operator session waits for a lock a tenant holds.
const OPERATOR_LOCK_TIMEOUT: &str = "30s";

/// How long the operator sessions of work outside [`scoped`] (an admin command) may run.
const UNSCOPED_VALIDITY: Duration = Duration::from_secs(6 * 3600);

/// How long the operator's login stays open for one of our sessions to connect, at most.
const LOGIN_WINDOW: Duration = Duration::from_secs(10);

/// How long closing a job's operator sessions may take before the job gives up on it.
pub const CLOSE_GRACE: Duration = Duration::from_secs(15);

async fn sessions(admin: &mut PgConnection, role: &str) -> Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1")
        .bind(role)
        .fetch_one(admin)
        .await
        .context("failed to count the operator role's sessions")
}

/// The operator roles a job prepared, to end their sessions when the job is over.
struct Opened {
    deadline: std::time::Instant,
    roles: Vec<(PgConnectOptions, String)>,
}

impl Opened {
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(std::time::Instant::now())
    }

    fn remember(&mut self, admin: PgConnectOptions, role: &str) {
        // One role name per server: a move prepares the same operator role on two hosts.
        let same = |(o, r): &(PgConnectOptions, String)| r == role && o.get_host() == admin.get_host() && o.get_port() == admin.get_port();
        if !self.roles.iter().any(same) {
            self.roles.push((admin, role.to_owned()));
        }
    }
}

tokio::task_local! {
    static OPENED: RefCell<Opened>;
}

/// Runs `work` (one job, at most `limit` long) and then closes every operator role it
/// prepared: sessions ended, NOLOGIN, each within [`CLOSE_GRACE`]. Runs under the
/// tenant's lock, so no other job of the tenant is using the role meanwhile.
pub async fn scoped<F: Future>(limit: Duration, work: F) -> F::Output {
    let opened = RefCell::new(Opened { deadline: std::time::Instant::now() + limit, roles: Vec::new() });
    let (output, roles) = OPENED
        .scope(opened, async {
            let output = work.await;
            (output, OPENED.with(|o| std::mem::take(&mut o.borrow_mut().roles)))
        })
        .await;
    for (admin, role) in roles {
        match tokio::time::timeout(CLOSE_GRACE, close_operator(&admin, &role)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(role = %role, error = %e, "could not close the operator role; the next job of the tenant does"),
            Err(_) => tracing::warn!(role = %role, "closing the operator role took too long; the next job of the tenant does"),
        }
    }
    output
}

async fn close_operator(admin: &PgConnectOptions, role: &str) -> Result<()> {
    end_operator_sessions(&mut admin_connection(admin).await?, role).await
}

/// An admin session to the host of `options` whose statements on a role never wait long:
/// a tenant transaction may hold its roles' catalog rows (`ALTER ROLE CURRENT_USER ...`).
pub(crate) async fn admin_connection(options: &PgConnectOptions) -> Result<PgConnection> {
    let mut admin = db::connect_to(options, options.get_database().unwrap_or("postgres")).await?;
    sqlx::query("SET lock_timeout = '5s'").execute(&mut admin).await.context("failed to set lock_timeout")?;
    Ok(admin)
}

/// The open sessions of `role` ended, then NOLOGIN for it (if it exists). Sessions first:
/// a tenant transaction holding the role's catalog row goes with them, so the ALTER does
/// not wait on it. Admin statements on a role and the server's session list: no tenant
/// object is involved.
pub async fn end_operator_sessions(admin: &mut PgConnection, role: &str) -> Result<()> {
    terminate_sessions(admin, role).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(&mut *admin)
        .await
        .context("failed to look up the operator role")?;
    if exists {
        let mut tx = Connection::begin(&mut *admin).await.context("failed to start a transaction")?;
        ddl(&mut tx, "ALTER ROLE %I NOLOGIN VALID UNTIL '1970-01-01 00:00:00+00'", &[role]).await?;
        reset_settings(&mut tx, role).await?;
        tx.commit().await.context("failed to commit the operator role")?;
    }
    // A session may have slipped in before NOLOGIN: it goes too.
    terminate_sessions(admin, role).await
}

async fn terminate_sessions(admin: &mut PgConnection, role: &str) -> Result<()> {
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()")
        .bind(role)
        .execute(admin)
        .await
        .context("failed to end the operator role's sessions")?;
    Ok(())
}

/// Removes the settings tenant code may have given the operator role (`ALTER ROLE
/// CURRENT_USER [IN DATABASE ...] SET ...` is open to every role), in every database.
async fn reset_settings(admin: &mut PgConnection, role: &str) -> Result<()> {
    // Only where there is something (the common case is nothing: no catalog write at all).
    let settings: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT d.datname::text FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
         LEFT JOIN pg_database d ON d.oid = s.setdatabase WHERE r.rolname = $1",
    )
    .bind(role)
    .fetch_all(&mut *admin)
    .await
    .context("failed to read the operator role's settings")?;
    for database in settings {
        match database {
            None => ddl(admin, "ALTER ROLE %I RESET ALL", &[role]).await?,
            Some(database) => ddl(admin, "ALTER ROLE %I IN DATABASE %I RESET ALL", &[role, &database]).await?,
        }
    }
    Ok(())
}

/// Creates or repairs the operator role of `tenant` over an admin connection to its host.
/// Refuses a role of that name that this deployment did not make.
async fn ensure_operator(admin: &mut PgConnection, tenant: &Tenant, role: &str, marker: &str) -> Result<()> {
    let existing: Option<(Option<String>, bool)> = sqlx::query_as(
        "SELECT shobj_description(oid, 'pg_authid'), rolsuper OR rolreplication OR rolbypassrls FROM pg_roles WHERE rolname = $1",
    )
    .bind(role)
    .fetch_optional(&mut *admin)
    .await
    .context("failed to look up the operator role")?;
    match existing {
        Some((Some(comment), _)) if comment != marker => {
            return Err(Error::fatal(format!(
                "role {role} exists but belongs to another deployment or was not made by Tenant Master; drop or rename it, then retry"
            )))
        }
        Some((None, _)) => {
            return Err(Error::fatal(format!("role {role} exists but was not made by Tenant Master; drop or rename it, then retry")))
        }
        Some((Some(_), true)) => {
            return Err(Error::fatal(format!(
                "operator role {role} has SUPERUSER, REPLICATION or BYPASSRLS, which it must never have; an administrator must remove it"
            )))
        }
        _ => {}
    }
    // One transaction for all of it: one commit (and one WAL flush) per job, and never a
    // role of ours without its marker.
    let mut tx = Connection::begin(&mut *admin).await.context("failed to start a transaction")?;
    if existing.is_none() {
        ddl(&mut tx, "CREATE ROLE %I NOCREATEDB NOCREATEROLE INHERIT NOLOGIN VALID UNTIL '1970-01-01 00:00:00+00'", &[role]).await?;
        ddl(&mut tx, "COMMENT ON ROLE %I IS %L", &[role, marker]).await?;
    }
    // Memberships other than the tenant's role would widen its rights: take them away. Nor
    // may anyone join it (PostgreSQL 15 lets a session grant its own login role).
    let (extra, members, joined): (Vec<String>, Vec<String>, bool) = sqlx::query_as(
        "SELECT
            ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member
                  WHERE r.rolname = $1 AND g.rolname <> $2),
            ARRAY(SELECT r.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member
                  WHERE g.rolname = $1),
            EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member
                    WHERE r.rolname = $1 AND g.rolname = $2)",
    )
    .bind(role)
    .bind(&tenant.role)
    .fetch_one(&mut *tx)
    .await
    .context("failed to read the operator role's memberships")?;
    for group in extra {
        ddl(&mut tx, "REVOKE %I FROM %I", &[&group, role]).await?;
    }
    for member in members {
        ddl(&mut tx, "REVOKE %I FROM %I", &[role, &member]).await?;
    }
    if !joined {
        ddl(&mut tx, "GRANT %I TO %I", &[&tenant.role, role]).await?;
    }
    reset_settings(&mut tx, role).await?;
    // No login between our connections (a crash may have left one open).
    ddl(&mut tx, "ALTER ROLE %I NOCREATEDB NOCREATEROLE INHERIT NOLOGIN VALID UNTIL '1970-01-01 00:00:00+00'", &[role]).await?;
    tx.commit().await.context("failed to commit the operator role")
}
