//! What moves leave behind, and clearing it: the source copy a finished move keeps for
//! `[moves] keep_source_hours` (`tenant_master.kept_sources`), and the half-made copy of a
//! move that gave up (`tenant_master.move_targets` in state `copying`). `PruneJobs` drops
//! kept sources when due; a move's `on_dead` clears its target; a delete clears both.
//!
//! Clearing a place the tenant does not live in takes everything of the tenant there: its
//! schemas, its migration ledger rows, what its roles hold in that database, the database
//! itself when it was the tenant's own, and the tenant's roles on a host it left. Nothing
//! that is not this deployment's is touched (see `guard`).

use serde_json::json;
use sqlx::PgConnection;

use crate::{
    activity,
    context::App,
    db, deployment,
    error::{Context as _, Error, Result},
    guard::{self, Dropped},
    hosts, ledger,
    lock::TenantLock,
    naming::operator_role,
    ops::place::Place,
    tenants::{self, Tenant},
};

/// Whether `schema` exists in the database of `conn`.
pub async fn schema_exists(conn: &mut PgConnection, schema: &str) -> Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(conn)
        .await
        .context("failed to look up a schema")
}

/// Whether a move of `tenant` other than `job_id` is copying into `place` (its schema there
/// is that move's copy, not anyone's source).
pub async fn copying_into(cp: &mut PgConnection, tenant: &Tenant, place: &Place, job_id: &str) -> Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenant_master.move_targets
                        WHERE tenant_id = $1 AND host = $2 AND database_name = $3 AND job_id <> $4 AND state = 'copying')",
    )
    .bind(tenant.id)
    .bind(&place.host)
    .bind(&place.database)
    .bind(job_id)
    .fetch_one(cp)
    .await
    .context("failed to read the tenant's moves")
}

/// Where move `job_id` is copying to, while it has not switched (nor been abandoned).
pub async fn copying_target(cp: &mut PgConnection, job_id: &str) -> Result<Option<Place>> {
    sqlx::query_as("SELECT host, database_name, isolation FROM tenant_master.move_targets WHERE job_id = $1 AND state = 'copying'")
        .bind(job_id)
        .fetch_optional(cp)
        .await
        .context("failed to read the move's target")
}

/// Clears the copy move `job_id` was making (it gave up, or its tenant is being deleted)
/// and records the target abandoned; a later retry of the job works its target out anew.
pub async fn abandon_target(app: &App, cp: &mut PgConnection, tenant: &Tenant, job_id: &str) -> Result<()> {
    let Some(target) = copying_target(cp, job_id).await? else { return Ok(()) };
    clear_place(app, cp, tenant, &target, None, Some(job_id)).await?;
    sqlx::query("UPDATE tenant_master.move_targets SET state = 'abandoned', updated_at = now() WHERE job_id = $1")
        .bind(job_id)
        .execute(&mut *cp)
        .await
        .context("failed to record the abandoned move")?;
    activity::record(cp, "worker", Some(tenant.id), "tenant.move_abandoned", json!({ "job_id": job_id, "target": target })).await
}

/// Clears every copy moves of `tenant` left (kept sources, unfinished targets): a delete.
/// Runs under the tenant's lock.
pub async fn clear_all(app: &App, cp: &mut PgConnection, tenant: &Tenant) -> Result<()> {
    let jobs: Vec<String> = sqlx::query_scalar("SELECT job_id FROM tenant_master.move_targets WHERE tenant_id = $1 AND state = 'copying'")
        .bind(tenant.id)
        .fetch_all(&mut *cp)
        .await
        .context("failed to read the tenant's moves")?;
    for job in jobs {
        abandon_target(app, cp, tenant, &job).await?;
    }
    let kept: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM tenant_master.kept_sources WHERE tenant_id = $1 AND dropped_at IS NULL ORDER BY id")
            .bind(tenant.id)
            .fetch_all(&mut *cp)
            .await
            .context("failed to read the tenant's kept sources")?;
    for id in kept {
        drop_kept_source(app, cp, tenant, id).await?;
    }
    Ok(())
}

