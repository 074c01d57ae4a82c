//! The tenant registry: creating, reading and changing rows of `tenant_master.tenants`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, PgPool};

use crate::{
    activity,
    config::Config,
    error::{Context as _, Error, Result},
    hosts,
    naming::{self, Isolation, Plan, Slug, TenantNames},
    password,
    secrets::Keyring,
};

/// A tenant as the registry holds it (the password is read only by [`credentials_url`]).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Tenant {
    /// The tenant's id in the registry; unlike a slug, never reused.
    pub id: i64,
    /// Its short name, unique among tenants not deleted.
    pub slug: String,
    /// The name people see (the slug unless one was given).
    #[sqlx(rename = "display_name")]
    pub name: String,
    /// The product whose schema it has.
    pub product: String,
    /// Its plan: `free`, `starter`, `business`, `enterprise` or `lifetime`.
    pub plan: String,
    /// `schema` (a shared database) or `database` (its own).
    pub isolation: String,
    /// The database host its data is on.
    pub host: String,
    /// The database its schema is in.
    #[sqlx(rename = "database_name")]
    pub database: String,
    /// Its schema.
    #[sqlx(rename = "schema_name")]
    pub schema: String,
    /// Its PostgreSQL role, which owns the schema.
    #[sqlx(rename = "role_name")]
    pub role: String,
    /// The owner's e-mail address; the welcome mail goes there.
    pub owner_email: String,
    /// Where it is in its lifecycle: one of [`STATUSES`].
    pub status: String,
    /// Why it has that status (a suspension's reason, a failure), if recorded.
    pub status_reason: Option<String>,
    /// Its size in bytes; nothing measures it yet, so it stays empty.
    pub size_bytes: Option<i64>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When its row last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was deleted; none until then.
    pub deleted_at: Option<DateTime<Utc>>,
    /// The highest product migration applied to its schema (as last seen; its ledger is
    /// the truth), none before the first is known.
    #[serde(rename = "version")]
    pub schema_version: Option<i64>,
    /// Why the last rollout of product migrations to it failed, until one succeeds.
    pub migration_error: Option<String>,
}

impl Tenant {
    /// Active, paused or suspended: a tenant with data that jobs may work on.
    pub fn is_live(&self) -> bool {
        matches!(self.status.as_str(), "active" | "paused" | "suspended")
    }

    /// Refuses, in one sentence, work on a tenant that is not live (`doing`: "moved", ...).
    pub fn require_live(&self, doing: &str) -> Result<()> {
        if self.is_live() {
            return Ok(());
        }
        Err(Error::Conflict(format!(
            "tenant '{}' is {}: only an active, paused or suspended tenant can be {doing}",
            self.slug, self.status
        )))
    }
}

/// The columns of [`Tenant`], as a literal so queries stay `&'static str`.
macro_rules! tenant_columns {
    () => {
        "id, slug, display_name, product, plan, isolation, host, database_name, schema_name, role_name, \
         owner_email, status, status_reason, size_bytes, created_at, updated_at, deleted_at, schema_version, migration_error"
    };
}

/// What a producer asks for.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// The slug asked for.
    pub slug: Slug,
    /// The display name; none: the slug.
    pub name: Option<String>,
    /// The product it is for.
    pub product: String,
    /// The plan it starts on.
    pub plan: Plan,
    /// The owner's e-mail address.
    pub owner_email: String,
    /// The database host to put it on; none: the enabled host with the most room.
    pub host: Option<String>,
}

impl NewTenant {
    /// Validates raw input; every problem is one sentence naming the bad value.
    pub fn parse(slug: &str, product: &str, plan: &str, owner_email: &str, name: Option<&str>, host: Option<&str>) -> Result<NewTenant> {
        let slug = Slug::parse(slug)?;
        crate::naming::validate_product_name(product)?;
        let plan = Plan::parse(plan)?;
        validate_email(owner_email)?;
        if let Some(name) = name {
            if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
                return Err(Error::Invalid("the tenant name must be 1 to 200 printable characters".into()));
            }
        }
        Ok(NewTenant {
            slug,
            name: name.map(str::to_owned),
            product: product.to_owned(),
            plan,
            owner_email: owner_email.to_owned(),
            host: host.map(str::to_owned),
        })
    }

    /// Whether `existing` is what this request asks for, already made or being made: the
    /// same slug, product, plan and owner (and host and name when given), and neither
    /// failed nor on its way out. A create that repeats itself is then no conflict.
    pub fn already_made_as(&self, existing: &Tenant) -> bool {
        existing.slug == self.slug.as_str()
            && existing.product == self.product
            && existing.plan == self.plan.as_str()
            && existing.owner_email == self.owner_email
            && self.host.as_ref().is_none_or(|host| *host == existing.host)
            && self.name.as_ref().is_none_or(|name| *name == existing.name)
            && matches!(existing.status.as_str(), "provisioning" | "active" | "paused" | "suspended")
    }
}

