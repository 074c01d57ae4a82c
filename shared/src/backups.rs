//! The backup registry (`tenant_master.backups`).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::error::{Context as _, Error, Result};

/// Why a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Taken by a backup schedule.
    Scheduled,
    /// Asked for by an admin (`tenantctl backup create`, the admin panel).
    Manual,
    /// The safety copy a restore takes of the data it replaces.
    PreRestore,
    /// The safety copy taken before a tenant is deleted.
    PreDelete,
    /// The copy a move takes of the tenant and restores at its target.
    PreMove,
    /// Taken by `maintenance --backup-first` before a cleanup or vacuum.
    PreMaintenance,
}

impl Kind {
    /// Every kind's word, as payloads and the registry spell it.
    pub const NAMES: &'static [&'static str] = &["scheduled", "manual", "pre_restore", "pre_delete", "pre_move", "pre_maintenance"];

    /// The word stored in the registry.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Scheduled => "scheduled",
            Kind::Manual => "manual",
            Kind::PreRestore => "pre_restore",
            Kind::PreDelete => "pre_delete",
            Kind::PreMove => "pre_move",
            Kind::PreMaintenance => "pre_maintenance",
        }
    }

    /// Retention applies to routine backups; safety copies are kept.
    pub fn is_routine(self) -> bool {
        matches!(self, Kind::Scheduled | Kind::Manual)
    }
}

/// A backup as `tenantctl backup list` shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Backup {
    /// The backup's id in the registry.
    pub id: i64,
    /// The tenant it is a copy of.
    pub tenant_id: i64,
    /// Why it was taken: one of [`Kind::NAMES`].
    pub kind: String,
    /// The dump file.
    pub file_path: String,
    /// The file's size in bytes, once finished.
    pub bytes: Option<i64>,
    /// The file's SHA-256 in hex, once finished.
    pub sha256: Option<String>,
    /// The product migrations the dumped schema had, so a restore can bring it up to date.
    pub schema_versions: Vec<i64>,
    /// When the dump started.
    #[sqlx(rename = "started_at")]
    pub created_at: DateTime<Utc>,
    /// When it was finished and verified; none while it is being written.
    pub finished_at: Option<DateTime<Utc>>,
    /// Whether the archive was read back (`pg_restore --list`) and holds the tenant's schema.
    pub verified: bool,
    /// The job that took it.
    pub job_id: Option<String>,
}

impl Backup {
    /// The backup file.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(&self.file_path)
    }
}

macro_rules! backup_columns {
    () => {
        "id, tenant_id, kind, file_path, bytes, sha256, schema_versions, started_at, finished_at, verified, job_id"
    };
}

/// Finished backups of a tenant, newest first.
pub async fn list(conn: &mut PgConnection, tenant_id: i64) -> Result<Vec<Backup>> {
    sqlx::query_as(concat!(
        "SELECT ",
        backup_columns!(),
        " FROM tenant_master.backups WHERE tenant_id = $1 AND finished_at IS NOT NULL ORDER BY finished_at DESC, id DESC"
    ))
    .bind(tenant_id)
    .fetch_all(conn)
    .await
    .context("failed to list backups")
}

/// The newest finished routine (scheduled or manual) backup of a tenant: what
/// `restore --latest` means. Safety copies are restored by id only.
pub async fn latest_routine(conn: &mut PgConnection, tenant_id: i64) -> Result<Option<Backup>> {
    Ok(list(conn, tenant_id).await?.into_iter().find(|b| matches!(b.kind.as_str(), "scheduled" | "manual")))
}

/// One finished backup of a tenant.
pub async fn get(conn: &mut PgConnection, tenant_id: i64, id: i64) -> Result<Backup> {
    sqlx::query_as(concat!(
        "SELECT ",
        backup_columns!(),
        " FROM tenant_master.backups WHERE tenant_id = $1 AND id = $2 AND finished_at IS NOT NULL"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await
    .context("failed to read the backup")?
    .ok_or_else(|| Error::NotFound(format!("tenant has no finished backup with id {id}")))
}

/// The rows a job wrote for a tenant (finished or not): how a rerun finds its own work.
pub async fn of_job(conn: &mut PgConnection, tenant_id: i64, job_id: &str, kind: Kind) -> Result<Vec<Backup>> {
    sqlx::query_as(concat!(
        "SELECT ",
        backup_columns!(),
        " FROM tenant_master.backups WHERE tenant_id = $1 AND job_id = $2 AND kind = $3 ORDER BY id"
    ))
    .bind(tenant_id)
    .bind(job_id)
    .bind(kind.as_str())
    .fetch_all(conn)
    .await
    .context("failed to read the job's backups")
}

/// Registers a backup about to be written.
pub async fn start(conn: &mut PgConnection, tenant_id: i64, kind: Kind, path: &str, versions: &[i64], job_id: &str) -> Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO tenant_master.backups (tenant_id, kind, file_path, schema_versions, job_id) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(tenant_id)
    .bind(kind.as_str())
    .bind(path)
    .bind(versions)
    .bind(job_id)
    .fetch_one(conn)
    .await
    .context("failed to register the backup")
}

/// Marks a backup finished and verified.
pub async fn finish(conn: &mut PgConnection, id: i64, bytes: i64, sha256: &str) -> Result<()> {
    sqlx::query("UPDATE tenant_master.backups SET bytes = $2, sha256 = $3, verified = true, finished_at = now() WHERE id = $1")
        .bind(id)
        .bind(bytes)
        .bind(sha256)
        .execute(conn)
        .await
        .context("failed to record the finished backup")?;
    Ok(())
}

/// Forgets a backup row (its file must be gone first).
pub async fn forget(conn: &mut PgConnection, id: i64) -> Result<()> {
    sqlx::query("DELETE FROM tenant_master.backups WHERE id = $1").bind(id).execute(conn).await.context("failed to delete a backup row")?;
    Ok(())
}
