//! Connections: the control-plane pool and one-off admin connections to tenant hosts.

use std::str::FromStr;

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
    AssertSqlSafe, ConnectOptions, Connection, PgConnection, PgPool,
};

use crate::{
    config::redact_url,
    error::{Context as _, Error, Result},
};

/// Parses a connection URL; statement logging is off so no DDL text reaches the logs.
/// A URL without a user name connects as `PGUSER`, else as the OS user (like psql).
/// On loopback, unless the URL or `PGSSLMODE` asks for TLS, none is tried: there is no
/// wire to protect, and the TLS handshake made every connection ~20x slower (measured:
/// 94 ms against 4 ms), which each job pays several times (locks, admin and operator
/// sessions).
pub fn options(url: &str) -> Result<PgConnectOptions> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(Error::Invalid(format!(
            "database URL {} must start with postgres:// or postgresql:// (Tenant Master runs on PostgreSQL only)",
            redact_url(url)
        )));
    }
    let mut options = PgConnectOptions::from_str(url)
        .map(|o| o.disable_statement_logging().application_name("tenant-master"))
        .map_err(|e| Error::Invalid(format!("database URL {} is not valid: {e}", redact_url(url))))?;
    let tls_asked = url.contains("sslmode=") || std::env::var_os("PGSSLMODE").is_some();
    if !tls_asked && is_loopback(options.get_host()) {
        options = options.ssl_mode(PgSslMode::Disable);
    }
    let has_user = url.split_once("://").is_some_and(|(_, rest)| rest.split('/').next().unwrap_or("").contains('@'));
    if has_user || std::env::var_os("PGUSER").is_some() {
        return Ok(options);
    }
    Ok(match crate::system::os_user() {
        Some(user) => options.username(&user),
        None => options,
    })
}

fn is_loopback(host: &str) -> bool {
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.starts_with('/') || ip.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Pool settings shared by every pool of ours.
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new().max_connections(max_connections).acquire_timeout(std::time::Duration::from_secs(10))
}

/// Opens the control-plane pool. One connection is tried first, within 5 s: a server that
/// is down answers "connection refused" at once, where the pool would retry for its whole
/// acquire timeout and then say only that it timed out.
pub async fn connect_pool(url: &str, max_connections: u32) -> Result<PgPool> {
    let options = options(url)?;
    probe(url, &options).await?;
    pool_options(max_connections)
        .connect_with(options)
        .await
        .context(format!("cannot connect to the control-plane database {}", redact_url(url)))
}

/// One connection to the control-plane database, within 5 s, closed again: its failure in
/// one sentence with the next step.
pub async fn probe(url: &str, options: &PgConnectOptions) -> Result<()> {
    let address = format!("{}:{}", options.get_host(), options.get_port());
    let database = options.get_database().unwrap_or("postgres").to_owned();
    match tokio::time::timeout(std::time::Duration::from_secs(5), PgConnection::connect_with(options)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
        }
        Ok(Err(sqlx::Error::Io(e))) => {
            return Err(Error::Io {
                context: format!("cannot reach PostgreSQL at {address} (is it running? is DATABASE_URL right?)"),
                source: e,
            })
        }
        Ok(Err(e)) if crate::error::sqlstate(&e).as_deref() == Some("3D000") => {
            return Err(Error::NotFound(format!(
                "the control-plane database {database} does not exist on {address}: `tenantctl migrate` creates it, or fix DATABASE_URL"
            )))
        }
        Ok(Err(e)) => return Err(e).context(format!("cannot connect to the control-plane database {}", redact_url(url))),
        Err(_) => {
            return Err(Error::Busy(format!("PostgreSQL at {address} did not answer within 5 s: is the server or the network overloaded?")))
        }
    }
    Ok(())
}

/// Pins `search_path` to `pg_catalog` for a session that may meet tenant-made objects, so
/// no function, operator or table a tenant named like a built-in is ever resolved for ours.
pub fn pin_search_path(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("search_path", "pg_catalog")])
}

/// Opens a single admin connection to `database` with the given options, `search_path`
/// pinned (see [`pin_search_path`]): what we run there names every object in full.
pub async fn connect_to(options: &PgConnectOptions, database: &str) -> Result<PgConnection> {
    let options = pin_search_path(options.clone().database(database));
    PgConnection::connect_with(&options).await.context(format!(
        "failed to connect to database {database} on {}:{}",
        options.get_host(),
        options.get_port()
    ))
}

/// Whether `database` exists on the server of `conn`.
pub async fn database_exists(conn: &mut PgConnection, database: &str) -> Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(database)
        .fetch_one(conn)
        .await
        .context("failed to look up databases")
}

