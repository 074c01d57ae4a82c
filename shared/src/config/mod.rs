//! Configuration: built-in defaults that run locally, then a TOML file, then the environment.
//!
//! Secrets (SMTP credentials, host admin passwords) come from the environment or files,
//! never from argv; [`Config`]'s `Debug` output hides the database URL's password.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

mod schedules;

pub use schedules::{ScheduleConfig, SchedulerConfig};

use crate::error::{Context as _, Error, Result};

/// Where state lives unless `data_dir` says otherwise: `data/` of the source tree a debug
/// build was made from (what `deploy/run-local.sh` uses), `/var/lib/tenant-master` for a
/// release build.
pub fn default_data_dir() -> PathBuf {
    match cfg!(debug_assertions) {
        true => source_tree().join("data"),
        false => PathBuf::from("/var/lib/tenant-master"),
    }
}

/// The products shipped with the code: `migrations/products` of the source tree for a debug
/// build, `/usr/share/tenant-master/products` (where the image puts them) for a release build.
pub fn default_products_dir() -> PathBuf {
    match cfg!(debug_assertions) {
        true => source_tree().join("migrations/products"),
        false => PathBuf::from("/usr/share/tenant-master/products"),
    }
}

fn source_tree() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The default control-plane database: the local server, as the current OS user.
pub const DEFAULT_DATABASE_URL: &str = "postgres://127.0.0.1:5432/tenant_master";

/// Everything the binaries need to know, resolved from defaults, file and environment.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The control-plane database (queue + registry). Env: `DATABASE_URL`.
    pub database_url: String,
    /// Where state lives (backups, mail files, the secret key): relative paths of the other
    /// settings resolve against it, never against the current folder. Default
    /// [`default_data_dir`]. Env: `TENANT_MASTER_DATA_DIR`.
    pub data_dir: PathBuf,
    /// Where each product's tenant migrations live (`<dir>/<product>/*.sql`). Default
    /// [`default_products_dir`]. Env: `TENANT_MASTER_PRODUCTS_DIR`.
    pub products_dir: PathBuf,
    /// Where backups are written. Env: `TENANT_MASTER_BACKUP_DIR`.
    pub backup_dir: PathBuf,
    /// Where mail goes when no SMTP server is configured. Env: `TENANT_MASTER_MAIL_DIR`.
    pub mail_dir: PathBuf,
    /// Prepended to every tenant database name; empty in production, unique per test run.
    pub database_prefix: String,
    /// The worker pool's settings.
    pub worker: WorkerConfig,
    /// Backup retention.
    pub backups: BackupConfig,
    /// `[products]`: how product migrations reach existing tenants.
    pub products: ProductsConfig,
    /// `[moves]`: what a tenant move keeps behind.
    pub moves: MovesConfig,
    /// `[plans.<plan>]`: settings of one plan.
    pub plans: std::collections::BTreeMap<String, PlanConfig>,
    /// `tenant-scheduler`'s schedules.
    pub scheduler: SchedulerConfig,
    /// Outgoing mail.
    pub mail: MailConfig,
    /// The key file that seals tenant passwords at rest; never inside the control plane.
    /// Default `secret.key` in `data_dir` (made by `deploy/run-local.sh`). Env:
    /// `TENANT_MASTER_SECRET_KEY_FILE` (empty: none), or the key itself in `TENANT_MASTER_SECRET_KEY`.
    pub secret_key_file: Option<PathBuf>,
    /// The previous key while `tenantctl key rotate` re-seals. Env: `TENANT_MASTER_OLD_SECRET_KEY_FILE`.
    pub old_secret_key_file: Option<PathBuf>,
    /// The key itself, from `TENANT_MASTER_SECRET_KEY` only (never from a file of settings).
    #[serde(skip)]
    pub secret_key: Option<String>,
}

