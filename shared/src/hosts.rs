//! Database hosts: the PostgreSQL servers that hold tenant data (`tenant_master.db_hosts`).

use sqlx::{postgres::PgConnectOptions, PgConnection};

use crate::{
    config::Config,
    db,
    error::{Context as _, Error, Result},
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
            Some(false) => Err(Error::Conflict(format!("host '{name}' is disabled"))),
            None => Err(Error::Invalid(format!("unknown host '{name}'"))),
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
    .ok_or_else(|| Error::Conflict("no enabled database host: add one to tenant_master.db_hosts".into()))
}

/// Admin URL of a host (a secret); the default host uses the control plane's own URL.
pub async fn admin_url(conn: &mut PgConnection, config: &Config, host: &str) -> Result<String> {
    let url: Option<Option<String>> = sqlx::query_scalar("SELECT admin_url FROM tenant_master.db_hosts WHERE name = $1")
        .bind(host)
        .fetch_optional(conn)
        .await
        .context("failed to look up the host")?;
    match url {
        Some(Some(url)) => Ok(url),
        Some(None) => Ok(config.database_url.clone()),
        None => Err(Error::NotFound(format!("unknown host '{host}'"))),
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

/// Takes CONNECT and TEMPORARY on every open database away from PUBLIC, keeping CONNECT
/// for the admin role itself; returns the databases closed. Other roles that need one of
/// them must be granted CONNECT by name afterwards.
pub async fn lock_down(admin: &mut PgConnection) -> Result<Vec<String>> {
    let open = open_databases(admin).await?;
    for database in &open {
        db::ddl(admin, "GRANT CONNECT ON DATABASE %I TO CURRENT_USER", &[database]).await?;
        db::ddl(admin, "REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC", &[database]).await?;
    }
    Ok(open)
}
