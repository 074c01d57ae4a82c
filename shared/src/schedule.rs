//! Schedules: which jobs fan out over all tenants, when, and exactly once per
//! slot. Everything here takes the current time as an argument, so tests drive it
//! through slots without waiting for clocks; `scheduler` adds the clock.

use chrono::{DateTime, Duration, SubsecRound as _, Utc};
use croner::Cron;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

pub use crate::config::{ScheduleConfig, SchedulerConfig};
use crate::{
    error::{Context as _, Error, Result},
    jobs::prune_jobs::PruneJobs,
    queue,
    queue::Job,
};

/// A schedule ready to use.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The schedule's name, e.g. `weekly_maintenance`.
    pub name: String,
    /// The 6-field cron text (what tokio-cron-scheduler is given).
    pub cron_text: String,
    cron: Cron,
    /// Its settings.
    pub config: ScheduleConfig,
}

impl Schedule {
    /// The enabled schedules: the defaults with the configured ones merged over them.
    pub fn all(config: &SchedulerConfig) -> Result<Vec<Schedule>> {
        config.merged().into_iter().filter(|(_, c)| c.enabled).map(|(name, c)| Schedule::new(&name, c)).collect()
    }

    /// The enabled schedule called `name`.
    pub fn find(config: &SchedulerConfig, name: &str) -> Result<Schedule> {
        let all = Schedule::all(config)?;
        let names: Vec<String> = all.iter().map(|s| s.name.clone()).collect();
        all.into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::Invalid(format!("unknown schedule '{name}': the schedules are {}", names.join(", "))))
    }

    fn new(name: &str, config: ScheduleConfig) -> Result<Schedule> {
        let (cron_text, cron) = config.parse(name)?;
        Ok(Schedule { name: name.to_owned(), cron_text, cron, config })
    }

    /// Slots `t` with `after < t <= until`, oldest first. Slots are whole seconds: croner
    /// keeps the sub-second part of its start, which would make every tick's keys differ.
    pub fn slots_between(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        self.cron.iter_after(after.trunc_subsecs(0)).take_while(|t| *t <= until).take(10_000).collect()
    }

    /// The slot to enqueue at `now`: the latest one, if it is within the catch-up window.
    /// Older slots nobody ran are skipped: a scheduler that was down an hour runs the last
    /// nightly backup once, not one backup per missed minute of a per-minute schedule.
    pub fn due_slot(&self, now: DateTime<Utc>, catch_up: Duration) -> Option<DateTime<Utc>> {
        self.current_slot(now).filter(|slot| *slot > now - catch_up)
    }

    /// Slots after `last_done` up to `now` that nobody ran and no tick will: all but the
    /// [`due_slot`](Self::due_slot) (at most 10,000 are counted).
    pub fn missed_slots(&self, last_done: DateTime<Utc>, now: DateTime<Utc>, catch_up: Duration) -> Vec<DateTime<Utc>> {
        let due = self.due_slot(now, catch_up);
        self.slots_between(last_done, now).into_iter().filter(|slot| Some(*slot) != due).collect()
    }

    /// The latest slot at or before `now`.
    pub fn current_slot(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&now.trunc_subsecs(0), true).ok()
    }

    /// The first slot after `now`.
    pub fn next_run(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&now.trunc_subsecs(0), false).ok()
    }

    /// Whether `time` is one of this schedule's slots.
    pub fn is_slot(&self, time: DateTime<Utc>) -> bool {
        self.cron.is_time_matching(&time).unwrap_or(false)
    }

    /// The job type a fan-out enqueues (what `tenantctl jobs list --type` takes).
    pub fn job_type(&self) -> &'static str {
        self.fan_out_job().0
    }

    fn fan_out_job(&self) -> (&'static str, serde_json::Value) {
        let c = &self.config;
        match c.job.as_str() {
            "backup" => ("BackupTenant", json!({ "kind": "scheduled", "keep": c.keep })),
            "vacuum" => ("Vacuum", json!({ "vacuum": c.vacuum, "analyze": c.analyze, "reindex": c.reindex, "full": c.full })),
            _ => ("Cleanup", json!({ "older_than_days": c.older_than_days, "dry_run": false })),
        }
    }
}

