//! Large objects (`lo_from_bytea`, `lo_import`) belong to a database, not to a schema:
//! `pg_dump --schema` leaves them out, and `--large-objects` takes every tenant's in a
//! shared database. Tenant Master does not carry them; a backup, restore or move of a
//! tenant that owns any is refused in one sentence before anything changes, rather than
//! losing them silently (see the README, "Large objects").

use sqlx::PgConnection;

use crate::{
    error::{Context as _, Error, Result},
    naming::operator_role,
    tenants::Tenant,
};

/// How many large objects the tenant's roles own in the database of `conn` (a catalog
/// read on an admin connection: no tenant code runs).
pub async fn count(conn: &mut PgConnection, tenant: &Tenant) -> Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM pg_largeobject_metadata m JOIN pg_roles r ON r.oid = m.lomowner WHERE r.rolname IN ($1, $2)")
        .bind(&tenant.role)
        .bind(operator_role(&tenant.role))
        .fetch_one(conn)
        .await
        .context("failed to count the tenant's large objects")
}

/// Refuses to go on (`what`: "backed up", "moved", "restored") when the tenant owns large
/// objects, naming how many and what to do.
pub async fn refuse(conn: &mut PgConnection, tenant: &Tenant, what: &str) -> Result<()> {
    let n = count(conn, tenant).await?;
    if n == 0 {
        return Ok(());
    }
    Err(Error::fatal(format!(
        "tenant '{}' owns {n} large object(s), which cannot be {what} with it (they belong to the database, not to its schema), so nothing was done; store their bytes in a bytea column and remove them with lo_unlink (as the tenant), then run the job again (`tenantctl jobs list --status dead --tenant {}` shows it, `tenantctl jobs retry ID` runs it)",
        tenant.slug, tenant.slug
    )))
}
