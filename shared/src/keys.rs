//! Keeping secrets sealed (tenant passwords, the admin URLs of added hosts): sealing
//! plaintext rows left from before encryption (`tenantctl migrate`) and re-sealing every
//! row under a new key (`tenantctl key rotate`).

use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};

use crate::{
    config::Config,
    error::{Context as _, Error, Result},
    secrets::Keyring,
};

/// What a rotation did.
#[derive(Debug, Default, Serialize)]
pub struct Rotation {
    /// The key every password is sealed with now.
    pub key_id: String,
    /// Rows re-sealed by this run.
    pub resealed: usize,
    /// Rows that were sealed with the current key already.
    pub unchanged: usize,
}

/// Where a sealed secret lives.
enum Row {
    Tenant(i64),
    Host(String),
}

/// A stored secret: where, what it is bound to (the seal's context), how errors name it,
/// and the stored value (sealed, or plaintext from before encryption).
struct Stored {
    row: Row,
    context: String,
    what: String,
    value: String,
}

/// Every stored secret: tenant passwords and the admin URLs of added hosts, locked.
async fn stored_secrets(tx: &mut PgConnection) -> Result<Vec<Stored>> {
    let tenants: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, slug, role_password FROM tenant_master.tenants WHERE role_password IS NOT NULL ORDER BY id FOR UPDATE")
            .fetch_all(&mut *tx)
            .await
            .context("failed to read the stored tenant passwords")?;
    let hosts: Vec<(String, String)> =
        sqlx::query_as("SELECT name, admin_url FROM tenant_master.db_hosts WHERE admin_url IS NOT NULL ORDER BY name FOR UPDATE")
            .fetch_all(&mut *tx)
            .await
            .context("failed to read the stored host URLs")?;
    let tenants = tenants.into_iter().map(|(id, slug, value)| Stored {
        row: Row::Tenant(id),
        what: format!("the password of tenant '{slug}'"),
        context: slug,
        value,
    });
    let hosts = hosts.into_iter().map(|(name, value)| Stored {
        context: host_seal_context(&name),
        what: format!("the admin URL of host '{name}'"),
        row: Row::Host(name),
        value,
    });
    Ok(tenants.chain(hosts).collect())
}

async fn store(tx: &mut PgConnection, row: &Row, sealed: &str) -> Result<()> {
    let query = match row {
        Row::Tenant(id) => sqlx::query("UPDATE tenant_master.tenants SET role_password = $2 WHERE id = $1").bind(*id),
        Row::Host(name) => sqlx::query("UPDATE tenant_master.db_hosts SET admin_url = $2 WHERE name = $1").bind(name),
    };
    query.bind(sealed).execute(tx).await.context("failed to store a sealed secret")?;
    Ok(())
}

/// What a host's sealed admin URL is bound to (no slug has a ':', so none can open it).
pub fn host_seal_context(host: &str) -> String {
    format!("host:{host}")
}

/// Seals `plaintext` for `context` (a tenant's slug, or a host's seal context) with the
/// configured key, which must be one the control plane knows ([`ensure_known`]).
pub async fn seal(conn: &mut PgConnection, config: &Config, plaintext: &str, context: &str) -> Result<String> {
    let keys = Keyring::load(&config.key_sources())?;
    ensure_known(conn, keys.current()?.id()).await?;
    keys.seal(plaintext, context)
}

/// Refuses a key the control plane does not know: it may seal only with a key that sealed
/// its rows before (`tenant_master.secret_keys`), or with any key while nothing is sealed
/// yet (that key is then the one). A second key made by mistake would seal tenants no
/// worker can open.
pub async fn ensure_known(conn: &mut PgConnection, key_id: &str) -> Result<()> {
    let mut tx = Connection::begin(&mut *conn).await.context("failed to start a transaction")?;
    // The first key of a control plane: one process at a time, so two with different keys
    // cannot both be first.
    if !is_held(&mut tx, key_id).await? {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(FIRST_KEY_LOCK)
            .execute(&mut *tx)
            .await
            .context("failed to lock the secret keys")?;
        if check_known(&mut tx, key_id).await?.is_empty() {
            record_key(&mut tx, key_id).await?;
        }
        if !is_held(&mut tx, key_id).await? {
            // Retired by a rotation that committed meanwhile.
            check_known(&mut tx, key_id).await?;
        }
    }
    tx.commit().await.context("failed to commit the secret key")
}

/// Serializes first keys ("tmkey").
const FIRST_KEY_LOCK: i64 = 0x0074_6d6b_6579;

