//! `SendWelcomeMail`: the welcome mail to a new tenant's owner, once (see `mail`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    context::App,
    error::{Context as _, Result},
    mail,
    queue::{
        payload::{required, Field, Shape},
        Job, Policy, Run,
    },
    tenants,
};

/// Payload: enqueued by provisioning in the transaction that activates the tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendWelcomeMail {
    /// The tenant whose owner gets the mail.
    pub slug: String,
}

impl Job for SendWelcomeMail {
    const TYPE: &'static str = "SendWelcomeMail";
    const FIELDS: &'static [Field] = &[required("slug", Shape::String)];
    const DESCRIPTION: &'static str = "the welcome mail to a new tenant's owner, once";
    const POLICY: Policy = Policy { max_attempts: 6, timeout_secs: 120, ..Policy::DEFAULT };

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("welcome:{}", self.slug))
    }

    fn tenant(&self) -> Option<&str> {
        // Mail does not touch the tenant's data: it need not wait for its lock.
        None
    }

    fn subject(&self) -> Option<&str> {
        Some(&self.slug)
    }

    async fn run(&self, app: &App, _run: &Run) -> Result<Value> {
        let mut conn = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
        let tenant = tenants::get(&mut conn, &self.slug).await?;
        if matches!(tenant.status.as_str(), "deleting" | "deleted") {
            return Ok(json!({ "skipped": format!("tenant is {}", tenant.status) }));
        }
        let sent = mail::send_welcome(&mut conn, &app.config, &tenant).await?;
        Ok(json!(sent))
    }
}
