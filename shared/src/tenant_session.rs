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
//!   it, and it is set again (with the attributes) each time a session is prepared.
//!
//! Every session here pins `search_path` to `pg_catalog`, so a function or operator the
//! tenant named like a built-in can never stand in for it.

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
        let mut admin = hosts::connect_admin(cp, config, &tenant.host).await?;
        ensure_operator(&mut admin, tenant, &role, &marker, &password).await?;
        let options = db::options(&admin_url)?.username(&role).password(&password).database(&tenant.database);
        Ok(TenantAccess { options: db::pin_search_path(options), admin_url, role, password })
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

/// Creates or repairs the operator role of `tenant` over an admin connection to its host.
/// Refuses a role of that name that this deployment did not make.
async fn ensure_operator(admin: &mut PgConnection, tenant: &Tenant, role: &str, marker: &str, password: &str) -> Result<()> {
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
        Some(_) => {}
        None => {
            // Role and marker in one transaction: there is never an unmarked role of ours.
            let mut tx = Connection::begin(&mut *admin).await.context("failed to start a transaction")?;
            ddl(&mut tx, "CREATE ROLE %I NOLOGIN NOCREATEDB NOCREATEROLE INHERIT", &[role]).await?;
            ddl(&mut tx, "COMMENT ON ROLE %I IS %L", &[role, marker]).await?;
            tx.commit().await.context("failed to commit the operator role")?;
        }
    }
    // Memberships other than the tenant's role would widen its rights: take them away.
    let extra: Vec<String> = sqlx::query_scalar(
        "SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member
         WHERE r.rolname = $1 AND g.rolname <> $2",
    )
    .bind(role)
    .bind(&tenant.role)
    .fetch_all(&mut *admin)
    .await
    .context("failed to read the operator role's memberships")?;
    for group in extra {
        ddl(admin, "REVOKE %I FROM %I", &[&group, role]).await?;
    }
    // Nor may anyone join it (PostgreSQL 15 lets a session grant its own login role).
    let members: Vec<String> = sqlx::query_scalar(
        "SELECT r.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member
         WHERE g.rolname = $1",
    )
    .bind(role)
    .fetch_all(&mut *admin)
    .await
    .context("failed to read the operator role's members")?;
    for member in members {
        ddl(admin, "REVOKE %I FROM %I", &[role, &member]).await?;
    }
    ddl(admin, "GRANT %I TO %I", &[&tenant.role, role]).await?;
    let verifier = password::scram_verifier(password);
    ddl(admin, "ALTER ROLE %I NOCREATEDB NOCREATEROLE INHERIT LOGIN PASSWORD %L", &[role, &verifier]).await
}
