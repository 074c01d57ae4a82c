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
    error::{Context as _, Error, Result},
    hosts,
    jobs::App,
    ledger,
    naming::quote_ident,
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
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    let tenant = tenants::get(&mut cp, slug).await?;
    if !matches!(tenant.status.as_str(), "active" | "paused" | "suspended") {
        return Err(Error::Conflict(format!("tenant '{slug}' is {}: only a live tenant is migrated", tenant.status)));
    }
    let product = products::load(&app.config.products_dir, &tenant.product)?;
    let mut tenant_db = hosts::connect(&mut cp, &app.config, &tenant.host, &tenant.database).await?;
    let access = TenantAccess::prepare(&app.config, &mut cp, &tenant).await?;
    ledger::ensure(&mut tenant_db, access.role()).await?;
    let mut operator = access.connect().await?;
    let mut applied = Vec::new();
    for migration in &product.migrations {
        if apply(&mut tenant_db, &mut operator, &tenant, migration).await? {
            applied.push(migration.label());
        }
    }
    Ok(applied)
}
