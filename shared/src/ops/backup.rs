//! Backups: `pg_dump` of the tenant's schema into `<slug>_<time>.dump.partial`,
//! verified with `pg_restore --list`, hashed, renamed to its final name, then registered
//! as finished; then retention.
//!
//! The row is written before the dump (unfinished), so a run cut short anywhere leaves an
//! unfinished row and maybe a file; the next backup of the tenant (which holds the tenant
//! lock, so nothing else is writing) removes both. Only finished rows are backups.

use std::path::{Path, PathBuf};

use serde_json::json;
use sqlx::PgConnection;

use crate::{
    activity,
    backups::{self, Backup, Kind},
    context::App,
    db::ddl,
    error::{Context as _, Error, Result},
    fault, hosts, large_objects, ledger, pg_tools,
    telemetry::Laps,
    tenant_session::TenantAccess,
    tenants::{self, Tenant},
};

/// Takes a backup of `slug` on behalf of job `job_id`; a rerun of the same job returns the
/// backup it finished before instead of taking another.
pub async fn backup(app: &App, slug: &str, kind: Kind, keep: Option<u32>, job_id: &str) -> Result<Backup> {
    take(app, slug, kind, keep, job_id, true, &mut Laps::default()).await
}

/// [`backup`], each step's wall time in `laps` (the job's result shows them).
pub async fn backup_timed(app: &App, slug: &str, kind: Kind, keep: Option<u32>, job_id: &str, laps: &mut Laps) -> Result<Backup> {
    take(app, slug, kind, keep, job_id, true, laps).await
}

/// Takes a new backup of `slug` even if job `job_id` finished one before (a safety copy
/// must hold what the tenant wrote since). The job's earlier copies are kept: a retry
/// cannot know that the new copy holds everything an earlier one did (a restore that
/// committed before a crash would be copied instead of the data it replaced).
pub async fn backup_fresh(app: &App, slug: &str, kind: Kind, job_id: &str) -> Result<Backup> {
    take(app, slug, kind, None, job_id, false, &mut Laps::default()).await
}

async fn take(app: &App, slug: &str, kind: Kind, keep: Option<u32>, job_id: &str, reuse: bool, laps: &mut Laps) -> Result<Backup> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    let tenant = tenants::get(&mut cp, slug).await?;
    if !matches!(tenant.status.as_str(), "active" | "paused" | "suspended" | "deleting") {
        return Err(Error::Conflict(format!("tenant '{slug}' is {}: there is nothing to back up", tenant.status)));
    }
    let finished = match reuse {
        true => backups::of_job(&mut cp, tenant.id, job_id, kind).await?.into_iter().find(|b| b.finished_at.is_some()),
        false => None,
    };
    let backup = match finished {
        Some(done) => done,
        None => {
            discard_unfinished(&mut cp, &tenant, &app.config.backup_dir).await?;
            laps.lap("look_up");
            dump(app, &mut cp, &tenant, kind, job_id, laps).await?
        }
    };
    if kind.is_routine() {
        let keep = keep.unwrap_or_else(|| app.config.backups.keep_for(&tenant.plan));
        apply_retention(&mut cp, &tenant, keep).await?;
        laps.lap("retention");
    }
    Ok(backup)
}

/// The folder of a tenant's backups.
pub fn tenant_dir(backup_dir: &Path, slug: &str) -> PathBuf {
    backup_dir.join(slug)
}

fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

