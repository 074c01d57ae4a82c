//! The crash matrix (issue 23): every crash point the code declares (`fault::POINTS`) is
//! a case, and every case runs twice: once a real `tenant-worker` process dies at the point
//! (abort: no error path, no cleanup code runs, as with SIGKILL) and a fresh one takes over;
//! once the worker stops at the point while PostgreSQL (both servers) restarts, then goes
//! on into the cut connections. All cases of a mode run at once, one tenant each, on two
//! private servers, with writers running on every tenant whose data the job touches.
//!
//! After each mode, for every case: the job is `done`; every row a writer was told was
//! committed is in the live data or in a finished backup of the tenant; the tenant's own
//! login works exactly when its status says; its credentials reach one live copy; nothing
//! is left behind (set-aside schemas, unfinished backups, operator logins, logins on a
//! host it left); a bystander tenant is unchanged; and every job run again (as after a
//! lost acknowledgement) changes none of that.
//!
//! The matrix is complete by construction: `every_declared_point_has_a_case` fails for a
//! point without a case, and `every_point_in_the_code_is_declared` for a point the code
//! passes that is not declared.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Child,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use sqlx::{Connection, PgConnection};
use tenant_master::{
    backups::{self, Kind},
    fault,
    jobs::{
        access::{PauseTenant, ResumeTenant},
        backup_tenant::BackupTenant,
        cleanup::Cleanup,
        delete_tenant::DeleteTenant,
        migrate_tenant::MigrateTenant,
        move_tenant::MoveTenant,
        restore_tenant::RestoreTenant,
        vacuum::Vacuum,
    },
    ops::{access, backup, maintenance::Tasks},
    queue,
    tenants::{self, NewTenant, Tenant},
    App, Config,
};
use tenant_master_tests::{admin_on, demo_products, moves::request, names_in_backup, private_server::PrivateServer, TempDir, TestEnv};

/// The longest a whole mode may take before the test gives up.
// Generous: the kill and restart matrices run side by side on a shared 2-core machine
// (alone the kill matrix takes about 170 s; beside the restart matrix it once passed 420 s).
const LIMIT: Duration = Duration::from_secs(600);

/// What one case's job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Provision {
        dedicated: bool,
    },
    Backup,
    Restore {
        dedicated: bool,
    },
    Delete {
        dedicated: bool,
    },
    /// starter on the first server -> enterprise there (shared to dedicated).
    MoveUp,
    /// enterprise -> the second server (a host move of a dedicated tenant).
    MoveAcross,
    /// enterprise on the second server -> starter on the first (dedicated to shared, across).
    MoveDownAcross,
    Migrate,
    Pause,
    Resume,
    Vacuum,
    Cleanup,
}

impl Scenario {
    /// The crash points this scenario's job passes (with the demo product's versions).
    fn points(self) -> Vec<String> {
        let of = |prefix: &str| -> Vec<String> {
            fault::POINTS
                .iter()
                .filter(|p| p.starts_with(prefix))
                .flat_map(|p| match p.strip_suffix('*') {
                    Some(stem) if stem.starts_with("migrate:") => vec![format!("{stem}0003")],
                    Some(stem) => vec![format!("{stem}0001"), format!("{stem}0002"), format!("{stem}0003")],
                    None => vec![p.to_string()],
                })
                .collect()
        };
        match self {
            Scenario::Provision { .. } => of("provision:"),
            Scenario::Backup => of("backup:"),
            Scenario::Restore { .. } => of("restore:"),
            Scenario::Delete { .. } => of("delete:"),
            // One host: the login comes back after the old place is closed, with no point between.
            Scenario::MoveUp => of("move:").into_iter().filter(|p| p != "move:login_back").collect(),
            Scenario::MoveAcross | Scenario::MoveDownAcross => of("move:"),
            Scenario::Migrate => of("migrate:"),
            Scenario::Pause => of("pause:"),
            Scenario::Resume => of("resume:"),
            Scenario::Vacuum => of("maintenance:"),
            Scenario::Cleanup => of("cleanup:"),
        }
    }

    fn all() -> Vec<Scenario> {
        vec![
            Scenario::Provision { dedicated: false },
            Scenario::Backup,
            Scenario::Restore { dedicated: false },
            Scenario::Delete { dedicated: false },
            Scenario::MoveUp,
            Scenario::MoveAcross,
            Scenario::MoveDownAcross,
            Scenario::Migrate,
            Scenario::Pause,
            Scenario::Resume,
            Scenario::Vacuum,
            Scenario::Cleanup,
        ]
    }

