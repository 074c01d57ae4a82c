//! The checks made right before anything is dropped or adopted: only what carries this
//! deployment's marker (see `naming::owner_marker`) is ours. Roles and databases carry it
//! as a comment, which a tenant cannot change (COMMENT ON ROLE needs CREATEROLE, and the
//! database belongs to the admin). A schema is ours when it belongs to a role that is ours:
//! tenants cannot create or rename schemas (they have no CREATE on the database), so a
//! schema owned by `t_<slug>` was made by us.

use sqlx::{postgres::PgConnectOptions, PgConnection};

use crate::{
    db::{self, ddl},
    error::{Context as _, Error, Result},
    tenants::Tenant,
};

/// The marker comment of `role`: `None` if the role does not exist, `Some(None)` if it has no comment.
async fn role_comment(admin: &mut PgConnection, role: &str) -> Result<Option<Option<String>>> {
    sqlx::query_scalar("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_optional(admin)
        .await
        .context("failed to look up a role")
}

/// Whether `role` exists and carries `marker`.
pub async fn role_is_ours(admin: &mut PgConnection, role: &str, marker: &str) -> Result<bool> {
    Ok(role_comment(admin, role).await?.flatten().is_some_and(|c| c == marker))
}

/// What a guarded drop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// It was ours and is gone.
    Dropped,
    /// There was nothing of that name.
    Absent,
    /// Something of that name exists but is not this deployment's: left in place.
    NotOurs,
}

impl Dropped {
    /// True if something of that name was left in place because it is not ours.
    pub fn left_in_place(self) -> bool {
        self == Dropped::NotOurs
    }
}

/// Drops `role` if it exists and is ours; a role of that name that is not ours stays.
pub async fn drop_role(admin: &mut PgConnection, role: &str, marker: &str) -> Result<Dropped> {
    match role_comment(admin, role).await? {
        None => Ok(Dropped::Absent),
        Some(Some(c)) if c == marker => ddl(admin, "DROP ROLE IF EXISTS %I", &[role]).await.map(|()| Dropped::Dropped),
        Some(_) => Ok(Dropped::NotOurs),
    }
}

/// Drops `database` (ending its sessions) if it exists and carries `marker`.
pub async fn drop_database(admin: &mut PgConnection, database: &str, marker: &str) -> Result<Dropped> {
    let comment: Option<Option<String>> =
        sqlx::query_scalar("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1")
            .bind(database)
            .fetch_optional(&mut *admin)
            .await
            .context("failed to look up a database")?;
    match comment {
        None => Ok(Dropped::Absent),
        Some(Some(c)) if c == marker => ddl(admin, "DROP DATABASE IF EXISTS %I WITH (FORCE)", &[database]).await.map(|()| Dropped::Dropped),
        Some(_) => Ok(Dropped::NotOurs),
    }
}

/// Drops `schema` of the database of `db_admin` with everything in it, if it exists and
/// belongs to `owner`, a role that is ours. Dropping runs no tenant code: DROP fires no
/// DELETE triggers, and event triggers need a superuser to create.
pub async fn drop_schema(
    db_admin: &mut PgConnection,
    server_admin: &mut PgConnection,
    schema: &str,
    owner: &str,
    marker: &str,
) -> Result<Dropped> {
    let schema_owner: Option<String> = sqlx::query_scalar("SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = $1")
        .bind(schema)
        .fetch_optional(&mut *db_admin)
        .await
        .context("failed to look up a schema")?;
    match schema_owner {
        None => Ok(Dropped::Absent),
        Some(o) if o == owner && role_is_ours(server_admin, owner, marker).await? => {
            ddl(db_admin, "DROP SCHEMA IF EXISTS %I CASCADE", &[schema]).await.map(|()| Dropped::Dropped)
        }
        Some(_) => Ok(Dropped::NotOurs),
    }
}

/// Drops `schema` of tenant `at` (of the database of `db_admin`, on `at`'s host) like
/// [`drop_schema`]; a schema of that name that is not ours stops the work instead.
pub async fn drop_tenant_schema(
    db_admin: &mut PgConnection,
    server: &mut PgConnection,
    schema: &str,
    at: &Tenant,
    marker: &str,
) -> Result<()> {
    match drop_schema(db_admin, server, schema, &at.role, marker).await? {
        Dropped::NotOurs => Err(Error::fatal(format!(
            "schema {schema} in database {} on host '{}' is not this deployment's tenant {}: it was left untouched and the work stopped; rename or drop it by hand, then retry",
            at.database, at.host, at.slug
        ))),
        _ => Ok(()),
    }
}

/// Whether every schema of `database` (besides `public`, the system's and our migration
/// ledger's) is owned by a role carrying a marker of `deployment`, and `public` holds nothing.
pub async fn holds_only_ours(host: &PgConnectOptions, database: &str, deployment: &str) -> Result<bool> {
    let mut conn = db::connect_to(host, database).await?;
    sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_namespace n
                            WHERE nspname NOT IN ('public', 'information_schema', 'tenant_master_meta') AND nspname !~ '^pg_'
                              AND NOT starts_with(COALESCE(shobj_description(n.nspowner, 'pg_authid'), ''), $1))
            AND NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public')",
    )
    .bind(crate::naming::owner_marker(deployment, ""))
    .fetch_one(&mut conn)
    .await
    .context("failed to look into a database")
}

/// Whether `database` holds nothing but the schemas every new database has.
pub async fn database_is_empty(host: &PgConnectOptions, database: &str) -> Result<bool> {
    let mut conn = db::connect_to(host, database).await?;
    sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_namespace
                            WHERE nspname NOT IN ('public', 'information_schema') AND nspname !~ '^pg_')
            AND NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public')",
    )
    .fetch_one(&mut conn)
    .await
    .context("failed to look into a database")
}
