//! `ProvisionTenant`: creates a tenant end to end (see `ops::provision`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    payload::{optional, required, Field, Shape},
    App, Job, Run,
};
use crate::{
    error::{Context as _, Error, Result},
    ops::provision,
    tenants::{self, NewTenant},
};

/// Payload: what the producer asked for. Validated by the handler too, since a producer
/// in another language may enqueue it with SQL alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvisionTenant {
    pub slug: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub product: String,
    pub plan: String,
    pub owner_email: String,
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
    const TIMEOUT_SECS: u64 = 600;

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
                return Err(Error::Fatal(format!(
                    "tenant '{}' was deleted; to create it again run `tenantctl tenant create {}`",
                    self.slug, self.slug
                )));
            }
        }
        drop(cp);
        let tenant = provision::provision(app, &new, "worker").await?;
        Ok(json!({ "slug": tenant.slug, "status": tenant.status, "database": tenant.database }))
    }

    async fn on_dead(&self, app: &App, _job_id: &str, error: &str) -> Result<()> {
        provision::mark_failed(app, &self.slug, error).await
    }
}
