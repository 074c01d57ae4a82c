//! Restores, deletes and admin actions that lose nothing, however often they run (issue 11).
//! Each test here failed on the code before it: see the comment on each.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use sqlx::{Connection, PgConnection};
use tenant_master::{
    backups::{self, Kind},
    jobs::restore_tenant,
    lock::HostSlot,
    ops::{backup::backup, delete::delete, restore::restore},
    schedule::{self, Schedule, SchedulerConfig},
    tenants::{self, Tenant},
};
use tenant_master_tests::{names_in_backup, TestEnv};

const LIMIT: Duration = Duration::from_secs(120);

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn names(env: &TestEnv, slug: &str) -> Vec<String> {
    let mut own = env.as_tenant(slug).await;
    sqlx::query_scalar("SELECT name FROM projects ORDER BY name").fetch_all(&mut own).await.unwrap()
}

async fn insert(env: &TestEnv, slug: &str, name: &str) {
    let mut own = env.as_tenant(slug).await;
    sqlx::query("INSERT INTO projects (name) VALUES ($1)").bind(name).execute(&mut own).await.unwrap();
}

async fn job_status(env: &TestEnv, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE id = $1").bind(id).fetch_one(&env.pool).await.unwrap()
}

async fn finished_backups(env: &TestEnv, tenant: &Tenant, kind: &str) -> Vec<backups::Backup> {
    let mut conn = env.pool.acquire().await.unwrap();
    backups::list(&mut conn, tenant.id).await.unwrap().into_iter().filter(|b| b.kind == kind).collect()
}

/// Old code: a rerun of a finished restore restored again, and the row written after the
/// first run was in no backup.
#[tokio::test]
async fn a_finished_restore_run_again_changes_nothing() {
    let env = TestEnv::new().await;
    let tenant = env.provisioned(&env.slug("rerun"), "starter").await;
    insert(&env, &tenant.slug, "before").await;
    let taken = backup(&env.app(), &tenant.slug, Kind::Manual, None, "job-b").await.unwrap();
    insert(&env, &tenant.slug, "between").await;
    let (_, job) = restore_tenant::enqueue(&env.pool, &tenant.slug, Some(taken.id), "test").await.unwrap();
    env.run_worker_until(LIMIT, || async { job_status(&env, &job).await == "done" }).await;
    assert_eq!(names(&env, &tenant.slug).await, vec!["before"]);
    insert(&env, &tenant.slug, "after").await;

    // As the orphan sweep does: back to Pending with one more attempt.
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Pending', attempts = attempts + 1, lock_by = NULL, lock_at = NULL, done_at = NULL, run_at = now()
         WHERE id = $1",
    )
    .bind(&job)
    .execute(&env.pool)
    .await
    .unwrap();
    env.run_worker_until(LIMIT, || async { job_status(&env, &job).await == "done" }).await;
    assert_eq!(names(&env, &tenant.slug).await, vec!["after", "before"], "the rerun after the orphan sweep restored again");

    // As an admin weeks later: the job looks dead (its acknowledgement was lost), `jobs retry`.
    sqlx::query("UPDATE apalis.jobs SET status = 'Killed', last_result = '{\"Err\": \"acknowledgement lost\"}' WHERE id = $1")
        .bind(&job)
        .execute(&env.pool)
        .await
        .unwrap();
    let out = env.tenantctl(&["jobs", "retry", &job]);
    assert!(out.status.success(), "{}", stderr(&out));
    env.run_worker_until(LIMIT, || async { job_status(&env, &job).await == "done" }).await;
    assert_eq!(names(&env, &tenant.slug).await, vec!["after", "before"], "`jobs retry` of a finished restore restored again");
    assert_eq!(finished_backups(&env, &tenant, "pre_restore").await.len(), 1, "one safety copy: the reruns took none");
    let result: serde_json::Value =
        sqlx::query_scalar("SELECT last_result FROM apalis.jobs WHERE id = $1").bind(&job).fetch_one(&env.pool).await.unwrap();
    assert_eq!(result["Ok"]["already_done"], true, "{result}");
}

/// Writes committed rows into the tenant's `projects` as fast as it can, reconnecting when
/// its login is held, until stopped; returns the names whose INSERT committed.
fn writer(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let committed = Mutex::new(Vec::new());
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut conn) = PgConnection::connect(&url).await else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let name = format!("w{n:06}");
                match sqlx::query("INSERT INTO projects (name) VALUES ($1)").bind(&name).execute(&mut conn).await {
                    Ok(_) => committed.lock().unwrap().push(name),
                    Err(_) => break,
                }
            }
        }
        committed.into_inner().unwrap()
    })
}

