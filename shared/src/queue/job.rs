//! What a job type is to the queue: a serde payload with an explicit queue name
//! ([`Job::TYPE`], never a Rust type name: renaming a struct must not strand queued jobs),
//! its idempotency key, its tenant and its handler. The types themselves are in `jobs`.

use std::{future::Future, time::Duration};

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

    /// One line on what the job does, for `tenant_master.job_types`.
    const DESCRIPTION: &'static str;

    /// How often it is tried, how long an attempt may run, how long between attempts.
    const POLICY: Policy = Policy::DEFAULT;

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

/// A job type's retry policy and time limit. `tenantctl migrate` writes `max_attempts`
/// into `tenant_master.job_types`, from where each enqueued job copies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Attempts before the job is dead (postponements while waiting for the tenant's lock
    /// or a host slot do not count).
    pub max_attempts: u32,
    /// A run taking longer than this is failed (and retried); `[worker.timeouts]` overrides.
    pub timeout_secs: u64,
    /// The delay before attempt n + 1 is `[worker] retry_base_secs` × `backoff_factor`^(n - 1)...
    pub backoff_factor: u64,
    /// ... at most this long, then ±25 % jitter (so retries of a fleet spread out).
    pub backoff_cap_secs: u64,
}

impl Policy {
    /// Five attempts, an hour each, delays growing fourfold up to an hour.
    pub const DEFAULT: Policy = Policy { max_attempts: 5, timeout_secs: 3600, backoff_factor: 4, backoff_cap_secs: 3600 };

    /// The delay before attempt `attempt + 1`, with jitter.
    pub fn backoff(&self, base_secs: u64, attempt: usize) -> Duration {
        use rand::Rng;
        let exp = attempt.saturating_sub(1).min(20) as u32;
        let grown = base_secs.max(1).saturating_mul(self.backoff_factor.max(1).saturating_pow(exp));
        let capped = grown.min(self.backoff_cap_secs.max(1)) as f64;
        Duration::from_secs_f64(capped * rand::rng().random_range(0.75..1.25))
    }
}

/// A job type as the rest of the system sees it, without its Rust type.
#[derive(Debug, Clone, Copy)]
pub struct JobType {
    /// The job type's name, as the queue stores it.
    pub name: &'static str,
    /// What it does, in one line.
    pub description: &'static str,
    /// Its retry policy and time limit.
    pub policy: Policy,
    /// What its payload must hold.
    pub fields: &'static [payload::Field],
    /// Whether a payload decodes as this type (the error if not).
    pub decode: fn(Value) -> std::result::Result<(), String>,
}

/// The [`JobType`] of `J`.
pub const fn job_type<J: Job>() -> JobType {
    JobType { name: J::TYPE, description: J::DESCRIPTION, policy: J::POLICY, fields: J::FIELDS, decode: decodes::<J> }
}

fn decodes<J: Job>(payload: Value) -> std::result::Result<(), String> {
    serde_json::from_value::<J>(payload).map(drop).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = Policy::DEFAULT;
        let d1 = policy.backoff(5, 1).as_secs_f64();
        let d3 = policy.backoff(5, 3).as_secs_f64();
        assert!((3.75..6.25).contains(&d1), "{d1}");
        assert!((60.0..100.0).contains(&d3), "{d3}");
        assert!(policy.backoff(5, 50).as_secs_f64() <= 4500.0);
        let flat = Policy { backoff_factor: 1, ..Policy::DEFAULT };
        assert!(flat.backoff(5, 9).as_secs_f64() < 6.25, "a factor of 1 keeps the base delay");
    }
}
