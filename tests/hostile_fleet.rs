//! Hostile tenants, second round (issue 24): what one tenant can do to the rest of the
//! fleet through what it controls, each played as the tenant, first by its own login and
//! then by its code inside our jobs.
//! - Its own ledger rows (tenant code may write them) stop its own rollout only.
//! - A reference from its schema into a neighbour's is listed by `tenantctl check`, and
//!   the neighbour's failing migration names it.
//! - Its slow jobs take one heavy slot at most, end within their time limit plus the
//!   close's grace, and leave no session behind; other tenants' backups go on meanwhile.

use std::time::{Duration, Instant};

use sqlx::AssertSqlSafe;
use tenant_master::{
    error::JobOutcome,
    jobs::{backup_tenant::BackupTenant, cleanup::Cleanup, vacuum::Vacuum},
    ops::{maintenance, maintenance::Tasks, migrations},
    queue,
    tenants::Tenant,
};
use tenant_master_tests::{json, stderr, stdout, TestEnv};

async fn ledger(env: &TestEnv, t: &Tenant) -> Vec<(i64, String)> {
    let mut db = env.admin(&t.database).await;
    sqlx::query_as("SELECT version, checksum FROM tenant_master_meta.applied_migrations WHERE schema_name = $1 ORDER BY 1")
        .bind(&t.schema)
        .fetch_all(&mut db)
        .await
        .unwrap()
}

async fn job_status(env: &TestEnv, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE id = $1").bind(id).fetch_one(&env.pool).await.unwrap()
}

/// Plants `body` as a BEFORE DELETE row trigger on the tenant's `events`, with one row
/// old enough for the nightly cleanup to delete, as the tenant's own login.
async fn plant_on_delete(env: &TestEnv, t: &Tenant, body: &str) {
    let mut own = env.as_tenant(&t.slug).await;
    let plant = format!(
        "CREATE FUNCTION {s}.on_delete() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN {body} RETURN OLD; END $f$;
         CREATE TRIGGER on_delete BEFORE DELETE ON {s}.events FOR EACH ROW EXECUTE FUNCTION {s}.on_delete();
         INSERT INTO {s}.events (kind, created_at) VALUES ('ancient', now() - interval '2 years');",
        s = t.schema
    );
    sqlx::raw_sql(AssertSqlSafe(plant)).execute(&mut own).await.unwrap();
}