fn validate_email(email: &str) -> Result<()> {
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && domain.contains('.') && !domain.contains('@')
            && !domain.starts_with('.') && !domain.ends_with('.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("'{}' is not a valid owner e-mail address", email.escape_debug())))
    }
}

/// Inserts the tenant row (status `provisioning`) unless the slug exists.
/// Returns the row and whether this call created it.
pub async fn register(conn: &mut PgConnection, config: &Config, new: &NewTenant) -> Result<(Tenant, bool)> {
    if let Some(existing) = find(conn, new.slug.as_str()).await? {
        if existing.status != "deleted" {
            return Ok((existing, false));
        }
        refuse_while_backups_remain(conn, config, &existing).await?;
        release_job_keys(conn, &existing.slug).await?;
    }
    let (host, names) = place_new(conn, config, new).await?;
    // Sealed before it is written: the control plane never holds a plaintext password.
    let sealed = crate::keys::seal(&mut *conn, config, &password::generate(), new.slug.as_str()).await?;
    let inserted: Option<Tenant> = sqlx::query_as(concat!(
        "INSERT INTO tenant_master.tenants (slug, display_name, product, plan, isolation, host, database_name, schema_name,
                                            role_name, role_password, owner_email)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (slug) WHERE status <> 'deleted' DO NOTHING
         RETURNING ",
        tenant_columns!()
    ))
    .bind(new.slug.as_str())
    .bind(new.name.as_deref().unwrap_or(new.slug.as_str()))
    .bind(&new.product)
    .bind(new.plan.as_str())
    .bind(new.plan.isolation().as_str())
    .bind(&host)
    .bind(&names.database)
    .bind(&names.schema)
    .bind(&names.role)
    .bind(sealed)
    .bind(&new.owner_email)
    .fetch_optional(&mut *conn)
    .await
    .context("failed to register the tenant")?;
    match inserted {
        Some(tenant) => Ok((tenant, true)),
        // Lost a race with another producer: theirs stands.
        None => Ok((get(conn, new.slug.as_str()).await?, false)),
    }
}

/// Where a new tenant goes: its host and names, refusing an unknown product and a place
/// that would be the control plane's own database.
async fn place_new(conn: &mut PgConnection, config: &Config, new: &NewTenant) -> Result<(String, TenantNames)> {
    let product_known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenant_master.products WHERE name = $1)")
        .bind(&new.product)
        .fetch_one(&mut *conn)
        .await
        .context("failed to look up the product")?;
    if !product_known {
        return Err(Error::Invalid(format!(
            "unknown product '{}': run `tenantctl migrate` after adding it under {}",
            new.product,
            config.products_dir.display()
        )));
    }
    let host = hosts::choose(conn, new.host.as_deref()).await?;
    let isolation = new.plan.isolation();
    let mut names = TenantNames::derive(&config.database_prefix, &new.product, &new.slug, isolation)?;
    if isolation == Isolation::Schema {
        names.database = shared_database_with_room(conn, config, &new.product, &host).await?;
    }
    let control_plane: String =
        sqlx::query_scalar("SELECT current_database()::text").fetch_one(&mut *conn).await.context("failed to read the database name")?;
    if names.database == control_plane {
        return Err(Error::Invalid(format!(
            "tenant '{}' of product '{}' would live in database {}, which is the control plane's: choose another slug or database_prefix",
            new.slug, new.product, names.database
        )));
    }
    Ok((host, names))
}