/// Old code: the safety dump ran before the login was held, so rows committed during the
/// dump, its check, hash and fsync were in neither the live data nor a backup.
#[tokio::test(flavor = "multi_thread")]
async fn rows_written_during_the_safety_dump_are_kept_by_restore_and_delete() {
    let env = TestEnv::new().await;
    let app = env.app();
    for op in ["restore", "delete"] {
        let tenant = env.provisioned(&env.slug(&format!("busy{}", &op[..1])), "starter").await;
        // Enough rows that the dump takes a while.
        let mut own = env.as_tenant(&tenant.slug).await;
        sqlx::query("INSERT INTO events (kind, payload) SELECT 'bulk', jsonb_build_object('n', g, 'pad', repeat('x', 200)) FROM generate_series(1, 30000) g")
            .execute(&mut own)
            .await
            .unwrap();
        drop(own);
        let taken = backup(&app, &tenant.slug, Kind::Manual, None, "job-b").await.unwrap();
        let url = {
            let mut conn = env.pool.acquire().await.unwrap();
            tenants::credentials_url(&mut conn, &env.config, &tenant.slug).await.unwrap()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let writing = writer(url, stop.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let safety_kind = match op {
            "restore" => restore(&app, &tenant.slug, taken.id, "job-r").await.map(|_| "pre_restore").unwrap(),
            _ => delete(&app, &tenant.slug, Some(tenant.id), "job-d", "test").await.map(|_| "pre_delete").unwrap(),
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let committed = writing.await.unwrap();
        let mut kept = if op == "restore" { names(&env, &tenant.slug).await } else { Vec::new() };
        assert!(committed.len() > 20, "{op}: the writer wrote throughout ({} rows)", committed.len());
        for safety in finished_backups(&env, &tenant, safety_kind).await {
            kept.extend(names_in_backup(&safety.file_path));
        }
        let lost: Vec<&String> = committed.iter().filter(|n| !kept.contains(n)).collect();
        assert!(
            lost.is_empty(),
            "{op}: {} committed row(s) are in neither the live data nor a backup, first {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
    }
}

/// Old code: `--latest` took the newest backup of any kind, so the second run restored the
/// first run's own `pre_restore` copy and undid it.
#[tokio::test]
async fn restore_latest_twice_equals_once() {
    let env = TestEnv::new().await;
    let tenant = env.provisioned(&env.slug("latest"), "business").await;
    insert(&env, &tenant.slug, "kept").await;
    backup(&env.app(), &tenant.slug, Kind::Manual, None, "job-b").await.unwrap();
    insert(&env, &tenant.slug, "later").await;
    let log = tempfile_path(&env, "worker.log");
    let mut worker = env.spawn_worker(&log);
    for round in 1..=2 {
        let out = env.tenantctl(&["backup", "restore", &tenant.slug, "--latest", "--yes", "--wait"]);
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        assert_eq!(names(&env, &tenant.slug).await, vec!["kept"], "after restore --latest number {round}");
    }
    let safeties = finished_backups(&env, &tenant, "pre_restore").await;
    assert_eq!(safeties.len(), 2, "each restore kept a safety copy, restorable by id");
    let out = env.tenantctl(&["backup", "list", &tenant.slug, "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(listed.as_array().unwrap().iter().any(|b| b["kind"] == "pre_restore"), "safety copies are listed with their kind");
    let _ = worker.kill();
    let _ = worker.wait();
}

fn tempfile_path(env: &TestEnv, name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tm-{}-{name}", env.suffix))
}

/// Old code: the nightly schedule put `keep: 7` in every payload, so an enterprise plan's
/// 30 never applied.
#[tokio::test(flavor = "multi_thread")]
async fn nightly_backups_keep_what_each_plan_says() {
    let mut env = TestEnv::new().await;
    env.config.backups.keep_per_plan.insert("enterprise".into(), 30);
    let big = env.provisioned(&env.slug("bigco"), "enterprise").await;
    let small = env.provisioned(&env.slug("small"), "starter").await;
    let nightly = Schedule::find(&SchedulerConfig::default(), "nightly_backup").unwrap();
    let first = nightly.current_slot(chrono::Utc::now()).unwrap() - chrono::Duration::days(31);
    for slot in nightly.slots_between(first, first + chrono::Duration::days(31)) {
        schedule::fan_out(&env.pool, &nightly, slot, "test").await.unwrap();
    }
    let jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE type = 'BackupTenant'").fetch_one(&env.pool).await.unwrap();
    assert_eq!(jobs, 62, "31 nights for two tenants");
    env.run_worker_until(Duration::from_secs(300), || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE type = 'BackupTenant' AND status <> 'done'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        left == 0
    })
    .await;
    assert_eq!(finished_backups(&env, &big, "scheduled").await.len(), 30, "enterprise keeps 30 nightly backups");
    assert_eq!(finished_backups(&env, &small, "scheduled").await.len(), 7, "starter keeps the default 7");
}

/// Old code: cancelling a pending provision or delete left the tenant `provisioning` or
/// `deleting` for good, and the hint said "create it again", which the taken slug refused.
#[tokio::test]
async fn cancelling_lifecycle_jobs_leaves_a_tenant_an_admin_can_act_on() {
    let env = TestEnv::new().await;
    let slug = env.slug("cancelme");
    let create = ["tenant", "create", &slug, "--product", "demo", "--plan", "starter", "--owner-email", "o@example.com", "--json"];
    let out = env.tenantctl(&create);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = sqlx::query_scalar::<_, String>("SELECT id FROM tenant_master.jobs WHERE type = 'ProvisionTenant'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let out = env.tenantctl(&["jobs", "cancel", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("is now failed") && stdout(&out).contains(&format!("tenantctl tenant delete {slug} --yes")),
        "{}",
        stdout(&out)
    );
    assert_eq!(env.tenant_status(&slug).await.as_deref(), Some("failed"));
    // The documented next step, then the slug is free again (nothing was backed up).
    let log = tempfile_path(&env, "worker.log");
    let mut worker = env.spawn_worker(&log);
    let out = env.tenantctl(&["tenant", "delete", &slug, "--yes", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.tenantctl(&create[..create.len() - 1].iter().copied().chain(["--wait"]).collect::<Vec<_>>());
    assert!(out.status.success(), "the slug of a deleted tenant without backups is free: {}", stderr(&out));
    assert_eq!(env.tenant_status(&slug).await.as_deref(), Some("active"));
    let _ = worker.kill();
    let _ = worker.wait();

    // A delete not yet started: cancelled, the tenant is active again and can be deleted later.
    let out = env.tenantctl(&["tenant", "delete", &slug, "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.tenant_status(&slug).await.as_deref(), Some("deleting"));
    let delete_id: String = sqlx::query_scalar("SELECT id FROM tenant_master.jobs WHERE type = 'DeleteTenant' ORDER BY id DESC LIMIT 1")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    // One that had begun (it records so before its first change) cannot be cancelled part way.
    let begun = "INSERT INTO tenant_master.activity_log (actor, tenant_id, action, details)
                 SELECT 'test', id, 'tenant.delete_started', jsonb_build_object('job_id', $2::text) FROM tenant_master.tenants WHERE slug = $1 AND status = 'deleting'";
    sqlx::query(begun).bind(&slug).bind(&delete_id).execute(&env.pool).await.unwrap();
    let out = env.tenantctl(&["jobs", "cancel", &delete_id]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("tenantctl jobs retry {delete_id}")), "{}", stderr(&out));
    sqlx::query("DELETE FROM tenant_master.activity_log WHERE action = 'tenant.delete_started'").execute(&env.pool).await.unwrap();
    let out = env.tenantctl(&["jobs", "cancel", &delete_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("is active again"), "{}", stdout(&out));
    assert_eq!(env.tenant_status(&slug).await.as_deref(), Some("active"));
    let mut own = env.as_tenant(&slug).await;
    sqlx::query("SELECT count(*) FROM projects").execute(&mut own).await.expect("the tenant still works");
}

/// Old code: a deleted tenant's slug could never be used again, and nothing said so.
#[tokio::test]
async fn a_deleted_slug_frees_up_when_its_backups_are_pruned() {
    let env = TestEnv::new().await;
    let old = env.provisioned(&env.slug("reuse"), "starter").await;
    delete(&env.app(), &old.slug, Some(old.id), "job-d", "test").await.unwrap();
    let create = ["tenant", "create", &old.slug, "--product", "demo", "--plan", "business", "--owner-email", "o@example.com"];
    let out = env.tenantctl(&create);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let frees = (chrono::Utc::now() + chrono::Duration::days(30)).format("%Y-%m-%d").to_string();
    assert!(err.contains("frees up") && err.contains(&frees) && err.trim_end().lines().count() == 1, "{err}");

    sqlx::query("UPDATE tenant_master.tenants SET deleted_at = now() - interval '31 days' WHERE id = $1")
        .bind(old.id)
        .execute(&env.pool)
        .await
        .unwrap();
    tenant_master::ops::prune::prune_deleted_tenant_backups(&env.pool, 30).await.unwrap();
    let out = env.tenantctl(&create);
    assert!(out.status.success(), "{}", stderr(&out));
    env.run_worker_until(LIMIT, || async { env.tenant_status(&old.slug).await.as_deref() == Some("active") }).await;
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, status FROM tenant_master.tenants WHERE slug = $1 ORDER BY id")
        .bind(&old.slug)
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "the deleted tenant keeps its row and history: {rows:?}");
    assert_eq!((rows[0].0, rows[0].1.as_str(), rows[1].1.as_str()), (old.id, "deleted", "active"));
    // A late rerun of the old delete job never touches the new tenant.
    delete(&env.app(), &old.slug, Some(old.id), "job-d-again", "test").await.unwrap();
    assert_eq!(env.tenant_status(&old.slug).await.as_deref(), Some("active"));
}

/// Old code: a restore took the tenant offline (login held, schema set aside), then waited
/// for a heavy slot; jobs that waited burned attempts.
#[tokio::test]
async fn a_job_waiting_for_a_heavy_slot_holds_neither_the_tenant_nor_an_attempt() {
    let mut env = TestEnv::new().await;
    env.config.worker.heavy_jobs_per_host = 1;
    env.config.worker.heavy_slot_wait_secs = 1;
    env.config.worker.retry_base_secs = 1;
    let tenant = env.provisioned(&env.slug("waits"), "starter").await;
    insert(&env, &tenant.slug, "live").await;
    let taken = backup(&env.app(), &tenant.slug, Kind::Manual, None, "job-b").await.unwrap();
    let held = HostSlot::acquire(&env.config, &tenant.host).await.unwrap();
    let (_, job) = restore_tenant::enqueue(&env.pool, &tenant.slug, Some(taken.id), "test").await.unwrap();
    env.run_worker_until(LIMIT, || async {
        let attempts: i32 =
            sqlx::query_scalar("SELECT attempts FROM apalis.jobs WHERE id = $1").bind(&job).fetch_one(&env.pool).await.unwrap();
        attempts >= 4
    })
    .await;
    // Four tries later: the tenant was never taken offline, and no attempt was spent.
    let mut own = env.as_tenant(&tenant.slug).await;
    sqlx::query("INSERT INTO projects (name) VALUES ('while waiting')").execute(&mut own).await.expect("the tenant can log in and write");
    drop(own);
    let (attempts, max_attempts): (i32, i32) =
        sqlx::query_as("SELECT attempts, max_attempts FROM apalis.jobs WHERE id = $1").bind(&job).fetch_one(&env.pool).await.unwrap();
    assert_eq!(max_attempts - attempts, 3, "RestoreTenant allows 3; waiting for a slot cost no attempt ({attempts}/{max_attempts})");
    held.release().await;
    env.run_worker_until(LIMIT, || async { job_status(&env, &job).await == "done" }).await;
    assert_eq!(names(&env, &tenant.slug).await, vec!["live"]);
    let safety = finished_backups(&env, &tenant, "pre_restore").await;
    assert!(names_in_backup(&safety[0].file_path).contains(&"while waiting".to_owned()), "the write while waiting is in the safety copy");
}

/// Old code: `jobs cancel` guarded only deletes and moves, so cancelling a restore killed
/// while the data was set aside left the tenant active, its login held, an empty live
/// schema and its data in `__restore_aside`. Now it is refused, and the named next command
/// (`jobs retry`) finishes the restore.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_that_set_the_data_aside_cannot_be_cancelled_and_its_retry_finishes_it() {
    let env = TestEnv::new().await;
    let tenant = env.provisioned(&env.slug("rcancel"), "starter").await;
    insert(&env, &tenant.slug, "before").await;
    let taken = backup(&env.app(), &tenant.slug, Kind::Manual, None, "job-b").await.unwrap();
    insert(&env, &tenant.slug, "after").await;
    let (_, job) = restore_tenant::enqueue(&env.pool, &tenant.slug, Some(taken.id), "test").await.unwrap();
    // As a worker killed there would leave it.
    tenant_master::fault::arm(&tenant.slug, "restore:set_aside");
    let err = restore(&env.app(), &tenant.slug, taken.id, &job).await.unwrap_err();
    assert!(err.is_injected(), "{err}");
    let out = env.tenantctl(&["jobs", "cancel", &job]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains(&format!("`tenantctl jobs retry {job}` finishes it")), "{}", stderr(&out));
    assert_eq!(job_status(&env, &job).await, "pending", "the refused cancel left the job as it was");
    env.run_worker_until(LIMIT, || async { job_status(&env, &job).await == "done" }).await;
    assert_eq!(names(&env, &tenant.slug).await, vec!["before"]);
    let safety = finished_backups(&env, &tenant, "pre_restore").await;
    assert_eq!(safety.len(), 1, "the copy taken before the crash is the one kept");
    assert_eq!(names_in_backup(&safety[0].file_path), vec!["before", "after"]);
}

/// Review finding: a cancelled job kept its idempotency key, so a delete asked for again
/// after a cancelled one found the cancelled job, and the tenant stayed `deleting` with
/// nothing to run it. The key is freed on cancel.
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_asked_for_again_after_a_cancelled_one_runs() {
    let env = TestEnv::new().await;
    let t = env.provisioned(&env.slug("again"), "starter").await;
    let out = env.tenantctl(&["tenant", "delete", &t.slug, "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first: String =
        sqlx::query_scalar("SELECT id FROM tenant_master.jobs WHERE type = 'DeleteTenant'").fetch_one(&env.pool).await.unwrap();
    let out = env.tenantctl(&["jobs", "cancel", &first]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.tenant_status(&t.slug).await.as_deref(), Some("active"));
    let out = env.tenantctl(&["tenant", "delete", &t.slug, "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second: String = sqlx::query_scalar("SELECT id FROM tenant_master.jobs WHERE type = 'DeleteTenant' AND status = 'pending'")
        .fetch_one(&env.pool)
        .await
        .expect("a new delete job, not the cancelled one");
    assert_ne!(first, second);
    env.run_worker_until(LIMIT, || async { job_status(&env, &second).await == "done" }).await;
    assert_eq!(env.tenant_status(&t.slug).await.as_deref(), Some("deleted"));
}

/// Review finding: a resume whose acknowledgement was lost ran again after billing had
/// suspended the tenant, and gave it its login back. A pause or resume job records its
/// outcome with the status; its rerun changes nothing and leaves the login as the status
/// says now.
#[tokio::test(flavor = "multi_thread")]
async fn a_resume_run_again_after_a_later_suspension_changes_nothing() {
    use tenant_master::{
        jobs::access::ResumeTenant,
        ops::access::{change_access, Change},
    };
    let env = TestEnv::new().await;
    let t = env.provisioned(&env.slug("resumed"), "starter").await;
    change_access(&env.app(), &t.slug, Change::Pause, None, "test").await.unwrap();
    let resume = {
        let mut conn = env.pool.acquire().await.unwrap();
        tenant_master::queue::enqueue(&mut conn, &ResumeTenant { slug: t.slug.clone(), actor: "test".into() }).await.unwrap()
    };
    env.run_worker_until(LIMIT, || async { job_status(&env, &resume).await == "done" }).await;
    assert_eq!(env.tenant_status(&t.slug).await.as_deref(), Some("active"));
    change_access(&env.app(), &t.slug, Change::Suspend, Some("unpaid"), "billing").await.unwrap();
    // The lost acknowledgement: the orphan sweep puts the finished job back.
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Pending', attempts = attempts + 1, lock_by = NULL, done_at = NULL, run_at = now() WHERE id = $1",
    )
    .bind(&resume)
    .execute(&env.pool)
    .await
    .unwrap();
    env.run_worker_until(LIMIT, || async { job_status(&env, &resume).await == "done" }).await;
    assert_eq!(env.tenant_status(&t.slug).await.as_deref(), Some("suspended"), "the rerun undid the suspension");
    assert!(env.try_as_tenant(&t.slug).await.is_err(), "the suspended tenant can log in after the rerun");
}
