//! `tenant-worker`: an apalis Monitor with one worker per job type, all fed by one fetch
//! and acknowledgement path of our own ([`crate::queue::feed`]).
//!
//! Every worker name is unique per process (`<type>-<host>-<pid>-<run>-<index>-<restart>`),
//! one LISTEN connection per process wakes the fetch at once and an interval poll catches
//! delayed and retried jobs (see `wakeups`), and one heartbeat task of our own keeps the
//! process's workers alive and takes over the jobs of processes whose heartbeat stopped.
//!
//! Connections: the queue machinery holds [`QUEUE_CONNECTIONS`]; running jobs borrow from a
//! pool of at most [`job_connections`] that empties when idle.

use std::{future::Future, sync::Arc, time::Duration};

use apalis::prelude::*;

use crate::{
    config::Config,
    context::App,
    db,
    error::{Context as _, Error, Result},
    queue::{
        backend::FeedBackend,
        feed::Feed,
        runner::{execute, Runtime},
        Job,
    },
    wakeups::Wakeups,
};

/// The job types this worker runs: every registered one.
pub fn job_types() -> Vec<&'static str> {
    crate::jobs::REGISTRY.iter().map(|t| t.name).collect()
}

/// Connections the queue machinery holds (the wake-up listener and two for fetching,
/// acknowledging and heartbeats), whatever the number of job types and workers.
pub const QUEUE_CONNECTIONS: u32 = 3;

/// Connections running jobs may borrow at most (on top of [`QUEUE_CONNECTIONS`]); idle
/// ones are closed after [`JOB_CONNECTION_IDLE`]. A job's tenant lock and host slot hold
/// one more each, outside this pool.
pub fn job_connections(config: &Config) -> u32 {
    (2 * config.worker.concurrency * config.worker.workers_per_type + 2) as u32
}

/// The most connections one worker process opens to the control-plane database: the
/// queue machinery, the job pool, and for each running job its tenant lock and heavy-job
/// slot (each a session of its own, so a crash releases them); a move also holds a slot of
/// its target host.
pub fn peak_control_plane_connections(config: &Config) -> u32 {
    QUEUE_CONNECTIONS + job_connections(config) + 2 * running_jobs(config) + running_moves(config)
}

/// The most sessions one worker process opens on tenant hosts: per running job an admin
/// session, an operator session and a `pg_dump` / `pg_restore`; a move holds three more
/// (admin sessions of the source and target databases while it copies).
pub fn peak_tenant_host_connections(config: &Config) -> u32 {
    3 * running_jobs(config) + 3 * running_moves(config)
}

/// Moves run at once per process: one worker type's concurrency, within the tenant jobs.
fn running_moves(config: &Config) -> u32 {
    (config.worker.concurrency * config.worker.workers_per_type).min(config.worker.tenant_jobs_per_process) as u32
}

/// Tenant jobs run at once per process, over all job types (`tenant_jobs_per_process`);
/// jobs of no tenant (Noop, PruneJobs) hold no lock session.
fn running_jobs(config: &Config) -> u32 {
    config.worker.tenant_jobs_per_process as u32
}

/// How long a job connection stays open unused.
pub const JOB_CONNECTION_IDLE: Duration = Duration::from_secs(30);