/// Drops the kept sources that are due (`PruneJobs`), each under its tenant's lock (a
/// tenant busy with another job keeps its copy until the next prune). Returns how many went.
pub async fn prune_kept_sources(app: &App) -> Result<i64> {
    let due: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT k.id, t.id, t.slug FROM tenant_master.kept_sources k JOIN tenant_master.tenants t ON t.id = k.tenant_id
         WHERE k.dropped_at IS NULL AND k.kept_until < now() ORDER BY k.id",
    )
    .fetch_all(&app.pool)
    .await
    .context("failed to find kept sources that are due")?;
    let mut dropped = 0;
    for (id, tenant_id, slug) in due {
        let lock = match TenantLock::acquire(&app.config, &slug).await {
            Ok(lock) => lock,
            Err(Error::Busy(_)) => continue,
            Err(e) => return Err(e),
        };
        let result = async {
            let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
            let tenant = tenants::find_by_id(&mut cp, tenant_id).await?.ok_or_else(|| Error::NotFound(format!("tenant {tenant_id}")))?;
            drop_kept_source(app, &mut cp, &tenant, id).await
        }
        .await;
        lock.release().await;
        match result {
            Ok(true) => dropped += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(tenant.slug = %slug, kept_source = id, error = %e, "could not drop a moved tenant's kept source; the next prune tries again")
            }
        }
    }
    Ok(dropped)
}

