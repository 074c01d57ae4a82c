//! The queue as Tenant Master sees it: enqueue through `tenant_master.enqueue()` (the same
//! SQL function other languages call), read jobs through the `tenant_master.jobs` view.
//! [`job`] says what a job type is, [`runner`] runs one attempt, [`metrics`] counts them.

pub mod backend;
pub mod feed;
pub mod job;
pub mod metrics;
pub mod payload;
pub mod runner;

pub use job::{Job, Policy, Run};

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::error::{Context as _, Error, Result};

/// Enqueues `job` on `conn`, which may be inside the caller's transaction: the job becomes
/// visible to workers only when that transaction commits. Returns the job id; a job whose
/// idempotency key is taken is not enqueued twice (the existing job's id is returned).
pub async fn enqueue<J: Job>(conn: &mut PgConnection, job: &J) -> Result<String> {
    let payload = serde_json::to_value(job).expect("job payloads serialize to JSON");
    sqlx::query_scalar("SELECT tenant_master.enqueue($1, $2, $3)")
        .bind(J::TYPE)
        .bind(payload)
        .bind(job.idempotency_key())
        .fetch_one(conn)
        .await
        .context(format!("failed to enqueue {}", J::TYPE))
}

/// The id of the job holding idempotency key `key`, if one does (cancelled jobs free theirs).
pub async fn job_with_key(conn: &mut PgConnection, key: &str) -> Result<Option<String>> {
    sqlx::query_scalar("SELECT id FROM apalis.jobs WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(conn)
        .await
        .context("failed to find the job by its idempotency key")
}

/// Enqueues many jobs of one type in one statement (keys taken already are skipped);
/// returns how many were inserted.
pub async fn enqueue_many<J: Job>(conn: &mut PgConnection, jobs: &[J]) -> Result<u64> {
    let payloads: Vec<Value> = jobs.iter().map(|j| serde_json::to_value(j).expect("job payloads serialize to JSON")).collect();
    let keys: Vec<Option<String>> = jobs.iter().map(Job::idempotency_key).collect();
    let inserted: i32 = sqlx::query_scalar("SELECT tenant_master.enqueue_many($1, $2, $3)")
        .bind(J::TYPE)
        .bind(&payloads)
        .bind(&keys)
        .fetch_one(conn)
        .await
        .context(format!("failed to enqueue {} {} jobs", jobs.len(), J::TYPE))?;
    Ok(inserted as u64)
}

/// A job as admins see it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct JobInfo {
    /// The job's id; later jobs have higher ones.
    pub id: String,
    /// Its job type, e.g. `BackupTenant`.
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub job_type: String,
    /// pending | running | done | failed (will retry) | dead (gave up).
    pub status: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// Its retry limit.
    pub max_attempts: i32,
    /// When it is (or was) due to run.
    pub run_at: DateTime<Utc>,
    /// The last attempt's error, if one failed.
    pub last_error: Option<String>,
    /// The tenant's slug from its payload, if it has one.
    pub tenant: Option<String>,
    /// Its payload, as enqueued.
    pub payload: Value,
    /// What the job returned when it succeeded (counts, backup ids, a move's downtime).
    pub result: Option<Value>,
}

impl JobInfo {
    /// Done, dead or cancelled: nothing more will happen without an admin.
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "done" | "dead" | "cancelled")
    }
}

/// Filters of `tenantctl jobs list`.
#[derive(Debug, Default)]
pub struct JobFilter {
    /// Jobs with this status only (one of [`STATUSES`]).
    pub status: Option<String>,
    /// Jobs of this type only.
    pub job_type: Option<String>,
    /// Jobs of this tenant (slug) only.
    pub tenant: Option<String>,
    /// At most this many jobs.
    pub limit: i64,
}

/// Our job statuses.
pub const STATUSES: &[&str] = &["pending", "running", "done", "failed", "dead", "cancelled"];

