//! Printing: one JSON value with `--json` (stable snake_case fields), else short text.

use serde::Serialize;
use tenant_master::{activity::Entry, backups::Backup, migrate::Report, queue::JobInfo, tenants::Tenant};

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
        println!("sealed {} tenant password(s) that were stored unencrypted", report.passwords_sealed);
    }
    if report.markers_upgraded > 0 {
        println!("marked {} role(s) and database(s) of the first release as this deployment's", report.markers_upgraded);
    }
}

pub fn enqueued(ctx: &Ctx, slug: &str, job_ids: &[String]) {
    if ctx.json {
        return print_json(&serde_json::json!({ "slug": slug, "job_ids": job_ids }));
    }
    for id in job_ids {
        println!("{id}");
    }
}

#[derive(Serialize)]
struct TenantWithHistory<'a> {
    #[serde(flatten)]
    tenant: &'a Tenant,
    recent_activity: &'a [Entry],
}

pub fn tenant(ctx: &Ctx, tenant: &Tenant, history: &[Entry]) {
    if ctx.json {
        return print_json(&TenantWithHistory { tenant, recent_activity: history });
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
    ];
    for (k, v) in rows {
        println!("{k:<10} {v}");
    }
    if !history.is_empty() {
        println!("\nrecent activity:");
        for e in history {
            println!("  {}  {:<10} {:<28} {}", e.at.format("%Y-%m-%d %H:%M:%S"), e.actor, e.action, e.details);
        }
    }
}

pub fn tenant_list(ctx: &Ctx, list: &[Tenant]) {
    if ctx.json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("no tenants");
        return;
    }
    println!("{:<24} {:<12} {:<10} {:<10} {:<9} {:<30} HOST", "SLUG", "STATUS", "PLAN", "PRODUCT", "ISOLATION", "DATABASE");
    for t in list {
        println!("{:<24} {:<12} {:<10} {:<10} {:<9} {:<30} {}", t.slug, t.status, t.plan, t.product, t.isolation, t.database, t.host);
    }
}

pub fn job_ids(ctx: &Ctx, jobs: &[(String, String)]) {
    if ctx.json {
        let list: Vec<_> = jobs.iter().map(|(slug, id)| serde_json::json!({ "tenant": slug, "job_id": id })).collect();
        return print_json(&list);
    }
    for (slug, id) in jobs {
        println!("{id}  {slug}");
    }
}

pub fn finished_jobs(ctx: &Ctx, jobs: &[JobInfo]) {
    if ctx.json {
        return print_json(&jobs);
    }
    for j in jobs {
        println!("{}  {:<14} {:<24} {}", j.id, j.job_type, j.tenant.as_deref().unwrap_or("-"), j.status);
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
    println!("{:>6}  {:<12} {:>12}  {:<20} {:<16} FILE", "ID", "KIND", "BYTES", "CREATED", "SHA256");
    for b in list {
        println!(
            "{:>6}  {:<12} {:>12}  {:<20} {:<16} {}",
            b.id,
            b.kind,
            b.bytes.unwrap_or(0),
            b.created_at.format("%Y-%m-%d %H:%M:%S"),
            b.sha256.as_deref().map(|s| &s[..16.min(s.len())]).unwrap_or("-"),
            b.file_path
        );
    }
}
