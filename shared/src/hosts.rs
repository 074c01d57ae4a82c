//! Database hosts: the PostgreSQL servers that hold tenant data (`tenant_master.db_hosts`).

use serde::Serialize;
use sqlx::{postgres::PgConnectOptions, PgConnection, PgPool};

use crate::{
    config::Config,
    db,
    error::{Context as _, Error, Result},
    secrets::Keyring,
};

/// The host a new tenant goes to: the one asked for, else the enabled host with the most room.
pub async fn choose(conn: &mut PgConnection, requested: Option<&str>) -> Result<String> {
    if let Some(name) = requested {
        let enabled: Option<bool> = sqlx::query_scalar("SELECT enabled FROM tenant_master.db_hosts WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await
            .context("failed to look up the host")?;
        return match enabled {
            Some(true) => Ok(name.to_owned()),
            Some(false) => Err(Error::Conflict(format!(
                "host '{name}' is disabled (no new tenants): choose another, or `tenantctl host enable {name}`"
            ))),
            None => Err(Error::Invalid(format!("unknown host '{name}': see `tenantctl host list`"))),
        };
    }
    sqlx::query_scalar(
        "SELECT h.name FROM tenant_master.db_hosts h
         WHERE h.enabled
         ORDER BY h.capacity - (SELECT count(*) FROM tenant_master.tenants t WHERE t.host = h.name AND t.status <> 'deleted') DESC, h.name
         LIMIT 1",
    )
    .fetch_optional(conn)
    .await
    .context("failed to choose a host")?
    .ok_or_else(|| {
        Error::Conflict(
            "no enabled database host: add one with `tenantctl host add NAME --admin-url-env VAR`, or `tenantctl host enable NAME`".into(),
        )
    })
}

/// Admin URL of a host (a secret, stored sealed); the default host uses the control
/// plane's own URL.
pub async fn admin_url(conn: &mut PgConnection, config: &Config, host: &str) -> Result<String> {
    let url: Option<Option<String>> = sqlx::query_scalar("SELECT admin_url FROM tenant_master.db_hosts WHERE name = $1")
        .bind(host)
        .fetch_optional(conn)
        .await
        .context("failed to look up the host")?;
    match url {
        Some(Some(stored)) if Keyring::is_sealed(&stored) => Keyring::load(&config.key_sources())?.open_as(
            &stored,
            &crate::keys::host_seal_context(host),
            &format!("the admin URL of host '{host}'"),
        ),
        // Added by SQL before URLs were sealed; `tenantctl migrate` seals it.
        Some(Some(plain)) => Ok(plain),
        Some(None) => Ok(config.database_url.clone()),
        None => Err(Error::NotFound(format!("unknown host '{host}': see `tenantctl host list`"))),
    }
}

/// A database host as `tenantctl host list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HostInfo {
    /// The host's name.
    pub name: String,
    /// Whether new tenants may go to it.
    pub enabled: bool,
    /// How many tenants it is meant for: new tenants go to the enabled host with the most room.
    pub capacity: i32,
    /// Tenants on it that are not deleted.
    pub tenants: i64,
    /// Whether the server answered its admin URL.
    pub reachable: bool,
    /// The server's version (`server_version`, e.g. `16.4`); none if it did not answer.
    pub server_version: Option<String>,
    /// Why it is not reachable, or what is wrong with its admin role.
    pub problem: Option<String>,
}