    /// Every case: each scenario's points, the plan-dependent scenarios alternating between
    /// a shared (even points) and a dedicated (odd points) tenant.
    fn cases() -> Vec<(Scenario, String)> {
        let mut cases = Vec::new();
        for scenario in Scenario::all() {
            for (i, point) in scenario.points().into_iter().enumerate() {
                let dedicated = i % 2 == 1;
                let scenario = match scenario {
                    Scenario::Provision { .. } => Scenario::Provision { dedicated },
                    Scenario::Restore { .. } => Scenario::Restore { dedicated },
                    Scenario::Delete { .. } => Scenario::Delete { dedicated },
                    other => other,
                };
                cases.push((scenario, point));
            }
        }
        cases
    }

    /// Whether a writer runs on the tenant while its job runs.
    fn writes(self) -> bool {
        matches!(
            self,
            Scenario::Backup
                | Scenario::Restore { .. }
                | Scenario::Delete { .. }
                | Scenario::MoveUp
                | Scenario::MoveAcross
                | Scenario::MoveDownAcross
                | Scenario::Vacuum
                | Scenario::Cleanup
        )
    }

    /// The tenant's status once the job is done.
    fn end_status(self) -> &'static str {
        match self {
            Scenario::Delete { .. } => "deleted",
            Scenario::Pause => "paused",
            _ => "active",
        }
    }
}

/// One case: a tenant, its job and the point its worker crashes at.
struct Case {
    scenario: Scenario,
    point: String,
    slug: String,
    job_id: String,
    /// Rows the tenant was told were committed before the job (seeded) and by its writer.
    seeded: Vec<String>,
    writer: Option<Writer>,
}

impl Case {
    fn entry(&self) -> String {
        format!("{}@{}", self.slug, self.point)
    }
}

/// The two servers of a mode and the control plane on the first.
struct Rig {
    first: PrivateServer,
    second: PrivateServer,
    env: TestEnv,
    _products: TempDir,
}

impl Rig {
    async fn start() -> Rig {
        let first = PrivateServer::start_with(400);
        let second = PrivateServer::start_with(200);
        let products = demo_products();
        let mut env = TestEnv::on_server(&first.url()).await;
        env.config.products_dir = products.path().to_owned();
        env.config.worker.retry_base_secs = 1;
        env.config.worker.missed_heartbeats = 2;
        let out = env.add_host("second", &second.url());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Rig { first, second, env, _products: products }
    }

    /// Jobs wait out no backoff here (as if an admin retried them at once), and any number
    /// of interruptions is allowed: one process runs every case's job, so each crash or
    /// restart also interrupts jobs that are not at their own point.
    async fn nudge(&self, cases: &[Case]) {
        let ids: Vec<String> = cases.iter().map(|c| c.job_id.clone()).collect();
        sqlx::query(
            "UPDATE apalis.jobs SET run_at = now(), max_attempts = 100
             WHERE id = ANY($1) AND status IN ('Pending', 'Failed') AND (run_at > now() OR max_attempts < 100)",
        )
        .bind(&ids)
        .execute(&self.env.pool)
        .await
        .ok();
    }

    fn app(&self) -> App {
        App::new(self.env.config.clone(), self.env.pool.clone())
    }

    /// A worker process with room for every case's job at once, and `faults` set.
    fn spawn_worker(&self, log: &Path, faults: &[(&str, String)]) -> Child {
        let mut extra: Vec<(&str, &str)> = vec![
            ("TENANT_MASTER_WORKER_HEAVY_JOBS_PER_HOST", "16"),
            ("TENANT_MASTER_WORKER_TENANT_JOBS_PER_PROCESS", "64"),
            ("TENANT_MASTER_WORKER_CONCURRENCY", "16"),
            // A pool that lost its database does not wait long for jobs that lost it too:
            // they run again, which is what this matrix is about.
            ("TENANT_MASTER_WORKER_SHUTDOWN_TIMEOUT_SECS", "3"),
        ];
        extra.extend(faults.iter().map(|(k, v)| (*k, v.as_str())));
        self.env.spawn_worker_with(log, &extra)
    }

