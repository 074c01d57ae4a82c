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
    assert!(env.tenantctl(&["migrate"]).status.success());
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