/// Jobs matching `filter`, newest first.
pub async fn list(pool: &PgPool, filter: &JobFilter) -> Result<Vec<JobInfo>> {
    list_sorted(pool, filter, JobSort::default(), 0).await
}

/// A column the job list can be sorted by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobColumn {
    /// Enqueue order (job ids grow with time).
    #[default]
    Id,
    /// The job type's name.
    Type,
    /// The status's name.
    Status,
    /// Attempts made so far.
    Attempts,
    /// When the job is (or was) due to run.
    RunAt,
    /// The tenant's slug.
    Tenant,
}

impl JobColumn {
    /// Every column, in the list's order.
    pub const ALL: &'static [JobColumn] =
        &[JobColumn::Id, JobColumn::Type, JobColumn::Status, JobColumn::Attempts, JobColumn::RunAt, JobColumn::Tenant];

    /// The name in a link (`?sort=run_at`) and the view's column.
    pub fn as_str(self) -> &'static str {
        match self {
            JobColumn::Id => "id",
            JobColumn::Type => "type",
            JobColumn::Status => "status",
            JobColumn::Attempts => "attempts",
            JobColumn::RunAt => "run_at",
            JobColumn::Tenant => "tenant",
        }
    }

    /// The column a link names (`run_at`), if any.
    pub fn parse(name: &str) -> Option<JobColumn> {
        JobColumn::ALL.iter().copied().find(|c| c.as_str() == name)
    }
}

/// An order of the job list: a column and its direction (newest first by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSort {
    /// The column to sort by.
    pub column: JobColumn,
    /// Largest (or latest) first.
    pub descending: bool,
}

impl Default for JobSort {
    fn default() -> JobSort {
        JobSort { column: JobColumn::Id, descending: true }
    }
}

/// Jobs matching `filter` in the order `sort`, skipping the first `offset` (a page of
/// `filter.limit`); ties keep the newest first.
pub async fn list_sorted(pool: &PgPool, filter: &JobFilter, sort: JobSort, offset: i64) -> Result<Vec<JobInfo>> {
    check(pool, filter).await?;
    // The column and direction come from the enums above, never from the request's text.
    let order = format!("{} {} NULLS LAST, id DESC", sort.column.as_str(), if sort.descending { "DESC" } else { "ASC" });
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, type, status, attempts, max_attempts, run_at, last_error, tenant, payload, result FROM tenant_master.jobs
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR type = $2) AND ($3::text IS NULL OR tenant = $3)
         ORDER BY {order} LIMIT $4 OFFSET $5"
    )))
    .bind(&filter.status)
    .bind(&filter.job_type)
    .bind(&filter.tenant)
    .bind(filter.limit)
    .bind(offset.max(0))
    .fetch_all(pool)
    .await
    .context("failed to list jobs")
}

/// How many jobs match `filter` (its limit ignored).
pub async fn count(pool: &PgPool, filter: &JobFilter) -> Result<i64> {
    check(pool, filter).await?;
    sqlx::query_scalar(
        "SELECT count(*) FROM tenant_master.jobs
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR type = $2) AND ($3::text IS NULL OR tenant = $3)",
    )
    .bind(&filter.status)
    .bind(&filter.job_type)
    .bind(&filter.tenant)
    .fetch_one(pool)
    .await
    .context("failed to count jobs")
}

/// Refuses a status, job type or tenant that matches nothing by construction: a typo must
/// not read as "no jobs".
async fn check(pool: &PgPool, filter: &JobFilter) -> Result<()> {
    if let Some(status) = &filter.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(crate::error::unknown_value("status", status, STATUSES, None));
        }
    }
    if let Some(job_type) = &filter.job_type {
        check_job_type(pool, job_type).await?;
    }
    if let Some(slug) = &filter.tenant {
        let mut conn = pool.acquire().await.context("failed to connect to the control plane")?;
        if crate::tenants::find(&mut conn, slug).await?.is_none() {
            return Err(Error::Invalid(format!("no tenant '{slug}': see `tenantctl tenant list`")));
        }
    }
    Ok(())
}

