//! `tenantctl tenant ...`

use std::process::ExitCode;

use anyhow::bail;
use tenant_master::{
    activity,
    jobs::{
        access,
        change_plan::Changed,
        delete_tenant,
        move_tenant::{self, Requested},
        provision_tenant,
    },
    ops::{access::Change, moves, place::Place},
    tenants::{self, ListFilter, NewTenant, Tenant},
    Error,
};

use crate::{
    args::{CreateArgs, Request, TenantCommand},
    output, wait, Ctx,
};

/// The tenant a repeated `tenant create` asks for, already made or being made, and the
/// job provisioning it (to follow); none when the slug is taken by something else.
async fn already_made(pool: &sqlx::PgPool, new: &NewTenant) -> anyhow::Result<Option<(Tenant, Option<String>)>> {
    let mut conn = pool.acquire().await?;
    let Some(tenant) = tenants::find(&mut conn, new.slug.as_str()).await? else { return Ok(None) };
    if !new.already_made_as(&tenant) {
        return Ok(None);
    }
    let job_id = tenant_master::jobs::provision_tenant::provision_job(&mut conn, new).await?;
    Ok(Some((tenant, job_id)))
}

/// Enqueues a pause/suspend/resume (`Some`) or a deletion (`None`), optionally waiting.
async fn lifecycle(ctx: &Ctx, slug: &str, change: Option<Change>, reason: Option<&str>, request: Request) -> anyhow::Result<ExitCode> {
    let pool = ctx.pool().await?;
    let actor = request.actor.unwrap_or_else(activity::default_actor);
    let underway = if change.is_none() { "deleted" } else { "changed" };
    let requested = match change {
        Some(change) => access::request_change(&pool, slug, change, reason, &actor).await?,
        None => delete_tenant::request_delete(&pool, slug, &actor).await?,
    };
    let job_id = match requested {
        access::Requested::Enqueued(job_id) => job_id,
        // Already there is success (exit 0): what a reconciling script asked for holds.
        access::Requested::Already(status) => {
            if ctx.json {
                println!("{}", serde_json::json!({ "slug": slug, "status": status, "changed": false }));
            } else {
                println!("'{slug}' is {status} already: nothing to do");
            }
            return Ok(ExitCode::SUCCESS);
        }
        access::Requested::Underway(job_id) => {
            eprintln!("'{slug}' is being {underway} already by job {job_id}: nothing new was enqueued");
            job_id
        }
    };
    if !request.wait {
        output::job_ids(ctx, &[(slug.to_owned(), job_id)]);
        return Ok(ExitCode::SUCCESS);
    }
    let finished = wait::jobs(ctx, &pool, std::slice::from_ref(&job_id), request.timeout).await?;
    if let Some(dead) = finished.iter().find(|j| j.status != "done") {
        bail!(
            "{} of '{slug}' failed: {}; see `tenantctl tenant show {slug}`",
            dead.job_type,
            dead.last_error.as_deref().unwrap_or("no error recorded")
        );
    }
    let mut conn = pool.acquire().await?;
    let tenant = tenants::get(&mut conn, slug).await?;
    output::tenant(ctx, &tenant, &[], &[]);
    Ok(ExitCode::SUCCESS)
}

fn plan_changed(ctx: &Ctx, tenant: &tenants::Tenant, changed: bool) -> anyhow::Result<ExitCode> {
    let (slug, plan) = (&tenant.slug, &tenant.plan);
    if ctx.json {
        println!("{}", serde_json::json!({ "slug": slug, "plan": plan, "changed": changed }));
    } else if changed {
        println!("'{slug}' is on plan {plan} now (see its history with `tenantctl tenant show {slug}`)");
    } else {
        println!("'{slug}' is on plan {plan} already: nothing changed");
    }
    Ok(ExitCode::SUCCESS)
}