    fn restart_servers(&self) {
        std::thread::scope(|s| {
            s.spawn(|| self.first.restart());
            s.spawn(|| self.second.restart());
        });
    }
}

/// Provisions a demo tenant directly (no queue), on `host` if given.
async fn provisioned(config: Config, pool: sqlx::PgPool, slug: String, plan: &'static str, host: Option<&'static str>) -> Tenant {
    let new = NewTenant::parse(&slug, "demo", plan, "owner@example.com", None, host).unwrap();
    tenant_master::jobs::provision_tenant::provision(&App::new(config, pool), &new, "test").await.expect("provision")
}

/// Builds every case of a mode: tenants provisioned and seeded, jobs enqueued.
async fn prepare(rig: &Rig, tag: &str, wanted: &[(Scenario, String)]) -> Vec<Case> {
    let env = &rig.env;
    let mut plans = Vec::new();
    for (scenario, point) in wanted.iter().cloned() {
        let slug = env.slug(&format!("{tag}{}", plans.len()));
        plans.push((scenario, point, slug));
    }
    // Tenants first (the provisioning cases' tenants are their jobs' work), one at a time:
    // concurrent GRANTs on one shared database's catalog row fail ("tuple concurrently
    // updated"), which the worker retries but a direct call does not.
    let mut set = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(1));
    for (i, (scenario, _, slug)) in plans.iter().enumerate() {
        let (plan, host): (&'static str, Option<&'static str>) = match scenario {
            Scenario::Provision { .. } => continue,
            // Hosts named: with two enabled, an unnamed one goes where there is most room.
            Scenario::Restore { dedicated: true } | Scenario::Delete { dedicated: true } | Scenario::MoveAcross => {
                ("enterprise", Some("default"))
            }
            Scenario::MoveDownAcross => ("enterprise", Some("second")),
            _ => ("starter", Some("default")),
        };
        let (config, pool, slug, gate) = (env.config.clone(), env.pool.clone(), slug.clone(), gate.clone());
        set.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            (i, provisioned(config, pool, slug, plan, host).await)
        });
    }
    let mut tenants = BTreeMap::new();
    while let Some(done) = set.join_next().await {
        let (i, tenant) = done.unwrap();
        tenants.insert(i, tenant);
    }
    let app = rig.app();
    let mut cases = Vec::new();
    for (i, (scenario, point, slug)) in plans.into_iter().enumerate() {
        let mut seeded = Vec::new();
        if let Some(tenant) = tenants.get(&i) {
            seeded = (1..=20).map(|n| format!("seed{n:03}")).collect();
            insert_names(env, &tenant.slug, &seeded).await;
        }
        let job_id = enqueue(rig, &app, scenario, &slug, tenants.get(&i)).await;
        let writer = match (scenario.writes(), tenants.get(&i)) {
            (true, Some(_)) => Some(Writer::start(env, &slug)),
            _ => None,
        };
        cases.push(Case { scenario, point, slug, job_id, seeded, writer });
    }
    cases
}

async fn insert_names(env: &TestEnv, slug: &str, names: &[String]) {
    let mut own = env.as_tenant(slug).await;
    for name in names {
        sqlx::query("INSERT INTO projects (name) VALUES ($1)").bind(name).execute(&mut own).await.unwrap();
    }
}