/// `[mail]`: the welcome mail. The SMTP URL is a secret: it comes from `SMTP_URL` only.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// `smtp://host:port`, `smtp://user:pass@host:587?tls=required` or `smtps://...`;
    /// none: mail is written as .eml files to `mail_dir`. Env only: `SMTP_URL`.
    #[serde(skip)]
    pub smtp_url: Option<String>,
    /// The sender, e.g. `Acme Cloud <noreply@acme.example>`.
    pub from: String,
    /// The tenant's login address; `{slug}` is replaced.
    pub login_url_pattern: String,
    /// The domain part of deterministic Message-IDs.
    pub message_id_domain: String,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            smtp_url: None,
            from: "Tenant Master <noreply@example.com>".into(),
            login_url_pattern: "https://{slug}.example.com".into(),
            message_id_domain: "tenant-master.local".into(),
        }
    }
}

impl fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailConfig")
            .field("smtp_url", &self.smtp_url.as_deref().map(redact_url))
            .field("from", &self.from)
            .field("login_url_pattern", &self.login_url_pattern)
            .finish()
    }
}

/// `[products]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProductsConfig {
    /// When a worker starts, roll pending product migrations out to every live tenant (as
    /// `tenantctl tenant migrate --all` would). Off by default: a rollout is an admin's
    /// decision. Env: `TENANT_MASTER_AUTO_MIGRATE` (`true` / `false`).
    pub auto_migrate: bool,
    /// Schema-mode tenants per shared database: a product's tenants on a host fill
    /// `<product>_shared`, then `<product>_shared_2`, ... Each backup of one schema reads the
    /// whole catalog of its database, so this bounds a backup's cost (see the README's scale
    /// section). Env: `TENANT_MASTER_TENANTS_PER_SHARED_DATABASE`.
    pub tenants_per_shared_database: u32,
    /// Sessions each tenant's role may hold at once (its role's `CONNECTION LIMIT`), so no
    /// tenant can use up the server's `max_connections` and starve the others or the
    /// workers. Applied when a tenant is provisioned or moved, and before each job of an
    /// older one. Env: `TENANT_MASTER_TENANT_MAX_CONNECTIONS`.
    pub tenant_max_connections: u32,
}

/// `[plans.<plan>]`: what differs between plans. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanConfig {
    /// Sessions a tenant on this plan may hold at once (its role's `CONNECTION LIMIT`);
    /// default `[products] tenant_max_connections`.
    pub max_connections: Option<u32>,
}

impl Config {
    /// The `CONNECTION LIMIT` of the role of a tenant on `plan`.
    pub fn tenant_max_connections(&self, plan: &str) -> u32 {
        self.plans.get(plan).and_then(|p| p.max_connections).unwrap_or(self.products.tenant_max_connections)
    }
}

impl Default for ProductsConfig {
    fn default() -> Self {
        ProductsConfig { auto_migrate: false, tenants_per_shared_database: 500, tenant_max_connections: 20 }
    }
}

/// `[moves]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MovesConfig {
    /// Hours the source copy of a moved tenant is kept (its schema renamed `<schema>__moved`)
    /// for an admin to roll back; then `PruneJobs` drops it. Env: `TENANT_MASTER_MOVES_KEEP_SOURCE_HOURS`.
    pub keep_source_hours: u32,
}

impl Default for MovesConfig {
    fn default() -> Self {
        MovesConfig { keep_source_hours: 24 }
    }
}

/// How many routine (scheduled and manual) backups each tenant keeps.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// Kept per tenant unless its plan or the command says otherwise.
    pub keep: u32,
    /// Per plan, e.g. `enterprise = 30`.
    pub keep_per_plan: std::collections::BTreeMap<String, u32>,
    /// Days a deleted tenant's backups are kept (then `PruneJobs` removes them).
    pub keep_deleted_days: u32,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig { keep: 7, keep_per_plan: Default::default(), keep_deleted_days: 30 }
    }
}

