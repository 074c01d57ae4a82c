//! Provisioning (DESIGN §3, §4): role, database, schema, product migrations, activation.
//!
//! Every step first looks at what exists and only adds what is missing, so a run that
//! stopped after any step (crash, SIGKILL, lost connection) is finished by the next run,
//! with one role, one schema and each migration applied once.

use serde_json::json;
use sqlx::{Acquire, AssertSqlSafe, PgConnection};

use crate::{
    activity,
    db::{self, ddl},
    error::{Context as _, Error, Result},
    fault, hosts,
    jobs::{send_welcome_mail::SendWelcomeMail, App},
    naming::{owner_marker, Isolation},
    password,
    products::{self, ProductMigration},
    queue,
    tenants::{self, NewTenant, Tenant},
};

/// Advisory key that serializes creating the bookkeeping schema in a shared database.
const META_LOCK: i64 = 0x746d_6d65_7461;

/// Provisions `new` (registering it first if a producer enqueued it with SQL alone) and
/// returns the active tenant. Safe to run again at any point.
pub async fn provision(app: &App, new: &NewTenant, actor: &str) -> Result<Tenant> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    let slug = new.slug.as_str();
    let (tenant, created) = tenants::register(&mut cp, &app.config, new).await?;
    match tenant.status.as_str() {
        "active" => return Ok(tenant),
        "provisioning" => {}
        "failed" => tenants::set_status(&mut cp, &tenant, "provisioning", None, actor).await?,
        other => return Err(Error::Fatal(format!("tenant '{slug}' is {other}: only a new or failed tenant can be provisioned"))),
    }
    log_step(&mut cp, &tenant, "registered", created).await?;
    fault::point(slug, "register")?;

    let host = hosts::admin_options(&mut cp, &app.config, &tenant.host).await?;
    let mut admin = hosts::connect_admin(&mut cp, &app.config, &tenant.host).await?;

    let created = ensure_role(&mut cp, &mut admin, &tenant).await?;
    log_step(&mut cp, &tenant, "role", created).await?;
    fault::point(slug, "role")?;

    let created = ensure_database(&mut admin, &tenant).await?;
    log_step(&mut cp, &tenant, "database", created).await?;
    fault::point(slug, "database")?;

    let mut tenant_db = db::connect_to(&host, &tenant.database).await?;
    let created = ensure_schema(&mut tenant_db, &tenant).await?;
    log_step(&mut cp, &tenant, "schema", created).await?;
    fault::point(slug, "schema")?;

    let product = products::load(&app.config.products_dir, &tenant.product)?;
    let mut applied = Vec::new();
    for migration in &product.migrations {
        if apply_migration(&mut tenant_db, &tenant, migration).await? {
            applied.push(format!("{:04}_{}", migration.version, migration.name));
        }
        fault::point(slug, &format!("migration:{:04}", migration.version))?;
    }
    activity::record(&mut cp, actor, Some(tenant.id), "provision.migrations", json!({ "applied": applied })).await?;

    let tenant = activate(&mut cp, &tenant, actor).await?;
    fault::point(slug, "activate")?;
    Ok(tenant)
}

/// Marks a tenant whose provisioning gave up as `failed`, with the reason.
pub async fn mark_failed(app: &App, slug: &str, reason: &str) -> Result<()> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    if let Some(tenant) = tenants::find(&mut cp, slug).await? {
        if tenant.status == "provisioning" {
            tenants::set_status(&mut cp, &tenant, "failed", Some(reason), "worker").await?;
        }
    }
    Ok(())
}

async fn log_step(cp: &mut PgConnection, tenant: &Tenant, step: &str, created: bool) -> Result<()> {
    activity::record(cp, "worker", Some(tenant.id), &format!("provision.{step}"), json!({ "created": created })).await
}

