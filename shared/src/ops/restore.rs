//! Restores that never lose data.
//!
//! Order: verify the file (size, sha256, archive listing); take a `pre_restore` safety
//! backup; hold the tenant's login and end its sessions; rename the live schema aside
//! (pg_restore cannot restore under another name) and create an empty one in its place;
//! `pg_restore --single-transaction` into it, logged in with the tenant's rights (the
//! archive's COPY runs the tenant's CHECK and default functions); only once that
//! committed, drop the set-aside schema. On a failed restore its transaction leaves
//! nothing and the set-aside schema is renamed back. A run cut short anywhere is finished
//! (or undone) by the next run from what it finds (see [`Stage`]).

use serde_json::json;
use sqlx::PgConnection;

use crate::{
    activity,
    backups::{self, Backup, Kind},
    context::App,
    db::ddl,
    deployment,
    error::{Context as _, Error, Result},
    fault, guard, hosts, large_objects, ledger,
    naming::aside_schema,
    ops::{access, backup, migrations},
    outcomes, products,
    tenant_session::TenantAccess,
    tenants::{self, Tenant},
};

/// What a restore did.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Restored {
    /// The backup that was restored.
    pub backup_id: i64,
    /// The `pre_restore` backup of the data it replaced.
    pub safety_backup_id: i64,
    /// True when this run found the restore finished by an earlier run and did nothing.
    #[serde(default)]
    pub already_done: bool,
}

/// Restores backup `backup_id` of `slug` in place of its live schema, on behalf of job
/// `job_id`. Once that job finished, running it again changes nothing.
pub async fn restore(app: &App, slug: &str, backup_id: i64, job_id: &str) -> Result<Restored> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    let tenant = tenants::get(&mut cp, slug).await?;
    let mut server = hosts::connect_admin(&mut cp, &app.config, &tenant.host).await?;
    if let Some((owner, done)) = outcomes::finished(&mut cp, job_id).await? {
        if owner != tenant.id {
            return Err(Error::fatal(format!("job {job_id} restored an earlier tenant named '{slug}', which is gone; nothing was done")));
        }
        // A rerun of a finished restore (a lost acknowledgement, the orphan sweep, `jobs
        // retry`): the data stays as it is; only the login is left as the status says, as
        // the first run would have left it had it not stopped after recording.
        access::give_login_back(&mut server, &tenant).await?;
        let done: Restored =
            serde_json::from_value(done).map_err(|e| Error::fatal_because(format!("recorded restore outcome is unreadable: {e}"), e))?;
        return Ok(Restored { already_done: true, ..done });
    }
    tenant.require_live("restored")?;
    let chosen = backups::get(&mut cp, tenant.id, backup_id).await?;
    let progress = progress_of(&mut cp, job_id, tenant.id).await?;
    let committed = progress.as_ref().is_some_and(|p| p.stage == "restored");
    let marker = deployment::marker(&mut cp, slug).await?;
    let mut tenant_db = hosts::connect(&mut cp, &app.config, &tenant.host, &tenant.database).await?;
    if !committed {
        backup::verify_file(&chosen).await?;
        large_objects::refuse(&mut tenant_db, &tenant, "restored").await?;
    }

    // Recorded before the login is taken: from here on `jobs cancel` refuses the job, whose
    // retry gives the login back (or finishes the restore).
    if progress.is_none() {
        record_progress(&mut cp, job_id, &tenant, chosen.id, None, "holding").await?;
    }
    // The tenant is held first, so the safety copy has every row it ever wrote.
    access::block_login(&mut tenant_db, &tenant).await?;
    let outcome = async {
        // Boxed: each step's future is large (a backup inside a restore).
        let safety = Box::pin(safety_copy(app, &mut cp, &mut tenant_db, &tenant, &chosen, progress, job_id)).await?;
        fault::point(slug, "restore:safety_backup")?;
        Box::pin(replace_schema(app, &mut cp, &mut tenant_db, &mut server, &tenant, &chosen, &marker, job_id, committed)).await?;
        Ok::<_, Error>(safety)
    }
    .await;
    let safety = match outcome {
        Ok(safety) => safety,
        Err(e) => {
            // A simulated crash leaves things as a real one would, for the rerun to find.
            if !e.is_injected() {
                // Whatever failed, the live data is back under its own name (or, if the
                // restore committed, recorded as restored first) and the login as the
                // status says before we return.
                let finished = Finished { job_id, versions: &chosen.schema_versions };
                put_back_aside(&mut cp, &mut tenant_db, &mut server, &tenant, &marker, Some(finished)).await?;
                access::give_login_back(&mut tenant_db, &tenant).await?;
            }
            return Err(e);
        }
    };
    let restored = Restored { backup_id: chosen.id, safety_backup_id: safety, already_done: false };
    // Recorded before the login is given back: a rerun from here on changes nothing.
    outcomes::record(&mut cp, job_id, "RestoreTenant", tenant.id, &json!(restored)).await?;
    fault::point(slug, "restore:recorded")?;
    access::give_login_back(&mut tenant_db, &tenant).await?;
    activity::record(
        &mut cp,
        "worker",
        Some(tenant.id),
        "tenant.restored",
        json!({ "backup_id": chosen.id, "safety_backup_id": safety, "job_id": job_id }),
    )
    .await?;
    Ok(restored)
}

