//! `tenantctl migrate`: ours and the queue's migrations, twice, in either order.

use tenant_master::migrate;
use tenant_master_tests::TestEnv;

async fn histories(env: &TestEnv) -> (i64, i64) {
    let ours = sqlx::query_scalar("SELECT count(*) FROM tenant_master.schema_migrations").fetch_one(&env.pool).await.unwrap();
    let queue = sqlx::query_scalar("SELECT count(*) FROM apalis._sqlx_migrations").fetch_one(&env.pool).await.unwrap();
    (ours, queue)
}

#[tokio::test]
async fn migrating_twice_in_either_order_is_clean() {
    for queue_first in [true, false] {
        let env = TestEnv::unmigrated().await;
        for _ in 0..2 {
            if queue_first {
                migrate::queue(&env.pool).await.unwrap();
                migrate::control_plane(&env.pool).await.unwrap();
            } else {
                migrate::control_plane(&env.pool).await.unwrap();
                migrate::queue(&env.pool).await.unwrap();
            }
        }
        let after_parts = histories(&env).await;
        let first = migrate::run(&env.config).await.unwrap();
        let second = migrate::run(&env.config).await.unwrap();
        assert!(first.applied.is_empty() && second.applied.is_empty(), "nothing left to apply");
        assert_eq!(second.products, vec!["demo".to_owned()]);
        assert_eq!(histories(&env).await, after_parts, "a rerun records nothing new");
        assert_eq!(after_parts.0, migrate::known_versions().len() as i64, "each control-plane migration recorded once");
        assert!(after_parts.1 >= 20, "the queue's own history is separate and complete");
        // The admin view over the queue works once both are in place.
        let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs").fetch_one(&env.pool).await.unwrap();
        assert_eq!(jobs, 0);
        // One wake-up per statement (ours), not apalis's one per row, whatever the order.
        let triggers: Vec<String> = sqlx::query_scalar(
            "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'apalis.jobs'::regclass AND NOT tgisinternal ORDER BY 1",
        )
        .fetch_all(&env.pool)
        .await
        .unwrap();
        assert_eq!(triggers, vec!["tenant_master_notify_new_jobs"]);
    }
}

#[tokio::test]
async fn migrate_creates_a_missing_database_and_closes_it_to_public() {
    let env = TestEnv::new().await;
    let mut conn = env.admin("postgres").await;
    let public_can_connect: bool = sqlx::query_scalar("SELECT has_database_privilege('public', $1, 'CONNECT')")
        .bind(env.config.database_url.rsplit('/').next().unwrap())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!public_can_connect, "tenant roles must not reach the registry");
}

