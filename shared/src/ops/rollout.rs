//! Rolling a product's new migrations out to existing tenants.
//!
//! What a tenant lacks is read from its own ledger (`tenant_master_meta.applied_migrations`
//! in its database), one query per database however many tenants share it, and compared
//! with the product's migration files. The registry's `schema_version` is a cache of the
//! ledger for `tenant list` / `show`, refreshed here and wherever migrations are applied.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sqlx::PgConnection;

use crate::{
    config::Config,
    error::{Context as _, Error, Result},
    hosts,
    ops::migrations,
    products::{self, Product},
    tenants::Tenant,
};

/// Which tenants a rollout looks at.
#[derive(Debug, Default, Clone)]
pub struct RolloutFilter {
    /// These slugs only (the canary); empty means every live tenant.
    pub slugs: Vec<String>,
    /// Tenants of this product only.
    pub product: Option<String>,
    /// Tenants on this plan only.
    pub plan: Option<String>,
    /// Tenants on this database host only.
    pub host: Option<String>,
    /// At most this many tenants with something pending.
    pub limit: Option<usize>,
    /// Up to this migration version (default: the product's latest).
    pub to: Option<i64>,
}

/// One tenant's state against its product.
#[derive(Debug, Clone, Serialize)]
pub struct TenantPlan {
    /// The tenant's slug.
    pub slug: String,
    /// Its product.
    pub product: String,
    /// The highest version in its ledger (none: no migration recorded yet).
    pub version: Option<i64>,
    /// The migrations it lacks, in order, as `0003_name`.
    pub pending: Vec<String>,
    /// The version the rollout brings it to.
    #[serde(skip)]
    pub target: i64,
    /// The tenant's id in the registry.
    #[serde(skip)]
    pub tenant_id: i64,
    /// Why its database could not be read (then nothing is known pending, and it is skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
    /// Why its own ledger disagrees with the product's files (then it is skipped: its code
    /// can write its ledger, so this stops it and no other tenant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
}

/// Live tenants (active, paused, suspended) matching `filter`, each with what it lacks;
/// refreshes the registry's cached versions on the way. Unknown slugs and tenants that are
/// not live are refused in one sentence.
pub async fn plan(cp: &mut PgConnection, config: &Config, filter: &RolloutFilter) -> Result<Vec<TenantPlan>> {
    if filter.limit == Some(0) {
        return Err(Error::Invalid("--limit must be at least 1".into()));
    }
    let tenants = select(cp, filter).await?;
    let products = load_products(config, &tenants)?;
    let versions: Vec<i64> = products.values().flat_map(|p| p.migrations.iter().map(|m| m.version)).collect();
    let (applied, unreachable) = applied_versions(cp, config, &tenants, &versions).await?;
    for product in products.values() {
        remember_matching(cp, product, &tenants, &applied).await?;
        // A file of ours that changed since it first ran would split the fleet: stop all.
        migrations::check_files(cp, product).await?;
    }
    let mut plans = Vec::new();
    for tenant in tenants {
        let plan = match unreachable.get(&tenant.id) {
            Some(error) => TenantPlan {
                slug: tenant.slug.clone(),
                product: tenant.product.clone(),
                version: tenant.schema_version,
                pending: Vec::new(),
                target: 0,
                tenant_id: tenant.id,
                unreachable: Some(error.clone()),
                conflict: None,
            },
            None => {
                let recorded = applied.get(&tenant.id).map(Vec::as_slice).unwrap_or_default();
                plan_tenant(&tenant, &products[&tenant.product], recorded, filter.to)?
            }
        };
        plans.push(plan);
    }
    let known: Vec<TenantPlan> = plans.iter().filter(|p| p.unreachable.is_none()).cloned().collect();
    cache_versions(cp, &known).await?;
    record_conflicts(cp, &known).await?;
    apply_limit(&mut plans, filter.limit);
    Ok(plans)
}

/// The products of `tenants`, each read once.
fn load_products(config: &Config, tenants: &[Tenant]) -> Result<HashMap<String, Product>> {
    let mut products: HashMap<String, Product> = HashMap::new();
    for tenant in tenants {
        if !products.contains_key(&tenant.product) {
            products.insert(tenant.product.clone(), products::load(&config.products_dir, &tenant.product)?);
        }
    }
    Ok(products)
}