/// Drops kept source `id` of `tenant`. Returns false if it was dropped already.
async fn drop_kept_source(app: &App, cp: &mut PgConnection, tenant: &Tenant, id: i64) -> Result<bool> {
    let row: Option<(String, String, String, String)> = sqlx::query_as(
        "SELECT host, database_name, schema_name, isolation FROM tenant_master.kept_sources WHERE id = $1 AND dropped_at IS NULL",
    )
    .bind(id)
    .fetch_optional(&mut *cp)
    .await
    .context("failed to read a kept source")?;
    let Some((host, database, kept_schema, isolation)) = row else { return Ok(false) };
    let place = Place { host, database, isolation };
    // Marked first: a crash after it leaves a copy the next delete or prune of the place
    // still clears (what it looks for is named by the tenant, not by the row).
    clear_place(app, cp, tenant, &place, Some(&kept_schema), None).await?;
    sqlx::query("UPDATE tenant_master.kept_sources SET dropped_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *cp)
        .await
        .context("failed to record the dropped kept source")?;
    activity::record(
        cp,
        "worker",
        Some(tenant.id),
        "tenant.kept_source_dropped",
        json!({ "host": place.host, "database": place.database, "schema": kept_schema }),
    )
    .await?;
    Ok(true)
}

/// Clears what `tenant` has at `place`: `kept_schema` if given; and, unless the tenant lives
/// there, its schema, ledger rows and its roles' rights there (the database itself if it was
/// the tenant's own), and its roles on that host if it lives on another and nothing else of
/// it is left there.
async fn clear_place(
    app: &App,
    cp: &mut PgConnection,
    tenant: &Tenant,
    place: &Place,
    kept_schema: Option<&str>,
    job: Option<&str>,
) -> Result<()> {
    // A deleted tenant's names (role, schema, marker) may belong to a newer tenant of the
    // slug by now: then nothing here is this tenant's any more.
    if tenant.status == "deleted" {
        if let Some(now) = tenants::find(cp, &tenant.slug).await?.filter(|t| t.id != tenant.id && t.status != "deleted") {
            tracing::warn!(tenant.slug = %now.slug, "the slug belongs to a newer tenant: an old move's leftovers are left for an admin");
            return Ok(());
        }
    }
    let marker = deployment::marker(cp, &tenant.slug).await?;
    let home = place.is_home_of(tenant);
    let at = Tenant { host: place.host.clone(), database: place.database.clone(), ..tenant.clone() };
    let operator = operator_role(&tenant.role);
    let mut server = hosts::connect_admin(cp, &app.config, &place.host).await?;
    if db::database_exists(&mut server, &place.database).await? {
        let mut db = hosts::connect(cp, &app.config, &place.host, &place.database).await?;
        if let Some(schema) = kept_schema {
            guard::drop_tenant_schema(&mut db, &mut server, schema, &at, &marker).await?;
        }
        if !home {
            // A move cut short before its rename left the source under the live name.
            guard::drop_tenant_schema(&mut db, &mut server, &tenant.schema, &at, &marker).await?;
            ledger::forget(&mut db, &tenant.schema).await?;
            if place.isolation == "database" {
                drop(db);
                if guard::drop_database(&mut server, &place.database, &marker).await? == Dropped::NotOurs {
                    return Err(Error::fatal(format!(
                        "database {} on host '{}' is not this deployment's: nothing of it was dropped; rename or drop it by hand, then retry",
                        place.database, place.host
                    )));
                }
            } else {
                // Not DROP OWNED: it would also take the roles' rights on their live database.
                ledger::revoke(&mut db, &operator).await?;
                if guard::role_is_ours(&mut server, &tenant.role, &marker).await? {
                    db::ddl_on_shared_row(&mut server, "REVOKE ALL ON DATABASE %I FROM %I", &[&place.database, &tenant.role]).await?;
                }
            }
        }
    }
    // Its roles go from a host it left, unless that host is its own server under another
    // name (then DROP OWNED would take its live schema).
    let left_the_host = tenant.status == "deleted"
        || (place.host != tenant.host && hosts::surely_different_servers(cp, &app.config, &place.host, &tenant.host).await?);
    if left_the_host && !anything_else_on(cp, tenant, &place.host, kept_schema.is_some(), job).await? {
        for role in [&operator, &tenant.role] {
            if guard::role_is_ours(&mut server, role, &marker).await? {
                release_role(app, cp, &mut server, &place.host, role).await?;
                guard::drop_role(&mut server, role, &marker).await?;
            }
        }
    }
    Ok(())
}

/// Whether `tenant` has another kept source or unfinished move target on `host` than the
/// one being cleared.
async fn anything_else_on(cp: &mut PgConnection, tenant: &Tenant, host: &str, clearing_kept: bool, job: Option<&str>) -> Result<bool> {
    let (kept, copying): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tenant_master.kept_sources WHERE tenant_id = $1 AND host = $2 AND dropped_at IS NULL),
                (SELECT count(*) FROM tenant_master.move_targets WHERE tenant_id = $1 AND host = $2 AND state = 'copying'
                                                                    AND job_id IS DISTINCT FROM $3)",
    )
    .bind(tenant.id)
    .bind(host)
    .bind(job)
    .fetch_one(cp)
    .await
    .context("failed to read what is left of the tenant on a host")?;
    Ok(kept - i64::from(clearing_kept) > 0 || copying > 0)
}

/// Everything `role` holds in any database of the server of `server` (objects it owns,
/// rights granted to it), from the server's own record of it (`pg_shdepend`), goes: the
/// role can then be dropped. Only for a role of ours whose tenant is gone from that host.
pub async fn release_role(app: &App, cp: &mut PgConnection, server: &mut PgConnection, host: &str, role: &str) -> Result<()> {
    let databases: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT d.datname::text FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
         WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1)",
    )
    .bind(role)
    .fetch_all(&mut *server)
    .await
    .context("failed to find where a role holds rights")?;
    for database in databases {
        let mut db = hosts::connect(cp, &app.config, host, &database).await?;
        db::ddl_on_shared_row(&mut db, "DROP OWNED BY %I", &[role]).await?;
    }
    // Rights on databases themselves are recorded outside any database; DROP OWNED in the
    // admin's database revokes them.
    db::ddl_on_shared_row(server, "DROP OWNED BY %I", &[role]).await
}
