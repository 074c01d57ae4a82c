//! Provisioning: role, database, schema, product migrations, activation.
//!
//! Every step first looks at what exists and only adds what is missing, so a run that
//! stopped after any step (crash, SIGKILL, lost connection) is finished by the next run,
//! with one role, one schema and each migration applied once.

use serde_json::json;
use sqlx::{postgres::PgConnectOptions, Acquire, PgConnection};

use crate::{
    activity,
    config::Config,
    context::App,
    db::{self, ddl},
    deployment,
    error::{Context as _, Error, Result},
    fault, guard, hosts, ledger,
    naming::{self, Isolation},
    ops::migrations,
    password, products,
    telemetry::Laps,
    tenant_session::TenantAccess,
    tenants::{self, NewTenant, Tenant},
};

/// What [`build`] left.
#[derive(Debug)]
pub enum Built {
    /// Every step done; [`activate`] makes it active.
    Ready(Tenant),
    /// The tenant was active already: nothing to do.
    Active(Tenant),
}

/// Provisions `new` (registering it first if a producer enqueued it with SQL alone) up to
/// its activation, which the caller does with [`activate`] in a transaction of its own
/// (the queue layer adds the welcome mail to it). Safe to run again at any point.
/// Each step's wall time goes to `laps`.
pub async fn build(app: &App, new: &NewTenant, actor: &str, laps: &mut Laps) -> Result<Built> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    let slug = new.slug.as_str();
    let (tenant, created) = tenants::register(&mut cp, &app.config, new).await?;
    match tenant.status.as_str() {
        "active" => return Ok(Built::Active(tenant)),
        "provisioning" => {}
        "failed" => tenants::set_status(&mut cp, &tenant, "provisioning", None, actor).await?,
        other => return Err(Error::fatal(format!("tenant '{slug}' is {other}: only a new or failed tenant can be provisioned"))),
    }
    log_step(&mut cp, &tenant, "registered", created).await?;
    fault::point(slug, "provision:register")?;
    laps.lap("register");

    let host = hosts::admin_options(&mut cp, &app.config, &tenant.host).await?;
    let mut admin = hosts::connect_admin(&mut cp, &app.config, &tenant.host).await?;
    let deployment = deployment::id(&mut cp).await?;
    let marker = naming::owner_marker(&deployment, slug);
    laps.lap("connect_host");

    let created = ensure_role(&app.config, &mut cp, &mut admin, &tenant, &marker, Login::Open).await?;
    log_step(&mut cp, &tenant, "role", created).await?;
    fault::point(slug, "provision:role")?;
    laps.lap("role");

    let created = ensure_database(&mut admin, &host, &tenant, &deployment).await?;
    log_step(&mut cp, &tenant, "database", created).await?;
    fault::point(slug, "provision:database")?;
    laps.lap("database");

    let mut tenant_db = db::connect_to(&host, &tenant.database).await?;
    let created = ensure_schema(&mut tenant_db, &tenant).await?;
    log_step(&mut cp, &tenant, "schema", created).await?;
    fault::point(slug, "provision:schema")?;
    laps.lap("schema");

    let product = products::load(&app.config.products_dir, &tenant.product)?;
    let access = TenantAccess::prepare(&app.config, &mut cp, &tenant).await?;
    ledger::ensure(&mut tenant_db, access.role()).await?;
    let mut operator = access.connect().await?;
    laps.lap("operator_login");
    let applied = migrations::apply_all(&mut cp, &mut tenant_db, &mut operator, &tenant, &product, None, |version| {
        fault::point(slug, &format!("provision:migration:{:04}", version))
    })
    .await?;
    activity::record(&mut cp, actor, Some(tenant.id), "provision.migrations", json!({ "applied": applied })).await?;
    let version = ledger::applied_versions(&mut tenant_db, &tenant.schema).await?.into_iter().max();
    crate::ops::migrations::record_version(&mut cp, tenant.id, version).await?;
    laps.lap("migrations");
    Ok(Built::Ready(tenant))
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

/// Whether [`ensure_role`] leaves the role able to log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Login {
    Open,
    /// A move's target: held until the registry points there.
    Held,
}

