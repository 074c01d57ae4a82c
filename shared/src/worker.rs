//! `tenant-worker`: an apalis Monitor with one worker per job type.
//!
//! Per the measured traps of apalis-postgres 1.0 (shared/notes/apalis-1.0.md): every queue
//! name is explicit, every worker name is unique per process (`<type>-<host>-<pid>-<restart>`),
//! LISTEN/NOTIFY wakes workers at once and an interval poll catches delayed and retried jobs,
//! and all workers share one heartbeat setting so none steals another's live jobs.

use std::{future::Future, sync::Arc, time::Duration};

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;

use crate::{
    config::Config,
    db,
    error::{Context as _, Error, Result},
    jobs::{
        access::{PauseTenant, ResumeTenant},
        backup_tenant::BackupTenant,
        cleanup::Cleanup,
        delete_tenant::DeleteTenant,
        execute,
        noop::Noop,
        provision_tenant::ProvisionTenant,
        prune_jobs::PruneJobs,
        restore_tenant::RestoreTenant,
        send_welcome_mail::SendWelcomeMail,
        vacuum::Vacuum,
        App, Job,
    },
};

/// The job types this worker runs.
pub const JOB_TYPES: &[&str] = &[
    ProvisionTenant::TYPE,
    BackupTenant::TYPE,
    RestoreTenant::TYPE,
    Vacuum::TYPE,
    Cleanup::TYPE,
    PruneJobs::TYPE,
    SendWelcomeMail::TYPE,
    PauseTenant::TYPE,
    ResumeTenant::TYPE,
    DeleteTenant::TYPE,
    Noop::TYPE,
];

/// Runs the pool until `shutdown` resolves, then drains: no new jobs, running ones finish
/// (up to `shutdown_timeout_secs`).
pub async fn run(config: Config, shutdown: impl Future<Output = std::io::Result<()>> + Send + 'static) -> Result<()> {
    let w = &config.worker;
    // Each job type's worker holds one LISTEN connection; running jobs share the rest
    // (a job waits for a connection rather than failing when all are busy).
    let pool_size = (JOB_TYPES.len() * w.workers_per_type + 2 * w.concurrency * w.workers_per_type + 4) as u32;
    let pool = db::pool_options(pool_size)
        .acquire_timeout(Duration::from_secs(120))
        .connect_with(db::options(&config.database_url)?)
        .await
        .context("failed to connect to the control-plane database (is PostgreSQL running? is DATABASE_URL right?)")?;
    ensure_migrated(&pool).await?;
    let shutdown_timeout = Duration::from_secs(w.shutdown_timeout_secs);
    tracing::info!(
        job_types = ?JOB_TYPES, concurrency = w.concurrency, orphan_timeout_s = w.orphan_timeout().as_secs(),
        "worker pool starting"
    );
    if w.batch_size > w.concurrency {
        tracing::warn!(
            batch_size = w.batch_size,
            concurrency = w.concurrency,
            "batch_size is larger than concurrency: fetching {} at a time, so no fetched job waits unstarted",
            w.concurrency
        );
    }
    let app = Arc::new(App::new(config, pool));
    let _metrics_server = serve_metrics(&app).await?;
    let run = run_number();
    let live = LiveWorkers::default();
    let _heartbeat = AbortOnDrop(tokio::spawn(live.clone().beat(app.clone())));
    let monitor = register::<ProvisionTenant>(Monitor::new(), &app, run, &live);
    let monitor = register::<BackupTenant>(monitor, &app, run, &live);
    let monitor = register::<RestoreTenant>(monitor, &app, run, &live);
    let monitor = register::<Vacuum>(monitor, &app, run, &live);
    let monitor = register::<Cleanup>(monitor, &app, run, &live);
    let monitor = register::<PruneJobs>(monitor, &app, run, &live);
    let monitor = register::<SendWelcomeMail>(monitor, &app, run, &live);
    let monitor = register::<PauseTenant>(monitor, &app, run, &live);
    let monitor = register::<ResumeTenant>(monitor, &app, run, &live);
    let monitor = register::<DeleteTenant>(monitor, &app, run, &live);
    let monitor = register::<Noop>(monitor, &app, run, &live);
    monitor
        .on_event(|worker, event| {
            if let Event::Error(e) = event {
                tracing::error!(worker = %worker.name(), error = %e, "worker error");
            }
        })
        .shutdown_timeout(shutdown_timeout)
        .run_with_signal(shutdown)
        .await
        .map_err(|e| Error::Fatal(format!("worker pool stopped with an error: {e}")))?;
    tracing::info!("worker pool stopped");
    Ok(())
}

