//! The pages: what `tenantctl ... list/show` prints, read through the same library calls.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use serde::Deserialize;
use tenant_master::{
    activity, backups, hosts,
    naming::Plan,
    overview, plans,
    queue::{self, JobColumn, JobFilter, JobSort},
    schedule, tenants,
};

use super::{
    auth::Session,
    charts,
    listing::{sort_headers, Link, Pager, PAGE_SIZE},
    web::{render, PageResult},
    Shared,
};
use tenant_master::ops::rollout::Pending;

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
    let queue: Vec<_> =
        queue::depth(pool).await?.into_iter().filter(|q| !overview::INTERNAL_JOB_TYPES.contains(&q.job_type.as_str())).collect();
    let dead = queue::dead_within(pool, 24).await?;
    let schedules = schedule::overview(pool, &panel.config.scheduler, chrono::Utc::now()).await?;
    let workers = overview::live_workers(pool, &panel.config).await?;
    let hours = overview::throughput(pool).await?;
    let throughput = charts::hours(&hours);
    let (done_24h, failed_24h) = hours.iter().fold((0, 0), |(d, f), h| (d + h.done, f + h.failed));
    let by_product = charts::tenants_by_product_and_plan(&overview::tenants_by_product_and_plan(pool).await?);
    Ok(render(
        "dashboard.html",
        minijinja::context! { me, plans, rows, queue, dead, schedules, workers, throughput, done_24h, failed_24h, by_product },
    ))
}

#[derive(Deserialize)]
pub struct TenantQuery {
    q: Option<String>,
    status: Option<String>,
    plan: Option<String>,
    product: Option<String>,
    host: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
    page: Option<i64>,
}

/// The tenant list's sortable columns.
const TENANT_COLUMNS: &[&str] = &["slug", "plan", "status", "product", "host", "owner", "version", "created"];

