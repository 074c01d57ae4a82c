//! `[scheduler]`: the schedules' settings, checked here so a bad cron line is refused when
//! the configuration loads, by every binary alike.

use std::collections::BTreeMap;

use chrono::Duration;
use croner::{parser::CronParser, Cron};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `[scheduler]` in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// A slot missed while no scheduler ran is still enqueued within this many minutes.
    pub catch_up_minutes: u32,
    /// Named schedules; these merge over the four defaults (`enabled = false` turns one off).
    pub schedules: BTreeMap<String, ScheduleConfig>,
}

/// One schedule in the configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Cron in UTC: `sec min hour day-of-month month day-of-week`, or the usual 5 fields.
    pub cron: String,
    /// `backup`, `vacuum` or `cleanup`.
    pub job: String,
    /// `false` turns the schedule off (a default one too).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Jobs of one fan-out start spread over this many minutes, not all at the slot.
    #[serde(default = "default_spread")]
    pub spread_minutes: u32,
    /// backup: routine backups to keep; none: each tenant's plan decides.
    #[serde(default)]
    pub keep: Option<u32>,
    /// vacuum: what to run.
    #[serde(default)]
    pub vacuum: bool,
    /// vacuum: ANALYZE the tables (with the VACUUM when one runs).
    #[serde(default)]
    pub analyze: bool,
    /// vacuum: REINDEX the tenant's schema.
    #[serde(default)]
    pub reindex: bool,
    /// vacuum: VACUUM FULL (rewrites tables, takes exclusive locks).
    #[serde(default)]
    pub full: bool,
    /// cleanup: rows older than this many days go.
    #[serde(default)]
    pub older_than_days: Option<u32>,
    /// cleanup: also prune finished queue rows (done after 7 days, dead after 30).
    #[serde(default)]
    pub prune_jobs: bool,
}

fn yes() -> bool {
    true
}

fn default_spread() -> u32 {
    60
}

impl SchedulerConfig {
    /// The catch-up window.
    pub fn catch_up(&self) -> Duration {
        Duration::minutes(self.catch_up_minutes as i64)
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig { catch_up_minutes: 6 * 60, schedules: BTreeMap::new() }
    }
}

/// The four default schedules.
pub fn defaults() -> BTreeMap<String, ScheduleConfig> {
    let base = |cron: &str, job: &str| ScheduleConfig {
        cron: cron.into(),
        job: job.into(),
        enabled: true,
        spread_minutes: 60,
        keep: None,
        vacuum: false,
        analyze: false,
        reindex: false,
        full: false,
        older_than_days: None,
        prune_jobs: false,
    };
    BTreeMap::from([
        // No `keep`: each tenant keeps what its plan says ([backups] keep, keep_per_plan).
        ("nightly_backup".into(), base("0 0 2 * * *", "backup")),
        ("weekly_maintenance".into(), ScheduleConfig { vacuum: true, analyze: true, reindex: true, ..base("0 0 4 * * Sun", "vacuum") }),
        ("monthly_vacuum".into(), ScheduleConfig { vacuum: true, ..base("0 0 3 1 * *", "vacuum") }),
        (
            "daily_cleanup".into(),
            ScheduleConfig { older_than_days: Some(365), prune_jobs: true, spread_minutes: 30, ..base("0 0 5 * * *", "cleanup") },
        ),
    ])
}

impl SchedulerConfig {
    /// The defaults with the configured schedules merged over them.
    pub fn merged(&self) -> BTreeMap<String, ScheduleConfig> {
        let mut merged = defaults();
        merged.extend(self.schedules.clone());
        merged
    }

    /// Refuses a schedule that could not run.
    pub fn validate(&self) -> Result<()> {
        for (name, schedule) in self.merged().into_iter().filter(|(_, c)| c.enabled) {
            schedule.parse(&name)?;
        }
        Ok(())
    }
}

impl ScheduleConfig {
    /// Checks the schedule called `name` and returns its 6-field cron text and parsed cron.
    pub fn parse(&self, name: &str) -> Result<(String, Cron)> {
        let bad = |why: String| Error::Invalid(format!("schedule '{name}': {why}"));
        if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') || name.is_empty() {
            return Err(bad("names use a-z, 0-9 and '_'".into()));
        }
        match self.job.as_str() {
            "backup" if self.keep == Some(0) => return Err(bad("keep must be at least 1".into())),
            "vacuum" if !(self.vacuum || self.analyze || self.reindex || self.full) => {
                return Err(bad("a vacuum schedule needs vacuum, analyze, reindex or full".into()))
            }
            "cleanup" if self.older_than_days.unwrap_or(0) == 0 => return Err(bad("cleanup needs older_than_days of at least 1".into())),
            "backup" | "vacuum" | "cleanup" => {}
            other => return Err(bad(format!("unknown job '{other}' (use backup, vacuum or cleanup)"))),
        }
        let cron_text = match self.cron.split_whitespace().count() {
            5 => format!("0 {}", self.cron.trim()),
            _ => self.cron.trim().to_owned(),
        };
        // The same parser settings as tokio-cron-scheduler, so both agree on the slots.
        let cron = CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(&cron_text)
            .map_err(|e| bad(format!("cron '{}' is not valid: {e}", self.cron)))?;
        Ok((cron_text, cron))
    }
}