impl BackupConfig {
    /// Backups to keep for a tenant on `plan`.
    pub fn keep_for(&self, plan: &str) -> u32 {
        self.keep_per_plan.get(plan).copied().unwrap_or(self.keep)
    }
}

/// Settings of `tenant-worker`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Jobs of one type run at once per process (times `workers_per_type`).
    pub concurrency: usize,
    /// Multiplies `concurrency` (it was the number of apalis workers per job type; one
    /// worker per type now serves all its slots, as the fetch is shared).
    pub workers_per_type: usize,
    /// Read for old configuration files, no longer used: each fetch takes exactly the
    /// free slots.
    pub batch_size: usize,
    /// The backstop poll: delayed and retried jobs send no NOTIFY.
    pub poll_interval_ms: u64,
    /// How often a worker says it is alive.
    pub heartbeat_secs: u64,
    /// Heartbeats missed before another worker process takes a process's jobs.
    /// Every worker process must use the same value (the rescuer's threshold applies).
    pub missed_heartbeats: usize,
    /// How long SIGTERM waits for running jobs before exiting anyway.
    pub shutdown_timeout_secs: u64,
    /// How long a job waits for another job of the same tenant to finish before retrying later.
    pub tenant_lock_wait_secs: u64,
    /// Heavy jobs (backup, restore) running at once per database host, over all workers.
    pub heavy_jobs_per_host: u32,
    /// How long a heavy job waits for a free slot before retrying later.
    pub heavy_slot_wait_secs: u64,
    /// Tenants migrated at once per database host by a rollout, over all workers.
    pub migrations_per_host: u32,
    /// Jobs of tenants running at once in one worker process, over all job types (each
    /// holds a tenant-lock session and maybe a host-slot session: see the connection budget).
    pub tenant_jobs_per_process: usize,
    /// First retry delay; each further one is 4 times longer (capped at an hour).
    pub retry_base_secs: u64,
    /// Per job type, seconds a run may take before it is failed (overrides the built-in ones).
    pub timeouts: std::collections::BTreeMap<String, u64>,
    /// Where `/healthz` and `/metrics` are served; empty: not served.
    pub metrics_addr: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            data_dir: default_data_dir(),
            products_dir: default_products_dir(),
            backup_dir: PathBuf::from("backups"),
            mail_dir: PathBuf::from("mail"),
            database_prefix: String::new(),
            worker: WorkerConfig::default(),
            backups: BackupConfig::default(),
            products: ProductsConfig::default(),
            moves: MovesConfig::default(),
            plans: Default::default(),
            scheduler: Default::default(),
            mail: MailConfig::default(),
            secret_key_file: Some(PathBuf::from("secret.key")),
            old_secret_key_file: None,
            secret_key: None,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 4,
            workers_per_type: 1,
            batch_size: 4,
            poll_interval_ms: 1000,
            heartbeat_secs: 5,
            missed_heartbeats: 4,
            shutdown_timeout_secs: 60,
            tenant_lock_wait_secs: 30,
            heavy_jobs_per_host: 2,
            heavy_slot_wait_secs: 1800,
            migrations_per_host: 4,
            tenant_jobs_per_process: 8,
            retry_base_secs: 5,
            timeouts: Default::default(),
            metrics_addr: "127.0.0.1:9187".into(),
        }
    }
}

impl WorkerConfig {
    /// How long a silent worker's jobs stay locked before another worker takes them.
    pub fn orphan_timeout(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs * self.missed_heartbeats as u64)
    }
}

impl Config {
    /// Loads defaults, then `file` (or `TENANT_MASTER_CONFIG`) if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let env_file = std::env::var_os("TENANT_MASTER_CONFIG").map(PathBuf::from);
        let mut config = match file.map(Path::to_path_buf).or(env_file) {
            Some(path) => Config::from_file(&path)?,
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.resolve_paths()?;
        config.validate()?;
        Ok(config)
    }

