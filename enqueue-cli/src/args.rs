//! The command line.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

/// Administer Tenant Master: tenants, jobs and the control plane.
#[derive(Parser)]
#[command(name = "tenantctl", version, about)]
pub struct Cli {
    /// Control-plane database URL (prefer the DATABASE_URL variable: argv is visible to other users).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// TOML configuration file.
    #[arg(long, global = true, env = "TENANT_MASTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print one JSON value instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create or upgrade the control-plane database (ours and the queue's migrations).
    Migrate,
    /// Check the database, migrations, client tools, backup and mail settings, and whether
    /// the server has connections enough for the workers.
    Check {
        /// How many tenant-worker processes will run against this database (for the
        /// connection budget).
        #[arg(long, default_value_t = 1)]
        workers: u32,
    },
    /// Create, list and inspect tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Back up and restore tenants.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// VACUUM / ANALYZE / REINDEX and cleanup of old rows.
    Maintenance(MaintenanceArgs),
    /// The scheduler's schedules.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Inspect, retry and cancel jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The secret key that seals tenant passwords at rest.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Database hosts.
    #[command(subcommand)]
    Host(HostCommand),
    /// The admin panel (a web UI over the same calls as these commands) and its users.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Serve the admin panel until SIGTERM or Ctrl-C. It speaks plain HTTP: put a TLS proxy in front
    /// of it for anything but 127.0.0.1 (see the README, "Admin panel").
    Serve {
        /// Address to listen on.
        #[arg(long, env = "TENANT_MASTER_ADMIN_LISTEN", default_value = "127.0.0.1:8001")]
        listen: String,
        /// A TLS proxy is in front: take the client address from X-Forwarded-For and the
        /// scheme from X-Forwarded-Proto (session cookies become Secure over https).
        #[arg(long, env = "TENANT_MASTER_ADMIN_BEHIND_PROXY")]
        behind_proxy: bool,
    },
    /// Add, list and remove the panel's users.
    #[command(subcommand)]
    User(AdminUserCommand),
}