/// Creates `database` through `conn` unless it exists; true if this call created it.
pub async fn create_database_if_missing(conn: &mut PgConnection, database: &str) -> Result<bool> {
    if database_exists(conn, database).await? {
        return Ok(false);
    }
    // CREATE DATABASE copies template1 and refuses while any session is connected to it
    // (55006: autovacuum, an admin's psql, a tool that defaults to it). That passes within
    // moments: wait for it here rather than fail the job into a backoff of minutes.
    let mut waited = std::time::Duration::ZERO;
    loop {
        match ddl(conn, "CREATE DATABASE %I", &[database]).await {
            Ok(()) => return Ok(true),
            // Someone else created it between our check and our CREATE: what we wanted.
            Err(e) if matches!(e.sqlstate().as_deref(), Some("42P04" | "23505")) => return Ok(false),
            Err(e) if e.sqlstate().as_deref() == Some("55006") && waited < TEMPLATE_BUSY_WAIT => {
                tracing::debug!(database, "template1 is in use: waiting to create the database");
                tokio::time::sleep(TEMPLATE_BUSY_POLL).await;
                waited += TEMPLATE_BUSY_POLL;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How long [`create_database_if_missing`] waits for template1 to be free, and how often it looks.
const TEMPLATE_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
const TEMPLATE_BUSY_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// The text of `template` with `args` quoted in by the server's `format()`; for queries
/// whose identifiers vary while their values stay bind parameters.
pub async fn compose(conn: &mut PgConnection, template: &str, args: &[&str]) -> Result<String> {
    sqlx::query_scalar("SELECT format($1, VARIADIC $2::text[])")
        .bind(template)
        .bind(args)
        .fetch_one(conn)
        .await
        .context(format!("failed to prepare `{template}`"))
}

/// Runs a utility statement (DDL) whose names and values cannot be bind parameters:
/// PostgreSQL's own `format()` quotes them (`%I` identifiers, `%L` literals), and only the
/// template, never a value, appears in errors.
pub async fn ddl(conn: &mut PgConnection, template: &str, args: &[&str]) -> Result<()> {
    let sql = compose(conn, template, args).await?;
    // Composed by the server's format() from a constant template: every argument is quoted.
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await.context(format!("failed to run `{}`", describe(template, args)))?;
    Ok(())
}

/// [`ddl`] for a statement that rewrites a catalog row many jobs share (a GRANT on a shared
/// database): PostgreSQL fails the second of two concurrent updates of one catalog row
/// ("tuple concurrently updated", XX000) instead of waiting, so it is tried again at once,
/// a few times, rather than failing the job into minutes of backoff.
pub async fn ddl_on_shared_row(conn: &mut PgConnection, template: &str, args: &[&str]) -> Result<()> {
    let mut tries = 0;
    loop {
        match ddl(conn, template, args).await {
            Err(e) if tries < 50 && e.sqlstate().as_deref() == Some("XX000") && e.to_string().contains("tuple concurrently updated") => {
                tries += 1;
                let pause = std::time::Duration::from_millis(2 + rand::random::<u64>() % 20);
                tokio::time::sleep(pause).await;
            }
            other => return other,
        }
    }
}

/// `template` with its identifiers filled in and its literals (passwords, markers) left out,
/// for error messages.
fn describe(template: &str, args: &[&str]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut rest = template;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest[i + 1..].chars().next() {
            Some('I') => out.push_str(&crate::naming::quote_ident(args.next().unwrap_or(&"?"))),
            Some('L') => {
                args.next();
                out.push_str("'...'");
            }
            Some(c) => {
                out.push('%');
                out.push(c);
            }
            None => out.push('%'),
        }
        rest = rest.get(i + 2..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// The tenant role's `CONNECTION LIMIT`, set where it differs (an admin statement on the
/// role: no tenant code runs).
pub async fn limit_connections(admin: &mut PgConnection, role: &str, limit: u32) -> Result<()> {
    let current: Option<i32> = sqlx::query_scalar("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_optional(&mut *admin)
        .await
        .context("failed to read the tenant role's connection limit")?;
    let limit =
        i32::try_from(limit).map_err(|_| Error::Invalid(format!("a connection limit of {limit} is more than PostgreSQL allows")))?;
    if current.is_some_and(|c| c != limit) {
        ddl(admin, "ALTER ROLE %I CONNECTION LIMIT %s", &[role, &limit.to_string()]).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_in_errors_name_identifiers_and_hide_literals() {
        assert_eq!(describe("DROP ROLE IF EXISTS %I", &["t_acme"]), "DROP ROLE IF EXISTS \"t_acme\"");
        assert_eq!(
            describe("ALTER ROLE %I WITH LOGIN PASSWORD %L", &["T x", "SCRAM-secret"]),
            "ALTER ROLE \"T x\" WITH LOGIN PASSWORD '...'"
        );
    }

    #[test]
    fn only_postgres_urls() {
        let err = options("mysql://127.0.0.1/x").unwrap_err().to_string();
        assert!(err.contains("must start with postgres://"), "{err}");
        assert!(options("postgresql://127.0.0.1/x").is_ok());
    }

    #[test]
    fn no_tls_on_loopback_unless_asked() {
        if std::env::var_os("PGSSLMODE").is_some() {
            return; // the environment decides then
        }
        for url in ["postgres://127.0.0.1:5432/x", "postgres://localhost/x", "postgres://[::1]:5432/x"] {
            assert!(matches!(options(url).unwrap().get_ssl_mode(), PgSslMode::Disable), "{url}");
        }
        assert!(matches!(options("postgres://127.0.0.1/x?sslmode=require").unwrap().get_ssl_mode(), PgSslMode::Require));
        assert!(matches!(options("postgres://db.example.com/x").unwrap().get_ssl_mode(), PgSslMode::Prefer));
    }
}
