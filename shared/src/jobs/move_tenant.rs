//! `MoveTenant`: copies a tenant to another database or host and switches it over (see
//! `ops::moves`); also what a plan change across isolation modes enqueues.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    activity,
    config::Config,
    context::App,
    error::{Context as _, Result},
    lock::SlotKind,
    naming::Plan,
    ops::{
        admission::{self, MoveAdmitted},
        moves::{self, Request},
        place::Place,
    },
    queue,
    queue::{
        payload::{optional, required, Field, Shape},
        Job, Policy, Run,
    },
    tenants,
};

/// Payload: the target, resolved when enqueued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveTenant {
    /// What the move asks for (its fields are the payload's).
    #[serde(flatten)]
    pub request: Request,
}

/// What a move request led to.
#[derive(Debug)]
pub enum Requested {
    /// The tenant is there already: nothing was enqueued.
    AlreadyThere(Place),
    /// A `MoveTenant` job was enqueued.
    Enqueued {
        /// The job's id.
        job_id: String,
        /// Where the tenant lives now.
        from: Place,
        /// Where it would go now (the job works its target out again when it first runs).
        to: Place,
    },
}

/// Enqueues a move of `slug` to `host` (default: where it is) and to the isolation of
/// `plan` (default: its plan's). A disabled, unknown or unreachable host is refused before
/// anything is enqueued, and so is a second move while one is under way. `to` is where the
/// tenant would go now; the job works its target out again when it first runs.
pub async fn enqueue(
    pool: &sqlx::PgPool,
    config: &Config,
    slug: &str,
    host: Option<&str>,
    plan: Option<Plan>,
    actor: &str,
) -> Result<Requested> {
    let mut cp = pool.acquire().await.context("failed to connect to the control-plane database")?;
    let tenant = tenants::get(&mut cp, slug).await?;
    admission::check_move_target(&mut cp, config, &tenant, host).await?;
    drop(cp);
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    let (tenant, from, to) = match admission::admit_move(&mut tx, config, slug, host, plan).await? {
        MoveAdmitted::AlreadyThere(place) => return Ok(Requested::AlreadyThere(place)),
        MoveAdmitted::Go { tenant, from, to } => (tenant, from, to),
    };
    let request = Request {
        slug: slug.to_owned(),
        tenant_id: tenant.id,
        host: host.map(str::to_owned),
        plan: plan.map(|p| p.as_str().to_owned()),
        actor: actor.to_owned(),
    };
    let job_id = queue::enqueue(&mut tx, &MoveTenant { request }).await?;
    activity::record(&mut tx, actor, Some(tenant.id), "move.requested", serde_json::json!({ "job_id": job_id, "from": from, "to": to }))
        .await?;
    tx.commit().await.context("failed to commit the move job")?;
    Ok(Requested::Enqueued { job_id, from, to })
}

impl Job for MoveTenant {
    const TYPE: &'static str = "MoveTenant";
    const FIELDS: &'static [Field] = &[
        required("slug", Shape::String),
        required("tenant_id", Shape::Integer),
        optional("host", Shape::String),
        optional("plan", Shape::String),
        required("actor", Shape::String),
    ];
    const SLOT: Option<SlotKind> = Some(SlotKind::Heavy);
    const DESCRIPTION: &'static str = "copies a tenant to another database or host, switches it over, keeps the source for a while";
    const POLICY: Policy = Policy { max_attempts: 5, timeout_secs: 21600, ..Policy::DEFAULT };

    /// None: the tenant lock keeps two moves of one tenant apart, and a second request for
    /// a move done meanwhile finds nothing to do.
    fn idempotency_key(&self) -> Option<String> {
        None
    }

    fn tenant(&self) -> Option<&str> {
        Some(&self.request.slug)
    }

    async fn run(&self, app: &App, run: &Run) -> Result<Value> {
        let moved = moves::move_tenant(app, &self.request, &run.job_id).await?;
        Ok(serde_json::to_value(moved).expect("move outcome serializes"))
    }

    async fn on_dead(&self, app: &App, job_id: &str, _error: &str) -> Result<()> {
        moves::recover(app, &self.request, job_id).await
    }
}
