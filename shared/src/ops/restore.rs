//! Restores (DESIGN §4) that never lose data.
//!
//! Order: verify the file (size, sha256, archive listing); take a `pre_restore` safety
//! backup; hold the tenant's login and end its sessions; rename the live schema aside
//! (pg_restore cannot restore under another name); `pg_restore --single-transaction`;
//! only once that committed, drop the set-aside schema. On a failed restore its
//! transaction leaves nothing and the set-aside schema is renamed back. A run cut short
//! anywhere is finished (or undone) by the next run from what it finds: live schema,
//! set-aside schema, or both.

use serde_json::json;
use sqlx::PgConnection;

use crate::{
    activity,
    backups::{self, Backup, Kind},
    db::ddl,
    error::{Context as _, Error, Result},
    fault, hosts,
    jobs::App,
    lock::HostSlot,
    ops::{access, backup, provision},
    pg_tools::Target,
    products,
    tenants::{self, Tenant},
};

/// What a restore did.
#[derive(Debug, serde::Serialize)]
pub struct Restored {
    pub backup_id: i64,
    pub safety_backup_id: i64,
}

/// Restores backup `backup_id` of `slug` in place of its live schema.
pub async fn restore(app: &App, slug: &str, backup_id: i64, job_id: &str) -> Result<Restored> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    let tenant = tenants::get(&mut cp, slug).await?;
    if !matches!(tenant.status.as_str(), "active" | "paused" | "suspended") {
        return Err(Error::Conflict(format!(
            "tenant '{slug}' is {}: only an active, paused or suspended tenant can be restored",
            tenant.status
        )));
    }
    let chosen = backups::get(&mut cp, tenant.id, backup_id).await?;
    backup::verify_file(&chosen).await?;

    let safety = backup::backup(app, slug, Kind::PreRestore, None, job_id).await?;
    fault::point(slug, "restore:safety_backup")?;

    let mut tenant_db = hosts::connect(&mut cp, &app.config, &tenant.host, &tenant.database).await?;
    access::block_login(&mut tenant_db, &tenant).await?;
    let outcome = replace_schema(app, &mut cp, &mut tenant_db, &tenant, &chosen).await;
    if let Err(e) = outcome {
        // A simulated crash leaves things as a real one would, for the rerun to find.
        if !e.is_injected() {
            // Whatever failed, the live data must be back under its own name before we return.
            put_back_aside(&mut tenant_db, &tenant).await?;
            give_login_back(&mut tenant_db, &tenant).await?;
        }
        return Err(e);
    }
    give_login_back(&mut tenant_db, &tenant).await?;
    activity::record(
        &mut cp,
        "worker",
        Some(tenant.id),
        "tenant.restored",
        json!({ "backup_id": chosen.id, "safety_backup_id": safety.id }),
    )
    .await?;
    Ok(Restored { backup_id: chosen.id, safety_backup_id: safety.id })
}

/// Undoes an interrupted restore (used when a restore job gives up): live data back
/// under its name, login as the tenant's status says.
pub async fn recover(app: &App, slug: &str) -> Result<()> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    let tenant = tenants::get(&mut cp, slug).await?;
    let mut tenant_db = hosts::connect(&mut cp, &app.config, &tenant.host, &tenant.database).await?;
    put_back_aside(&mut tenant_db, &tenant).await?;
    give_login_back(&mut tenant_db, &tenant).await
}

/// The name the live schema waits under while a restore runs.
fn aside_name(tenant: &Tenant) -> String {
    format!("{}__restore_aside", tenant.schema)
}

async fn replace_schema(app: &App, cp: &mut PgConnection, tenant_db: &mut PgConnection, tenant: &Tenant, chosen: &Backup) -> Result<()> {
    let aside = aside_name(tenant);
    let live_exists = schema_exists(tenant_db, &tenant.schema).await?;
    let aside_exists = schema_exists(tenant_db, &aside).await?;
    let restored_before = match (live_exists, aside_exists) {
        // An earlier run restored and committed, then stopped before dropping the old copy.
        (true, true) => true,
        (true, false) => {
            ddl(tenant_db, "ALTER SCHEMA %I RENAME TO %I", &[&tenant.schema, &aside]).await?;
            false
        }
        // An earlier run set the live schema aside and stopped before restoring.
        (false, _) => false,
    };
    fault::point(&tenant.slug, "restore:set_aside")?;
    if !restored_before {
        let admin_url = hosts::admin_url(cp, &app.config, &tenant.host).await?;
        let slot = HostSlot::acquire(&app.config, &tenant.host).await?;
        let result = Target::new(&admin_url, &tenant.database)?.restore(&chosen.path()).await;
        slot.release().await;
        result.map_err(|e| Error::Tool(format!("restore of backup {} into '{}' failed, live data kept: {e}", chosen.id, tenant.slug)))?;
    }
    fault::point(&tenant.slug, "restore:restored")?;
    if schema_exists(tenant_db, &aside).await? {
        ddl(tenant_db, "DROP SCHEMA %I CASCADE", &[&aside]).await?;
    }
    bring_migrations_up_to_date(app, tenant_db, tenant, chosen).await
}

/// The restored schema has the migrations it had at backup time; record exactly those,
/// then apply what the product added since.
async fn bring_migrations_up_to_date(app: &App, tenant_db: &mut PgConnection, tenant: &Tenant, chosen: &Backup) -> Result<()> {
    sqlx::query("DELETE FROM tenant_master_meta.applied_migrations WHERE schema_name = $1 AND NOT (version = ANY($2))")
        .bind(&tenant.schema)
        .bind(&chosen.schema_versions)
        .execute(&mut *tenant_db)
        .await
        .context("failed to reset the applied migrations to the backup's")?;
    let product = products::load(&app.config.products_dir, &tenant.product)?;
    for migration in &product.migrations {
        provision::apply_migration(tenant_db, tenant, migration).await?;
    }
    Ok(())
}

async fn schema_exists(conn: &mut PgConnection, schema: &str) -> Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(conn)
        .await
        .context("failed to look up a schema")
}

/// If the live schema is missing and the set-aside copy exists, renames it back; if both
/// exist the restore committed, and the set-aside copy is dropped.
async fn put_back_aside(tenant_db: &mut PgConnection, tenant: &Tenant) -> Result<()> {
    let aside = aside_name(tenant);
    if !schema_exists(tenant_db, &aside).await? {
        return Ok(());
    }
    if schema_exists(tenant_db, &tenant.schema).await? {
        ddl(tenant_db, "DROP SCHEMA %I CASCADE", &[&aside]).await
    } else {
        ddl(tenant_db, "ALTER SCHEMA %I RENAME TO %I", &[&aside, &tenant.schema]).await
    }
}

/// Login as the tenant's status says: only an active tenant may log in.
async fn give_login_back(conn: &mut PgConnection, tenant: &Tenant) -> Result<()> {
    let template = if tenant.status == "active" { "ALTER ROLE %I LOGIN" } else { "ALTER ROLE %I NOLOGIN" };
    ddl(conn, template, &[&tenant.role]).await
}
