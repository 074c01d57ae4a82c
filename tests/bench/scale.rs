//! `tenant-bench --scale --tenants 1000,10000` (run by `./deploy/scale.sh`): one control
//! plane grown to each size in turn (mostly shared plans, 1 in 50 dedicated), and at each
//! size one night's schedules (the nightly backups, then the daily cleanup with PruneJobs)
//! and a `tenant migrate --all`, through one worker with the default settings. Prints one
//! table; removes everything it created.

use std::time::{Duration, Instant};

use chrono::Utc;
use tenant_master::{
    schedule::{self, Schedule},
    tenants::NewTenant,
};
use tenant_master_tests::{TempDir, TestEnv};

use super::{machine, memory_kb, spawn_worker, tenantctl_secs, wait_listening};

/// One size's figures.
struct Figures {
    tenants: usize,
    provision_rate: f64,
    shared_databases: i64,
    catalog_rows: i64,
    shared_mb: f64,
    backup_secs: f64,
    cleanup_secs: f64,
    migrate_secs: f64,
    list_secs: f64,
    show_secs: f64,
    jobs_secs: f64,
    rss_mb: f64,
}

pub async fn run(sizes: &[usize], per_shared_database: Option<u32>) {
    let mut env = TestEnv::new().await;
    if let Some(n) = per_shared_database {
        env.config.products.tenants_per_shared_database = n;
    }
    let logs = TempDir::new("scale-logs");
    let worker = spawn_worker(&env, &logs.path().join("worker.log"), false);
    wait_listening(&env, 1).await;
    eprintln!("tenant-bench --scale: sizes {sizes:?}; databases tm_test_{} / tt{}_*", env.suffix, env.suffix);
    let mut figures = Vec::new();
    let mut have = 0;
    for (night_index, &size) in sizes.iter().enumerate() {
        eprintln!("  provisioning {} tenants ({} so far)", size - have, have);
        let provision_rate = provision(&env, have, size).await;
        have = size;
        let (shared_databases, catalog_rows, shared_mb) = catalog(&env).await;
        eprintln!("  nightly backups of {size} tenants");
        let backup_secs = night(&env, "nightly_backup", night_index).await;
        eprintln!("  daily cleanup and PruneJobs");
        let cleanup_secs = night(&env, "daily_cleanup", night_index).await;
        eprintln!("  tenant migrate --all, control-plane queries");
        let migrate_secs = tenantctl_secs(&env, &["tenant", "migrate", "--all"]);
        let list_secs = tenantctl_secs(&env, &["tenant", "list", "--json"]);
        let show_secs = tenantctl_secs(&env, &["tenant", "show", &env.slug("s0"), "--json"]);
        let jobs_secs = tenantctl_secs(&env, &["jobs", "list", "--json"]);
        let rss_mb = memory_kb(worker.id(), "VmHWM:") / 1024.0;
        figures.push(Figures {
            tenants: size,
            provision_rate,
            shared_databases,
            catalog_rows,
            shared_mb,
            backup_secs,
            cleanup_secs,
            migrate_secs,
            list_secs,
            show_secs,
            jobs_secs,
            rss_mb,
        });
        print_table(&figures);
    }
    let mut worker = worker;
    let _ = worker.kill();
    let _ = worker.wait();
}