/// The tenant's login role, marked with a comment so a foreign role of the same name is
/// never taken over. The password is (re)set on every run from the registry.
pub(crate) async fn ensure_role(
    config: &Config,
    cp: &mut PgConnection,
    admin: &mut PgConnection,
    tenant: &Tenant,
    marker: &str,
    login: Login,
) -> Result<bool> {
    let existing: Option<Option<String>> =
        sqlx::query_scalar("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1")
            .bind(&tenant.role)
            .fetch_optional(&mut *admin)
            .await
            .context("failed to look up the tenant role")?;
    let created = match existing {
        Some(Some(comment)) if comment == marker => false,
        Some(_) => {
            return Err(Error::fatal(format!(
                "role {} already exists and was not made by this Tenant Master deployment; rename or drop it, then retry the job",
                tenant.role
            )))
        }
        None => {
            // Role and marker in one transaction: there is never an unmarked role of ours.
            let mut tx = admin.begin().await.context("failed to start a transaction")?;
            ddl(&mut tx, "CREATE ROLE %I NOLOGIN", &[&tenant.role]).await?;
            ddl(&mut tx, "COMMENT ON ROLE %I IS %L", &[&tenant.role, marker]).await?;
            tx.commit().await.context("failed to commit the new role")?;
            true
        }
    };
    let password = tenants::role_password(cp, config, tenant).await?;
    let template = match login {
        Login::Open => "ALTER ROLE %I WITH LOGIN PASSWORD %L",
        Login::Held => "ALTER ROLE %I WITH NOLOGIN PASSWORD %L",
    };
    ddl(admin, template, &[&tenant.role, &password::scram_verifier(&password)]).await?;
    db::limit_connections(admin, &tenant.role, config.tenant_max_connections(&tenant.plan)).await?;
    // CREATE SCHEMA ... AUTHORIZATION needs a non-superuser admin to be a member.
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
/// Every database we make carries a marker; an existing one without it is adopted only if
/// it is empty (a run that stopped between CREATE DATABASE, which cannot share a
/// transaction, and its COMMENT), never if it holds anything not ours.
pub(crate) async fn ensure_database(admin: &mut PgConnection, host: &PgConnectOptions, tenant: &Tenant, deployment: &str) -> Result<bool> {
    let created = db::create_database_if_missing(admin, &tenant.database).await?;
    // A dedicated database carries its tenant's marker, a product's shared one the
    // deployment's `shared` marker (`shared` is a reserved slug, so no tenant has it).
    let isolation = Isolation::parse(&tenant.isolation)?;
    let marker = match isolation {
        Isolation::Database => naming::owner_marker(deployment, &tenant.slug),
        Isolation::Schema => naming::owner_marker(deployment, "shared"),
    };
    let comment: Option<String> = sqlx::query_scalar("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1")
        .bind(&tenant.database)
        .fetch_one(&mut *admin)
        .await
        .context("failed to read the database's marker")?;
    let adopt = match comment {
        Some(c) if c == marker => false,
        Some(_) => return Err(foreign_database(tenant)),
        None if created || guard::database_is_empty(host, &tenant.database).await? => true,
        // A shared database made before shared databases were marked holds only schemas
        // of this deployment's tenant roles.
        None if isolation == Isolation::Schema && guard::holds_only_ours(host, &tenant.database, deployment).await? => true,
        None => return Err(foreign_database(tenant)),
    };
    if adopt {
        ddl(admin, "COMMENT ON DATABASE %I IS %L", &[&tenant.database, &marker]).await?;
    }
    // Both rewrite the database's one catalog row, which every tenant of a shared database
    // shares: only what is missing is written, and a concurrent write is waited out.
    let (public_may_connect, role_may_connect): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM aclexplode(COALESCE(d.datacl, acldefault('d', d.datdba))) a
                        WHERE a.grantee = 0 AND a.privilege_type IN ('CONNECT', 'TEMPORARY')),
                (SELECT count(*) = 2 FROM aclexplode(COALESCE(d.datacl, acldefault('d', d.datdba))) a JOIN pg_roles r ON r.oid = a.grantee
                 WHERE r.rolname = $2 AND a.privilege_type IN ('CONNECT', 'TEMPORARY'))
         FROM pg_database d WHERE d.datname = $1",
    )
    .bind(&tenant.database)
    .bind(&tenant.role)
    .fetch_one(&mut *admin)
    .await
    .context("failed to read who may connect to the database")?;
    if public_may_connect {
        db::ddl_on_shared_row(admin, "REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC", &[&tenant.database]).await?;
    }
    if !role_may_connect {
        db::ddl_on_shared_row(admin, "GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I", &[&tenant.database, &tenant.role]).await?;
    }
    Ok(created)
}

fn foreign_database(tenant: &Tenant) -> Error {
    Error::fatal(format!(
        "database {} already exists and was not made by this Tenant Master deployment; rename or drop it, then retry the job",
        tenant.database
    ))
}

/// The tenant's schema, owned by its role (a schema owned by our marked role is ours:
/// tenants cannot create schemas), and `public` closed.
pub(crate) async fn ensure_schema(tenant_db: &mut PgConnection, tenant: &Tenant) -> Result<bool> {
    // Once per database (the schema's catalog row is every tenant's of a shared database).
    let public_open: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(COALESCE(n.nspacl, acldefault('n', n.nspowner))) a
                        WHERE n.nspname = 'public' AND a.grantee = 0)",
    )
    .fetch_one(&mut *tenant_db)
    .await
    .context(format!("failed to read the rights on schema public of database {}", tenant.database))?;
    if public_open {
        db::ddl_on_shared_row(tenant_db, "REVOKE ALL ON SCHEMA %I FROM PUBLIC", &["public"]).await?;
    }
    let mut tx = tenant_db.begin().await.context("failed to start a transaction")?;
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
            return Err(Error::fatal(format!(
                "schema {} in database {} belongs to {owner}, not to the tenant role {}; move it away, then retry the job",
                tenant.schema, tenant.database, tenant.role
            )))
        }
    };
    tx.commit().await.context("failed to commit the tenant schema")?;
    Ok(created)
}

/// `provisioning` -> `active` and logged, on `tx` (the caller's transaction); false if the
/// tenant was not provisioning.
pub async fn activate(tx: &mut PgConnection, tenant: &Tenant, actor: &str) -> Result<bool> {
    let updated = sqlx::query(
        "UPDATE tenant_master.tenants SET status = 'active', status_reason = NULL, updated_at = now()
         WHERE id = $1 AND status = 'provisioning'",
    )
    .bind(tenant.id)
    .execute(&mut *tx)
    .await
    .context("failed to activate the tenant")?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    activity::record(tx, actor, Some(tenant.id), "tenant.active", json!({ "from": "provisioning" })).await?;
    Ok(true)
}

/// The tenant after its activation: an error if something else changed it meanwhile.
pub async fn activated(cp: &mut PgConnection, slug: &str) -> Result<Tenant> {
    let tenant = tenants::get(cp, slug).await?;
    if tenant.status != "active" {
        return Err(Error::Conflict(format!("tenant '{slug}' became {} while it was being provisioned", tenant.status)));
    }
    Ok(tenant)
}