#[derive(Subcommand)]
pub enum AdminUserCommand {
    /// Add a user; the password is read from TENANT_MASTER_ADMIN_PASSWORD or stdin (never argv).
    Add {
        /// The user's name (a-z first, then a-z, 0-9, '_', '.', '-').
        name: String,
        /// admin (may act) or viewer (sees everything, changes nothing).
        #[arg(long)]
        role: String,
    },
    /// Set a user's password (from TENANT_MASTER_ADMIN_PASSWORD or stdin); ends their sessions.
    Password {
        /// The user's name.
        name: String,
    },
    /// Remove a user; ends their sessions.
    Remove {
        /// The user's name.
        name: String,
    },
    /// List the users and their roles.
    List,
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Write a new random key to a file (mode 0600, missing folders made 0700) that must
    /// not exist yet.
    Generate {
        /// Where to write it (default: the configured secret_key_file); then point
        /// TENANT_MASTER_SECRET_KEY_FILE at it.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Re-seal every tenant password under the current key, opening old rows with
    /// TENANT_MASTER_OLD_SECRET_KEY_FILE.
    Rotate,
}

#[derive(Subcommand)]
pub enum HostCommand {
    /// Register a PostgreSQL server for tenants. Its admin URL (a role with CREATEDB and
    /// CREATEROLE) comes from an environment variable or a file, never from argv, and is
    /// stored sealed with the secret key.
    Add {
        /// The host's name (a-z, 0-9, '_', '-').
        name: String,
        /// Name of the environment variable holding the admin URL.
        #[arg(long, conflicts_with = "admin_url_file", required_unless_present = "admin_url_file")]
        admin_url_env: Option<String>,
        /// File holding the admin URL (first line).
        #[arg(long)]
        admin_url_file: Option<std::path::PathBuf>,
        /// How many tenants it takes (new tenants go to the host with most room).
        #[arg(long, default_value_t = 1000)]
        capacity: i32,
    },
    /// Hosts with their tenants, capacity, reachability and server version.
    List,
    /// No new tenants and no moves to a host (its tenants stay).
    Disable {
        /// The host's name (see `tenantctl host list`).
        name: String,
    },
    /// New tenants may go to a host again.
    Enable {
        /// The host's name (see `tenantctl host list`).
        name: String,
    },
    /// Probe one host: reachable, server version, admin rights, databases open to every role.
    Check {
        /// The host's name (see `tenantctl host list`).
        name: String,
    },
    /// Take CONNECT away from PUBLIC on every database of a host that all roles may reach,
    /// so tenant roles reach their own database only (`tenantctl check` lists them). It
    /// lists the databases, other projects' included, and asks first.
    Lockdown {
        /// The host's name in tenant_master.db_hosts (`default` is the control plane's server).
        name: String,
        /// Do not ask: roles other than tenants that rely on PUBLIC must then be granted CONNECT by name.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Register a tenant and enqueue its provisioning.
    Create(CreateArgs),
    /// List tenants.
    List {
        /// Only tenants with this status: provisioning, active, paused, suspended, deleting, deleted or failed.
        #[arg(long)]
        status: Option<String>,
        /// Only tenants of this product (see `tenantctl check`).
        #[arg(long)]
        product: Option<String>,
        /// Only tenants on this plan: free, starter, business, enterprise or lifetime.
        #[arg(long)]
        plan: Option<String>,
        /// Only tenants on this database host (see `tenantctl host list`).
        #[arg(long)]
        host: Option<String>,
        /// Only tenants whose slug or owner e-mail contains this text (any case).
        #[arg(long)]
        search: Option<String>,
        /// Only tenants behind their product's migrations.
        #[arg(long)]
        outdated: bool,
    },
    /// Put a tenant on another plan; kept in its plan history. free, starter and business
    /// share a database, enterprise and lifetime have their own: a change between the two
    /// (or to another --host) moves the tenant's data (a MoveTenant job) and the plan
    /// changes when the data has moved.
    ChangePlan {
        /// The tenant's slug.
        slug: String,
        /// free, starter, business, enterprise or lifetime.
        plan: String,
        /// Move the tenant to this database host too (see `tenantctl host list`).
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        request: Request,
    },
    /// Move a tenant to another database host, keeping its plan: copied, verified, switched
    /// over (its login held meanwhile); the source copy is kept for `[moves] keep_source_hours`.
    Move {
        /// The tenant's slug.
        slug: String,
        /// The database host to move to (see `tenantctl host list`).
        #[arg(long)]
        host: String,
        #[command(flatten)]
        request: Request,
    },
    /// Roll a product's new migrations out to existing tenants: one MigrateTenant job per
    /// tenant with something pending (a canary: name slugs or use --limit; then --all).
    Migrate(MigrateArgs),
    /// Show one tenant and its recent history.
    Show {
        /// The tenant's slug.
        slug: String,
    },
    /// Print the tenant role's connection URL (contains its password).
    Credentials {
        /// The tenant's slug.
        slug: String,
    },
    /// Pause a tenant: its role can no longer log in and its sessions end.
    Pause {
        /// The tenant's slug.
        slug: String,
        /// Why, for the tenant's status and the activity log.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        request: Request,
    },
    /// Suspend a tenant (billing, abuse): like pause, with a reason.
    Suspend {
        /// The tenant's slug.
        slug: String,
        /// Why (billing, abuse), for the tenant's status and the activity log.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        request: Request,
    },
    /// Give a paused or suspended tenant its login back.
    Resume {
        /// The tenant's slug.
        slug: String,
        #[command(flatten)]
        request: Request,
    },
    /// Delete a tenant: a verified backup first, then its data and role.
    Delete {
        /// The tenant's slug.
        slug: String,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        request: Request,
    },
}

#[derive(Args)]
pub struct MigrateArgs {
    /// The tenants to migrate (e.g. a canary); or --all.
    pub slugs: Vec<String>,
    /// Every live tenant (active, paused, suspended) matching the filters.
    #[arg(long)]
    pub all: bool,
    /// Only tenants of this product.
    #[arg(long)]
    pub product: Option<String>,
    /// Only tenants on this plan.
    #[arg(long)]
    pub plan: Option<String>,
    /// Only tenants on this database host.
    #[arg(long)]
    pub host: Option<String>,
    /// At most this many tenants with something pending.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Migrate up to this version (default: the product's latest).
    #[arg(long)]
    pub to: Option<i64>,
    /// List, per tenant, the migrations that would run; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait for every job, with progress; exit 1 if any tenant failed.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: stop waiting after this long (90s, 10m, 2h) and exit 3; the job goes on.
    #[arg(long, requires = "wait", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Who is asking, for the activity log (default: the OS user).
    #[arg(long)]
    pub actor: Option<String>,
}

/// Options of every command that enqueues a job.
#[derive(Args)]
pub struct Request {
    /// Who is asking, for the activity log (default: the OS user).
    #[arg(long)]
    pub actor: Option<String>,
    /// Wait for the job; exit 1 if it fails.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: stop waiting after this long (90s, 10m, 2h) and exit 3; the job goes on.
    #[arg(long, requires = "wait", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
}

#[derive(Args)]
pub struct CreateArgs {
    /// The tenant's slug: 3 to 40 characters of a-z, 0-9 and '_', starting with a letter;
    /// no '__', no trailing '_', not starting with 'pg_'. It names the tenant's role and schema.
    pub slug: String,
    /// The product whose schema the tenant gets (a folder under products_dir, e.g. demo).
    #[arg(long)]
    pub product: String,
    /// free, starter, business (shared database) or enterprise, lifetime (own database).
    #[arg(long)]
    pub plan: String,
    /// The owner's e-mail address: the welcome mail goes there.
    #[arg(long)]
    pub owner_email: String,
    /// Display name (defaults to the slug).
    #[arg(long)]
    pub name: Option<String>,
    /// Database host (a name in tenant_master.db_hosts); default: the one with most room.
    #[arg(long)]
    pub host: Option<String>,
    /// Who is asking, for the activity log (default: the OS user).
    #[arg(long)]
    pub actor: Option<String>,
    /// Wait until the tenant is provisioned; exit 1 if provisioning fails.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: stop waiting after this long (90s, 10m, 2h) and exit 3; the job goes on.
    #[arg(long, requires = "wait", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
}

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Enqueue a manual backup of tenants.
    Create {
        /// Tenants to back up.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        slugs: Vec<String>,
        /// Every active, paused or suspended tenant.
        #[arg(long)]
        all: bool,
        /// Routine backups to keep per tenant (default: the plan's or the configured number).
        #[arg(long)]
        keep: Option<u32>,
        /// Who is asking, for the activity log (default: the OS user).
        #[arg(long)]
        actor: Option<String>,
        /// Wait for the backups; exit 1 if one fails.
        #[arg(long)]
        wait: bool,
        /// With --wait: stop waiting after this long (90s, 10m, 2h) and exit 3; the job goes on.
        #[arg(long, requires = "wait", value_parser = parse_duration, value_name = "DURATION")]
        timeout: Option<Duration>,
    },
    /// List a tenant's backups, newest first.
    List {
        /// The tenant's slug.
        slug: String,
    },
    /// Replace a tenant's live data with a backup (a safety backup is taken first): name
    /// the backup with --backup ID, or take the newest routine one with --latest.
    #[command(group = clap::ArgGroup::new("which").required(true).args(["latest", "backup"]))]
    Restore {
        /// The tenant's slug.
        slug: String,
        /// The newest finished routine (scheduled or manual) backup.
        #[arg(long)]
        latest: bool,
        /// A backup id from `backup list`.
        #[arg(long)]
        backup: Option<i64>,
        /// Confirm replacing the live data.
        #[arg(long)]
        yes: bool,
        /// Who is asking, for the activity log (default: the OS user).
        #[arg(long)]
        actor: Option<String>,
        /// Wait for the restore; exit 1 if it fails.
        #[arg(long)]
        wait: bool,
        /// With --wait: stop waiting after this long (90s, 10m, 2h) and exit 3; the job goes on.
        #[arg(long, requires = "wait", value_parser = parse_duration, value_name = "DURATION")]
        timeout: Option<Duration>,
    },
}

#[derive(Args)]
pub struct MaintenanceArgs {
    /// Tenants to maintain.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub slugs: Vec<String>,
    /// Every active, paused or suspended tenant.
    #[arg(long)]
    pub all: bool,
    /// VACUUM the tenant's tables.
    #[arg(long)]
    pub vacuum: bool,
    /// VACUUM FULL (rewrites tables under exclusive locks).
    #[arg(long)]
    pub full: bool,
    /// ANALYZE the tenant's tables (with --vacuum: VACUUM ANALYZE).
    #[arg(long)]
    pub analyze: bool,
    /// REINDEX SCHEMA CONCURRENTLY.
    #[arg(long)]
    pub reindex: bool,
    /// Delete rows older than --days from the product's prunable tables.
    #[arg(long, requires = "days")]
    pub cleanup: bool,
    /// With --cleanup: rows older than this many days go.
    #[arg(long, requires = "cleanup")]
    pub days: Option<u32>,
    /// With --cleanup: only count what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// Take a backup of each tenant before touching it.
    #[arg(long)]
    pub backup_first: bool,
    /// Who is asking, for the activity log (default: the OS user).
    #[arg(long)]
    pub actor: Option<String>,
    /// Wait for the jobs; exit 1 if one fails.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: stop waiting after this long (90s, 10m, 2h) and exit 3; the job goes on.
    #[arg(long, requires = "wait", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
}

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// The schedules and their next run.
    List,
    /// Enqueue one schedule's fan-out for a slot, once per slot (the scheduler's own keys).
    Run {
        /// The schedule's name (see `tenantctl schedule list`).
        name: String,
        /// The slot, e.g. 2026-11-23T02:00:00Z (default: the latest slot).
        #[arg(long)]
        slot: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        /// pending, running, done, failed (will retry) or dead (gave up).
        #[arg(long)]
        status: Option<String>,
        /// A job type, e.g. BackupTenant.
        #[arg(long = "type")]
        job_type: Option<String>,
        /// Only jobs of this tenant (its slug).
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// One job: payload, attempts, last error, times.
    Show {
        /// The job's id (from `tenantctl jobs list`).
        id: String,
    },
    /// Run failed or dead jobs again now, with a fresh attempt budget.
    Retry {
        /// The jobs' ids (from `tenantctl jobs list`); or --failed.
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        ids: Vec<String>,
        /// Every failed and dead job (of --type, if given).
        #[arg(long)]
        failed: bool,
        /// With --failed: only jobs of this type, e.g. BackupTenant.
        #[arg(long = "type", requires = "failed")]
        job_type: Option<String>,
        /// With --failed: only jobs of this tenant (its slug).
        #[arg(long, requires = "failed")]
        tenant: Option<String>,
        /// Follow the retried jobs until they end; exit 1 if one fails again.
        #[arg(long)]
        wait: bool,
        /// With --wait: stop waiting after this long (e.g. 90s, 10m); the jobs go on (exit 3).
        #[arg(long, value_parser = parse_duration, requires = "wait")]
        timeout: Option<Duration>,
    },
    /// Cancel jobs that have not started (pending, failed or dead): they stay listed as
    /// cancelled and are never run. By filter, the count is shown and asked first.
    Cancel {
        /// The jobs' ids (from `tenantctl jobs list`); or --pending / --failed.
        #[arg(required_unless_present_any = ["pending", "failed"], conflicts_with_all = ["pending", "failed"])]
        ids: Vec<String>,
        /// Every pending job (of --type / --tenant, if given); running jobs are not touched.
        #[arg(long)]
        pending: bool,
        /// Every failed and dead job (of --type / --tenant, if given).
        #[arg(long)]
        failed: bool,
        /// With --pending or --failed: only jobs of this type, e.g. BackupTenant.
        #[arg(long = "type", conflicts_with = "ids")]
        job_type: Option<String>,
        /// With --pending or --failed: only jobs of this tenant (its slug).
        #[arg(long, conflicts_with = "ids")]
        tenant: Option<String>,
        /// With --pending or --failed: do not ask (needed without a terminal).
        #[arg(long, conflicts_with = "ids")]
        yes: bool,
        /// Who is asking, for the activity log (default: the OS user).
        #[arg(long)]
        actor: Option<String>,
    },
}

/// `90s`, `10m`, `2h` or a number of seconds.
fn parse_duration(raw: &str) -> Result<Duration, String> {
    let (number, unit) = raw.find(|c: char| !c.is_ascii_digit()).map_or((raw, ""), |i| raw.split_at(i));
    let n: u64 = number.parse().map_err(|_| format!("'{raw}' is not a duration: write e.g. 90s, 10m or 2h"))?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => return Err(format!("'{raw}' is not a duration: write e.g. 90s, 10m or 2h")),
    }
    .ok_or_else(|| format!("'{raw}' is longer than any wait"))?;
    if secs == 0 {
        return Err("the timeout must be longer than 0 s".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--help` describes every command and argument.
    #[test]
    fn every_argument_is_described() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if arg.get_help().is_none() && !matches!(arg.get_id().as_str(), "help" | "version") {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "tenantctl", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:?}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("soon").is_err() && parse_duration("5d").is_err() && parse_duration("0s").is_err());
        assert!(parse_duration("9999999999999999h").is_err());
    }
}
