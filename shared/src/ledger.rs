//! The product-migration ledger of each tenant database, in schema `tenant_master_meta`,
//! out of tenants' reach (no privilege for PUBLIC).
//!
//! Admin connections read it. A migration runs in an operator session (the tenant's
//! rights, see `tenant_session`), and records itself in the same transaction through
//! `tenant_master_meta.record_migration`: a SECURITY DEFINER function that writes a row
//! for the schema of the *calling* operator role only. So tenant code that runs during a
//! migration can at most mark its own schema's migrations, never another tenant's.

use sqlx::{Acquire, PgConnection};

use crate::{
    db::{self, ddl},
    error::{Context as _, Result},
};

/// Creates the ledger and its recording function if missing and lets `operator` record
/// migrations of its own schema. Runs on an admin connection to the tenant's database.
///
/// Nothing here takes a lock a tenant could hold: an advisory lock (any role may take one)
/// let one tenant stall every migration and provisioning in its shared database. When the
/// ledger and the grants exist, nothing is written; two of our sessions creating it at once
/// are told apart by the catalog's unique indexes, and the loser looks again.
pub async fn ensure(admin_db: &mut PgConnection, operator: &str) -> Result<()> {
    for attempt in 1..=3 {
        // `current`: the function is of this release (it refuses malformed rows: see `create`).
        let (exists, current, granted): (bool, bool, bool) = sqlx::query_as(
            "SELECT to_regprocedure('tenant_master_meta.record_migration(bigint,text,text)') IS NOT NULL,
                    COALESCE((SELECT prosrc LIKE '%not a migration record%' FROM pg_proc
                              WHERE oid = to_regprocedure('tenant_master_meta.record_migration(bigint,text,text)')), false),
                    CASE WHEN to_regprocedure('tenant_master_meta.record_migration(bigint,text,text)') IS NULL
                              OR NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) THEN false
                         ELSE has_schema_privilege($1, 'tenant_master_meta', 'USAGE')
                              AND has_function_privilege($1, 'tenant_master_meta.record_migration(bigint,text,text)', 'EXECUTE') END",
        )
        .bind(operator)
        .fetch_one(&mut *admin_db)
        .await
        .context("failed to look up the migration ledger")?;
        if granted && current {
            return Ok(());
        }
        if !exists || !current {
            let mut tx = admin_db.begin().await.context("failed to start a transaction")?;
            if let Err(e) = create(&mut tx).await {
                // Another session of ours created or replaced it meanwhile (a duplicate
                // key, or a concurrently updated row, in the catalog): look again.
                if attempt < 3 && matches!(e.sqlstate().as_deref(), Some("23505") | Some("XX000")) {
                    tx.rollback().await.context("failed to roll back")?;
                    continue;
                }
                return Err(e);
            }
            tx.commit().await.context("failed to commit the migration ledger")?;
        }
        // Each GRANT rewrites the schema's and the function's one catalog row, which every
        // tenant of a shared database shares: outside a transaction, so one that meets
        // another provisioning's write waits a moment and writes again instead of failing
        // the job into a backoff of seconds (a rerun grants what a crash left out).
        db::ddl_on_shared_row(admin_db, "GRANT USAGE ON SCHEMA tenant_master_meta TO %I", &[operator]).await?;
        db::ddl_on_shared_row(
            admin_db,
            "GRANT EXECUTE ON FUNCTION tenant_master_meta.record_migration(bigint, text, text) TO %I",
            &[operator],
        )
        .await?;
        return Ok(());
    }
    Ok(())
}

async fn create(tx: &mut PgConnection) -> Result<()> {
    // The function trusts nothing from its caller but the version, name and checksum:
    // the schema comes from the session's login role, t_<slug>__op -> t_<slug>.
    sqlx::raw_sql(
        "CREATE SCHEMA IF NOT EXISTS tenant_master_meta;
         REVOKE ALL ON SCHEMA tenant_master_meta FROM PUBLIC;
         CREATE TABLE IF NOT EXISTS tenant_master_meta.applied_migrations (
             schema_name text NOT NULL, version bigint NOT NULL, name text NOT NULL, checksum text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (schema_name, version));
         REVOKE ALL ON SCHEMA public FROM PUBLIC;
         CREATE OR REPLACE FUNCTION tenant_master_meta.record_migration(p_version bigint, p_name text, p_checksum text)
         RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
         BEGIN
             IF session_user::text !~ '^t_[a-z][a-z0-9_]*__op$' THEN
                 RAISE EXCEPTION 'only a tenant operator role records its migrations' USING ERRCODE = '42501';
             END IF;
             -- Tenant code can call this too (see ledger.rs): what it may write is bounded,
             -- so no row of it can be too large to read.
             IF p_version NOT BETWEEN 1 AND 999999 OR p_checksum !~ '^[0-9a-f]{64}$' OR length(p_name) > 200 THEN
                 RAISE EXCEPTION 'not a migration record' USING ERRCODE = '22023';
             END IF;
             INSERT INTO tenant_master_meta.applied_migrations (schema_name, version, name, checksum)
             VALUES (left(session_user::text, -4), p_version, p_name, p_checksum);
         END
         $f$;
         REVOKE ALL ON FUNCTION tenant_master_meta.record_migration(bigint, text, text) FROM PUBLIC;",
    )
    .execute(&mut *tx)
    .await
    .context("failed to create the migration ledger")?;
    Ok(())
}