/// Prepares what the scenario's job needs and enqueues it; returns the job id.
async fn enqueue(rig: &Rig, app: &App, scenario: Scenario, slug: &str, tenant: Option<&Tenant>) -> String {
    let env = &rig.env;
    let mut conn = env.pool.acquire().await.unwrap();
    match scenario {
        Scenario::Provision { dedicated } => {
            let plan = if dedicated { "enterprise" } else { "starter" };
            let new = NewTenant::parse(slug, "demo", plan, "owner@example.com", None, None).unwrap();
            tenant_master::jobs::provision_tenant::create_in_new_transaction(&env.pool, &env.config, &new, "test").await.unwrap().1
        }
        Scenario::Backup => {
            let job = BackupTenant { slug: slug.into(), kind: Kind::Manual, keep: None, schedule: None, slot: None };
            queue::enqueue(&mut conn, &job).await.unwrap()
        }
        Scenario::Restore { .. } => {
            let taken = backup::backup(app, slug, Kind::Manual, None, &format!("seed-{slug}")).await.unwrap();
            insert_names(env, slug, &["after_backup".to_owned()]).await;
            queue::enqueue(&mut conn, &RestoreTenant { slug: slug.into(), backup_id: taken.id }).await.unwrap()
        }
        Scenario::Delete { .. } => {
            let t = tenant.unwrap();
            queue::enqueue(&mut conn, &DeleteTenant { slug: slug.into(), tenant_id: Some(t.id), actor: "test".into() }).await.unwrap()
        }
        Scenario::MoveUp => {
            queue::enqueue(&mut conn, &MoveTenant { request: request(tenant.unwrap(), None, Some("enterprise")) }).await.unwrap()
        }
        Scenario::MoveAcross => {
            queue::enqueue(&mut conn, &MoveTenant { request: request(tenant.unwrap(), Some("second"), None) }).await.unwrap()
        }
        Scenario::MoveDownAcross => {
            queue::enqueue(&mut conn, &MoveTenant { request: request(tenant.unwrap(), Some("default"), Some("starter")) }).await.unwrap()
        }
        Scenario::Migrate => {
            let t = tenant.unwrap();
            queue::enqueue(&mut conn, &MigrateTenant { slug: slug.into(), tenant_id: Some(t.id), to: 3, actor: "test".into() })
                .await
                .unwrap()
        }
        Scenario::Pause => {
            queue::enqueue(&mut conn, &PauseTenant { slug: slug.into(), suspend: false, reason: None, actor: "test".into() }).await.unwrap()
        }
        Scenario::Resume => {
            access::change_access(app, slug, access::Change::Pause, None, "test").await.unwrap();
            queue::enqueue(&mut conn, &ResumeTenant { slug: slug.into(), actor: "test".into() }).await.unwrap()
        }
        Scenario::Vacuum => {
            let tasks = Tasks { vacuum: true, full: false, analyze: true, reindex: false };
            queue::enqueue(&mut conn, &Vacuum { slug: slug.into(), tasks, backup_first: true, schedule: None, slot: None }).await.unwrap()
        }
        Scenario::Cleanup => {
            let mut own = env.as_tenant(slug).await;
            sqlx::query("INSERT INTO events (kind, created_at) SELECT 'old', now() - interval '400 days' FROM generate_series(1, 50)")
                .execute(&mut own)
                .await
                .unwrap();
            let job = Cleanup { slug: slug.into(), older_than_days: 365, dry_run: false, backup_first: false, schedule: None, slot: None };
            queue::enqueue(&mut conn, &job).await.unwrap()
        }
    }
}

/// A writer: commits rows `w<n>` into the tenant's `projects` as the tenant, as fast as it
/// can, reconnecting (with the registry's credentials of the moment) when cut off.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Writer {
    fn start(env: &TestEnv, slug: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (pool, config, slug, flag) = (env.pool.clone(), env.config.clone(), slug.to_owned(), stop.clone());
        let task = tokio::spawn(async move {
            let committed = Mutex::new(Vec::new());
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) {
                let url = match pool.acquire().await {
                    Ok(mut cp) => tenants::credentials_url(&mut cp, &config, &slug).await.ok(),
                    Err(_) => None,
                };
                let conn = match url {
                    Some(url) => PgConnection::connect(&url).await.ok(),
                    None => None,
                };
                let Some(mut conn) = conn else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                while !flag.load(Ordering::Relaxed) {
                    n += 1;
                    let name = format!("w{n:06}");
                    match sqlx::query("INSERT INTO projects (name) VALUES ($1)").bind(&name).execute(&mut conn).await {
                        Ok(_) => committed.lock().unwrap().push(name),
                        Err(_) => break,
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            committed.into_inner().unwrap()
        });
        Writer { stop, task }
    }

    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

async fn statuses(env: &TestEnv, cases: &[Case]) -> BTreeMap<String, (String, Option<String>)> {
    let ids: Vec<String> = cases.iter().map(|c| c.job_id.clone()).collect();
    let rows: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT id, status, last_error FROM tenant_master.jobs WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    rows.into_iter().map(|(id, status, error)| (id, (status, error))).collect()
}

async fn all_finished(env: &TestEnv, cases: &[Case]) -> bool {
    let now = statuses(env, cases).await;
    cases.iter().all(|c| now.get(&c.job_id).is_some_and(|(s, _)| s == "done" || s == "dead"))
}

fn reached(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".reached").map(str::to_owned))
        .collect()
}

