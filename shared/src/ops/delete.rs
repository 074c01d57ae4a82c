//! Deleting a tenant: a verified `pre_delete` backup first, then its login blocked, its
//! schema (shared database) or database dropped, its role dropped. The registry row stays
//! (status `deleted`) with its history; its password is forgotten. Every step checks
//! what is left, so a rerun after a crash finishes the job.

use serde_json::json;
use sqlx::{Acquire, PgConnection};

use crate::{
    activity,
    backups::Kind,
    context::App,
    db, deployment,
    error::{Context as _, Error, Result},
    fault, guard, hosts, ledger,
    naming::{aside_schema, operator_role, Isolation},
    ops::{access, backup, move_cleanup},
    outcomes,
    tenants::{self, Tenant},
};

/// Statuses from which a tenant may be deleted (besides `deleting`, a delete under way).
pub const DELETABLE: &[&str] = &["active", "paused", "suspended", "failed"];

/// Refuses deleting a tenant that is deleted or being deleted.
pub fn check(tenant: &Tenant) -> Result<()> {
    match tenant.status.as_str() {
        "deleted" => Err(Error::Conflict(format!("tenant '{}' is deleted already", tenant.slug))),
        "deleting" => Err(Error::Conflict(format!("tenant '{}' is being deleted already", tenant.slug))),
        s if DELETABLE.contains(&s) => Ok(()),
        other => Err(Error::Conflict(format!("cannot delete tenant '{}' while it is {other}", tenant.slug))),
    }
}

/// Deletes `slug` on behalf of job `job_id`; `tenant_id`, when the job names it, keeps a
/// late rerun from touching a newer tenant that took the slug again. Once that job
/// finished, running it again changes nothing.
pub async fn delete(app: &App, slug: &str, tenant_id: Option<i64>, job_id: &str, actor: &str) -> Result<()> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    // Finished already (for this tenant or one that had the slug before): nothing to do.
    if outcomes::finished(&mut cp, job_id).await?.is_some() {
        return Ok(());
    }
    let mut tenant = tenants::get(&mut cp, slug).await?;
    if tenant_id.is_some_and(|id| id != tenant.id) {
        tracing::info!("the tenant this delete was for is gone; '{slug}' is another tenant now: nothing to do");
        return Ok(());
    }
    match tenant.status.as_str() {
        "deleted" => return Ok(()),
        "deleting" => {}
        _ => {
            check(&tenant)?;
            tenants::set_status(&mut cp, &tenant, "deleting", None, "worker").await?;
            tenant = tenants::get(&mut cp, slug).await?;
        }
    }
    let marker = deployment::marker(&mut cp, slug).await?;
    let mut server = hosts::connect_admin(&mut cp, &app.config, &tenant.host).await?;
    let role_is_ours = guard::role_is_ours(&mut server, &tenant.role, &marker).await?;

    // From here on the delete has begun: `jobs cancel` refuses it (see `jobs::cancel`).
    started(&mut cp, &tenant, job_id, actor).await?;
    // The tenant is held first, so the safety copy has every row it ever wrote. (A
    // deleting tenant cannot be resumed, so a rerun may reuse this job's copy.)
    if role_is_ours {
        access::block_login(&mut server, &tenant).await?;
    }
    fault::point(slug, "delete:held")?;
    // Only a schema of our role is ours to back up; another deployment's is left alone below.
    if role_is_ours && schema_exists(&mut cp, app, &tenant).await? {
        let safety = backup::backup(app, slug, Kind::PreDelete, None, job_id).await?;
        backup::verify_file(&safety).await?;
        activity::record(&mut cp, "worker", Some(tenant.id), "tenant.pre_delete_backup", json!({ "backup_id": safety.id })).await?;
    }
    fault::point(slug, "delete:backup")?;
    drop_everything(app, &mut cp, &mut server, &tenant, &marker, job_id, actor).await.map_err(|e| match e {
        Error::Injected(_) => e,
        e => e.in_step(|e| {
            format!(
                "the delete of '{slug}' stopped part way (its login is held, its pre_delete backup is taken, some of its data or roles may be dropped already): {e}; `tenantctl jobs retry {job_id}` finishes it"
            )
        }),
    })
}

/// Records, once per job, that the delete `job_id` began touching the tenant.
async fn started(cp: &mut PgConnection, tenant: &Tenant, job_id: &str, actor: &str) -> Result<()> {
    if !has_started(cp, job_id).await? {
        activity::record(cp, "worker", Some(tenant.id), "tenant.delete_started", json!({ "job_id": job_id, "requested_by": actor }))
            .await?;
    }
    Ok(())
}

