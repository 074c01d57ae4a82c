//! The per-tenant lock: two lifecycle jobs of one tenant never run at once.
//!
//! A session-level advisory lock on a connection of its own: if the worker dies, the
//! connection closes and PostgreSQL releases the lock, so a crash never strands a tenant.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

use crate::{
    config::Config,
    db,
    error::{Context as _, Error, Result},
};

/// First half of the advisory key: "tmtl" (Tenant Master tenant lock).
const TENANT_LOCK_CLASS: i32 = 0x746d_746c;

/// Holds a tenant's lock until dropped or released.
pub struct TenantLock {
    conn: PgConnection,
}

impl TenantLock {
    /// Waits up to `tenant_lock_wait_secs` for the tenant's lock; [`Error::Busy`] after that.
    pub async fn acquire(config: &Config, slug: &str) -> Result<TenantLock> {
        let options = db::options(&config.database_url)?;
        let mut conn = PgConnection::connect_with(&options).await.context("failed to open the tenant lock connection")?;
        let wait = Duration::from_secs(config.worker.tenant_lock_wait_secs);
        sqlx::query("SELECT set_config('lock_timeout', $1, false)")
            .bind(format!("{}ms", wait.as_millis().max(1)))
            .execute(&mut conn)
            .await
            .context("failed to set lock_timeout")?;
        let locked = sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))").bind(TENANT_LOCK_CLASS).bind(slug).execute(&mut conn).await;
        match locked {
            Ok(_) => Ok(TenantLock { conn }),
            Err(e) if crate::error::sqlstate(&e).as_deref() == Some("55P03") => {
                Err(Error::Busy(format!("tenant '{slug}' is busy with another job (waited {}s); this job will be retried", wait.as_secs())))
            }
            Err(e) => Err(e).context("failed to take the tenant lock"),
        }
    }

    /// Releases the lock by closing its connection.
    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}

/// First half of the advisory keys of heavy-job slots: "tmhs" (Tenant Master host slot).
const HOST_SLOT_CLASS: i32 = 0x746d_6873;

/// One of the `heavy_jobs_per_host` slots of a database host, held until dropped, so a
/// fan-out over hundreds of tenants runs at most that many dumps or restores per server,
/// across all worker processes.
pub struct HostSlot {
    conn: PgConnection,
}

impl HostSlot {
    /// Waits for a free slot of `host`; [`Error::Busy`] after `heavy_slot_wait_secs`.
    pub async fn acquire(config: &Config, host: &str) -> Result<HostSlot> {
        let options = db::options(&config.database_url)?;
        let mut conn = PgConnection::connect_with(&options).await.context("failed to open the host slot connection")?;
        let started = std::time::Instant::now();
        let wait = Duration::from_secs(config.worker.heavy_slot_wait_secs);
        loop {
            for slot in 0..config.worker.heavy_jobs_per_host.max(1) {
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
                    .bind(HOST_SLOT_CLASS)
                    .bind(format!("{host}:{slot}"))
                    .fetch_one(&mut conn)
                    .await
                    .context("failed to take a host slot")?;
                if got {
                    return Ok(HostSlot { conn });
                }
            }
            if started.elapsed() > wait {
                return Err(Error::Busy(format!("host '{host}' had no free slot for heavy jobs for {}s; will retry", wait.as_secs())));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Frees the slot by closing its connection.
    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}
