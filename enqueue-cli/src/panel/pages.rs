//! The pages: what `tenantctl ... list/show` prints, read through the same library calls.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use serde::Deserialize;
use tenant_master::{
    activity, backups, hosts,
    naming::Plan,
    plans,
    queue::{self, JobFilter},
    schedule, tenants,
};

use super::{
    auth::Session,
    web::{render, PageResult},
    Shared,
};
use crate::output::Pending;

/// At most this many rows in a list page; the page says when there were more.
const LIST_LIMIT: usize = 200;

/// An empty form field means "any".
fn given(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn plan_names() -> Vec<&'static str> {
    Plan::ALL.iter().map(|p| p.as_str()).collect()
}

pub async fn dashboard(State(panel): State<Shared>, me: Session) -> PageResult {
    let pool = &panel.pool;
    let counts = tenants::counts(pool).await?;
    let plans = plan_names();
    // status -> one count per plan, in the order of `plans`, then the row's total.
    let mut by_status: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for status in tenants::STATUSES {
        by_status.insert(status, vec![0; plans.len() + 1]);
    }
    for (status, plan, n) in &counts {
        if let (Some(row), Some(col)) = (by_status.get_mut(status.as_str()), plans.iter().position(|p| p == plan)) {
            row[col] += n;
            row[plans.len()] += n;
        }
    }
    let rows: Vec<(&str, Vec<i64>)> = tenants::STATUSES.iter().map(|s| (*s, by_status.remove(s).unwrap_or_default())).collect();
    let queue = queue::depth(pool).await?;
    let dead = queue::dead_within(pool, 24).await?;
    let schedules = schedule::overview(pool, &panel.config.scheduler, chrono::Utc::now()).await?;
    Ok(render("dashboard.html", minijinja::context! { me, plans, rows, queue, dead, schedules }))
}

#[derive(Deserialize)]
pub struct TenantQuery {
    q: Option<String>,
    status: Option<String>,
    plan: Option<String>,
    product: Option<String>,
    host: Option<String>,
}

pub async fn tenants(State(panel): State<Shared>, me: Session, Query(q): Query<TenantQuery>) -> PageResult {
    let filter = tenants::ListFilter {
        status: given(q.status),
        product: given(q.product),
        plan: given(q.plan),
        host: given(q.host),
        search: given(q.q),
    };
    let products = tenants::products(&panel.pool).await?;
    let host_names = hosts::names(&panel.pool, false).await?;
    let list = tenants::list(&panel.pool, &filter).await?;
    let total = list.len();
    let mut pending = Pending::new(&panel.config);
    let rows: Vec<_> = list.into_iter().take(LIST_LIMIT).map(|t| minijinja::context! { pending => pending.count(&t), t }).collect();
    Ok(render(
        "tenants.html",
        minijinja::context! {
            me, rows, total, limit => LIST_LIMIT,
            statuses => tenants::STATUSES, plans => plan_names(), products, hosts => host_names,
            filter => minijinja::context! {
                q => filter.search, status => filter.status, plan => filter.plan, product => filter.product, host => filter.host
            },
        },
    ))
}

pub async fn new_tenant(State(panel): State<Shared>, me: Session) -> PageResult {
    let products = tenants::products(&panel.pool).await?;
    let host_names = hosts::names(&panel.pool, true).await?;
    Ok(render("new_tenant.html", minijinja::context! { me, products, plans => plan_names(), hosts => host_names }))
}

pub async fn tenant(State(panel): State<Shared>, me: Session, Path(slug): Path<String>) -> PageResult {
    let mut conn = panel.pool.acquire().await?;
    let tenant = tenants::get(&mut conn, &slug).await?;
    let history = activity::recent(&mut conn, tenant.id, 50).await?;
    let plan_history = plans::history(&mut conn, tenant.id).await?;
    let backup_list = backups::list(&mut conn, tenant.id).await?;
    drop(conn);
    let jobs = queue::list(&panel.pool, &JobFilter { tenant: Some(slug.clone()), limit: 20, ..Default::default() }).await?;
    let pending = Pending::new(&panel.config).count(&tenant);
    // Provisioning, deleting, or a job of its own still running: the page follows it.
    let busy = matches!(tenant.status.as_str(), "provisioning" | "deleting")
        || jobs.iter().any(|j| matches!(j.status.as_str(), "pending" | "running"));
    Ok(render(
        "tenant.html",
        minijinja::context! {
            me, tenant, history, plan_history, backups => backup_list, jobs, pending, busy, plans => plan_names(),
            refresh => busy.then_some(2),
        },
    ))
}

#[derive(Deserialize)]
pub struct JobQuery {
    status: Option<String>,
    #[serde(rename = "type")]
    job_type: Option<String>,
    tenant: Option<String>,
    notice: Option<String>,
}

impl JobQuery {
    fn filter(self, limit: i64) -> (JobFilter, Option<String>) {
        let filter = JobFilter { status: given(self.status), job_type: given(self.job_type), tenant: given(self.tenant), limit };
        (filter, self.notice)
    }
}

pub async fn jobs(State(panel): State<Shared>, me: Session, Query(q): Query<JobQuery>) -> PageResult {
    let (filter, notice) = q.filter(LIST_LIMIT as i64);
    let list = queue::list(&panel.pool, &filter).await?;
    let types = queue::job_types(&panel.pool).await?;
    // Only fixed notices are shown: a link cannot put words in the panel's mouth.
    let notice = match notice.as_deref() {
        Some("cancelled") => Some("The job was cancelled."),
        Some("retried") => Some("The jobs were put back to pending with a fresh attempt budget."),
        _ => None,
    };
    Ok(render(
        "jobs.html",
        minijinja::context! {
            me, jobs => list, types, statuses => queue::STATUSES, notice, limit => LIST_LIMIT,
            filter => minijinja::context! { status => filter.status, type => filter.job_type, tenant => filter.tenant },
        },
    ))
}

/// What "retry all that match" would retry, counted before the admin confirms.
pub async fn retry_matching(State(panel): State<Shared>, me: Session, Query(q): Query<JobQuery>) -> PageResult {
    let (filter, _) = q.filter(0);
    let ids = queue::retryable(&panel.pool, &filter, None).await?;
    Ok(render(
        "retry.html",
        minijinja::context! {
            me, count => ids.len(), ids => ids.join(","),
            filter => minijinja::context! { status => filter.status, type => filter.job_type, tenant => filter.tenant },
        },
    ))
}

pub async fn job(State(panel): State<Shared>, me: Session, Path(id): Path<String>) -> PageResult {
    let job = queue::get(&panel.pool, &id).await?;
    let payload = serde_json::to_string_pretty(&job.payload).unwrap_or_default();
    let result = job.result.as_ref().map(|r| serde_json::to_string_pretty(r).unwrap_or_default());
    let finished = job.is_finished();
    // A failed job waits for its backoff: no need to look as often as at a running one.
    let refresh = match job.status.as_str() {
        "pending" | "running" => Some(2),
        "failed" => Some(10),
        _ => None,
    };
    Ok(render("job.html", minijinja::context! { me, job, payload, result, finished, refresh }))
}

pub async fn schedules(State(panel): State<Shared>, me: Session) -> PageResult {
    let rows = schedule::overview(&panel.pool, &panel.config.scheduler, chrono::Utc::now()).await?;
    Ok(render("schedules.html", minijinja::context! { me, schedules => rows }))
}

pub async fn hosts(State(panel): State<Shared>, me: Session) -> PageResult {
    let list = hosts::list(&panel.pool, &panel.config, None).await?;
    Ok(render("hosts.html", minijinja::context! { me, hosts => list }))
}