/// Puts failed, dead (or pending) jobs back to pending with a fresh attempt budget, due now,
/// waking a worker; returns the ids retried. A running or done job is not touched.
pub async fn retry(pool: &PgPool, ids: &[String]) -> Result<Vec<String>> {
    sqlx::query_scalar("SELECT tenant_master.retry_jobs($1)").bind(ids).fetch_all(pool).await.context("failed to retry jobs")
}

/// The registered job types, by name.
pub async fn job_types(pool: &PgPool) -> Result<Vec<String>> {
    sqlx::query_scalar("SELECT job_type FROM tenant_master.job_types ORDER BY job_type")
        .fetch_all(pool)
        .await
        .context("failed to read the job types")
}

/// Refuses a job type that is not registered, naming the ones that are.
pub async fn check_job_type(pool: &PgPool, job_type: &str) -> Result<()> {
    let known = job_types(pool).await?;
    if known.iter().any(|k| k == job_type) {
        return Ok(());
    }
    Err(crate::error::unknown_value("job type", job_type, &known, None))
}

/// The failed and dead jobs matching `filter` (its status, if given, must be failed or
/// dead; its limit is ignored), and among `only` when given: what "retry all that match"
/// retries. The admin panel passes the ids it counted, so a job that failed after the
/// count is not swept in unseen.
pub async fn retryable(pool: &PgPool, filter: &JobFilter, only: Option<&[String]>) -> Result<Vec<String>> {
    matching(pool, filter, &["failed", "dead"], only).await
}

/// The jobs in one of `statuses` that match `filter` (its limit ignored) and are among
/// `only` when given, oldest first.
pub async fn matching(pool: &PgPool, filter: &JobFilter, statuses: &[&str], only: Option<&[String]>) -> Result<Vec<String>> {
    check(pool, filter).await?;
    sqlx::query_scalar(
        "SELECT id FROM tenant_master.jobs
         WHERE status = ANY($5) AND ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR type = $2)
           AND ($3::text IS NULL OR tenant = $3) AND ($4::text[] IS NULL OR id = ANY($4))
         ORDER BY id",
    )
    .bind(&filter.status)
    .bind(&filter.job_type)
    .bind(&filter.tenant)
    .bind(only)
    .bind(statuses)
    .fetch_all(pool)
    .await
    .context("failed to find the matching jobs")
}

/// Retries every failed and dead job matching `filter` (see [`retryable`]).
pub async fn retry_matching(pool: &PgPool, filter: &JobFilter, only: Option<&[String]>) -> Result<Vec<String>> {
    let ids = retryable(pool, filter, only).await?;
    retry(pool, &ids).await
}

/// Jobs due and waiting, per registered job type (0 when none waits).
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Depth {
    /// The job type.
    pub job_type: String,
    /// Pending jobs of that type that are due.
    pub due: i64,
    /// Seconds the oldest due job has waited, 0 when none waits.
    pub oldest_due_secs: f64,
}

/// The queue's depth by job type, from the queue table itself (what workers will fetch).
pub async fn depth(pool: &PgPool) -> Result<Vec<Depth>> {
    sqlx::query_as(
        "SELECT t.job_type, count(j.id) AS due, COALESCE(EXTRACT(EPOCH FROM now() - min(j.run_at))::float8, 0) AS oldest_due_secs
         FROM tenant_master.job_types t
         LEFT JOIN apalis.jobs j ON j.job_type = t.job_type AND j.status = 'Pending' AND j.run_at <= now()
         GROUP BY t.job_type ORDER BY t.job_type",
    )
    .fetch_all(pool)
    .await
    .context("failed to read the queue depth")
}

/// How many jobs gave up in the last `hours` hours.
pub async fn dead_within(pool: &PgPool, hours: i32) -> Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM tenant_master.jobs
         WHERE status = 'dead' AND COALESCE(done_at, lock_at, run_at) > now() - make_interval(hours => $1)",
    )
    .bind(hours)
    .fetch_one(pool)
    .await
    .context("failed to count the dead jobs")
}

