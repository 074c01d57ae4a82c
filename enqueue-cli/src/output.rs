//! Printing: one JSON value with `--json` (stable snake_case fields), else short text.

use serde::Serialize;
use tenant_master::{activity::Entry, backups::Backup, migrate::Report, plans::PlanChange, queue::JobInfo, tenants::Tenant};

use crate::Ctx;

fn print_json(value: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(value).expect("output serializes"));
}

pub fn migrate_report(ctx: &Ctx, report: &Report) {
    if ctx.json {
        return print_json(report);
    }
    if report.database_created {
        println!("created the control-plane database");
    }
    match report.applied.as_slice() {
        [] => println!("control-plane schema is up to date"),
        applied => println!("applied migrations: {}", applied.join(", ")),
    }
    println!("products: {}", report.products.join(", "));
    if report.passwords_sealed > 0 {
        println!("sealed {} tenant password(s) or host URL(s) that were stored unencrypted", report.passwords_sealed);
    }
    if report.markers_upgraded > 0 {
        println!("marked {} role(s) and database(s) of the first release as this deployment's", report.markers_upgraded);
    }
    match report.tenants_behind {
        Some(0) => {}
        Some(n) => println!(
            "{n} tenant(s) lack product migrations: see `tenantctl tenant migrate --all --dry-run`, then roll them out with `tenantctl tenant migrate --all --wait`"
        ),
        None => println!("could not read every tenant's migration ledger (see the log): `tenantctl tenant migrate --all --dry-run` says which tenant failed"),
    }
    if report.tenants_conflicting > 0 {
        println!(
            "{} tenant(s) have a migration ledger that disagrees with the product's files and are skipped by rollouts: `tenantctl tenant migrate --all --dry-run` names them",
            report.tenants_conflicting
        );
    }
}

pub fn enqueued(ctx: &Ctx, slug: &str, job_ids: &[String]) {
    if ctx.json {
        return print_json(&serde_json::json!({ "slug": slug, "job_ids": job_ids }));
    }
    for id in job_ids {
        println!(
            "enqueued ProvisionTenant job {id} for '{slug}'; follow it with `tenantctl tenant show {slug}` or `tenantctl jobs show {id}`"
        );
    }
}

#[derive(Serialize)]
struct TenantWithHistory<'a> {
    #[serde(flatten)]
    tenant: &'a Tenant,
    pending: Option<usize>,
    plan_history: &'a [PlanChange],
    recent_activity: &'a [Entry],
}

#[derive(Serialize)]
struct TenantWithPending<'a> {
    #[serde(flatten)]
    tenant: &'a Tenant,
    pending: Option<usize>,
}

pub fn tenant(ctx: &Ctx, tenant: &Tenant, history: &[Entry], plans: &[PlanChange]) {
    let pending = tenant_master::ops::rollout::Pending::new(&ctx.config).count(tenant);
    if ctx.json {
        return print_json(&TenantWithHistory { tenant, pending, plan_history: plans, recent_activity: history });
    }
    let rows = [
        ("slug", tenant.slug.clone()),
        ("name", tenant.name.clone()),
        (
            "status",
            match &tenant.status_reason {
                Some(reason) => format!("{} ({reason})", tenant.status),
                None => tenant.status.clone(),
            },
        ),
        ("product", tenant.product.clone()),
        ("plan", tenant.plan.clone()),
        ("isolation", tenant.isolation.clone()),
        ("host", tenant.host.clone()),
        ("database", tenant.database.clone()),
        ("schema", tenant.schema.clone()),
        ("role", tenant.role.clone()),
        ("owner", tenant.owner_email.clone()),
        ("created", tenant.created_at.to_rfc3339()),
        (
            "version",
            match (tenant.schema_version, pending) {
                (Some(v), Some(0)) => format!("{v:04} (up to date)"),
                (Some(v), Some(n)) => format!("{v:04} ({n} pending: `tenantctl tenant migrate {}`)", tenant.slug),
                (Some(v), None) => format!("{v:04}"),
                (None, _) => "unknown (run `tenantctl migrate` to read it)".to_owned(),
            },
        ),
    ];
    for (k, v) in rows {
        println!("{k:<10} {v}");
    }
    if let Some(error) = &tenant.migration_error {
        println!("{:<10} the last rollout failed: {error}", "migration");
    }
    if !plans.is_empty() {
        println!("\nplan history:");
        for p in plans {
            println!("  {}  {:<10} {} -> {}", p.changed_at.format("%Y-%m-%d %H:%M:%S"), p.actor, p.from_plan, p.to_plan);
        }
    }
    if !history.is_empty() {
        println!("\nrecent activity:");
        for e in history {
            println!("  {}  {:<10} {:<28} {}", e.at.format("%Y-%m-%d %H:%M:%S"), e.actor, e.action, e.details);
        }
    }
}

