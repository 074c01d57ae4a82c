//! VACUUM / ANALYZE / REINDEX over one tenant's tables (safe to repeat), and Cleanup:
//! deleting rows older than N days from the product's prunable tables, in batches.
//!
//! Both run in an operator session (the tenant's rights): a DELETE fires the tenant's
//! triggers, a count may meet its views, and VACUUM FULL / REINDEX / ANALYZE evaluate its
//! index expressions. The tenant's role owns its tables, so it may maintain them. Our
//! statements are composed here and name every operator in full: tenant code may have
//! changed the session's `search_path` before they run.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{AssertSqlSafe, PgConnection};

use crate::{
    activity,
    context::App,
    error::{Context as _, Error, Result},
    naming::quote_ident,
    products,
    tenant_session::TenantAccess,
    tenants::{self, Tenant},
};

/// Which maintenance to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tasks {
    /// Plain VACUUM of every table.
    #[serde(default)]
    pub vacuum: bool,
    /// VACUUM FULL: rewrites tables, takes exclusive locks.
    #[serde(default)]
    pub full: bool,
    /// ANALYZE every table (with the VACUUM when one runs).
    #[serde(default)]
    pub analyze: bool,
    /// REINDEX SCHEMA CONCURRENTLY.
    #[serde(default)]
    pub reindex: bool,
}

/// What a maintenance run did.
#[derive(Debug, Serialize)]
pub struct MaintenanceReport {
    /// Tables (and materialized views) of the tenant's schema it ran over.
    pub tables: usize,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// Rows Cleanup deleted (or would delete) per table.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CleanupReport {
    /// Rows older than this were (or would be) deleted.
    pub cutoff: DateTime<Utc>,
    /// Whether rows were only counted.
    pub dry_run: bool,
    /// Each prunable table with its rows deleted (or counted).
    pub tables: Vec<(String, i64)>,
}

/// Rows deleted per statement, so a large cleanup never holds long locks or huge WAL bursts.
const CLEANUP_BATCH: i64 = 5000;

async fn live_tenant(cp: &mut PgConnection, slug: &str) -> Result<Tenant> {
    let tenant = tenants::get(cp, slug).await?;
    if !matches!(tenant.status.as_str(), "active" | "paused" | "suspended") {
        return Err(Error::Conflict(format!("tenant '{slug}' is {}: no maintenance for it", tenant.status)));
    }
    Ok(tenant)
}

/// Runs `tasks` over the tenant's tables.
pub async fn maintain(app: &App, slug: &str, tasks: Tasks, actor: &str) -> Result<MaintenanceReport> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    let tenant = live_tenant(&mut cp, slug).await?;
    let started = Instant::now();
    let mut db = TenantAccess::prepare(&app.config, &mut cp, &tenant).await?.connect().await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relkind IN ('r', 'm') ORDER BY 1",
    )
    .bind(&tenant.schema)
    .fetch_all(&mut db)
    .await
    .context("failed to list the tenant's tables")?;
    run_tasks(&mut db, &tenant, &tables, tasks).await?;
    crate::fault::point(slug, "maintenance:vacuumed")?;
    let report = MaintenanceReport { tables: tables.len(), duration_ms: started.elapsed().as_millis() as u64 };
    activity::record(
        &mut cp,
        actor,
        Some(tenant.id),
        "tenant.maintenance",
        json!({ "tasks": tasks, "tables": report.tables, "duration_ms": report.duration_ms }),
    )
    .await?;
    Ok(report)
}

async fn run_tasks(db: &mut PgConnection, tenant: &Tenant, tables: &[String], tasks: Tasks) -> Result<()> {
    // VACUUM cannot run inside a transaction: each statement runs on its own.
    let vacuum = match (tasks.vacuum || tasks.full, tasks.full, tasks.analyze) {
        (false, _, true) => Some("ANALYZE"),
        (false, _, false) => None,
        (true, true, true) => Some("VACUUM (FULL, ANALYZE)"),
        (true, true, false) => Some("VACUUM (FULL)"),
        (true, false, true) => Some("VACUUM (ANALYZE)"),
        (true, false, false) => Some("VACUUM"),
    };
    if let Some(command) = vacuum {
        for table in tables {
            let sql = format!("{command} {}.{}", quote_ident(&tenant.schema), quote_ident(table));
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *db).await.context(format!("failed to run {command} on {table}"))?;
        }
    }
    if tasks.reindex {
        let sql = format!("REINDEX SCHEMA CONCURRENTLY {}", quote_ident(&tenant.schema));
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *db).await.context("failed to run REINDEX")?;
    }
    Ok(())
}

/// Deletes (or with `dry_run` counts) rows older than `older_than_days` in every prunable
/// table of the tenant's product.
pub async fn cleanup(app: &App, slug: &str, older_than_days: u32, dry_run: bool, actor: &str) -> Result<CleanupReport> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    let tenant = live_tenant(&mut cp, slug).await?;
    let product = products::load(&app.config.products_dir, &tenant.product)?;
    let cutoff = Utc::now() - chrono::Duration::days(older_than_days as i64);
    let mut db = TenantAccess::prepare(&app.config, &mut cp, &tenant).await?.connect().await?;
    let mut tables = Vec::new();
    for prunable in &product.prunable {
        let count = if dry_run {
            let sql = format!(
                "SELECT pg_catalog.count(*) FROM {}.{} WHERE {} OPERATOR(pg_catalog.<) $1",
                quote_ident(&tenant.schema),
                quote_ident(&prunable.table),
                quote_ident(&prunable.column)
            );
            sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(cutoff)
                .fetch_one(&mut db)
                .await
                .context(format!("failed to count old rows of {}", prunable.table))?
        } else {
            delete_in_batches(&mut db, &tenant, &prunable.table, &prunable.column, cutoff).await?
        };
        tables.push((prunable.table.clone(), count));
    }
    let report = CleanupReport { cutoff, dry_run, tables };
    activity::record(&mut cp, actor, Some(tenant.id), "tenant.cleanup", serde_json::to_value(&report).expect("report serializes")).await?;
    Ok(report)
}

async fn delete_in_batches(db: &mut PgConnection, tenant: &Tenant, table: &str, column: &str, cutoff: DateTime<Utc>) -> Result<i64> {
    let (schema, table_q, column) = (quote_ident(&tenant.schema), quote_ident(table), quote_ident(column));
    let sql = format!(
        "DELETE FROM {schema}.{table_q} WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY (SELECT ctid FROM {schema}.{table_q} WHERE {column} OPERATOR(pg_catalog.<) $1 LIMIT $2))"
    );
    let mut total = 0;
    loop {
        let deleted = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(cutoff)
            .bind(CLEANUP_BATCH)
            .execute(&mut *db)
            .await
            .context(format!("failed to delete old rows of {table}"))?
            .rows_affected() as i64;
        total += deleted;
        crate::fault::point(&tenant.slug, "cleanup:batch")?;
        // A tenant trigger may skip rows; fewer than a batch means nothing more to do.
        if deleted < CLEANUP_BATCH {
            return Ok(total);
        }
    }
}