/// Whether the delete `job_id` began touching its tenant (then it can only be finished).
pub async fn has_started(cp: &mut PgConnection, job_id: &str) -> Result<bool> {
    activity::recorded_by_job(cp, "tenant.delete_started", job_id).await
}

/// Drops the tenant's data and roles (only what is ours), then marks it deleted.
async fn drop_everything(
    app: &App,
    cp: &mut PgConnection,
    server: &mut PgConnection,
    tenant: &Tenant,
    marker: &str,
    job_id: &str,
    actor: &str,
) -> Result<()> {
    let (slug, operator) = (tenant.slug.as_str(), operator_role(&tenant.role));
    let role_is_ours = guard::role_is_ours(server, &tenant.role, marker).await?;
    // Only what carries this deployment's marker is dropped; each check sits right before
    // its DROP, and what is not ours is left in place and named in the activity log.
    let mut left_in_place = Vec::new();
    match Isolation::parse(&tenant.isolation)? {
        Isolation::Database => {
            if guard::drop_database(server, &tenant.database, marker).await?.left_in_place() {
                left_in_place.push(format!("database {}", tenant.database));
            }
        }
        Isolation::Schema => {
            if db::database_exists(server, &tenant.database).await? {
                let mut db = hosts::connect(cp, &app.config, &tenant.host, &tenant.database).await?;
                for schema in [aside_schema(&tenant.schema), tenant.schema.clone()] {
                    if guard::drop_schema(&mut db, server, &schema, &tenant.role, marker).await?.left_in_place() {
                        left_in_place.push(format!("schema {schema}"));
                    }
                }
                ledger::forget(&mut db, &tenant.schema).await?;
                // What is left of the roles here (grants, default privileges) goes with them;
                // DROP OWNED drops and revokes, which runs no tenant code.
                for role in [&operator, &tenant.role] {
                    if guard::role_is_ours(server, role, marker).await? {
                        db::ddl_on_shared_row(&mut db, "DROP OWNED BY %I", &[role]).await?;
                    }
                }
                if role_is_ours {
                    db::ddl_on_shared_row(server, "REVOKE ALL ON DATABASE %I FROM %I", &[&tenant.database, &tenant.role]).await?;
                }
            }
        }
    }
    // Copies moves kept behind or left half made (other databases, other hosts) go before
    // the roles: they own those schemas.
    move_cleanup::clear_all(app, cp, tenant).await?;
    fault::point(slug, "delete:data")?;
    for role in [&operator, &tenant.role] {
        // Whatever the role still holds in any database of the host (a database it left
        // by a move, a right given by hand) would make DROP ROLE fail for good.
        // Not when something was left in place as not ours: DROP OWNED would empty it.
        if left_in_place.is_empty() && guard::role_is_ours(server, role, marker).await? {
            move_cleanup::release_role(app, cp, server, &tenant.host, role).await?;
        }
        if guard::drop_role(server, role, marker).await?.left_in_place() {
            left_in_place.push(format!("role {role}"));
        }
    }
    fault::point(slug, "delete:roles")?;
    if !left_in_place.is_empty() {
        tracing::warn!(left_in_place = ?left_in_place, "not this deployment's objects: left in place");
    }
    // Marked deleted and recorded as this job's outcome in one transaction.
    let mut tx = cp.begin().await.context("failed to start a transaction")?;
    sqlx::query(
        "UPDATE tenant_master.tenants SET status = 'deleted', deleted_at = now(), updated_at = now(), role_password = NULL WHERE id = $1",
    )
    .bind(tenant.id)
    .execute(&mut *tx)
    .await
    .context("failed to mark the tenant deleted")?;
    let details = json!({ "from": "deleting", "left_in_place": left_in_place, "requested_by": actor });
    outcomes::record(&mut tx, job_id, "DeleteTenant", tenant.id, &details).await?;
    activity::record(&mut tx, "worker", Some(tenant.id), "tenant.deleted", details).await?;
    tx.commit().await.context("failed to commit the deletion")
}

async fn schema_exists(cp: &mut PgConnection, app: &App, tenant: &Tenant) -> Result<bool> {
    let mut server = hosts::connect_admin(cp, &app.config, &tenant.host).await?;
    if !db::database_exists(&mut server, &tenant.database).await? {
        return Ok(false);
    }
    let mut db = hosts::connect(cp, &app.config, &tenant.host, &tenant.database).await?;
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(&tenant.schema)
        .fetch_one(&mut db)
        .await
        .context("failed to look up the tenant schema")
}
