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
        match lock_within(&mut conn, TENANT_LOCK_CLASS, slug, wait).await? {
            true => Ok(TenantLock { conn }),
            false => {
                Err(Error::Busy(format!("tenant '{slug}' is busy with another job (waited {}s); this job will be retried", wait.as_secs())))
            }
        }
    }

    /// Whether the connection holding the lock (and so the lock) is still there.
    pub async fn held(&mut self) -> bool {
        alive(&mut self.conn).await
    }

    /// For a lock whose holder checks it every 2 s (a job's): the server ends it if its
    /// holder hangs (see `end_when_forgotten`).
    pub async fn watched(&mut self, config: &Config) -> Result<()> {
        end_when_forgotten(&mut self.conn, config).await
    }

    /// Releases the lock by closing its connection.
    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}

/// A lock lives as long as its connection. A worker that hangs (or loses its network)
/// while holding one would keep it until the server notices the dead peer, which can take
/// hours; the server ends the session instead once it has been idle this long. Only for
/// a job's slot and lock: a job uses them every 2 s (see `jobs::watch`), or waits at most
/// `tenant_lock_wait_secs` between taking its slot and its lock.
async fn end_when_forgotten(conn: &mut PgConnection, config: &Config) -> Result<()> {
    let idle = Duration::from_secs(config.worker.tenant_lock_wait_secs + 60);
    sqlx::query("SELECT set_config('idle_session_timeout', $1, false)")
        .bind(format!("{}ms", idle.as_millis()))
        .execute(conn)
        .await
        .context("failed to set idle_session_timeout")?;
    Ok(())
}

/// A round trip on `conn`, within 5 s.
async fn alive(conn: &mut PgConnection) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(5), sqlx::query("SELECT 1").execute(&mut *conn)).await, Ok(Ok(_)))
}

/// First half of the advisory keys of heavy-job slots: "tmhs" (Tenant Master host slot).
const HOST_SLOT_CLASS: i32 = 0x746d_6873;
/// The door in front of a host's slots: "tmhd". Waiters queue on it in PostgreSQL's lock
/// queue, first come first served, and only the one at the door looks for a free slot.
const HOST_DOOR_CLASS: i32 = 0x746d_6864;
/// One heavy job per tenant, running or waiting for a slot: "tmht" (host ticket).
const TENANT_TICKET_CLASS: i32 = 0x746d_6874;

/// What a host slot is for: each kind has its own number of slots per host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// Dumps, restores, maintenance, deletes: `heavy_jobs_per_host`.
    Heavy,
    /// Product migrations of a rollout: `migrations_per_host`.
    Migration,
}

/// One of the slots of a database host, held until dropped, so a fan-out over hundreds of
/// tenants runs at most that many dumps, restores or migrations per server, across all
/// worker processes.
///
/// The rule between tenants: a tenant has at most one job holding or waiting for a slot
/// (its next one is postponed, at no attempt's cost), and slots go to the jobs that have
/// waited longest. So one tenant's slow jobs take one slot at most, and every other
/// tenant's nightly backup gets its turn.
pub struct HostSlot {
    conn: PgConnection,
}

impl HostSlot {
    /// Waits for a free heavy-job slot of `host`, for no tenant in particular (a move
    /// takes its target's slot while its job holds the tenant's ticket on the source).
    pub async fn acquire(config: &Config, host: &str) -> Result<HostSlot> {
        HostSlot::acquire_kind(config, host, SlotKind::Heavy, None).await
    }

    /// Waits for a free slot of `kind` on `host` for the job of `tenant`; [`Error::Busy`]
    /// at once if that tenant already has a job holding or waiting for a slot, and after
    /// `heavy_slot_wait_secs` if no slot came free.
    pub async fn acquire_kind(config: &Config, host: &str, kind: SlotKind, tenant: Option<&str>) -> Result<HostSlot> {
        let options = db::options(&config.database_url)?;
        let mut conn = PgConnection::connect_with(&options).await.context("failed to open the host slot connection")?;
        // A job's slot is watched (see `end_when_forgotten`); a move's second slot is not.
        if tenant.is_some() {
            end_when_forgotten(&mut conn, config).await?;
        }
        let started = std::time::Instant::now();
        let wait = Duration::from_secs(config.worker.heavy_slot_wait_secs);
        let (slots, label, what) = match kind {
            SlotKind::Heavy => (config.worker.heavy_jobs_per_host, "", "heavy jobs"),
            SlotKind::Migration => (config.worker.migrations_per_host, "migrate:", "migrations"),
        };
        let busy = || {
            Error::Busy(format!(
                "host '{host}' had no free slot for {what} for {}s (or no turn in the queue for one); will retry",
                wait.as_secs()
            ))
        };
        if let Some(slug) = tenant {
            if !try_lock(&mut conn, TENANT_TICKET_CLASS, slug).await? {
                return Err(Error::Busy(format!(
                    "tenant '{slug}' already has a job holding or waiting for a host slot; one at a time per tenant, this one will be retried"
                )));
            }
        }
        // In line at the door (the lock queue is first come, first served).
        let door = format!("{host}:{label}door");
        if !lock_within(&mut conn, HOST_DOOR_CLASS, &door, wait).await? {
            return Err(busy());
        }
        let taken = loop {
            let mut got = false;
            for slot in 0..slots.max(1) {
                if try_lock(&mut conn, HOST_SLOT_CLASS, &format!("{host}:{label}{slot}")).await? {
                    got = true;
                    break;
                }
            }
            if got || started.elapsed() > wait {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
            .bind(HOST_DOOR_CLASS)
            .bind(&door)
            .execute(&mut conn)
            .await
            .context("failed to leave the host slot's queue")?;
        match taken {
            true => Ok(HostSlot { conn }),
            false => Err(busy()),
        }
    }

    /// Whether the connection holding the slot (and so the slot) is still there.
    pub async fn held(&mut self) -> bool {
        alive(&mut self.conn).await
    }

    /// Frees the slot by closing its connection.
    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}

/// Waits up to `wait` for the session-level advisory lock (`class`, `key`) on `conn`
/// (the session's `lock_timeout` bounds the wait); false if it did not come.
async fn lock_within(conn: &mut PgConnection, class: i32, key: &str, wait: Duration) -> Result<bool> {
    sqlx::query("SELECT set_config('lock_timeout', $1, false)")
        .bind(format!("{}ms", wait.as_millis().max(1)))
        .execute(&mut *conn)
        .await
        .context("failed to set lock_timeout")?;
    match sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))").bind(class).bind(key).execute(conn).await {
        Ok(_) => Ok(true),
        Err(e) if crate::error::sqlstate(&e).as_deref() == Some("55P03") => Ok(false),
        Err(e) => Err(e).context("failed to take an advisory lock"),
    }
}

async fn try_lock(conn: &mut PgConnection, class: i32, key: &str) -> Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(class)
        .bind(key)
        .fetch_one(conn)
        .await
        .context("failed to take a host slot")
}
