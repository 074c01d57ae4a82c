//! Pruning the queue: apalis never deletes finished rows, and every acknowledgement of a
//! worker scans all rows that worker name ever locked (see the apalis notes), so finished
//! rows are deleted after a retention, in batches.

use serde::Serialize;

use crate::error::{Context as _, Result};

/// What a prune deleted.
#[derive(Debug, Serialize)]
pub struct PruneReport {
    /// Done jobs deleted.
    pub done: i64,
    /// Dead and cancelled jobs deleted.
    pub dead: i64,
    /// Worker rows of long-gone processes deleted.
    pub workers: i64,
}

/// Removes the backups (files, then rows) of tenants deleted more than `days` days ago.
pub async fn prune_deleted_tenant_backups(pool: &sqlx::PgPool, days: u32) -> Result<i64> {
    let old: Vec<(i64, String)> = sqlx::query_as(
        "SELECT b.id, b.file_path FROM tenant_master.backups b JOIN tenant_master.tenants t ON t.id = b.tenant_id
         WHERE t.status = 'deleted' AND t.deleted_at < now() - make_interval(days => $1)",
    )
    .bind(days as i32)
    .fetch_all(pool)
    .await
    .context("failed to find backups of deleted tenants")?;
    for (id, path) in &old {
        super::backup::remove_if_present(std::path::Path::new(path)).await?;
        sqlx::query("DELETE FROM tenant_master.backups WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .context("failed to delete a backup row")?;
    }
    Ok(old.len() as i64)
}

const BATCH: i64 = 10_000;

/// Deletes done jobs older than `done_days`, dead ones older than `dead_days`, and worker
/// rows of long-gone processes that no job refers to any more.
pub async fn prune_jobs(pool: &sqlx::PgPool, done_days: u32, dead_days: u32) -> Result<PruneReport> {
    let done = delete_batches(
        pool,
        "DELETE FROM apalis.jobs WHERE id IN (SELECT id FROM apalis.jobs WHERE status = 'Done'
           AND done_at < now() - make_interval(days => $1) LIMIT $2)",
        done_days,
    )
    .await?;
    let dead = delete_batches(
        pool,
        "DELETE FROM apalis.jobs WHERE id IN (SELECT id FROM tenant_master.jobs WHERE status IN ('dead', 'cancelled')
           AND COALESCE((SELECT done_at FROM apalis.jobs j WHERE j.id = tenant_master.jobs.id), run_at) < now() - make_interval(days => $1) LIMIT $2)",
        dead_days,
    )
    .await?;
    sqlx::query("DELETE FROM tenant_master.cancelled_jobs c WHERE NOT EXISTS (SELECT 1 FROM apalis.jobs j WHERE j.id = c.job_id)")
        .execute(pool)
        .await
        .context("failed to forget pruned cancellations")?;
    // Attempts end before their job: the oldest ones are the pruned jobs'.
    sqlx::query(
        "DELETE FROM tenant_master.job_attempts a WHERE a.ended_at < now() - make_interval(days => $1)
           AND NOT EXISTS (SELECT 1 FROM apalis.jobs j WHERE j.id = a.job_id)",
    )
    .bind(done_days.min(dead_days) as i32)
    .execute(pool)
    .await
    .context("failed to forget the attempts of pruned jobs")?;
    let workers = sqlx::query(
        "DELETE FROM apalis.workers w WHERE w.last_seen < now() - make_interval(days => $1)
           AND NOT EXISTS (SELECT 1 FROM apalis.jobs j WHERE j.lock_by = w.id)",
    )
    .bind(done_days.max(1) as i32)
    .execute(pool)
    .await
    .context("failed to delete old worker rows")?
    .rows_affected() as i64;
    Ok(PruneReport { done, dead, workers })
}

async fn delete_batches(pool: &sqlx::PgPool, sql: &'static str, days: u32) -> Result<i64> {
    let mut total = 0;
    loop {
        let n = sqlx::query(sql).bind(days as i32).bind(BATCH).execute(pool).await.context("failed to prune finished jobs")?.rows_affected()
            as i64;
        total += n;
        if n < BATCH {
            return Ok(total);
        }
    }
}
