//! The worker runtime, rollouts and hosts as an operator, a hostile tenant and a careless
//! admin would break them (a review of issues 12 to 14): each test here failed before its
//! fix. A tenant cannot stall other tenants' migrations; a lost lock connection stops its
//! job; a password in a URL's query string is redacted; one server is one host; an edited
//! migration file stops the rollout; plan changes at once keep one history; one host that
//! is down does not hold up the others; a worker stays within its connection budget; a
//! restore brings back the version the tenant had, not the product's latest.

use std::{path::Path, time::Duration};

use tenant_master::{ops::migrations, tenants::Tenant};
use tenant_master_tests::{TempDir, TestEnv};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_third(products: &Path, sql: &str) {
    std::fs::write(products.join("demo/0003_labels.sql"), sql).unwrap();
}

async fn ledger(env: &TestEnv, t: &Tenant) -> Vec<i64> {
    let mut db = env.admin(&t.database).await;
    sqlx::query_scalar("SELECT version FROM tenant_master_meta.applied_migrations WHERE schema_name = $1 ORDER BY 1")
        .bind(&t.schema)
        .fetch_all(&mut db)
        .await
        .unwrap()
}

/// The tenant's operator sessions inside the slow migration's `pg_sleep`.
async fn sleeping(env: &TestEnv, t: &Tenant) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND query LIKE '%pg_sleep%' AND state = 'active'")
        .bind(format!("{}__op", t.role))
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

async fn has_table(env: &TestEnv, t: &Tenant, table: &str) -> bool {
    let mut db = env.admin(&t.database).await;
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(format!("\"{}\".{table}", t.schema)).fetch_one(&mut db).await.unwrap()
}

/// Finding 1. A tenant in a shared database takes the ledger's advisory lock (a constant
/// in ledger.rs; advisory locks need no privilege) and holds it: every other tenant's
/// migration in that database (and any provisioning there) hangs in `ledger::ensure`.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_holding_an_advisory_lock_stalls_no_other_tenant() {
    let products = tenant_master_tests::demo_products();
    let dir = products.path().to_owned();
    let env = TestEnv::with_products(products).await;
    let app = env.app();
    let evil = env.provisioned(&env.slug("evil"), "starter").await;
    let victim = env.provisioned(&env.slug("victim"), "starter").await;
    assert_eq!(evil.database, victim.database, "both share one database");
    write_third(&dir, "CREATE TABLE labels (id int);\n");

    let mut own = env.as_tenant(&evil.slug).await;
    // The key the ledger setup used to lock on (any role may take an advisory lock).
    sqlx::query("SELECT pg_advisory_lock(128013335622753)").execute(&mut own).await.expect("any role may take an advisory lock");

    let migrating = migrations::migrate_tenant_to(&app, &victim.slug, Some(victim.id), Some(3), "review");
    let res = tokio::time::timeout(Duration::from_secs(10), migrating).await;
    assert!(matches!(res, Ok(Ok(_))), "the victim's migration must not wait for the tenant's lock: {res:?}");
    assert_eq!(ledger(&env, &victim).await, vec![1, 2, 3]);
    let new = tenant_master::tenants::NewTenant::parse(&env.slug("newbie"), "demo", "starter", "o@example.com", None, None).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), tenant_master::jobs::provision_tenant::provision(&app, &new, "review")).await;
    assert!(matches!(res, Ok(Ok(_))), "provisioning must not wait for the tenant's lock: {res:?}");
}

/// Finding 3. The tenant lock is a session advisory lock on a control-plane connection
/// nobody watches. When that connection is lost (control-plane restart / failover /
/// pg_terminate_backend / a NAT dropping it) the job keeps running and a second job of the
/// same tenant runs at the same time.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_lock_connection_is_lost_stops_before_another_job_of_its_tenant_runs() {
    let products = tenant_master_tests::demo_products();
    let dir = products.path().to_owned();
    let env = TestEnv::with_products(products).await;
    let t = env.provisioned(&env.slug("locked"), "enterprise").await;
    write_third(&dir, "CREATE TABLE labels (id int);\nSELECT pg_sleep(20);\n");

    let logs = TempDir::new("logs");
    let log = logs.path().join("worker.log");
    let mut worker = env.spawn_worker(&log);
    let out = env.tenantctl(&["tenant", "migrate", &t.slug]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Wait until the migration is in its pg_sleep, holding the tenant lock.
    tenant_master_tests::eventually(Duration::from_secs(30), "the migration sleeping", || async { sleeping(&env, &t).await == 1 }).await;
    // The control-plane session holding the tenant lock goes away (as in a restart).
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.classid = x'746d746c'::int::oid AND l.granted
           AND l.objid::bigint = (hashtext($1)::bigint & 4294967295)
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(&t.slug)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(killed, vec![true], "one tenant lock was held");
    // The job notices within seconds and stops (its migration rolled back), before the
    // next job of the tenant could take the lock; then it runs again and finishes.
    tenant_master_tests::eventually(Duration::from_secs(20), "the migration to stop", || async { sleeping(&env, &t).await == 0 }).await;
    tenant_master_tests::eventually(Duration::from_secs(120), "the migration to run again and finish", || {
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM tenant_master.jobs WHERE type = 'MigrateTenant'")
                .fetch_one(&pool)
                .await
                .unwrap()
                == "done"
        }
    })
    .await;
    assert_eq!(ledger(&env, &t).await, vec![1, 2, 3]);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("lost the connection holding the tenant's lock"), "{text}");
    let _ = worker.kill();
    let _ = worker.wait();
}