/// The checksum recorded for `version` of `schema`, if it was applied.
pub async fn checksum(admin_db: &mut PgConnection, schema: &str, version: i64) -> Result<Option<String>> {
    sqlx::query_scalar("SELECT checksum FROM tenant_master_meta.applied_migrations WHERE schema_name = $1 AND version = $2")
        .bind(schema)
        .bind(version)
        .fetch_optional(admin_db)
        .await
        .context("failed to read the applied migrations")
}

/// The product migrations applied to `schema`, in order (none if the ledger is missing).
pub async fn applied_versions(admin_db: &mut PgConnection, schema: &str) -> Result<Vec<i64>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('tenant_master_meta.applied_migrations') IS NOT NULL")
        .fetch_one(&mut *admin_db)
        .await
        .context("failed to look up the migration ledger")?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM tenant_master_meta.applied_migrations WHERE schema_name = $1 ORDER BY version")
        .bind(schema)
        .fetch_all(admin_db)
        .await
        .context("failed to read the applied migrations")
}

/// Forgets every migration of `schema` except `keep` (a restore puts back a backup's).
pub async fn keep_only(admin_db: &mut PgConnection, schema: &str, keep: &[i64]) -> Result<()> {
    sqlx::query("DELETE FROM tenant_master_meta.applied_migrations WHERE schema_name = $1 AND NOT (version = ANY($2))")
        .bind(schema)
        .bind(keep)
        .execute(admin_db)
        .await
        .context("failed to reset the applied migrations")?;
    Ok(())
}

/// Makes the ledger of `schema` in the database of `to` hold exactly what it holds in the
/// database of `from` (a move copies a tenant's schema to another database). Both are
/// admin connections; `to`'s ledger must exist ([`ensure`]).
pub async fn copy(from: &mut PgConnection, to: &mut PgConnection, schema: &str) -> Result<()> {
    let rows: Vec<(i64, String, String, chrono::DateTime<chrono::Utc>)> = if applied_versions(from, schema).await?.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as("SELECT version, name, checksum, applied_at FROM tenant_master_meta.applied_migrations WHERE schema_name = $1")
            .bind(schema)
            .fetch_all(&mut *from)
            .await
            .context("failed to read the applied migrations")?
    };
    let mut tx = to.begin().await.context("failed to start a transaction")?;
    keep_only(&mut tx, schema, &[]).await?;
    for (version, name, checksum, applied_at) in rows {
        sqlx::query(
            "INSERT INTO tenant_master_meta.applied_migrations (schema_name, version, name, checksum, applied_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(schema)
        .bind(version)
        .bind(name)
        .bind(checksum)
        .bind(applied_at)
        .execute(&mut *tx)
        .await
        .context("failed to copy the applied migrations")?;
    }
    tx.commit().await.context("failed to commit the copied migrations")
}

/// Takes back what [`ensure`] gave `operator` in this database (its tenant left it). Not
/// `DROP OWNED`: that also revokes the role's rights on databases, its live one included.
pub async fn revoke(admin_db: &mut PgConnection, operator: &str) -> Result<()> {
    let exists: bool = sqlx::query_scalar(
        "SELECT to_regprocedure('tenant_master_meta.record_migration(bigint,text,text)') IS NOT NULL
                AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
    )
    .bind(operator)
    .fetch_one(&mut *admin_db)
    .await
    .context("failed to look up the migration ledger")?;
    if exists {
        ddl(admin_db, "REVOKE ALL ON FUNCTION tenant_master_meta.record_migration(bigint, text, text) FROM %I", &[operator]).await?;
        ddl(admin_db, "REVOKE ALL ON SCHEMA tenant_master_meta FROM %I", &[operator]).await?;
    }
    Ok(())
}

/// Forgets every migration of `schema` (its tenant was deleted).
pub async fn forget(admin_db: &mut PgConnection, schema: &str) -> Result<()> {
    if applied_versions(admin_db, schema).await?.is_empty() {
        return Ok(());
    }
    keep_only(admin_db, schema, &[]).await
}
