//! What destructive jobs finished (`tenant_master.job_outcomes`): a rerun of the same job,
//! for whatever reason, finds the row and repeats nothing.

use serde_json::Value;
use sqlx::PgConnection;

use crate::error::{Context as _, Result};

/// The tenant and recorded outcome of job `job_id`, if it finished. A job belongs to one
/// tenant: callers compare the id with the tenant the slug names today, which may be a
/// newer one.
pub async fn finished(cp: &mut PgConnection, job_id: &str) -> Result<Option<(i64, Value)>> {
    sqlx::query_as("SELECT tenant_id, outcome FROM tenant_master.job_outcomes WHERE job_id = $1")
        .bind(job_id)
        .fetch_optional(cp)
        .await
        .context("failed to read the job's recorded outcome")
}

/// Records that job `job_id` finished with `outcome` (once; a second record is ignored).
pub async fn record(cp: &mut PgConnection, job_id: &str, job_type: &str, tenant_id: i64, outcome: &Value) -> Result<()> {
    sqlx::query(
        "INSERT INTO tenant_master.job_outcomes (job_id, job_type, tenant_id, outcome) VALUES ($1, $2, $3, $4)
         ON CONFLICT (job_id) DO NOTHING",
    )
    .bind(job_id)
    .bind(job_type)
    .bind(tenant_id)
    .bind(outcome)
    .execute(cp)
    .await
    .context("failed to record the job's outcome")?;
    Ok(())
}