/// The text form of a slot in payloads and keys.
pub fn slot_text(slot: DateTime<Utc>) -> String {
    slot.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// What one fan-out did.
#[derive(Debug, Clone, Serialize)]
pub struct FanOut {
    /// The schedule's name.
    pub schedule: String,
    /// The slot fanned out.
    pub slot: DateTime<Utc>,
    /// Live tenants at the time.
    pub tenants: i64,
    /// Jobs inserted now (0 if another scheduler got there first).
    pub enqueued: i64,
}

/// Enqueues the schedule's job for every live tenant for `slot`, once per slot however
/// often and by however many schedulers it is called, and records the run.
pub async fn fan_out(pool: &PgPool, schedule: &Schedule, slot: DateTime<Utc>, by: &str) -> Result<FanOut> {
    let (job_type, payload) = schedule.fan_out_job();
    let spread_secs = schedule.config.spread_minutes.max(1) * 60;
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    let slugs: Vec<String> = sqlx::query_scalar("SELECT slug FROM tenant_master.tenants WHERE status IN ('active', 'paused', 'suspended')")
        .fetch_all(&mut *tx)
        .await
        .context("failed to list tenants")?;
    let ids: Vec<String> = slugs.iter().map(|_| ulid::Ulid::generate().to_string()).collect();
    // One statement for all tenants; keys `<schedule>:<slug>:<slot>` and ON CONFLICT make it
    // once per slot however many schedulers run, skipping (not failing on) taken keys.
    // run_at is spread over the window by a hash of the slug.
    let mut enqueued = sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key)
         SELECT t.id, $1, convert_to(($4::jsonb || jsonb_build_object('slug', t.slug, 'schedule', $2::text, 'slot', $5::text))::text, 'UTF8'),
                'Pending', 0, jt.max_attempts,
                $3::timestamptz + make_interval(secs => abs(hashtext(t.slug)::bigint) % $6),
                0, $2 || ':' || t.slug || ':' || $5
         FROM unnest($7::text[], $8::text[]) AS t(id, slug)
         JOIN tenant_master.job_types jt ON jt.job_type = $1
         ON CONFLICT (job_type, idempotency_key) DO NOTHING",
    )
    .bind(job_type)
    .bind(&schedule.name)
    .bind(slot)
    .bind(&payload)
    .bind(slot_text(slot))
    .bind(spread_secs as i64)
    .bind(&ids)
    .bind(&slugs)
    .execute(&mut *tx)
    .await
    .context(format!("failed to fan out schedule {}", schedule.name))?
    .rows_affected() as i64;
    if schedule.config.prune_jobs {
        enqueued += enqueue_prune(&mut tx, schedule, slot).await?;
    }
    let tenants = slugs.len() as i64;
    record_run(&mut tx, schedule, slot, tenants, enqueued, by).await?;
    tx.commit().await.context("failed to commit the fan-out")?;
    Ok(FanOut { schedule: schedule.name.clone(), slot, tenants, enqueued })
}

/// Enqueues the slot's `PruneJobs` (once per slot); returns how many jobs that added.
async fn enqueue_prune(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, schedule: &Schedule, slot: DateTime<Utc>) -> Result<i64> {
    let prune =
        PruneJobs { done_older_than_days: 7, dead_older_than_days: 30, schedule: Some(schedule.name.clone()), slot: Some(slot_text(slot)) };
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND idempotency_key = $2")
        .bind(PruneJobs::TYPE)
        .bind(prune.idempotency_key())
        .fetch_one(&mut **tx)
        .await
        .context("failed to look up the prune job")?;
    queue::enqueue(tx, &prune).await?;
    Ok(1 - before)
}

/// Records that `slot` of `schedule` was fanned out (adding to a run another scheduler recorded).
async fn record_run(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    schedule: &Schedule,
    slot: DateTime<Utc>,
    tenants: i64,
    enqueued: i64,
    by: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO tenant_master.schedule_runs (schedule, slot, tenants, enqueued, recorded_by) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (schedule, slot) DO UPDATE SET enqueued = schedule_runs.enqueued + excluded.enqueued",
    )
    .bind(&schedule.name)
    .bind(slot)
    .bind(tenants as i32)
    .bind(enqueued as i32)
    .bind(by)
    .execute(&mut **tx)
    .await
    .context("failed to record the schedule run")?;
    Ok(())
}

/// The newest slot of `schedule` already fanned out, if any.
pub async fn last_slot(pool: &PgPool, schedule: &str) -> Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar("SELECT max(slot) FROM tenant_master.schedule_runs WHERE schedule = $1")
        .bind(schedule)
        .fetch_one(pool)
        .await
        .context("failed to read the schedule runs")
}

/// A schedule as `tenantctl schedule list` and the admin panel show it.
#[derive(Debug, Serialize)]
pub struct Overview {
    /// The schedule's name.
    pub name: String,
    /// Its 6-field cron text, in UTC.
    pub cron: String,
    /// `backup`, `vacuum` or `cleanup`.
    pub job: String,
    /// Its next slot; none if the cron never fires again.
    pub next_run: Option<DateTime<Utc>>,
    /// The newest slot fanned out; none before the first.
    pub last_slot: Option<DateTime<Utc>>,
}

/// Every enabled schedule with its next run after `now` and its last slot fanned out.
pub async fn overview(pool: &PgPool, config: &SchedulerConfig, now: DateTime<Utc>) -> Result<Vec<Overview>> {
    let mut rows = Vec::new();
    for s in Schedule::all(config)? {
        rows.push(Overview {
            next_run: s.next_run(now),
            last_slot: last_slot(pool, &s.name).await?,
            cron: s.cron_text.clone(),
            job: s.config.job.clone(),
            name: s.name,
        });
    }
    Ok(rows)
}