/// Undoes an interrupted restore job `job_id` of backup `backup_id` (used when it gives
/// up): live data back under its name, or, if the restore committed, the restore recorded
/// and finished; login as the tenant's status says.
pub async fn recover(app: &App, slug: &str, backup_id: i64, job_id: &str) -> Result<()> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    let tenant = tenants::get(&mut cp, slug).await?;
    let marker = deployment::marker(&mut cp, slug).await?;
    let versions = backups::get(&mut cp, tenant.id, backup_id).await.map(|b| b.schema_versions);
    let mut server = hosts::connect_admin(&mut cp, &app.config, &tenant.host).await?;
    let mut tenant_db = hosts::connect(&mut cp, &app.config, &tenant.host, &tenant.database).await?;
    match versions {
        Ok(versions) => {
            put_back_aside(&mut cp, &mut tenant_db, &mut server, &tenant, &marker, Some(Finished { job_id, versions: &versions })).await?
        }
        // A committed restore is finished with the backup's versions (an empty list would
        // clear the tenant's whole ledger): without them, stop. An uncommitted one needs none.
        Err(e) if matches!(stage(&mut tenant_db, &tenant).await?, Stage::Restored) => {
            return Err(e.in_step(|e| {
                format!("cannot finish the interrupted restore of '{slug}' (backup {backup_id}): {e}; see `tenantctl backup list {slug}`")
            }))
        }
        Err(_) => put_back_aside(&mut cp, &mut tenant_db, &mut server, &tenant, &marker, None).await?,
    }
    access::give_login_back(&mut tenant_db, &tenant).await
}

/// The restore job a committed restore belongs to, and the migrations its backup had.
struct Finished<'a> {
    job_id: &'a str,
    versions: &'a [i64],
}

/// Where a restore stands, read from the schemas alone.
#[derive(Debug, PartialEq, Eq)]
enum Stage {
    /// Only the live schema: nothing was moved yet.
    Start,
    /// The live data is set aside; the live name is free or holds an empty schema.
    AsideOnly { empty_live: bool },
    /// The restore committed (the live schema has objects again); the old copy is aside.
    Restored,
}

async fn stage(tenant_db: &mut PgConnection, tenant: &Tenant) -> Result<Stage> {
    let live = schema_objects(tenant_db, &tenant.schema).await?;
    let aside = schema_objects(tenant_db, &aside_schema(&tenant.schema)).await?;
    match (live, aside) {
        (Some(_), None) => Ok(Stage::Start),
        (None, Some(_)) => Ok(Stage::AsideOnly { empty_live: false }),
        // pg_restore runs in one transaction: an empty live schema means it did not commit.
        (Some(0), Some(_)) => Ok(Stage::AsideOnly { empty_live: true }),
        (Some(_), Some(_)) => Ok(Stage::Restored),
        (None, None) => Err(Error::fatal(format!(
            "tenant '{}' has neither its schema {} nor a set-aside copy in {}: restore it from a backup by id",
            tenant.slug, tenant.schema, tenant.database
        ))),
    }
}

