//! Rolling a product's new migration out to existing tenants (issue 13): through the real
//! `tenantctl` and `tenant-worker` processes, against the real server.

use std::{path::Path, time::Duration};

use sqlx::AssertSqlSafe;
use tenant_master::{ops::access::Change, tenants::Tenant};
use tenant_master_tests::{eventually, TempDir, TestEnv};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

async fn rollout_jobs(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE type = 'MigrateTenant'").fetch_one(&env.pool).await.unwrap()
}

fn add_third(products: &Path, extra: &str) {
    std::fs::write(
        products.join("demo/0003_labels.sql"),
        format!("CREATE TABLE labels (id serial PRIMARY KEY, name text NOT NULL);\nCREATE INDEX ON labels (name);\nINSERT INTO events (kind) VALUES ('migrated-0003');\n{extra}"),
    )
    .unwrap();
}

/// (ledger versions, rows the third migration wrote, whether its table exists), as an admin sees them.
async fn state(env: &TestEnv, t: &Tenant) -> (Vec<i64>, i64, bool) {
    let mut db = env.admin(&t.database).await;
    let versions = sqlx::query_scalar("SELECT version FROM tenant_master_meta.applied_migrations WHERE schema_name = $1 ORDER BY 1")
        .bind(&t.schema)
        .fetch_all(&mut db)
        .await
        .unwrap();
    let rows = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM \"{}\".events WHERE kind = 'migrated-0003'", t.schema)))
        .fetch_one(&mut db)
        .await
        .unwrap();
    let table =
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(format!("\"{}\".labels", t.schema)).fetch_one(&mut db).await.unwrap();
    (versions, rows, table)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_goes_canary_first_stops_one_failing_tenant_and_resumes() {
    let products = tenant_master_tests::demo_products();
    let dir = products.path().to_owned();
    let env = TestEnv::with_products(products).await;
    let app = env.app();
    let mut tenants = Vec::new();
    for (i, plan) in ["starter", "starter", "business", "enterprise", "enterprise"].iter().enumerate() {
        tenants.push(env.provisioned(&env.slug(&format!("ro{i}")), plan).await);
    }
    // A paused tenant is migrated too; a deleted one never.
    tenant_master::ops::access::change_access(&app, &tenants[2].slug, Change::Pause, None, "test").await.unwrap();
    let gone = env.provisioned(&env.slug("gone"), "starter").await;
    tenant_master::ops::delete::delete(&app, &gone.slug, Some(gone.id), "job-gone", "test").await.unwrap();
    // Tenant 4 made a table of the name the new migration creates: it will fail there.
    let conflicted = tenants[4].clone();
    let mut own = env.as_tenant(&conflicted.slug).await;
    sqlx::query("CREATE TABLE labels (id int)").execute(&mut own).await.unwrap();
    drop(own);

    add_third(&dir, "");
    let out = env.tenantctl(&["migrate"]);
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("5 tenant(s) lack product migrations") && said.contains("tenantctl tenant migrate --all"), "{said}");

    // Dry run: exactly the pending ones, and nothing changes.
    let dry = json(&env.tenantctl(&["tenant", "migrate", "--all", "--dry-run", "--json"]));
    let listed: Vec<&str> = dry["pending"].as_array().unwrap().iter().map(|p| p["slug"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = tenants.iter().map(|t| t.slug.as_str()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    assert!(dry["pending"].as_array().unwrap().iter().all(|p| p["pending"] == serde_json::json!(["0003_labels"]) && p["version"] == 2));
    assert_eq!(rollout_jobs(&env).await, 0, "a dry run enqueues nothing");
    assert_eq!(state(&env, &tenants[0]).await, (vec![1, 2], 0, false));
    let outdated = json(&env.tenantctl(&["tenant", "list", "--outdated", "--json"]));
    assert_eq!(outdated.as_array().unwrap().len(), 5, "{outdated}");
    assert!(outdated.as_array().unwrap().iter().all(|t| t["version"] == 2 && t["pending"] == 1));

    let logs = TempDir::new("logs");
    let mut worker = env.spawn_worker(&logs.path().join("worker.log"));
    // The canary: two tenants.
    let out = env.tenantctl(&["tenant", "migrate", &tenants[0].slug, &tenants[3].slug, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrated 2 tenant(s), 0 failed"));
    assert_eq!(state(&env, &tenants[0]).await, (vec![1, 2, 3], 1, true));
    assert_eq!(state(&env, &tenants[3]).await, (vec![1, 2, 3], 1, true));
    assert_eq!(state(&env, &tenants[1]).await, (vec![1, 2], 0, false), "the canary touched only its tenants");

    // Everyone: the conflicted tenant fails alone; its version stays; the rest go on.
    let out = env.tenantctl(&["tenant", "migrate", "--all", "--wait", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = json(&out);
    assert_eq!((summary["succeeded"].as_i64(), summary["up_to_date"].as_i64()), (Some(2), Some(2)), "{summary}");
    let failed = summary["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{summary}");
    assert_eq!(failed[0]["tenant"], conflicted.slug.as_str());
    assert!(failed[0]["error"].as_str().unwrap().contains("already exists"), "{summary}");
    for t in &tenants[..4] {
        assert_eq!(state(&env, t).await, (vec![1, 2, 3], 1, true), "{}", t.slug);
    }
    assert_eq!(state(&env, &conflicted).await.0, vec![1, 2]);
    let shown = json(&env.tenantctl(&["tenant", "show", &conflicted.slug, "--json"]));
    assert_eq!((shown["version"].as_i64(), shown["pending"].as_i64()), (Some(2), Some(1)), "{shown}");
    assert!(shown["migration_error"].as_str().unwrap().contains("already exists"), "{shown}");
    assert_eq!(env.tenant_status(&tenants[2].slug).await.as_deref(), Some("paused"), "migrated, still paused");

    // Fixed by hand; the same command again migrates only that tenant.
    let mut own = env.as_tenant(&conflicted.slug).await;
    sqlx::query("DROP TABLE labels").execute(&mut own).await.unwrap();
    drop(own);
    let out = env.tenantctl(&["tenant", "migrate", "--all", "--wait", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = json(&out);
    assert_eq!((summary["succeeded"].as_i64(), summary["up_to_date"].as_i64()), (Some(1), Some(4)), "{summary}");
    assert_eq!(state(&env, &conflicted).await, (vec![1, 2, 3], 1, true));
    let shown = json(&env.tenantctl(&["tenant", "show", &conflicted.slug, "--json"]));
    assert!(shown["migration_error"].is_null() && shown["pending"] == 0, "{shown}");
    let outdated = json(&env.tenantctl(&["tenant", "list", "--outdated", "--json"]));
    assert_eq!(outdated.as_array().unwrap().len(), 0, "{outdated}");
    // Nothing pending anywhere: no job at all.
    let before = rollout_jobs(&env).await;
    let out = env.tenantctl(&["tenant", "migrate", "--all"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("enqueued 0 MigrateTenant job(s); 5 tenant(s) up to date"));
    assert_eq!(rollout_jobs(&env).await, before);
    let _ = worker.kill();
    let _ = worker.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_rollout_loses_no_tenant_and_applies_nothing_twice() {
    let products = tenant_master_tests::demo_products();
    let dir = products.path().to_owned();
    let env = TestEnv::with_products(products).await;
    let mut tenants = Vec::new();
    for (i, plan) in ["starter", "starter", "enterprise", "business"].iter().enumerate() {
        tenants.push(env.provisioned(&env.slug(&format!("rk{i}")), plan).await);
    }
    // Slow enough to be killed inside.
    add_third(&dir, "SELECT pg_sleep(3);\n");
    let out = env.tenantctl(&["tenant", "migrate", "--all"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let logs = TempDir::new("logs");
    let mut worker = env.spawn_worker(&logs.path().join("first.log"));
    eventually(Duration::from_secs(60), "a migration in progress", || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%' AND pid <> pg_backend_pid()")
                .fetch_one(&env.pool)
                .await
                .unwrap();
        n > 0
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    let mut worker = env.spawn_worker(&logs.path().join("second.log"));
    eventually(Duration::from_secs(120), "every tenant migrated", || async {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE type = 'MigrateTenant' AND status = 'done'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        done == 4
    })
    .await;
    for t in &tenants {
        assert_eq!(state(&env, t).await, (vec![1, 2, 3], 1, true), "{}: applied exactly once", t.slug);
    }
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE status = 'dead'").fetch_one(&env.pool).await.unwrap();
    assert_eq!(dead, 0);
    let _ = worker.kill();
    let _ = worker.wait();
}

/// A migration file edited after it ran stops the rollout.
mod edited_files {

    use tenant_master::ops::migrations;
    use tenant_master_tests::stderr;
    use tenant_master_tests::TestEnv;

    /// Finding 6. A migration file edited after part of the fleet ran it: the dry run and the
    /// rollout say nothing, the rest of the fleet silently gets the new text, and the two
    /// halves end at the same "version 3" with different schemas. The checksum guard only
    /// fires later, on the first half, when a 0004 arrives.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_edited_migration_file_stops_the_rollout() {
        let products = tenant_master_tests::demo_products();
        let dir = products.path().to_owned();
        let env = TestEnv::with_products(products).await;
        let app = env.app();
        let early = env.provisioned(&env.slug("early"), "starter").await;
        let late = env.provisioned(&env.slug("late"), "starter").await;
        tenant_master_tests::write_demo_migration_3(&dir, "CREATE TABLE labels (id int);\n");
        migrations::migrate_tenant_to(&app, &early.slug, Some(early.id), Some(3), "canary").await.unwrap();
        // The file is edited after the canary.
        tenant_master_tests::write_demo_migration_3(&dir, "CREATE TABLE tags (id int);\n");
        for args in [vec!["tenant", "migrate", "--all", "--dry-run"], vec!["tenant", "migrate", "--all"]] {
            let out = env.tenantctl(&args);
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            assert!(stderr(&out).contains("0003_labels of 'demo' changed after it was applied"), "{}", stderr(&out));
        }
        assert_eq!(env.ledger(&late).await, vec![1, 2], "nothing ran on the rest of the fleet");
        assert!(!env.has_table(&late, "tags").await);
    }
}
