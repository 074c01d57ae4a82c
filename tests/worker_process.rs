//! `tenant-worker` as a process: SIGKILL mid-provisioning, SIGTERM drain.

use std::{process::Command, time::Duration};

use tenant_master::tenants::NewTenant;
use tenant_master_tests::{eventually, products_with_slow, Footprint, TempDir, TestEnv};

/// Waits until the worker is inside the slow migration of `database`.
async fn wait_until_sleeping(env: &TestEnv, database: &str) {
    eventually(Duration::from_secs(60), "the worker to reach the slow migration", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE '%pg_sleep%'")
            .bind(database)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        n > 0
    })
    .await;
}

async fn create_slow(env: &TestEnv, slug: &str, plan: &str) -> String {
    let new = NewTenant::parse(slug, "slow", plan, "owner@example.com", None, None).unwrap();
    let (tenant, _) = tenant_master::jobs::provision_tenant::create_in_new_transaction(&env.pool, &env.config, &new, "test").await.unwrap();
    tenant.database
}

fn expected_footprint() -> Footprint {
    Footprint {
        roles: 1,
        schemas: 1,
        migrations: vec![1, 2, 3],
        tables: vec!["events".into(), "projects".into(), "slow_marker".into(), "tasks".into()],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_provisioning_is_replaced_and_the_tenant_ends_active() {
    let env = TestEnv::with_products(products_with_slow(4)).await;
    let logs = TempDir::new("logs");
    for plan in ["starter", "enterprise"] {
        let slug = env.slug(&format!("kill{}", &plan[..1]));
        let mut first = env.spawn_worker(&logs.path().join(format!("first-{plan}.log")));
        let database = create_slow(&env, &slug, plan).await;
        wait_until_sleeping(&env, &database).await;
        first.kill().unwrap(); // SIGKILL
        first.wait().unwrap();
        assert_eq!(env.tenant_status(&slug).await.as_deref(), Some("provisioning"));

        let mut second = env.spawn_worker(&logs.path().join(format!("second-{plan}.log")));
        eventually(Duration::from_secs(90), "the second worker to finish the job", || async {
            let status: String = sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE tenant = $1 AND type = 'ProvisionTenant'")
                .bind(&slug)
                .fetch_one(&env.pool)
                .await
                .unwrap();
            status == "done"
        })
        .await;
        assert_eq!(env.tenant_status(&slug).await.as_deref(), Some("active"));
        second.kill().unwrap();
        second.wait().unwrap();

        assert_eq!(env.footprint(&slug, &database).await, expected_footprint(), "{plan}");
        let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM tenant_master.jobs WHERE tenant = $1 AND type = 'ProvisionTenant'")
            .bind(&slug)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        assert!(attempts >= 2, "the job ran again after the kill (attempts {attempts})");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_running_job_finish_then_exits_zero() {
    let env = TestEnv::with_products(products_with_slow(3)).await;
    let logs = TempDir::new("logs");
    let log = logs.path().join("worker.log");
    let slug = env.slug("drain");
    let mut worker = env.spawn_worker(&log);
    let database = create_slow(&env, &slug, "business").await;
    wait_until_sleeping(&env, &database).await;
    let term = Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap();
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || worker.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0), "worker log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    assert_eq!(env.tenant_status(&slug).await.as_deref(), Some("active"), "the running job finished before exit");
    assert_eq!(env.footprint(&slug, &database).await, expected_footprint());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_dump_leaves_no_backup_and_the_retry_completes() {
    let env = TestEnv::new().await;
    let logs = TempDir::new("logs");
    let tenant = env.provisioned(&env.slug("dumpkill"), "starter").await;
    // Hold a lock pg_dump needs, so the dump is reliably in flight when the worker dies.
    let mut blocker = env.admin(&tenant.database).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("BEGIN; LOCK TABLE \"{}\".events IN ACCESS EXCLUSIVE MODE", tenant.schema)))
        .execute(&mut blocker)
        .await
        .unwrap();
    let mut first = env.spawn_worker(&logs.path().join("first.log"));
    let jobs = tenant_master::jobs::backup_tenant::enqueue_manual(
        &env.pool,
        tenant_master::tenants::Selection::Slugs(vec![tenant.slug.clone()]),
        None,
        "test",
    )
    .await
    .unwrap();
    let dumping = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' AND datname = $1")
            .bind(&tenant.database)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        n
    };
    eventually(Duration::from_secs(60), "pg_dump to start", || async { dumping().await > 0 }).await;
    let pattern = format!("pg_dump .*--schema {} --file", tenant.schema);
    let pg_dump_running = || Command::new("pgrep").args(["-f", &pattern]).output().unwrap().status.success();
    assert!(pg_dump_running(), "the worker's pg_dump child is running");
    first.kill().unwrap();
    first.wait().unwrap();
    // The pg_dump process itself (its server backend lingers until it gets the lock).
    eventually(Duration::from_secs(10), "the pg_dump child to die with its worker", || async { !pg_dump_running() }).await;
    let finished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_master.backups WHERE finished_at IS NOT NULL").fetch_one(&env.pool).await.unwrap();
    assert_eq!(finished, 0, "no backup registered by the killed attempt");
    sqlx::raw_sql("COMMIT").execute(&mut blocker).await.unwrap();

    let mut second = env.spawn_worker(&logs.path().join("second.log"));
    eventually(Duration::from_secs(90), "the retried backup to finish", || async {
        let status: String =
            sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE id = $1").bind(&jobs[0].1).fetch_one(&env.pool).await.unwrap();
        status == "done"
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();

    let mut conn = env.pool.acquire().await.unwrap();
    let done = tenant_master::backups::list(&mut conn, tenant.id).await.unwrap();
    assert_eq!(done.len(), 1, "exactly one backup");
    tenant_master::ops::backup::verify_file(&done[0]).await.unwrap();
    let unfinished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_master.backups WHERE finished_at IS NULL").fetch_one(&env.pool).await.unwrap();
    assert_eq!(unfinished, 0);
    let files: Vec<String> = std::fs::read_dir(env.config.backup_dir.join(&tenant.slug))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "no .partial counted or left: {files:?}");
    assert!(files[0].ends_with(".dump"));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_scheduler_processes_enqueue_each_tenant_once_per_slot() {
    let env = TestEnv::new().await;
    let mut slugs = Vec::new();
    for i in 0..3 {
        slugs.push(env.provisioned(&env.slug(&format!("sch{i}")), "free").await.slug);
    }
    let dir = TempDir::new("scheduler");
    let config = dir.path().join("tenant-master.toml");
    // Every 2 seconds, a one-minute catch-up window; the other schedules off.
    std::fs::write(
        &config,
        "[scheduler]\ncatch_up_minutes = 1\n\
         [scheduler.schedules.nightly_backup]\ncron = \"*/2 * * * * *\"\njob = \"backup\"\nkeep = 7\nspread_minutes = 1\n\
         [scheduler.schedules.weekly_maintenance]\ncron = \"0 0 4 * * Sun\"\njob = \"vacuum\"\nvacuum = true\nenabled = false\n\
         [scheduler.schedules.monthly_vacuum]\ncron = \"0 0 3 1 * *\"\njob = \"vacuum\"\nvacuum = true\nenabled = false\n\
         [scheduler.schedules.daily_cleanup]\ncron = \"0 0 5 * * *\"\njob = \"cleanup\"\nolder_than_days = 365\nenabled = false\n",
    )
    .unwrap();
    let spawn = |name: &str| {
        let log = std::fs::File::create(dir.path().join(name)).unwrap();
        let mut cmd = Command::new(tenant_master_tests::binary("tenant-scheduler"));
        cmd.env("TENANT_MASTER_CONFIG", &config).stdout(log.try_clone().unwrap()).stderr(log);
        for (k, v) in env.env_vars() {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    };
    let (mut a, mut b) = (spawn("a.log"), spawn("b.log"));
    eventually(Duration::from_secs(60), "three slots fanned out", || async {
        let slots: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.schedule_runs").fetch_one(&env.pool).await.unwrap();
        slots >= 3
    })
    .await;
    for child in [&a, &b] {
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    }
    let (ca, cb) = (a.wait().unwrap(), b.wait().unwrap());
    let log = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap_or_default();
    assert!(ca.success() && cb.success(), "schedulers exit 0 on SIGTERM:\n{}\n{}", log("a.log"), log("b.log"));

    let per: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT tenant, payload->>'slot', count(*) FROM tenant_master.jobs WHERE type = 'BackupTenant' GROUP BY 1, 2")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert!(per.iter().all(|(_, _, n)| *n == 1), "one job per tenant per slot: {per:?}");
    let slots: std::collections::BTreeSet<&str> = per.iter().map(|(_, s, _)| s.as_str()).collect();
    assert!(slots.len() >= 3, "{slots:?}");
    for slot in &slots {
        let tenants = per.iter().filter(|(_, s, _)| s == slot).count();
        assert_eq!(tenants, slugs.len(), "slot {slot} covers every tenant");
    }
}

/// Jobs started per job id, from the workers' logs ("job started" lines carry `job.id`).
fn starts(logs: &[std::path::PathBuf]) -> std::collections::HashMap<String, usize> {
    let mut seen = std::collections::HashMap::new();
    for log in logs {
        for line in std::fs::read_to_string(log).unwrap().lines().filter(|l| l.contains("job started")) {
            if let Some(id) = line.split("job.id=").nth(1).and_then(|rest| rest.split([' ', '}']).next()) {
                *seen.entry(id.to_owned()).or_default() += 1;
            }
        }
    }
    seen
}

/// Old code: a worker with all slots busy and more jobs fetched than it could start
/// skipped its heartbeats, and the other worker's orphan sweep ran its jobs again
/// (attempts 2, two runs each), live ones included; a drain added an attempt to jobs that
/// never started.
#[tokio::test(flavor = "multi_thread")]
async fn long_jobs_on_two_workers_run_exactly_once_and_a_drain_costs_no_attempt() {
    let env = TestEnv::new().await; // orphan timeout: 1 s x 3
    let logs = TempDir::new("logs");
    let settings = [("TENANT_MASTER_WORKER_CONCURRENCY", "2"), ("TENANT_MASTER_WORKER_BATCH_SIZE", "10")];
    let paths: Vec<_> = (0..2).map(|i| logs.path().join(format!("worker-{i}.log"))).collect();
    let mut workers: Vec<_> = paths.iter().map(|p| env.spawn_worker_with(p, &settings)).collect();
    // Each job lasts several orphan timeouts.
    let slow = tenant_master::jobs::noop::Noop { note: None, sleep_ms: Some(7000) };
    let mut conn = env.pool.acquire().await.unwrap();
    tenant_master::queue::enqueue_many(&mut conn, &vec![slow.clone(); 12]).await.unwrap();
    eventually(Duration::from_secs(150), "12 slow jobs to finish on two workers", || async {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE status = 'done'").fetch_one(&env.pool).await.unwrap();
        done == 12
    })
    .await;
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM apalis.jobs ORDER BY id").fetch_all(&env.pool).await.unwrap();
    assert_eq!(attempts, vec![1; 12], "every job ran once");
    let started = starts(&paths);
    assert_eq!(started.len(), 12, "{started:?}");
    assert!(started.values().all(|n| *n == 1), "one run each: {started:?}");

    // SIGTERM while 4 of 12 more run: they finish; the 8 that never started keep attempts 0.
    sqlx::query("DELETE FROM apalis.jobs").execute(&env.pool).await.unwrap();
    tenant_master::queue::enqueue_many(&mut conn, &vec![slow; 12]).await.unwrap();
    eventually(Duration::from_secs(60), "4 jobs to run", || async {
        let running: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE status = 'running'").fetch_one(&env.pool).await.unwrap();
        running == 4
    })
    .await;
    for worker in &workers {
        Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap();
    }
    for worker in &mut workers {
        assert!(worker.wait().unwrap().success(), "a drained worker exits 0");
    }
    let rows: Vec<(String, i32)> =
        sqlx::query_as("SELECT status, attempts FROM tenant_master.jobs ORDER BY id").fetch_all(&env.pool).await.unwrap();
    let done = rows.iter().filter(|(s, a)| s == "done" && *a == 1).count();
    let untouched = rows.iter().filter(|(s, a)| s == "pending" && *a == 0).count();
    assert_eq!((done, untouched), (4, 8), "{rows:?}");
}

/// The worker's connections to its control-plane database, as the server sees them.
async fn worker_connections(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'tenant-worker'")
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// An idle worker holds at most 3 control-plane connections, whatever the number of job
/// types and workers per type; the first design held one LISTEN per worker plus the pool.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_worker_holds_three_connections_at_most() {
    let env = TestEnv::new().await;
    let logs = TempDir::new("logs");
    let mut worker = env.spawn_worker_with(&logs.path().join("worker.log"), &[("TENANT_MASTER_WORKER_WORKERS_PER_TYPE", "2")]);
    // Some work first, so every worker has fetched and acknowledged.
    let mut conn = env.pool.acquire().await.unwrap();
    tenant_master::queue::enqueue_many(&mut conn, &vec![tenant_master::jobs::noop::Noop { note: None, sleep_ms: None }; 50]).await.unwrap();
    eventually(Duration::from_secs(60), "50 jobs done", || async {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE status = 'done'").fetch_one(&env.pool).await.unwrap();
        done == 50
    })
    .await;
    // Idle for several heartbeats and polls (1 s and 200 ms here): sample the count.
    let mut most = 0;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        most = most.max(worker_connections(&env).await);
    }
    let seen: Vec<(String, String)> = sqlx::query_as(
        "SELECT coalesce(application_name, ''), coalesce(query, '') FROM pg_stat_activity WHERE datname = current_database()",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let log = std::fs::read_to_string(logs.path().join("worker.log")).unwrap_or_default();
    assert!(most >= 1, "the worker is not connected at all: {seen:?}\n{log}");
    assert!(most <= 3, "an idle worker held {most} control-plane connections: {seen:?}");
    let _ = worker.kill();
    let _ = worker.wait();
}

/// Payloads no handler can read, written straight into the queue table (past
/// `tenant_master.enqueue`'s checks): an array, and an object with a field of the wrong
/// type. Each is dead at once, on its first attempt, while the 1,000 good jobs fetched in
/// the same statements all finish; nothing restarts the pool.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_payload_is_dead_at_once_while_a_thousand_jobs_finish() {
    let env = TestEnv::new().await;
    let logs = TempDir::new("logs");
    let log = logs.path().join("worker.log");
    let mut conn = env.pool.acquire().await.unwrap();
    tenant_master::queue::enqueue_many(&mut conn, &vec![tenant_master::jobs::noop::Noop::default(); 500]).await.unwrap();
    let bad: Vec<String> = sqlx::query_scalar(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at)
         SELECT apalis.generate_ulid(), 'Noop', payload, 'Pending', 0, 3, now()
         FROM unnest(ARRAY[convert_to('[1, 2]', 'UTF8'), convert_to('{\"sleep_ms\": \"soon\"}', 'UTF8')]) AS payload
         RETURNING id",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    tenant_master::queue::enqueue_many(&mut conn, &vec![tenant_master::jobs::noop::Noop::default(); 500]).await.unwrap();
    drop(conn);
    let mut worker = env.spawn_worker(&log);
    eventually(Duration::from_secs(120), "every good job done and both bad ones settled", || async {
        let (done, dead): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'dead') FROM tenant_master.jobs WHERE type = 'Noop'",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        done == 1_000 && dead == 2
    })
    .await;
    for id in &bad {
        let job = tenant_master::queue::get(&env.pool, id).await.unwrap();
        assert_eq!((job.status.as_str(), job.attempts), ("dead", 1), "{job:?}");
        let error = job.last_error.unwrap_or_default();
        assert!(error.contains("the payload cannot be read as Noop"), "{error}");
    }
    let _ = worker.kill();
    let _ = worker.wait();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!said.contains("worker stopped") && !said.contains("stopping the pool"), "the pool never restarted:\n{said}");
}

/// A PostgreSQL restart (fast shutdown, as a failover or a minor upgrade does) while the
/// worker drains thousands of jobs and provisions tenants: the same process waits for the
/// server, carries on, finishes everything (none dead) and takes new work afterwards.
/// Before, the pool stopped and the process exited 0.
#[tokio::test(flavor = "multi_thread")]
async fn the_worker_survives_a_server_restart() {
    let server = tenant_master_tests::private_server::PrivateServer::start();
    let env = TestEnv::on_server(&server.url()).await;
    let logs = TempDir::new("logs");
    let log = logs.path().join("worker.log");
    let mut worker = env.spawn_worker(&log);
    let noop = tenant_master::jobs::noop::Noop { note: None, sleep_ms: Some(2) };
    let mut conn = env.pool.acquire().await.unwrap();
    tenant_master::queue::enqueue_many(&mut conn, &vec![noop.clone(); 3000]).await.unwrap();
    drop(conn);
    let slugs: Vec<String> = (0..4).map(|i| env.slug(&format!("rs{i}"))).collect();
    for (i, slug) in slugs.iter().enumerate() {
        let plan = if i % 2 == 0 { "starter" } else { "enterprise" };
        let out = env.tenantctl(&["tenant", "create", slug, "--product", "demo", "--plan", plan, "--owner-email", "o@example.com"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let done = |env: &TestEnv| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tenant_master.jobs WHERE status = 'done' AND type = 'Noop'")
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
        }
    };
    eventually(Duration::from_secs(120), "some jobs done before the restart", || async { done(&env).await >= 200 }).await;
    server.restart();
    assert!(worker.try_wait().unwrap().is_none(), "the worker exited with the server");

    // Every job finished: jobs the restart interrupted ran again (an attempt that failed
    // waits out its backoff first), none is left failed or dead.
    eventually(Duration::from_secs(240), "every job done after the restart", || async {
        let (active, unfinished): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM tenant_master.tenants WHERE status = 'active'),
                    (SELECT count(*) FROM tenant_master.jobs WHERE status IN ('pending', 'running', 'failed'))",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap_or((0, 1));
        done(&env).await == 3000 && active == 4 && unfinished == 0
    })
    .await;
    let dead: Vec<(String, String)> =
        sqlx::query_as("SELECT type, coalesce(last_error, '') FROM tenant_master.jobs WHERE status IN ('dead', 'failed')")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert!(dead.is_empty(), "{dead:?}");
    // The same process takes new work.
    let mut conn = env.pool.acquire().await.unwrap();
    tenant_master::queue::enqueue_many(&mut conn, &[tenant_master::jobs::noop::Noop { note: Some("after".into()), sleep_ms: None }])
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "a new job after the restart", || async { done(&env).await == 3001 }).await;
    assert!(worker.try_wait().unwrap().is_none(), "the worker is still the same process");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the database is back") || text.contains("reconnecting"), "no sign of the outage in the log:\n{text}");
    let _ = worker.kill();
    let _ = worker.wait();
}

