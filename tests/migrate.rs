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