    /// Makes every path absolute: `data_dir` against the current folder (once, here),
    /// every other relative path against `data_dir`. So a command run from any folder
    /// reads the same key and writes the same backups.
    pub fn resolve_paths(&mut self) -> Result<()> {
        if self.data_dir.is_relative() {
            let here = std::env::current_dir().context("failed to read the current folder")?;
            self.data_dir = here.join(&self.data_dir);
        }
        let data_dir = self.data_dir.clone();
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = data_dir.join(&*path);
            }
        };
        resolve(&mut self.products_dir);
        resolve(&mut self.backup_dir);
        resolve(&mut self.mail_dir);
        self.secret_key_file.iter_mut().for_each(resolve);
        self.old_secret_key_file.iter_mut().for_each(resolve);
        Ok(())
    }

    /// Reads a TOML file; unknown keys are an error so typos do not pass silently.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).context(format!("failed to read config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| Error::Invalid(format!("config file {} is not valid: {}", path.display(), e.message())))
    }

    /// Applies environment overrides through `get` (a parameter so tests need no process env).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<()> {
        self.apply_env_text(&get);
        self.apply_env_numbers(&get)?;
        if let Some(v) = get("TENANT_MASTER_AUTO_MIGRATE") {
            self.products.auto_migrate = match v.as_str() {
                "true" | "1" => true,
                "false" | "0" | "" => false,
                _ => return Err(Error::Invalid(format!("TENANT_MASTER_AUTO_MIGRATE must be true or false, not '{}'", v.escape_debug()))),
            };
        }
        Ok(())
    }

    /// URLs, paths and other text. An empty value unsets an optional setting.
    fn apply_env_text(&mut self, get: &impl Fn(&str) -> Option<String>) {
        let texts: [(&str, &mut String); 4] = [
            ("DATABASE_URL", &mut self.database_url),
            ("TENANT_MASTER_LOGIN_URL_PATTERN", &mut self.mail.login_url_pattern),
            ("TENANT_MASTER_DATABASE_PREFIX", &mut self.database_prefix),
            ("TENANT_MASTER_METRICS_ADDR", &mut self.worker.metrics_addr),
        ];
        for (name, slot) in texts {
            if let Some(v) = get(name) {
                *slot = v;
            }
        }
        let paths: [(&str, &mut PathBuf); 4] = [
            ("TENANT_MASTER_DATA_DIR", &mut self.data_dir),
            ("TENANT_MASTER_PRODUCTS_DIR", &mut self.products_dir),
            ("TENANT_MASTER_BACKUP_DIR", &mut self.backup_dir),
            ("TENANT_MASTER_MAIL_DIR", &mut self.mail_dir),
        ];
        for (name, slot) in paths {
            if let Some(v) = get(name) {
                *slot = PathBuf::from(v);
            }
        }
        if let Some(v) = get("TENANT_MASTER_SECRET_KEY").filter(|v| !v.is_empty()) {
            self.secret_key = Some(v);
        }
        if let Some(v) = get("TENANT_MASTER_SECRET_KEY_FILE") {
            self.secret_key_file = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty());
        }
        if let Some(v) = get("TENANT_MASTER_OLD_SECRET_KEY_FILE").filter(|v| !v.is_empty()) {
            self.old_secret_key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("SMTP_URL").filter(|v| !v.is_empty()) {
            self.mail.smtp_url = Some(v);
        }
    }

    /// Whole numbers, each refused in one sentence if it is not one.
    fn apply_env_numbers(&mut self, get: &impl Fn(&str) -> Option<String>) -> Result<()> {
        let w = &mut self.worker;
        number(get, "TENANT_MASTER_WORKER_POLL_INTERVAL_MS", &mut w.poll_interval_ms)?;
        number(get, "TENANT_MASTER_WORKER_HEARTBEAT_SECS", &mut w.heartbeat_secs)?;
        number(get, "TENANT_MASTER_WORKER_SHUTDOWN_TIMEOUT_SECS", &mut w.shutdown_timeout_secs)?;
        number(get, "TENANT_MASTER_WORKER_TENANT_LOCK_WAIT_SECS", &mut w.tenant_lock_wait_secs)?;
        number(get, "TENANT_MASTER_WORKER_RETRY_BASE_SECS", &mut w.retry_base_secs)?;
        number(get, "TENANT_MASTER_WORKER_HEAVY_JOBS_PER_HOST", &mut w.heavy_jobs_per_host)?;
        number(get, "TENANT_MASTER_WORKER_MIGRATIONS_PER_HOST", &mut w.migrations_per_host)?;
        number(get, "TENANT_MASTER_WORKER_TENANT_JOBS_PER_PROCESS", &mut w.tenant_jobs_per_process)?;
        number(get, "TENANT_MASTER_WORKER_WORKERS_PER_TYPE", &mut w.workers_per_type)?;
        number(get, "TENANT_MASTER_WORKER_CONCURRENCY", &mut w.concurrency)?;
        number(get, "TENANT_MASTER_WORKER_BATCH_SIZE", &mut w.batch_size)?;
        number(get, "TENANT_MASTER_WORKER_MISSED_HEARTBEATS", &mut w.missed_heartbeats)?;
        number(get, "TENANT_MASTER_TENANTS_PER_SHARED_DATABASE", &mut self.products.tenants_per_shared_database)?;
        number(get, "TENANT_MASTER_TENANT_MAX_CONNECTIONS", &mut self.products.tenant_max_connections)?;
        number(get, "TENANT_MASTER_MOVES_KEEP_SOURCE_HOURS", &mut self.moves.keep_source_hours)?;
        number(get, "TENANT_MASTER_BACKUP_KEEP", &mut self.backups.keep)
    }

    /// Where the keys that seal tenant passwords come from.
    pub fn key_sources(&self) -> crate::secrets::KeySources {
        crate::secrets::KeySources {
            inline: self.secret_key.clone(),
            file: self.secret_key_file.clone(),
            old_file: self.old_secret_key_file.clone(),
        }
    }

    /// Refuses settings that would fail later in a less obvious way.
    pub fn validate(&self) -> Result<()> {
        crate::naming::validate_database_prefix(&self.database_prefix)?;
        self.scheduler.validate()?;
        let w = &self.worker;
        if self.backups.keep == 0 || self.backups.keep_per_plan.values().any(|k| *k == 0) {
            return Err(Error::Invalid("backup retention (keep) must be at least 1".into()));
        }
        // PostgreSQL's CONNECTION LIMIT is an int4; 0 would lock the tenants out.
        let fits = |n: u32| (1..=i32::MAX as u32).contains(&n);
        if !fits(self.products.tenant_max_connections) {
            return Err(Error::Invalid(
                "[products] tenant_max_connections must be between 1 and 2147483647: 0 would lock every tenant out".into(),
            ));
        }
        for (name, plan) in &self.plans {
            crate::naming::Plan::parse(name)?;
            if plan.max_connections.is_some_and(|n| !fits(n)) {
                return Err(Error::Invalid(format!(
                    "max_connections of [plans.{name}] must be between 1 and 2147483647: 0 would lock its tenants out"
                )));
            }
        }
        if w.heavy_jobs_per_host == 0
            || w.migrations_per_host == 0
            || w.tenant_jobs_per_process == 0
            || w.workers_per_type == 0
            || w.concurrency == 0
            || w.batch_size == 0
            || w.heartbeat_secs == 0
            || w.missed_heartbeats == 0
            || w.poll_interval_ms == 0
        {
            return Err(Error::Invalid(
                "worker heavy_jobs_per_host, migrations_per_host, tenant_jobs_per_process, workers_per_type, concurrency, batch_size, poll_interval_ms, heartbeat_secs and missed_heartbeats must all be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Sets `slot` from environment variable `name`, if it is set.
fn number<T: std::str::FromStr>(get: &impl Fn(&str) -> Option<String>, name: &str, slot: &mut T) -> Result<()> {
    if let Some(value) = get(name) {
        *slot = parse_number(name, &value)?;
    }
    Ok(())
}

fn parse_number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| Error::Invalid(format!("{name} must be a whole number, not '{value}'")))
}

/// Hides the password in a connection URL, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.find("://") {
        Some(scheme_end) => {
            let rest = &base[scheme_end + 3..];
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            match authority.rfind('@').map(|at| (at, authority[..at].find(':'))) {
                Some((at, Some(colon))) => format!("{}{}:***{}", &base[..scheme_end + 3], &rest[..colon], &rest[at..]),
                _ => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    match query {
        None => base,
        // libpq and sqlx also take the password as a parameter.
        Some(query) => {
            let params: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("products_dir", &self.products_dir)
            .field("backup_dir", &self.backup_dir)
            .field("mail_dir", &self.mail_dir)
            .field("database_prefix", &self.database_prefix)
            .field("worker", &self.worker)
            .field("backups", &self.backups)
            .field("products", &self.products)
            .field("moves", &self.moves)
            .field("plans", &self.plans)
            .field("scheduler", &self.scheduler)
            .field("mail", &self.mail)
            .field("secret_key_file", &self.secret_key_file)
            .field("old_secret_key_file", &self.old_secret_key_file)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "***"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env_override_defaults() {
        let mut config: Config = toml::from_str("backup_dir = \"/srv/backups\"\n[worker]\nconcurrency = 9\n").unwrap();
        assert_eq!(config.backup_dir, PathBuf::from("/srv/backups"));
        assert_eq!(config.worker.concurrency, 9);
        assert_eq!(config.worker.batch_size, WorkerConfig::default().batch_size);
        config
            .apply_env(|name| match name {
                "TENANT_MASTER_BACKUP_DIR" => Some("/mnt/b".into()),
                "TENANT_MASTER_WORKER_CONCURRENCY" => Some("3".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.backup_dir, PathBuf::from("/mnt/b"));
        assert_eq!(config.worker.concurrency, 3);
    }

    #[test]
    fn unknown_keys_and_bad_numbers_are_refused() {
        assert!(toml::from_str::<Config>("bakup_dir = \"x\"").is_err());
        let mut config = Config::default();
        let err = config.apply_env(|n| (n == "TENANT_MASTER_WORKER_CONCURRENCY").then(|| "many".into())).unwrap_err();
        assert!(err.to_string().contains("whole number"));
    }

    #[test]
    fn plans_may_set_their_own_connection_limit() {
        let config: Config = toml::from_str("[products]\ntenant_max_connections = 10\n[plans.business]\nmax_connections = 40\n").unwrap();
        config.validate().unwrap();
        assert_eq!((config.tenant_max_connections("business"), config.tenant_max_connections("starter")), (40, 10));
        let unknown: Config = toml::from_str("[plans.gold]\nmax_connections = 5\n").unwrap();
        assert!(unknown.validate().unwrap_err().to_string().contains("gold"));
        let zero: Config = toml::from_str("[plans.free]\nmax_connections = 0\n").unwrap();
        assert!(zero.validate().unwrap_err().to_string().contains("lock its tenants out"));
        let huge: Config = toml::from_str("[plans.free]\nmax_connections = 3000000000\n").unwrap();
        assert!(huge.validate().is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/d"), "postgres://u:***@h:5432/d");
        assert_eq!(redact_url("postgres://h/d"), "postgres://h/d");
        assert_eq!(
            redact_url("postgres://h/d?user=root&password=Top@Secret&sslmode=bogus"),
            "postgres://h/d?user=root&password=***&sslmode=bogus"
        );
        assert_eq!(redact_url("postgres://u:p@ss@h/d?application_name=a@b"), "postgres://u:***@h/d?application_name=a@b");
        let config = Config { database_url: "postgres://a:pw@h/d".into(), ..Config::default() };
        assert!(!format!("{config:?}").contains("pw@"));
    }
}