/// Job types come from the registry: a build whose type has no row yet is not current
/// (commands say to migrate), and an older build's `migrate` does not turn back a control
/// plane that a newer one wrote (a type it does not know).
#[tokio::test]
async fn job_types_missing_or_newer_stop_in_one_sentence() {
    let env = TestEnv::new().await;
    sqlx::query("DELETE FROM tenant_master.job_types WHERE job_type = 'Noop'").execute(&env.pool).await.unwrap();
    let out = env.tenantctl(&["jobs", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", tenant_master_tests::stderr(&out));
    assert!(
        tenant_master_tests::stderr(&out).contains("does not know job type(s) Noop: run `tenantctl migrate`"),
        "{}",
        tenant_master_tests::stderr(&out)
    );
    let out = env.tenantctl(&["migrate"]);
    assert!(out.status.success(), "{}", tenant_master_tests::stderr(&out));
    assert!(env.tenantctl(&["jobs", "list"]).status.success(), "the row is back");

    sqlx::query("UPDATE tenant_master.job_types SET max_attempts = 20 WHERE job_type = 'BackupTenant'").execute(&env.pool).await.unwrap();
    sqlx::query("INSERT INTO tenant_master.job_types (job_type, max_attempts, description) VALUES ('NewerOnly', 3, 'from a newer build')")
        .execute(&env.pool)
        .await
        .unwrap();
    let out = env.tenantctl(&["migrate"]);
    let said = tenant_master_tests::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("knows job type(s) NewerOnly that this build does not"), "{said}");
    let kept: i32 = sqlx::query_scalar("SELECT max_attempts FROM tenant_master.job_types WHERE job_type = 'BackupTenant'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(kept, 20, "nothing of the newer build's rows was turned back");
}

/// A control plane as the apalis-postgres fetch path left it (its indexes, the worker
/// foreign key, migration 0019 not applied) with jobs in every state: after `tenantctl
/// migrate`, the queue has only the indexes its statements use, and the new worker runs
/// the pending, failed and orphaned jobs while the dead and done ones stay as they were.
#[tokio::test(flavor = "multi_thread")]
async fn the_new_fetch_path_keeps_an_old_queues_jobs() {
    let env = TestEnv::new().await;
    sqlx::raw_sql(
        "DROP INDEX apalis.jobs_held_by_worker;
         CREATE UNIQUE INDEX unique_job_id ON apalis.jobs (id);
         CREATE INDEX idx_apalis_jobs_lock_by ON apalis.jobs (lock_by);
         CREATE INDEX lidx ON apalis.jobs (lock_by);
         CREATE UNIQUE INDEX unique_worker_id ON apalis.workers (id);
         CREATE INDEX lsidx ON apalis.workers (last_seen);
         CREATE INDEX wtidx ON apalis.workers (worker_type);
         ALTER TABLE apalis.jobs ADD CONSTRAINT fk_worker_lock_by FOREIGN KEY (lock_by) REFERENCES apalis.workers (id);
         DELETE FROM tenant_master.schema_migrations WHERE version = 19;
         INSERT INTO apalis.workers (id, worker_type, storage_name, last_seen) VALUES ('Noop-oldhost-7-0-0-0', 'Noop', 'PgStorage', now() - interval '1 day');
         INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, lock_by, lock_at, done_at, last_result) VALUES
           ('01JOLDPENDING0000000000000', 'Noop', convert_to('{}', 'UTF8'), 'Pending', 0, 3, now(), NULL, NULL, NULL, NULL),
           ('01JOLDFAILED00000000000000', 'Noop', convert_to('{}', 'UTF8'), 'Failed', 1, 3, now() - interval '1 minute', 'Noop-oldhost-7-0-0-0', now() - interval '2 minutes', now() - interval '2 minutes', '{\"Err\": \"boom\"}'),
           ('01JOLDORPHAN00000000000000', 'Noop', convert_to('{}', 'UTF8'), 'Queued', 0, 3, now() - interval '1 hour', 'Noop-oldhost-7-0-0-0', now() - interval '1 hour', NULL, NULL),
           ('01JOLDDEAD0000000000000000', 'Noop', convert_to('{}', 'UTF8'), 'Killed', 1, 3, now() - interval '1 hour', 'Noop-oldhost-7-0-0-0', now() - interval '1 hour', now() - interval '1 hour', '{\"Err\": \"gave up\"}'),
           ('01JOLDDONE0000000000000000', 'Noop', convert_to('{}', 'UTF8'), 'Done', 1, 3, now() - interval '1 hour', 'Noop-oldhost-7-0-0-0', now() - interval '1 hour', now() - interval '1 hour', '{\"Ok\": \"then\"}');",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let out = env.tenantctl(&["migrate"]);
    assert!(out.status.success(), "{}", tenant_master_tests::stderr(&out));
    assert!(tenant_master_tests::stdout(&out).contains("0019_own_fetch_path"), "{}", tenant_master_tests::stdout(&out));
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'apalis' AND tablename IN ('jobs', 'workers') ORDER BY 1",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        indexes,
        [
            "idx_apalis_jobs_fetch_partial",
            "idx_apalis_workers_last_seen",
            "idx_apalis_workers_worker_type",
            "idx_jobs_idempotency_key",
            "jobs_held_by_worker",
            "jobs_pkey",
            "workers_pkey"
        ]
    );
    let status = |id: &'static str| {
        let pool = env.pool.clone();
        async move { tenant_master::queue::get(&pool, id).await.unwrap() }
    };
    env.run_worker_until(std::time::Duration::from_secs(60), || async {
        let mut all_done = true;
        for id in ["01JOLDPENDING0000000000000", "01JOLDFAILED00000000000000", "01JOLDORPHAN00000000000000"] {
            all_done &= status(id).await.status == "done";
        }
        all_done
    })
    .await;
    assert_eq!(status("01JOLDFAILED00000000000000").await.attempts, 2, "the failed job ran once more");
    assert_eq!(status("01JOLDORPHAN00000000000000").await.attempts, 2, "the orphan's lost attempt counts");
    let dead = status("01JOLDDEAD0000000000000000").await;
    assert_eq!((dead.status.as_str(), dead.last_error.as_deref()), ("dead", Some("gave up")));
    let done = status("01JOLDDONE0000000000000000").await;
    assert_eq!((done.status.as_str(), done.result), ("done", Some(serde_json::json!("then"))));
}