/// The names of this process's live workers, kept alive by a heartbeat of our own.
///
/// apalis-postgres 1.0 skips a worker's heartbeat while it holds fetched jobs it has no
/// free slot for; past the orphan timeout another worker's sweep then re-runs every job of
/// the silent one, running ones included (measured; see the apalis notes). Our heartbeat
/// runs on its own task whatever the workers do, so a worker's jobs are only ever taken
/// over when its process is gone. (Fetching at most `concurrency` jobs at a time, as
/// `register` does, also means no fetched job waits unstarted, so a drain adds no attempt.)
#[derive(Clone, Default)]
struct LiveWorkers(Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>);

impl LiveWorkers {
    /// Records that worker `slot` (type and index) now runs under `name`.
    fn set(&self, slot: String, name: String) {
        self.0.lock().expect("worker names lock").insert(slot, name);
    }

    /// Marks every live worker as seen, every heartbeat, until aborted.
    async fn beat(self, app: Arc<App>) {
        let every = Duration::from_secs(app.config.worker.heartbeat_secs.max(1));
        loop {
            tokio::time::sleep(every).await;
            let names: Vec<String> = self.0.lock().expect("worker names lock").values().cloned().collect();
            let beat = sqlx::query("UPDATE apalis.workers SET last_seen = now() WHERE id = ANY($1)").bind(&names).execute(&app.pool).await;
            if let Err(e) = beat {
                tracing::warn!(error = %e, "heartbeat failed; will try again");
            }
        }
    }
}

fn register<J: Job>(monitor: Monitor, app: &Arc<App>, run: usize, live: &LiveWorkers) -> Monitor {
    let w = &app.config.worker;
    let queue_config = apalis_postgres::Config::default()
        .queue(J::TYPE)
        .batch_size(w.batch_size.min(w.concurrency))
        .heartbeat_interval(Duration::from_secs(w.heartbeat_secs))
        .missed_heartbeats(w.missed_heartbeats)
        // No extra UPDATE to 'Running' per job: a fetched job stays 'Queued' (our status
        // view calls it running; the orphan sweep covers Queued rows too).
        .lock_tasks(false);
    let backend = PostgresStorage::<J>::new(&app.pool)
        .with_config(queue_config)
        .with_pubsub()
        .poll_with_interval(Duration::from_millis(w.poll_interval_ms));
    let (app, concurrency) = (app.clone(), w.concurrency);
    let host = crate::system::hostname().unwrap_or_else(|| "host".into());
    let prefix = format!("{}-{host}-{}-{run}", J::TYPE, std::process::id());
    // Throughput grows with workers per queue (each fetches its own batches), not with
    // concurrency inside one worker (measured in the apalis notes).
    let live = live.clone();
    monitor.register_n(app.config.worker.workers_per_type, move |index, restarts| {
        let name = format!("{prefix}-{index}-{restarts}");
        live.set(format!("{}-{index}", J::TYPE), name.clone());
        WorkerBuilder::new(name)
            .backend(backend.clone())
            .data(app.clone())
            .catch_panic()
            .concurrency(concurrency)
            // Handlers on the runtime's threads, not all inside the Monitor's one future.
            .parallelize(tokio::spawn)
            .build(execute::<J>)
    })
}

/// Counts pools started in this process, so worker names stay unique when one process
/// runs the pool more than once (apalis refuses a name whose previous owner's session is
/// still open).
fn run_number() -> usize {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Starts `/healthz` and `/metrics` unless `metrics_addr` is empty; stops when dropped.
async fn serve_metrics(app: &Arc<App>) -> Result<Option<AbortOnDrop>> {
    let addr = app.config.worker.metrics_addr.trim();
    if addr.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::Fatal(format!(
            "cannot serve /healthz and /metrics on {addr}: {e}; set metrics_addr (env TENANT_MASTER_METRICS_ADDR) to a free address, or to an empty value to turn it off"
        ))
    })?;
    tracing::info!(addr = %addr, "serving /healthz and /metrics");
    Ok(Some(AbortOnDrop(tokio::spawn(crate::metrics::serve(listener, app.metrics.clone(), app.pool.clone())))))
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) async fn ensure_migrated(pool: &sqlx::PgPool) -> Result<()> {
    let ready: bool = sqlx::query_scalar("SELECT to_regclass('tenant_master.jobs') IS NOT NULL AND to_regclass('apalis.jobs') IS NOT NULL")
        .fetch_one(pool)
        .await
        .context("failed to check the control-plane schema")?;
    if ready {
        Ok(())
    } else {
        Err(Error::Fatal("the control-plane database is not migrated: run `tenantctl migrate` first".into()))
    }
}

/// Resolves on SIGTERM or Ctrl-C: the shutdown signal of the binaries. The handlers are
/// installed at once (not when first polled), so a SIGTERM during start-up is not fatal.
pub fn shutdown_signal() -> impl Future<Output = std::io::Result<()>> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = signal(SignalKind::terminate()).and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
    async move {
        let (mut term, mut int) = handlers?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutdown requested: finishing running work");
        Ok(())
    }
}