async fn dump(app: &App, cp: &mut PgConnection, tenant: &Tenant, kind: Kind, job_id: &str, laps: &mut Laps) -> Result<Backup> {
    // pg_dump reads the tenant's tables (and may meet its code): it runs with its rights.
    let access = TenantAccess::prepare(&app.config, cp, tenant).await?;
    let mut tenant_db = hosts::connect(cp, &app.config, &tenant.host, &tenant.database).await?;
    let server_major: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int / 10000")
        .fetch_one(&mut tenant_db)
        .await
        .context("failed to read the server version")?;
    pg_tools::ensure_tools_match(server_major as u32).await?;
    // A restore that stopped part way may have left an empty live schema: a copy of it
    // would count as a routine backup and push a real one out of retention. Only that
    // restore's own safety copy runs meanwhile; the rest waits for its retry.
    let aside = crate::naming::aside_schema(&tenant.schema);
    if kind != Kind::PreRestore && crate::ops::move_cleanup::schema_exists(&mut tenant_db, &aside).await? {
        return Err(Error::Busy(format!(
            "tenant '{}' has a restore that stopped part way (its data waits in {aside}): this backup waits until that restore's retry finishes",
            tenant.slug
        )));
    }
    let versions = ledger::applied_versions(&mut tenant_db, &tenant.schema).await?;
    readable_by_owner(&mut tenant_db, tenant).await?;
    if kind != Kind::PreDelete {
        large_objects::refuse(&mut tenant_db, tenant, "backed up").await?;
    }
    drop(tenant_db);
    laps.lap("checks");

    let dir = tenant_dir(&app.config.backup_dir, &tenant.slug);
    crate::private_files::create_dir(&app.config.backup_dir, false).await?;
    crate::private_files::create_dir(&dir, true).await?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let path = dir.join(format!("{}_{stamp}.dump", tenant.slug));
    let path_text = path.to_str().ok_or_else(|| Error::Invalid(format!("backup path {} is not UTF-8", path.display())))?;
    let id = backups::start(cp, tenant.id, kind, path_text, &versions, job_id).await?;
    fault::point(&tenant.slug, "backup:registered")?;

    let partial = partial(&path);
    if let Err(e) = access.dump_schema(&tenant.schema, &partial).await {
        // Leave nothing half-written behind; earlier backups are untouched.
        let _ = tokio::fs::remove_file(&partial).await;
        backups::forget(cp, id).await?;
        return Err(e.in_step(|e| format!("backup of '{}' failed: {e}", tenant.slug)));
    }
    fault::point(&tenant.slug, "backup:dumped")?;
    laps.lap("pg_dump");

    let toc = pg_tools::list_archive(&partial).await?;
    if !toc.lines().any(|l| l.contains(" SCHEMA ") && l.contains(&tenant.schema)) {
        return Err(Error::transient(format!(
            "backup of '{}' failed verification: the archive holds no schema {}",
            tenant.slug, tenant.schema
        )));
    }
    laps.lap("verify");
    let (bytes, sha256) = hash_and_sync(&partial).await?;
    tokio::fs::rename(&partial, &path).await.context(format!("failed to rename {} to its final name", partial.display()))?;
    sync_dir(&dir).await?;
    fault::point(&tenant.slug, "backup:renamed")?;
    laps.lap("hash_and_sync");

    backups::finish(cp, id, bytes as i64, &sha256).await?;
    activity::record(cp, "worker", Some(tenant.id), "backup.created", json!({ "backup_id": id, "kind": kind.as_str(), "bytes": bytes }))
        .await?;
    laps.lap("record");
    tracing::info!(backup.id = id, backup.bytes = bytes, "backup written to {}", path.display());
    backups::get(cp, tenant.id, id).await
}

/// Gives the tenant role back the right to read everything in its schema, which it may
/// have revoked from itself (a tenant could otherwise make every backup, and so its own
/// delete, fail), and refuses tables that force row-level security on their owner: a dump
/// would miss the rows the tenant's policies hide. GRANT and a catalog read over an admin
/// connection: no tenant object is involved.
async fn readable_by_owner(tenant_db: &mut PgConnection, tenant: &Tenant) -> Result<()> {
    // Granted only where missing: a GRANT rewrites the catalog row even when nothing
    // changes, and this runs before every nightly backup of every tenant.
    let (lacks_usage, unreadable): (bool, Vec<String>) = sqlx::query_as(
        "SELECT NOT has_schema_privilege($2, n.oid, 'USAGE'),
                ARRAY(SELECT c.relname::text FROM pg_class c
                      WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
                        AND NOT has_table_privilege($2, c.oid, 'SELECT') ORDER BY 1)
         FROM pg_namespace n WHERE n.nspname = $1",
    )
    .bind(&tenant.schema)
    .bind(&tenant.role)
    .fetch_optional(&mut *tenant_db)
    .await
    .context("failed to read the tenant's rights on its own schema")?
    .ok_or_else(|| missing_schema(tenant))?;
    if lacks_usage {
        ddl(tenant_db, "GRANT USAGE ON SCHEMA %I TO %I", &[&tenant.schema, &tenant.role]).await?;
    }
    for relation in &unreadable {
        ddl(tenant_db, "GRANT SELECT ON %I.%I TO %I", &[&tenant.schema, relation, &tenant.role]).await?;
    }
    let forced: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relforcerowsecurity ORDER BY 1",
    )
    .bind(&tenant.schema)
    .fetch_all(&mut *tenant_db)
    .await
    .context("failed to read the tenant's row-level security settings")?;
    if !forced.is_empty() {
        return Err(Error::fatal(format!(
            "cannot back up '{}': table(s) {} force row-level security on their owner, so a dump would miss rows; run ALTER TABLE ... NO FORCE ROW LEVEL SECURITY on them (the tenant or an administrator), then retry the job",
            tenant.slug,
            forced.join(", ")
        )));
    }
    Ok(())
}

