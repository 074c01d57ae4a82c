//! `tenant-bench`: Tenant Master's throughput and latency beside raw PostgreSQL ceilings
//! measured in the same run on the same server; prints one Markdown table.
//!
//!   ./deploy/bench.sh            (release build, then this; --quick for a short run)
//!
//! Every figure is the median of several runs, interleaved with its baseline; speed is
//! reported, never asserted. It creates its own databases and roles and removes them.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sqlx::{Connection, PgConnection, PgPool};
use tenant_master::{
    jobs::noop::Noop,
    queue,
    schedule::{self, Schedule, SchedulerConfig},
    tenants::{NewTenant, Selection},
};
use tenant_master_tests::{TempDir, TestEnv};

mod scale;

struct Opts {
    runs: usize,
    drain_jobs: usize,
    pickups: usize,
    enqueue_jobs: usize,
    fanout_tenants: usize,
    tenants: usize,
    rollout_tenants: usize,
    only: Option<Vec<String>>,
    /// `--profile`: rows with the median time of each step of a lifecycle job.
    profile: bool,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let only = args.iter().position(|a| a == "--only").map(|i| {
        let parts = args.get(i + 1).expect("--only takes parts: queue,enqueue,lifecycle,moves,rollout");
        parts.split(',').map(|p| p.trim().to_owned()).collect()
    });
    let quick = args.iter().any(|a| a == "--quick");
    let profile = args.iter().any(|a| a == "--profile");
    if quick {
        Opts {
            runs: 3,
            drain_jobs: 5_000,
            pickups: 60,
            enqueue_jobs: 1_000,
            fanout_tenants: 10_000,
            tenants: 40,
            rollout_tenants: 100,
            only,
            profile,
        }
    } else {
        Opts {
            runs: 3,
            drain_jobs: 20_000,
            pickups: 200,
            enqueue_jobs: 2_000,
            fanout_tenants: 10_000,
            tenants: 200,
            rollout_tenants: 1_000,
            only,
            profile,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A release binary next to this one.
fn sibling(name: &str) -> std::path::PathBuf {
    let path = std::env::current_exe().unwrap().parent().unwrap().join(name);
    assert!(path.is_file(), "{} is missing: build with `cargo build --release --workspace` (./deploy/bench.sh does)", path.display());
    path
}

/// Settings of the worker under test: several workers per queue and big batches, the
/// tuning the apalis notes measured to matter.
const WORKER_TUNING: [(&str, &str); 5] = [
    ("TENANT_MASTER_WORKER_WORKERS_PER_TYPE", "4"),
    ("TENANT_MASTER_WORKER_BATCH_SIZE", "100"),
    // A worker fetches at most `concurrency` jobs at a time (so none waits unstarted).
    ("TENANT_MASTER_WORKER_CONCURRENCY", "100"),
    ("TENANT_MASTER_WORKER_POLL_INTERVAL_MS", "1000"),
    ("TENANT_MASTER_WORKER_HEARTBEAT_SECS", "5"),
];

fn spawn_worker(env: &TestEnv, log: &std::path::Path, tuned: bool) -> Child {
    let mut cmd = Command::new(sibling("tenant-worker"));
    cmd.env_remove("TENANT_MASTER_CONFIG");
    for (k, v) in env.env_vars() {
        cmd.env(k, v);
    }
    if tuned {
        for (k, v) in WORKER_TUNING {
            cmd.env(k, v);
        }
    }
    cmd.env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(std::fs::File::create(log).unwrap());
    cmd.spawn().unwrap()
}

/// kB of a /proc/<pid>/status field (VmRSS now, VmHWM peak).
fn memory_kb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

async fn wait_until(pool: &PgPool, sql: &'static str, target: i64, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        if n >= target {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "benchmark step did not finish within {limit:?} ({n} of {target})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_listening(env: &TestEnv, listeners: i64) {
    let started = Instant::now();
    loop {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'")
                .fetch_one(&env.pool)
                .await
                .unwrap();
        if n >= listeners {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the worker did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ceiling: a plain table drained by `parallel` loops of batched
/// UPDATE ... FOR UPDATE SKIP LOCKED LIMIT k RETURNING, then a batched completion.
async fn raw_drain(env: &TestEnv, n: usize, parallel: usize, k: i64) -> f64 {
    sqlx::raw_sql("DROP TABLE IF EXISTS bench_raw; CREATE TABLE bench_raw (id bigserial PRIMARY KEY, status text NOT NULL DEFAULT 'pending', payload jsonb NOT NULL, done_at timestamptz); CREATE INDEX ON bench_raw (id) WHERE status = 'pending'")
        .execute(&env.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO bench_raw (payload) SELECT '{}'::jsonb FROM generate_series(1, $1)")
        .bind(n as i64)
        .execute(&env.pool)
        .await
        .unwrap();
    sqlx::raw_sql("VACUUM ANALYZE bench_raw").execute(&env.pool).await.unwrap();
    let started = Instant::now();
    let mut loops = Vec::new();
    for _ in 0..parallel {
        let options = tenant_master::db::options(&env.config.database_url).unwrap();
        loops.push(tokio::spawn(async move {
            let mut conn = PgConnection::connect_with(&options).await.unwrap();
            loop {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "UPDATE bench_raw SET status = 'running' WHERE id IN (SELECT id FROM bench_raw WHERE status = 'pending' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT $1) RETURNING id",
                )
                .bind(k)
                .fetch_all(&mut conn)
                .await
                .unwrap();
                if ids.is_empty() {
                    return;
                }
                sqlx::query("UPDATE bench_raw SET status = 'done', done_at = now() WHERE id = ANY($1)").bind(&ids).execute(&mut conn).await.unwrap();
            }
        }));
    }
    for l in loops {
        l.await.unwrap();
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    sqlx::raw_sql("DROP TABLE bench_raw").execute(&env.pool).await.unwrap();
    rate
}

/// The real worker pool (a running `tenant-worker`) draining `n` Noop jobs.
async fn worker_drain(env: &TestEnv, n: usize) -> f64 {
    clear_noops(env).await;
    let mut conn = env.pool.acquire().await.unwrap();
    for chunk in vec![Noop::default(); n].chunks(5_000) {
        // Inserted while the worker runs: it starts on the first NOTIFY, as in production.
        queue::enqueue_many(&mut conn, chunk).await.unwrap();
    }
    let elapsed = wait_until(
        &env.pool,
        "SELECT count(*) FROM apalis.jobs WHERE job_type = 'Noop' AND status = 'Done'",
        n as i64,
        Duration::from_secs(600),
    )
    .await;
    n as f64 / elapsed.as_secs_f64()
}

/// The peer baseline: a bare apalis-postgres worker pool in this process with the same
/// tuning (4 workers, batches of 100, concurrency 100, 1 s interval poll, 5 s heartbeat) and
/// a handler that does nothing, draining `n` jobs inserted before it starts.
async fn peer_drain(env: &TestEnv, n: usize, run: usize) -> f64 {
    use apalis::prelude::*;
    use apalis_postgres::PostgresStorage;
    sqlx::query("DELETE FROM apalis.jobs WHERE job_type = 'BenchPeer'").execute(&env.pool).await.unwrap();
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at)
         SELECT apalis.generate_ulid(), 'BenchPeer', convert_to('{}', 'UTF8'), 'Pending', 0, 3, now() FROM generate_series(1, $1)",
    )
    .bind(n as i64)
    .execute(&env.pool)
    .await
    .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .connect_with(tenant_master::db::options(&env.config.database_url).unwrap())
        .await
        .unwrap();
    let config = apalis_postgres::Config::default()
        .queue("BenchPeer")
        .batch_size(100)
        .heartbeat_interval(Duration::from_secs(5))
        .missed_heartbeats(4)
        .lock_tasks(false);
    async fn nothing(_: serde_json::Value) -> Result<(), BoxDynError> {
        Ok(())
    }
    let started = Instant::now();
    let monitor = Monitor::new().register_n(4, move |index, restarts| {
        let backend = PostgresStorage::<serde_json::Value>::new(&pool)
            .with_config(config.clone())
            .with_pubsub()
            .poll_with_interval(Duration::from_millis(1000));
        WorkerBuilder::new(format!("bench-peer-{}-{run}-{index}-{restarts}", std::process::id()))
            .backend(backend)
            .concurrency(100)
            .parallelize(tokio::spawn)
            .build(nothing)
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(monitor.shutdown_timeout(Duration::from_secs(10)).run_with_signal(async move {
        let _ = stop_rx.await;
        Ok(())
    }));
    wait_until(
        &env.pool,
        "SELECT count(*) FROM apalis.jobs WHERE job_type = 'BenchPeer' AND status = 'Done'",
        n as i64,
        Duration::from_secs(600),
    )
    .await;
    let elapsed = started.elapsed();
    let _ = stop_tx.send(());
    let _ = running.await;
    sqlx::query("DELETE FROM apalis.jobs WHERE job_type = 'BenchPeer'").execute(&env.pool).await.unwrap();
    n as f64 / elapsed.as_secs_f64()
}

/// What the graphile_worker peer measured.
struct PeerRun {
    jobs_per_s: f64,
    pickup_p50_ms: f64,
    pickup_p99_ms: f64,
}

/// Runs the graphile_worker peer (built by ./deploy/bench.sh into target/graphile-peer)
/// against this run's control-plane database, in a schema of its own.
fn graphile_peer(env: &TestEnv, drain: usize, pickups: usize) -> PeerRun {
    let binary = tenant_master_tests::repo_root().join("target/graphile-peer/release/graphile-peer");
    assert!(binary.is_file(), "{} is missing: ./deploy/bench.sh builds it", binary.display());
    let out = Command::new(binary).args([env.config.database_url.as_str(), &drain.to_string(), &pickups.to_string()]).output().unwrap();
    assert!(out.status.success(), "the graphile_worker peer failed: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(said.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("the peer said {said:?}: {e}"));
    let number = |key: &str| v[key].as_f64().unwrap_or_else(|| panic!("the peer said {said:?}: no {key}"));
    PeerRun { jobs_per_s: number("jobs_per_s"), pickup_p50_ms: number("pickup_p50_ms"), pickup_p99_ms: number("pickup_p99_ms") }
}

/// Deletes the benchmark's Noop jobs and vacuums the queue, as autovacuum would after
/// PruneJobs: dead rows left by a bulk delete slow every fetch until then.
async fn clear_noops(env: &TestEnv) {
    sqlx::query("DELETE FROM apalis.jobs WHERE job_type = 'Noop'").execute(&env.pool).await.unwrap();
    sqlx::raw_sql("VACUUM ANALYZE apalis.jobs").execute(&env.pool).await.unwrap();
}

async fn pickup_latencies(env: &TestEnv, count: usize) -> Vec<f64> {
    clear_noops(env).await;
    let mut ids = Vec::new();
    for _ in 0..count {
        let mut conn = env.pool.acquire().await.unwrap();
        ids.push(queue::enqueue(&mut conn, &Noop::default()).await.unwrap());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    wait_until(
        &env.pool,
        "SELECT count(*) FROM apalis.jobs WHERE job_type = 'Noop' AND status = 'Done'",
        count as i64,
        Duration::from_secs(120),
    )
    .await;
    // Enqueue (run_at = now() on the server) to handler start (Noop returns it; same host).
    sqlx::query_scalar(
        "SELECT (EXTRACT(EPOCH FROM (last_result->>'Ok')::timestamptz - run_at) * 1000)::float8 FROM apalis.jobs WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

async fn enqueue_rates(env: &TestEnv, n: usize) -> (f64, f64, f64) {
    sqlx::query("DELETE FROM apalis.jobs WHERE job_type = 'Noop'").execute(&env.pool).await.unwrap();
    let mut conn = env.pool.acquire().await.unwrap();
    let started = Instant::now();
    for _ in 0..n {
        queue::enqueue(&mut conn, &Noop::default()).await.unwrap();
    }
    let single = n as f64 / started.elapsed().as_secs_f64();
    let jobs = vec![Noop::default(); n];
    let started = Instant::now();
    queue::enqueue_many(&mut conn, &jobs).await.unwrap();
    let batched = n as f64 / started.elapsed().as_secs_f64();
    let raw = raw_insert(env, n).await;
    sqlx::query("DELETE FROM apalis.jobs WHERE job_type = 'Noop'").execute(&env.pool).await.unwrap();
    (single, batched, raw)
}

/// The ceiling for enqueueing: one multi-row INSERT into a plain table shaped like a queue.
async fn raw_insert(env: &TestEnv, n: usize) -> f64 {
    sqlx::raw_sql("DROP TABLE IF EXISTS bench_raw_jobs; CREATE TABLE bench_raw_jobs (id text PRIMARY KEY, job_type text NOT NULL, job bytea NOT NULL, status text NOT NULL, run_at timestamptz NOT NULL, idempotency_key text)")
        .execute(&env.pool)
        .await
        .unwrap();
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO bench_raw_jobs SELECT md5(g::text), 'BackupTenant', convert_to('{\"slug\":\"t' || g || '\"}', 'UTF8'), 'Pending', now(), 'k:' || g FROM generate_series(1, $1) g",
    )
    .bind(n as i64)
    .execute(&env.pool)
    .await
    .unwrap();
    let rate = n as f64 / started.elapsed().as_secs_f64();
    sqlx::raw_sql("DROP TABLE bench_raw_jobs").execute(&env.pool).await.unwrap();
    rate
}

async fn fan_out_rate(env: &TestEnv, run: usize, tenants: usize) -> f64 {
    let nightly = Schedule::find(&SchedulerConfig::default(), "nightly_backup").unwrap();
    // Future slots, as the live scheduler has them (it fires at the slot and spreads run_at
    // forward), so the queue's insert trigger sends no NOTIFY per row.
    let slot = nightly.next_run(chrono::Utc::now()).unwrap() + chrono::Duration::days(run as i64);
    let started = Instant::now();
    let done = schedule::fan_out(&env.pool, &nightly, slot, "bench").await.unwrap();
    let rate = done.enqueued as f64 / started.elapsed().as_secs_f64();
    assert_eq!(done.enqueued as usize, tenants);
    sqlx::query("DELETE FROM apalis.jobs WHERE job_type = 'BackupTenant'").execute(&env.pool).await.unwrap();
    rate
}

async fn register_fake_tenants(env: &TestEnv, n: usize) {
    sqlx::query(
        "INSERT INTO tenant_master.tenants (slug, display_name, product, plan, isolation, host, database_name, schema_name, role_name, owner_email, status)
         SELECT 'f' || g || '_' || $2, 'fake', 'demo', 'starter', 'schema', 'default', 'none', 't_f' || g, 't_f' || g, 'o@example.com', 'active'
         FROM generate_series(1, $1) g",
    )
    .bind(n as i64)
    .bind(&env.suffix)
    .execute(&env.pool)
    .await
    .unwrap();
}

async fn provision_rate(env: &TestEnv, plan: &str, n: usize) -> f64 {
    let mut slugs = Vec::new();
    let started = Instant::now();
    for i in 0..n {
        let slug = env.slug(&format!("{}{i}", &plan[..1]));
        let new = NewTenant::parse(&slug, "demo", plan, "owner@example.com", None, None).unwrap();
        tenant_master::jobs::provision_tenant::create_in_new_transaction(&env.pool, &env.config, &new, "bench").await.unwrap();
        slugs.push(slug);
    }
    loop {
        let active: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.tenants WHERE status = 'active' AND slug = ANY($1)")
            .bind(&slugs)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        if active as usize == n {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(900), "provisioning did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Issue 13's targets: `tenant migrate --all` over `n` schema-mode tenants with nothing
/// pending, then with one new migration (a table and an index) through a worker with the
/// default settings; seconds, one run each. Its own control plane and products folder.
async fn rollout_times(n: usize, logs: &std::path::Path) -> (f64, f64) {
    let products = tenant_master_tests::demo_products();
    let demo = products.path().join("demo");
    let env = TestEnv::with_products(products).await;
    let mut worker = spawn_worker(&env, &logs.join("rollout.log"), false);
    wait_listening(&env, 1).await;
    eprintln!("  rollout: provisioning {n} tenants");
    provision_rate(&env, "free", n).await;
    let tenantctl = |args: &[&str]| tenantctl_secs(&env, args);
    eprintln!("  rollout: nothing pending");
    let idle = tenantctl(&["tenant", "migrate", "--all"]);
    std::fs::write(
        demo.join("0003_bench_labels.sql"),
        "CREATE TABLE labels (id bigserial PRIMARY KEY, name text NOT NULL);\nCREATE INDEX ON labels (name);\n",
    )
    .unwrap();
    eprintln!("  rollout: one new migration");
    let full = tenantctl(&["tenant", "migrate", "--all", "--wait"]);
    let _ = worker.kill();
    let _ = worker.wait();
    (idle, full)
}

/// `--profile`: the median wall time of each provisioning step of `plan`'s tenants, from
/// the jobs' results (`timings_ms`).
async fn provision_profile(env: &TestEnv, plan: &str, mode: &str) -> Row {
    let order = ["register", "connect_host", "role", "database", "schema", "operator_login", "migrations", "activate"];
    profile(env, &format!("one provisioning, {mode} mode"), "ProvisionTenant", Some(plan), &order).await
}

/// One row: the median of each step in the `timings_ms` of the done jobs of `job_type`
/// (of tenants on `plan`, if given), steps in `order`.
async fn profile(env: &TestEnv, what: &str, job_type: &str, plan: Option<&str>, order: &[&str]) -> Row {
    let jobs: Vec<(serde_json::Value, i32)> = sqlx::query_as(
        "SELECT j.result -> 'timings_ms', j.attempts FROM tenant_master.jobs j JOIN tenant_master.tenants t ON t.slug = j.tenant
         WHERE j.type = $1 AND j.status = 'done' AND ($2::text IS NULL OR t.plan = $2) AND j.result ? 'timings_ms'",
    )
    .bind(job_type)
    .bind(plan)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let again = jobs.iter().filter(|(_, attempts)| *attempts > 1).count();
    let mut steps: Vec<(String, Vec<f64>)> = Vec::new();
    for (timing, _) in &jobs {
        for (step, ms) in timing.as_object().into_iter().flatten() {
            let ms = ms.as_f64().unwrap_or(0.0);
            match steps.iter_mut().find(|(s, _)| s == step) {
                Some((_, all)) => all.push(ms),
                None => steps.push((step.clone(), vec![ms])),
            }
        }
    }
    steps.sort_by_key(|(step, _)| order.iter().position(|o| o == step).unwrap_or(order.len()));
    let total: f64 = steps.iter().map(|(_, all)| median(all.clone())).sum();
    let line: Vec<String> = steps.into_iter().map(|(step, all)| format!("{step} {:.0}", median(all))).collect();
    [
        format!("profile: {what}, median ms per step ({} jobs, {again} ran more than once)", jobs.len()),
        format!("{} = {total:.0}", line.join(", ")),
        "-".into(),
        "-".into(),
        "-".into(),
    ]
}

/// Backups of every schema-mode tenant through the workers, in seconds.
async fn backup_fan_out(env: &TestEnv, n: usize) -> f64 {
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE type = 'BackupTenant' AND status = 'done'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let slugs: Vec<String> = sqlx::query_scalar(
        "SELECT slug FROM tenant_master.tenants WHERE isolation = 'schema' AND status = 'active' AND database_name <> 'none'",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(slugs.len(), n);
    let started = Instant::now();
    tenant_master::jobs::backup_tenant::enqueue_manual(&env.pool, Selection::Slugs(slugs), None, "bench").await.unwrap();
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE type = 'BackupTenant' AND status = 'done'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        if done - before >= n as i64 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(900), "backups did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed().as_secs_f64()
}

/// The same backups as a plain sequential shell loop of pg_dump, in seconds.
fn shell_loop_backup(env: &TestEnv, database: &str) -> f64 {
    let out = TempDir::new("bench-dumps");
    let script = format!(
        "for s in $(psql -XAt -d {database} -c \"SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'\"); do pg_dump -Fc -Z6 -n \"$s\" -f \"{dir}/$s.dump\" {database} || exit 1; done",
        dir = out.path().display()
    );
    let url = tenant_master_tests::url_with_database(&env.config.database_url, database);
    let started = Instant::now();
    let status = Command::new("sh")
        .args(["-c", &script])
        .env("PGHOST", "127.0.0.1")
        .env("PGDATABASE", database)
        .env("DATABASE_URL", url)
        .status()
        .unwrap();
    assert!(status.success(), "the pg_dump loop failed");
    started.elapsed().as_secs_f64()
}

/// Issue 14: moving a ~50 MB tenant between a shared and a dedicated database and back,
/// `runs` times each way; per direction the median downtime (login held) and the median
/// whole move, in seconds, and the median of the hand-made copy (`pg_dump | pg_restore` of
/// the schema into a scratch database, no verification, no switch) as the baseline.
async fn move_times(runs: usize) -> Vec<[String; 5]> {
    use tenant_master::ops::moves::{self, Request};
    let env = TestEnv::new().await;
    let slug = env.slug("mover");
    let t = env.provisioned(&slug, "business").await;
    let mut own = env.as_tenant(&slug).await;
    // ~50 MB on disk: 200,000 events with a 200-byte payload, their index and the toast.
    sqlx::query("INSERT INTO events (kind, payload) SELECT 'bench', jsonb_build_object('n', g, 'pad', repeat(md5(g::text), 6)) FROM generate_series(1, 200000) g")
        .execute(&mut own)
        .await
        .unwrap();
    drop(own);
    let mut db = env.admin(&t.database).await;
    let bytes: i64 = sqlx::query_scalar(
        "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'",
    )
    .bind(&t.schema)
    .fetch_one(&mut db)
    .await
    .unwrap();
    drop(db);
    let app = env.app();
    let (mut up, mut down, mut up_total, mut down_total, mut by_hand) = (vec![], vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        eprintln!("  move run {}", run + 1);
        by_hand.push(copy_by_hand(&env, &t.database, &t.schema));
        for (isolation, plan, downtimes, totals) in
            [("database", "enterprise", &mut up, &mut up_total), ("schema", "business", &mut down, &mut down_total)]
        {
            let request = Request { slug: slug.clone(), tenant_id: t.id, host: None, plan: Some(plan.into()), actor: "bench".into() };
            let started = Instant::now();
            let moved = moves::move_tenant(&app, &request, &format!("bench-move-{run}-{isolation}")).await.expect("move");
            totals.push(started.elapsed().as_secs_f64());
            downtimes.push(moved.downtime_ms.unwrap_or(0) as f64 / 1000.0);
        }
        // The kept copies go at once, so every run starts alike.
        sqlx::query("UPDATE tenant_master.kept_sources SET kept_until = now() - interval '1 second' WHERE dropped_at IS NULL")
            .execute(&env.pool)
            .await
            .unwrap();
        tenant_master::ops::move_cleanup::prune_kept_sources(&app).await.expect("prune kept sources");
    }
    let hand = median(by_hand);
    let mb = bytes as f64 / 1e6;
    let (up, down) = (median(up), median(down));
    vec![
        [
            format!("move a {mb:.0} MB tenant shared -> dedicated: downtime / whole move (s)"),
            format!("{up:.2} / {:.2}", median(up_total)),
            format!("{hand:.2} (pg_dump | pg_restore by hand)"),
            format!("{:.2}x", up / hand),
            "-".into(),
        ],
        [
            format!("move a {mb:.0} MB tenant dedicated -> shared: downtime / whole move (s)"),
            format!("{down:.2} / {:.2}", median(down_total)),
            format!("{hand:.2} (pg_dump | pg_restore by hand)"),
            format!("{:.2}x", down / hand),
            "-".into(),
        ],
    ]
}

/// `pg_dump -Fc -n schema | pg_restore` into a scratch database, as an admin would by hand.
fn copy_by_hand(env: &TestEnv, database: &str, schema: &str) -> f64 {
    let scratch = format!("{}scratch", env.config.database_prefix);
    let script = format!(
        "dropdb --if-exists {scratch} && createdb {scratch} && pg_dump -Fc -Z6 -n {schema} {database} | pg_restore --single-transaction -d {scratch} && dropdb {scratch}"
    );
    let started = Instant::now();
    let status = Command::new("sh")
        .args(["-c", &script])
        .env("PGHOST", "127.0.0.1")
        .env("PGOPTIONS", "-c client_min_messages=warning")
        .status()
        .unwrap();
    assert!(status.success(), "the copy by hand failed");
    started.elapsed().as_secs_f64()
}

fn fmt(n: f64) -> String {
    if n >= 100.0 {
        let s = format!("{:.0}", n);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{n:.2}")
    }
}

#[tokio::main]
async fn main() {
    let o = opts();
    // `--scale --tenants 1000,10000`: the scale run (issue 16), see scale.rs.
    if std::env::args().any(|a| a == "--scale") {
        let args: Vec<String> = std::env::args().collect();
        let sizes = args.iter().position(|a| a == "--tenants").and_then(|i| args.get(i + 1)).map_or("1000,10000", String::as_str);
        let sizes: Vec<usize> = sizes.split(',').map(|n| n.trim().parse().expect("--tenants takes sizes like 1000,10000")).collect();
        assert!(sizes.windows(2).all(|w| w[0] < w[1]), "--tenants: growing sizes, e.g. 1000,10000");
        let per_db =
            args.iter().position(|a| a == "--per-shared-database").and_then(|i| args.get(i + 1)).map(|n| n.parse().expect("a number"));
        scale::run(&sizes, per_db).await;
        return;
    }
    // `--moves`: only the moves (issue 14), for a quick look.
    if std::env::args().any(|a| a == "--moves") {
        print_table(o.runs, move_times(o.runs).await, "");
        return;
    }
    let env = TestEnv::new().await;
    let logs = TempDir::new("bench-logs");
    eprintln!("tenant-bench: {} runs each; databases tm_test_{} / tt{}_*", o.runs, env.suffix, env.suffix);

    // `--only queue,lifecycle`: some parts of the table (queue, enqueue, lifecycle, moves,
    // rollout), for a quick look while working on one; the README's table has them all.
    let only = o.only.clone();
    let part = |name: &str| only.as_ref().is_none_or(|parts| parts.iter().any(|p| p == name));
    let mut rows = Vec::new();
    if part("queue") {
        let (queue, (idle_rss, peak_rss)) = queue_rows(&env, &o, logs.path()).await;
        rows.extend(queue);
        rows.push([
            "worker RSS, idle / peak during the drain (MB)".into(),
            format!("{idle_rss:.1} / {peak_rss:.1}"),
            "-".into(),
            "-".into(),
            "idle < 50".into(),
        ]);
    }
    if part("enqueue") {
        rows.extend(enqueue_rows(&env, &o).await);
    }
    if part("lifecycle") {
        rows.extend(lifecycle_rows(&env, &o, logs.path()).await);
    }
    if part("moves") {
        rows.extend(move_times(o.runs).await);
    }
    if part("rollout") {
        rows.extend(rollout_rows(&o, logs.path()).await);
    }

    print_table(o.runs, rows, &sqlx::query_scalar::<_, String>("SHOW server_version").fetch_one(&env.pool).await.unwrap_or_default());
}

type Row = [String; 5];

/// Rows 1, 2 and the worker's memory: the queue drain beside the raw SKIP LOCKED loop and
/// the bare apalis peer, then pickup latency; returns the worker's idle and peak RSS (MB).
async fn queue_rows(env: &TestEnv, o: &Opts, logs: &Path) -> (Vec<Row>, (f64, f64)) {
    let mut rows: Vec<Row> = Vec::new();
    // 1 + 6: queue drain beside the raw SKIP LOCKED loop; worker memory.
    let mut worker = spawn_worker(env, &logs.join("drain.log"), true);
    wait_listening(env, 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = memory_kb(worker.id(), "VmRSS:") / 1024.0;
    let (mut ours, mut raw, mut peer) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..o.runs {
        eprintln!("  drain run {}", run + 1);
        raw.push(raw_drain(env, o.drain_jobs, 4, 100).await);
        ours.push(worker_drain(env, o.drain_jobs).await);
        peer.push(peer_drain(env, o.drain_jobs, run).await);
    }
    let peak_rss = memory_kb(worker.id(), "VmHWM:") / 1024.0;
    let (d, r, p) = (median(ours), median(raw), median(peer));
    rows.push([
        format!("queue drain, {} no-op jobs (jobs/s)", o.drain_jobs),
        fmt(d),
        format!("{} (raw SKIP LOCKED, k=100, 4 loops)", fmt(r)),
        format!("{:.2}x", d / r),
        ">= 0.5x".into(),
    ]);
    rows.push([
        format!("peer: bare apalis-postgres worker, same tuning, {} jobs (jobs/s)", o.drain_jobs),
        fmt(p),
        format!("{} (raw SKIP LOCKED, k=100, 4 loops)", fmt(r)),
        format!("{:.2}x (ours: {:.2}x of the peer)", p / r, d / p),
        "-".into(),
    ]);

    // The second peer, graphile_worker, in a process of its own (one run: it drains, then
    // picks up; see tests/bench/graphile-peer).
    eprintln!("  graphile_worker peer");
    let g = graphile_peer(env, o.drain_jobs, o.pickups);
    rows.push([
        format!("peer: graphile_worker 0.14 (Rust), concurrency 100, local queue 100, {} jobs (jobs/s, 1 run)", o.drain_jobs),
        fmt(g.jobs_per_s),
        format!("{} (raw SKIP LOCKED, k=100, 4 loops)", fmt(r)),
        format!("{:.2}x (ours: {:.2}x of the peer)", g.jobs_per_s / r, d / g.jobs_per_s),
        "-".into(),
    ]);

    let _ = worker.kill();
    let _ = worker.wait();
    rows.extend(pickup_rows(env, o, logs, &g).await);
    (rows, (idle_rss, peak_rss))
}

/// Row 2: pickup latency, ours and graphile_worker's.
async fn pickup_rows(env: &TestEnv, o: &Opts, logs: &Path, g: &PeerRun) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    // 2: pickup latency, on a fresh worker with an empty queue.
    clear_noops(env).await;
    let mut worker = spawn_worker(env, &logs.join("pickup.log"), true);
    wait_listening(env, 1).await;
    eprintln!("  pickup latency");
    let lat = pickup_latencies(env, o.pickups).await;
    rows.push([
        format!("pickup latency, {} jobs one at a time (ms)", o.pickups),
        format!("p50 {:.1} / p99 {:.1}", percentile(lat.clone(), 0.5), percentile(lat, 0.99)),
        "-".into(),
        "-".into(),
        "p50 <= 2.5, p99 <= 6".into(),
    ]);
    rows.push([
        format!("peer: graphile_worker pickup latency, {} jobs one at a time (ms)", o.pickups),
        format!("p50 {:.1} / p99 {:.1}", g.pickup_p50_ms, g.pickup_p99_ms),
        "-".into(),
        "-".into(),
        "-".into(),
    ]);
    let _ = worker.kill();
    let _ = worker.wait();

    rows
}

/// Row 3: enqueue rates and the scheduler's fan-out beside a raw multi-row insert.
async fn enqueue_rows(env: &TestEnv, o: &Opts) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    // 3: enqueue rates and the scheduler's fan-out beside a raw multi-row insert.
    let (mut single, mut batched, mut raw_ins) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..o.runs {
        let (s, b, r) = enqueue_rates(env, o.enqueue_jobs).await;
        single.push(s);
        batched.push(b);
        raw_ins.push(r);
    }
    let (s, b, r) = (median(single), median(batched), median(raw_ins));
    rows.push([
        format!("enqueue one by one, {} jobs (jobs/s)", o.enqueue_jobs),
        fmt(s),
        format!("{} (raw multi-row insert)", fmt(r)),
        format!("{:.2}x", s / r),
        "-".into(),
    ]);
    rows.push([
        format!("enqueue batched, {} jobs in one call (jobs/s)", o.enqueue_jobs),
        fmt(b),
        format!("{} (raw multi-row insert)", fmt(r)),
        format!("{:.2}x", b / r),
        "-".into(),
    ]);
    register_fake_tenants(env, o.fanout_tenants).await;
    let (mut fan, mut raw_fan) = (Vec::new(), Vec::new());
    for run in 0..o.runs {
        raw_fan.push(raw_insert(env, o.fanout_tenants).await);
        fan.push(fan_out_rate(env, run, o.fanout_tenants).await);
    }
    let (f, rf) = (median(fan), median(raw_fan));
    rows.push([
        format!("scheduler fan-out over {} tenants (jobs/s)", o.fanout_tenants),
        fmt(f),
        format!("{} (raw multi-row insert)", fmt(rf)),
        format!("{:.2}x", f / rf),
        ">= 0.5x".into(),
    ]);
    sqlx::query("DELETE FROM tenant_master.tenants WHERE database_name = 'none'").execute(&env.pool).await.unwrap();
    sqlx::query("DELETE FROM tenant_master.schedule_runs").execute(&env.pool).await.unwrap();

    rows
}

/// Rows 4 and 5: provisioning in both modes, then a backup fan-out beside a pg_dump loop.
async fn lifecycle_rows(env: &TestEnv, o: &Opts, logs: &Path) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    // 4 + 5: provisioning in both modes, then a backup fan-out beside a pg_dump loop,
    // with the worker's default settings (concurrency 4, heavy jobs 2 per host).
    let mut worker = spawn_worker(env, &logs.join("provision.log"), false);
    wait_listening(env, 1).await;
    for (plan, mode) in [("starter", "schema"), ("enterprise", "database")] {
        eprintln!("  provisioning {} tenants ({mode})", o.tenants);
        let rate = provision_rate(env, plan, o.tenants).await;
        rows.push([
            format!("provisioning, {} tenants, {mode} mode (tenants/s, 1 run)", o.tenants),
            fmt(rate),
            "-".into(),
            "-".into(),
            if mode == "schema" { ">= 20" } else { ">= 15" }.into(),
        ]);
        if o.profile {
            rows.push(provision_profile(env, plan, mode).await);
        }
    }
    let shared_db = format!("{}demo_shared", env.config.database_prefix);
    let (mut ours, mut loop_) = (Vec::new(), Vec::new());
    for run in 0..o.runs {
        eprintln!("  backup fan-out run {}", run + 1);
        loop_.push(shell_loop_backup(env, &shared_db));
        ours.push(backup_fan_out(env, o.tenants).await);
    }
    let (b, l) = (median(ours), median(loop_));
    rows.push([
        format!("backup fan-out, {} small tenants (s)", o.tenants),
        format!("{b:.2}"),
        format!("{l:.2} (sequential pg_dump loop)"),
        format!("{:.2}x faster", l / b),
        ">= 1.5x faster".into(),
    ]);
    if o.profile {
        let order = ["look_up", "checks", "pg_dump", "verify", "hash_and_sync", "record", "retention"];
        rows.push(profile(env, "one backup", "BackupTenant", None, &order).await);
    }
    let _ = worker.kill();
    let _ = worker.wait();
    rows
}

/// The fleet rollout: nothing pending, then one new table and index for every tenant.
async fn rollout_rows(o: &Opts, logs: &Path) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let (idle, full) = rollout_times(o.rollout_tenants, logs).await;
    rows.push([
        format!("tenant migrate --all, {} schema-mode tenants, nothing pending (s, 1 run)", o.rollout_tenants),
        format!("{idle:.2}"),
        "-".into(),
        "-".into(),
        "< 10 s for 1,000".into(),
    ]);
    rows.push([
        format!("tenant migrate --all --wait, {} tenants, one new table + index (s, 1 run)", o.rollout_tenants),
        format!("{full:.2}"),
        "-".into(),
        "-".into(),
        "< 60 s for 1,000".into(),
    ]);
    rows
}

/// Seconds one `tenantctl` command takes (the process, its connection and its work).
fn tenantctl_secs(env: &TestEnv, args: &[&str]) -> f64 {
    let mut cmd = Command::new(sibling("tenantctl"));
    cmd.env_remove("TENANT_MASTER_CONFIG").args(args).stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in env.env_vars() {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let status = cmd.status().unwrap();
    assert!(status.success(), "tenantctl {args:?} failed");
    started.elapsed().as_secs_f64()
}

/// "N cores, CPU model" of this machine, for the tables.
fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_default();
    format!("{} cores, {model}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0))
}

fn print_table(runs: usize, rows: Vec<[String; 5]>, server_version: &str) {
    let postgres = if server_version.is_empty() { String::new() } else { format!(", PostgreSQL {server_version}") };
    let machine = format!("{}{postgres}", machine());
    println!("\nTenant Master benchmark, {} ({} runs per figure, median; {})\n", chrono::Utc::now().format("%Y-%m-%d"), runs, machine);
    println!("| measure | Tenant Master | baseline, same run | ratio | target |");
    println!("| --- | --- | --- | --- | --- |");
    for row in rows {
        println!("| {} |", row.join(" | "));
    }
}
