//! The one handler every job type runs through. It adds what every job needs: a tracing
//! span, the host slot and the per-tenant lock, panic capture, a time limit, backoff stored
//! in `run_at` (the fetch takes a failed job again as soon as it is due), and a hard stop
//! after `max_attempts` even for a job that keeps killing its worker (the orphan rescue
//! counts an attempt but does not judge the limit).

use std::{panic::AssertUnwindSafe, sync::Arc};

use apalis::prelude::{AbortError, Attempt, BoxDynError, Data, TaskId};
use futures_util::FutureExt;
use serde_json::Value;
use tracing::Instrument;

use super::{
    metrics::{Metrics, Outcome},
    Job, Run,
};
use crate::{
    context::App,
    error::Context as _,
    error::{Error, JobOutcome, Result},
    lock::{HostSlot, TenantLock},
    queue,
};

/// What the handler gets: the operations' context, plus the worker's own state.
pub struct Runtime {
    /// The operations' context.
    pub app: App,
    /// This process's counters, for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Tenant jobs running at once in this process, over all job types: each holds a
    /// tenant-lock and maybe a host-slot session, so this bounds the connection budget.
    tenant_jobs: Arc<tokio::sync::Semaphore>,
}

impl Runtime {
    /// A runtime with fresh metrics.
    pub fn new(app: App) -> Runtime {
        let tenant_jobs = Arc::new(tokio::sync::Semaphore::new(app.config.worker.tenant_jobs_per_process.max(1)));
        Runtime { app, metrics: Arc::default(), tenant_jobs }
    }

    /// How long a run of `J` may take.
    fn timeout<J: Job>(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.app.config.worker.timeouts.get(J::TYPE).copied().unwrap_or(J::POLICY.timeout_secs))
    }
}

