//! `tenant-scheduler`: tokio-cron-scheduler fires each schedule at its slots, and a sweep
//! every minute (also at start) catches each schedule's latest slot if it is within the
//! catch-up window and no scheduler has recorded it yet (older missed slots are skipped).
//! Running two schedulers is safe: fan-outs are once per slot.

use std::{future::Future, sync::Arc};

use chrono::{Duration, Utc};
use sqlx::PgPool;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::{
    config::Config,
    db,
    error::{Error, Result},
    schedule::{self, Schedule},
};

/// Runs until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = std::io::Result<()>> + Send + 'static) -> Result<()> {
    let pool = db::connect_pool(&config.database_url, 4).await?;
    crate::migrate::ensure_current(&pool).await?;
    let schedules = Arc::new(Schedule::all(&config.scheduler)?);
    let catch_up = config.scheduler.catch_up();
    let by = format!("scheduler-{}-{}", crate::system::hostname().unwrap_or_default(), std::process::id());

    log_missed(&pool, &schedules, catch_up).await?;
    sweep(&pool, &schedules, catch_up, &by).await;

    let cron = JobScheduler::new().await.map_err(|e| Error::fatal_because(format!("failed to start the cron scheduler: {e}"), e))?;
    for s in schedules.iter() {
        let (pool, s2, by) = (pool.clone(), s.clone(), by.clone());
        let job = Job::new_async(s.cron_text.as_str(), move |_, _| {
            let (pool, s, by) = (pool.clone(), s2.clone(), by.clone());
            Box::pin(async move { run_tick(&pool, &s, catch_up, &by).await })
        })
        .map_err(|e| Error::Invalid(format!("schedule {}: {e}", s.name)))?;
        cron.add(job).await.map_err(|e| Error::fatal_because(format!("failed to add schedule {}: {e}", s.name), e))?;
        tracing::info!(schedule = %s.name, cron = %s.cron_text, next_run = ?s.next_run(Utc::now()), "schedule loaded");
    }
    let (sweep_pool, sweep_schedules, sweep_by) = (pool.clone(), schedules.clone(), by.clone());
    let minutely = Job::new_async("0 * * * * *", move |_, _| {
        let (pool, schedules, by) = (sweep_pool.clone(), sweep_schedules.clone(), sweep_by.clone());
        Box::pin(async move { sweep(&pool, &schedules, catch_up, &by).await })
    })
    .map_err(|e| Error::fatal_because(format!("failed to create the sweep: {e}"), e))?;
    cron.add(minutely).await.map_err(|e| Error::fatal_because(format!("failed to add the sweep: {e}"), e))?;
    cron.start().await.map_err(|e| Error::fatal_because(format!("failed to start the cron scheduler: {e}"), e))?;
    tracing::info!(schedules = schedules.len(), catch_up_minutes = config.scheduler.catch_up_minutes, "scheduler running");
    let _ = shutdown.await;
    let mut cron = cron;
    let _ = cron.shutdown().await;
    tracing::info!("scheduler stopped");
    Ok(())
}

async fn sweep(pool: &PgPool, schedules: &[Schedule], catch_up: Duration, by: &str) {
    for s in schedules {
        run_tick(pool, s, catch_up, by).await;
    }
}

async fn run_tick(pool: &PgPool, schedule: &Schedule, catch_up: Duration, by: &str) {
    match schedule::tick(pool, schedule, Utc::now(), catch_up, by).await {
        Ok(Some(r)) => tracing::info!(schedule = %r.schedule, slot = %r.slot, tenants = r.tenants, enqueued = r.enqueued, "fan-out done"),
        Ok(None) => {}
        Err(e) => tracing::error!(schedule = %schedule.name, error = %e, "fan-out failed; the next sweep retries within a minute"),
    }
}

/// Says, in one line per schedule, which slots nobody ran since it last ran: they are
/// skipped, and only the latest one (within the catch-up window) runs now.
async fn log_missed(pool: &PgPool, schedules: &[Schedule], catch_up: Duration) -> Result<()> {
    let now = Utc::now();
    for s in schedules {
        let Some(last) = schedule::last_slot(pool, &s.name).await? else { continue };
        let missed = s.missed_slots(last, now, catch_up);
        if let (Some(first), Some(latest)) = (missed.first(), missed.last()) {
            let count = if missed.len() >= 10_000 { "10,000 or more".to_owned() } else { missed.len().to_string() };
            tracing::warn!(
                schedule = %s.name,
                skipped = missed.len(),
                "{count} slot(s) of {} from {} to {} were missed while no scheduler ran and are skipped; only the latest slot within catch_up_minutes is caught up (`tenantctl schedule run {} --slot {}` enqueues a skipped one)",
                s.name,
                schedule::slot_text(*first),
                schedule::slot_text(*latest),
                s.name,
                schedule::slot_text(*latest)
            );
        }
    }
    Ok(())
}
