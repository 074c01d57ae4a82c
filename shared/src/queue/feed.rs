//! The worker process's own fetch and acknowledgement path (replacing apalis-postgres's
//! per-worker one): one fetch statement serves every job type the process runs, each
//! type's share bounded by its free slots (graphile-worker's "local queue": a fetched job
//! never waits unstarted behind a busy slot), and completions are written in batches, one
//! statement per batch, before their slot counts as free again.
//!
//! The table stays `apalis.jobs`, so the SQL API (`tenant_master.enqueue`, the
//! `tenant_master.jobs` view), idempotency keys, stored backoff and `dead` are unchanged,
//! and a control plane keeps its queued and failed jobs across the upgrade.
//!
//! Connections: the fetch and the acknowledgements take one connection each from the
//! queue pool while they run; nothing is held between them.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::Waker,
    time::Duration,
};

use apalis::prelude::{Task, TaskBuilder, TaskId};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// Acknowledgements written in one statement at most.
const ACK_BATCH: usize = 1_000;

/// The longest pause between two tries of a fetch or an acknowledgement that failed (the
/// database restarting, a lost network); the first pause is 100 ms.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// Claims up to `n` due jobs of each job type for its worker, in one statement: a lateral
/// `SKIP LOCKED` scan per type on the fetch index, then one UPDATE of them all.
const FETCH: &str = "
    WITH wanted AS (SELECT * FROM unnest($1::text[], $2::text[], $3::int[]) AS w(job_type, worker, n)),
    picked AS (
        SELECT j.id, w.worker FROM wanted w CROSS JOIN LATERAL (
            SELECT id FROM apalis.jobs
            WHERE job_type = w.job_type AND run_at <= now()
              AND (status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts))
              AND id <> ALL($4)
            ORDER BY priority DESC, run_at
            LIMIT w.n
            FOR UPDATE SKIP LOCKED
        ) j
    )
    UPDATE apalis.jobs j SET status = 'Queued', lock_by = p.worker, lock_at = clock_timestamp(), done_at = NULL
    FROM picked p WHERE j.id = p.id
    RETURNING j.id, j.job_type, j.job, j.attempts, j.max_attempts, j.lock_by, j.lock_at";

/// Writes a batch of outcomes. Each is fenced by its claim (worker and claim time): a row
/// rescued and claimed again since, or acknowledged already (a retried write whose first
/// try committed but lost its reply), is left alone.
const ACK: &str = "
    UPDATE apalis.jobs j SET status = a.status, attempts = a.attempt, last_result = a.result, done_at = now()
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::jsonb[], $6::timestamptz[])
         AS a(id, worker, status, attempt, result, claimed_at)
    WHERE j.id = a.id AND j.lock_by = a.worker AND j.lock_at = a.claimed_at AND j.status IN ('Queued', 'Running')";

/// Gives fetched jobs that never started back to the queue, at no attempt's cost.
const RELEASE: &str = "
    UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL
    WHERE id = ANY($1) AND lock_by = $2 AND status = 'Queued'";

/// Gives back jobs claimed under these workers' names that the process does not hold: a
/// fetch whose connection broke after its commit claimed them and never handed them out.
const RECLAIM: &str = "
    UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL
    WHERE lock_by = ANY($1) AND status = 'Queued' AND id <> ALL($2)";

/// Records the process's workers, so the orphan sweep knows whose jobs are whose.
const REGISTER: &str = "
    INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen, started_at)
    SELECT id, job_type, 'tenant_master', '', now(), now() FROM unnest($1::text[], $2::text[]) AS w(id, job_type)
    ON CONFLICT (id) DO UPDATE SET last_seen = now()";