/// Kill mode: workers that abort at each point, replaced until every job finished.
async fn run_with_kills(rig: &Rig, cases: &[Case], faults: &TempDir, logs: &TempDir) -> usize {
    let entries: Vec<String> = cases.iter().map(Case::entry).collect();
    let crash_at = entries.join(",");
    let dir = faults.path().display().to_string();
    let started = Instant::now();
    let mut spawned = 0;
    // Two processes at a time: each crash stops one, the other goes on (and takes over the
    // dead one's jobs once its heartbeat is missed).
    let mut workers: Vec<Child> = Vec::new();
    loop {
        if started.elapsed() >= LIMIT {
            let reached = reached(faults.path());
            let missing: Vec<&String> = entries.iter().filter(|e| !reached.contains(*e)).collect();
            panic!(
                "the kill matrix did not finish within {LIMIT:?}; {} of {} points reached, not: {missing:?}",
                reached.len(),
                entries.len()
            );
        }
        workers.retain_mut(|w| w.try_wait().unwrap().is_none());
        while workers.len() < 2 {
            let log = logs.path().join(format!("worker-{spawned}.log"));
            workers.push(rig.spawn_worker(&log, &[("TENANT_MASTER_CRASH_AT", crash_at.clone()), ("TENANT_MASTER_FAULT_DIR", dir.clone())]));
            spawned += 1;
        }
        if all_finished(&rig.env, cases).await {
            break;
        }
        rig.nudge(cases).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    spawned
}

/// Restart mode: one worker that stops at each point; the servers restart; it goes on.
async fn run_with_restarts(rig: &Rig, cases: &[Case], faults: &TempDir, logs: &TempDir) -> usize {
    let pause_at = cases.iter().map(Case::entry).collect::<Vec<_>>().join(",");
    let dir = faults.path().display().to_string();
    let mut worker =
        rig.spawn_worker(&logs.path().join("worker.log"), &[("TENANT_MASTER_PAUSE_AT", pause_at), ("TENANT_MASTER_FAULT_DIR", dir)]);
    let started = Instant::now();
    let mut restarts = 0;
    let mut resumed = BTreeSet::new();
    loop {
        assert!(started.elapsed() < LIMIT, "the restart matrix did not finish within {LIMIT:?}");
        assert!(worker.try_wait().unwrap().is_none(), "the worker exited during the restart matrix");
        let waiting: Vec<String> = reached(faults.path()).difference(&resumed).cloned().collect();
        if !waiting.is_empty() {
            // A moment for other jobs to reach their points too: one restart serves them all.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let waiting: Vec<String> = reached(faults.path()).difference(&resumed).cloned().collect();
            rig.restart_servers();
            restarts += 1;
            for entry in waiting {
                std::fs::write(faults.path().join(format!("{entry}.resume")), b"").unwrap();
                resumed.insert(entry);
            }
            continue;
        }
        if all_finished(&rig.env, cases).await {
            break;
        }
        rig.nudge(cases).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = worker.kill();
    let _ = worker.wait();
    restarts
}

/// Runs every job of `cases` once more, as after a lost acknowledgement, to done.
async fn run_again(rig: &Rig, cases: &[Case], logs: &TempDir) {
    let ids: Vec<String> = cases.iter().map(|c| c.job_id.clone()).collect();
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Pending', attempts = attempts + 1, max_attempts = max_attempts + 1, lock_by = NULL,
                lock_at = NULL, done_at = NULL, run_at = now()
         WHERE id = ANY($1)",
    )
    .bind(&ids)
    .execute(&rig.env.pool)
    .await
    .unwrap();
    let mut worker = rig.spawn_worker(&logs.path().join("rerun.log"), &[]);
    let started = Instant::now();
    while !all_finished(&rig.env, cases).await {
        assert!(started.elapsed() < LIMIT, "the reruns did not finish within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = worker.kill();
    let _ = worker.wait();
}

/// The invariants of every case; returns one line per broken promise.
async fn check(rig: &Rig, cases: &[Case], written: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let env = &rig.env;
    let mut broken = Vec::new();
    let now = statuses(env, cases).await;
    for case in cases {
        let what = format!("{:?} at {}", case.scenario, case.point);
        let (status, error) = now.get(&case.job_id).cloned().unwrap_or_default();
        if status != "done" {
            broken.push(format!("{what}: job ended {status}: {}", error.unwrap_or_default()));
            continue;
        }
        let tenant = env.registry(&case.slug).await;
        if tenant.status != case.scenario.end_status() {
            broken.push(format!("{what}: tenant is {}, expected {}", tenant.status, case.scenario.end_status()));
        }
        // The tenant's own login works exactly when it is active, and reaches its data.
        let live: Option<Vec<String>> = match tenant.status.as_str() {
            "deleted" => None,
            _ => match env.try_as_tenant(&case.slug).await {
                Ok(mut own) => sqlx::query_scalar("SELECT name FROM projects").fetch_all(&mut own).await.ok(),
                Err(_) => None,
            },
        };
        if (tenant.status == "active") != live.is_some() {
            broken.push(format!("{what}: tenant {} but its login {}", tenant.status, if live.is_some() { "works" } else { "fails" }));
        }
        // Every row acknowledged to the tenant is in the live data; after a restore or a
        // delete, in the live data or in a finished backup of the tenant.
        let mut in_live: BTreeSet<String> = live.unwrap_or_default().into_iter().collect();
        if !matches!(tenant.status.as_str(), "active" | "deleted") {
            let mut admin = admin_on(&host_url(rig, &tenant.host), &tenant.database).await;
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT name FROM {}.projects", tenant.schema)))
                .fetch_all(&mut admin)
                .await
                .unwrap_or_default();
            in_live.extend(rows);
        }
        let mut kept = in_live.clone();
        let mut cp = env.pool.acquire().await.unwrap();
        for b in backups::list(&mut cp, tenant.id).await.unwrap() {
            if b.finished_at.is_some() {
                kept.extend(names_in_backup(&b.file_path));
            }
        }
        let may_leave_live = matches!(case.scenario, Scenario::Restore { .. } | Scenario::Delete { .. });
        let acknowledged = case.seeded.iter().chain(written.get(&case.slug).into_iter().flatten());
        let lost: Vec<&String> = acknowledged.filter(|n| !if may_leave_live { &kept } else { &in_live }.contains(*n)).collect();
        if !lost.is_empty() {
            broken.push(format!(
                "{what}: {} acknowledged row(s) are not {}: {:?}",
                lost.len(),
                if may_leave_live { "in the live data nor in a backup" } else { "in the live data" },
                &lost[..lost.len().min(5)]
            ));
        }
        // A restore restored: the row written after the chosen backup is gone from the live
        // data and is in the safety copy the job names, with every seeded row.
        if let Scenario::Restore { .. } = case.scenario {
            let result: Option<serde_json::Value> = sqlx::query_scalar("SELECT result FROM tenant_master.jobs WHERE id = $1")
                .bind(&case.job_id)
                .fetch_one(&env.pool)
                .await
                .unwrap();
            let safety = result.as_ref().and_then(|r| r["safety_backup_id"].as_i64());
            let copy = match safety {
                Some(id) => backups::get(&mut cp, tenant.id, id).await.map(|b| names_in_backup(&b.file_path)).unwrap_or_default(),
                None => Vec::new(),
            };
            if in_live.contains("after_backup") {
                broken.push(format!("{what}: the live data still has the row written after the chosen backup"));
            }
            if !copy.iter().any(|n| n == "after_backup") || !case.seeded.iter().all(|n| copy.contains(n)) {
                broken.push(format!("{what}: the safety copy the job names ({safety:?}) lacks rows the tenant had before the restore"));
            }
        }
        broken.extend(leftovers(rig, &tenant).await.into_iter().map(|l| format!("{what}: {l}")));
    }
    broken
}

fn host_url(rig: &Rig, host: &str) -> String {
    if host == "second" {
        rig.second.url()
    } else {
        rig.first.url()
    }
}

/// What a finished job must not leave: set-aside schemas, a live-named copy outside the
/// tenant's place, unfinished backups, operator logins, a login on a host it left.
async fn leftovers(rig: &Rig, tenant: &Tenant) -> Vec<String> {
    let mut found = Vec::new();
    let operator = format!("{}__op", tenant.role);
    for (host, url) in [("default", rig.first.url()), ("second", rig.second.url())] {
        let mut server = admin_on(&url, "postgres").await;
        let logins: Vec<(String, bool)> = sqlx::query_as(
            "SELECT rolname::text || ' (port ' || current_setting('port') || ', valid until ' || coalesce(rolvaliduntil::text, '-') || ')', rolcanlogin
             FROM pg_roles WHERE rolname IN ($1, $2)",
        )
            .bind(&tenant.role)
            .bind(&operator)
            .fetch_all(&mut server)
            .await
            .unwrap();
        for (role, can) in logins {
            let may = role.split(' ').next() == Some(tenant.role.as_str()) && host == tenant.host && tenant.status == "active";
            if can && !may {
                found.push(format!("role {role} can log in on host {host}"));
            }
        }
        let databases: Vec<String> = sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate")
            .fetch_all(&mut server)
            .await
            .unwrap();
        for database in databases {
            let mut db = admin_on(&url, &database).await;
            let schemas: Vec<String> =
                sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = $1 OR nspname LIKE $1 || '\\_\\_%'")
                    .bind(&tenant.schema)
                    .fetch_all(&mut db)
                    .await
                    .unwrap();
            for schema in schemas {
                let home = host == tenant.host && database == tenant.database;
                let ok = match schema.strip_prefix(&tenant.schema) {
                    Some("") => home && tenant.status != "deleted",
                    // A move keeps its source for `keep_source_hours`, renamed.
                    Some("__moved") => !home,
                    _ => false,
                };
                if !ok {
                    found.push(format!("schema {schema} left in {database} on host {host}"));
                }
            }
        }
    }
    let mut cp = rig.env.pool.acquire().await.unwrap();
    let unfinished: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.backups WHERE tenant_id = $1 AND finished_at IS NULL")
        .bind(tenant.id)
        .fetch_one(&mut *cp)
        .await
        .unwrap();
    if unfinished > 0 {
        found.push(format!("{unfinished} unfinished backup row(s)"));
    }
    let dir = rig.env.config.backup_dir.join(&tenant.slug);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".partial") {
                found.push(format!("partial file {}", e.path().display()));
            }
        }
    }
    found
}