/// What one reachable tenant lacks, given the ledger rows `recorded` it holds.
fn plan_tenant(tenant: &Tenant, product: &Product, recorded: &[(i64, String)], to: Option<i64>) -> Result<TenantPlan> {
    // Our files are as they first ran (checked before), so a ledger row that differs
    // is the tenant's own: it stops this tenant only.
    let conflict = product.migrations.iter().find_map(|m| {
        let (_, checksum) = recorded.iter().find(|(v, checksum)| *v == m.version && *checksum != m.checksum)?;
        Some(migrations::ledger_conflict(&tenant.slug, m, checksum))
    });
    let done: Vec<i64> = recorded.iter().map(|(v, _)| *v).collect();
    let target = to.unwrap_or_else(|| product.migrations.last().map_or(0, |m| m.version));
    if let Some(to) = to {
        if !product.migrations.iter().any(|m| m.version == to) {
            return Err(Error::Invalid(format!("product '{}' has no migration {to:04}: see its folder in products_dir", product.name)));
        }
    }
    let pending = product.migrations.iter().filter(|m| m.version <= target && !done.contains(&m.version)).map(|m| m.label()).collect();
    Ok(TenantPlan {
        slug: tenant.slug.clone(),
        product: tenant.product.clone(),
        version: done.iter().max().copied(),
        pending,
        target,
        tenant_id: tenant.id,
        unreachable: None,
        conflict,
    })
}

/// Keeps at most `limit` tenants that need something (`--limit`), every tenant that needs
/// nothing (they cost nothing) and every conflict (so it is reported).
fn apply_limit(plans: &mut Vec<TenantPlan>, limit: Option<usize>) {
    let mut with_pending = 0;
    plans.retain(|p| {
        if p.conflict.is_some() {
            return true;
        }
        let keep = p.pending.is_empty() || limit.is_none_or(|limit| with_pending < limit);
        if !p.pending.is_empty() && keep {
            with_pending += 1;
        }
        keep
    });
}

async fn select(cp: &mut PgConnection, filter: &RolloutFilter) -> Result<Vec<Tenant>> {
    for slug in &filter.slugs {
        crate::naming::Slug::parse(slug)?;
    }
    let tenants: Vec<Tenant> =
        crate::tenants::list_live(cp, &filter.slugs, filter.product.as_deref(), filter.plan.as_deref(), filter.host.as_deref()).await?;
    if let Some(missing) = filter.slugs.iter().find(|s| !tenants.iter().any(|t| &t.slug == *s)) {
        return Err(Error::NotFound(format!(
            "there is no live tenant '{missing}' (with these filters): nothing was enqueued; see `tenantctl tenant show {missing}`"
        )));
    }
    Ok(tenants)
}

/// A control plane from before the first-applied checksums were kept learns them from the
/// ledgers: a file whose checksum some tenant's ledger holds for its version ran as it is.
async fn remember_matching(cp: &mut PgConnection, product: &Product, tenants: &[Tenant], applied: &Applied) -> Result<()> {
    let ran: Vec<&crate::products::ProductMigration> = product
        .migrations
        .iter()
        .filter(|m| {
            tenants
                .iter()
                .filter(|t| t.product == product.name)
                .any(|t| applied.get(&t.id).is_some_and(|rows| rows.iter().any(|(v, c)| *v == m.version && *c == m.checksum)))
        })
        .collect();
    migrations::remember(cp, &product.name, &ran).await
}

/// (version, checksum) pairs recorded per tenant id.
pub type Applied = HashMap<i64, Vec<(i64, String)>>;

/// The (version, checksum) pairs in the ledgers of `tenants` for `versions` (the product
/// files' versions), by tenant id: one admin connection and one query per database. A
/// ledger is written by tenant code too: only the versions of our files are read, and a
/// checksum that is not one (64 hex digits) reads as `malformed`.
/// Tenants whose database cannot be reached (within 10 s), or read, come back apart with the
/// reason, so one host that is down does not hold up a rollout on the others.
pub async fn applied_versions(
    cp: &mut PgConnection,
    config: &Config,
    tenants: &[Tenant],
    versions: &[i64],
) -> Result<(Applied, HashMap<i64, String>)> {
    let mut by_database: BTreeMap<(&str, &str), Vec<&Tenant>> = BTreeMap::new();
    for tenant in tenants {
        by_database.entry((tenant.host.as_str(), tenant.database.as_str())).or_default().push(tenant);
    }
    let (mut applied, mut unreachable) = (HashMap::new(), HashMap::new());
    for ((host, database), group) in by_database {
        let connected = tokio::time::timeout(std::time::Duration::from_secs(10), hosts::connect(cp, config, host, database)).await;
        let mut db = match connected {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => {
                unreachable.extend(group.iter().map(|t| (t.id, e.to_string())));
                continue;
            }
            Err(_) => {
                unreachable.extend(group.iter().map(|t| (t.id, format!("host '{host}' did not answer within 10 s"))));
                continue;
            }
        };
        let schemas: Vec<&str> = group.iter().map(|t| t.schema.as_str()).collect();
        let rows = match read_ledger(&mut db, database, &schemas, versions).await {
            Ok(rows) => rows,
            Err(e) => {
                unreachable.extend(group.iter().map(|t| (t.id, e.to_string())));
                continue;
            }
        };
        for (schema, versions, checksums) in rows {
            if let Some(tenant) = group.iter().find(|t| t.schema == schema) {
                applied.insert(tenant.id, versions.into_iter().zip(checksums).collect());
            }
        }
    }
    Ok((applied, unreachable))
}

