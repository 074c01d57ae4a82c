//! What a dashboard shows at a glance: the live workers, the last day's throughput and
//! failures, and the tenants per product and plan. Read-only queries over the control plane.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::{
    config::Config,
    error::{Context as _, Result},
};

/// Job types that are not the product's work (the benchmark's `Noop`): dashboards leave
/// them out.
pub const INTERNAL_JOB_TYPES: &[&str] = &["Noop"];

/// One live worker process: its queue workers' rows grouped by host and pid.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerProcess {
    /// The machine it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When its first queue worker started, if known.
    pub since: Option<DateTime<Utc>>,
    /// Its latest heartbeat.
    pub last_seen: DateTime<Utc>,
    /// Job types it runs.
    pub job_types: usize,
    /// Jobs it runs right now.
    pub running: i64,
}

/// The worker processes whose heartbeat is fresh (within `heartbeat_secs` x
/// `missed_heartbeats`, the time after which their jobs would be taken over).
pub async fn live_workers(pool: &PgPool, config: &Config) -> Result<Vec<WorkerProcess>> {
    let fresh = (config.worker.heartbeat_secs * config.worker.missed_heartbeats as u64).max(1) as f64;
    // (queue worker name, started, last seen, jobs running)
    type Row = (String, Option<DateTime<Utc>>, DateTime<Utc>, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT w.id, w.started_at, w.last_seen,
                (SELECT count(*) FROM tenant_master.jobs j WHERE j.lock_by = w.id AND j.status = 'running')
         FROM apalis.workers w WHERE w.last_seen > now() - make_interval(secs => $1) ORDER BY w.id",
    )
    .bind(fresh)
    .fetch_all(pool)
    .await
    .context("failed to read the live workers")?;
    let mut processes: Vec<WorkerProcess> = Vec::new();
    for (name, started, seen, running) in rows {
        let Some((host, pid)) = process_of(&name) else { continue };
        match processes.iter_mut().find(|p| p.host == host && p.pid == pid) {
            Some(p) => {
                p.since = match (p.since, started) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                p.last_seen = p.last_seen.max(seen);
                p.job_types += 1;
                p.running += running;
            }
            None => processes.push(WorkerProcess { host, pid, since: started, last_seen: seen, job_types: 1, running }),
        }
    }
    Ok(processes)
}

/// The host and pid in a queue worker's name, `<JobType>-<host>-<pid>-<run>-<index>-<restarts>`
/// (see `worker.rs`); a host name may hold dashes, so it is read from both ends.
fn process_of(name: &str) -> Option<(String, u32)> {
    let (_, rest) = name.split_once('-')?;
    let parts: Vec<&str> = rest.rsplitn(5, '-').collect();
    let [_restarts, _index, _run, pid, host] = parts.as_slice() else { return None };
    Some(((*host).to_owned(), pid.parse().ok()?))
}

/// One hour of the last day: jobs that finished well, and attempts that failed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Hour {
    /// The hour's start.
    pub hour: DateTime<Utc>,
    /// Jobs that finished well in that hour.
    pub done: i64,
    /// Attempts that failed in that hour.
    pub failed: i64,
}

/// The last 24 hours, oldest first, one entry per hour (zeros included); internal job
/// types left out.
pub async fn throughput(pool: &PgPool) -> Result<Vec<Hour>> {
    // One pass over each table, grouped by hour, instead of one count per hour (24 scans
    // of a large queue made the dashboard take seconds).
    sqlx::query_as(
        "WITH hours AS (SELECT generate_series(date_trunc('hour', now()) - interval '23 hours', date_trunc('hour', now()), interval '1 hour') AS hour),
              done AS (SELECT date_trunc('hour', done_at) AS hour, count(*) AS n FROM apalis.jobs
                       WHERE status = 'Done' AND done_at >= date_trunc('hour', now()) - interval '23 hours' AND job_type <> ALL($1)
                       GROUP BY 1),
              failed AS (SELECT date_trunc('hour', a.ended_at) AS hour, count(*) AS n FROM tenant_master.job_attempts a
                         JOIN apalis.jobs j ON j.id = a.job_id
                         WHERE a.ended_at >= date_trunc('hour', now()) - interval '23 hours' AND j.job_type <> ALL($1)
                         GROUP BY 1)
         SELECT h.hour, coalesce(d.n, 0) AS done, coalesce(f.n, 0) AS failed
         FROM hours h LEFT JOIN done d USING (hour) LEFT JOIN failed f USING (hour) ORDER BY h.hour",
    )
    .bind(INTERNAL_JOB_TYPES)
    .fetch_all(pool)
    .await
    .context("failed to read the last day's throughput")
}

/// Tenants (not deleted) per product and plan.
pub async fn tenants_by_product_and_plan(pool: &PgPool) -> Result<Vec<(String, String, i64)>> {
    sqlx::query_as(
        "SELECT product, plan, count(*) FROM tenant_master.tenants WHERE status <> 'deleted' GROUP BY product, plan ORDER BY product, plan",
    )
    .fetch_all(pool)
    .await
    .context("failed to count the tenants per product and plan")
}

#[cfg(test)]
mod tests {
    use super::process_of;

    #[test]
    fn worker_names_give_their_process() {
        assert_eq!(process_of("BackupTenant-web-1.example-4242-0-3-0"), Some(("web-1.example".into(), 4242)));
        assert_eq!(process_of("Noop-host-7-1-0-2"), Some(("host".into(), 7)));
        assert_eq!(process_of("apalis-worker"), None);
    }
}
