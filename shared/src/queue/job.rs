//! What a job type is to the queue: a serde payload with an explicit queue name
//! ([`Job::TYPE`], never a Rust type name: renaming a struct must not strand queued jobs),
//! its idempotency key, its tenant and its handler. The types themselves are in `jobs`.

use std::future::Future;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use super::payload;
use crate::{context::App, error::Result, lock::SlotKind};

/// The attempt being run.
#[derive(Debug, Clone)]
pub struct Run {
    /// The queue's job id: reruns of one job share it, so work can be tied to it.
    pub job_id: String,
    /// 1 for the first attempt.
    pub attempt: usize,
}

/// A job type: its payload, queue name, idempotency key and handler.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {
    /// The queue name and `job_type` column value; also a row in `tenant_master.job_types`.
    const TYPE: &'static str;

    /// What the payload must hold: `tenant_master.enqueue` refuses anything else.
    const FIELDS: &'static [payload::Field];

    /// A run taking longer than this is failed (and retried); `[worker.timeouts]` overrides.
    const TIMEOUT_SECS: u64 = 3600;

    /// Heavy jobs (dumps, restores, maintenance) take one of their database host's
    /// `heavy_jobs_per_host` slots first (rollout migrations one of `migrations_per_host`),
    /// and only then the tenant's lock: waiting for a slot never holds the tenant nor takes
    /// it offline.
    const SLOT: Option<SlotKind> = None;

    /// The key that makes a second enqueue of the same work a no-op.
    fn idempotency_key(&self) -> Option<String>;

    /// The tenant this job belongs to: it runs under that tenant's lock.
    fn tenant(&self) -> Option<&str>;

    /// The tenant named in this job's log lines (`tenant.slug`); a job may concern a
    /// tenant without needing its lock.
    fn subject(&self) -> Option<&str> {
        self.tenant()
    }

    /// Does the work; must converge to the same end state however often it is rerun.
    fn run(&self, app: &App, run: &Run) -> impl Future<Output = Result<Value>> + Send;

    /// Called once when job `job_id` gives up for good.
    fn on_dead(&self, _app: &App, _job_id: &str, _error: &str) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
}

/// A job type as the rest of the system sees it, without its Rust type.
#[derive(Debug, Clone, Copy)]
pub struct JobType {
    /// The job type's name, as the queue stores it.
    pub name: &'static str,
    /// What its payload must hold.
    pub fields: &'static [payload::Field],
    /// Whether a payload decodes as this type (the error if not).
    pub decode: fn(Value) -> std::result::Result<(), String>,
}

/// The [`JobType`] of `J`.
pub const fn job_type<J: Job>() -> JobType {
    JobType { name: J::TYPE, fields: J::FIELDS, decode: decodes::<J> }
}

fn decodes<J: Job>(payload: Value) -> std::result::Result<(), String> {
    serde_json::from_value::<J>(payload).map(drop).map_err(|e| e.to_string())
}