/// The shared database of `product` on `host` a new schema-mode tenant goes to: the first
/// holding fewer than `[products] tenants_per_shared_database` tenants (not deleted). A
/// soft limit: tenants registered at the same moment may pass it by a few.
pub async fn shared_database_with_room(conn: &mut PgConnection, config: &Config, product: &str, host: &str) -> Result<String> {
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT database_name, count(*) FROM tenant_master.tenants
         WHERE host = $1 AND product = $2 AND isolation = 'schema' AND status <> 'deleted' GROUP BY database_name",
    )
    .bind(host)
    .bind(product)
    .fetch_all(&mut *conn)
    .await
    .context("failed to count the tenants of the shared databases")?;
    let limit = i64::from(config.products.tenants_per_shared_database.max(1));
    for shard in 1.. {
        let name = naming::shared_database(&config.database_prefix, product, shard)?;
        if counts.iter().find(|(db, _)| *db == name).map_or(0, |(_, n)| *n) < limit {
            return Ok(name);
        }
    }
    unreachable!("some shared database has room")
}

/// A deleted tenant's slug is free again once its backups are pruned (`PruneJobs`, after
/// `[backups] keep_deleted_days`): until then its folder and rows still carry the slug.
async fn refuse_while_backups_remain(conn: &mut PgConnection, config: &Config, deleted: &Tenant) -> Result<()> {
    let backups: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.backups WHERE tenant_id = $1")
        .bind(deleted.id)
        .fetch_one(&mut *conn)
        .await
        .context("failed to count the deleted tenant's backups")?;
    if backups == 0 {
        return Ok(());
    }
    let deleted_at = deleted.deleted_at.unwrap_or(deleted.updated_at);
    let frees = deleted_at + chrono::Duration::days(config.backups.keep_deleted_days as i64);
    Err(Error::Conflict(format!(
        "slug '{}' belonged to a tenant deleted on {}; its {backups} backup(s) are kept until {} ([backups] keep_deleted_days), and the slug frees up when they are pruned",
        deleted.slug,
        deleted_at.format("%Y-%m-%d"),
        frees.format("%Y-%m-%d")
    )))
}

/// Frees the idempotency keys the deleted tenant's finished jobs hold (`provision:<slug>`,
/// `delete:<slug>`), so the new tenant's jobs are enqueued rather than taken for theirs.
async fn release_job_keys(conn: &mut PgConnection, slug: &str) -> Result<()> {
    sqlx::query(
        "UPDATE apalis.jobs SET idempotency_key = NULL
         WHERE idempotency_key IN ('provision:' || $1, 'delete:' || $1)
           AND tenant_master.job_status(status, attempts, max_attempts, lock_at, done_at) IN ('done', 'dead')",
    )
    .bind(slug)
    .execute(conn)
    .await
    .context("failed to release the deleted tenant's job keys")?;
    Ok(())
}

/// The tenant with this slug, if any: the live one, else the latest deleted one.
pub async fn find(conn: &mut PgConnection, slug: &str) -> Result<Option<Tenant>> {
    sqlx::query_as(concat!(
        "SELECT ",
        tenant_columns!(),
        " FROM tenant_master.tenants WHERE slug = $1 ORDER BY status = 'deleted', id DESC LIMIT 1"
    ))
    .bind(slug)
    .fetch_optional(conn)
    .await
    .context("failed to read the tenant")
}

