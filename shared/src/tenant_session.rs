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
//! - it may log in only while a job works on the tenant: [`TenantAccess::prepare`] gives
//!   it LOGIN with `VALID UNTIL` the end of the job's time limit, and [`scoped`] takes
//!   LOGIN away and ends its sessions when the job is over. Tenant code running in an
//!   operator session can change that role's password or settings (any role may), but not
//!   its `VALID UNTIL`; prepare resets password and settings, so what tenant code did there
//!   lasts until the job ends at most, and never lets anyone in while the tenant is
//!   paused or suspended.
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
    role: String,
    password: String,
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
        let mut admin = db::connect_to(&admin_options, admin_options.get_database().unwrap_or("postgres")).await?;
        let valid_for = OPENED.try_with(|o| o.borrow().valid_for).unwrap_or(UNSCOPED_VALIDITY);
        let valid_until = (chrono::Utc::now() + valid_for).to_rfc3339();
        // Under the tenant's lock no job of ours has an operator session: any that is open
        // was opened by someone else (tenant code in an earlier job) and ends now.
        terminate_sessions(&mut admin, &role).await?;
        ensure_operator(&mut admin, tenant, &role, &marker, &password, &valid_until).await?;
        let _ = OPENED.try_with(|o| o.borrow_mut().remember(admin_options, &role));
        let options = db::options(&admin_url)?.username(&role).password(&password).database(&tenant.database);
        // Tenant code can hold locks on its own tables: our statements wait for them at most
        // this long (then the job fails and retries later) instead of holding a host's slot.
        let options = db::pin_search_path(options).options([("lock_timeout", OPERATOR_LOCK_TIMEOUT)]);
        Ok(TenantAccess { options, admin_url, role, password })
    }

    /// A session in the tenant's database, logged in as its operator role.
    pub async fn connect(&self) -> Result<PgConnection> {
        PgConnection::connect_with(&self.options).await.context(format!(
            "failed to connect to database {} on {}:{} as {}",
            self.options.get_database().unwrap_or("?"),
            self.options.get_host(),
            self.options.get_port(),
            self.role
        ))
    }

    /// Where `pg_dump` / `pg_restore` connect: the tenant's database, as its operator role.
    pub fn tool_target(&self) -> Result<Target> {
        Ok(Target::new(&self.admin_url, self.options.get_database().unwrap_or("postgres"))?.login_as(&self.role, &self.password))
    }

    /// The operator role's name.
    pub fn role(&self) -> &str {
        &self.role
    }
}

/// How long a statement in an operator session waits for a lock a tenant holds.
const OPERATOR_LOCK_TIMEOUT: &str = "30s";

/// How long an operator login prepared outside [`scoped`] (an admin command) stays valid.
const UNSCOPED_VALIDITY: Duration = Duration::from_secs(6 * 3600);

/// The operator roles given LOGIN while a job runs, to take it away when the job is over.
struct Opened {
    valid_for: Duration,
    roles: Vec<(PgConnectOptions, String)>,
}

impl Opened {
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

/// Runs `work` (one job, at most `limit` long) and then closes every operator login it
/// prepared: NOLOGIN, sessions ended. Runs under the tenant's lock, so no other job of
/// the tenant is using the role meanwhile.
pub async fn scoped<F: Future>(limit: Duration, work: F) -> F::Output {
    let opened = RefCell::new(Opened { valid_for: limit, roles: Vec::new() });
    let (output, roles) = OPENED
        .scope(opened, async {
            let output = work.await;
            (output, OPENED.with(|o| std::mem::take(&mut o.borrow_mut().roles)))
        })
        .await;
    for (admin, role) in roles {
        if let Err(e) = close_operator(&admin, &role).await {
            tracing::warn!(role = %role, error = %e, "could not take the operator role's login away; its VALID UNTIL ends it");
        }
    }
    output
}

async fn close_operator(admin: &PgConnectOptions, role: &str) -> Result<()> {
    let mut admin = db::connect_to(admin, admin.get_database().unwrap_or("postgres")).await?;
    end_operator_sessions(&mut admin, role).await
}

/// NOLOGIN for `role` (if it exists) and its open sessions ended. Admin statements on a
/// role and the server's session list: no tenant object is involved.
pub async fn end_operator_sessions(admin: &mut PgConnection, role: &str) -> Result<()> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(&mut *admin)
        .await
        .context("failed to look up the operator role")?;
    if exists {
        let mut tx = Connection::begin(&mut *admin).await.context("failed to start a transaction")?;
        ddl(&mut tx, "ALTER ROLE %I NOLOGIN", &[role]).await?;
        reset_settings(&mut tx, role).await?;
        tx.commit().await.context("failed to commit the operator role")?;
    }
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
async fn ensure_operator(
    admin: &mut PgConnection,
    tenant: &Tenant,
    role: &str,
    marker: &str,
    password: &str,
    valid_until: &str,
) -> Result<()> {
    let existing: Option<(Option<String>, bool)> = sqlx::query_as(
        "SELECT shobj_description(oid, 'pg_authid'), rolsuper OR rolreplication OR rolbypassrls FROM pg_roles WHERE rolname = $1",
    )
    .bind(role)
    .fetch_optional(&mut *admin)
    .await
    .context("failed to look up the operator role")?;
    match existing {
        Some((Some(comment), _)) if comment != marker => {
            return Err(Error::Fatal(format!(
                "role {role} exists but belongs to another deployment or was not made by Tenant Master; drop or rename it, then retry"
            )))
        }
        Some((None, _)) => {
            return Err(Error::Fatal(format!("role {role} exists but was not made by Tenant Master; drop or rename it, then retry")))
        }
        Some((Some(_), true)) => {
            return Err(Error::Fatal(format!(
                "operator role {role} has SUPERUSER, REPLICATION or BYPASSRLS, which it must never have; an administrator must remove it"
            )))
        }
        _ => {}
    }
    // One transaction for all of it: one commit (and one WAL flush) per job, and never a
    // role of ours without its marker.
    let mut tx = Connection::begin(&mut *admin).await.context("failed to start a transaction")?;
    if existing.is_none() {
        ddl(&mut tx, "CREATE ROLE %I NOLOGIN NOCREATEDB NOCREATEROLE INHERIT", &[role]).await?;
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
    let verifier = password::scram_verifier(password);
    ddl(&mut tx, "ALTER ROLE %I NOCREATEDB NOCREATEROLE INHERIT LOGIN PASSWORD %L VALID UNTIL %L", &[role, &verifier, valid_until]).await?;
    tx.commit().await.context("failed to commit the operator role")
}
