//! Product migrations of one tenant's schema.
//!
//! A migration runs in an operator session (the tenant's rights only: its DML fires the
//! tenant's triggers), as the tenant's role so what it creates belongs to the tenant, and
//! records itself in the ledger in the same transaction, so each is applied exactly once
//! however often a job reruns. The statements around it are composed here, not by the
//! server's `format()`: tenant code earlier in the session may have changed its
//! `search_path`, and nothing it named may take part in our own SQL.

use sqlx::{Acquire, AssertSqlSafe, PgConnection};

use crate::{
    activity,
    error::{Context as _, Error, Result},
    hosts,
    jobs::App,
    ledger,
    naming::quote_ident,
    ops::rollout,
    products::{self, ProductMigration},
    tenant_session::TenantAccess,
    tenants::{self, Tenant},
};

/// Applies `migration` to the tenant's schema unless the ledger has it; false if it had.
/// `admin_db` reads the ledger; `operator` is the tenant's operator session.
pub async fn apply(
    admin_db: &mut PgConnection,
    operator: &mut PgConnection,
    tenant: &Tenant,
    migration: &ProductMigration,
) -> Result<bool> {
    let label = migration.label();
    match ledger::checksum(admin_db, &tenant.schema, migration.version).await? {
        Some(checksum) if checksum == migration.checksum => return Ok(false),
        Some(_) => {
            return Err(Error::Fatal(format!(
                "product migration {label} of '{}' changed after it was applied to {}; restore the original file and add a new migration",
                tenant.product, tenant.slug
            )))
        }
        None => {}
    }
    let mut tx = operator.begin().await.context("failed to start a transaction")?;
    let enter = format!("SET LOCAL ROLE {}; SET LOCAL search_path TO {}", quote_ident(&tenant.role), quote_ident(&tenant.schema));
    sqlx::raw_sql(AssertSqlSafe(enter)).execute(&mut *tx).await.context("failed to enter the tenant's schema")?;
    // Product migrations are code shipped with the product, trusted like our own migrations.
    sqlx::raw_sql(AssertSqlSafe(migration.sql.as_str()))
        .execute(&mut *tx)
        .await
        .context(format!("product migration {label} failed for {}", tenant.slug))?;
    sqlx::raw_sql("RESET ROLE; SET LOCAL search_path TO pg_catalog")
        .execute(&mut *tx)
        .await
        .context("failed to leave the tenant's schema")?;
    // The function records for the schema of this session's login role only.
    sqlx::query("SELECT tenant_master_meta.record_migration($1, $2, $3)")
        .bind(migration.version)
        .bind(&migration.name)
        .bind(&migration.checksum)
        .execute(&mut *tx)
        .await
        .context("failed to record the migration")?;
    tx.commit().await.context(format!("failed to commit product migration {label}"))?;
    Ok(true)
}

/// Applies every product migration tenant `slug` lacks, in order; returns their labels.
/// A paused or suspended tenant is migrated too (the operator role logs in regardless).
pub async fn migrate_tenant(app: &App, slug: &str) -> Result<Vec<String>> {
    migrate_tenant_to(app, slug, None, None, "worker").await
}

/// Applies the product migrations up to version `to` (all if none) that tenant `slug`
/// lacks, records the version it is at, and clears its last rollout error. With
/// `tenant_id`, a tenant that is gone or is another tenant by now is left alone. A deleted
/// tenant is never migrated.
pub async fn migrate_tenant_to(app: &App, slug: &str, tenant_id: Option<i64>, to: Option<i64>, actor: &str) -> Result<Vec<String>> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    let tenant = tenants::get(&mut cp, slug).await?;
    if tenant_id.is_some_and(|id| id != tenant.id) {
        tracing::info!("the tenant this rollout was for is gone; '{slug}' is another tenant now: nothing to do");
        return Ok(Vec::new());
    }
    if !matches!(tenant.status.as_str(), "active" | "paused" | "suspended") {
        return Err(Error::Conflict(format!("tenant '{slug}' is {}: only a live tenant is migrated", tenant.status)));
    }
    let product = products::load(&app.config.products_dir, &tenant.product)?;
    if let Some(to) = to {
        if !product.migrations.iter().any(|m| m.version == to) {
            return Err(Error::Fatal(format!("product '{}' has no migration {to:04} (was its file removed?)", tenant.product)));
        }
    }
    let mut tenant_db = hosts::connect(&mut cp, &app.config, &tenant.host, &tenant.database).await?;
    let access = TenantAccess::prepare(&app.config, &mut cp, &tenant).await?;
    ledger::ensure(&mut tenant_db, access.role()).await?;
    let mut operator = access.connect().await?;
    let mut applied = Vec::new();
    for migration in product.migrations.iter().filter(|m| to.is_none_or(|to| m.version <= to)) {
        if apply(&mut tenant_db, &mut operator, &tenant, migration).await? {
            applied.push(migration.label());
        }
        crate::fault::point(slug, &format!("migrate:migration:{:04}", migration.version))?;
    }
    let version = ledger::applied_versions(&mut tenant_db, &tenant.schema).await?.into_iter().max();
    rollout::record_version(&mut cp, tenant.id, version).await?;
    if !applied.is_empty() {
        activity::record(&mut cp, actor, Some(tenant.id), "tenant.migrated", serde_json::json!({ "applied": applied, "version": version }))
            .await?;
    }
    Ok(applied)
}

/// Keeps why a rollout gave up on the tenant, for `tenant show` (its version stays).
pub async fn record_failure(app: &App, slug: &str, tenant_id: Option<i64>, error: &str) -> Result<()> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    sqlx::query(
        "UPDATE tenant_master.tenants SET migration_error = $3
         WHERE slug = $1 AND status <> 'deleted' AND ($2::bigint IS NULL OR id = $2)",
    )
    .bind(slug)
    .bind(tenant_id)
    .bind(error)
    .execute(&mut *cp)
    .await
    .context("failed to record the rollout failure")?;
    Ok(())
}
