//! Test support: a private control plane per test on the real PostgreSQL server, the
//! real worker (in-process or as a child process) and the real `tenantctl` binary.
//!
//! Every [`TestEnv`] has its own control-plane database, tenant database prefix and slug
//! suffix, and drops all of them (and its tenants' roles) when it goes out of scope, even
//! when the test panics.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

pub mod browser;
pub mod moves;
pub mod panel;
pub mod private_server;
pub mod smtp;

use rand::Rng;
use sqlx::{postgres::PgConnectOptions, Connection, PgConnection, PgPool};
use tenant_master::{db, migrate, Config};

/// A test that panics before it kills a child it started must not leave it running: the
/// child gets SIGKILL when the thread that started it (the test's) ends.
pub fn die_with_test(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// The server tests run against (a superuser or a role with CREATEDB and CREATEROLE).
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://127.0.0.1:5432/postgres".to_owned())
}

/// A private control plane on the test server.
pub struct TestEnv {
    /// The configuration every process of the test is given.
    pub config: Config,
    /// A pool on the test's own control plane.
    pub pool: PgPool,
    /// Appended to every slug of this test, so role names never clash across tests.
    pub suffix: String,
    control_db: String,
    /// The server this control plane (and its local host's tenants) lives on.
    server: String,
    _products: Option<TempDir>,
    _backups: TempDir,
    _mail: TempDir,
}

impl TestEnv {
    /// A migrated control plane with the shipped products.
    pub async fn new() -> TestEnv {
        TestEnv::build(None, true).await
    }

    /// A control plane whose products come from `products` (a folder of product folders).
    pub async fn with_products(products: TempDir) -> TestEnv {
        TestEnv::build(Some(products), true).await
    }

    /// An empty database, not migrated.
    pub async fn unmigrated() -> TestEnv {
        TestEnv::build(None, false).await
    }

    /// A migrated control plane on another server (e.g. a [`private_server::PrivateServer`]).
    pub async fn on_server(server: &str) -> TestEnv {
        TestEnv::build_on(server.to_owned(), None, true).await
    }

    async fn build(products: Option<TempDir>, migrated: bool) -> TestEnv {
        TestEnv::build_on(server_url(), products, migrated).await
    }

    async fn build_on(server: String, products: Option<TempDir>, migrated: bool) -> TestEnv {
        let suffix = random_suffix();
        let control_db = format!("tm_test_{suffix}");
        let mut config = Config {
            database_url: url_with_database(&server, &control_db),
            database_prefix: format!("tt{suffix}_"),
            products_dir: match &products {
                Some(dir) => dir.path().to_owned(),
                None => repo_root().join("migrations/products"),
            },
            ..Config::default()
        };
        let backups = TempDir::new("backups");
        config.backup_dir = backups.path().to_owned();
        let mail = TempDir::new("mail");
        config.mail_dir = mail.path().to_owned();
        // The key that seals tenant passwords, outside the control plane as in production.
        let key_file = backups.path().with_extension("key");
        std::fs::write(&key_file, tenant_master::secrets::SecretKey::generate()).unwrap();
        config.secret_key_file = Some(key_file);
        config.worker.poll_interval_ms = 200;
        config.worker.heavy_slot_wait_secs = 60;
        // Tests run many workers at once: no fixed metrics port unless a test asks for one.
        config.worker.metrics_addr = String::new();
        config.worker.heartbeat_secs = 1;
        config.worker.missed_heartbeats = 3;
        if migrated {
            migrate::run(&config).await.expect("migrate the test control plane");
        } else {
            let options = db::options(&config.database_url).unwrap();
            let mut conn = db::connect_to(&options, "postgres").await.unwrap();
            db::create_database_if_missing(&mut conn, &control_db).await.unwrap();
        }
        let pool = db::connect_pool(&config.database_url, 5).await.expect("connect to the test control plane");
        TestEnv { config, pool, suffix, control_db, server, _products: products, _backups: backups, _mail: mail }
    }

