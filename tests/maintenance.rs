//! Maintenance jobs and the scheduler: once per slot with two schedulers, catch-up,
//! cleanup's exact cutoff, VACUUM and REINDEX in both modes, queue pruning.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tenant_master::{
    ops::{maintenance, prune},
    schedule::{self, Schedule, SchedulerConfig},
    tenants::{self, NewTenant},
};
use tenant_master_tests::TestEnv;

fn at(day: u32, h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, h, m, 0).unwrap()
}

/// Registers `n` active tenants (rows only: fan-outs need no databases).
async fn registered(env: &TestEnv, n: usize) -> Vec<String> {
    let mut slugs = Vec::new();
    let mut conn = env.pool.acquire().await.unwrap();
    for i in 0..n {
        let slug = env.slug(&format!("s{i}"));
        let new = NewTenant::parse(&slug, "demo", "starter", "o@example.com", None, None).unwrap();
        tenants::register(&mut conn, &env.config, &new).await.unwrap();
        slugs.push(slug);
    }
    sqlx::query("UPDATE tenant_master.tenants SET status = 'active'").execute(&mut *conn).await.unwrap();
    slugs
}

async fn jobs_per_tenant_and_slot(env: &TestEnv, job_type: &str) -> Vec<(String, String, i64)> {
    sqlx::query_as("SELECT tenant, payload->>'slot', count(*) FROM tenant_master.jobs WHERE type = $1 GROUP BY 1, 2 ORDER BY 1, 2")
        .bind(job_type)
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

async fn counts(own: &mut sqlx::PgConnection) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT kind, count(*) FROM events GROUP BY 1 ORDER BY 1").fetch_all(own).await.unwrap()
}