pub fn tenant_list(ctx: &Ctx, list: &[(Tenant, Option<usize>)]) {
    if ctx.json {
        let rows: Vec<_> = list.iter().map(|(tenant, pending)| TenantWithPending { tenant, pending: *pending }).collect();
        return print_json(&rows);
    }
    if list.is_empty() {
        println!("no tenants");
        return;
    }
    let rows = list
        .iter()
        .map(|(t, pending)| {
            let version = match (t.schema_version, pending) {
                (Some(v), Some(n)) if *n > 0 => format!("{v:04}+{n}"),
                (Some(v), _) => format!("{v:04}"),
                (None, _) => "-".to_owned(),
            };
            vec![
                t.slug.clone(),
                t.status.clone(),
                t.plan.clone(),
                t.product.clone(),
                t.isolation.clone(),
                t.database.clone(),
                version,
                t.host.clone(),
            ]
        })
        .collect();
    table(&["SLUG", "STATUS", "PLAN", "PRODUCT", "ISOLATION", "DATABASE", "VERSION", "HOST"], rows);
}

pub fn job_ids(ctx: &Ctx, jobs: &[(String, String)]) {
    if ctx.json {
        let list: Vec<_> = jobs.iter().map(|(slug, id)| serde_json::json!({ "tenant": slug, "job_id": id })).collect();
        return print_json(&list);
    }
    for (slug, id) in jobs {
        println!("{id}  {slug}");
    }
    // Stdout keeps one `<job id>  <slug>` line per job for scripts; the hint goes to stderr.
    match jobs {
        [] => {}
        [(_, id)] => eprintln!("enqueued; follow it with `tenantctl jobs show {id}` (add --wait next time to follow it here)"),
        _ => eprintln!(
            "enqueued {} jobs; follow them with `tenantctl jobs list --status pending` (add --wait next time to follow them here)",
            jobs.len()
        ),
    }
}

pub fn finished_jobs(ctx: &Ctx, jobs: &[JobInfo]) {
    if ctx.json {
        return print_json(&jobs);
    }
    for j in jobs {
        let result = j.result.as_ref().filter(|r| !r.is_null()).map(|r| format!("  {r}")).unwrap_or_default();
        println!("{}  {:<14} {:<24} {}{result}", j.id, j.job_type, j.tenant.as_deref().unwrap_or("-"), j.status);
    }
}

pub fn backup_list(ctx: &Ctx, list: &[Backup]) {
    if ctx.json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("no backups");
        return;
    }
    let rows = list
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                b.kind.clone(),
                b.bytes.unwrap_or(0).to_string(),
                b.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                b.sha256.as_deref().map(|s| &s[..16.min(s.len())]).unwrap_or("-").to_owned(),
                b.file_path.clone(),
            ]
        })
        .collect();
    table(&[">ID", "KIND", ">BYTES", "CREATED", "SHA256", "FILE"], rows);
}

/// Prints rows under `header` in columns as wide as their longest value, so a long kind,
/// plan or slug never shifts the ones after it; a header starting with `>` is right-aligned.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let names: Vec<&str> = header.iter().map(|h| h.trim_start_matches('>')).collect();
    let widths: Vec<usize> =
        (0..header.len()).map(|i| rows.iter().map(|r| r[i].chars().count()).chain([names[i].len()]).max().unwrap_or(0)).collect();
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let last = i + 1 == cells.len();
            let pad = widths[i].saturating_sub(cell.chars().count());
            if header[i].starts_with('>') {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                if !last {
                    out.push_str(&" ".repeat(pad));
                }
            }
            if !last {
                out.push_str("  ");
            }
        }
        println!("{out}");
    };
    line(&names);
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

/// One progress line on a terminal (`what done/total`), ended when the work is.
pub fn progress(ctx: &Ctx, what: &str, done: usize, total: usize) {
    use std::io::IsTerminal;
    if ctx.json || !std::io::stderr().is_terminal() {
        return;
    }
    eprint!("\r\x1b[2K{what} {done}/{total}");
    if done == total {
        eprintln!();
    }
}