    /// A slug unique to this test: `<base>_<suffix>`.
    pub fn slug(&self, base: &str) -> String {
        format!("{base}_{}", self.suffix)
    }

    /// Environment variables that point a binary at this control plane.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        let w = &self.config.worker;
        vec![
            ("DATABASE_URL", self.config.database_url.clone()),
            ("TENANT_MASTER_DATABASE_PREFIX", self.config.database_prefix.clone()),
            ("TENANT_MASTER_PRODUCTS_DIR", self.config.products_dir.display().to_string()),
            ("TENANT_MASTER_BACKUP_DIR", self.config.backup_dir.display().to_string()),
            ("TENANT_MASTER_MAIL_DIR", self.config.mail_dir.display().to_string()),
            ("SMTP_URL", self.config.mail.smtp_url.clone().unwrap_or_default()),
            ("TENANT_MASTER_SECRET_KEY_FILE", self.config.secret_key_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default()),
            ("TENANT_MASTER_WORKER_POLL_INTERVAL_MS", w.poll_interval_ms.to_string()),
            ("TENANT_MASTER_WORKER_HEARTBEAT_SECS", w.heartbeat_secs.to_string()),
            ("TENANT_MASTER_WORKER_MISSED_HEARTBEATS", w.missed_heartbeats.to_string()),
            ("TENANT_MASTER_METRICS_ADDR", w.metrics_addr.clone()),
            ("TENANT_MASTER_WORKER_RETRY_BASE_SECS", w.retry_base_secs.to_string()),
            ("RUST_LOG", "info,sqlx=warn".to_owned()),
        ]
    }

    /// Runs `tenantctl args...` against this control plane.
    pub fn tenantctl(&self, args: &[&str]) -> Output {
        self.tenantctl_command(args).output().expect("run tenantctl")
    }

    /// `tenantctl args...` against this control plane, ready to run.
    pub fn tenantctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary("tenantctl"));
        cmd.args(args).env_remove("TENANT_MASTER_CONFIG");
        for (k, v) in self.env_vars() {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `tenant-worker` as a child process, logging to `log`.
    pub fn spawn_worker(&self, log: &Path) -> std::process::Child {
        self.spawn_worker_with(log, &[])
    }

    /// Starts `tenant-worker` with extra environment variables (settings) on top of this
    /// control plane's.
    pub fn spawn_worker_with(&self, log: &Path, extra: &[(&str, &str)]) -> std::process::Child {
        let file = std::fs::File::create(log).unwrap();
        let mut cmd = Command::new(binary("tenant-worker"));
        cmd.env_remove("TENANT_MASTER_CONFIG").stdout(file.try_clone().unwrap()).stderr(file);
        for (k, v) in self.env_vars() {
            cmd.env(k, v);
        }
        cmd.envs(extra.iter().copied());
        die_with_test(&mut cmd);
        cmd.spawn().expect("start tenant-worker")
    }

    /// Runs the real worker pool in this process until `done` holds (checked every 100 ms),
    /// then shuts it down. Panics after `limit`.
    pub async fn run_worker_until<F, Fut>(&self, limit: Duration, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(tenant_master::worker::run(self.config.clone(), async move {
            let _ = stopped.await;
            Ok(())
        }));
        let started = Instant::now();
        while !done().await {
            assert!(started.elapsed() < limit, "the worker did not finish within {limit:?}");
            assert!(!worker.is_finished(), "the worker stopped early");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = stop.send(());
        worker.await.unwrap().expect("worker shut down cleanly");
    }

    /// The status of tenant `slug` in the registry, if it exists.
    pub async fn tenant_status(&self, slug: &str) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM tenant_master.tenants WHERE slug = $1 ORDER BY status = 'deleted', id DESC LIMIT 1")
            .bind(slug)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
    }

    /// Holds tenant `id`'s registry row (`FOR UPDATE`) until the returned transaction ends,
    /// so requests that lock it queue behind it.
    pub async fn hold_tenant_row(&self, id: i64) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut holder = self.pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM tenant_master.tenants WHERE id = $1 FOR UPDATE").bind(id).execute(&mut *holder).await.unwrap();
        holder
    }

    /// Waits until exactly `n` sessions of the control plane wait on a `FOR UPDATE` row lock.
    pub async fn until_row_lock_waiters(&self, n: i64) {
        let query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%' AND datname = current_database()";
        eventually(Duration::from_secs(20), &format!("{n} session(s) waiting on a row lock"), || async {
            sqlx::query_scalar::<_, i64>(query).fetch_one(&self.pool).await.unwrap() == n
        })
        .await
    }

    /// Number of rows in the queue.
    pub async fn job_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM apalis.jobs").fetch_one(&self.pool).await.unwrap()
    }

    /// An admin connection to `database` on the test server.
    pub async fn admin(&self, database: &str) -> PgConnection {
        let options: PgConnectOptions = db::options(&self.server).unwrap().database(database);
        PgConnection::connect_with(&options).await.expect("admin connection")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(key) = &self.config.secret_key_file {
            let _ = std::fs::remove_file(key);
        }
        let (control_db, prefix, suffix) = (self.control_db.clone(), self.config.database_prefix.clone(), self.suffix.clone());
        let server = self.server.clone();
        // Async cleanup from Drop: a thread with its own runtime, joined before returning.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(cleanup(
                &server,
                &control_db,
                &prefix,
                &suffix,
            ))
        })
        .join()
        .expect("cleanup thread");
    }
}

