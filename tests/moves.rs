//! Moving tenants (issue 14): between a shared and a dedicated database and between two
//! real servers (a private second one of the test's own), with a writer running until the
//! hold, with a crash after every step, and refused at once where the target cannot be used.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tenant_master::{fault, ops::moves, tenants};
use tenant_master_tests::{
    database_exists, json,
    moves::{kept_sources_due_now, request},
    private_server::PrivateServer,
    schemas_like, stderr, stdout, TempDir, TestEnv,
};

const LIMIT: Duration = Duration::from_secs(180);

async fn project_names(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM projects ORDER BY name").fetch_all(conn).await.unwrap()
}

/// starter -> enterprise -> starter on one host, through `tenantctl` and a worker: the data
/// follows, the credentials stay (but the database in the URL), the plan history has both
/// steps, the source copy is kept renamed and closed to the tenant, a backup from before the
/// moves restores afterwards, and PruneJobs drops the kept copies when they are due.
#[tokio::test(flavor = "multi_thread")]
async fn starter_to_enterprise_and_back_on_one_host() {
    let env = TestEnv::new().await;
    let logs = TempDir::new("logs");
    let mut worker = env.spawn_worker(&logs.path().join("worker.log"));
    let t = env.provisioned(&env.slug("roundtrip"), "starter").await;
    env.add_projects(&t.slug, "before-", 500).await;
    let out = env.tenantctl(&["backup", "create", &t.slug, "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    env.add_projects(&t.slug, "after-backup-", 10).await;
    let url_before = { tenants::credentials_url(&mut env.pool.acquire().await.unwrap(), &env.config, &t.slug).await.unwrap() };

    // Up: the data moves to a dedicated database.
    let out = env.tenantctl(&["tenant", "change-plan", &t.slug, "enterprise", "--wait", "--actor", "billing"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("moved '") && stdout(&out).contains("row(s) verified"), "{}", stdout(&out));
    let up = env.registry(&t.slug).await;
    assert_eq!((up.plan.as_str(), up.isolation.as_str()), ("enterprise", "database"));
    assert_ne!(up.database, t.database);
    let mut own = env.try_as_tenant(&t.slug).await.expect("the same credentials log in after the move");
    assert_eq!(project_names(&mut own).await.len(), 510);
    let url_after = { tenants::credentials_url(&mut env.pool.acquire().await.unwrap(), &env.config, &t.slug).await.unwrap() };
    assert_eq!(url_after.replace(&up.database, "DB"), url_before.replace(&t.database, "DB"), "only the database differs");
    // The source is kept renamed, and the tenant cannot reach it.
    let server = tenant_master_tests::server_url();
    assert_eq!(schemas_like(&server, &t.database, &t.role).await, vec![format!("{}__moved", t.role)]);
    let mut conn = env.pool.acquire().await.unwrap();
    let shared_url = tenants::credentials_url(&mut conn, &env.config, &t.slug).await.unwrap().replace(&up.database, &t.database);
    let refused = match PgConnection::connect(&shared_url).await {
        Ok(_) => panic!("the tenant still reaches the database it left"),
        Err(e) => e.to_string(),
    };
    assert!(refused.contains("permission denied"), "{refused}");
    drop(own);

    // Down again, with writes in between.
    env.add_projects(&t.slug, "dedicated-", 5).await;
    let out = env.tenantctl(&["tenant", "change-plan", &t.slug, "starter", "--wait"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let down = env.registry(&t.slug).await;
    assert_eq!((down.plan.as_str(), down.isolation.as_str(), down.database.as_str()), ("starter", "schema", t.database.as_str()));
    let mut own = env.try_as_tenant(&t.slug).await.unwrap();
    assert_eq!(project_names(&mut own).await.len(), 515);
    drop(own);
    // Live again in the shared database (beside the first move's kept copy, until it is
    // due), and kept in the dedicated one.
    assert_eq!(schemas_like(&server, &t.database, &t.role).await, vec![t.role.clone(), format!("{}__moved", t.role)]);
    assert_eq!(schemas_like(&server, &up.database, &t.role).await, vec![format!("{}__moved", t.role)]);

    let shown = json(&env.tenantctl(&["tenant", "show", &t.slug, "--json"]));
    let steps: Vec<(String, String, String)> = shown["plan_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["from"].as_str().unwrap().into(), h["to"].as_str().unwrap().into(), h["actor"].as_str().unwrap().into()))
        .collect();
    assert_eq!(steps[0], ("starter".into(), "enterprise".into(), "billing".into()), "{shown}");
    assert_eq!((steps[1].0.as_str(), steps[1].1.as_str()), ("enterprise", "starter"), "{shown}");

    // A backup from before both moves restores in place of the live data.
    let backups = json(&env.tenantctl(&["backup", "list", &t.slug, "--json"]));
    let first = backups.as_array().unwrap().iter().find(|b| b["kind"] == "manual").unwrap()["id"].as_i64().unwrap().to_string();
    let out = env.tenantctl(&["backup", "restore", &t.slug, "--backup", &first, "--yes", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut own = env.try_as_tenant(&t.slug).await.unwrap();
    assert_eq!(project_names(&mut own).await.len(), 500);
    drop(own);

    // When due, PruneJobs drops the kept copy and the dedicated database it sat in.
    kept_sources_due_now(&env).await;
    assert_eq!(tenant_master::ops::move_cleanup::prune_kept_sources(&env.app()).await.unwrap(), 2, "both kept copies are due");
    assert!(!database_exists(&server, &up.database).await, "the dedicated database the tenant left is dropped");
    assert_eq!(schemas_like(&server, &t.database, &t.role).await, vec![t.role.clone()]);
    let mut own = env.try_as_tenant(&t.slug).await.expect("dropping the kept copies leaves the live tenant's rights alone");
    assert_eq!(project_names(&mut own).await.len(), 500);
    drop(own);
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_master.kept_sources WHERE dropped_at IS NULL").fetch_one(&env.pool).await.unwrap();
    assert_eq!(left, 0);
    worker.kill().unwrap();
    let _ = worker.wait();
}

/// A dedicated tenant moves to a second server: same role and password there, the URL names
/// the new server, the rows are all there, backups and restores follow it; on the first server
/// the role can no longer log in, and once due its database and roles are dropped. A move to
/// a disabled or unreachable host is refused at once, with one sentence, nothing enqueued.
#[tokio::test(flavor = "multi_thread")]
async fn a_dedicated_tenant_moves_to_a_second_server() {
    let second = PrivateServer::start();
    let env = TestEnv::new().await;
    let out = env.add_host("second", &second.url());
    assert!(out.status.success(), "{}", stderr(&out));
    let logs = TempDir::new("logs");
    let mut worker = env.spawn_worker(&logs.path().join("worker.log"));
    let t = env.provisioned(&env.slug("far"), "enterprise").await;
    env.add_projects(&t.slug, "p", 2000).await;
    let out = env.tenantctl(&["backup", "create", &t.slug, "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Refused at once: a disabled host, an unreachable one, an unknown one.
    assert!(env.tenantctl(&["host", "disable", "second"]).status.success());
    let out = env.tenantctl(&["tenant", "move", &t.slug, "--host", "second"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("host 'second' is disabled"), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    assert!(env.tenantctl(&["host", "enable", "second"]).status.success());
    sqlx::query("INSERT INTO tenant_master.db_hosts (name, admin_url, capacity, enabled) VALUES ('gone', 'postgres://127.0.0.1:1/postgres', 10, true)")
        .execute(&env.pool)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let out = env.tenantctl(&["tenant", "move", &t.slug, "--host", "gone"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("host 'gone' cannot be used"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(8), "refused at once, not after a timeout");
    let out = env.tenantctl(&["tenant", "move", &t.slug, "--host", "nowhere"]);
    assert!(stderr(&out).contains("unknown host 'nowhere'"), "{}", stderr(&out));
    let moves_enqueued: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE type = 'MoveTenant'").fetch_one(&env.pool).await.unwrap();
    assert_eq!(moves_enqueued, 0, "nothing enqueued by a refused move");

    let out = env.tenantctl(&["tenant", "move", &t.slug, "--host", "second", "--wait", "--json"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let report = json(&out);
    assert_eq!(report["moved"]["rows"], 2000, "{report}");
    assert!(report["moved"]["downtime_ms"].as_i64().is_some(), "{report}");
    let moved = env.registry(&t.slug).await;
    assert_eq!((moved.host.as_str(), moved.database.as_str(), moved.plan.as_str()), ("second", t.database.as_str(), "enterprise"));
    let mut conn = env.pool.acquire().await.unwrap();
    let url = tenants::credentials_url(&mut conn, &env.config, &t.slug).await.unwrap();
    let second_address = second.url().trim_start_matches("postgres://").split('/').next().unwrap().to_owned();
    assert!(url.contains(&format!("@{second_address}/")), "the URL names the second server: {url}");
    let mut own = env.try_as_tenant(&t.slug).await.expect("the same role and password on the second server");
    assert_eq!(project_names(&mut own).await.len(), 2000);
    sqlx::query("INSERT INTO projects (name) VALUES ('on-second')").execute(&mut own).await.unwrap();
    drop(own);
    let server = tenant_master_tests::server_url();
    let mut first_server = env.admin("postgres").await;
    let can_login: bool =
        sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1").bind(&t.role).fetch_one(&mut first_server).await.unwrap();
    assert!(!can_login, "the role on the first server is held");

    // Backups and restores follow the tenant; the backup from the first server restores on the second.
    let out = env.tenantctl(&["backup", "create", &t.slug, "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let backups = json(&env.tenantctl(&["backup", "list", &t.slug, "--json"]));
    let oldest = backups.as_array().unwrap().iter().filter(|b| b["kind"] == "manual").map(|b| b["id"].as_i64().unwrap()).min().unwrap();
    let out = env.tenantctl(&["backup", "restore", &t.slug, "--backup", &oldest.to_string(), "--yes", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut own = env.try_as_tenant(&t.slug).await.unwrap();
    assert_eq!(project_names(&mut own).await.len(), 2000, "the backup from before the move");
    drop(own);

    kept_sources_due_now(&env).await;
    assert_eq!(tenant_master::ops::move_cleanup::prune_kept_sources(&env.app()).await.unwrap(), 1);
    assert!(!database_exists(&server, &t.database).await, "the first server's copy is dropped when due");
    let roles: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname IN ($1, $1 || '__op')")
        .bind(&t.role)
        .fetch_one(&mut first_server)
        .await
        .unwrap();
    assert_eq!(roles, 0, "its roles on the first server are dropped");
    let mut own = env.try_as_tenant(&t.slug).await.expect("the tenant still logs in on the second server");
    assert_eq!(project_names(&mut own).await.len(), 2000);
    worker.kill().unwrap();
    let _ = worker.wait();
}

/// 100,000 rows, and a writer committing one row at a time until the hold ends its session:
/// every row whose commit the writer saw is on the target.
#[tokio::test(flavor = "multi_thread")]
async fn every_committed_row_moves_while_a_writer_runs() {
    let env = TestEnv::new().await;
    let t = env.provisioned(&env.slug("busy"), "business").await;
    env.add_projects(&t.slug, "bulk-", 100_000).await;
    let mut writer_conn = env.try_as_tenant(&t.slug).await.unwrap();
    let writer = tokio::spawn(async move {
        let mut committed = Vec::new();
        for i in 0.. {
            let name = format!("live-{i}");
            match sqlx::query("INSERT INTO projects (name) VALUES ($1)").bind(&name).execute(&mut writer_conn).await {
                Ok(_) => committed.push(name),
                Err(_) => break,
            }
        }
        committed
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let moved = moves::move_tenant(&env.app(), &request(&t, None, Some("enterprise")), "move-writer").await.unwrap();
    let committed = writer.await.unwrap();
    assert!(committed.len() > 10, "the writer wrote while the move prepared: {}", committed.len());
    let mut own = env.try_as_tenant(&t.slug).await.unwrap();
    let names: std::collections::HashSet<String> = project_names(&mut own).await.into_iter().collect();
    let missing: Vec<&String> = committed.iter().filter(|n| !names.contains(*n)).collect();
    assert!(missing.is_empty(), "{} committed row(s) missing on the target, e.g. {:?}", missing.len(), missing.first());
    assert_eq!(moved.rows as usize, names.len(), "the rows counted at the switch are the rows on the target");
    assert!(names.len() >= 100_000 + committed.len());
    assert!(moved.downtime_ms.is_some());
}

/// A crash after each step of a move (the process stops there), then the retry of the same
/// job: one live copy in the registry, the credentials work, the rows are equal, the source
/// is kept once, and the login is open.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_any_step_then_the_retry_leaves_one_live_copy() {
    let env = TestEnv::new().await;
    let steps = ["move:target_ready", "move:held", "move:copied", "move:restored", "move:verified", "move:switched", "move:source_kept"];
    let server = tenant_master_tests::server_url();
    for (i, step) in steps.iter().enumerate() {
        let t = env.provisioned(&env.slug(&format!("crash{i}")), "starter").await;
        env.add_projects(&t.slug, "row-", 300).await;
        let job = format!("move-crash-{i}");
        let req = request(&t, None, Some("enterprise"));
        fault::arm(&t.slug, step);
        let err = moves::move_tenant(&env.app(), &req, &job).await.expect_err("the injected crash");
        assert!(err.is_injected(), "{step}: {err}");
        // Before the hold the tenant works on; from the hold on, a crash keeps it held until
        // the retry (never logging in to a copy that is about to be replaced or left).
        let logs_in = env.try_as_tenant(&t.slug).await.is_ok();
        assert_eq!(logs_in, *step == "move:target_ready", "{step}");
        let moved = moves::move_tenant(&env.app(), &req, &job).await.unwrap_or_else(|e| panic!("{step}: retry: {e}"));
        let after = env.registry(&t.slug).await;
        assert_eq!((after.isolation.as_str(), after.plan.as_str()), ("database", "enterprise"), "{step}");
        let mut own = env.try_as_tenant(&t.slug).await.unwrap_or_else(|e| panic!("{step}: credentials: {e}"));
        assert_eq!(project_names(&mut own).await.len(), 300, "{step}");
        assert_eq!(moved.rows, 300, "{step}");
        assert_eq!(schemas_like(&server, &t.database, &t.role).await, vec![format!("{}__moved", t.role)], "{step}");
        assert_eq!(schemas_like(&server, &after.database, &t.role).await, vec![t.role.clone()], "{step}");
        let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.kept_sources WHERE tenant_id = $1")
            .bind(t.id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        assert_eq!(kept, 1, "{step}");
        let history: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.plan_changes WHERE tenant_id = $1")
            .bind(t.id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        assert_eq!(history, 1, "{step}: one plan change");
        // A third run (a lost acknowledgement) changes nothing.
        let again = moves::move_tenant(&env.app(), &req, &job).await.unwrap();
        assert!(again.already_done, "{step}");
        assert_eq!(env.registry(&t.slug).await.database, after.database);
    }
}

/// A real SIGKILL of the worker while the move holds the tenant, then a second worker: the
/// job is picked up again and ends with one live copy and every row.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_move_is_finished_by_another() {
    let env = TestEnv::new().await;
    let t = env.provisioned(&env.slug("killed"), "starter").await;
    env.add_projects(&t.slug, "row-", 200_000).await;
    let logs = TempDir::new("logs");
    let mut worker = env.spawn_worker(&logs.path().join("worker1.log"));
    let out = env.tenantctl(&["tenant", "change-plan", &t.slug, "enterprise"]);
    assert!(out.status.success(), "{}", stderr(&out));
    tenant_master_tests::eventually(LIMIT, "the move holds the tenant", || async {
        let held: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenant_master.activity_log WHERE action = 'tenant.move_held')")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        held
    })
    .await;
    worker.kill().unwrap();
    let _ = worker.wait();
    let mut worker = env.spawn_worker(&logs.path().join("worker2.log"));
    tenant_master_tests::eventually(LIMIT, "the move finished", || async { env.registry(&t.slug).await.isolation == "database" }).await;
    tenant_master_tests::eventually(LIMIT, "the login given back", || async { env.try_as_tenant(&t.slug).await.is_ok() }).await;
    let mut own = env.try_as_tenant(&t.slug).await.unwrap();
    assert_eq!(project_names(&mut own).await.len(), 200_000);
    let server = tenant_master_tests::server_url();
    assert_eq!(schemas_like(&server, &t.database, &t.role).await, vec![format!("{}__moved", t.role)]);
    worker.kill().unwrap();
    let _ = worker.wait();
}

/// Old code: a move whose old host died right after the switch connected to that host
/// before giving the login back on the new one, so the job went dead and the tenant stayed
/// locked out of its healthy new server. Now the new server comes first and the old one's
/// cleanup waits for it (recorded in the activity log).
#[tokio::test(flavor = "multi_thread")]
async fn a_move_whose_old_server_dies_after_the_switch_still_lets_the_tenant_in() {
    let first = PrivateServer::start();
    let failing = PrivateServer::start();
    let env = TestEnv::on_server(&first.url()).await;
    let out = env.add_host("failing", &failing.url());
    assert!(out.status.success(), "{}", stderr(&out));
    let new =
        tenant_master::tenants::NewTenant::parse(&env.slug("evac"), "demo", "enterprise", "o@example.com", None, Some("failing")).unwrap();
    let t = tenant_master::jobs::provision_tenant::provision(&env.app(), &new, "test").await.unwrap();
    env.add_projects(&t.slug, "p", 50).await;
    let req = request(&t, Some("default"), None);
    fault::arm(&t.slug, "move:switched");
    let err = moves::move_tenant(&env.app(), &req, "evacuation").await.unwrap_err();
    assert!(err.is_injected(), "{err}");
    assert_eq!(env.registry(&t.slug).await.host, "default", "the registry switched before the crash");
    drop(failing);
    let moved = moves::move_tenant(&env.app(), &req, "evacuation").await.expect("the rerun finishes on the new server");
    assert!(moved.already_done);
    let mut own = env.try_as_tenant(&t.slug).await.expect("the tenant logs in on its new server");
    assert_eq!(project_names(&mut own).await.len(), 50);
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tenant_master.activity_log WHERE action = 'tenant.move_source_left' AND details ->> 'host' = 'failing'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(left, 1, "the old host's cleanup is recorded as left for later");
}

/// Plan changes at the same moment keep one history.
mod plan_history {
    use tenant_master_tests::TestEnv;

    /// Finding 7. Two admins change the plan of one tenant at once: `change` reads the current
    /// plan before it takes the row lock, so the history records two changes "from" the same
    /// plan (starter -> business, starter -> free) and never business -> free.
    #[tokio::test(flavor = "multi_thread")]
    async fn plan_changes_at_once_keep_one_history() {
        let env = TestEnv::new().await;
        let t = env.provisioned(&env.slug("plans"), "starter").await;
        // Hold the row so both admins read the plan, then queue on the lock; each admin's
        // session is seen waiting before the next one starts.
        let holder = env.hold_tenant_row(t.id).await;
        let (p1, p2) = (env.pool.clone(), env.pool.clone());
        let (c1, c2) = (env.config.clone(), env.config.clone());
        let (s1, s2) = (t.slug.clone(), t.slug.clone());
        let a = tokio::spawn(async move { tenant_master::jobs::change_plan::change(&p1, &c1, &s1, "business", None, "alice").await });
        env.until_row_lock_waiters(1).await;
        let b = tokio::spawn(async move { tenant_master::jobs::change_plan::change(&p2, &c2, &s2, "free", None, "bob").await });
        env.until_row_lock_waiters(2).await;
        holder.rollback().await.unwrap();
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
        let mut conn = env.pool.acquire().await.unwrap();
        let history = tenant_master::plans::history(&mut conn, t.id).await.unwrap();
        let steps: Vec<(String, String)> = history.iter().map(|h| (h.from_plan.clone(), h.to_plan.clone())).collect();
        println!("{steps:?}");
        assert_eq!(steps, vec![("starter".into(), "business".into()), ("business".into(), "free".into())]);
    }
}

/// Two admins ask to move one tenant at once: one move is enqueued, the other is refused
/// as "under way" (before, both passed the check and two moves were queued).
#[tokio::test(flavor = "multi_thread")]
async fn two_move_requests_at_once_enqueue_one_move() {
    use tenant_master::{error::Error, jobs::move_tenant, naming::Plan};
    let env = TestEnv::new().await;
    let t = env.provisioned(&env.slug("twomoves"), "starter").await;
    let holder = env.hold_tenant_row(t.id).await;
    let request = |actor: &'static str| {
        let (pool, config, slug) = (env.pool.clone(), env.config.clone(), t.slug.clone());
        tokio::spawn(
            async move { move_tenant::enqueue(&pool, &config, &slug, None, Some(Plan::parse("enterprise").unwrap()), actor).await },
        )
    };
    let (a, b) = (request("alice"), request("bob"));
    env.until_row_lock_waiters(2).await;
    holder.rollback().await.unwrap();
    let results = [a.await.unwrap(), b.await.unwrap()];
    let enqueued = results.iter().filter(|r| matches!(r, Ok(move_tenant::Requested::Enqueued { .. }))).count();
    let refused = results.iter().filter(|r| matches!(r, Err(Error::Conflict(m)) if m.contains("is under way"))).count();
    assert_eq!((enqueued, refused), (1, 1), "{results:?}");
    let moves: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE type = 'MoveTenant' AND tenant = $1")
        .bind(&t.slug)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(moves, 1);
}

/// An adversarial review of MoveTenant (issue 14) proved these: a deleted tenant's copy
/// left on another server for the next tenant of the slug, a dead move's ledger rows, a
/// delete that never finishes, two pending requests undoing each other, an upgraded tenant
/// that cannot be deleted, a move of a tenant whose restore stopped part way. Each test
/// failed on the code before its fix.
mod interrupted_and_refused {
    use tenant_master::{
        fault,
        jobs::move_tenant::{self, Requested},
        jobs::{change_plan::Changed, provision_tenant as provision},
        ops::{delete, move_cleanup, moves, prune},
        tenants::NewTenant,
    };
    use tenant_master_tests::{
        admin_on, database_exists,
        moves::{add_alias_of_the_test_server, payload, request},
        private_server::PrivateServer,
        schemas_like, stderr, TestEnv,
    };

    fn add_second(env: &TestEnv, second: &PrivateServer) {
        let out = env.add_host("second", &second.url());
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// A cross-host move is cut short after the copy reached the second server (SIGKILL; the
    /// job waits for its retry). A careless admin deletes the tenant meanwhile. The move's retry
    /// is refused (tenant deleted) and its on_dead returns early for a deleted tenant. The full
    /// copy stays on the second server; once the slug is free, a new customer created on that
    /// host with the same slug adopts the role, the schema and the ledger: it sees the deleted
    /// tenant's rows.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_cut_short_move_leaves_nothing_for_the_next_tenant_of_the_slug() {
        let second = PrivateServer::start();
        let mut env = TestEnv::new().await;
        env.config.backups.keep_deleted_days = 0;
        add_second(&env, &second);
        let t = env.provisioned(&env.slug("ghost"), "starter").await;
        env.add_projects(&t.slug, "secret-", 50).await;
        let req = request(&t, Some("second"), None);
        fault::arm(&t.slug, "move:restored");
        let err = moves::move_tenant(&env.app(), &req, "move-ghost").await.unwrap_err();
        assert!(err.is_injected(), "{err}");

        // The careless admin: delete while the move waits for its retry.
        delete::delete(&env.app(), &t.slug, Some(t.id), "delete-ghost", "admin").await.expect("delete");
        assert_eq!(env.registry(&t.slug).await.status, "deleted");
        // The move's retry is refused; the job gives up and its on_dead runs.
        let err = moves::move_tenant(&env.app(), &req, "move-ghost").await.unwrap_err();
        println!("retry of the move: {err}");
        moves::recover(&env.app(), &req, "move-ghost").await.unwrap();
        let left = schemas_like(&second.url(), &t.database, &t.role).await;
        println!("schemas of the deleted tenant left on the second server: {left:?}");

        // Weeks later the slug is free again; a new customer takes it, on host 'second'.
        prune::prune_deleted_tenant_backups(&env.pool, 0).await.unwrap();
        let new = NewTenant::parse(&t.slug, "demo", "starter", "new-owner@example.com", None, Some("second")).unwrap();
        provision::provision(&env.app(), &new, "test").await.expect("provision the new tenant");
        let mut own = env.as_tenant(&t.slug).await;
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM projects WHERE name LIKE 'secret-%'").fetch_one(&mut own).await.unwrap();
        assert_eq!(seen, 0, "the new tenant of the slug sees {seen} rows of the deleted tenant (left on 'second': {left:?})");
    }

    /// Same as above without a crash+delete: a move that gives up for good (on_dead) after the
    /// copy reached the target leaves the role and the ledger rows there. A later tenant of the
    /// slug on that host gets its migrations skipped: no tables.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_dead_move_leaves_no_ledger_rows_for_a_later_tenant() {
        let second = PrivateServer::start();
        let mut env = TestEnv::new().await;
        env.config.backups.keep_deleted_days = 0;
        add_second(&env, &second);
        let t = env.provisioned(&env.slug("ledger"), "starter").await;
        let req = request(&t, Some("second"), None);
        fault::arm(&t.slug, "move:restored");
        assert!(moves::move_tenant(&env.app(), &req, "move-ledger").await.unwrap_err().is_injected());
        // The last attempt died: on_dead.
        moves::recover(&env.app(), &req, "move-ledger").await.unwrap();
        let mut second_db = admin_on(&second.url(), &t.database).await;
        let ledger_left: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master_meta.applied_migrations WHERE schema_name = $1")
            .bind(&t.schema)
            .fetch_one(&mut second_db)
            .await
            .unwrap();
        println!("ledger rows left on the second server after on_dead: {ledger_left}");
        delete::delete(&env.app(), &t.slug, Some(t.id), "delete-ledger", "admin").await.expect("delete");
        prune::prune_deleted_tenant_backups(&env.pool, 0).await.unwrap();
        let new = NewTenant::parse(&t.slug, "demo", "starter", "new-owner@example.com", None, Some("second")).unwrap();
        provision::provision(&env.app(), &new, "test").await.expect("provision the new tenant");
        let mut own = env.as_tenant(&t.slug).await;
        let has_projects: bool = sqlx::query_scalar("SELECT to_regclass('projects') IS NOT NULL").fetch_one(&mut own).await.unwrap();
        assert!(
            has_projects,
            "the new tenant's migrations were skipped ({ledger_left} stale ledger rows left by on_dead): it has no tables"
        );
    }

    /// Same host: shared -> dedicated, cut short after the copy; the admin deletes the tenant.
    /// The delete cannot drop the role (it owns the copy in the dedicated database): it never
    /// finishes, and the copy stays.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_delete_during_a_pending_move_finishes() {
        let env = TestEnv::new().await;
        let t = env.provisioned(&env.slug("stuck"), "starter").await;
        env.add_projects(&t.slug, "row-", 20).await;
        let req = request(&t, None, Some("enterprise"));
        fault::arm(&t.slug, "move:restored");
        assert!(moves::move_tenant(&env.app(), &req, "move-stuck").await.unwrap_err().is_injected());
        let target = tenant_master::naming::TenantNames::derive(
            &env.config.database_prefix,
            "demo",
            &tenant_master::naming::Slug::parse(&t.slug).unwrap(),
            tenant_master::naming::Isolation::Database,
        )
        .unwrap();
        let first = delete::delete(&env.app(), &t.slug, Some(t.id), "delete-stuck", "admin").await;
        println!("delete: {first:?}");
        // The move's retry is refused, it gives up, on_dead runs; then the delete is retried.
        let retry = moves::move_tenant(&env.app(), &req, "move-stuck").await;
        println!("move retry: {:?}", retry.as_ref().err());
        moves::recover(&env.app(), &req, "move-stuck").await.unwrap();
        let second = delete::delete(&env.app(), &t.slug, Some(t.id), "delete-stuck", "admin").await;
        println!("delete retried: {second:?}");
        let server = tenant_master_tests::server_url();
        let left = schemas_like(&server, &target.database, &t.role).await;
        let status = env.registry(&t.slug).await.status;
        let db_left = database_exists(&server, &target.database).await;
        assert!(first.is_ok(), "the delete failed: {first:?} (copy left: {left:?})");
        assert_eq!(status, "deleted", "retried delete: {second:?}; dedicated database left: {db_left}");
    }

    /// change-plan to enterprise, then `tenant move --host second`, both pending: each froze
    /// the other setting when it was asked (the move: isolation 'schema'; the plan change: host
    /// 'default'), so run in order the tenant ended on plan enterprise in a shared database.
    /// Now a second request is refused while a move is under way, and a move works its target
    /// out from the registry when it first runs, so the plan's isolation holds.
    #[tokio::test(flavor = "multi_thread")]
    async fn change_plan_then_move_keeps_the_plan_isolation_invariant() {
        let second = PrivateServer::start();
        let env = TestEnv::new().await;
        add_second(&env, &second);
        let t = env.provisioned(&env.slug("twice"), "starter").await;
        env.add_projects(&t.slug, "row-", 10).await;
        let Changed::Moving { job_id: j1, .. } =
            tenant_master::jobs::change_plan::change(&env.pool, &env.config, &t.slug, "enterprise", None, "admin").await.unwrap()
        else {
            panic!("expected a move")
        };
        let refused = move_tenant::enqueue(&env.pool, &env.config, &t.slug, Some("second"), None, "admin").await.unwrap_err().to_string();
        assert!(refused.contains("a move of") && refused.contains(&j1), "{refused}");
        let refused = tenant_master::jobs::change_plan::change(&env.pool, &env.config, &t.slug, "lifetime", None, "admin")
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("under way"), "{refused}");
        let p1 = payload(&env, &j1).await;
        moves::move_tenant(&env.app(), &p1.request, &j1).await.unwrap();
        sqlx::query("DELETE FROM apalis.jobs WHERE id = $1").bind(&j1).execute(&env.pool).await.unwrap(); // as if done and pruned
        let Requested::Enqueued { job_id: j2, .. } =
            move_tenant::enqueue(&env.pool, &env.config, &t.slug, Some("second"), None, "admin").await.unwrap()
        else {
            panic!("expected a move")
        };
        moves::move_tenant(&env.app(), &payload(&env, &j2).await.request, &j2).await.unwrap();
        let after = env.registry(&t.slug).await;
        assert_eq!((after.plan.as_str(), after.isolation.as_str(), after.host.as_str()), ("enterprise", "database", "second"));
    }

    /// The most common upgrade: starter -> enterprise on one host, finished cleanly. Later the
    /// tenant is deleted (before and after its kept copy is pruned): the operator role still
    /// holds the ledger grants it got in the shared database while it lived there, and nothing
    /// revokes them, so DROP ROLE fails and the delete never finishes.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_tenant_upgraded_to_a_dedicated_database_on_the_same_host_can_be_deleted() {
        let env = TestEnv::new().await;
        let mut failures = Vec::new();
        for (i, prune_first) in [false, true].into_iter().enumerate() {
            let t = env.provisioned(&env.slug(&format!("upgraded{i}")), "starter").await;
            env.add_projects(&t.slug, "row-", 10).await;
            moves::move_tenant(&env.app(), &request(&t, None, Some("enterprise")), &format!("move-up-{i}")).await.unwrap();
            if prune_first {
                sqlx::query("UPDATE tenant_master.kept_sources SET kept_until = now() - interval '1 second' WHERE tenant_id = $1")
                    .bind(t.id)
                    .execute(&env.pool)
                    .await
                    .unwrap();
                assert_eq!(move_cleanup::prune_kept_sources(&env.app()).await.unwrap(), 1);
            }
            {
                let mut shared = env.admin(&t.database).await;
                let grants: (bool, bool) = sqlx::query_as("SELECT has_schema_privilege($1, 'tenant_master_meta', 'USAGE'), has_function_privilege($1, 'tenant_master_meta.record_migration(bigint,text,text)', 'EXECUTE')")
                    .bind(format!("{}__op", t.role)).fetch_one(&mut shared).await.unwrap();
                println!("operator's grants left in the shared database {}: {grants:?}", t.database);
            }
            let deleted = delete::delete(&env.app(), &t.slug, Some(t.id), &format!("delete-up-{i}"), "admin").await;
            if let Err(e) = deleted {
                failures.push(format!("kept copy pruned first: {prune_first}: {e}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    /// A restore is cut short by a real crash while pg_restore fills the new live schema (state:
    /// the live data renamed `<schema>__restore_aside`, an empty `<schema>` in its place, login
    /// held, exactly what `replace_schema` leaves before pg_restore commits). A move runs before
    /// the restore's retry: it copies the empty live schema, verifies 0 = 0 rows and switches.
    /// The restore then gives up (on_dead) and puts "back" nothing at the new place: the tenant
    /// is live on an empty schema and its rows sit in the old database under a name nothing
    /// ever looks at again.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_move_after_an_interrupted_restore_is_refused_and_loses_nothing() {
        let env = TestEnv::new().await;
        let t = env.provisioned(&env.slug("halfrestored"), "starter").await;
        env.add_projects(&t.slug, "row-", 100).await;
        {
            // The state a SIGKILL of the restore leaves between CREATE SCHEMA and pg_restore's commit.
            let mut db = env.admin(&t.database).await;
            let aside = format!("{}__restore_aside", t.schema);
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "ALTER ROLE \"{r}\" NOLOGIN; ALTER SCHEMA \"{s}\" RENAME TO \"{aside}\"; CREATE SCHEMA \"{s}\" AUTHORIZATION \"{r}\";",
                r = t.role,
                s = t.schema
            )))
            .execute(&mut db)
            .await
            .unwrap();
        }
        let moved = moves::move_tenant(&env.app(), &request(&t, None, Some("enterprise")), "move-half").await;
        let refused = moved.expect_err("a move of a half-restored tenant is refused").to_string();
        assert!(refused.contains("restore that stopped part way"), "{refused}");
        // The restore job's last attempt gives up: its on_dead puts the data back.
        tenant_master::ops::restore::recover(&env.app(), &t.slug, 0, "restore-half").await.unwrap();
        let after = env.registry(&t.slug).await;
        let mut db = env.admin(&after.database).await;
        let live_rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM \"{}\".projects", t.schema)))
            .fetch_one(&mut db)
            .await
            .unwrap_or(-1);
        let server = tenant_master_tests::server_url();
        let old = schemas_like(&server, &t.database, &t.role).await;
        assert_eq!(
            live_rows, 100,
            "live copy in {} has {live_rows} rows (-1: no projects table); the rows are left in {}: {old:?}",
            after.database, t.database
        );
    }

    /// Second review. One server registered under two host names (by SQL: `host add` refuses
    /// it). A tenant that lives on the alias, its kept copy on the first name pruned: the "other" host is its own
    /// server, so its roles must not be released there (DROP OWNED would take its live schema).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_server_under_two_names_keeps_its_tenants_roles_when_a_copy_is_pruned() {
        let env = TestEnv::new().await;
        add_alias_of_the_test_server(&env).await;
        let t = env.provisioned(&env.slug("aliased"), "starter").await;
        env.add_projects(&t.slug, "row-", 30).await;
        moves::move_tenant(&env.app(), &request(&t, None, Some("enterprise")), "move-alias").await.unwrap();
        // The registry names the tenant's server by its other name (a move to an alias is
        // refused now, see below; a registry edited by hand gets here too).
        sqlx::query("UPDATE tenant_master.tenants SET host = 'alias' WHERE id = $1").bind(t.id).execute(&env.pool).await.unwrap();
        sqlx::query("UPDATE tenant_master.kept_sources SET kept_until = now() - interval '1 second'").execute(&env.pool).await.unwrap();
        assert_eq!(move_cleanup::prune_kept_sources(&env.app()).await.unwrap(), 1);
        let mut own = env.as_tenant(&t.slug).await;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM projects").fetch_one(&mut own).await.unwrap();
        assert_eq!(rows, 30, "the tenant and its data survive the prune on its own server's other name");
    }

    /// Third review. A move to the alias of its own server: the "target" database is the
    /// tenant's live one, which the copy would drop before anything is held or backed up. Now
    /// refused, nothing touched. Dedicated and shared.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_move_to_its_own_server_under_another_name_is_refused_and_loses_nothing() {
        let env = TestEnv::new().await;
        add_alias_of_the_test_server(&env).await;
        for plan in ["enterprise", "starter"] {
            let t = env.provisioned(&env.slug(&format!("al{}", &plan[..2])), plan).await;
            env.add_projects(&t.slug, "row-", 30).await;
            let refused = moves::move_tenant(&env.app(), &request(&t, Some("alias"), None), &format!("move-al-{plan}")).await;
            let refused = refused.expect_err("refused").to_string();
            assert!(refused.contains("may be the same PostgreSQL server"), "{refused}");
            let refused =
                move_tenant::enqueue(&env.pool, &env.config, &t.slug, Some("alias"), None, "admin").await.unwrap_err().to_string();
            assert!(refused.contains("may be the same PostgreSQL server"), "{refused}");
            let mut own = env.as_tenant(&t.slug).await;
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM projects").fetch_one(&mut own).await.unwrap();
            assert_eq!(rows, 30, "{plan}");
        }
    }

    /// Third review. A move crashed after its hold gives up while another job of the tenant
    /// holds its lock: the cleanup waited `tenant_lock_wait_secs`, failed, and nothing ran it
    /// again, so the active tenant's login stayed held. Now it waits for the lock.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_dead_moves_cleanup_waits_for_another_job_of_the_tenant() {
        let env = TestEnv::new().await;
        let t = env.provisioned(&env.slug("rcbusy"), "starter").await;
        env.add_projects(&t.slug, "row-", 5).await;
        fault::arm(&t.slug, "move:held");
        moves::move_tenant(&env.app(), &request(&t, None, Some("enterprise")), "move-rcbusy").await.unwrap_err();
        let other = tenant_master::lock::TenantLock::acquire(&env.config, &t.slug).await.unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            other.release().await;
        });
        let mut config = env.config.clone();
        config.worker.tenant_lock_wait_secs = 1;
        let app = tenant_master::App::new(config, env.pool.clone());
        moves::recover(&app, &request(&t, None, Some("enterprise")), "move-rcbusy").await.unwrap();
        release.await.unwrap();
        let mut own = env.as_tenant(&t.slug).await;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM projects").fetch_one(&mut own).await.unwrap();
        assert_eq!(rows, 5, "the active tenant logs in again after the dead move");
    }
}