/// Registers tenants `from..to` (1 in 50 on a dedicated plan) and waits until all are
/// active; tenants per second.
async fn provision(env: &TestEnv, from: usize, to: usize) -> f64 {
    let started = Instant::now();
    for i in from..to {
        let (plan, letter) = if i % 50 == 49 { ("enterprise", "e") } else { ("starter", "s") };
        let new = NewTenant::parse(&env.slug(&format!("{letter}{i}")), "demo", plan, "owner@example.com", None, None).unwrap();
        tenant_master::jobs::provision_tenant::create_in_new_transaction(&env.pool, &env.config, &new, "scale").await.unwrap();
    }
    let mut last = Instant::now();
    loop {
        let active: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tenant_master.tenants WHERE status = 'active'").fetch_one(&env.pool).await.unwrap();
        if active as usize >= to {
            return (to - from) as f64 / started.elapsed().as_secs_f64();
        }
        let failed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tenant_master.tenants WHERE status = 'failed'").fetch_one(&env.pool).await.unwrap();
        assert_eq!(failed, 0, "a provisioning failed: see the worker log");
        if last.elapsed() > Duration::from_secs(30) {
            eprintln!("    {active} of {to} active, {:.1}/s", (active as usize - from) as f64 / started.elapsed().as_secs_f64());
            last = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The shared databases: how many, their catalog rows (pg_class) and size in MB.
async fn catalog(env: &TestEnv) -> (i64, i64, f64) {
    let shared: Vec<String> = sqlx::query_scalar("SELECT DISTINCT database_name FROM tenant_master.tenants WHERE isolation = 'schema'")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    let (mut rows, mut bytes) = (0, 0);
    for db in &shared {
        let mut conn = env.admin(db).await;
        let (r, b): (i64, i64) = sqlx::query_as("SELECT (SELECT count(*) FROM pg_class), pg_database_size(current_database())")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        rows += r;
        bytes += b;
    }
    (shared.len() as i64, rows, bytes as f64 / 1e6)
}

/// Enqueues schedule `name`'s fan-out for a slot of night `index` (spread over no time) and
/// waits until the queue is empty again; seconds.
async fn night(env: &TestEnv, name: &str, index: usize) -> f64 {
    let mut config = env.config.scheduler.clone();
    let mut schedule_config = config.merged()[name].clone();
    schedule_config.spread_minutes = 0;
    config.schedules.insert(name.to_owned(), schedule_config);
    let schedule = Schedule::find(&config, name).unwrap();
    // A slot of each size's own: the nights must not share idempotency keys.
    let slot = schedule.current_slot(Utc::now()).unwrap() - chrono::Duration::days(index as i64);
    let started = Instant::now();
    schedule::fan_out(&env.pool, &schedule, slot, "scale").await.unwrap();
    let mut last = Instant::now();
    loop {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE status IN ('pending', 'running', 'failed')")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        if open == 0 {
            break;
        }
        if last.elapsed() > Duration::from_secs(30) {
            eprintln!("    {open} job(s) to go after {:.0}s", started.elapsed().as_secs_f64());
            last = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE status = 'dead'").fetch_one(&env.pool).await.unwrap();
    assert_eq!(dead, 0, "a job of {name} gave up: see the worker log");
    started.elapsed().as_secs_f64()
}

fn print_table(figures: &[Figures]) {
    println!("\nTenant Master at scale, {} ({}; one worker, default settings)\n", Utc::now().format("%Y-%m-%d"), machine());
    let header: Vec<String> = figures.iter().map(|f| format!("{} tenants", f.tenants)).collect();
    println!("| measure | {} |", header.join(" | "));
    println!("| --- |{}", " --- |".repeat(figures.len()));
    let row = |name: &str, value: &dyn Fn(&Figures) -> String| {
        let cells: Vec<String> = figures.iter().map(value).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    row("provisioning (tenants/s, the step's new tenants)", &|f| format!("{:.1}", f.provision_rate));
    row("shared databases / their pg_class rows / their size (MB)", &|f| {
        format!("{} / {} / {:.0}", f.shared_databases, f.catalog_rows, f.shared_mb)
    });
    row("nightly backups: wall time (s)", &|f| format!("{:.0}", f.backup_secs));
    row("nightly backups: tenants/s", &|f| format!("{:.1}", f.tenants as f64 / f.backup_secs));
    row("daily cleanup + PruneJobs: wall time (s)", &|f| format!("{:.0}", f.cleanup_secs));
    row("tenant migrate --all, nothing pending (s)", &|f| format!("{:.2}", f.migrate_secs));
    row("tenant list --json (s)", &|f| format!("{:.2}", f.list_secs));
    row("tenant show (s)", &|f| format!("{:.2}", f.show_secs));
    row("jobs list --json (s)", &|f| format!("{:.2}", f.jobs_secs));
    row("worker peak RSS (MB)", &|f| format!("{:.0}", f.rss_mb));
}