/// Says what a move request enqueued and, with --wait, follows it to its end.
async fn follow_move(
    ctx: &Ctx,
    pool: &sqlx::PgPool,
    slug: &str,
    job_id: &str,
    from: &Place,
    to: &Place,
    request: &Request,
) -> anyhow::Result<ExitCode> {
    if !request.wait {
        if ctx.json {
            println!("{}", serde_json::json!({ "slug": slug, "job_id": job_id, "from": from, "to": to }));
        } else {
            println!(
                "enqueued MoveTenant job {job_id}: '{slug}' moves from {} {} on host '{}' to {} {} on host '{}'; follow it with `tenantctl jobs show {job_id}`",
                from.isolation, from.database, from.host, to.isolation, to.database, to.host
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let finished = wait::jobs(ctx, pool, &[job_id.to_owned()], request.timeout).await?;
    let mut conn = pool.acquire().await?;
    let moved = moves::outcome(&mut conn, job_id).await?;
    if let Some(dead) = finished.iter().find(|j| j.status != "done") {
        let error = dead.last_error.as_deref().unwrap_or("no error recorded");
        match moved {
            None => bail!(
                "the move of '{slug}' failed: {error}; it stays where it was (see `tenantctl jobs show {job_id}`; fix the cause, then `tenantctl jobs retry {job_id}`)"
            ),
            Some(_) => bail!(
                "the move of '{slug}' switched it to its new place, then failed: {error}; `tenantctl jobs retry {job_id}` finishes it (its login may be held until then)"
            ),
        }
    }
    if ctx.json {
        println!("{}", serde_json::json!({ "slug": slug, "job_id": job_id, "moved": moved }));
    } else if let Some(m) = moved {
        println!(
            "moved '{slug}' to the {} database {} on host '{}': {} table(s), {} row(s) verified, down (login held) {} ms; the source copy is kept until {}",
            if m.to.isolation == "database" { "dedicated" } else { "shared" },
            m.to.database,
            m.to.host,
            m.tables,
            m.rows,
            m.downtime_ms.unwrap_or(0),
            m.source_kept_until.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
        );
    } else {
        println!("'{slug}' needed no move");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(ctx: &Ctx, cmd: TenantCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TenantCommand::Create(args) => create(ctx, args).await,
        TenantCommand::List { status, product, plan, host, search, outdated } => {
            list(ctx, ListFilter { status, product, plan, host, search }, outdated).await
        }
        TenantCommand::Migrate(args) => crate::rollout::run(ctx, args).await,
        TenantCommand::ChangePlan { slug, plan, host, request } => change_plan(ctx, &slug, &plan, host.as_deref(), &request).await,
        TenantCommand::Move { slug, host, request } => move_to(ctx, &slug, &host, &request).await,
        TenantCommand::Show { slug } => show(ctx, &slug).await,
        TenantCommand::Pause { slug, reason, request } => lifecycle(ctx, &slug, Some(Change::Pause), reason.as_deref(), request).await,
        TenantCommand::Suspend { slug, reason, request } => lifecycle(ctx, &slug, Some(Change::Suspend), Some(&reason), request).await,
        TenantCommand::Resume { slug, request } => lifecycle(ctx, &slug, Some(Change::Resume), None, request).await,
        TenantCommand::Delete { slug, yes, request } => {
            if !yes {
                return Err(Error::Invalid(format!(
                    "deleting '{slug}' drops its data and role (after a verified backup): add --yes to go ahead"
                ))
                .into());
            }
            lifecycle(ctx, &slug, None, None, request).await
        }
        TenantCommand::Credentials { slug } => credentials(ctx, &slug).await,
    }
}

/// `tenant create`: registers the tenant and enqueues its provisioning (and follows it
/// with `--wait`). The same request again is success.
async fn create(ctx: &Ctx, a: CreateArgs) -> anyhow::Result<ExitCode> {
    // Validate before touching the database: bad input never gets as far as a row.
    let new = NewTenant::parse(&a.slug, &a.product, &a.plan, &a.owner_email, a.name.as_deref(), a.host.as_deref())?;
    let actor = a.actor.unwrap_or_else(activity::default_actor);
    let pool = ctx.pool().await?;
    let (tenant, job_id) = match provision_tenant::create_in_new_transaction(&pool, &ctx.config, &new, &actor).await {
        Ok(created) => created,
        Err(Error::Conflict(why)) => match asked_again(ctx, &pool, &new, a.wait).await? {
            Again::Follow(tenant, job_id) => (*tenant, job_id),
            Again::Done => return Ok(ExitCode::SUCCESS),
            Again::Different => return Err(Error::Conflict(why).into()),
        },
        Err(e) => return Err(e.into()),
    };
    if !a.wait {
        output::enqueued(ctx, &tenant.slug, &[job_id]);
        return Ok(ExitCode::SUCCESS);
    }
    let jobs = wait::jobs(ctx, &pool, &[job_id], a.timeout).await?;
    let mut conn = pool.acquire().await?;
    let tenant = tenants::get(&mut conn, &tenant.slug).await?;
    if let Some(dead) = jobs.iter().find(|j| j.status != "done") {
        bail!(
            "provisioning of '{}' failed: {}; see `tenantctl tenant show {}`, fix the cause, then create it again or retry job {}",
            tenant.slug,
            dead.last_error.as_deref().unwrap_or("no error recorded"),
            tenant.slug,
            dead.id
        );
    }
    output::tenant(ctx, &tenant, &[], &[]);
    Ok(ExitCode::SUCCESS)
}

/// What a `tenant create` for a slug that is taken comes to.
enum Again {
    /// The same tenant, still being provisioned, and `--wait`: follow its job.
    Follow(Box<Tenant>, String),
    /// The same tenant: said so, nothing more to do.
    Done,
    /// Another tenant (another plan or owner): a conflict.
    Different,
}

/// Asked again for what exists or is being made: success, as for pause.
async fn asked_again(ctx: &Ctx, pool: &sqlx::PgPool, new: &NewTenant, wait: bool) -> anyhow::Result<Again> {
    let Some((tenant, job_id)) = already_made(pool, new).await? else { return Ok(Again::Different) };
    let following = job_id.filter(|_| tenant.status == "provisioning");
    if ctx.json && !(wait && following.is_some()) {
        let ids: Vec<&String> = following.iter().collect();
        println!("{}", serde_json::json!({ "slug": tenant.slug, "status": tenant.status, "job_ids": ids, "changed": false }));
        return Ok(Again::Done);
    }
    eprintln!("tenant '{}' already exists as asked ({}, plan {}): nothing new was enqueued", tenant.slug, tenant.status, tenant.plan);
    Ok(match following {
        Some(job_id) if wait => Again::Follow(Box::new(tenant), job_id),
        Some(job_id) => {
            output::job_ids(ctx, &[(tenant.slug, job_id)]);
            Again::Done
        }
        None => Again::Done,
    })
}

async fn list(ctx: &Ctx, filter: ListFilter, outdated: bool) -> anyhow::Result<ExitCode> {
    let pool = ctx.pool().await?;
    let list = tenants::list(&pool, &filter).await?;
    let mut pending = tenant_master::ops::rollout::Pending::new(&ctx.config);
    let list: Vec<_> = list
        .into_iter()
        .map(|t| {
            let n = pending.count(&t);
            (t, n)
        })
        .filter(|(_, n)| !outdated || n.is_some_and(|n| n > 0))
        .collect();
    output::tenant_list(ctx, &list);
    Ok(ExitCode::SUCCESS)
}

async fn change_plan(ctx: &Ctx, slug: &str, plan: &str, host: Option<&str>, request: &Request) -> anyhow::Result<ExitCode> {
    let pool = ctx.pool().await?;
    let actor = request.actor.clone().unwrap_or_else(activity::default_actor);
    match tenant_master::jobs::change_plan::change(&pool, &ctx.config, slug, plan, host, &actor).await? {
        Changed::Moving { job_id, from, to } => follow_move(ctx, &pool, slug, &job_id, &from, &to, request).await,
        Changed::Changed(tenant) => plan_changed(ctx, &tenant, true),
        Changed::Unchanged(tenant) => plan_changed(ctx, &tenant, false),
    }
}

async fn move_to(ctx: &Ctx, slug: &str, host: &str, request: &Request) -> anyhow::Result<ExitCode> {
    let pool = ctx.pool().await?;
    let actor = request.actor.clone().unwrap_or_else(activity::default_actor);
    match move_tenant::enqueue(&pool, &ctx.config, slug, Some(host), None, &actor).await? {
        Requested::Enqueued { job_id, from, to } => follow_move(ctx, &pool, slug, &job_id, &from, &to, request).await,
        Requested::AlreadyThere(place) => {
            if ctx.json {
                println!("{}", serde_json::json!({ "slug": slug, "moved": false, "host": place.host, "database": place.database }));
            } else {
                println!("'{slug}' is on host '{}' already: nothing to move", place.host);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn show(ctx: &Ctx, slug: &str) -> anyhow::Result<ExitCode> {
    let pool = ctx.pool().await?;
    let mut conn = pool.acquire().await?;
    let tenant = tenants::get(&mut conn, slug).await?;
    let history = activity::recent(&mut conn, tenant.id, 20).await?;
    let plans = tenant_master::plans::history(&mut conn, tenant.id).await?;
    output::tenant(ctx, &tenant, &history, &plans);
    Ok(ExitCode::SUCCESS)
}

/// `tenant credentials`: the one command that prints a secret (and says when it cannot
/// log in yet).
async fn credentials(ctx: &Ctx, slug: &str) -> anyhow::Result<ExitCode> {
    let pool = ctx.pool().await?;
    let mut conn = pool.acquire().await?;
    let url = tenants::credentials_url(&mut conn, &ctx.config, slug).await?;
    let tenant = tenants::get(&mut conn, slug).await?;
    let can_log_in = tenant.status == "active";
    if ctx.json {
        println!("{}", serde_json::json!({ "slug": slug, "url": url, "status": tenant.status, "can_log_in": can_log_in }));
    } else {
        println!("{url}");
        if !can_log_in {
            let next = match tenant.status.as_str() {
                "paused" | "suspended" => format!("until `tenantctl tenant resume {slug}`"),
                "provisioning" => "until its provisioning finishes".to_owned(),
                _ => "for now".to_owned(),
            };
            eprintln!("note: '{slug}' is {}: this URL cannot log in {next}", tenant.status);
        }
    }
    Ok(ExitCode::SUCCESS)
}