/// Cancels a job that has not started (pending, failed or dead); a running or finished job
/// is refused. `None`: it was cancelled already (also by a cancel at the same moment).
pub async fn cancel(pool: &PgPool, id: &str, actor: &str) -> Result<Option<JobInfo>> {
    let job = get(pool, id).await?;
    if job.status == "cancelled" {
        return Ok(None);
    }
    if matches!(job.status.as_str(), "running" | "done") {
        return Err(Error::Conflict(format!(
            "job {id} is {}: only a job that is not running, done or cancelled can be cancelled",
            job.status
        )));
    }
    // Kept, marked: no worker fetches a Killed row, and admins still see what it was. Its
    // idempotency key is freed, so the same work can be asked for again (a delete asked
    // for anew must not find the cancelled job and wait on it forever).
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    let marked = sqlx::query(
        "UPDATE apalis.jobs SET status = 'Killed', done_at = now(), lock_by = NULL, idempotency_key = NULL,
                last_result = jsonb_build_object('Err', 'cancelled by ' || $2)
         WHERE id = $1 AND tenant_master.job_status(status, attempts, max_attempts, lock_at, done_at) IN ('pending', 'failed', 'dead')",
    )
    .bind(id)
    .bind(actor)
    .execute(&mut *tx)
    .await
    .context("failed to cancel the job")?;
    if marked.rows_affected() == 0 {
        drop(tx);
        return match cancellation(pool, id).await? {
            Some(_) => Ok(None),
            None => Err(Error::Conflict(format!("job {id} started meanwhile: it can no longer be cancelled"))),
        };
    }
    // Two cancels at once both pass the UPDATE (the second re-checks the row the first
    // marked, and a cancelled job reads as dead): the second finds the record taken and
    // leaves it all to the first.
    let recorded = sqlx::query("INSERT INTO tenant_master.cancelled_jobs (job_id, actor) VALUES ($1, $2) ON CONFLICT (job_id) DO NOTHING")
        .bind(id)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .context("failed to record the cancellation")?;
    if recorded.rows_affected() == 0 {
        return Ok(None);
    }
    tx.commit().await.context("failed to commit the cancellation")?;
    Ok(Some(job))
}

