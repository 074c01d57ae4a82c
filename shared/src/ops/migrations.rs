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
    context::App,
    error::{Context as _, Error, Result},
    hosts, ledger,
    naming::quote_ident,
    products::{self, Product, ProductMigration},
    tenant_session::TenantAccess,
    tenants::{self, Tenant},
};

/// Applies `migration` to the tenant's schema unless the ledger has it; false if it had.
/// `admin_db` reads the ledger; `operator` is the tenant's operator session. The caller
/// has checked the file against what we applied before ([`check_files`]), so a ledger row
/// with another checksum is the tenant's own doing: it stops this tenant only.
async fn apply(admin_db: &mut PgConnection, operator: &mut PgConnection, tenant: &Tenant, migration: &ProductMigration) -> Result<bool> {
    let label = migration.label();
    match ledger::checksum(admin_db, &tenant.schema, migration.version).await? {
        Some(checksum) if checksum == migration.checksum => return Ok(false),
        Some(checksum) => return Err(Error::fatal(ledger_conflict(&tenant.slug, migration, &checksum))),
        None => {}
    }
    let mut tx = operator.begin().await.context("failed to start a transaction")?;
    let enter = format!("SET LOCAL ROLE {}; SET LOCAL search_path TO {}", quote_ident(&tenant.role), quote_ident(&tenant.schema));
    sqlx::raw_sql(AssertSqlSafe(enter)).execute(&mut *tx).await.context("failed to enter the tenant's schema")?;
    // Product migrations are code shipped with the product, trusted like our own migrations.
    let sql_ran = sqlx::raw_sql(AssertSqlSafe(migration.sql.as_str()))
        .execute(&mut *tx)
        .await
        .context(format!("product migration {label} failed for {}", tenant.slug));
    let sql_ran = match sql_ran {
        Err(e) if e.sqlstate().as_deref() == Some("2BP01") => Err(crate::catalog_deps::name_holders(e, admin_db, &tenant.schema).await),
        other => other,
    };
    sql_ran?;
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

/// Why a tenant's ledger disagrees with a file we trust, in one sentence.
pub fn ledger_conflict(slug: &str, migration: &ProductMigration, recorded: &str) -> String {
    format!(
        "the migration ledger of '{slug}' records {} with checksum {}, not the file's {}; code in the tenant's own schema can write its ledger, so only this tenant stops: inspect its ledger (tenant_master_meta.applied_migrations), delete the row if the migration never ran, and run `tenantctl tenant migrate {slug}` again",
        migration.label(),
        short(recorded),
        short(&migration.checksum)
    )
}

/// The first 12 hex digits of a checksum; anything else (the tenant wrote it) is not shown.
fn short(checksum: &str) -> &str {
    match checksum.len() >= 12 && checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
        true => &checksum[..12],
        false => "(not a checksum)",
    }
}

/// Refuses a product whose migration file changed since one of our sessions first applied
/// it: half the fleet would silently get other SQL than the rest. This stops everything.
/// Returns the versions whose checksums are kept already.
pub async fn check_files(cp: &mut PgConnection, product: &Product) -> Result<Vec<i64>> {
    let first: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, checksum FROM tenant_master.product_migrations_applied WHERE product = $1")
            .bind(&product.name)
            .fetch_all(cp)
            .await
            .context("failed to read the product migrations applied so far")?;
    let changed = product.migrations.iter().find(|m| first.iter().any(|(v, checksum)| *v == m.version && *checksum != m.checksum));
    match changed {
        Some(m) => Err(Error::fatal(format!(
            "product migration {} of '{}' changed after it was applied (its first run had another checksum): put the original file back and add a new migration; nothing was enqueued",
            m.label(),
            product.name
        ))),
        None => Ok(first.into_iter().map(|(version, _)| version).collect()),
    }
}

/// Remembers the checksums of `migrations` of `product` as those our sessions applied (the
/// first time only), for [`check_files`].
pub async fn remember(cp: &mut PgConnection, product: &str, migrations: &[&ProductMigration]) -> Result<()> {
    let versions: Vec<i64> = migrations.iter().map(|m| m.version).collect();
    let names: Vec<&str> = migrations.iter().map(|m| m.name.as_str()).collect();
    let checksums: Vec<&str> = migrations.iter().map(|m| m.checksum.as_str()).collect();
    sqlx::query(
        "INSERT INTO tenant_master.product_migrations_applied (product, version, name, checksum)
         SELECT $1, v, n, c FROM unnest($2::bigint[], $3::text[], $4::text[]) AS m(v, n, c)
         ON CONFLICT (product, version) DO NOTHING",
    )
    .bind(product)
    .bind(&versions)
    .bind(&names)
    .bind(&checksums)
    .execute(cp)
    .await
    .context("failed to record the applied product migrations")?;
    Ok(())
}

/// Applies, in order, the migrations of `product` up to `to` (all if none) that the
/// tenant's ledger lacks, each followed by `after_each(version)` (a crash point); returns
/// the labels of those it applied now.
pub async fn apply_all(
    cp: &mut PgConnection,
    admin_db: &mut PgConnection,
    operator: &mut PgConnection,
    tenant: &Tenant,
    product: &Product,
    to: Option<i64>,
    after_each: impl Fn(i64) -> Result<()>,
) -> Result<Vec<String>> {
    let kept = check_files(cp, product).await?;
    let mut applied = Vec::new();
    for migration in product.migrations.iter().filter(|m| to.is_none_or(|to| m.version <= to)) {
        if apply(admin_db, operator, tenant, migration).await? {
            applied.push(migration.label());
        }
        // Right after its commit (or once the ledger shows it): a later migration failing
        // must not leave this one unguarded.
        if !kept.contains(&migration.version) {
            remember(cp, &product.name, &[migration]).await?;
        }
        after_each(migration.version)?;
    }
    Ok(applied)
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
            return Err(Error::fatal(format!("product '{}' has no migration {to:04} (was its file removed?)", tenant.product)));
        }
    }
    let mut tenant_db = hosts::connect(&mut cp, &app.config, &tenant.host, &tenant.database).await?;
    let access = TenantAccess::prepare(&app.config, &mut cp, &tenant).await?;
    ledger::ensure(&mut tenant_db, access.role()).await?;
    let mut operator = access.connect().await?;
    let applied = apply_all(&mut cp, &mut tenant_db, &mut operator, &tenant, &product, to, |version| {
        crate::fault::point(slug, &format!("migrate:migration:{:04}", version))
    })
    .await?;
    let version = ledger::applied_versions(&mut tenant_db, &tenant.schema).await?.into_iter().max();
    record_version(&mut cp, tenant.id, version).await?;
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

/// Records that the ledger of tenant `id` now ends at `version`, and clears its last
/// rollout error.
pub async fn record_version(cp: &mut PgConnection, id: i64, version: Option<i64>) -> Result<()> {
    sqlx::query("UPDATE tenant_master.tenants SET schema_version = $2, migration_error = NULL WHERE id = $1")
        .bind(id)
        .bind(version)
        .execute(cp)
        .await
        .context("failed to record the tenant's schema version")?;
    Ok(())
}
