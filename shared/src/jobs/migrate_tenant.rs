//! `MigrateTenant`: brings one tenant's schema to a product version (see `ops::rollout`
//! for the fan-out and `ops::migrations` for how each migration is applied).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{Acquire as _, PgPool};

use crate::{
    context::App,
    error::{Context as _, Result},
    lock::SlotKind,
    ops::{migrations, rollout},
    queue::{
        self,
        payload::{optional, required, Field, Shape},
        Job, Policy, Run,
    },
};

/// Payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrateTenant {
    /// The tenant to migrate.
    pub slug: String,
    /// The tenant's id, so a late rerun never touches a newer tenant with the same slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<i64>,
    /// Apply the product's migrations up to and including this version.
    pub to: i64,
    /// Who asked, for the activity log.
    pub actor: String,
}

impl Job for MigrateTenant {
    const TYPE: &'static str = "MigrateTenant";
    const FIELDS: &'static [Field] = &[
        required("slug", Shape::String),
        optional("tenant_id", Shape::Integer),
        required("to", Shape::Integer),
        required("actor", Shape::String),
    ];
    const SLOT: Option<SlotKind> = Some(SlotKind::Migration);
    const DESCRIPTION: &'static str = "applies pending product migrations to one tenant";
    const POLICY: Policy = Policy { max_attempts: 3, timeout_secs: 3600, ..Policy::DEFAULT };

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("migrate:{}:{}", self.slug, self.to))
    }

    fn tenant(&self) -> Option<&str> {
        Some(&self.slug)
    }

    async fn run(&self, app: &App, _run: &Run) -> Result<Value> {
        let applied = migrations::migrate_tenant_to(app, &self.slug, self.tenant_id, Some(self.to), &self.actor).await?;
        Ok(json!({ "applied": applied }))
    }

    async fn on_dead(&self, app: &App, _job_id: &str, error: &str) -> Result<()> {
        migrations::record_failure(app, &self.slug, self.tenant_id, error).await
    }
}

/// What a rollout enqueued.
#[derive(Debug, Default, Serialize)]
pub struct Enqueued {
    /// (slug, job id) of every tenant with something pending.
    pub jobs: Vec<(String, String)>,
    /// Tenants with nothing pending: no job.
    pub up_to_date: usize,
    /// (slug, reason) of tenants whose database could not be read: skipped.
    pub unreachable: Vec<(String, String)>,
    /// (slug, reason) of tenants whose own ledger disagrees with the product: skipped.
    pub conflicts: Vec<(String, String)>,
}

/// Enqueues one `MigrateTenant` per tenant with something pending, in one transaction.
/// The key `migrate:<slug>:<target>` makes a second run while the first is under way a
/// no-op; a finished job under that key (it failed, or the tenant was restored to an older
/// backup since) is set aside so the tenant gets a new one.
pub async fn enqueue(pool: &PgPool, plans: &[rollout::TenantPlan], actor: &str) -> Result<Enqueued> {
    let mut conn = pool.acquire().await.context("failed to connect to the control-plane database")?;
    let mut tx = conn.begin().await.context("failed to start a transaction")?;
    let mut out = Enqueued::default();
    for plan in plans {
        if let Some(reason) = &plan.unreachable {
            out.unreachable.push((plan.slug.clone(), reason.clone()));
            continue;
        }
        if let Some(reason) = &plan.conflict {
            out.conflicts.push((plan.slug.clone(), reason.clone()));
            continue;
        }
        if plan.pending.is_empty() {
            out.up_to_date += 1;
            continue;
        }
        let job = MigrateTenant { slug: plan.slug.clone(), tenant_id: Some(plan.tenant_id), to: plan.target, actor: actor.to_owned() };
        let mut id = queue::enqueue(&mut tx, &job).await?;
        let finished: bool = sqlx::query_scalar("SELECT status IN ('done', 'dead') FROM tenant_master.jobs WHERE id = $1")
            .bind(&id)
            .fetch_one(&mut *tx)
            .await
            .context("failed to read the rollout job")?;
        if finished {
            sqlx::query("UPDATE apalis.jobs SET idempotency_key = NULL WHERE id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await
                .context("failed to set an old rollout job aside")?;
            id = queue::enqueue(&mut tx, &job).await?;
        }
        out.jobs.push((plan.slug.clone(), id));
    }
    tx.commit().await.context("failed to commit the rollout")?;
    Ok(out)
}