/// The tenant's login role, marked with a comment so a foreign role of the same name is
/// never taken over. The password is (re)set on every run from the registry.
async fn ensure_role(cp: &mut PgConnection, admin: &mut PgConnection, tenant: &Tenant) -> Result<bool> {
    let marker = owner_marker(&tenant.slug);
    let existing: Option<Option<String>> =
        sqlx::query_scalar("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1")
            .bind(&tenant.role)
            .fetch_optional(&mut *admin)
            .await
            .context("failed to look up the tenant role")?;
    let created = match existing {
        Some(Some(comment)) if comment == marker => false,
        Some(_) => {
            return Err(Error::Fatal(format!(
                "role {} already exists and was not created by Tenant Master; rename or drop it, then retry the job",
                tenant.role
            )))
        }
        None => {
            // Role and marker in one transaction: there is never an unmarked role of ours.
            let mut tx = admin.begin().await.context("failed to start a transaction")?;
            ddl(&mut tx, "CREATE ROLE %I NOLOGIN", &[&tenant.role]).await?;
            ddl(&mut tx, "COMMENT ON ROLE %I IS %L", &[&tenant.role, &marker]).await?;
            tx.commit().await.context("failed to commit the new role")?;
            true
        }
    };
    let password: Option<String> = sqlx::query_scalar("SELECT role_password FROM tenant_master.tenants WHERE id = $1")
        .bind(tenant.id)
        .fetch_one(&mut *cp)
        .await
        .context("failed to read the tenant's password")?;
    let password = password.ok_or_else(|| Error::Fatal(format!("tenant '{}' has no password in the registry", tenant.slug)))?;
    ddl(admin, "ALTER ROLE %I WITH LOGIN PASSWORD %L", &[&tenant.role, &password::scram_verifier(&password)]).await?;
    // Migrations run as the tenant role (SET ROLE); a non-superuser admin needs membership.
    let member: bool =
        sqlx::query_scalar("SELECT rolsuper OR pg_has_role(current_user, $1, 'MEMBER') FROM pg_roles WHERE rolname = current_user")
            .bind(&tenant.role)
            .fetch_one(&mut *admin)
            .await
            .context("failed to check the admin's role membership")?;
    if !member {
        ddl(admin, "GRANT %I TO CURRENT_USER", &[&tenant.role]).await?;
    }
    Ok(created)
}

/// The database holding the tenant's schema, closed to everyone but its tenants.
async fn ensure_database(admin: &mut PgConnection, tenant: &Tenant) -> Result<bool> {
    let created = db::create_database_if_missing(admin, &tenant.database).await?;
    ddl(admin, "REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC", &[&tenant.database]).await?;
    ddl(admin, "GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I", &[&tenant.database, &tenant.role]).await?;
    if Isolation::parse(&tenant.isolation)? == Isolation::Database {
        // Says whose database this is, for an admin browsing the server.
        let comment = owner_marker(&tenant.slug);
        ddl(admin, "COMMENT ON DATABASE %I IS %L", &[&tenant.database, &comment]).await?;
    }
    Ok(created)
}

/// The tenant's schema, owned by its role; plus this database's bookkeeping schema
/// `tenant_master_meta`, out of tenants' reach.
async fn ensure_schema(tenant_db: &mut PgConnection, tenant: &Tenant) -> Result<bool> {
    let mut tx = tenant_db.begin().await.context("failed to start a transaction")?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(META_LOCK).execute(&mut *tx).await.context("failed to lock the database setup")?;
    sqlx::raw_sql(
        "CREATE SCHEMA IF NOT EXISTS tenant_master_meta;
         REVOKE ALL ON SCHEMA tenant_master_meta FROM PUBLIC;
         CREATE TABLE IF NOT EXISTS tenant_master_meta.applied_migrations (
             schema_name text NOT NULL, version bigint NOT NULL, name text NOT NULL, checksum text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (schema_name, version));
         REVOKE ALL ON SCHEMA public FROM PUBLIC;",
    )
    .execute(&mut *tx)
    .await
    .context(format!("failed to prepare database {}", tenant.database))?;
    let owner: Option<String> = sqlx::query_scalar("SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = $1")
        .bind(&tenant.schema)
        .fetch_optional(&mut *tx)
        .await
        .context("failed to look up the tenant schema")?;
    let created = match owner {
        None => {
            ddl(&mut tx, "CREATE SCHEMA %I AUTHORIZATION %I", &[&tenant.schema, &tenant.role]).await?;
            true
        }
        Some(owner) if owner == tenant.role => false,
        Some(owner) => {
            return Err(Error::Fatal(format!(
                "schema {} in database {} belongs to {owner}, not to the tenant role {}; move it away, then retry the job",
                tenant.schema, tenant.database, tenant.role
            )))
        }
    };
    tx.commit().await.context("failed to commit the tenant schema")?;
    Ok(created)
}

