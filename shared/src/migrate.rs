//! `tenantctl migrate`: the queue's migrations (apalis, in schema `apalis` with its own
//! history table `apalis._sqlx_migrations`) and ours (schema `tenant_master`, history in
//! `tenant_master.schema_migrations`). The two histories never meet, so either order works.

use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::{
    config::Config,
    db,
    error::{Context as _, Error, Result},
    products,
};

/// Our control-plane migrations, compiled into the binaries.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "control_plane", include_str!("../../migrations/0001_control_plane.sql")),
    (2, "backups", include_str!("../../migrations/0002_backups.sql")),
    (3, "maintenance_schedules", include_str!("../../migrations/0003_maintenance_schedules.sql")),
    (4, "mail_lifecycle", include_str!("../../migrations/0004_mail_lifecycle.sql")),
    (5, "job_admin", include_str!("../../migrations/0005_job_admin.sql")),
    (6, "noop_bulk_enqueue", include_str!("../../migrations/0006_noop_bulk_enqueue.sql")),
    (7, "fan_out_ids_from_caller", include_str!("../../migrations/0007_fan_out_ids_from_caller.sql")),
    (8, "untrusted_tenants", include_str!("../../migrations/0008_untrusted_tenants.sql")),
    (9, "lose_nothing", include_str!("../../migrations/0009_lose_nothing.sql")),
    (10, "wakeups", include_str!("../../migrations/0010_wakeups.sql")),
    (11, "rollouts", include_str!("../../migrations/0011_rollouts.sql")),
    (12, "plan_history", include_str!("../../migrations/0012_plan_history.sql")),
    (13, "moves", include_str!("../../migrations/0013_moves.sql")),
    (14, "admin_panel", include_str!("../../migrations/0014_admin_panel.sql")),
    (15, "crash_safety", include_str!("../../migrations/0015_crash_safety.sql")),
    (16, "tenant_ledger_conflicts", include_str!("../../migrations/0016_tenant_ledger_conflicts.sql")),
    (17, "secret_keys", include_str!("../../migrations/0017_secret_keys.sql")),
    (18, "panel", include_str!("../../migrations/0018_panel.sql")),
    (19, "own_fetch_path", include_str!("../../migrations/0019_own_fetch_path.sql")),
];

/// The versions of our control-plane migrations, in order.
pub fn known_versions() -> Vec<i32> {
    MIGRATIONS.iter().map(|m| m.0).collect()
}

/// Whether the control plane at `pool` has every migration of this build; a typed
/// [`Error::NotMigrated`] if not. A newer control plane (migrated by a newer build) is
/// accepted: migrations only add.
pub async fn ensure_current(pool: &PgPool) -> Result<()> {
    let needed = MIGRATIONS.last().map_or(0, |m| m.0);
    let present: bool =
        sqlx::query_scalar("SELECT to_regclass('tenant_master.schema_migrations') IS NOT NULL AND to_regclass('apalis.jobs') IS NOT NULL")
            .fetch_one(pool)
            .await
            .context("failed to check the control-plane schema")?;
    let found: Option<i32> = match present {
        true => sqlx::query_scalar("SELECT max(version) FROM tenant_master.schema_migrations")
            .fetch_one(pool)
            .await
            .context("failed to read the control plane's migrations")?,
        false => None,
    };
    match found {
        Some(version) if version >= needed => {}
        found => return Err(Error::NotMigrated { found, needed }),
    }
    // Job types come from the registry, not from migrations: a build that adds one is
    // current only once its `tenantctl migrate` has written the row.
    let names: Vec<&str> = crate::jobs::REGISTRY.iter().map(|t| t.name).collect();
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM unnest($1::text[]) AS name WHERE NOT EXISTS (SELECT 1 FROM tenant_master.job_types WHERE job_type = name)",
    )
    .bind(&names)
    .fetch_all(pool)
    .await
    .context("failed to read the control plane's job types")?;
    match missing.is_empty() {
        true => Ok(()),
        false => Err(Error::JobTypesMissing(missing)),
    }
}