async fn cleanup(server: &str, control_db: &str, prefix: &str, suffix: &str) {
    let options = db::options(server).unwrap().database("postgres");
    let Ok(mut conn) = PgConnection::connect_with(&options).await else { return };
    let databases: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname = $1 OR starts_with(datname, $2)")
        .bind(control_db)
        .bind(prefix)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
    for database in databases {
        let _ = db::ddl(&mut conn, "DROP DATABASE IF EXISTS %I WITH (FORCE)", &[&database]).await;
    }
    let roles: Vec<String> =
        // Operator roles (`t_<slug>__op`) first, then the tenant roles they belong to.
        sqlx::query_scalar(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, 't_')
               AND (rolname LIKE '%\\_' || $1 OR rolname LIKE '%\\_' || $1 || '\\_\\_op') ORDER BY rolname LIKE '%\\_\\_op' DESC",
        )
            .bind(suffix)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    for role in roles {
        let _ = db::ddl(&mut conn, "DROP ROLE IF EXISTS %I", &[&role]).await;
    }
}

/// An admin connection to `database` of the server at `url` (as the OS user, like `db::options`).
pub async fn admin_on(url: &str, database: &str) -> PgConnection {
    let options = db::options(url).unwrap();
    db::connect_to(&options, database).await.unwrap()
}

/// Whether `database` exists on the server at `url`.
pub async fn database_exists(url: &str, database: &str) -> bool {
    let mut conn = admin_on(url, "postgres").await;
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)").bind(database).fetch_one(&mut conn).await.unwrap()
}

/// The schemas of `database` (none if it is gone) on the server at `url` whose names start
/// with `prefix` (a tenant's role: its live schema and the copies named after it).
pub async fn schemas_like(url: &str, database: &str, prefix: &str) -> Vec<String> {
    if !database_exists(url, database).await {
        return Vec::new();
    }
    let mut conn = admin_on(url, database).await;
    sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1 || '%' ORDER BY 1")
        .bind(prefix)
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

/// A command's stdout, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's stderr, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A command's stdout, as JSON (the panic shows both streams).
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", stdout(out), stderr(out)))
}

