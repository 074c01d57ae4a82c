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