/// The trick: inside a cleanup job, the tenant's trigger leaves its role for the
/// operator's and records a migration the product has not shipped yet, under a checksum
/// of its own. When the product ships that version, the rollout used to stop for every
/// tenant ("changed after it was applied to ..."); now it skips this one tenant, names
/// it, exits 1, and migrates the others.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_own_ledger_rows_stop_only_that_tenant() {
    let products = tenant_master_tests::demo_products();
    let dir = products.path().to_owned();
    let env = TestEnv::with_products(products).await;
    let app = env.app();
    let alpha = env.provisioned(&env.slug("alpha"), "starter").await;
    let evil = env.provisioned(&env.slug("evil"), "starter").await;
    let beta = env.provisioned(&env.slug("beta"), "business").await;
    let bogus = "b".repeat(64);
    // Rows too large to read back (they stopped every rollout) and versions of no file are
    // refused by the recording function itself; a checksum-shaped row goes in.
    let trick = format!(
        "RESET ROLE;
         BEGIN PERFORM tenant_master_meta.record_migration(1000, 'huge', repeat('x', 100000)); EXCEPTION WHEN OTHERS THEN NULL; END;
         BEGIN PERFORM tenant_master_meta.record_migration(-5, 'neg', '{bogus}'); EXCEPTION WHEN OTHERS THEN NULL; END;
         PERFORM tenant_master_meta.record_migration(3, 'evil', '{bogus}');"
    );
    plant_on_delete(&env, &evil, &trick).await;
    let limit = Duration::from_secs(600);
    tenant_master::tenant_session::scoped(limit, maintenance::cleanup(&app, &evil.slug, 365, false, "test")).await.unwrap();
    let rows = ledger(&env, &evil).await;
    assert!(rows.contains(&(3, bogus.clone())), "the trick wrote the tenant's ledger: {rows:?}");
    assert!(!rows.iter().any(|(v, _)| *v == 1000 || *v < 0), "malformed rows refused: {rows:?}");
    // A ledger written before the function refused anything may hold malformed rows: they
    // read as a conflict of that tenant, not as an error for the fleet.
    let mut db = env.admin(&beta.database).await;
    sqlx::query("UPDATE tenant_master_meta.applied_migrations SET checksum = repeat('x', 100000) WHERE schema_name = $1 AND version = 2")
        .bind(&beta.schema)
        .execute(&mut db)
        .await
        .unwrap();

    std::fs::write(dir.join("demo/0003_labels.sql"), "CREATE TABLE labels (id int);\n").unwrap();
    let out = env.tenantctl(&["tenant", "migrate", "--all", "--dry-run", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let dry = json(&out);
    let pending: Vec<&str> = dry["pending"].as_array().unwrap().iter().map(|p| p["slug"].as_str().unwrap()).collect();
    assert_eq!(pending, vec![alpha.slug.as_str()], "{dry}");
    let mut conflicting: Vec<&str> = dry["conflicts"].as_array().unwrap().iter().map(|c| c["slug"].as_str().unwrap()).collect();
    conflicting.sort();
    let mut expected = vec![evil.slug.as_str(), beta.slug.as_str()];
    expected.sort();
    assert_eq!(conflicting, expected, "{dry}");
    assert!(stderr(&out).contains("(not a checksum)"), "a tenant's text is not printed: {}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("skipped {}", evil.slug)) && stderr(&out).contains("only this tenant stops"),
        "{}",
        stderr(&out)
    );

    let out = env.tenantctl(&["tenant", "migrate", "--all"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    let jobs: Vec<String> =
        sqlx::query_scalar("SELECT id FROM tenant_master.jobs WHERE type = 'MigrateTenant'").fetch_all(&env.pool).await.unwrap();
    assert_eq!(jobs.len(), 1, "one job for the tenant without a conflict, none for the conflicting ones");
    let pool = env.pool.clone();
    env.run_worker_until(Duration::from_secs(120), || {
        let pool = pool.clone();
        async move {
            let done: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE type = 'MigrateTenant' AND status = 'done'")
                .fetch_one(&pool)
                .await
                .unwrap();
            done == 1
        }
    })
    .await;
    assert_eq!(ledger(&env, &alpha).await.iter().map(|(v, _)| *v).collect::<Vec<_>>(), vec![1, 2, 3]);
    let shown = json(&env.tenantctl(&["tenant", "show", &evil.slug, "--json"]));
    assert!(shown["migration_error"].as_str().unwrap_or_default().contains("only this tenant stops"), "{shown}");
    let said = stdout(&env.tenantctl(&["migrate"]));
    assert!(said.contains("2 tenant(s) have a migration ledger that disagrees"), "{said}");
    // Migrating the tenant itself stops at its own row, in the same sentence.
    let err = migrations::migrate_tenant(&app, &evil.slug).await.unwrap_err();
    assert!(err.to_string().contains("only this tenant stops") && (err.job_outcome() == JobOutcome::Dead), "{err}");
}

/// A file of ours edited after it first ran still stops everything, even on a tenant
/// that has not run it (its ledger says nothing about the file).
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_file_of_ours_still_stops_every_tenant() {
    let products = tenant_master_tests::demo_products();
    let dir = products.path().to_owned();
    let env = TestEnv::with_products(products).await;
    let app = env.app();
    let early = env.provisioned(&env.slug("early"), "starter").await;
    let late = env.provisioned(&env.slug("late"), "starter").await;
    std::fs::write(dir.join("demo/0003_labels.sql"), "CREATE TABLE labels (id int);\n").unwrap();
    migrations::migrate_tenant(&app, &early.slug).await.unwrap();
    std::fs::write(dir.join("demo/0003_labels.sql"), "CREATE TABLE tags (id int);\n").unwrap();
    let err = migrations::migrate_tenant(&app, &late.slug).await.unwrap_err();
    assert!(err.to_string().contains("0003_labels of 'demo' changed after it was applied"), "{err}");
    assert_eq!(ledger(&env, &late).await.len(), 2, "nothing ran on the tenant that lacked it");
    std::fs::write(dir.join("demo/0003_labels.sql"), "CREATE TABLE labels (id int);\n").unwrap();

    // A migration committed before a later one failed is guarded all the same.
    std::fs::write(dir.join("demo/0004_broken.sql"), "SELECT 1 / 0;\n").unwrap();
    assert!(migrations::migrate_tenant(&app, &late.slug).await.is_err());
    assert_eq!(ledger(&env, &late).await.len(), 3, "0003 committed, 0004 failed");
    std::fs::write(dir.join("demo/0004_broken.sql"), "SELECT 1;\n").unwrap();
    std::fs::write(dir.join("demo/0003_labels.sql"), "CREATE TABLE edited (id int);\n").unwrap();
    let out = env.tenantctl(&["tenant", "migrate", "--all", "--dry-run"]);
    assert!(stderr(&out).contains("0003_labels of 'demo' changed after it was applied"), "{}", stderr(&out));
    std::fs::write(dir.join("demo/0003_labels.sql"), "CREATE TABLE labels (id int);\n").unwrap();

    // A control plane from before the checksums were kept learns them from the ledgers at
    // its `tenantctl migrate`, so an edit after the upgrade stops everything too.
    sqlx::query("DELETE FROM tenant_master.product_migrations_applied").execute(&env.pool).await.unwrap();
    assert!(env.tenantctl(&["migrate"]).status.success());
    std::fs::write(dir.join("demo/0002_events.sql"), "CREATE TABLE edited (id int);\n").unwrap();
    let out = env.tenantctl(&["tenant", "migrate", "--all", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("0002_events of 'demo' changed after it was applied"), "{}", stderr(&out));
}

/// A view on `'<oid>'::regclass` of a neighbour's table needs no right on the neighbour's
/// schema, and PostgreSQL then refuses to drop that table. `tenantctl check` names the
/// reference; the neighbour's migration that drops the table fails naming the holder.
#[tokio::test(flavor = "multi_thread")]
async fn a_reference_into_a_neighbours_schema_is_found_and_named() {
    let products = tenant_master_tests::demo_products();
    let dir = products.path().to_owned();
    let env = TestEnv::with_products(products).await;
    let app = env.app();
    std::fs::write(dir.join("demo/0003_scratch.sql"), "CREATE TABLE scratch (id int);\n").unwrap();
    let alpha = env.provisioned(&env.slug("alpha"), "starter").await;
    let evil = env.provisioned(&env.slug("pin"), "starter").await;
    assert_eq!(alpha.database, evil.database, "both in one shared database");
    let out = env.tenantctl(&["check", "--json"]);
    let quiet = json(&out)["checks"].as_array().unwrap().iter().find(|c| c["name"] == "cross_tenant").cloned().unwrap();
    assert_eq!(quiet["warning"], false, "{quiet}");

    let mut own = env.as_tenant(&evil.slug).await;
    let oid: i64 = sqlx::query_scalar(
        "SELECT c.oid::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = 'scratch'",
    )
    .bind(&alpha.schema)
    .fetch_one(&mut own)
    .await
    .unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE VIEW {}.pin AS SELECT '{oid}'::regclass AS r", evil.schema)))
        .execute(&mut own)
        .await
        .unwrap();
    drop(own);

    let out = env.tenantctl(&["check", "--json"]);
    let item = json(&out)["checks"].as_array().unwrap().iter().find(|c| c["name"] == "cross_tenant").cloned().unwrap();
    let detail = item["detail"].as_str().unwrap();
    assert_eq!(item["warning"], true, "{item}");
    assert!(detail.contains(&format!("view {}.pin (tenant '{}')", evil.schema, evil.slug)), "{detail}");
    assert!(detail.contains(&format!("table {}.scratch", alpha.schema)), "{detail}");

    std::fs::write(dir.join("demo/0004_drop_scratch.sql"), "DROP TABLE scratch;\n").unwrap();
    let err = migrations::migrate_tenant(&app, &alpha.slug).await.unwrap_err();
    let said = err.to_string();
    assert!(said.contains(&format!("view {}.pin of tenant '{}' holds table {}.scratch", evil.schema, evil.slug, alpha.schema)), "{said}");
    assert!((err.job_outcome() == JobOutcome::Dead), "waiting does not remove another tenant's view: {said}");
    // The other tenant, holding nothing of anyone's, migrates.
    assert_eq!(migrations::migrate_tenant(&app, &evil.slug).await.unwrap(), vec!["0004_drop_scratch"]);
}

/// The tenant's trigger sleeps for ten minutes in the nightly cleanup; it also has a
/// VACUUM waiting. With two heavy slots per host, its second job used to take the second
/// slot and sit waiting for the tenant's lock, so another tenant's backup waited for the
/// first job's whole time limit. Now the tenant holds one slot, the other tenant's backup
/// runs at once, and the slow job ends within its limit plus the close's grace with no
/// session of the tenant left.
#[tokio::test(flavor = "multi_thread")]
async fn one_tenants_slow_jobs_cannot_keep_other_tenants_waiting() {
    let mut env = TestEnv::new().await;
    env.config.worker.heavy_jobs_per_host = 2;
    env.config.worker.timeouts.insert("Cleanup".into(), 12);
    env.config.worker.retry_base_secs = 600;
    let evil = env.provisioned(&env.slug("slow"), "starter").await;
    let other = env.provisioned(&env.slug("other"), "starter").await;
    plant_on_delete(&env, &evil, "PERFORM pg_sleep(600);").await;
    let mut conn = env.pool.acquire().await.unwrap();
    let cleanup =
        Cleanup { slug: evil.slug.clone(), older_than_days: 365, dry_run: false, backup_first: false, schedule: None, slot: None };
    let cleanup = queue::enqueue(&mut conn, &cleanup).await.unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(tenant_master::worker::run(env.config.clone(), async move {
        let _ = stopped.await;
        Ok(())
    }));
    let started = Instant::now();
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND wait_event = 'PgSleep'";
    tenant_master_tests::eventually(Duration::from_secs(30), "the tenant's trigger sleeps inside the cleanup", || async {
        sqlx::query_scalar::<_, i64>(sleeping).bind(format!("{}__op", evil.role)).fetch_one(&env.pool).await.unwrap() == 1
    })
    .await;
    let tasks = Tasks { vacuum: true, analyze: true, ..Default::default() };
    let vacuum = Vacuum { slug: evil.slug.clone(), tasks, backup_first: false, schedule: None, slot: None };
    let vacuum = queue::enqueue(&mut conn, &vacuum).await.unwrap();
    // Give the tenant's second job the time to take (or be refused) a slot.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let backup =
        BackupTenant { slug: other.slug.clone(), kind: tenant_master::backups::Kind::Manual, keep: None, schedule: None, slot: None };
    let backup = queue::enqueue(&mut conn, &backup).await.unwrap();
    tenant_master_tests::eventually(Duration::from_secs(60), "the other tenant's backup", || async {
        job_status(&env, &backup).await == "done"
    })
    .await;
    assert_eq!(job_status(&env, &cleanup).await, "running", "the other tenant's backup ran while the slow job held its slot");
    assert_ne!(job_status(&env, &vacuum).await, "done", "the tenant's second heavy job waited its turn");

    // The slow job ends within its 12 s plus the 15 s grace (and some room for a busy machine).
    tenant_master_tests::eventually(Duration::from_secs(45), "the slow cleanup ends", || async {
        job_status(&env, &cleanup).await != "running"
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(12 + 15 + 20), "ended after {:?}", started.elapsed());
    let error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM tenant_master.jobs WHERE id = $1").bind(&cleanup).fetch_one(&env.pool).await.unwrap();
    assert!(error.as_deref().unwrap_or_default().contains("time"), "{error:?}");
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename IN ($1, $2)")
        .bind(&evil.role)
        .bind(format!("{}__op", evil.role))
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(sessions, 0, "no session of the tenant outlives its job");
    let _ = stop.send(());
    worker.await.unwrap().unwrap();
}