/// Finding 4. `host add` with an invalid URL whose password is in the query string
/// (`?password=`, which sqlx/libpq accept) prints the password: `redact_url` only knows
/// `user:password@`.
#[tokio::test(flavor = "multi_thread")]
async fn a_password_in_a_urls_query_string_is_never_printed() {
    let env = TestEnv::new().await;
    let out = env
        .tenantctl_command(&["host", "add", "leaky", "--admin-url-env", "LEAKY_URL"])
        .env("LEAKY_URL", "postgres://127.0.0.1:5432/postgres?user=root&password=TopSecret123&sslmode=bogus")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    println!("{err}");
    assert!(!err.contains("TopSecret123") && err.contains("password=***"), "{err}");
}

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
    write_third(&dir, "CREATE TABLE labels (id int);\n");
    migrations::migrate_tenant_to(&app, &early.slug, Some(early.id), Some(3), "canary").await.unwrap();
    // The file is edited after the canary.
    write_third(&dir, "CREATE TABLE tags (id int);\n");
    for args in [vec!["tenant", "migrate", "--all", "--dry-run"], vec!["tenant", "migrate", "--all"]] {
        let out = env.tenantctl(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains("0003_labels of 'demo' changed after it was applied"), "{}", stderr(&out));
    }
    assert_eq!(ledger(&env, &late).await, vec![1, 2], "nothing ran on the rest of the fleet");
    assert!(!has_table(&env, &late, "tags").await);
}

