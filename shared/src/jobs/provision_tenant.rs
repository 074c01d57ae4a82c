//! `ProvisionTenant`: creates a tenant end to end (see `ops::provision`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{Acquire as _, PgConnection, PgPool};

use super::send_welcome_mail::SendWelcomeMail;
use crate::{
    activity,
    config::Config,
    context::App,
    error::{Context as _, Error, Result},
    fault,
    ops::provision,
    queue::{
        self,
        payload::{optional, required, Field, Shape},
        Job, Policy, Run,
    },
    telemetry::Laps,
    tenants::{self, NewTenant, Tenant},
};

/// Payload: what the producer asked for. Validated by the handler too, since a producer
/// in another language may enqueue it with SQL alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvisionTenant {
    /// The new tenant's slug.
    pub slug: String,
    /// Its display name; none: the slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The product whose schema it gets.
    pub product: String,
    /// Its plan, by name (`free` to `lifetime`).
    pub plan: String,
    /// The owner's e-mail address; the welcome mail goes there.
    pub owner_email: String,
    /// The database host to put it on; none: the enabled host with the most room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl From<&NewTenant> for ProvisionTenant {
    fn from(new: &NewTenant) -> Self {
        ProvisionTenant {
            slug: new.slug.to_string(),
            name: new.name.clone(),
            product: new.product.clone(),
            plan: new.plan.as_str().to_owned(),
            owner_email: new.owner_email.clone(),
            host: new.host.clone(),
        }
    }
}

impl Job for ProvisionTenant {
    const TYPE: &'static str = "ProvisionTenant";
    const FIELDS: &'static [Field] = &[
        required("slug", Shape::String),
        optional("name", Shape::String),
        required("product", Shape::String),
        required("plan", Shape::String),
        required("owner_email", Shape::String),
        optional("host", Shape::String),
    ];
    const DESCRIPTION: &'static str = "create role, database or schema, apply product migrations, activate";
    const POLICY: Policy = Policy { max_attempts: 8, timeout_secs: 600, ..Policy::DEFAULT };

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("provision:{}", self.slug))
    }

    fn tenant(&self) -> Option<&str> {
        Some(&self.slug)
    }

    async fn run(&self, app: &App, _run: &Run) -> Result<Value> {
        let new = NewTenant::parse(&self.slug, &self.product, &self.plan, &self.owner_email, self.name.as_deref(), self.host.as_deref())?;
        // A rerun of an old job (lost acknowledgement, `jobs retry` weeks later) must not
        // bring a deleted tenant back: only a person re-creates a slug (`tenant create`
        // registers the new tenant before it enqueues this job).
        let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
        if let Some(tenant) = tenants::find(&mut cp, &self.slug).await? {
            if tenant.status == "deleted" {
                return Err(Error::fatal(format!(
                    "tenant '{}' was deleted; to create it again run `tenantctl tenant create {} --product {} --plan {} --owner-email {}`",
                    self.slug, self.slug, self.product, self.plan, self.owner_email
                )));
            }
        }
        drop(cp);
        let mut laps = Laps::default();
        let tenant = provision_timed(app, &new, "worker", &mut laps).await?;
        Ok(json!({ "slug": tenant.slug, "status": tenant.status, "database": tenant.database, "timings_ms": laps.to_json() }))
    }

    async fn on_dead(&self, app: &App, _job_id: &str, error: &str) -> Result<()> {
        provision::mark_failed(app, &self.slug, error).await
    }
}

/// Registers a new tenant and enqueues its provisioning, on `conn` (use a transaction to
/// make it atomic with your own writes). A taken slug is a [`Error::Conflict`].
pub async fn create(conn: &mut PgConnection, config: &Config, new: &NewTenant, actor: &str) -> Result<(Tenant, String)> {
    let (tenant, created) = tenants::register(conn, config, new).await?;
    if !created {
        let hint = match tenant.status.as_str() {
            "failed" => format!("; delete it with `tenantctl tenant delete {} --yes` to free the slug", tenant.slug),
            _ => String::new(),
        };
        return Err(Error::Conflict(format!("slug '{}' is already taken (that tenant is {}){hint}", tenant.slug, tenant.status)));
    }
    let job = ProvisionTenant::from(new);
    let job_id = queue::enqueue(conn, &job).await?;
    activity::record(conn, actor, Some(tenant.id), "tenant.create_requested", json!({ "plan": tenant.plan, "job_id": job_id })).await?;
    Ok((tenant, job_id))
}

/// The job provisioning the tenant `new` asks for, while one holds its key.
pub async fn provision_job(conn: &mut PgConnection, new: &NewTenant) -> Result<Option<String>> {
    match ProvisionTenant::from(new).idempotency_key() {
        Some(key) => queue::job_with_key(conn, &key).await,
        None => Ok(None),
    }
}

/// [`create`] in a transaction of its own.
pub async fn create_in_new_transaction(pool: &PgPool, config: &Config, new: &NewTenant, actor: &str) -> Result<(Tenant, String)> {
    let mut tx = pool.begin().await.context("failed to start a transaction")?;
    let created = create(&mut tx, config, new, actor).await?;
    tx.commit().await.context("failed to commit the new tenant")?;
    Ok(created)
}

/// Provisions `new` end to end (see [`provision::build`]) and makes it active, with its
/// welcome mail enqueued in the same transaction: never active without it, nor the
/// reverse. Returns the active tenant. Safe to run again at any point.
pub async fn provision(app: &App, new: &NewTenant, actor: &str) -> Result<Tenant> {
    provision_timed(app, new, actor, &mut Laps::default()).await
}

/// [`provision`], each step's wall time in `laps` (the job's result shows them).
pub async fn provision_timed(app: &App, new: &NewTenant, actor: &str, laps: &mut Laps) -> Result<Tenant> {
    let tenant = match provision::build(app, new, actor, laps).await? {
        provision::Built::Active(tenant) => return Ok(tenant),
        provision::Built::Ready(tenant) => tenant,
    };
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    let mut tx = cp.begin().await.context("failed to start a transaction")?;
    if provision::activate(&mut tx, &tenant, actor).await? {
        queue::enqueue(&mut tx, &SendWelcomeMail { slug: tenant.slug.clone() }).await?;
    }
    tx.commit().await.context("failed to commit the activation")?;
    fault::point(&tenant.slug, "provision:activate")?;
    laps.lap("activate");
    provision::activated(&mut cp, &tenant.slug).await
}