async fn read_ledger(
    db: &mut PgConnection,
    database: &str,
    schemas: &[&str],
    versions: &[i64],
) -> Result<Vec<(String, Vec<i64>, Vec<String>)>> {
    let has_ledger: bool = sqlx::query_scalar("SELECT to_regclass('tenant_master_meta.applied_migrations') IS NOT NULL")
        .fetch_one(&mut *db)
        .await
        .context(format!("failed to look for the migration ledger in {database}"))?;
    if !has_ledger {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT schema_name, array_agg(version ORDER BY version),
                array_agg(CASE WHEN checksum ~ '^[0-9a-f]{64}$' THEN checksum ELSE 'malformed' END ORDER BY version)
         FROM tenant_master_meta.applied_migrations WHERE schema_name = ANY($1) AND version = ANY($2) GROUP BY schema_name",
    )
    .bind(schemas)
    .bind(versions)
    .fetch_all(db)
    .await
    .context(format!("failed to read the migration ledger of {database}"))
}

async fn cache_versions(cp: &mut PgConnection, plans: &[TenantPlan]) -> Result<()> {
    let ids: Vec<i64> = plans.iter().map(|p| p.tenant_id).collect();
    let versions: Vec<Option<i64>> = plans.iter().map(|p| p.version).collect();
    sqlx::query(
        "UPDATE tenant_master.tenants t SET schema_version = v.version
         FROM unnest($1::bigint[], $2::bigint[]) AS v(id, version)
         WHERE t.id = v.id AND t.schema_version IS DISTINCT FROM v.version",
    )
    .bind(&ids)
    .bind(&versions)
    .execute(cp)
    .await
    .context("failed to record the tenants' schema versions")?;
    Ok(())
}

/// Keeps each conflicting tenant's reason for `tenant show`.
async fn record_conflicts(cp: &mut PgConnection, plans: &[TenantPlan]) -> Result<()> {
    let (ids, reasons): (Vec<i64>, Vec<&str>) = plans.iter().filter_map(|p| Some((p.tenant_id, p.conflict.as_deref()?))).unzip();
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE tenant_master.tenants t SET migration_error = v.reason
         FROM unnest($1::bigint[], $2::text[]) AS v(id, reason) WHERE t.id = v.id",
    )
    .bind(&ids)
    .bind(&reasons)
    .execute(cp)
    .await
    .context("failed to record the tenants' ledger conflicts")?;
    Ok(())
}

/// How many product migrations a tenant lacks, from its last known version and the
/// product's files (read once per product); none when either is unknown.
pub struct Pending<'a> {
    config: &'a crate::config::Config,
    latest: std::collections::HashMap<String, Option<Vec<i64>>>,
}

impl<'a> Pending<'a> {
    /// A counter that reads each product's files once.
    pub fn new(config: &'a crate::config::Config) -> Pending<'a> {
        Pending { config, latest: Default::default() }
    }

    /// The migrations `tenant` lacks; none for a tenant that is not live or whose
    /// version or product files are unknown.
    pub fn count(&mut self, tenant: &Tenant) -> Option<usize> {
        if !matches!(tenant.status.as_str(), "active" | "paused" | "suspended") {
            return None;
        }
        let config = self.config;
        let versions = self.latest.entry(tenant.product.clone()).or_insert_with(|| {
            crate::products::load(&config.products_dir, &tenant.product).ok().map(|p| p.migrations.iter().map(|m| m.version).collect())
        });
        let version = tenant.schema_version?;
        versions.as_ref().map(|v| v.iter().filter(|m| **m > version).count())
    }
}