/// The tenant with this id (also a deleted one).
pub async fn find_by_id(conn: &mut PgConnection, id: i64) -> Result<Option<Tenant>> {
    sqlx::query_as(concat!("SELECT ", tenant_columns!(), " FROM tenant_master.tenants WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
        .context("failed to read the tenant")
}

/// The tenant with this slug, or a clear "no such tenant".
pub async fn get(conn: &mut PgConnection, slug: &str) -> Result<Tenant> {
    find(conn, slug).await?.ok_or_else(|| Error::NotFound(format!("there is no tenant '{slug}'")))
}

/// Which tenants a bulk command (`backup create`, `maintenance`) covers.
pub enum Selection {
    /// These slugs; every one must exist and be live, or nothing is enqueued.
    Slugs(Vec<String>),
    /// Every active, paused or suspended tenant.
    All,
}

/// The (id, slug) of the selected tenants, all live; `doing` completes "cannot be ...".
pub async fn select(conn: &mut PgConnection, selection: &Selection, doing: &str) -> Result<Vec<(i64, String)>> {
    let rows: Vec<(i64, String, String)> = match selection {
        Selection::All => sqlx::query_as(
            "SELECT id, slug, status FROM tenant_master.tenants WHERE status IN ('active', 'paused', 'suspended') ORDER BY slug",
        )
        .fetch_all(&mut *conn)
        .await
        .context("failed to list tenants")?,
        Selection::Slugs(slugs) => {
            for slug in slugs {
                Slug::parse(slug)?;
            }
            let found: Vec<(i64, String, String)> =
                sqlx::query_as("SELECT id, slug, status FROM tenant_master.tenants WHERE slug = ANY($1) ORDER BY slug")
                    .bind(slugs)
                    .fetch_all(&mut *conn)
                    .await
                    .context("failed to look up tenants")?;
            if let Some(missing) = slugs.iter().find(|s| !found.iter().any(|(_, f, _)| f == *s)) {
                return Err(Error::NotFound(format!("there is no tenant '{missing}': nothing was enqueued")));
            }
            if let Some((_, slug, status)) = found.iter().find(|(_, _, st)| !matches!(st.as_str(), "active" | "paused" | "suspended")) {
                return Err(Error::Conflict(format!("tenant '{slug}' is {status} and cannot be {doing}: nothing was enqueued")));
            }
            found
        }
    };
    Ok(rows.into_iter().map(|(id, slug, _)| (id, slug)).collect())
}

/// Live tenants (active, paused, suspended), by slug: these `slugs` only unless empty,
/// and matching the other filters when given.
pub async fn list_live(
    conn: &mut PgConnection,
    slugs: &[String],
    product: Option<&str>,
    plan: Option<&str>,
    host: Option<&str>,
) -> Result<Vec<Tenant>> {
    sqlx::query_as(concat!(
        "SELECT ",
        tenant_columns!(),
        " FROM tenant_master.tenants
         WHERE status IN ('active', 'paused', 'suspended')
           AND (cardinality($1::text[]) = 0 OR slug = ANY($1))
           AND ($2::text IS NULL OR product = $2) AND ($3::text IS NULL OR plan = $3) AND ($4::text IS NULL OR host = $4)
         ORDER BY slug"
    ))
    .bind(slugs)
    .bind(product)
    .bind(plan)
    .bind(host)
    .fetch_all(conn)
    .await
    .context("failed to list tenants")
}

/// Filters of `tenantctl tenant list`.
#[derive(Debug, Default)]
pub struct ListFilter {
    /// Tenants with this status only.
    pub status: Option<String>,
    /// Tenants of this product only.
    pub product: Option<String>,
    /// Tenants on this plan only.
    pub plan: Option<String>,
    /// Tenants on this database host only.
    pub host: Option<String>,
    /// Part of the slug or of the owner's e-mail, any case.
    pub search: Option<String>,
}

/// A tenant's statuses.
pub const STATUSES: &[&str] = &["provisioning", "active", "paused", "suspended", "deleting", "deleted", "failed"];

/// Refuses a filter value that matches nothing by construction (an unknown status, plan,
/// product or host), naming the valid ones: a typo must not read as "no tenants".
pub async fn check_filter(
    pool: &PgPool,
    status: Option<&str>,
    product: Option<&str>,
    plan: Option<&str>,
    host: Option<&str>,
) -> Result<()> {
    if let Some(status) = status.filter(|s| !STATUSES.contains(s)) {
        return Err(crate::error::unknown_value("status", status, STATUSES, None));
    }
    if let Some(plan) = plan {
        Plan::parse(plan)?;
    }
    if let Some(product) = product {
        let known = products(pool).await?;
        if !known.iter().any(|k| k == product) {
            return Err(crate::error::unknown_value(
                "product",
                product,
                &known,
                Some("`tenantctl migrate` registers the products it finds"),
            ));
        }
    }
    if let Some(host) = host {
        let known = crate::hosts::names(pool, false).await?;
        if !known.iter().any(|k| k == host) {
            return Err(crate::error::unknown_value("host", host, &known, Some("`tenantctl host list` shows them")));
        }
    }
    Ok(())
}

/// The products `tenantctl migrate` registered, by name.
pub async fn products(pool: &PgPool) -> Result<Vec<String>> {
    sqlx::query_scalar("SELECT name FROM tenant_master.products ORDER BY name").fetch_all(pool).await.context("failed to read the products")
}

/// How many tenants there are of each status and plan (deleted ones included).
pub async fn counts(pool: &PgPool) -> Result<Vec<(String, String, i64)>> {
    sqlx::query_as("SELECT status, plan, count(*) FROM tenant_master.tenants GROUP BY status, plan ORDER BY status, plan")
        .fetch_all(pool)
        .await
        .context("failed to count the tenants")
}

/// Tenants matching `filter`, by slug; an unknown value is refused (see [`check_filter`]).
pub async fn list(pool: &PgPool, filter: &ListFilter) -> Result<Vec<Tenant>> {
    check_filter(pool, filter.status.as_deref(), filter.product.as_deref(), filter.plan.as_deref(), filter.host.as_deref()).await?;
    // The search text is a bound value matched literally (LIKE's wildcards escaped).
    let search = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    sqlx::query_as(concat!(
        "SELECT ",
        tenant_columns!(),
        " FROM tenant_master.tenants
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR product = $2) AND ($3::text IS NULL OR plan = $3)
           AND ($4::text IS NULL OR host = $4)
           AND ($5::text IS NULL OR slug ILIKE '%' || $5 || '%' OR owner_email ILIKE '%' || $5 || '%')
         ORDER BY slug"
    ))
    .bind(&filter.status)
    .bind(&filter.product)
    .bind(&filter.plan)
    .bind(&filter.host)
    .bind(search)
    .fetch_all(pool)
    .await
    .context("failed to list tenants")
}

/// The tenant role's connection URL (host and port of its database host): a secret.
pub async fn credentials_url(conn: &mut PgConnection, config: &Config, slug: &str) -> Result<String> {
    let tenant = get(conn, slug).await?;
    if matches!(tenant.status.as_str(), "deleted" | "deleting") {
        return Err(Error::Conflict(format!("tenant '{slug}' is {}: it has no credentials any more", tenant.status)));
    }
    let password = role_password(conn, config, &tenant).await?;
    let options = hosts::admin_options(conn, config, &tenant.host).await?;
    let host = options.get_host();
    let host = if host.starts_with('/') { "localhost" } else { host };
    Ok(format!("postgres://{}:{}@{}:{}/{}", tenant.role, password, host, options.get_port(), tenant.database))
}

/// The tenant role's password, opened with the configured secret key: a secret, for
/// setting the role's password and for `tenant credentials` only.
pub async fn role_password(conn: &mut PgConnection, config: &Config, tenant: &Tenant) -> Result<String> {
    let sealed: Option<String> = sqlx::query_scalar("SELECT role_password FROM tenant_master.tenants WHERE id = $1")
        .bind(tenant.id)
        .fetch_one(&mut *conn)
        .await
        .context("failed to read the tenant's password")?;
    let sealed = sealed.ok_or_else(|| Error::Conflict(format!("tenant '{}' has no password (it was deleted)", tenant.slug)))?;
    Keyring::load(&config.key_sources())?.open(&sealed, &tenant.slug)
}

/// Sets a tenant's status (and reason) and logs the change, in one statement pair on `conn`.
pub async fn set_status(conn: &mut PgConnection, tenant: &Tenant, status: &str, reason: Option<&str>, actor: &str) -> Result<()> {
    sqlx::query("UPDATE tenant_master.tenants SET status = $2, status_reason = $3, updated_at = now() WHERE id = $1")
        .bind(tenant.id)
        .bind(status)
        .bind(reason)
        .execute(&mut *conn)
        .await
        .context(format!("failed to mark tenant {} {status}", tenant.slug))?;
    activity::record(conn, actor, Some(tenant.id), &format!("tenant.{status}"), json!({ "from": tenant.status, "reason": reason })).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked() {
        for good in ["owner@example.com", "a.b+c@sub.example.org"] {
            validate_email(good).unwrap();
        }
        for bad in ["", "owner", "@example.com", "owner@", "owner@example", "a b@example.com", "a@b@c.com", "a@.com"] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }
}