async fn stats(db: &mut sqlx::PgConnection, schema: &str) -> (i64, i64) {
    sqlx::query_as("SELECT vacuum_count, analyze_count FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'events'")
        .bind(schema)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn filenode(db: &mut sqlx::PgConnection, index: &str) -> i64 {
    sqlx::query_scalar("SELECT pg_relation_filenode($1::regclass)::bigint").bind(index).fetch_one(db).await.unwrap()
}

fn nightly() -> Schedule {
    Schedule::find(&SchedulerConfig::default(), "nightly_backup").unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_schedulers_enqueue_each_tenant_once_per_slot() {
    let env = TestEnv::new().await;
    let slugs = registered(&env, 25).await;
    let s = nightly();
    let catch_up = chrono::Duration::hours(6);
    let now = at(23, 2, 0) + chrono::Duration::seconds(1);
    // Two schedulers tick at the same moment, then one restarts within the minute.
    let (a, b) = tokio::join!(
        schedule::tick(&env.pool, &s, now, catch_up, "scheduler-a"),
        schedule::tick(&env.pool, &s, now, catch_up, "scheduler-b")
    );
    let enqueued: i64 = a.unwrap().iter().chain(b.unwrap().iter()).map(|f| f.enqueued).sum();
    assert_eq!(enqueued, 25, "the two schedulers together enqueue each tenant once");
    schedule::tick(&env.pool, &s, now + chrono::Duration::seconds(30), catch_up, "scheduler-a-restarted").await.unwrap();
    let forced = schedule::fan_out(&env.pool, &s, at(23, 2, 0), "tenantctl").await.unwrap();
    assert_eq!(forced.enqueued, 0, "an explicit rerun of the slot adds nothing");

    let per = jobs_per_tenant_and_slot(&env, "BackupTenant").await;
    assert_eq!(per.len(), 25);
    assert!(per.iter().all(|(t, slot, n)| slugs.contains(t) && slot == "2026-11-23T02:00:00Z" && *n == 1), "{per:?}");

    // Spread over the window rather than all at 02:00:00.
    let (first, last, distinct): (DateTime<Utc>, DateTime<Utc>, i64) =
        sqlx::query_as("SELECT min(run_at), max(run_at), count(DISTINCT run_at) FROM tenant_master.jobs WHERE type = 'BackupTenant'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(first >= at(23, 2, 0) && last < at(23, 3, 0), "{first} .. {last}");
    assert!(distinct > 10, "run_at spread: {distinct} distinct times for 25 jobs");
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT idempotency_key FROM apalis.jobs WHERE job_type = 'BackupTenant' ORDER BY 1 LIMIT 1")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(keys[0], format!("nightly_backup:{}:2026-11-23T02:00:00Z", slugs[0]));
}

#[tokio::test]
async fn a_scheduler_down_from_one_to_three_enqueues_the_two_oclock_backups() {
    let env = TestEnv::new().await;
    registered(&env, 3).await;
    let s = nightly();
    let catch_up = chrono::Duration::hours(6);
    // Last alive at 01:00 (the previous night's slot was done).
    schedule::fan_out(&env.pool, &s, at(22, 2, 0), "before").await.unwrap();
    assert!(schedule::tick(&env.pool, &s, at(23, 1, 0), catch_up, "s").await.unwrap().is_none(), "nothing new is due at 01:00");
    // Back at 03:00.
    let run = schedule::tick(&env.pool, &s, at(23, 3, 0), catch_up, "s").await.unwrap().expect("the 02:00 slot");
    assert_eq!((run.slot, run.enqueued), (at(23, 2, 0), 3));
    // A slot older than the window is skipped (and reported by missed_slots for the log).
    let late = schedule::tick(&env.pool, &s, at(24, 9, 0), catch_up, "s").await.unwrap();
    assert!(late.is_none(), "02:00 on the 24th is 7 h old at 09:00");
    assert_eq!(s.missed_slots(at(23, 2, 0), at(24, 9, 0), catch_up), vec![at(24, 2, 0)]);
}

/// Issue 25: restarted after an hour of a per-minute backup schedule, the scheduler queued
/// one job per tenant per missed minute (1,083 in one second). It catches up the latest
/// slot only, and says how many it skipped.
#[tokio::test]
async fn a_scheduler_back_after_an_hour_enqueues_one_slot_of_a_per_minute_schedule() {
    let env = TestEnv::new().await;
    let slugs = registered(&env, 3).await;
    let mut config = SchedulerConfig::default();
    let minutely = tenant_master::config::ScheduleConfig { cron: "0 * * * * *".into(), ..config.merged()["nightly_backup"].clone() };
    config.schedules.insert("nightly_backup".into(), minutely);
    let s = Schedule::find(&config, "nightly_backup").unwrap();
    let catch_up = config.catch_up();
    schedule::fan_out(&env.pool, &s, at(23, 2, 0), "before").await.unwrap();
    // Down for an hour, back at 03:00:30.
    let back = at(23, 3, 0) + chrono::Duration::seconds(30);
    let run = schedule::tick(&env.pool, &s, back, catch_up, "restarted").await.unwrap().expect("the latest slot");
    assert_eq!((run.slot, run.enqueued), (at(23, 3, 0), 3));
    assert_eq!(s.missed_slots(at(23, 2, 0), back, catch_up).len(), 59, "the minutes in between are skipped");
    assert!(schedule::tick(&env.pool, &s, back, catch_up, "restarted again").await.unwrap().is_none());
    let per = jobs_per_tenant_and_slot(&env, "BackupTenant").await;
    assert_eq!(per.len(), 2 * slugs.len(), "one job per tenant for the old slot and one for the latest: {per:?}");
}

#[tokio::test]
async fn scheduled_jobs_built_in_sql_run_in_the_worker() {
    let env = TestEnv::new().await;
    let a = env.provisioned(&env.slug("sa"), "starter").await;
    let b = env.provisioned(&env.slug("sb"), "enterprise").await;
    let all = Schedule::all(&SchedulerConfig::default()).unwrap();
    for name in ["nightly_backup", "weekly_maintenance", "daily_cleanup"] {
        let s = all.iter().find(|s| s.name == name).unwrap();
        // A slot over a week old: its spread run_at values are past whatever the time of day.
        let slot = s.current_slot(Utc::now() - chrono::Duration::days(8)).unwrap();
        schedule::fan_out(&env.pool, s, slot, "test").await.unwrap();
    }
    let fanned_out: i64 =
        sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job_type <> 'SendWelcomeMail'").fetch_one(&env.pool).await.unwrap();
    assert_eq!(fanned_out, 2 * 3 + 1, "three fan-outs over two tenants, plus one PruneJobs");
    let all_done = || async {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE status <> 'done'").fetch_one(&env.pool).await.unwrap();
        pending == 0
    };
    env.run_worker_until(Duration::from_secs(120), all_done).await;
    let scheduled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_master.backups WHERE kind = 'scheduled' AND finished_at IS NOT NULL")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(scheduled, 2);
    for t in [&a, &b] {
        let actions: Vec<String> =
            sqlx::query_scalar("SELECT action FROM tenant_master.activity_log WHERE tenant_id = $1 AND actor = 'scheduler'")
                .bind(t.id)
                .fetch_all(&env.pool)
                .await
                .unwrap();
        assert!(actions.contains(&"tenant.maintenance".to_owned()) && actions.contains(&"tenant.cleanup".to_owned()), "{actions:?}");
    }
}

#[tokio::test]
async fn cleanup_deletes_exactly_the_rows_older_than_the_cutoff() {
    let env = TestEnv::new().await;
    let app = env.app();
    let tenant = env.provisioned(&env.slug("clean"), "starter").await;
    let mut own = env.as_tenant(&tenant.slug).await;
    sqlx::raw_sql(
        "INSERT INTO events (kind, created_at) SELECT 'old', now() - interval '400 days' FROM generate_series(1, 12003);
         INSERT INTO events (kind, created_at) SELECT 'edge-keep', now() - interval '364 days 23 hours' FROM generate_series(1, 4);
         INSERT INTO events (kind, created_at) SELECT 'new', now() FROM generate_series(1, 5);",
    )
    .execute(&mut own)
    .await
    .unwrap();

    let dry = maintenance::cleanup(&app, &tenant.slug, 365, true, "test").await.unwrap();
    assert_eq!(dry.tables, vec![("events".to_owned(), 12003)]);
    assert_eq!(
        counts(&mut own).await,
        vec![("edge-keep".into(), 4), ("new".into(), 5), ("old".into(), 12003)],
        "a dry run deletes nothing"
    );

    let real = maintenance::cleanup(&app, &tenant.slug, 365, false, "test").await.unwrap();
    assert_eq!(real.tables, vec![("events".to_owned(), 12003)], "more than two batches");
    assert_eq!(counts(&mut own).await, vec![("edge-keep".into(), 4), ("new".into(), 5)]);
    let again = maintenance::cleanup(&app, &tenant.slug, 365, false, "test").await.unwrap();
    assert_eq!(again.tables, vec![("events".to_owned(), 0)], "safe to repeat");
}

#[tokio::test]
async fn vacuum_and_reindex_run_in_both_isolation_modes() {
    let env = TestEnv::new().await;
    let app = env.app();
    for plan in ["starter", "enterprise"] {
        let tenant = env.provisioned(&env.slug(&format!("v{}", &plan[..1])), plan).await;
        let mut db = env.admin(&tenant.database).await;
        let index = format!("{}.events_created_at_idx", tenant.schema);
        let (vacuums, analyzes) = stats(&mut db, &tenant.schema).await;
        let node = filenode(&mut db, &index).await;
        let tasks = maintenance::Tasks { vacuum: true, analyze: true, reindex: true, full: false };
        let report = maintenance::maintain(&app, &tenant.slug, tasks, "test").await.unwrap();
        assert_eq!(report.tables, 3, "{plan}: projects, tasks, events");
        assert_eq!(stats(&mut db, &tenant.schema).await, (vacuums + 1, analyzes + 1), "{plan}: VACUUM (ANALYZE) ran on events");
        assert_ne!(filenode(&mut db, &index).await, node, "{plan}: the index was rebuilt");
    }
}

#[tokio::test]
async fn prune_jobs_deletes_only_old_finished_rows() {
    let env = TestEnv::new().await;
    for i in 0..6 {
        sqlx::query("SELECT tenant_master.enqueue('PruneJobs', $1)")
            .bind(serde_json::json!({ "done_older_than_days": 7, "dead_older_than_days": 30, "n": i }))
            .execute(&env.pool)
            .await
            .unwrap();
    }
    // Two done long ago, one done recently, one dead long ago, two pending.
    sqlx::raw_sql(
        "WITH j AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM apalis.jobs)
         UPDATE apalis.jobs SET
           status = CASE WHEN j.n <= 3 THEN 'Done' WHEN j.n = 4 THEN 'Killed' ELSE 'Pending' END,
           done_at = CASE WHEN j.n <= 2 THEN now() - interval '10 days' WHEN j.n = 3 THEN now() - interval '1 day'
                          WHEN j.n = 4 THEN now() - interval '40 days' END
         FROM j WHERE j.id = apalis.jobs.id",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let report = prune::prune_jobs(&env.pool, 7, 30).await.unwrap();
    assert_eq!((report.done, report.dead), (2, 1));
    let left: Vec<String> = sqlx::query_scalar("SELECT status FROM tenant_master.jobs ORDER BY id").fetch_all(&env.pool).await.unwrap();
    assert_eq!(left, vec!["done", "pending", "pending"]);
}

#[tokio::test]
async fn schedule_and_maintenance_commands() {
    let env = TestEnv::new().await;
    registered(&env, 2).await;
    let out = env.tenantctl(&["schedule", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["daily_cleanup", "monthly_vacuum", "nightly_backup", "weekly_maintenance"]);
    assert!(list.as_array().unwrap().iter().all(|s| !s["cron"].is_null() && !s["next_run"].is_null()));

    let run = |slot: &str| env.tenantctl(&["schedule", "run", "nightly_backup", "--slot", slot, "--json"]);
    let first: serde_json::Value = serde_json::from_slice(&run("2026-11-23T02:00:00Z").stdout).unwrap();
    let second: serde_json::Value = serde_json::from_slice(&run("2026-11-23T02:00:00Z").stdout).unwrap();
    assert_eq!((first["enqueued"].as_i64(), second["enqueued"].as_i64()), (Some(2), Some(0)));
    // The command it suggests to follow the jobs works as printed (issue 25).
    for name in ["nightly_backup", "daily_cleanup", "weekly_maintenance"] {
        let out = env.tenantctl(&["schedule", "run", name, "--slot", "2026-11-01T05:00:00Z"]);
        let out = if out.status.success() { out } else { env.tenantctl(&["schedule", "run", name]) };
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        let suggested = said.split("`tenantctl ").nth(1).and_then(|rest| rest.split('`').next()).unwrap_or_else(|| panic!("{said}"));
        let args: Vec<&str> = suggested.split_whitespace().collect();
        let follow = env.tenantctl(&args);
        assert!(follow.status.success(), "`tenantctl {suggested}`: {}", String::from_utf8_lossy(&follow.stderr));
    }
    let bad = run("2026-11-23T02:30:00Z");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a slot of nightly_backup"));

    let nothing = env.tenantctl(&["maintenance", "--all"]);
    assert_eq!(nothing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("say what to do"));
    let before = env.job_count().await;
    let ok = env.tenantctl(&["maintenance", "--all", "--vacuum", "--cleanup", "--days", "30", "--dry-run", "--json"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(env.job_count().await, before + 4, "a Cleanup and a Vacuum job per tenant");
}