/// The safety copy this restore keeps: taken now while the live data is in place (a
/// held login says nothing of what was written since an earlier run: an admin may have
/// resumed and paused the tenant meanwhile), or the one recorded by the run that set the
/// data aside or committed the restore. Recorded before anything is set aside; an earlier
/// copy is never deleted here.
async fn safety_copy(
    app: &App,
    cp: &mut PgConnection,
    tenant_db: &mut PgConnection,
    tenant: &Tenant,
    chosen: &Backup,
    progress: Option<Progress>,
    job_id: &str,
) -> Result<i64> {
    let recorded = progress.as_ref().and_then(|p| p.safety_backup_id);
    if let (Some(p), Some(safety)) = (&progress, recorded) {
        if p.stage == "restored" {
            return Ok(safety);
        }
    }
    let safety = match (stage(tenant_db, tenant).await?, recorded) {
        // The live data is in place (no restore committed: that is recorded before the
        // set-aside copy goes): a fresh copy, earlier ones kept.
        (Stage::Start, _) => backup::backup_fresh(app, &tenant.slug, Kind::PreRestore, job_id).await?.id,
        // Set aside by an earlier run: its recorded copy holds all of it.
        (_, Some(safety)) => return Ok(safety),
        // Set aside by a run older than the progress table: its copy, by job id.
        _ => backup::backup(app, &tenant.slug, Kind::PreRestore, None, job_id).await?.id,
    };
    record_progress(cp, job_id, tenant, chosen.id, Some(safety), "held").await?;
    Ok(safety)
}

#[allow(clippy::too_many_arguments)]
async fn replace_schema(
    app: &App,
    cp: &mut PgConnection,
    tenant_db: &mut PgConnection,
    server: &mut PgConnection,
    tenant: &Tenant,
    chosen: &Backup,
    marker: &str,
    job_id: &str,
    committed: bool,
) -> Result<()> {
    let aside = aside_schema(&tenant.schema);
    // Once the restore is recorded as committed, the live schema holds the backup's data
    // (and maybe rows written since): it is never set aside or restored over again.
    if !committed {
        let stage = stage(tenant_db, tenant).await?;
        if stage == Stage::Start {
            ddl(tenant_db, "ALTER SCHEMA %I RENAME TO %I", &[&tenant.schema, &aside]).await?;
        }
        fault::point(&tenant.slug, "restore:set_aside")?;
        if matches!(stage, Stage::Start | Stage::AsideOnly { empty_live: false }) {
            // An empty schema for pg_restore to fill: creating schemas is not among the
            // tenant's rights, so an admin makes it (no tenant code runs in CREATE SCHEMA).
            ddl(tenant_db, "CREATE SCHEMA %I AUTHORIZATION %I", &[&tenant.schema, &tenant.role]).await?;
        }
        if stage != Stage::Restored {
            let access = TenantAccess::prepare(&app.config, cp, tenant).await?;
            // As the tenant: COPY evaluates the tenant's CHECK, default and index functions.
            let result = access.restore_into_schema(&chosen.path(), &tenant.schema).await;
            result.map_err(|e| {
                e.in_step(|e| format!("restore of backup {} into '{}' failed, live data kept: {e}", chosen.id, tenant.slug))
            })?;
        }
        // Recorded before the set-aside copy goes: from here on a rerun only finishes.
        set_stage(cp, job_id, "restored").await?;
    }
    fault::point(&tenant.slug, "restore:restored")?;
    guard::drop_tenant_schema(tenant_db, server, &aside, tenant, marker).await?;
    fault::point(&tenant.slug, "restore:aside_dropped")?;
    bring_migrations_up_to_date(app, cp, tenant_db, tenant, chosen).await.map_err(|e| match e {
        Error::Injected(_) => e,
        e => e.in_step(|e| {
            format!(
                "the restore of backup {} into '{}' committed (the tenant now holds that backup's data), then bringing its migrations up to date failed: {e}; a retry of the job finishes it without restoring again",
                chosen.id, tenant.slug
            )
        }),
    })
}

/// A restore job's recorded progress (see `tenant_master.restore_progress`).
#[derive(Debug, sqlx::FromRow)]
struct Progress {
    safety_backup_id: Option<i64>,
    stage: String,
}

/// The progress job `job_id` recorded for this tenant (a job of an earlier tenant of the
/// slug counts as none).
async fn progress_of(cp: &mut PgConnection, job_id: &str, tenant_id: i64) -> Result<Option<Progress>> {
    sqlx::query_as("SELECT safety_backup_id, stage FROM tenant_master.restore_progress WHERE job_id = $1 AND tenant_id = $2")
        .bind(job_id)
        .bind(tenant_id)
        .fetch_optional(cp)
        .await
        .context("failed to read the restore's progress")
}