/// Issue 25: against a closed port the worker was silent for 30 s, then said "pool timed
/// out". It says "connection refused" at once and exits non-zero.
#[test]
fn a_worker_says_at_once_that_the_database_refuses() {
    let out = Command::new(tenant_master_tests::binary("tenant-worker"))
        .env_remove("TENANT_MASTER_CONFIG")
        .env("DATABASE_URL", "postgres://127.0.0.1:1/tenant_master")
        .env("TENANT_MASTER_METRICS_ADDR", "")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{said}");
    // The refusal itself, not a pool's timeout after waiting for it.
    assert!(said.contains("Connection refused") && said.contains("127.0.0.1:1") && !said.contains("timed out"), "{said}");
}

/// A job whose lock session is lost stops; a worker stays within its connection budget.
mod lock_sessions_and_budget {
    use std::time::Duration;
    use tenant_master::tenants::Tenant;
    use tenant_master_tests::stderr;
    use tenant_master_tests::{TempDir, TestEnv};

    /// The tenant's operator sessions inside the slow migration's `pg_sleep`.
    async fn sleeping(env: &TestEnv, t: &Tenant) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND query LIKE '%pg_sleep%' AND state = 'active'")
            .bind(format!("{}__op", t.role))
            .fetch_one(&env.pool)
            .await
            .unwrap()
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
        tenant_master_tests::write_demo_migration_3(&dir, "CREATE TABLE labels (id int);\nSELECT pg_sleep(20);\n");

        let logs = TempDir::new("logs");
        let log = logs.path().join("worker.log");
        let mut worker = env.spawn_worker(&log);
        let out = env.tenantctl(&["tenant", "migrate", &t.slug]);
        assert!(out.status.success(), "{}", stderr(&out));
        // Wait until the migration is in its pg_sleep, holding the tenant lock.
        tenant_master_tests::eventually(Duration::from_secs(30), "the migration sleeping", || async { sleeping(&env, &t).await == 1 })
            .await;
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
        assert_eq!(env.ledger(&t).await, vec![1, 2, 3]);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(text.contains("lost the connection holding the tenant's lock"), "{text}");
        let _ = worker.kill();
        let _ = worker.wait();
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
        tenant_master_tests::write_demo_migration_3(&dir, "CREATE TABLE labels (id int);\nSELECT pg_sleep(40);\n");

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
        tenant_master_tests::eventually(Duration::from_secs(30), "the migration sleeping", || async { sleeping(&env, &t).await == 1 })
            .await;
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
}