/// A tenant no case touches: its rows, and that it can log in.
async fn bystander(env: &TestEnv) -> (String, Vec<String>) {
    let slug = env.slug("bystander");
    provisioned(env.config.clone(), env.pool.clone(), slug.clone(), "starter", None).await;
    env.add_projects(&slug, "keep", 25).await;
    let rows = bystander_rows(env, &slug).await;
    (slug, rows)
}

async fn bystander_rows(env: &TestEnv, slug: &str) -> Vec<String> {
    let mut own = env.as_tenant(slug).await;
    sqlx::query_scalar("SELECT name FROM projects ORDER BY name").fetch_all(&mut own).await.unwrap()
}

async fn finish_writers(cases: &mut [Case]) -> BTreeMap<String, Vec<String>> {
    let mut written = BTreeMap::new();
    for case in cases.iter_mut() {
        if let Some(writer) = case.writer.take() {
            written.insert(case.slug.clone(), writer.finish().await);
        }
    }
    written
}

/// One round: `wanted` cases prepared, run in `mode`, checked. Returns the cases and the
/// entries never reached, with the broken promises added to `broken`.
async fn round(
    rig: &Rig,
    mode: &str,
    tag: &str,
    wanted: &[(Scenario, String)],
    logs: &TempDir,
    broken: &mut Vec<String>,
) -> Vec<(Scenario, String)> {
    // Products gain a migration that only the migrate cases' jobs (and the provisioning
    // cases, which apply everything) reach: seeded tenants stop at 0002.
    let extra = rig.env.config.products_dir.join("demo/0003_labels.sql");
    let _ = std::fs::remove_file(&extra);
    let mut cases = prepare(rig, tag, wanted).await;
    std::fs::write(&extra, "CREATE TABLE labels (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL);\n").unwrap();
    let faults = TempDir::new("faults");
    let started = Instant::now();
    let runs = match mode {
        "kill" => run_with_kills(rig, &cases, &faults, logs).await,
        _ => run_with_restarts(rig, &cases, &faults, logs).await,
    };
    let elapsed = started.elapsed();
    let hit = reached(faults.path());
    let written = finish_writers(&mut cases).await;
    let found = check(rig, &cases, &written).await;
    let clean = found.is_empty();
    broken.extend(found);
    if clean && mode == "kill" {
        run_again(rig, &cases, logs).await;
        broken.extend(check(rig, &cases, &written).await.into_iter().map(|b| format!("after a rerun: {b}")));
    }
    let points: BTreeSet<&str> = cases.iter().map(|c| c.point.as_str()).collect();
    let rows: usize = written.values().map(Vec::len).sum();
    let missed: Vec<(Scenario, String)> =
        cases.iter().filter(|c| !hit.contains(&c.entry())).map(|c| (c.scenario, c.point.clone())).collect();
    let summary = format!(
        "crash matrix ({mode}, round {tag}): {} points, {} cases, {} {} in {:.0?}, {rows} rows written meanwhile; {} broken, {} not reached",
        points.len(),
        cases.len(),
        runs,
        if mode == "kill" { "worker processes" } else { "server restarts" },
        elapsed,
        broken.len(),
        missed.len()
    );
    println!("{summary}");
    // The test command prints these lines at its end (a passing test's output is hidden).
    let file = tenant_master_tests::repo_root().join("target/crash-matrix-summary.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(file) {
        let _ = std::io::Write::write_all(&mut f, format!("{summary}\n").as_bytes());
    }
    missed
}

