//! A second database host (issue 14, first part): a private PostgreSQL server of the test's
//! own, added with `tenantctl host add`, listed, used for a tenant's whole life (provision,
//! backup, restore, delete), disabled and enabled. Its admin URL never passes through argv
//! and is stored sealed.

use std::time::Duration;

use sqlx::Connection;

use tenant_master_tests::{json, private_server::PrivateServer, stderr, stdout, TempDir, TestEnv};

#[tokio::test(flavor = "multi_thread")]
async fn a_second_server_is_added_used_for_a_tenant_and_disabled() {
    let second = PrivateServer::start();
    let env = TestEnv::new().await;
    let add = |name: &str, url: &str| {
        env.tenantctl_command(&["host", "add", name, "--admin-url-env", "SECOND_ADMIN_URL", "--capacity", "50"])
            .env("SECOND_ADMIN_URL", url)
            .output()
            .unwrap()
    };

    // Refused with one sentence, nothing registered: unreachable, not PostgreSQL, bad name.
    let out = add("second", "postgres://127.0.0.1:1/postgres");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("host 'second' was not added"), "{}", stderr(&out));
    let out = add("second", "mysql://127.0.0.1/x");
    assert!(stderr(&out).contains("must start with postgres://"), "{}", stderr(&out));
    let out = add("Bad Name", &second.url());
    assert!(stderr(&out).contains("invalid host name"), "{}", stderr(&out));
    let hosts: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.db_hosts").fetch_one(&env.pool).await.unwrap();
    assert_eq!(hosts, 1, "only the default host");

    let out = add("second", &second.url());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("added host 'second'"), "{}", stdout(&out));
    let out = add("second", &second.url());
    assert!(stderr(&out).contains("exists already"), "{}", stderr(&out));
    // Stored sealed: the control plane does not hold the URL.
    let stored: String =
        sqlx::query_scalar("SELECT admin_url FROM tenant_master.db_hosts WHERE name = 'second'").fetch_one(&env.pool).await.unwrap();
    assert!(stored.starts_with("tmenc1:") && !stored.contains("127.0.0.1"), "{stored}");

    let listed = json(&env.tenantctl(&["host", "list", "--json"]));
    let row = listed.as_array().unwrap().iter().find(|h| h["name"] == "second").unwrap().clone();
    assert_eq!((row["reachable"].as_bool(), row["capacity"].as_i64(), row["tenants"].as_i64()), (Some(true), Some(50), Some(0)), "{row}");
    assert!(row["server_version"].as_str().unwrap().starts_with("15"), "{row}");
    let out = env.tenantctl(&["host", "lockdown", "second", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.tenantctl(&["host", "check", "second"]);
    assert!(out.status.success() && stdout(&out).contains("tenant roles reach their own database only"), "{}", stdout(&out));

    // A tenant's life on the second server, through the worker.
    let logs = TempDir::new("logs");
    let mut worker = env.spawn_worker(&logs.path().join("worker.log"));
    let slug = env.slug("far");
    let out = env.tenantctl(&[
        "tenant",
        "create",
        &slug,
        "--product",
        "demo",
        "--plan",
        "enterprise",
        "--owner-email",
        "o@example.com",
        "--host",
        "second",
        "--wait",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut on_second = {
        let options = tenant_master::db::options(&second.url()).unwrap();
        tenant_master::db::connect_to(&options, "postgres").await.unwrap()
    };
    let database = format!("{}demo__{slug}", env.config.database_prefix);
    let there: (bool, bool) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1), EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2)")
            .bind(&database)
            .bind(format!("t_{slug}"))
            .fetch_one(&mut on_second)
            .await
            .unwrap();
    assert_eq!(there, (true, true), "the tenant's database and role are on the second server");
    let mut shared = env.admin("postgres").await;
    let here: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&database)
        .fetch_one(&mut shared)
        .await
        .unwrap();
    assert!(!here, "nothing of it on the first server");
    let url = stdout(&env.tenantctl(&["tenant", "credentials", &slug])).trim().to_owned();
    assert!(
        url.contains(&format!(":{}/", second.url().split(':').nth(2).unwrap().split('/').next().unwrap())),
        "credentials name the second server"
    );
    let mut own = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("INSERT INTO projects (name) VALUES ('far away')").execute(&mut own).await.unwrap();
    drop(own);
    for args in [vec!["backup", "create", &slug, "--wait"], vec!["backup", "restore", &slug, "--latest", "--yes", "--wait"]] {
        let out = env.tenantctl(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let mut own = sqlx::PgConnection::connect(&url).await.unwrap();
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM projects").fetch_all(&mut own).await.unwrap();
    assert_eq!(names, vec!["far away"]);
    drop(own);

    // Disabled: no new tenant there, one sentence; enabled again: it takes tenants.
    let out = env.tenantctl(&["host", "disable", "second"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.tenantctl(&[
        "tenant",
        "create",
        &env.slug("nope"),
        "--product",
        "demo",
        "--plan",
        "starter",
        "--owner-email",
        "o@example.com",
        "--host",
        "second",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("host 'second' is disabled"), "{}", stderr(&out));
    assert_eq!(env.tenant_status(&env.slug("nope")).await, None, "nothing registered");
    let out = env.tenantctl(&["host", "enable", "second"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = env.tenantctl(&["tenant", "delete", &slug, "--yes", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let gone: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&database)
        .fetch_one(&mut on_second)
        .await
        .unwrap();
    assert!(gone, "deleted on the second server");
    let _ = worker.kill();
    let _ = worker.wait();
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// One server is one host, and a host that is down holds up no other.
mod one_server_one_host {
    use tenant_master_tests::TestEnv;
    use tenant_master_tests::{stderr, stdout};

    /// Finding 5. The same server can be added twice (or the control plane's own server again
    /// next to `default`): every per-host bound (migrations_per_host, heavy_jobs_per_host,
    /// capacity) then counts twice for one server.
    #[tokio::test(flavor = "multi_thread")]
    async fn one_server_cannot_be_added_as_a_second_host() {
        let env = TestEnv::new().await;
        let url = tenant_master_tests::server_url();
        let out = env.tenantctl_command(&["host", "add", "twin-a", "--admin-url-env", "TWIN_URL"]).env("TWIN_URL", &url).output().unwrap();
        assert!(!out.status.success());
        assert!(stderr(&out).contains("same PostgreSQL server as host 'default'"), "{}", stderr(&out));
    }

    /// Finding 8. One host that cannot be reached stops every rollout, also for the tenants on
    /// healthy hosts (`plan` reads all ledgers first and fails on the first error).
    #[tokio::test(flavor = "multi_thread")]
    async fn one_host_that_is_down_does_not_hold_up_the_others() {
        let products = tenant_master_tests::demo_products();
        let dir = products.path().to_owned();
        let env = TestEnv::with_products(products).await;
        let healthy = env.provisioned(&env.slug("healthy"), "starter").await;
        let stranded = env.provisioned(&env.slug("stranded"), "enterprise").await;
        tenant_master_tests::write_demo_migration_3(&dir, "CREATE TABLE labels (id int);\n");
        // The second tenant's host goes away (a server down for maintenance).
        sqlx::query("INSERT INTO tenant_master.db_hosts (name, admin_url) VALUES ('gone', 'postgres://127.0.0.1:1/postgres')")
            .execute(&env.pool)
            .await
            .unwrap();
        sqlx::query("UPDATE tenant_master.tenants SET host = 'gone' WHERE id = $1").bind(stranded.id).execute(&env.pool).await.unwrap();
        let out = env.tenantctl(&["tenant", "migrate", "--all", "--dry-run"]);
        println!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(1), "a skipped tenant makes the exit code 1");
        assert!(stdout(&out).contains(&healthy.slug), "the healthy tenant is listed");
        assert!(stderr(&out).contains(&format!("skipped {}", stranded.slug)), "{}", stderr(&out));
        let out = env.tenantctl(&["tenant", "migrate", "--all"]);
        assert_eq!(out.status.code(), Some(1));
        let jobs: Vec<String> =
            sqlx::query_scalar("SELECT tenant FROM tenant_master.jobs WHERE type = 'MigrateTenant'").fetch_all(&env.pool).await.unwrap();
        assert_eq!(jobs, vec![healthy.slug.clone()]);
    }
}