/// Checks that `url` reaches a PostgreSQL server whose role may create databases and roles,
/// then registers it as host `name` with its URL sealed. The URL never appears in errors.
pub async fn add(pool: &PgPool, config: &Config, name: &str, url: &str, capacity: i32) -> Result<HostInfo> {
    validate_name(name)?;
    if capacity < 0 {
        return Err(Error::Invalid("--capacity must be 0 or more".into()));
    }
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(Error::Invalid(format!("the admin URL of host '{name}' must start with postgres:// or postgresql://")));
    }
    let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenant_master.db_hosts WHERE name = $1)")
        .bind(name)
        .fetch_one(pool)
        .await
        .context("failed to look up the host")?;
    if taken {
        return Err(Error::Conflict(format!("host '{name}' exists already: see `tenantctl host list`")));
    }
    let options = db::options(url)?;
    let found = probe(&options).await;
    if let Some(problem) = found.problem {
        return Err(Error::Invalid(format!("host '{name}' was not added: {problem}")));
    }
    // The same server under two names would get twice its heavy-job and migration slots.
    if let Some(identity) = &found.identity {
        let others = names(pool, false).await?;
        let mut conn = pool.acquire().await.context("failed to connect to the control-plane database")?;
        for other in others {
            let Ok(other_options) = admin_options(&mut conn, config, &other).await else { continue };
            if probe(&other_options).await.identity.as_ref() == Some(identity) {
                return Err(Error::Conflict(format!(
                    "host '{name}' was not added: it is the same PostgreSQL server as host '{other}' (one server, one host, so its limits count once)"
                )));
            }
        }
    }
    let version = found.version;
    let mut conn = pool.acquire().await.context("failed to connect to the control-plane database")?;
    let sealed = crate::keys::seal(&mut conn, config, url, &crate::keys::host_seal_context(name)).await?;
    drop(conn);
    let inserted =
        sqlx::query("INSERT INTO tenant_master.db_hosts (name, admin_url, capacity) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&sealed)
            .bind(capacity)
            .execute(pool)
            .await
            .context("failed to register the host")?;
    if inserted.rows_affected() == 0 {
        return Err(Error::Conflict(format!("host '{name}' exists already: see `tenantctl host list`")));
    }
    Ok(HostInfo { name: name.to_owned(), enabled: true, capacity, tenants: 0, reachable: true, server_version: version, problem: None })
}

fn validate_name(name: &str) -> Result<()> {
    let ok = (1..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid host name '{}': use 1 to 40 characters a-z, 0-9, '_' and '-', starting with a letter",
            name.escape_debug()
        )))
    }
}

/// No new tenants on host `name` (`false`), or again (`true`); its tenants stay where they are.
pub async fn set_enabled(pool: &PgPool, name: &str, enabled: bool) -> Result<()> {
    let updated = sqlx::query("UPDATE tenant_master.db_hosts SET enabled = $2 WHERE name = $1")
        .bind(name)
        .bind(enabled)
        .execute(pool)
        .await
        .context("failed to update the host")?;
    if updated.rows_affected() == 0 {
        return Err(Error::NotFound(format!("unknown host '{name}': see `tenantctl host list`")));
    }
    Ok(())
}

/// The hosts' names (only the enabled ones, new tenants' choices, if asked), by name.
pub async fn names(pool: &PgPool, enabled_only: bool) -> Result<Vec<String>> {
    sqlx::query_scalar("SELECT name FROM tenant_master.db_hosts WHERE enabled OR NOT $1 ORDER BY name")
        .bind(enabled_only)
        .fetch_all(pool)
        .await
        .context("failed to read the hosts")
}