/// One job type's share of the process: its slots, the jobs fetched for it that have not
/// started yet, and its worker when that waits for work.
pub struct Slot {
    job_type: &'static str,
    capacity: usize,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// The apalis worker's name (the jobs' `lock_by`), once it polled us.
    worker: Option<String>,
    registered: bool,
    fetched: VecDeque<Task<Value>>,
    /// Every job this slot holds (fetched, or handed to the worker and not yet
    /// acknowledged), with the time it was claimed: the fence of its acknowledgement.
    claims: HashMap<String, DateTime<Utc>>,
    /// The worker found nothing and waits to be woken.
    waiting: Option<Waker>,
    closed: bool,
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Free slots the fetch may fill: the capacity less the jobs running or waiting here.
    fn free(state: &SlotState, capacity: usize) -> usize {
        capacity.saturating_sub(state.claims.len())
    }
}

/// One completed attempt, on its way to the database.
struct Ack {
    id: String,
    worker: String,
    status: &'static str,
    attempt: i32,
    result: Value,
    claimed_at: DateTime<Utc>,
    written: oneshot::Sender<()>,
}

/// The process's fetch and acknowledgement path, shared by its workers (cheap to clone).
#[derive(Clone)]
pub struct Feed(Arc<Shared>);

struct Shared {
    pool: PgPool,
    slots: HashMap<&'static str, Arc<Slot>>,
    /// A worker wants jobs or a slot came free.
    wanted: Notify,
    acks: mpsc::UnboundedSender<Ack>,
    /// Acknowledgements sent to the writer and not yet stored.
    pending_acks: Arc<AtomicUsize>,
    /// A give-back failed: the next fetch first gives back what no slot holds.
    reclaim_due: AtomicBool,
}