/// Runs the pool until `shutdown` resolves, then drains: no new jobs, running ones finish
/// (up to `shutdown_timeout_secs`). When the database goes away (a restart, a failover,
/// a lost network), the pool stops, waits for the database with backoff and starts again
/// in this process; only a failure that waiting cannot fix ends it with an error.
pub async fn run(config: Config, shutdown: impl Future<Output = std::io::Result<()>> + Send + 'static) -> Result<()> {
    let (queue_pool, job_pool) = connect(&config).await?;
    let app = Arc::new(Runtime::new(App::new(config, job_pool)));
    if app.app.config.products.auto_migrate {
        auto_migrate(&app.app).await;
    }
    let _metrics_server = serve_metrics(&app).await?;
    let wakeups = Wakeups::default();
    let _listener = AbortOnDrop(tokio::spawn(wakeups.clone().listen(queue_pool.clone())));
    let live = LiveWorkers::default();
    let w = &app.app.config.worker;
    let _heartbeat = AbortOnDrop(tokio::spawn(live.clone().beat(queue_pool.clone(), w.heartbeat_secs, w.orphan_timeout())));

    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let _signal = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = shutdown.await {
            tracing::error!(error = %e, "could not wait for the shutdown signal; stopping");
        }
        let _ = stop_tx.send(true);
    }));
    let mut delay = OUTAGE_FIRST_WAIT;
    loop {
        let started = std::time::Instant::now();
        let pool = Pools { app: app.clone(), queue: queue_pool.clone(), wakeups: wakeups.clone(), live: live.clone(), run: run_number() };
        pool.run_until_stopped_or_lost(stop.clone()).await;
        if *stop.borrow() {
            break;
        }
        // A pool that ran a while met a new outage (a restart, a failover): wait briefly
        // first. Only one that fails at once again and again (a crash loop) backs off.
        if started.elapsed() > CRASH_LOOP {
            delay = OUTAGE_FIRST_WAIT;
        }
        if !wait_for_database(&queue_pool, &mut stop, &mut delay).await {
            break;
        }
        tracing::info!("the database is back: starting the worker pool again");
    }
    tracing::info!("worker pool stopped");
    Ok(())
}

/// The queue machinery's pool and the running jobs' pool, once the control plane answers
/// and has this build's migrations.
async fn connect(config: &Config) -> Result<(sqlx::PgPool, sqlx::PgPool)> {
    let w = &config.worker;
    let options = db::options(&config.database_url)?.application_name("tenant-worker");
    // One direct connection first: a refused one is said at once, in one sentence, instead
    // of a pool that times out 5 s later.
    db::probe(&config.database_url, &options).await?;
    let connect_hint = "failed to connect to the control-plane database (is PostgreSQL running? is DATABASE_URL right?)";
    // A short wait: after a server restart the queue machinery gives up on a connection
    // quickly and the pool starts again (a long wait stalled every worker for 30 s).
    let queue_pool = db::pool_options(QUEUE_CONNECTIONS)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.clone())
        .await
        .context(connect_hint)?;
    // Running jobs wait for a connection rather than fail when all are busy.
    // Opened lazily: an idle worker holds none of these.
    let job_pool = db::pool_options(job_connections(config))
        .min_connections(0)
        .idle_timeout(JOB_CONNECTION_IDLE)
        .acquire_timeout(Duration::from_secs(120))
        .connect_lazy_with(options);
    crate::migrate::ensure_current(&queue_pool).await?;
    tracing::info!(
        job_types = ?job_types(), concurrency = w.concurrency, orphan_timeout_s = w.orphan_timeout().as_secs(),
        queue_connections = QUEUE_CONNECTIONS, job_connections_max = job_connections(config),
        "worker pool starting"
    );
    Ok((queue_pool, job_pool))
}

/// `[products] auto_migrate`: enqueues the rollout of pending product migrations to every
/// live tenant, as `tenantctl tenant migrate --all` would. A failure is logged, not fatal:
/// the worker has other work to do.
async fn auto_migrate(app: &App) {
    let result = async {
        let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
        let plans = crate::ops::rollout::plan(&mut cp, &app.config, &Default::default()).await?;
        crate::jobs::migrate_tenant::enqueue(&app.pool, &plans, "worker (auto_migrate)").await
    }
    .await;
    match result {
        Ok(enqueued) => tracing::info!(jobs = enqueued.jobs.len(), up_to_date = enqueued.up_to_date, "auto_migrate: rollout enqueued"),
        Err(e) => tracing::error!(error = %e, "auto_migrate: could not enqueue the rollout; run `tenantctl tenant migrate --all`"),
    }
}

const OUTAGE_FIRST_WAIT: Duration = Duration::from_millis(500);

/// A pool that stopped sooner than this after starting counts as a crash loop.
const CRASH_LOOP: Duration = Duration::from_secs(1);