/// Who cancelled job `id` and when, if it was cancelled.
pub async fn cancellation(pool: &PgPool, id: &str) -> Result<Option<(String, DateTime<Utc>)>> {
    sqlx::query_as("SELECT actor, cancelled_at FROM tenant_master.cancelled_jobs WHERE job_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .context("failed to read the job's cancellation")
}

/// One job by id.
pub async fn get(pool: &PgPool, id: &str) -> Result<JobInfo> {
    sqlx::query_as(
        "SELECT id, type, status, attempts, max_attempts, run_at, last_error, tenant, payload, result FROM tenant_master.jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .context("failed to read the job")?
    .ok_or_else(|| Error::NotFound(format!("there is no job with id {id}")))
}

/// The longest error text stored with a job: a tenant's code can raise an error of any
/// size, and one over the database's limits must not stop its outcome from being stored.
const MAX_ERROR_BYTES: usize = 8 * 1024;

/// `text` cut to [`MAX_ERROR_BYTES`] (at a character boundary), saying so.
pub fn clip_error(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_ERROR_BYTES {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = MAX_ERROR_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}... ({} bytes cut)", &text[..end], text.len() - end))
}

/// Pushes a failed job's next attempt out by `delay` (the queue library itself would
/// re-fetch it at once), so the backoff survives restarts.
pub async fn defer(pool: &PgPool, id: &str, delay: Duration, attempt: usize, error: &str) -> Result<()> {
    // Seconds as a float: sqlx refuses a Duration with sub-microsecond digits as an INTERVAL.
    // The failed attempt is written in the same statement: no extra round trip.
    sqlx::query(
        "WITH job AS (UPDATE apalis.jobs SET run_at = now() + make_interval(secs => $2) WHERE id = $1 RETURNING id, lock_at, lock_by)
         INSERT INTO tenant_master.job_attempts (job_id, attempt, started_at, worker, outcome, error)
         SELECT id, $3, lock_at, lock_by, 'failed', $4 FROM job",
    )
    .bind(id)
    .bind(delay.as_secs_f64())
    .bind(attempt as i32)
    .bind(clip_error(error).as_ref())
    .execute(pool)
    .await
    .context("failed to schedule the job's next attempt")?;
    Ok(())
}

/// Records that attempt `attempt` of job `id` gave up for good with `error`.
pub async fn record_dead(pool: &PgPool, id: &str, attempt: usize, error: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO tenant_master.job_attempts (job_id, attempt, started_at, worker, outcome, error)
         SELECT id, $2, lock_at, lock_by, 'dead', $3 FROM apalis.jobs WHERE id = $1",
    )
    .bind(id)
    .bind(attempt as i32)
    .bind(clip_error(error).as_ref())
    .execute(pool)
    .await
    .context("failed to record the job's last attempt")?;
    Ok(())
}

/// One attempt of a job, as the admin panel lists them.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct AttemptInfo {
    /// Its number, from 1 (`jobs retry` starts again).
    pub attempt: i32,
    /// When it started, if known.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended; none while it runs.
    pub ended_at: Option<DateTime<Utc>>,
    /// The queue worker that ran it (`<type>-<host>-<pid>-...`).
    pub worker: Option<String>,
    /// failed | dead | running | done | cancelled
    pub outcome: String,
    /// Why it failed; none if it did not.
    pub error: Option<String>,
}

/// Every recorded attempt of job `id`, oldest first, and the one the queue's row holds
/// (running now, or the one that succeeded) when it is not among them.
pub async fn attempts(pool: &PgPool, id: &str) -> Result<Vec<AttemptInfo>> {
    sqlx::query_as(
        "SELECT attempt, started_at, ended_at, worker, outcome, error FROM (
             SELECT id AS seq, attempt, started_at, ended_at, worker, outcome, error
             FROM tenant_master.job_attempts WHERE job_id = $1
             UNION ALL
             SELECT 9223372036854775807, j.attempts + CASE WHEN j.status = 'running' THEN 1 ELSE 0 END, j.lock_at,
                    CASE WHEN j.status = 'running' THEN NULL ELSE j.done_at END, j.lock_by, j.status,
                    CASE WHEN j.status = 'done' THEN NULL ELSE j.last_error END
             FROM tenant_master.jobs j
             WHERE j.id = $1 AND j.lock_at IS NOT NULL AND j.status IN ('running', 'done')
               AND NOT EXISTS (SELECT 1 FROM tenant_master.job_attempts a WHERE a.job_id = j.id AND a.started_at = j.lock_at)
         ) a ORDER BY seq",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .context("failed to read the job's attempts")
}

/// Runs a job again after `delay` without spending an attempt (it waited for the tenant
/// or a host slot, no fault of its own): the queue counts the attempt, so the budget grows
/// by one.
pub async fn postpone(pool: &PgPool, id: &str, delay: Duration) -> Result<()> {
    sqlx::query("UPDATE apalis.jobs SET run_at = now() + make_interval(secs => $2), max_attempts = max_attempts + 1 WHERE id = $1")
        .bind(id)
        .bind(delay.as_secs_f64())
        .execute(pool)
        .await
        .context("failed to postpone the job")?;
    Ok(())
}

