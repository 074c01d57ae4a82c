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
    pub holder_schema: String,
    /// e.g. `view t_evil.pin`
    pub holder: String,
    pub target_schema: String,
    /// e.g. `table t_alpha.tasks`
    pub target: String,
}

/// The references between any two of `schemas` in the database of `db` (an admin
/// connection). Rules, defaults, triggers and policies are named by their table.
pub async fn between(db: &mut PgConnection, schemas: &[String]) -> Result<Vec<Reference>> {
    let rows: Vec<(String, String, String, String, String, String)> = sqlx::query_as(
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
         WHERE h.schema <> t.schema AND h.schema = ANY($1) AND t.schema = ANY($1) AND t.type <> 'index'
         ORDER BY 1, 3, 4, 6",
    )
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

/// A "cannot drop ... because other objects depend on it" error, turned into a sentence
/// that names the tenants (schemas other than `own_schema`) holding the dependents;
/// other errors come back as they are.
pub fn name_holders(err: Error, own_schema: &str) -> Error {
    let Error::Database { source, .. } = &err else { return err };
    let Some(pg) = source.as_database_error().and_then(|e| e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()) else {
        return err;
    };
    if pg.code() != "2BP01" {
        return err;
    }
    let detail = pg.detail().unwrap_or_default();
    let mut holders: Vec<&str> = detail
        .lines()
        .filter_map(|line| line.split_whitespace().find_map(|word| word.split_once('.').map(|(schema, _)| schema.trim_matches('"'))))
        .filter(|schema| *schema != own_schema && schema.starts_with("t_"))
        .collect();
    holders.sort_unstable();
    holders.dedup();
    if holders.is_empty() {
        return err;
    }
    let named: Vec<String> = holders.iter().map(|s| format!("'{}' (schema {s})", &s[2..])).collect();
    Error::Fatal(format!(
        "{err} ({}): held by another tenant's objects, {}; schemas of one database cannot prevent such references, so drop them as an admin (`tenantctl check` lists them all) or move either tenant to a dedicated database, then run the job again",
        detail.replace('\n', "; "),
        named.join(", ")
    ))
}