/// Serializes concurrent `migrate` runs (arbitrary constant, "tm" + "mig").
const MIGRATE_LOCK: i64 = 0x0074_6d6d_6967;

/// What a migrate run did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// Whether this run created the control-plane database.
    pub database_created: bool,
    /// Control-plane migrations applied by this run, as `0001_name`.
    pub applied: Vec<String>,
    /// Every product found in `products_dir`, registered or updated.
    pub products: Vec<String>,
    /// Tenant passwords found in plaintext (from before encryption) and sealed now.
    pub passwords_sealed: usize,
    /// Roles and databases whose first-release marker now names this deployment.
    pub markers_upgraded: usize,
    /// Live tenants lacking product migrations (read from their ledgers), if they could be read.
    pub tenants_behind: Option<usize>,
    /// Live tenants whose own migration ledger disagrees with the product's files.
    pub tenants_conflicting: usize,
}

/// Everything: create the database if missing, queue, registry, views, products.
pub async fn run(config: &Config) -> Result<Report> {
    let options = db::options(&config.database_url)?;
    let database = options.get_database().unwrap_or("postgres").to_owned();
    let database_created = {
        let maintenance_options = options.clone().database("postgres");
        db::probe(&config.database_url, &maintenance_options).await?;
        let mut maintenance = db::connect_to(&options, "postgres").await?;
        db::create_database_if_missing(&mut maintenance, &database).await?
    };
    let pool = db::connect_pool(&config.database_url, 2).await?;
    queue(&pool).await?;
    let applied = control_plane(&pool).await?;
    views(&pool).await?;
    sync_job_types(&pool).await?;
    let products = sync_products(&pool, config).await?;
    let passwords_sealed = crate::keys::seal_plaintext(&pool, config).await?;
    let markers_upgraded = upgrade_legacy_markers(&pool, config).await?;
    // Tenant roles live on this server too: they must not even connect to the registry.
    let mut conn = pool.acquire().await.context("failed to connect to the control-plane database")?;
    db::ddl(&mut conn, "REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC", &[&database]).await?;
    // Reading every ledger also refreshes the registry's cached versions. Migrating them
    // is a decision for an admin (`tenantctl tenant migrate`), never a side effect here.
    let (tenants_behind, tenants_conflicting) = match crate::ops::rollout::plan(&mut conn, config, &Default::default()).await {
        Ok(plans) => (
            Some(plans.iter().filter(|p| !p.pending.is_empty() && p.conflict.is_none()).count()),
            plans.iter().filter(|p| p.conflict.is_some()).count(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not read every tenant's migration ledger");
            (None, 0)
        }
    };
    drop(conn);
    pool.close().await;
    Ok(Report { database_created, applied, products, passwords_sealed, markers_upgraded, tenants_behind, tenants_conflicting })
}

/// Writes each job type of `jobs::REGISTRY` (its retry limit, description and payload
/// fields) where `tenant_master.enqueue` reads them: the registry is the one source, so a
/// new job type needs no migration of its own.
async fn sync_job_types(pool: &PgPool) -> Result<()> {
    // A type this build does not know was written by a newer build: an older `migrate`
    // would turn its rows back, so it stops (queued jobs of that type keep their own limit).
    let names: Vec<&str> = crate::jobs::REGISTRY.iter().map(|t| t.name).collect();
    let unknown: Vec<String> = sqlx::query_scalar("SELECT job_type FROM tenant_master.job_types WHERE job_type <> ALL($1) ORDER BY 1")
        .bind(&names)
        .fetch_all(pool)
        .await
        .context("failed to read the control plane's job types")?;
    if !unknown.is_empty() {
        return Err(Error::Conflict(format!(
            "this control plane knows job type(s) {} that this build does not: a newer Tenant Master migrated it; run that build's `tenantctl migrate` (or, if the type was retired, delete its row from tenant_master.job_types)",
            unknown.join(", ")
        )));
    }
    for job_type in crate::jobs::REGISTRY {
        let fields = serde_json::to_value(job_type.fields).expect("payload fields serialize");
        sqlx::query(
            "INSERT INTO tenant_master.job_types (job_type, max_attempts, description, payload_fields) VALUES ($1, $2, $3, $4)
             ON CONFLICT (job_type) DO UPDATE
             SET max_attempts = EXCLUDED.max_attempts, description = EXCLUDED.description, payload_fields = EXCLUDED.payload_fields",
        )
        .bind(job_type.name)
        .bind(job_type.policy.max_attempts as i32)
        .bind(job_type.description)
        .bind(fields)
        .execute(pool)
        .await
        .context(format!("failed to record job type {}", job_type.name))?;
    }
    Ok(())
}

/// The queue library's own migrations.
pub async fn queue(pool: &PgPool) -> Result<()> {
    apalis_postgres::PostgresStorage::setup(pool)
        .await
        .map_err(|e| Error::fatal_because(format!("failed to apply the queue's (apalis) migrations: {e}"), e))
}

/// Our registry migrations; returns the ones applied now.
pub async fn control_plane(pool: &PgPool) -> Result<Vec<String>> {
    let mut applied = Vec::new();
    let mut tx = pool.begin().await.context("failed to start the migration transaction")?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATE_LOCK)
        .execute(&mut *tx)
        .await
        .context("failed to take the migration lock")?;
    sqlx::raw_sql(
        "CREATE SCHEMA IF NOT EXISTS tenant_master;
         CREATE TABLE IF NOT EXISTS tenant_master.schema_migrations (
             version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut *tx)
    .await
    .context("failed to create tenant_master.schema_migrations")?;
    for &(version, name, sql) in MIGRATIONS {
        let checksum = hex_sha256(sql);
        let recorded: Option<String> = sqlx::query_scalar("SELECT checksum FROM tenant_master.schema_migrations WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await
            .context("failed to read tenant_master.schema_migrations")?;
        match recorded {
            Some(c) if c == checksum => continue,
            Some(_) => {
                return Err(Error::fatal(format!(
                    "control-plane migration {version:04}_{name} was changed after it was applied; restore the original file"
                )))
            }
            None => {}
        }
        sqlx::raw_sql(sql).execute(&mut *tx).await.context(format!("failed to apply migration {version:04}_{name}"))?;
        sqlx::query("INSERT INTO tenant_master.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)")
            .bind(version)
            .bind(name)
            .bind(&checksum)
            .execute(&mut *tx)
            .await
            .context("failed to record a migration")?;
        applied.push(format!("{version:04}_{name}"));
    }
    tx.commit().await.context("failed to commit the migrations")?;
    Ok(applied)
}

/// Views, indexes and the wake-up trigger over the queue (need both histories applied;
/// replaced every run).
pub async fn views(pool: &PgPool) -> Result<()> {
    // Migration 0019 once more: the queue's migrations may have run after it.
    sqlx::raw_sql(include_str!("../../migrations/0019_own_fetch_path.sql"))
        .execute(pool)
        .await
        .context("failed to set the queue's indexes")?;
    sqlx::raw_sql(
        "CREATE OR REPLACE VIEW tenant_master.jobs AS
         SELECT j.id, j.job_type AS type,
                CASE WHEN c.job_id IS NOT NULL THEN 'cancelled'
                     ELSE tenant_master.job_status(j.status, j.attempts, j.max_attempts, j.lock_at, j.done_at) END AS status,
                j.status AS queue_status, j.attempts, j.max_attempts, j.run_at, j.lock_at, j.lock_by, j.done_at,
                CASE WHEN j.last_result ? 'Err' THEN regexp_replace(j.last_result ->> 'Err', '^(AbortError|RetryError|DeferredError): ', '') END AS last_error,
                convert_from(j.job, 'UTF8')::jsonb AS payload,
                convert_from(j.job, 'UTF8')::jsonb ->> 'slug' AS tenant,
                j.idempotency_key,
                CASE WHEN j.last_result ? 'Ok' THEN j.last_result -> 'Ok' END AS result
         FROM apalis.jobs j LEFT JOIN tenant_master.cancelled_jobs c ON c.job_id = j.id",
    )
    .execute(pool)
    .await
    .context("failed to create the view tenant_master.jobs")?;
    // Our statement-level wake-up instead of apalis's per-row one (see migration 0010);
    // again on every run, as the queue's own migrations may have put theirs back.
    sqlx::raw_sql(
        "DROP TRIGGER IF EXISTS notify_workers ON apalis.jobs;
         DROP TRIGGER IF EXISTS tenant_master_notify_new_jobs ON apalis.jobs;
         CREATE TRIGGER tenant_master_notify_new_jobs AFTER INSERT ON apalis.jobs
             REFERENCING NEW TABLE AS new_jobs FOR EACH STATEMENT EXECUTE FUNCTION tenant_master.notify_new_jobs();",
    )
    .execute(pool)
    .await
    .context("failed to install the job wake-up trigger")?;
    Ok(())
}

/// Registers every product found in `products_dir`, so producers can be checked against it.
pub async fn sync_products(pool: &PgPool, config: &Config) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for product in products::load_all(&config.products_dir)? {
        let prunable = serde_json::to_value(&product.prunable).expect("prunable list serializes");
        sqlx::query(
            "INSERT INTO tenant_master.products (name, display_name, migrations_dir, prunable)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET display_name = excluded.display_name,
                 migrations_dir = excluded.migrations_dir, prunable = excluded.prunable, updated_at = now()",
        )
        .bind(&product.name)
        .bind(&product.display_name)
        .bind(product.dir.display().to_string())
        .bind(prunable)
        .execute(pool)
        .await
        .context(format!("failed to register product {}", product.name))?;
        names.push(product.name);
    }
    Ok(names)
}

fn hex_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Gives the roles and databases marked by the first release (`tenant-master:<slug>`, no
/// deployment) this deployment's marker, for the tenants of this registry only.
pub async fn upgrade_legacy_markers(pool: &PgPool, config: &Config) -> Result<usize> {
    let mut cp = pool.acquire().await.context("failed to connect to the control-plane database")?;
    let tenants: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT slug, host, role_name, database_name, isolation FROM tenant_master.tenants WHERE status <> 'deleted' ORDER BY host, slug",
    )
    .fetch_all(&mut *cp)
    .await
    .context("failed to list tenants")?;
    let deployment = crate::deployment::id(&mut cp).await?;
    let mut upgraded = 0;
    let mut current_host: Option<(String, sqlx::PgConnection)> = None;
    for (slug, host, role, database, isolation) in tenants {
        if current_host.as_ref().is_none_or(|(h, _)| *h != host) {
            current_host = Some((host.clone(), crate::hosts::connect_admin(&mut cp, config, &host).await?));
        }
        let admin = &mut current_host.as_mut().expect("connected above").1;
        let (legacy, marker) = (crate::naming::legacy_owner_marker(&slug), crate::naming::owner_marker(&deployment, &slug));
        let mut targets = vec![("pg_authid", role.clone()), ("pg_authid", crate::naming::operator_role(&role))];
        if crate::naming::Isolation::parse(&isolation)? == crate::naming::Isolation::Database {
            targets.push(("pg_database", database));
        }
        for (catalog, name) in targets {
            let query = match catalog {
                "pg_authid" => "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
                _ => "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            };
            let comment: Option<Option<String>> =
                sqlx::query_scalar(query).bind(&name).fetch_optional(&mut *admin).await.context("failed to read a marker")?;
            if comment.flatten().as_deref() == Some(legacy.as_str()) {
                let template = if catalog == "pg_authid" { "COMMENT ON ROLE %I IS %L" } else { "COMMENT ON DATABASE %I IS %L" };
                crate::db::ddl(admin, template, &[&name, &marker]).await?;
                upgraded += 1;
            }
        }
    }
    Ok(upgraded)
}