async fn matrix(mode: &str) {
    let rig = Rig::start().await;
    let (bystander, before) = bystander(&rig.env).await;
    let logs = TempDir::new("logs");
    let mut broken = Vec::new();
    // A case whose job passed its point while another case's crash or restart stopped it
    // (one process runs every case) goes again in a smaller round, at most twice.
    let mut wanted = Scenario::cases();
    for tag in ["a", "b", "c"] {
        let tag = format!("{}{tag}", &mode[..1]);
        wanted = round(&rig, mode, &tag, &wanted, &logs, &mut broken).await;
        if wanted.is_empty() || !broken.is_empty() {
            break;
        }
    }
    if bystander_rows(&rig.env, &bystander).await != before {
        broken.push("the bystander tenant's rows changed".into());
    }
    for (scenario, point) in &wanted {
        broken.push(format!("crash point never reached in three rounds: {scenario:?} at {point}"));
    }
    if !broken.is_empty() {
        for log in std::fs::read_dir(logs.path()).unwrap().flatten() {
            let text = std::fs::read_to_string(log.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            eprintln!("--- {} (last lines)\n{}", log.path().display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        // For a person debugging a failure: keeps both servers up for 15 minutes to look at.
        if std::env::var_os("CRASH_MATRIX_HOLD").is_some() {
            eprintln!("holding: first {} second {}\n{}", rig.first.url(), rig.second.url(), broken.join("\n"));
            tokio::time::sleep(Duration::from_secs(900)).await;
        }
        let kept = logs.path().to_owned();
        std::mem::forget(logs);
        panic!("{} broken promise(s) ({mode}), worker logs kept in {}:\n{}", broken.len(), kept.display(), broken.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_point_survives_the_worker_being_killed_there() {
    matrix("kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_point_survives_a_server_restart_there() {
    matrix("restart").await;
}

#[test]
fn every_declared_point_has_a_case() {
    let covered: BTreeSet<String> = Scenario::cases().into_iter().map(|(_, point)| point).collect();
    for point in fault::POINTS {
        let has_case = covered.iter().any(|c| match point.strip_suffix('*') {
            Some(stem) => c.starts_with(stem),
            None => c == point,
        });
        assert!(has_case, "crash point '{point}' has no case in the crash matrix");
    }
    for case in &covered {
        assert!(fault::is_declared(case), "case '{case}' is no declared crash point");
    }
}

#[test]
fn every_point_in_the_code_is_declared() {
    let mut found = BTreeSet::new();
    let mut stack = vec![tenant_master_tests::repo_root().join("shared/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("fault.rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for call in text.split("fault::point(").skip(1) {
                    let literal = call.split('"').nth(1).expect("a crash point is named by a literal");
                    found.insert(literal.replace("{:04}", "0001"));
                }
            }
        }
    }
    assert!(found.len() >= 30, "only {} crash points found in the code", found.len());
    for point in &found {
        assert!(fault::is_declared(point), "crash point '{point}' is passed in the code but not declared in fault::POINTS");
    }
    for declared in fault::POINTS {
        let used = found.iter().any(|p| match declared.strip_suffix('*') {
            Some(stem) => p.starts_with(stem),
            None => p == declared,
        });
        assert!(used, "crash point '{declared}' is declared but passed nowhere");
    }
}