/// Finding 7. Two admins change the plan of one tenant at once: `change` reads the current
/// plan before it takes the row lock, so the history records two changes "from" the same
/// plan (starter -> business, starter -> free) and never business -> free.
#[tokio::test(flavor = "multi_thread")]
async fn plan_changes_at_once_keep_one_history() {
    let env = TestEnv::new().await;
    let t = env.provisioned(&env.slug("plans"), "starter").await;
    // Hold the row so both admins read the plan, then queue on the lock.
    let mut holder = env.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tenant_master.tenants WHERE id = $1 FOR UPDATE").bind(t.id).execute(&mut *holder).await.unwrap();
    let (p1, p2) = (env.pool.clone(), env.pool.clone());
    let (c1, c2) = (env.config.clone(), env.config.clone());
    let (s1, s2) = (t.slug.clone(), t.slug.clone());
    let a = tokio::spawn(async move { tenant_master::jobs::change_plan::change(&p1, &c1, &s1, "business", None, "alice").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = tokio::spawn(async move { tenant_master::jobs::change_plan::change(&p2, &c2, &s2, "free", None, "bob").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.rollback().await.unwrap();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    let mut conn = env.pool.acquire().await.unwrap();
    let history = tenant_master::plans::history(&mut conn, t.id).await.unwrap();
    let steps: Vec<(String, String)> = history.iter().map(|h| (h.from_plan.clone(), h.to_plan.clone())).collect();
    println!("{steps:?}");
    assert_eq!(steps, vec![("starter".into(), "business".into()), ("business".into(), "free".into())]);
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
    write_third(&dir, "CREATE TABLE labels (id int);\n");
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

/// Control-plane sessions of process `pid` (by its TCP sockets' local ports, via `ss`).
async fn control_plane_sessions_of(env: &TestEnv, pid: u32) -> i64 {
    let out = std::process::Command::new("ss").args(["-tnpH", "state", "established"]).output().unwrap();
    let needle = format!("pid={pid},");
    let ports: Vec<i32> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.split_whitespace().nth(2).and_then(|local| local.rsplit(':').next()).and_then(|p| p.parse().ok()))
        .collect();
    let database = env.config.database_url.rsplit('/').next().unwrap().to_owned();
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND client_port = ANY($2)")
        .bind(database)
        .bind(&ports)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// Finding 9. The connection budget (`peak_control_plane_connections`, used by `tenantctl
/// check --workers N` and the README) counts `concurrency x workers_per_type` running jobs
/// per process, but every one of the 12 job types has its own workers: one process runs up
/// to 12x that many jobs, each waiting one holding a tenant-lock and a host-slot session
/// outside the bounded pool.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_stays_within_its_connection_budget() {
    let products = tenant_master_tests::demo_products();
    let dir = products.path().to_owned();
    let mut env = TestEnv::with_products(products).await;
    env.config.worker.concurrency = 1;
    env.config.worker.workers_per_type = 1;
    env.config.worker.batch_size = 1;
    env.config.worker.tenant_jobs_per_process = 1;
    let budget = tenant_master::worker::peak_control_plane_connections(&env.config);
    let t = env.provisioned(&env.slug("busy"), "enterprise").await;
    write_third(&dir, "CREATE TABLE labels (id int);\nSELECT pg_sleep(40);\n");

    let logs = TempDir::new("logs");
    let extra = [
        ("TENANT_MASTER_WORKER_CONCURRENCY", "1"),
        ("TENANT_MASTER_WORKER_WORKERS_PER_TYPE", "1"),
        ("TENANT_MASTER_WORKER_BATCH_SIZE", "1"),
        ("TENANT_MASTER_WORKER_TENANT_JOBS_PER_PROCESS", "1"),
    ];
    let mut worker = env.spawn_worker_with(&logs.path().join("worker.log"), &extra);
    let pid = worker.id();
    assert!(env.tenantctl(&["tenant", "migrate", &t.slug]).status.success());
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Ordinary admin requests for the same tenant while its migration runs.
    for args in [
        vec!["backup", "create", t.slug.as_str()],
        vec!["tenant", "pause", t.slug.as_str()],
        vec!["tenant", "delete", t.slug.as_str(), "--yes"],
    ] {
        let out = env.tenantctl(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let mut peak = 0;
    for _ in 0..40 {
        peak = peak.max(control_plane_sessions_of(&env, pid).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("budget per worker (concurrency 1, workers_per_type 1): {budget}; seen: {peak}");
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(peak >= 4 && peak <= budget as i64, "seen {peak} control-plane sessions, budget {budget}");
}

/// Finding 10. A restore brings the tenant to the product's *latest* migration, whatever
/// the rollout did: a migration still being canaried (or held back with `--to`) reaches a
/// tenant nobody chose, with auto_migrate off.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_brings_back_the_version_the_tenant_had() {
    let products = tenant_master_tests::demo_products();
    let dir = products.path().to_owned();
    let env = TestEnv::with_products(products).await;
    let app = env.app();
    let t = env.provisioned(&env.slug("restored"), "starter").await;
    let backup =
        tenant_master::ops::backup::backup(&app, &t.slug, tenant_master::backups::Kind::Manual, None, "review-backup").await.unwrap();
    // 0003 is added and held back (canary elsewhere, or `--to 2`).
    write_third(&dir, "CREATE TABLE labels (id int);\n");
    assert!(!env.config.products.auto_migrate);
    tenant_master::ops::restore::restore(&app, &t.slug, backup.id, "review-restore").await.unwrap();
    assert_eq!(ledger(&env, &t).await, vec![1, 2], "the restore applied no migration the rollout had not");
    assert!(!has_table(&env, &t, "labels").await);
}

/// What held up (not a finding): --to a missing version, --limit 0, both slugs and --all,
/// an unknown slug, the same host name twice; the stored URL is sealed.
#[tokio::test(flavor = "multi_thread")]
async fn admin_mistakes_are_refused_and_nothing_is_enqueued() {
    let env = TestEnv::new().await;
    let t = env.provisioned(&env.slug("fine"), "starter").await;
    for args in [
        vec!["tenant", "migrate", "--all", "--to", "99", "--dry-run"],
        vec!["tenant", "migrate", "--all", "--limit", "0"],
        vec!["tenant", "migrate", "--all", t.slug.as_str()],
        vec!["tenant", "migrate", "nosuchtenant"],
    ] {
        let out = env.tenantctl(&args);
        println!("{args:?} -> {:?}: {}", out.status.code(), stderr(&out).trim());
        assert!(!out.status.success());
    }
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM apalis.jobs WHERE job_type = 'MigrateTenant'")
            .fetch_one(&env.pool)
            .await
            .unwrap(),
        0
    );
}