/// Every host (or the one named), each probed: reachable, server version, admin rights.
pub async fn list(pool: &PgPool, config: &Config, only: Option<&str>) -> Result<Vec<HostInfo>> {
    let rows: Vec<(String, bool, i32, i64)> = sqlx::query_as(
        "SELECT h.name, h.enabled, h.capacity, (SELECT count(*) FROM tenant_master.tenants t WHERE t.host = h.name AND t.status <> 'deleted')
         FROM tenant_master.db_hosts h WHERE $1::text IS NULL OR h.name = $1 ORDER BY h.name",
    )
    .bind(only)
    .fetch_all(pool)
    .await
    .context("failed to list the hosts")?;
    if let (Some(name), true) = (only, rows.is_empty()) {
        return Err(Error::NotFound(format!("unknown host '{name}': see `tenantctl host list`")));
    }
    // The admin settings first, then the control-plane connection goes back to the pool:
    // the probes (up to 5 s each for a host that does not answer) run at once, holding none.
    let mut conn = pool.acquire().await.context("failed to connect to the control-plane database")?;
    let mut options = Vec::new();
    for (name, ..) in &rows {
        options.push(admin_options(&mut conn, config, name).await);
    }
    drop(conn);
    let probes = options.into_iter().map(|options| async move {
        match options {
            Ok(options) => {
                let found = probe(&options).await;
                (found.version, found.problem)
            }
            Err(e) => (None, Some(e.to_string())),
        }
    });
    let found = futures_util::future::join_all(probes).await;
    Ok(rows
        .into_iter()
        .zip(found)
        .map(|((name, enabled, capacity, tenants), (server_version, problem))| HostInfo {
            reachable: server_version.is_some(),
            name,
            enabled,
            capacity,
            tenants,
            server_version,
            problem,
        })
        .collect())
}

/// Refuses, in one sentence, a host that is unknown, disabled or cannot be reached (within
/// 5 s): what a move to it checks before anything is enqueued.
pub async fn ensure_usable(conn: &mut PgConnection, config: &Config, name: &str) -> Result<()> {
    choose(conn, Some(name)).await?;
    let options = admin_options(conn, config, name).await?;
    match probe(&options).await.problem {
        None => Ok(()),
        Some(problem) => Err(Error::Conflict(format!("host '{name}' cannot be used: {problem}; see `tenantctl host check {name}`"))),
    }
}

/// Whether hosts `a` and `b` are surely different servers (their system identifiers
/// differ). Unknown counts as the same: a caller about to drop a tenant's roles on a host it
/// "left" must not reach the server it lives on under another name.
pub async fn surely_different_servers(conn: &mut PgConnection, config: &Config, a: &str, b: &str) -> Result<bool> {
    if a == b {
        return Ok(false);
    }
    let (a_name, b_name) = (a, b);
    let a = probe(&admin_options(conn, config, a).await?).await;
    let b = probe(&admin_options(conn, config, b).await?).await;
    // A host that does not answer says nothing about its identity yet: that passes (a
    // restart, a failover), so the caller tries again later instead of giving up for good.
    // One that answers no (a wrong password, a missing database) stays so: it is said.
    for (name, probe) in [(a_name, &a), (b_name, &b)] {
        if probe.version.is_none() {
            let why = probe.problem.clone().unwrap_or_default();
            return Err(match probe.silent {
                true => Error::Busy(format!("host '{name}' does not answer ({why}): its identity is checked again later")),
                false => Error::Conflict(format!(
                    "host '{name}' refuses its admin connection ({why}): see `tenantctl host check {name}`, fix the host, then retry"
                )),
            });
        }
    }
    Ok(matches!((a.identity, b.identity), (Some(a), Some(b)) if a != b))
}

/// What connecting to a host shows.
struct Probe {
    version: Option<String>,
    problem: Option<String>,
    /// No answer at all (refused, reset, timed out), as opposed to an answer that says no
    /// (a wrong password, a missing database): the first may pass, the second will not.
    silent: bool,
    /// The cluster's system identifier, if the admin role may read it: two hosts with the
    /// same one are the same server.
    identity: Option<String>,
}

