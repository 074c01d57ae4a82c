//! The panel's actions: each one library call, the same the matching `tenantctl` command
//! makes, then one activity-log entry with the admin and their address. Every handler takes
//! [`Act`] last, so a viewer, a forged form or a missing CSRF proof never reaches it.

use axum::{
    extract::{Path, State},
    http::StatusCode,
};
use serde_json::json;
use tenant_master::{
    jobs::change_plan::Changed,
    jobs::{access, backup_tenant, cancel, delete_tenant, restore_tenant},
    ops::access::Change,
    queue::{self, JobFilter},
    tenants::{NewTenant, Selection},
};

use super::{
    auth::Act,
    web::{see, PageResult, PanelError},
    Shared,
};

/// A destructive action goes ahead only when the tenant's slug was typed in `confirm`.
fn confirmed(act: &Act, slug: &str, doing: &str) -> Result<(), PanelError> {
    if act.field("confirm") == Some(slug) {
        return Ok(());
    }
    Err(PanelError::new(
        StatusCode::BAD_REQUEST,
        format!("{doing} '{slug}' needs its slug typed in the confirmation box: nothing was done"),
    ))
}

pub async fn create_tenant(State(panel): State<Shared>, mut act: Act) -> PageResult {
    let new = NewTenant::parse(
        act.require("slug", "the slug")?,
        act.require("product", "the product")?,
        act.require("plan", "the plan")?,
        act.require("owner_email", "the owner's e-mail")?,
        act.field("name"),
        act.field("host"),
    )?;
    let (tenant, job_id) =
        tenant_master::jobs::provision_tenant::create_in_new_transaction(&panel.pool, &panel.config, &new, &act.actor()).await?;
    act.audit(Some(tenant.id), "admin.tenant_create", json!({ "slug": tenant.slug, "job_id": job_id })).await?;
    Ok(see(&format!("/tenants/{}", tenant.slug)))
}

pub async fn tenant_action(State(panel): State<Shared>, Path((slug, action)): Path<(String, String)>, mut act: Act) -> PageResult {
    let pool = &panel.pool;
    let actor = act.actor();
    let job_id = match action.as_str() {
        "pause" => access::request(pool, &slug, Change::Pause, act.field("reason"), &actor).await?,
        "suspend" => {
            access::request(pool, &slug, Change::Suspend, Some(act.require("reason", "the reason for suspending")?), &actor).await?
        }
        "resume" => access::request(pool, &slug, Change::Resume, None, &actor).await?,
        "backup" => {
            let jobs = backup_tenant::enqueue_manual(pool, Selection::Slugs(vec![slug.clone()]), None, &actor).await?;
            jobs.into_iter().next().map(|(_, id)| id).ok_or_else(|| PanelError::new(StatusCode::CONFLICT, "no backup was enqueued"))?
        }
        "restore" => {
            confirmed(&act, &slug, "restoring")?;
            let backup: i64 = act
                .require("backup", "the backup to restore")?
                .parse()
                .map_err(|_| PanelError::new(StatusCode::BAD_REQUEST, "the backup must be chosen from the list"))?;
            restore_tenant::enqueue(pool, &slug, Some(backup), &actor).await?.1
        }
        "delete" => {
            confirmed(&act, &slug, "deleting")?;
            delete_tenant::request(pool, &slug, &actor).await?
        }
        "plan" => {
            let plan = act.require("plan", "the new plan")?;
            match tenant_master::jobs::change_plan::change(pool, &panel.config, &slug, plan, None, &actor).await? {
                Changed::Moving { job_id, .. } => job_id,
                Changed::Changed(t) | Changed::Unchanged(t) => {
                    act.audit(Some(t.id), "admin.plan", json!({ "slug": slug, "plan": plan })).await?;
                    return Ok(see(&format!("/tenants/{slug}")));
                }
            }
        }
        _ => return Err(PanelError::new(StatusCode::NOT_FOUND, format!("there is no tenant action '{action}'"))),
    };
    let id = act.tenant_id(&slug).await;
    act.audit(id, &format!("admin.{action}"), json!({ "slug": slug, "job_id": job_id })).await?;
    Ok(see(&format!("/jobs/{job_id}")))
}