/// One scheduler pass at `now`: fans out every due slot not yet recorded (a slot another
/// scheduler is fanning out at this moment is deduplicated by the job keys).
pub async fn tick(pool: &PgPool, schedule: &Schedule, now: DateTime<Utc>, catch_up: Duration, by: &str) -> Result<Option<FanOut>> {
    let Some(slot) = schedule.due_slot(now, catch_up) else { return Ok(None) };
    let recorded: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenant_master.schedule_runs WHERE schedule = $1 AND slot = $2)")
        .bind(&schedule.name)
        .bind(slot)
        .fetch_one(pool)
        .await
        .context("failed to read the schedule runs")?;
    match recorded {
        true => Ok(None),
        false => fan_out(pool, schedule, slot, by).await.map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, h, m, 0).unwrap()
    }

    fn nightly() -> Schedule {
        Schedule::find(&SchedulerConfig::default(), "nightly_backup").unwrap()
    }

    #[test]
    fn defaults_are_the_four_of_the_design() {
        let names: Vec<String> = Schedule::all(&SchedulerConfig::default()).unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, vec!["daily_cleanup", "monthly_vacuum", "nightly_backup", "weekly_maintenance"]);
    }

    #[test]
    fn a_scheduler_down_from_one_to_three_catches_the_two_oclock_slot() {
        let s = nightly();
        assert_eq!(s.due_slot(at(3, 0), Duration::hours(6)), Some(at(2, 0)));
        assert!(s.due_slot(at(1, 59), Duration::hours(6)).is_none_or(|t| t < at(2, 0)));
        assert_eq!(s.due_slot(at(9, 0), Duration::hours(6)), None, "02:00 is past a 6 h window at 09:00");
        assert_eq!(s.missed_slots(at(2, 0) - Duration::days(1), at(9, 0), Duration::hours(6)), vec![at(2, 0)], "02:00 is past the window");
        assert_eq!(
            s.missed_slots(at(2, 0) - Duration::days(1), at(3, 0), Duration::hours(6)),
            Vec::<DateTime<Utc>>::new(),
            "02:00 runs now"
        );
    }

    #[test]
    fn slots_are_whole_seconds_whatever_now_is() {
        let every_two = Schedule::new(
            "t",
            ScheduleConfig { cron: "*/2 * * * * *".into(), ..SchedulerConfig::default().merged()["nightly_backup"].clone() },
        )
        .unwrap();
        let now = at(12, 0) + Duration::milliseconds(2_526);
        let slots = every_two.slots_between(now - Duration::seconds(10), now);
        assert_eq!(slots.first(), Some(&(at(12, 0) - Duration::seconds(6))));
        assert_eq!(slots.last(), Some(&(at(12, 0) + Duration::seconds(2))));
        assert!(slots.iter().all(|t| t.timestamp_subsec_nanos() == 0));
        assert_eq!(every_two.due_slot(now, Duration::seconds(10)), Some(at(12, 0) + Duration::seconds(2)));
        assert_eq!(every_two.current_slot(now), Some(at(12, 0) + Duration::seconds(2)));
    }

    #[test]
    fn slots_follow_the_crons() {
        let all = Schedule::all(&SchedulerConfig::default()).unwrap();
        let weekly = all.iter().find(|s| s.name == "weekly_maintenance").unwrap();
        // 2026-11-23 is a Monday: the next Sunday 04:00 is the 29th.
        assert_eq!(weekly.next_run(at(12, 0)), Some(Utc.with_ymd_and_hms(2026, 11, 29, 4, 0, 0).unwrap()));
        let monthly = all.iter().find(|s| s.name == "monthly_vacuum").unwrap();
        assert_eq!(monthly.next_run(at(12, 0)), Some(Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap()));
        assert_eq!(nightly().current_slot(at(12, 0)), Some(at(2, 0)));
        assert!(nightly().is_slot(at(2, 0)) && !nightly().is_slot(at(2, 1)));
    }

    #[test]
    fn configuration_merges_over_defaults_and_is_checked() {
        let mut config = SchedulerConfig::default();
        let mut backup = SchedulerConfig::default().merged()["nightly_backup"].clone();
        backup.cron = "30 1 * * *".into();
        config.schedules.insert("nightly_backup".into(), backup);
        let mut off = SchedulerConfig::default().merged()["monthly_vacuum"].clone();
        off.enabled = false;
        config.schedules.insert("monthly_vacuum".into(), off);
        let all = Schedule::all(&config).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all.iter().find(|s| s.name == "nightly_backup").unwrap().current_slot(at(12, 0)), Some(at(1, 30)));

        let mut bad = SchedulerConfig::default().merged()["daily_cleanup"].clone();
        bad.cron = "every day".into();
        config.schedules.insert("daily_cleanup".into(), bad);
        assert!(Schedule::all(&config).unwrap_err().to_string().contains("is not valid"));
        assert!(Schedule::find(&SchedulerConfig::default(), "hourly").unwrap_err().to_string().contains("unknown schedule 'hourly'"));
    }
}