/// Whether `key_id` is a live key of the control plane, its row then share-locked to the end
/// of the caller's transaction (if it has one): a rotation retires the key only after that
/// transaction is over, and then re-seals what it wrote.
async fn is_held(conn: &mut PgConnection, key_id: &str) -> Result<bool> {
    let held: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM tenant_master.secret_keys WHERE key_id = $1 AND retired_at IS NULL FOR SHARE")
            .bind(key_id)
            .fetch_optional(&mut *conn)
            .await
            .context("failed to read the known secret keys")?;
    Ok(held.is_some())
}

/// The keys the control plane knows (none yet, or `key_id` among them); the refusal, in
/// one sentence naming both ids, if `key_id` is not one of them. Writes nothing.
pub async fn check_known(conn: &mut PgConnection, key_id: &str) -> Result<Vec<String>> {
    let known: Vec<String> = sqlx::query_scalar("SELECT key_id FROM tenant_master.secret_keys WHERE retired_at IS NULL ORDER BY key_id")
        .fetch_all(&mut *conn)
        .await
        .context("failed to read the known secret keys")?;
    if known.is_empty() || known.iter().any(|k| k == key_id) {
        return Ok(known);
    }
    Err(Error::Conflict(format!(
        "this process's secret key is {key_id}, but this control plane's secrets are sealed with {}: nothing was sealed; point TENANT_MASTER_SECRET_KEY_FILE at that key (`tenantctl check` shows which file is read), or move to the new key with `tenantctl key rotate` and the old one in TENANT_MASTER_OLD_SECRET_KEY_FILE",
        known.join(", ")
    )))
}

/// Records `key_id` as a key of this control plane (again, if it was retired).
async fn record_key(conn: &mut PgConnection, key_id: &str) -> Result<()> {
    sqlx::query("INSERT INTO tenant_master.secret_keys (key_id) VALUES ($1) ON CONFLICT (key_id) DO UPDATE SET retired_at = NULL")
        .bind(key_id)
        .execute(conn)
        .await
        .context("failed to record the secret key")?;
    Ok(())
}

/// Seals the tenant passwords and host URLs stored in plaintext before encryption; returns
/// how many. Needs the key only when such rows exist.
pub async fn seal_plaintext(pool: &PgPool, config: &Config) -> Result<usize> {
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    let plain: Vec<Stored> = stored_secrets(&mut tx).await?.into_iter().filter(|s| !Keyring::is_sealed(&s.value)).collect();
    if plain.is_empty() {
        return Ok(0);
    }
    let keys = Keyring::load(&config.key_sources())?;
    if keys.current().is_err() {
        return Err(Error::Invalid(format!(
            "{} tenant password(s) or host URL(s) are stored unencrypted: configure the secret key (TENANT_MASTER_SECRET_KEY_FILE) and run `tenantctl migrate` again",
            plain.len()
        )));
    }
    ensure_known(&mut tx, keys.current()?.id()).await?;
    for secret in &plain {
        store(&mut tx, &secret.row, &keys.seal(&secret.value, &secret.context)?).await?;
    }
    tx.commit().await.context("failed to commit the sealed secrets")?;
    Ok(plain.len())
}

/// Re-seals every stored secret under the current key, opening each with the current or
/// the old key; all or nothing.
pub async fn rotate(pool: &PgPool, config: &Config) -> Result<Rotation> {
    let keys = Keyring::load(&config.key_sources())?;
    let current = keys.current()?.id().to_owned();
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    let mut rotation = Rotation { key_id: current.clone(), ..Rotation::default() };
    // The old keys retired first: this waits for every transaction still sealing with one
    // (it holds the key's row), so the secrets read next include what they wrote.
    record_key(&mut tx, &current).await?;
    sqlx::query("UPDATE tenant_master.secret_keys SET retired_at = now() WHERE key_id <> $1 AND retired_at IS NULL")
        .bind(&current)
        .execute(&mut *tx)
        .await
        .context("failed to retire the old secret key")?;
    for secret in stored_secrets(&mut tx).await? {
        if Keyring::key_id_of(&secret.value) == Some(current.as_str()) {
            rotation.unchanged += 1;
            continue;
        }
        let plain = match Keyring::is_sealed(&secret.value) {
            true => keys.open_as(&secret.value, &secret.context, &secret.what)?,
            false => secret.value.clone(),
        };
        store(&mut tx, &secret.row, &keys.seal(&plain, &secret.context)?).await?;
        rotation.resealed += 1;
    }
    tx.commit().await.context("failed to commit the re-sealed secrets")?;
    Ok(rotation)
}