/// The feed's background tasks; dropping this stops them (after the workers stopped).
pub struct FeedTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for FeedTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Feed {
    /// A feed for these job types and their slots, fetching when a worker waits and
    /// `wakeups` says a job was enqueued, or at least every `poll_interval` (delayed jobs,
    /// retries, lost notifications).
    pub fn start(
        pool: PgPool,
        types: &[(&'static str, usize)],
        wakeups: watch::Receiver<u64>,
        poll_interval: Duration,
    ) -> (Feed, FeedTasks) {
        let slots = types
            .iter()
            .map(|&(job_type, capacity)| (job_type, Arc::new(Slot { job_type, capacity: capacity.max(1), state: Mutex::default() })))
            .collect();
        let (acks, ack_rx) = mpsc::unbounded_channel();
        let pending_acks = Arc::new(AtomicUsize::new(0));
        let feed = Feed(Arc::new(Shared {
            pool,
            slots,
            wanted: Notify::new(),
            acks,
            pending_acks: pending_acks.clone(),
            reclaim_due: AtomicBool::new(false),
        }));
        let tasks = vec![
            tokio::spawn(feed.clone().fetch_loop(wakeups, poll_interval)),
            tokio::spawn(write_acks(feed.0.pool.clone(), ack_rx, pending_acks)),
        ];
        (feed, FeedTasks(tasks))
    }

    /// The slot of `job_type`.
    pub fn slot(&self, job_type: &str) -> Arc<Slot> {
        self.0.slots.get(job_type).cloned().unwrap_or_else(|| panic!("no slot for job type {job_type}"))
    }

    /// Worker `name` runs `slot`'s jobs from now on.
    pub(super) fn attach(&self, slot: &Slot, name: &str) {
        let mut state = slot.state();
        if state.worker.as_deref() != Some(name) {
            state.worker = Some(name.to_owned());
            state.registered = false;
            state.closed = false;
        }
    }

    /// The next fetched job of `slot`, or `None` after asking for more (`waker` is woken
    /// when some arrived).
    pub(super) fn next(&self, slot: &Slot, waker: &Waker) -> Option<Task<Value>> {
        let mut state = slot.state();
        if let Some(task) = state.fetched.pop_front() {
            return Some(task);
        }
        state.waiting = Some(waker.clone());
        drop(state);
        self.0.wanted.notify_one();
        None
    }

    /// Writes the outcome of a job `slot` ran, and frees its slot once written.
    pub(super) async fn acknowledge(&self, slot: &Slot, id: String, attempt: usize, status: &'static str, result: Value) {
        let (worker, claimed_at) = {
            let state = slot.state();
            (state.worker.clone().unwrap_or_default(), state.claims.get(&id).copied())
        };
        if let Some(claimed_at) = claimed_at {
            let (written, done) = oneshot::channel();
            let ack = Ack { id: id.clone(), worker, status, attempt: attempt as i32, result, claimed_at, written };
            self.0.pending_acks.fetch_add(1, Ordering::AcqRel);
            if self.0.acks.send(ack).is_ok() {
                // Dropped only if the writer was stopped: the job runs again after an orphan sweep.
                let _ = done.await;
            }
        }
        let mut state = slot.state();
        state.claims.remove(&id);
        let waiting = state.waiting.is_some();
        drop(state);
        if waiting {
            self.0.wanted.notify_one();
        }
    }

    /// Stops feeding `slot` and gives the jobs fetched for it that never started back to
    /// the queue (a shutdown costs them no attempt).
    pub(super) async fn close(&self, slot: &Slot) {
        let (worker, ids) = {
            let mut state = slot.state();
            state.closed = true;
            state.waiting = None;
            let ids: Vec<String> = state.fetched.drain(..).filter_map(|t| t.ctx().task_id().map(ToString::to_string)).collect();
            for id in &ids {
                state.claims.remove(id);
            }
            (state.worker.clone(), ids)
        };
        if let (Some(worker), false) = (worker, ids.is_empty()) {
            self.release(&worker, &ids).await;
        }
    }

    /// Stops feeding every slot and gives back what they fetched and did not start (the
    /// stop signal: no job is claimed during a drain), then waits up to `limit` for the
    /// outcomes on their way to the database.
    pub async fn stop(&self, limit: Duration) {
        for slot in self.0.slots.values() {
            self.close(slot).await;
        }
        let started = std::time::Instant::now();
        while self.0.pending_acks.load(Ordering::Acquire) > 0 && started.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn release(&self, worker: &str, ids: &[String]) {
        let released = sqlx::query(RELEASE).bind(ids).bind(worker).execute(&self.0.pool).await;
        match released {
            Ok(done) => tracing::info!(jobs = done.rows_affected(), "gave fetched jobs that had not started back to the queue"),
            // They stay Queued under this worker's name: the next fetch gives them back, or
            // the orphan rescue once this process is gone.
            Err(e) => {
                self.0.reclaim_due.store(true, Ordering::Release);
                tracing::warn!(error = %e, jobs = ids.len(), "could not give unstarted jobs back; will try again");
            }
        }
    }

    async fn fetch_loop(self, mut wakeups: watch::Receiver<u64>, poll_interval: Duration) {
        let mut pause = Duration::from_millis(100);
        let mut again = false;
        // After a failed fetch, whether it claimed rows before its connection broke is
        // unknown: those are given back before the next fetch.
        let mut unsure = false;
        let mut listening = true;
        loop {
            if !again {
                tokio::select! {
                    _ = self.0.wanted.notified() => {}
                    changed = wakeups.changed(), if listening => {
                        // The listener is gone: the interval alone wakes us from now on.
                        listening = changed.is_ok();
                    }
                    _ = tokio::time::sleep(poll_interval) => {}
                }
            }
            unsure |= self.0.reclaim_due.swap(false, Ordering::AcqRel);
            let fetched = async {
                if unsure {
                    self.reclaim().await?;
                }
                self.fetch_once().await
            };
            match fetched.await {
                Ok(filled) => {
                    again = filled;
                    unsure = false;
                    pause = Duration::from_millis(100);
                }
                Err(e) => {
                    unsure = true;
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "could not fetch jobs; will try again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                    again = true;
                }
            }
        }
    }

    /// Gives back the jobs claimed under this process's worker names that no slot holds.
    async fn reclaim(&self) -> Result<(), sqlx::Error> {
        let (mut workers, mut held) = (Vec::new(), Vec::new());
        for slot in self.0.slots.values() {
            let state = slot.state();
            workers.extend(state.worker.clone());
            held.extend(state.claims.keys().cloned());
        }
        let given = sqlx::query(RECLAIM).bind(&workers).bind(&held).execute(&self.0.pool).await?;
        if given.rows_affected() > 0 {
            tracing::info!(jobs = given.rows_affected(), "gave back jobs a broken fetch had claimed");
        }
        Ok(())
    }

    /// One fetch for every waiting worker with free slots; true when some worker got all it
    /// asked for (there may be more due: fetch again at once).
    async fn fetch_once(&self) -> Result<bool, sqlx::Error> {
        let mut wanted: Vec<(&Arc<Slot>, String, usize)> = Vec::new();
        let mut unregistered: Vec<(String, &'static str)> = Vec::new();
        // Jobs still held here (an acknowledgement being written) are not claimed twice.
        let mut held: Vec<String> = Vec::new();
        for slot in self.0.slots.values() {
            let state = slot.state();
            held.extend(state.claims.keys().cloned());
            let free = Slot::free(&state, slot.capacity);
            if let (Some(worker), Some(_), false, true) = (&state.worker, &state.waiting, state.closed, free > 0) {
                if !state.registered {
                    unregistered.push((worker.clone(), slot.job_type));
                }
                wanted.push((slot, worker.clone(), free));
            }
        }
        if wanted.is_empty() {
            return Ok(false);
        }
        if !unregistered.is_empty() {
            self.register(&unregistered).await?;
        }
        let types: Vec<&str> = wanted.iter().map(|(slot, _, _)| slot.job_type).collect();
        let workers: Vec<&str> = wanted.iter().map(|(_, worker, _)| worker.as_str()).collect();
        let counts: Vec<i32> = wanted.iter().map(|(_, _, n)| *n as i32).collect();
        let rows: Vec<FetchedRow> =
            sqlx::query_as(FETCH).bind(&types).bind(&workers).bind(&counts).bind(&held).fetch_all(&self.0.pool).await?;
        Ok(self.hand_out(&wanted, rows).await)
    }

    async fn register(&self, workers: &[(String, &'static str)]) -> Result<(), sqlx::Error> {
        let ids: Vec<&str> = workers.iter().map(|(id, _)| id.as_str()).collect();
        let types: Vec<&str> = workers.iter().map(|(_, t)| *t).collect();
        sqlx::query(REGISTER).bind(&ids).bind(&types).execute(&self.0.pool).await?;
        for (id, job_type) in workers {
            let slot = self.slot(job_type);
            let mut state = slot.state();
            if state.worker.as_deref() == Some(id) {
                state.registered = true;
            }
        }
        Ok(())
    }

    /// Puts fetched rows in their slots and wakes the workers that got some; returns
    /// whether a worker got all it asked for.
    async fn hand_out(&self, wanted: &[(&Arc<Slot>, String, usize)], rows: Vec<FetchedRow>) -> bool {
        let mut got: HashMap<&str, usize> = HashMap::new();
        let mut orphans: HashMap<String, Vec<String>> = HashMap::new();
        for row in rows {
            let slot = self.slot(&row.job_type);
            *got.entry(slot.job_type).or_default() += 1;
            let mut state = slot.state();
            // A worker that closed (or was replaced) since the fetch began gets none.
            if state.closed || state.worker.as_deref() != Some(row.lock_by.as_str()) {
                orphans.entry(row.lock_by.clone()).or_default().push(row.id);
                continue;
            }
            state.claims.insert(row.id.clone(), row.lock_at);
            state.fetched.push_back(row.into_task());
        }
        for (worker, ids) in orphans {
            self.release(&worker, &ids).await;
        }
        let mut filled = false;
        for (slot, _, asked) in wanted {
            let n = got.get(slot.job_type).copied().unwrap_or(0);
            filled |= n >= *asked;
            if n > 0 {
                if let Some(waker) = slot.state().waiting.take() {
                    waker.wake();
                }
            }
        }
        filled
    }
}

#[derive(sqlx::FromRow)]
struct FetchedRow {
    id: String,
    job_type: String,
    job: Vec<u8>,
    attempts: i32,
    max_attempts: i32,
    lock_by: String,
    lock_at: DateTime<Utc>,
}

impl FetchedRow {
    fn into_task(self) -> Task<Value> {
        // A payload that is not JSON reaches the handler as null, which fails that one job
        // (dead at once, saying the payload cannot be read) instead of the whole fetch.
        let payload = serde_json::from_slice(&self.job).unwrap_or(Value::Null);
        TaskBuilder::new(payload)
            .task_id(TaskId::from_string(self.id))
            .attempt(self.attempts.max(0) as usize)
            .max_attempts(self.max_attempts.max(1) as usize)
            .queue(self.job_type.into())
            .lock_by(Some(self.lock_by))
            .build()
    }
}

/// Writes acknowledgements as they come, everything waiting in one statement, and tells
/// each job when its outcome is stored. A write that failed for want of the database is
/// tried again (the outcome must not be lost while the database restarts) with growing
/// pauses; one the database refused is split, so one outcome it cannot store (a result
/// over a limit) never holds back the others.
async fn write_acks(pool: PgPool, mut acks: mpsc::UnboundedReceiver<Ack>, pending: Arc<AtomicUsize>) {
    let mut batch = Vec::with_capacity(ACK_BATCH);
    while acks.recv_many(&mut batch, ACK_BATCH).await > 0 {
        // In id order, as every batch is: two writers never wait on each other's rows.
        batch.sort_by(|a, b| a.id.cmp(&b.id));
        let mut pause = Duration::from_millis(100);
        loop {
            match write(&pool, &batch).await {
                Ok(()) => break,
                Err(e) if is_connection_error(&e) => {
                    tracing::warn!(error = %e, jobs = batch.len(), retry_in_ms = pause.as_millis() as u64, "could not store job outcomes; will try again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
                Err(e) => {
                    tracing::warn!(error = %e, jobs = batch.len(), "the database refused a batch of job outcomes; storing them one by one");
                    write_one_by_one(&pool, &mut batch).await;
                    break;
                }
            }
        }
        pending.fetch_sub(batch.len(), Ordering::AcqRel);
        for ack in batch.drain(..) {
            let _ = ack.written.send(());
        }
    }
}

/// Each outcome alone; one still refused is stored as a short error instead (its job is
/// then failed or dead like any other, and says why).
async fn write_one_by_one(pool: &PgPool, batch: &mut [Ack]) {
    for ack in batch.iter_mut() {
        if let Err(e) = write(pool, std::slice::from_ref(ack)).await {
            tracing::warn!(error = %e, job.id = %ack.id, "the database refused a job's outcome; storing a short error instead");
            if ack.status == "Done" {
                ack.status = "Failed";
            }
            ack.result = serde_json::json!({ "Err": format!("the job's outcome could not be stored: {e}") });
            if let Err(e) = write(pool, std::slice::from_ref(ack)).await {
                tracing::error!(error = %e, job.id = %ack.id, "could not store a job's outcome; it runs again after the orphan rescue");
            }
        }
    }
}

/// Whether `e` says the database was out of reach (a connection lost or refused, the
/// server shutting down), not that it refused the statement.
fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
        _ => false,
    }
}

async fn write(pool: &PgPool, batch: &[Ack]) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = batch.iter().map(|a| a.id.as_str()).collect();
    let workers: Vec<&str> = batch.iter().map(|a| a.worker.as_str()).collect();
    let statuses: Vec<&str> = batch.iter().map(|a| a.status).collect();
    let attempts: Vec<i32> = batch.iter().map(|a| a.attempt).collect();
    let results: Vec<&Value> = batch.iter().map(|a| &a.result).collect();
    let claims: Vec<DateTime<Utc>> = batch.iter().map(|a| a.claimed_at).collect();
    let stored =
        sqlx::query(ACK).bind(&ids).bind(&workers).bind(&statuses).bind(&attempts).bind(&results).bind(&claims).execute(pool).await?;
    // Fewer rows than outcomes: a job taken over meanwhile (its process was thought dead),
    // or a retried write whose first try had committed.
    if (stored.rows_affected() as usize) < batch.len() {
        tracing::warn!(
            outcomes = batch.len(),
            stored = stored.rows_affected(),
            "some job outcomes were not stored: their jobs were taken over or stored already"
        );
    }
    Ok(())
}