/// Tenants in the order of column `sort` (then by slug), reversed if `descending`.
fn sort_tenants(list: &mut [tenants::Tenant], sort: &str, descending: bool) {
    list.sort_by(|a, b| {
        let order = match sort {
            "plan" => a.plan.cmp(&b.plan),
            "status" => a.status.cmp(&b.status),
            "product" => a.product.cmp(&b.product),
            "host" => a.host.cmp(&b.host),
            "owner" => a.owner_email.cmp(&b.owner_email),
            "version" => a.schema_version.cmp(&b.schema_version),
            "created" => a.created_at.cmp(&b.created_at),
            _ => std::cmp::Ordering::Equal,
        };
        let order = order.then_with(|| a.slug.cmp(&b.slug));
        if descending {
            order.reverse()
        } else {
            order
        }
    });
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
    let mut list = tenants::list(&panel.pool, &filter).await?;
    let sort = q.sort.filter(|s| TENANT_COLUMNS.contains(&s.as_str())).unwrap_or_else(|| "slug".into());
    let descending = q.dir.as_deref() == Some("desc");
    sort_tenants(&mut list, &sort, descending);
    let link = Link::new(
        "/tenants",
        &[
            ("q", filter.search.as_deref()),
            ("status", filter.status.as_deref()),
            ("plan", filter.plan.as_deref()),
            ("product", filter.product.as_deref()),
            ("host", filter.host.as_deref()),
            ("sort", Some(&sort)),
            ("dir", Some(if descending { "desc" } else { "asc" })),
        ],
    );
    let pager = Pager::new(&link, q.page, list.len() as i64);
    let headers = sort_headers(&link, TENANT_COLUMNS, &sort, descending);
    let mut pending = Pending::new(&panel.config);
    let rows: Vec<_> = list
        .into_iter()
        .skip(pager.offset() as usize)
        .take(PAGE_SIZE as usize)
        .map(|t| minijinja::context! { pending => pending.count(&t), t })
        .collect();
    Ok(render(
        "tenants.html",
        minijinja::context! {
            me, rows, pager, headers,
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

#[derive(Deserialize)]
pub struct TenantPageQuery {
    /// The page of its history.
    page: Option<i64>,
}

pub async fn tenant(State(panel): State<Shared>, me: Session, Path(slug): Path<String>, Query(q): Query<TenantPageQuery>) -> PageResult {
    let mut conn = panel.pool.acquire().await?;
    let tenant = tenants::get(&mut conn, &slug).await?;
    let plan_history = plans::history(&mut conn, tenant.id).await?;
    let backup_list = backups::list(&mut conn, tenant.id).await?;
    drop(conn);
    let log_filter = activity::LogFilter { tenant: Some(slug.clone()), ..Default::default() };
    let link = Link::new(format!("/tenants/{slug}"), &[]);
    let pager = Pager::new(&link, q.page, activity::count(&panel.pool, &log_filter).await?);
    let entries = activity::search(&panel.pool, &log_filter, PAGE_SIZE, pager.offset()).await?;
    let history = history_by_day(entries);
    let jobs = queue::list(&panel.pool, &JobFilter { tenant: Some(slug.clone()), limit: 20, ..Default::default() }).await?;
    let pending = Pending::new(&panel.config).count(&tenant);
    // Provisioning, deleting, or a job of its own still running: the page follows it.
    let busy = matches!(tenant.status.as_str(), "provisioning" | "deleting")
        || jobs.iter().any(|j| matches!(j.status.as_str(), "pending" | "running"));
    Ok(render(
        "tenant.html",
        minijinja::context! {
            me, tenant, history, pager, plan_history, backups => backup_list, jobs, pending, busy, plans => plan_names(),
            refresh => busy.then_some(2),
        },
    ))
}

/// A day of history: its entries, runs of the same action by the same actor folded into
/// one line with a count (a night's `backup.created` and `backup.retention` are two lines).
#[derive(serde::Serialize)]
struct Day {
    day: String,
    entries: Vec<Folded>,
}

#[derive(serde::Serialize)]
struct Folded {
    entry: activity::LogEntry,
    /// Entries folded into this one (1 when alone).
    times: usize,
    /// Its details as `key: value` lines, for reading without JSON.
    details: Vec<(String, String)>,
}

fn history_by_day(entries: Vec<activity::LogEntry>) -> Vec<Day> {
    let mut days: Vec<Day> = Vec::new();
    for entry in entries {
        let day = entry.at.format("%Y-%m-%d").to_string();
        if days.last().is_none_or(|d| d.day != day) {
            days.push(Day { day, entries: Vec::new() });
        }
        let today = days.last_mut().expect("pushed above");
        if let Some(last) = today.entries.last_mut() {
            if last.entry.action == entry.action && last.entry.actor == entry.actor {
                last.times += 1;
                continue;
            }
        }
        let details = match &entry.details {
            serde_json::Value::Object(map) => map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
                .collect(),
            serde_json::Value::Null => Vec::new(),
            other => vec![("details".into(), other.to_string())],
        };
        today.entries.push(Folded { entry, times: 1, details });
    }
    days
}

#[derive(Deserialize)]
pub struct JobQuery {
    status: Option<String>,
    #[serde(rename = "type")]
    job_type: Option<String>,
    tenant: Option<String>,
    notice: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
    page: Option<i64>,
}

impl JobQuery {
    fn filter(self, limit: i64) -> (JobFilter, Option<String>) {
        let filter = JobFilter { status: given(self.status), job_type: given(self.job_type), tenant: given(self.tenant), limit };
        (filter, self.notice)
    }
}

/// The notices a list page may show after an action: fixed words only, so a link cannot
/// put words in the panel's mouth.
fn notice_text(notice: Option<&str>) -> Option<&'static str> {
    match notice {
        Some("cancelled") => Some("The job was cancelled."),
        Some("cancelled_many") => {
            Some("The counted jobs were cancelled; any that started meanwhile were left alone (see the activity log).")
        }
        Some("retried") => Some("The jobs were put back to pending with a fresh attempt budget."),
        _ => None,
    }
}

pub async fn jobs(State(panel): State<Shared>, me: Session, Query(q): Query<JobQuery>) -> PageResult {
    let column = q.sort.as_deref().and_then(JobColumn::parse).unwrap_or_default();
    let sort = JobSort { column, descending: q.dir.as_deref().map_or(column == JobColumn::Id, |d| d == "desc") };
    let page = q.page;
    let (filter, notice) = q.filter(PAGE_SIZE);
    let link = Link::new(
        "/jobs",
        &[
            ("status", filter.status.as_deref()),
            ("type", filter.job_type.as_deref()),
            ("tenant", filter.tenant.as_deref()),
            ("sort", Some(column.as_str())),
            ("dir", Some(if sort.descending { "desc" } else { "asc" })),
        ],
    );
    let pager = Pager::new(&link, page, queue::count(&panel.pool, &filter).await?);
    let list = queue::list_sorted(&panel.pool, &filter, sort, pager.offset()).await?;
    let columns: Vec<&str> = JobColumn::ALL.iter().map(|c| c.as_str()).collect();
    let headers = sort_headers(&link, &columns, column.as_str(), sort.descending);
    let types: Vec<String> =
        queue::job_types(&panel.pool).await?.into_iter().filter(|t| !overview::INTERNAL_JOB_TYPES.contains(&t.as_str())).collect();
    Ok(render(
        "jobs.html",
        minijinja::context! {
            me, jobs => list, types, statuses => queue::STATUSES, notice => notice_text(notice.as_deref()), pager, headers,
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

/// The jobs that have not started (pending, failed, dead) that "cancel all that match"
/// would cancel, counted before the admin confirms.
pub async fn cancel_matching(State(panel): State<Shared>, me: Session, Query(q): Query<JobQuery>) -> PageResult {
    let (filter, _) = q.filter(0);
    let matched = queue::matching(&panel.pool, &filter, CANCELLABLE, None).await?;
    let (ids, begun) = tenant_master::jobs::cancel::cancellable(&panel.pool, &matched).await?;
    let begun: Vec<_> = begun.into_iter().map(|(id, reason)| minijinja::context! { id, reason }).collect();
    Ok(render(
        "cancel.html",
        minijinja::context! {
            me, count => ids.len(), ids => ids.join(","), begun,
            filter => minijinja::context! { status => filter.status, type => filter.job_type, tenant => filter.tenant },
        },
    ))
}

/// The statuses a cancel by filter takes.
pub const CANCELLABLE: &[&str] = &["pending", "failed", "dead"];

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
    let attempts = queue::attempts(&panel.pool, &id).await?;
    Ok(render("job.html", minijinja::context! { me, job, payload, result, finished, refresh, attempts }))
}

pub async fn schedules(State(panel): State<Shared>, me: Session) -> PageResult {
    let rows = schedule::overview(&panel.pool, &panel.config.scheduler, chrono::Utc::now()).await?;
    Ok(render("schedules.html", minijinja::context! { me, schedules => rows }))
}

pub async fn hosts(State(panel): State<Shared>, me: Session) -> PageResult {
    let list = hosts::list(&panel.pool, &panel.config, None).await?;
    Ok(render("hosts.html", minijinja::context! { me, hosts => list }))
}

#[derive(Deserialize)]
pub struct ActivityQuery {
    action: Option<String>,
    actor: Option<String>,
    tenant: Option<String>,
    /// A day, `YYYY-MM-DD` (UTC): entries from its start.
    since: Option<String>,
    /// A day, `YYYY-MM-DD` (UTC): entries up to its end.
    until: Option<String>,
    page: Option<i64>,
}

/// The activity log of everything (admin actions, jobs' steps), filtered and paginated.
pub async fn activity(State(panel): State<Shared>, me: Session, Query(q): Query<ActivityQuery>) -> PageResult {
    let day = |raw: &Option<String>, name: &str| -> Result<Option<chrono::NaiveDate>, super::web::PanelError> {
        match given(raw.clone()) {
            None => Ok(None),
            // Years PostgreSQL's timestamptz holds and people mean: 1970 to 9999.
            Some(text) => chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                .ok()
                .filter(|d| (1970..=9999).contains(&chrono::Datelike::year(d)))
                .map(Some)
                .ok_or_else(|| {
                    super::web::PanelError::new(
                        axum::http::StatusCode::BAD_REQUEST,
                        format!("'{text}' is not a day like 2026-12-05 ({name})"),
                    )
                }),
        }
    };
    let (since, until) = (day(&q.since, "from")?, day(&q.until, "to")?);
    let filter = activity::LogFilter {
        action: given(q.action),
        actor: given(q.actor),
        tenant: given(q.tenant),
        since: since.map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc()),
        until: until.and_then(|d| d.succ_opt()).map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc()),
    };
    let (since_text, until_text) = (since.map(|d| d.to_string()), until.map(|d| d.to_string()));
    let link = Link::new(
        "/activity",
        &[
            ("action", filter.action.as_deref()),
            ("actor", filter.actor.as_deref()),
            ("tenant", filter.tenant.as_deref()),
            ("since", since_text.as_deref()),
            ("until", until_text.as_deref()),
        ],
    );
    let pager = Pager::new(&link, q.page, activity::count(&panel.pool, &filter).await?);
    let entries = activity::search(&panel.pool, &filter, PAGE_SIZE, pager.offset()).await?;
    let actions = activity::actions(&panel.pool).await?;
    Ok(render(
        "activity.html",
        minijinja::context! {
            me, entries, pager, actions,
            filter => minijinja::context! {
                action => filter.action, actor => filter.actor, tenant => filter.tenant, since => since_text, until => until_text
            },
        },
    ))
}