/// The apalis handler of every job type. The feed hands over the payload as plain JSON
/// and it is decoded here: a payload that does not fit `J` fails this one job, dead at
/// once, instead of failing the fetch every job type shares.
pub async fn execute<J: Job>(payload: Value, id: TaskId, attempt: Attempt, rt: Data<Arc<Runtime>>) -> Result<Value, BoxDynError> {
    let id = id.to_string();
    let attempt = attempt.current();
    let job = match serde_json::from_value::<J>(payload) {
        Ok(job) => job,
        Err(e) => {
            let span = tracing::info_span!("job", job.id = %id, job.r#type = J::TYPE, attempt);
            return Err(undecodable::<J>(&id, attempt, &rt, &e).instrument(span).await);
        }
    };
    let span = tracing::info_span!("job", job.id = %id, job.r#type = J::TYPE, tenant.slug = job.subject().unwrap_or("-"), attempt);
    run_attempt(&job, &id, attempt, &rt).instrument(span).await
}

/// A payload no handler can read: dead at once, with a sentence that says how to go on.
async fn undecodable<J: Job>(id: &str, attempt: usize, rt: &Runtime, error: &serde_json::Error) -> BoxDynError {
    let reason = format!(
        "the payload cannot be read as {} ({error}): nothing was done; enqueue a corrected job (see `tenantctl jobs show {id}`)",
        J::TYPE
    );
    tracing::error!(error = %reason, "job gave up");
    if let Err(e) = queue::record_dead(&rt.app.pool, id, attempt, &reason).await {
        tracing::error!(error = %e, "could not record the job's last attempt");
    }
    rt.metrics.finished(J::TYPE, Outcome::Dead, std::time::Duration::ZERO);
    Box::new(AbortError::new(reason))
}

async fn run_attempt<J: Job>(job: &J, id: &str, attempt: usize, rt: &Runtime) -> Result<Value, BoxDynError> {
    // The limit matters only from the second attempt on, or when this one fails: a first
    // attempt that succeeds costs no extra query.
    if attempt > 1 {
        let max_attempts = queue::max_attempts(&rt.app.pool, id).await?;
        if attempt > max_attempts {
            let reason = format!("gave up: attempt {attempt} of {max_attempts} (earlier attempts stopped their worker)");
            return Err(give_up(job, id, attempt, rt, reason).await);
        }
    }
    tracing::info!("job started");
    rt.metrics.started(J::TYPE);
    let started = std::time::Instant::now();
    let run = Run { job_id: id.to_owned(), attempt };
    // Panics while taking locks are caught here, the job's own inside `run_locked`.
    let outcome = AssertUnwindSafe(run_locked(job, rt, &run)).catch_unwind().await.and_then(|inner| inner);
    let error = match outcome {
        Ok(Ok(value)) => {
            rt.metrics.finished(J::TYPE, Outcome::Succeeded, started.elapsed());
            tracing::info!(duration_ms = started.elapsed().as_millis() as u64, "job succeeded");
            return Ok(value);
        }
        Ok(Err(e)) => match e.job_outcome() {
            JobOutcome::Dead => {
                rt.metrics.finished(J::TYPE, Outcome::Dead, started.elapsed());
                return Err(give_up(job, id, attempt, rt, e.to_string()).await);
            }
            // Waiting for the tenant or a host slot is no fault of the job: later, at no attempt's cost.
            JobOutcome::Postpone => {
                let delay = J::POLICY.backoff(rt.app.config.worker.retry_base_secs, 1);
                tracing::info!(reason = %e, retry_in_s = delay.as_secs(), "job postponed");
                rt.metrics.finished(J::TYPE, Outcome::Retried, started.elapsed());
                queue::postpone(&rt.app.pool, id, delay).await?;
                return Err(e.into());
            }
            JobOutcome::RetryLater => e.to_string(),
        },
        Err(panic) => format!("panicked: {}", panic_message(&panic)),
    };
    let max_attempts = queue::max_attempts(&rt.app.pool, id).await?;
    if attempt >= max_attempts {
        rt.metrics.finished(J::TYPE, Outcome::Dead, started.elapsed());
        return Err(give_up(job, id, attempt, rt, format!("{error} (attempt {attempt} of {max_attempts})")).await);
    }
    rt.metrics.finished(J::TYPE, Outcome::Retried, started.elapsed());
    let delay = J::POLICY.backoff(rt.app.config.worker.retry_base_secs, attempt);
    tracing::warn!(error = %error, retry_in_s = delay.as_secs(), "job failed; will retry");
    queue::defer(&rt.app.pool, id, delay, attempt, &error).await?;
    Err(error.into())
}

type Panic = Box<dyn std::any::Any + Send>;

/// Takes the job's host slot and tenant lock (their waits are bounded by their own
/// settings), then runs it within its time limit. The time limit and panic capture sit
/// inside `tenant_session::scoped`, so operator logins are closed whatever the job did,
/// and before the tenant's lock goes.
async fn run_locked<J: Job>(job: &J, rt: &Runtime, run: &Run) -> Result<Result<Value>, Panic> {
    // Waiting here holds no connection; the slot and the lock below hold one each.
    let _permit = match job.tenant() {
        Some(_) => Some(rt.tenant_jobs.acquire().await.expect("the semaphore is never closed")),
        None => None,
    };
    let slot = match (J::SLOT, job.tenant()) {
        (Some(kind), Some(slug)) => match host_of(&rt.app, slug).await {
            Ok(Some(host)) => match HostSlot::acquire_kind(&rt.app.config, &host, kind, Some(slug)).await {
                Ok(slot) => Some(slot),
                Err(e) => return Ok(Err(e)),
            },
            Ok(None) => None,
            Err(e) => return Ok(Err(e)),
        },
        _ => None,
    };
    let lock = match job.tenant().map(|slug| TenantLock::acquire(&rt.app.config, slug)) {
        Some(acquiring) => match acquiring.await {
            Ok(mut lock) => match lock.watched(&rt.app.config).await {
                Ok(()) => Some(lock),
                Err(e) => {
                    lock.release().await;
                    if let Some(slot) = slot {
                        slot.release().await;
                    }
                    return Ok(Err(e));
                }
            },
            Err(e) => {
                if let Some(slot) = slot {
                    slot.release().await;
                }
                return Ok(Err(e));
            }
        },
        None => None,
    };
    let limit = rt.timeout::<J>();
    let bounded = async {
        // Boxed: some jobs' futures are large enough to overflow a worker thread's stack
        // in debug builds when kept inline.
        match tokio::time::timeout(limit, AssertUnwindSafe(Box::pin(job.run(&rt.app, run))).catch_unwind()).await {
            Ok(finished) => finished,
            Err(_) => Ok(Err(Error::TimedOut(format!("timed out after {}s (the job type's timeout)", limit.as_secs())))),
        }
    };
    let (mut lock, mut slot) = (lock, slot);
    // A lock lives as long as its connection: if that goes (a control-plane restart, a
    // terminated backend, a dropped network), another job of the tenant may start at once,
    // so this one stops here (as a crash would; every job converges when run again).
    let watched = async {
        tokio::select! {
            finished = bounded => finished,
            lost = watch(lock.as_mut(), slot.as_mut()) => Ok(Err(lost)),
        }
    };
    let result = crate::tenant_session::scoped(limit, watched).await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    if let Some(slot) = slot {
        slot.release().await;
    }
    result
}

/// Resolves when the connection holding the tenant lock or the host slot is gone.
async fn watch(mut lock: Option<&mut TenantLock>, mut slot: Option<&mut HostSlot>) -> Error {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        if let Some(lock) = lock.as_deref_mut() {
            if !lock.held().await {
                return Error::Busy("lost the connection holding the tenant's lock: the job stopped and will run again".into());
            }
        }
        if let Some(slot) = slot.as_deref_mut() {
            if !slot.held().await {
                return Error::Busy("lost the connection holding the host slot: the job stopped and will run again".into());
            }
        }
    }
}

/// The database host of tenant `slug` (none if there is no such tenant: the job says so).
async fn host_of(app: &App, slug: &str) -> Result<Option<String>> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    Ok(crate::tenants::find(&mut cp, slug).await?.map(|t| t.host))
}

/// Final failure: run the job's hook, log once, and tell apalis not to retry.
async fn give_up<J: Job>(job: &J, id: &str, attempt: usize, rt: &Runtime, reason: String) -> BoxDynError {
    tracing::error!(error = %reason, "job gave up");
    if let Err(e) = queue::record_dead(&rt.app.pool, id, attempt, &reason).await {
        tracing::error!(error = %e, "could not record the job's last attempt");
    }
    if let Err(e) = job.on_dead(&rt.app, id, &reason).await {
        tracing::error!(error = %e, "could not record the job's failure");
    }
    Box::new(AbortError::new(reason))
}

fn panic_message(panic: &Panic) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}
