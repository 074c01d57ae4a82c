//! Catalog references from one tenant's schema to another's in a shared database.
//!
//! Schema-per-tenant cannot stop them: a view on `'<oid>'::regclass`, a column default or
//! a SQL function body needs no right on the other schema, and PostgreSQL then refuses to
//! drop the object it names. So a tenant can make a neighbour's `DROP TABLE` (its own, or
//! a product migration's) fail. We find them (`tenantctl check`), name the holder when a
//! migration fails on one, and a dedicated database (its own plan) ends them.

use serde::Serialize;
use sqlx::PgConnection;

use crate::error::{Context as _, Error, Result};

/// One object of `holder_schema` that depends on an object of `target_schema`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reference {
    /// The schema of the object that holds the reference.
    pub holder_schema: String,
    /// e.g. `view t_evil.pin`
    pub holder: String,
    /// The schema of the object it references.
    pub target_schema: String,
    /// e.g. `table t_alpha.tasks`
    pub target: String,
}

/// The references between any two of `schemas` in the database of `db` (an admin
/// connection). Rules, defaults, triggers and policies are named by their table.
pub async fn between(db: &mut PgConnection, schemas: &[String]) -> Result<Vec<Reference>> {
    references(db, "h.schema = ANY($1) AND t.schema = ANY($1)", schemas).await
}

/// Objects of other tenants' schemas (`t_...`) that reference objects of `schema`.
pub async fn holding(db: &mut PgConnection, schema: &str) -> Result<Vec<Reference>> {
    references(db, "t.schema = ($1::text[])[1] AND h.schema LIKE 't\\_%'", &[schema.to_owned()]).await
}

async fn references(db: &mut PgConnection, filter: &str, schemas: &[String]) -> Result<Vec<Reference>> {
    let query = format!(
        "WITH d AS (
             SELECT CASE WHEN d.classid IN ('pg_rewrite'::regclass, 'pg_attrdef'::regclass, 'pg_trigger'::regclass, 'pg_policy'::regclass)
                         THEN 'pg_class'::regclass ELSE d.classid END AS classid,
                    CASE d.classid
                         WHEN 'pg_rewrite'::regclass THEN (SELECT ev_class FROM pg_rewrite WHERE oid = d.objid)
                         WHEN 'pg_attrdef'::regclass THEN (SELECT adrelid FROM pg_attrdef WHERE oid = d.objid)
                         WHEN 'pg_trigger'::regclass THEN (SELECT tgrelid FROM pg_trigger WHERE oid = d.objid)
                         WHEN 'pg_policy'::regclass THEN (SELECT polrelid FROM pg_policy WHERE oid = d.objid)
                         ELSE d.objid END AS objid,
                    d.refclassid, d.refobjid
             FROM pg_depend d WHERE d.deptype = 'n'
         )
         SELECT DISTINCT h.schema, h.type, h.identity, t.schema, t.type, t.identity
         FROM d CROSS JOIN LATERAL pg_identify_object(d.classid, d.objid, 0) h
                CROSS JOIN LATERAL pg_identify_object(d.refclassid, d.refobjid, 0) t
         WHERE h.schema <> t.schema AND {filter}
         ORDER BY 1, 3, 4, 6"
    );
    let rows: Vec<(String, String, String, String, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(query))
        .bind(schemas)
        .fetch_all(db)
        .await
        .context("failed to read the catalog's dependencies")?;
    Ok(rows
        .into_iter()
        .map(|(hs, ht, hi, ts, tt, ti)| Reference {
            holder_schema: hs,
            holder: format!("{ht} {hi}"),
            target_schema: ts,
            target: format!("{tt} {ti}"),
        })
        .collect())
}

/// A "cannot drop ... because other objects depend on it" error (2BP01) of a statement in
/// `own_schema`, turned into a sentence naming the other tenants whose objects hold it,
/// read from the catalog through `db` (an admin connection to the same database).
pub async fn name_holders(err: Error, db: &mut PgConnection, own_schema: &str) -> Error {
    let holders = match holding(db, own_schema).await {
        Ok(holders) if !holders.is_empty() => holders,
        _ => return err,
    };
    let named: Vec<String> =
        holders.iter().map(|r| format!("{} of tenant '{}' holds {}", r.holder, tenant_of(&r.holder_schema), r.target)).collect();
    let message = format!(
        "{err}: {}; schemas of one database cannot prevent such references, so drop them as an admin (`tenantctl check` lists them all) or move either tenant to a dedicated database, then run the job again",
        named.join("; ")
    );
    Error::fatal_because(message, err)
}

/// The slug of a tenant schema `t_<slug>` (kept whole if it is not one).
pub fn tenant_of(schema: &str) -> &str {
    schema.strip_prefix("t_").unwrap_or(schema)
}