/// Waits, with growing pauses, until the database answers (true) or a shutdown is
/// requested (false). `/healthz` says unhealthy meanwhile: it asks the database too.
async fn wait_for_database(pool: &sqlx::PgPool, stop: &mut tokio::sync::watch::Receiver<bool>, delay: &mut Duration) -> bool {
    loop {
        tracing::warn!(retry_in_ms = delay.as_millis() as u64, "waiting for the control-plane database");
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return false,
            _ = tokio::time::sleep(*delay) => {}
        }
        *delay = (*delay * 2).min(Duration::from_secs(30));
        let ping = tokio::time::timeout(Duration::from_secs(5), sqlx::query("SELECT 1").execute(pool)).await;
        match ping {
            Ok(Ok(_)) => return true,
            Ok(Err(e)) => tracing::warn!(error = %e, "the control-plane database does not answer yet"),
            Err(_) => tracing::warn!("the control-plane database does not answer yet (timed out)"),
        }
    }
}

/// What one run of the pool (one apalis Monitor) is made of.
struct Pools {
    app: Arc<Runtime>,
    queue: sqlx::PgPool,
    wakeups: Wakeups,
    live: LiveWorkers,
    run: String,
}

impl Pools {
    /// A Monitor with one worker per job type, all fed by `feed`; `lost` is notified when
    /// one of them fails, so the whole pool starts again.
    fn monitor(&self, feed: &Feed, lost: Arc<tokio::sync::Notify>) -> Monitor {
        let mut registered = Vec::new();
        let mut monitor = Monitor::new();
        macro_rules! registrations {
            ($($job:ty),*) => { [$(Pools::register::<$job> as fn(&Pools, &Feed, Monitor) -> (Monitor, &'static str)),*] };
        }
        for register in crate::jobs::every_job_type!(registrations) {
            let (next, name) = register(self, feed, monitor);
            registered.push(name);
            monitor = next;
        }
        // Registrations and REGISTRY come from one list; a type registered twice would
        // start two workers on one slot.
        registered.sort_unstable();
        debug_assert!(registered.windows(2).all(|w| w[0] != w[1]), "a job type is listed twice: {registered:?}");
        monitor
            .on_event(|worker, event| {
                if let Event::Error(e) = event {
                    tracing::error!(worker = %worker.name(), error = %e, "worker error");
                }
            })
            .should_restart(move |worker, error| {
                tracing::error!(worker = %worker.name(), error = %error, "worker stopped");
                lost.notify_one();
                false
            })
            .shutdown_timeout(Duration::from_secs(self.app.app.config.worker.shutdown_timeout_secs))
    }

    /// Runs this pool until `stop` says so or one of its workers stops.
    async fn run_until_stopped_or_lost(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let w = &self.app.app.config.worker;
        let slots: Vec<(&'static str, usize)> = job_types().into_iter().map(|t| (t, slots_per_type(&self.app.app.config))).collect();
        let (feed, _feed_tasks) =
            Feed::start(self.queue.clone(), &slots, self.wakeups.subscribe(), Duration::from_millis(w.poll_interval_ms));
        let lost = Arc::new(tokio::sync::Notify::new());
        let monitor = self.monitor(&feed, lost.clone());
        let stopping = feed.clone();
        let signal = async move {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => {}
                _ = lost.notified() => tracing::error!("a worker stopped: stopping the pool to start it again"),
            }
            // No job is claimed during the drain, and what was fetched goes back at once.
            stopping.stop(Duration::ZERO).await;
            Ok(())
        };
        if let Err(e) = monitor.run_with_signal(signal).await {
            tracing::error!(error = %e, "the worker pool stopped with an error");
        }
        // The outcomes of jobs that finished during the drain, stored before the feed's
        // tasks go (a job the time limit cut off runs again after the orphan rescue).
        feed.stop(Duration::from_secs(5)).await;
    }

    fn register<J: Job>(&self, feed: &Feed, monitor: Monitor) -> (Monitor, &'static str) {
        let (app, feed, live) = (self.app.clone(), feed.clone(), self.live.clone());
        let slots = slots_per_type(&app.app.config);
        let host = crate::system::hostname().unwrap_or_else(|| "host".into());
        let prefix = format!("{}-{host}-{}-{}", J::TYPE, std::process::id(), self.run);
        let monitor = monitor.register(move |restarts| {
            let name = format!("{prefix}-0-{restarts}");
            live.set(J::TYPE.to_owned(), name.clone());
            WorkerBuilder::new(name)
                .backend(FeedBackend::new(&feed, J::TYPE))
                .data(app.clone())
                .catch_panic()
                .concurrency(slots)
                // Handlers on the runtime's threads, not all inside the Monitor's one future.
                .parallelize(tokio::spawn)
                // Plain JSON: the handler decodes it, so a bad payload fails its job alone.
                .build(execute::<J>)
        });
        (monitor, J::TYPE)
    }
}

/// Jobs of one type a process runs at once: `concurrency` x `workers_per_type` (one
/// worker per type now serves them all; the fetch is shared).
fn slots_per_type(config: &Config) -> usize {
    (config.worker.concurrency * config.worker.workers_per_type).max(1)
}

/// The names of this process's live workers, kept alive by a heartbeat of our own that
/// also takes over the jobs of processes whose heartbeat stopped.
///
/// The heartbeat runs on its own task whatever the workers do, so a worker's jobs are only
/// ever taken over when its process is gone (apalis-postgres's skipped heartbeats while a
/// worker's buffer was full; see the apalis notes).
#[derive(Clone, Default)]
struct LiveWorkers(Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>);

impl LiveWorkers {
    /// Records that the worker of `job_type` now runs under `name`.
    fn set(&self, job_type: String, name: String) {
        self.0.lock().expect("worker names lock").insert(job_type, name);
    }

    /// Marks every live worker as seen, every heartbeat, until aborted; and rescues the jobs
    /// of dead processes once this one has beaten on time for a whole orphan timeout. After
    /// an outage every process's rows are stale at once: each waits until its peers have
    /// had the same window to beat again, so none takes the live jobs of another.
    async fn beat(self, pool: sqlx::PgPool, heartbeat_secs: u64, orphan_after: Duration) {
        let every = Duration::from_secs(heartbeat_secs.max(1));
        let mut beating_since: Option<std::time::Instant> = None;
        loop {
            let names: Vec<String> = self.0.lock().expect("worker names lock").values().cloned().collect();
            let beat = tokio::time::timeout(
                every,
                sqlx::query("UPDATE apalis.workers SET last_seen = now() WHERE id = ANY($1)").bind(&names).execute(&pool),
            )
            .await;
            match beat {
                Ok(Ok(_)) => {
                    let since = *beating_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= orphan_after {
                        match crate::queue::rescue_orphans(&pool, orphan_after, &names).await {
                            Ok(0) => {}
                            Ok(n) => tracing::warn!(jobs = n, "took over the jobs of a worker process whose heartbeat stopped"),
                            Err(e) => tracing::warn!(error = %e, "could not look for jobs of stopped workers; will try again"),
                        }
                    }
                }
                Ok(Err(e)) => {
                    beating_since = None;
                    tracing::warn!(error = %e, "heartbeat failed; will try again");
                }
                Err(_) => {
                    beating_since = None;
                    tracing::warn!("heartbeat took longer than its interval; will try again");
                }
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// The `<run>` part of this process's worker names: a random start nonce, then a count of
/// pools started in this process. The nonce keeps a restarted process that got the same
/// host name and pid (PID 1 in a container that Docker or Kubernetes restarts) from
/// beating the dead process's rows alive and hiding its jobs from the orphan rescue.
fn run_number() -> String {
    static NONCE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let nonce = NONCE.get_or_init(rand::random::<u32>);
    format!("{nonce:08x}{}", RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// Starts `/healthz` and `/metrics` unless `metrics_addr` is empty; stops when dropped.
async fn serve_metrics(app: &Arc<Runtime>) -> Result<Option<AbortOnDrop>> {
    let addr = app.app.config.worker.metrics_addr.trim();
    if addr.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::fatal_because(
            format!(
                "cannot serve /healthz and /metrics on {addr}: {e}; set metrics_addr (env TENANT_MASTER_METRICS_ADDR) to a free address, or to an empty value to turn it off"
            ),
            e,
        )
    })?;
    tracing::info!(addr = %addr, "serving /healthz and /metrics");
    Ok(Some(AbortOnDrop(tokio::spawn(crate::queue::metrics::serve(listener, app.metrics.clone(), app.app.pool.clone())))))
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