/// Connects (within 5 s) and reads the server version, whether the role may create
/// databases and roles, and the cluster's identity.
async fn probe(options: &PgConnectOptions) -> Probe {
    let database = options.get_database().unwrap_or("postgres").to_owned();
    let attempt = async {
        let mut conn = db::connect_to(options, &database).await?;
        let (version, rights): (String, bool) = sqlx::query_as(
            "SELECT current_setting('server_version'), rolsuper OR (rolcreatedb AND rolcreaterole) FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&mut conn)
        .await
        .context("failed to read the server's version")?;
        // A role that may not read it gets no identity; a connection lost meanwhile (a
        // restart) is no answer at all, not an unknown identity.
        let identity: Option<String> =
            match sqlx::query_scalar("SELECT system_identifier::text FROM pg_control_system()").fetch_one(&mut conn).await {
                Ok(identity) => Some(identity),
                Err(e) if e.as_database_error().is_some_and(|d| d.code().is_some_and(|c| c.starts_with("42"))) => None,
                Err(e) => return Err(e).context("failed to read the server's identity"),
            };
        Ok::<_, Error>((version, rights, identity))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), attempt).await {
        Ok(Ok((version, true, identity))) => Probe { version: Some(version), problem: None, silent: false, identity },
        Ok(Ok((version, false, identity))) => Probe {
            version: Some(version),
            problem: Some("its admin role needs CREATEDB and CREATEROLE (or SUPERUSER)".into()),
            silent: false,
            identity,
        },
        Ok(Err(e)) => {
            // Not an answer: no server reply at all, or one about the server's state (class
            // 08 connection, 53 resources, 57 shutting down or starting up).
            let silent = match e.sqlstate() {
                None => matches!(&e, Error::Database { .. }),
                Some(code) => ["08", "53", "57"].iter().any(|class| code.starts_with(class)),
            };
            Probe { version: None, problem: Some(e.to_string()), silent, identity: None }
        }
        Err(_) => Probe {
            version: None,
            problem: Some(format!("no answer from {}:{} within 5 s", options.get_host(), options.get_port())),
            silent: true,
            identity: None,
        },
    }
}

/// Admin connection options of a host.
pub async fn admin_options(conn: &mut PgConnection, config: &Config, host: &str) -> Result<PgConnectOptions> {
    db::options(&admin_url(conn, config, host).await?)
}

/// Opens an admin connection to `database` on `host`.
pub async fn connect(conn: &mut PgConnection, config: &Config, host: &str, database: &str) -> Result<PgConnection> {
    let options = admin_options(conn, config, host).await?;
    db::connect_to(&options, database).await
}

/// Opens an admin connection to the database named in the host's admin URL.
pub async fn connect_admin(conn: &mut PgConnection, config: &Config, host: &str) -> Result<PgConnection> {
    let options = admin_options(conn, config, host).await?;
    let database = options.get_database().unwrap_or("postgres").to_owned();
    db::connect_to(&options, &database).await
}

/// The databases of the server of `admin` that every role may connect to (CONNECT granted
/// to PUBLIC), and so every tenant role: what `tenantctl host lockdown` closes.
pub async fn open_databases(admin: &mut PgConnection) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT d.datname::text FROM pg_database d
         WHERE d.datallowconn AND EXISTS (
             SELECT 1 FROM aclexplode(COALESCE(d.datacl, acldefault('d', d.datdba))) a
             WHERE a.grantee = 0 AND a.privilege_type = 'CONNECT')
         ORDER BY 1",
    )
    .fetch_all(admin)
    .await
    .context("failed to read who may connect to which database")
}

/// Takes CONNECT and TEMPORARY away from PUBLIC on each of `databases` (the list the admin
/// was shown and agreed to: one made since is not touched) that is still open, keeping
/// CONNECT for the admin role itself; returns the databases closed. Other roles that need
/// one of them must be granted CONNECT by name afterwards.
pub async fn lock_down(admin: &mut PgConnection, databases: &[String]) -> Result<Vec<String>> {
    let open = open_databases(admin).await?;
    let to_close: Vec<String> = databases.iter().filter(|d| open.contains(d)).cloned().collect();
    for database in &to_close {
        db::ddl(admin, "GRANT CONNECT ON DATABASE %I TO CURRENT_USER", &[database]).await?;
        db::ddl(admin, "REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC", &[database]).await?;
    }
    Ok(to_close)
}