pub async fn job_action(State(panel): State<Shared>, Path((id, action)): Path<(String, String)>, mut act: Act) -> PageResult {
    let pool = &panel.pool;
    let (job, to) = match action.as_str() {
        "retry" => {
            let job = queue::get(pool, &id).await?;
            queue::retry_given(pool, std::slice::from_ref(&id)).await?;
            (job, format!("/jobs/{id}"))
        }
        "cancel" => {
            let done = cancel::cancel(pool, &id, &act.actor()).await?;
            if done.already.is_some() {
                // Cancelled already (another admin, a moment ago): nothing done, nothing to audit.
                return Ok(see(&format!("/jobs/{id}")));
            }
            (done.job, "/jobs?notice=cancelled".to_owned())
        }
        _ => return Err(PanelError::new(StatusCode::NOT_FOUND, format!("there is no job action '{action}'"))),
    };
    let tenant = match &job.tenant {
        Some(slug) => act.tenant_id(slug).await,
        None => None,
    };
    act.audit(tenant, &format!("admin.job_{action}"), json!({ "job_id": id, "type": job.job_type, "slug": job.tenant })).await?;
    Ok(see(&to))
}

/// Retries what the confirmation page counted: the jobs it listed that still match the
/// filter and are still failed or dead. A job that failed after the count is left alone
/// (the next look counts it); one retried meanwhile by someone else is not retried twice.
pub async fn retry_matching(State(panel): State<Shared>, mut act: Act) -> PageResult {
    let (filter, counted) = counted_filter(&act);
    if counted.is_empty() {
        return Err(PanelError::new(StatusCode::BAD_REQUEST, "no failed or dead job matched when counted: nothing was retried"));
    }
    let retried = queue::retry_matching(&panel.pool, &filter, Some(&counted)).await?;
    let details = json!({
        "filter": { "status": filter.status, "type": filter.job_type, "tenant": filter.tenant },
        "counted": counted.len(), "retried": retried.len(), "job_ids": retried,
    });
    act.audit(None, "admin.jobs_retry_matching", details).await?;
    Ok(see("/jobs?notice=retried"))
}

/// Cancels what the confirmation page counted: the jobs it listed that still match the
/// filter and have still not started. One that started meanwhile, or whose work has begun
/// changing its tenant, is left alone and named in the audit entry.
pub async fn cancel_matching(State(panel): State<Shared>, mut act: Act) -> PageResult {
    let (filter, counted) = counted_filter(&act);
    if counted.is_empty() {
        return Err(PanelError::new(StatusCode::BAD_REQUEST, "no job matched when counted: nothing was cancelled"));
    }
    let still = queue::matching(&panel.pool, &filter, super::pages::CANCELLABLE, Some(&counted)).await?;
    let actor = act.actor();
    let (mut cancelled, mut skipped) = (Vec::new(), Vec::new());
    for id in &still {
        match cancel::cancel(&panel.pool, id, &actor).await {
            Ok(done) if done.already.is_some() => {}
            Ok(done) => cancelled.push(done.job.id),
            Err(e @ (tenant_master::Error::Conflict(_) | tenant_master::Error::NotFound(_))) => {
                skipped.push(json!({ "id": id, "reason": e.to_string() }))
            }
            Err(e) => return Err(e.into()),
        }
    }
    let details = json!({
        "filter": { "status": filter.status, "type": filter.job_type, "tenant": filter.tenant },
        "counted": counted.len(), "cancelled": cancelled.len(), "job_ids": cancelled, "skipped": skipped,
    });
    act.audit(None, "admin.jobs_cancel_matching", details).await?;
    Ok(see("/jobs?notice=cancelled_many"))
}

/// The filter a confirmation page counted under, and the ids it counted.
fn counted_filter(act: &Act) -> (JobFilter, Vec<String>) {
    let filter = JobFilter {
        status: act.field("status").map(str::to_owned),
        job_type: act.field("type").map(str::to_owned),
        tenant: act.field("tenant").map(str::to_owned),
        limit: 0,
    };
    let counted = act.field("ids").unwrap_or_default().split(',').filter(|id| !id.is_empty()).map(str::to_owned).collect();
    (filter, counted)
}