/// The tenant's schema is gone (dropped by hand, or a database restored from elsewhere):
/// no retry brings it back.
pub fn missing_schema(tenant: &Tenant) -> Error {
    Error::fatal(format!(
        "tenant '{}' has no schema {} in database {} on host {}: its data is not where the registry says; restore it with `tenantctl backup restore {} --latest --yes`, or delete it with `tenantctl tenant delete {} --yes`",
        tenant.slug, tenant.schema, tenant.database, tenant.host, tenant.slug, tenant.slug
    ))
}

/// Removes what earlier, interrupted backups of this tenant left: unfinished rows with
/// their files, and stray `.partial` files.
async fn discard_unfinished(cp: &mut PgConnection, tenant: &Tenant, backup_dir: &Path) -> Result<()> {
    let unfinished: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, file_path FROM tenant_master.backups WHERE tenant_id = $1 AND finished_at IS NULL")
            .bind(tenant.id)
            .fetch_all(&mut *cp)
            .await
            .context("failed to look for interrupted backups")?;
    for (id, file) in unfinished {
        let path = PathBuf::from(file);
        remove_if_present(&partial(&path)).await?;
        remove_if_present(&path).await?;
        backups::forget(cp, id).await?;
    }
    let dir = tenant_dir(backup_dir, &tenant.slug);
    if let Ok(mut entries) = tokio::fs::read_dir(&dir).await {
        while let Some(entry) = entries.next_entry().await.context(format!("failed to read {}", dir.display()))? {
            if entry.file_name().to_string_lossy().ends_with(".partial") {
                remove_if_present(&entry.path()).await?;
            }
        }
    }
    Ok(())
}

/// Keeps the newest `keep` routine backups of the tenant; deletes the file, then the row,
/// so a crash in between leaves a row whose file is gone, which the next run deletes.
async fn apply_retention(cp: &mut PgConnection, tenant: &Tenant, keep: u32) -> Result<()> {
    let old: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, file_path FROM tenant_master.backups
         WHERE tenant_id = $1 AND finished_at IS NOT NULL AND kind IN ('scheduled', 'manual')
         ORDER BY finished_at DESC, id DESC OFFSET $2",
    )
    .bind(tenant.id)
    .bind(keep as i64)
    .fetch_all(&mut *cp)
    .await
    .context("failed to find backups beyond retention")?;
    for (id, file) in &old {
        remove_if_present(Path::new(file)).await?;
        backups::forget(cp, *id).await?;
    }
    if !old.is_empty() {
        activity::record(cp, "worker", Some(tenant.id), "backup.retention", json!({ "keep": keep, "deleted": old.len() })).await?;
    }
    Ok(())
}

pub(crate) async fn remove_if_present(path: &Path) -> Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).context(format!("failed to delete {}", path.display())),
        _ => Ok(()),
    }
}

/// Size and sha256 of a file, after flushing it to disk.
pub async fn hash_and_sync(path: &Path) -> Result<(u64, String)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use sha2::{Digest, Sha256};
        use std::io::Read;
        let mut file = std::fs::File::open(&path).context(format!("failed to open {}", path.display()))?;
        file.sync_all().context(format!("failed to flush {} to disk", path.display()))?;
        let (mut hasher, mut buf, mut bytes) = (Sha256::new(), vec![0u8; 1 << 20], 0u64);
        loop {
            let n = file.read(&mut buf).context(format!("failed to read {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bytes += n as u64;
        }
        Ok((bytes, hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()))
    })
    .await
    .expect("hashing task panicked")
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&dir).and_then(|d| d.sync_all()).context(format!("failed to flush {}", dir.display()))
    })
    .await
    .expect("sync task panicked")
}

/// Checks that a backup's file is the one that was registered (size and sha256).
pub async fn verify_file(backup: &Backup) -> Result<()> {
    let path = backup.path();
    let damaged = |why: String| Error::fatal(format!("backup {} is damaged ({why}): refusing to use it", backup.id));
    let meta = tokio::fs::metadata(&path).await.map_err(|e| damaged(format!("{}: {e}", path.display())))?;
    if Some(meta.len() as i64) != backup.bytes {
        return Err(damaged(format!("{} bytes on disk, {} registered", meta.len(), backup.bytes.unwrap_or(0))));
    }
    let (_, sha256) = hash_and_sync(&path).await?;
    if Some(&sha256) != backup.sha256.as_ref() {
        return Err(damaged("sha256 mismatch".into()));
    }
    pg_tools::list_archive(&path).await.map_err(|e| match e {
        // pg_restore read the file and refused it; a signal or a failed start says nothing of the file.
        Error::Tool { exit_code: Some(_), .. } => damaged(e.to_string()),
        e => e,
    })?;
    Ok(())
}