async fn record_progress(
    cp: &mut PgConnection,
    job_id: &str,
    tenant: &Tenant,
    backup_id: i64,
    safety_id: Option<i64>,
    stage: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO tenant_master.restore_progress (job_id, tenant_id, backup_id, safety_backup_id, stage) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (job_id) DO UPDATE SET safety_backup_id = $4, stage = $5, updated_at = now()",
    )
    .bind(job_id)
    .bind(tenant.id)
    .bind(backup_id)
    .bind(safety_id)
    .bind(stage)
    .execute(cp)
    .await
    .context("failed to record the restore's progress")?;
    Ok(())
}

async fn set_stage(cp: &mut PgConnection, job_id: &str, stage: &str) -> Result<()> {
    sqlx::query("UPDATE tenant_master.restore_progress SET stage = $2, updated_at = now() WHERE job_id = $1")
        .bind(job_id)
        .bind(stage)
        .execute(cp)
        .await
        .context("failed to record the restore's progress")?;
    Ok(())
}

/// Whether restore job `job_id` has begun changing its tenant (a safety copy was taken and
/// its data may be set aside) and has not finished: such a job is finished, not cancelled.
pub async fn has_begun(cp: &mut PgConnection, job_id: &str) -> Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenant_master.restore_progress p WHERE p.job_id = $1)
            AND NOT EXISTS (SELECT 1 FROM tenant_master.job_outcomes o WHERE o.job_id = $1)",
    )
    .bind(job_id)
    .fetch_one(cp)
    .await
    .context("failed to read the restore's progress")
}

/// The restored schema has the migrations it had at backup time; record exactly those,
/// then apply (as the tenant) what it had before the restore and the backup lacks.
async fn bring_migrations_up_to_date(
    app: &App,
    cp: &mut PgConnection,
    tenant_db: &mut PgConnection,
    tenant: &Tenant,
    chosen: &Backup,
) -> Result<()> {
    ledger::keep_only(tenant_db, &tenant.schema, &chosen.schema_versions).await?;
    let product = products::load(&app.config.products_dir, &tenant.product)?;
    let access = TenantAccess::prepare(&app.config, cp, tenant).await?;
    ledger::ensure(tenant_db, access.role()).await?;
    let mut operator = access.connect().await?;
    // Up to the version the tenant was at before the restore (as last recorded), not the
    // product's latest: a migration still being rolled out reaches it by the rollout only.
    migrations::apply_all(cp, tenant_db, &mut operator, tenant, &product, tenant.schema_version, |_| Ok(())).await?;
    let version = ledger::applied_versions(tenant_db, &tenant.schema).await?.into_iter().max();
    crate::ops::migrations::record_version(cp, tenant.id, version).await
}

/// The number of tables, functions and types in `schema`, or None if it does not exist.
async fn schema_objects(conn: &mut PgConnection, schema: &str) -> Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = n.oid) + (SELECT count(*) FROM pg_proc WHERE pronamespace = n.oid)
              + (SELECT count(*) FROM pg_type WHERE typnamespace = n.oid)
         FROM pg_namespace n WHERE nspname = $1",
    )
    .bind(schema)
    .fetch_optional(conn)
    .await
    .context("failed to look up a schema")
}

/// Puts the live data back under its name after a failed or abandoned restore: if the
/// restore committed, that is recorded first (a later run must not take the restored data
/// for the live data), the ledger follows the backup, and only then the old copy goes; if
/// not, the empty schema it was meant to fill goes and the set-aside copy takes its name
/// back.
async fn put_back_aside(
    cp: &mut PgConnection,
    tenant_db: &mut PgConnection,
    server: &mut PgConnection,
    tenant: &Tenant,
    marker: &str,
    finished: Option<Finished<'_>>,
) -> Result<()> {
    let aside = aside_schema(&tenant.schema);
    match stage(tenant_db, tenant).await? {
        Stage::Start => Ok(()),
        Stage::Restored => {
            let Some(finished) = finished else { return Ok(()) };
            set_stage(cp, finished.job_id, "restored").await?;
            ledger::keep_only(tenant_db, &tenant.schema, finished.versions).await?;
            guard::drop_tenant_schema(tenant_db, server, &aside, tenant, marker).await
        }
        Stage::AsideOnly { empty_live } => {
            if empty_live {
                guard::drop_tenant_schema(tenant_db, server, &tenant.schema, tenant, marker).await?;
            }
            ddl(tenant_db, "ALTER SCHEMA %I RENAME TO %I", &[&aside, &tenant.schema]).await
        }
    }
}