/// `url` with its database replaced.
pub fn url_with_database(url: &str, database: &str) -> String {
    let base = url.split('?').next().unwrap();
    let (scheme, rest) = base.split_once("://").unwrap();
    let authority = rest.split('/').next().unwrap();
    format!("{scheme}://{authority}/{database}")
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..6).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// A workspace binary built next to the test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(path.is_file(), "{} is missing: run `cargo build --workspace` before the tests (./deploy/test.sh does)", path.display());
    path
}

/// A temporary folder, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty folder whose name starts with `label`.
    pub fn new(label: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("tm-{label}-{}", random_suffix()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A products folder holding a copy of the shipped `demo`, for tests that add migrations.
pub fn demo_products() -> TempDir {
    let dir = TempDir::new("products");
    let target = dir.path().join("demo");
    std::fs::create_dir_all(&target).unwrap();
    for entry in std::fs::read_dir(repo_root().join("migrations/products/demo")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
    }
    dir
}

/// The `name` column of every `projects` row in a backup archive, read with `pg_restore`.
pub fn names_in_backup(path: &str) -> Vec<String> {
    let out = Command::new("pg_restore").args(["--data-only", "--table=projects", "--file=-", path]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut in_copy = false;
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with("COPY ") {
            in_copy = true;
        } else if line == "\\." {
            in_copy = false;
        } else if in_copy {
            // COPY text: id, name, created_at (the demo product's projects).
            if let Some(name) = line.split('\t').nth(1) {
                found.push(name.to_owned());
            }
        }
    }
    found
}

/// A products folder holding the shipped `demo` plus `slow`: demo's migrations and a third
/// that sleeps `sleep_secs` (so a test can stop a worker in the middle of provisioning).
pub fn products_with_slow(sleep_secs: u32) -> TempDir {
    let dir = TempDir::new("products");
    let shipped = repo_root().join("migrations/products/demo");
    for name in ["demo", "slow"] {
        let target = dir.path().join(name);
        std::fs::create_dir_all(&target).unwrap();
        for entry in std::fs::read_dir(&shipped).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(dir.path().join("slow/0003_slow.sql"), format!("CREATE TABLE slow_marker (id int);\nSELECT pg_sleep({sleep_secs});\n"))
        .unwrap();
    dir
}

/// Waits until `check` holds, polling every 100 ms; panics with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything a test checks about a provisioned tenant's footprint on the server.
#[derive(Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Roles of the tenant on the server.
    pub roles: i64,
    /// Schemas of the tenant in its database.
    pub schemas: i64,
    /// Product migrations in its ledger.
    pub migrations: Vec<i64>,
    /// Its tables, by name.
    pub tables: Vec<String>,
}

impl TestEnv {
    /// The job context handlers get, for calling operations directly.
    pub fn app(&self) -> tenant_master::App {
        tenant_master::App::new(self.config.clone(), self.pool.clone())
    }

    /// Provisions a `demo` tenant directly (no queue) and returns its registry row.
    pub async fn provisioned(&self, slug: &str, plan: &str) -> tenant_master::tenants::Tenant {
        let new = tenant_master::tenants::NewTenant::parse(slug, "demo", plan, "owner@example.com", None, None).unwrap();
        tenant_master::jobs::provision_tenant::provision(&self.app(), &new, "test").await.expect("provision")
    }

    /// A connection as the tenant's own role, with the password from the registry.
    pub async fn as_tenant(&self, slug: &str) -> PgConnection {
        self.try_as_tenant(slug).await.expect("connect as the tenant")
    }

    /// Logs in with the tenant's credentials as `tenantctl tenant credentials` prints them;
    /// the error if the tenant may not log in.
    pub async fn try_as_tenant(&self, slug: &str) -> Result<PgConnection, sqlx::Error> {
        let mut conn = self.pool.acquire().await.unwrap();
        let url = tenant_master::tenants::credentials_url(&mut conn, &self.config, slug).await.unwrap();
        PgConnection::connect(&url).await
    }

    /// The tenant's registry row.
    pub async fn registry(&self, slug: &str) -> tenant_master::tenants::Tenant {
        let mut conn = self.pool.acquire().await.unwrap();
        tenant_master::tenants::get(&mut conn, slug).await.unwrap()
    }

    /// `n` rows `<prefix>1..n` in the tenant's `projects`, written as the tenant.
    pub async fn add_projects(&self, slug: &str, prefix: &str, n: i32) {
        let mut own = self.as_tenant(slug).await;
        sqlx::query("INSERT INTO projects (name) SELECT $1 || g FROM generate_series(1, $2) g")
            .bind(prefix)
            .bind(n)
            .execute(&mut own)
            .await
            .unwrap();
    }

    /// `tenantctl host add NAME` with the admin URL `url` passed in an environment variable.
    pub fn add_host(&self, name: &str, url: &str) -> Output {
        self.tenantctl_command(&["host", "add", name, "--admin-url-env", "TEST_HOST_ADMIN_URL"])
            .env("TEST_HOST_ADMIN_URL", url)
            .output()
            .unwrap()
    }

    /// The migration versions recorded in `t`'s ledger, as an admin reads them.
    pub async fn ledger(&self, t: &tenant_master::tenants::Tenant) -> Vec<i64> {
        let mut db = self.admin(&t.database).await;
        sqlx::query_scalar("SELECT version FROM tenant_master_meta.applied_migrations WHERE schema_name = $1 ORDER BY 1")
            .bind(&t.schema)
            .fetch_all(&mut db)
            .await
            .unwrap()
    }

    /// Whether `t`'s schema holds table `table`.
    pub async fn has_table(&self, t: &tenant_master::tenants::Tenant, table: &str) -> bool {
        let mut db = self.admin(&t.database).await;
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(format!("\"{}\".{table}", t.schema)).fetch_one(&mut db).await.unwrap()
    }

    /// Counts the tenant's roles, schemas, applied migrations and tables on the server.
    pub async fn footprint(&self, slug: &str, database: &str) -> Footprint {
        let role = format!("t_{slug}");
        let mut server = self.admin("postgres").await;
        let roles =
            sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1").bind(&role).fetch_one(&mut server).await.unwrap();
        let mut db = self.admin(database).await;
        let schemas =
            sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1").bind(&role).fetch_one(&mut db).await.unwrap();
        let migrations =
            sqlx::query_scalar("SELECT version FROM tenant_master_meta.applied_migrations WHERE schema_name = $1 ORDER BY version")
                .bind(&role)
                .fetch_all(&mut db)
                .await
                .unwrap_or_default();
        let tables = sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1")
            .bind(&role)
            .fetch_all(&mut db)
            .await
            .unwrap();
        Footprint { roles, schemas, migrations, tables }
    }
}

impl TestEnv {
    /// After a deletion: (roles named like the tenant's, its schema or database left).
    pub async fn footprint_after_delete(&self, tenant: &tenant_master::tenants::Tenant) -> (i64, i64) {
        let mut server = self.admin("postgres").await;
        let roles =
            sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1").bind(&tenant.role).fetch_one(&mut server).await.unwrap();
        let data: i64 = if tenant.isolation == "database" {
            sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
                .bind(&tenant.database)
                .fetch_one(&mut server)
                .await
                .unwrap()
        } else {
            let mut db = self.admin(&tenant.database).await;
            sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
                .bind(&tenant.schema)
                .fetch_one(&mut db)
                .await
                .unwrap()
        };
        (roles, data)
    }
}

/// Writes the demo product's third migration (`demo/0003_labels.sql`) into `products`.
pub fn write_demo_migration_3(products: &Path, sql: &str) {
    std::fs::write(products.join("demo/0003_labels.sql"), sql).unwrap();
}