/// Applies one product migration as the tenant role, recording it in the same transaction.
/// Returns false if it had been applied already.
pub(crate) async fn apply_migration(tenant_db: &mut PgConnection, tenant: &Tenant, migration: &ProductMigration) -> Result<bool> {
    let label = format!("{:04}_{}", migration.version, migration.name);
    let mut tx = tenant_db.begin().await.context("failed to start a transaction")?;
    let recorded: Option<String> =
        sqlx::query_scalar("SELECT checksum FROM tenant_master_meta.applied_migrations WHERE schema_name = $1 AND version = $2 FOR UPDATE")
            .bind(&tenant.schema)
            .bind(migration.version)
            .fetch_optional(&mut *tx)
            .await
            .context("failed to read the applied migrations")?;
    match recorded {
        Some(checksum) if checksum == migration.checksum => return Ok(false),
        Some(_) => {
            return Err(Error::Fatal(format!(
                "product migration {label} of '{}' changed after it was applied to {}; restore the original file and add a new migration",
                tenant.product, tenant.slug
            )))
        }
        None => {}
    }
    ddl(&mut tx, "SET LOCAL ROLE %I", &[&tenant.role]).await?;
    ddl(&mut tx, "SET LOCAL search_path TO %I", &[&tenant.schema]).await?;
    // Product migrations are code shipped with the product, trusted like our own migrations.
    sqlx::raw_sql(AssertSqlSafe(migration.sql.as_str()))
        .execute(&mut *tx)
        .await
        .context(format!("product migration {label} failed for {}", tenant.slug))?;
    sqlx::raw_sql("RESET ROLE; RESET search_path").execute(&mut *tx).await.context("failed to reset the role")?;
    sqlx::query("INSERT INTO tenant_master_meta.applied_migrations (schema_name, version, name, checksum) VALUES ($1, $2, $3, $4)")
        .bind(&tenant.schema)
        .bind(migration.version)
        .bind(&migration.name)
        .bind(&migration.checksum)
        .execute(&mut *tx)
        .await
        .context("failed to record the migration")?;
    tx.commit().await.context(format!("failed to commit product migration {label}"))?;
    Ok(true)
}

/// The product migrations applied to `schema` in the database of `tenant_db`.
pub(crate) async fn applied_versions(tenant_db: &mut PgConnection, schema: &str) -> Result<Vec<i64>> {
    sqlx::query_scalar("SELECT version FROM tenant_master_meta.applied_migrations WHERE schema_name = $1 ORDER BY version")
        .bind(schema)
        .fetch_all(tenant_db)
        .await
        .context("failed to read the applied migrations")
}

/// `provisioning` -> `active`, logged and with the welcome mail enqueued in the same
/// transaction.
async fn activate(cp: &mut PgConnection, tenant: &Tenant, actor: &str) -> Result<Tenant> {
    let mut tx = cp.begin().await.context("failed to start a transaction")?;
    let updated = sqlx::query(
        "UPDATE tenant_master.tenants SET status = 'active', status_reason = NULL, updated_at = now()
         WHERE id = $1 AND status = 'provisioning'",
    )
    .bind(tenant.id)
    .execute(&mut *tx)
    .await
    .context("failed to activate the tenant")?;
    if updated.rows_affected() == 1 {
        activity::record(&mut tx, actor, Some(tenant.id), "tenant.active", json!({ "from": "provisioning" })).await?;
        // Same transaction: never active without its welcome mail queued, nor the reverse.
        queue::enqueue(&mut tx, &SendWelcomeMail { slug: tenant.slug.clone() }).await?;
    }
    tx.commit().await.context("failed to commit the activation")?;
    let tenant = tenants::get(cp, &tenant.slug).await?;
    if tenant.status != "active" {
        return Err(Error::Conflict(format!("tenant '{}' became {} while it was being provisioned", tenant.slug, tenant.status)));
    }
    Ok(tenant)
}
