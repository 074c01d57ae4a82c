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