/// Puts the jobs of worker processes whose heartbeat is older than `orphan_after` back in
/// the queue (one attempt counted: the process may have died inside the job); returns how
/// many. A live process beats on a task of its own, so only a dead one's jobs are taken;
/// the caller's own workers (`own_workers`) are never among them.
/// (A job panicked under the old queue path, Running with `done_at` set, is dead and
/// stays so.)
pub async fn rescue_orphans(pool: &PgPool, orphan_after: Duration, own_workers: &[String]) -> Result<u64> {
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    // Never queued behind a lock (an admin's DDL, a long report): the next heartbeat tries again.
    sqlx::query("SET LOCAL lock_timeout = '2s'").execute(&mut *tx).await.context("failed to set a lock timeout")?;
    let rescued = sqlx::query(
        "WITH stale AS (
             SELECT j.id FROM apalis.jobs j
             WHERE j.status IN ('Queued', 'Running')
               AND NOT (j.done_at IS NOT NULL AND j.lock_at IS NOT NULL AND j.done_at >= j.lock_at)
               AND (j.lock_by IS NULL OR j.lock_by <> ALL($2))
               AND NOT EXISTS (SELECT 1 FROM apalis.workers w WHERE w.id = j.lock_by AND w.last_seen >= now() - make_interval(secs => $1))
             FOR UPDATE OF j SKIP LOCKED
         )
         UPDATE apalis.jobs j SET status = 'Pending', done_at = NULL, lock_by = NULL, lock_at = NULL, attempts = j.attempts + 1,
                last_result = '{\"Err\": \"Re-enqueued due to worker heartbeat timeout.\"}'
         FROM stale WHERE j.id = stale.id",
    )
    .bind(orphan_after.as_secs_f64())
    .bind(own_workers)
    .execute(&mut *tx)
    .await
    .context("failed to take over the jobs of stopped workers")?;
    tx.commit().await.context("failed to commit the rescue")?;
    Ok(rescued.rows_affected())
}

/// The retry limit stored with a job.
pub async fn max_attempts(pool: &PgPool, id: &str) -> Result<usize> {
    let max: i32 = sqlx::query_scalar("SELECT max_attempts FROM apalis.jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .context("failed to read the job's retry limit")?;
    Ok(max.max(1) as usize)
}

/// Polls `ids` until all are done or dead, calling `progress` after each look.
pub async fn wait_for(pool: &PgPool, ids: &[String], mut progress: impl FnMut(&[JobInfo])) -> Result<Vec<JobInfo>> {
    loop {
        let jobs: Vec<JobInfo> = sqlx::query_as(
            "SELECT id, type, status, attempts, max_attempts, run_at, last_error, tenant, payload, result FROM tenant_master.jobs
             WHERE id = ANY($1) ORDER BY array_position($1, id)",
        )
        .bind(ids)
        .fetch_all(pool)
        .await
        .context("failed to read the jobs")?;
        if jobs.len() < ids.len() {
            let missing = ids.iter().find(|id| !jobs.iter().any(|j| &j.id == *id)).expect("one id is missing");
            return Err(Error::NotFound(format!("job {missing} disappeared while waiting (cancelled or pruned)")));
        }
        progress(&jobs);
        if jobs.iter().all(JobInfo::is_finished) {
            return Ok(jobs);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Retries the given ids; every one must exist and be failed, dead or pending.
pub async fn retry_given(pool: &PgPool, ids: &[String]) -> Result<Vec<String>> {
    for id in ids {
        let job = get(pool, id).await?;
        if let Some((actor, at)) = cancellation(pool, id).await? {
            return Err(Error::Conflict(format!(
                "job {id} ({} of '{}') was cancelled by {actor} at {}: it is not run again; enqueue the work anew if it is still wanted; nothing was retried",
                job.job_type,
                job.tenant.as_deref().unwrap_or("-"),
                at.format("%Y-%m-%d %H:%M:%S UTC")
            )));
        }
        if matches!(job.status.as_str(), "running" | "done") {
            return Err(Error::Conflict(format!(
                "job {id} is {}: only failed, dead or pending jobs can be retried; nothing was retried",
                job.status
            )));
        }
    }
    retry(pool, ids).await
}
