//! `tenantctl check`: is everything in place to run? Exit 1 if something essential is not.

use std::{path::Path, process::ExitCode};

use serde::Serialize;
use sqlx::PgPool;
use tenant_master::{config::redact_url, hosts, pg_tools, products, secrets::Keyring};

use crate::Ctx;

#[derive(Serialize)]
struct Item {
    name: String,
    ok: bool,
    /// Worth fixing, but nothing stops working: shown as WARN, exit code unaffected.
    warning: bool,
    detail: String,
}

impl Item {
    fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Item {
        Item { name: name.into(), ok, warning: false, detail: detail.into() }
    }
}

pub async fn run(ctx: &Ctx, workers: u32) -> anyhow::Result<ExitCode> {
    let (mut items, server_major) = database(ctx, workers).await?;
    items.push(secret_key(ctx).await);
    items.extend(files_and_tools(&ctx.config, server_major).await);
    let all_ok = items.iter().all(|i| i.ok);
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "ok": all_ok, "checks": items }))?);
    } else {
        for i in &items {
            let state = match (i.ok, i.warning) {
                (false, _) => "FAIL",
                (true, true) => "WARN",
                (true, false) => "ok  ",
            };
            println!("{state} {:<14} {}", i.name, i.detail);
        }
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The control-plane database: reachable, migrated, the connection budget, what tenant
/// roles can reach. Also returns the server's major version.
async fn database(ctx: &Ctx, workers: u32) -> anyhow::Result<(Vec<Item>, Option<u32>)> {
    let pool = match ctx.server_pool().await {
        Ok(pool) => pool,
        Err(e) => return Ok((vec![Item::new("database", false, e.to_string())], None)),
    };
    let mut items = Vec::new();
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&pool).await?;
    let num: String = sqlx::query_scalar("SHOW server_version_num").fetch_one(&pool).await?;
    let server_major = num.parse::<u32>().ok().map(|n| n / 10000);
    items.push(Item::new("database", true, format!("{} (PostgreSQL {version})", redact_url(&ctx.config.database_url))));
    let migrated = tenant_master::migrate::ensure_current(&pool).await;
    items.push(match &migrated {
        Ok(()) => Item::new("migrations", true, "applied"),
        Err(e) => Item::new("migrations", false, e.to_string()),
    });
    items.push(connection_budget(ctx, &pool, workers).await?);
    if migrated.is_ok() {
        items.extend(reach(ctx, &pool).await?);
        items.push(cross_tenant_references(ctx, &pool).await?);
    }
    Ok((items, server_major))
}

/// The key that seals tenant passwords: readable, known to the control plane, and able to
/// open what is stored.
async fn secret_key(ctx: &Ctx) -> Item {
    match Keyring::load(&ctx.config.key_sources()).and_then(|k| k.current().map(|key| key.id().to_owned())) {
        Ok(id) => match known_to_the_control_plane(ctx, &id).await.and(opens_a_stored_secret(ctx).await) {
            Ok(Some(what)) => Item::new("secret_key", true, format!("key {id} seals tenant passwords and opens {what}")),
            Ok(None) => Item::new("secret_key", true, format!("key {id} seals tenant passwords")),
            Err(e) => Item::new("secret_key", false, e.to_string()),
        },
        Err(e) => Item::new("secret_key", false, e.to_string()),
    }
}

/// Products, the client tools backups need, the backup folder and where mail goes.
async fn files_and_tools(config: &tenant_master::Config, server_major: Option<u32>) -> Vec<Item> {
    let mut items = vec![match products::load_all(&config.products_dir) {
        Ok(list) => Item::new(
            "products",
            !list.is_empty(),
            format!("{} in {}", list.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "), config.products_dir.display()),
        ),
        Err(e) => Item::new("products", false, e.to_string()),
    }];
    for tool in ["pg_dump", "pg_restore"] {
        let found = pg_tools::major_version(tool).await;
        items.push(match (found, server_major) {
            (Ok(major), Some(server)) if major < server => Item::new(
                tool,
                false,
                format!("version {major} is older than the server ({server}): install the PostgreSQL {server} client tools"),
            ),
            (Ok(major), _) => Item::new(tool, true, format!("version {major}")),
            (Err(e), _) => Item::new(tool, false, format!("{e} (backups need it)")),
        });
    }
    items.push(Item::new("backup_dir", true, dir_state(&config.backup_dir)));
    let readable = tenant_master::private_files::readable_by_others(&config.backup_dir);
    if let Some(first) = readable.first() {
        let detail = format!(
            "{} backup file(s) or folder(s) others may read, e.g. {}: run `chmod -R go-rwx {}` (new backups are written 0600 in 0700 folders)",
            readable.len(),
            first.display(),
            config.backup_dir.display()
        );
        items.push(Item { warning: true, ..Item::new("backup_files", true, detail) });
    }
    items.push(Item::new(
        "mail",
        true,
        match std::env::var("SMTP_URL") {
            Ok(url) if !url.is_empty() => format!("SMTP {}", redact_url(&url)),
            _ => format!("no SMTP_URL: mail would be written to {}", config.mail_dir.display()),
        },
    ));
    items
}

/// Whether the control plane knows the key `id` (it sealed its rows), or has none yet.
async fn known_to_the_control_plane(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let Ok(pool) = ctx.pool().await else { return Ok(()) };
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('tenant_master.secret_keys') IS NOT NULL").fetch_one(&pool).await?;
    if !migrated {
        return Ok(());
    }
    tenant_master::keys::check_known(&mut *pool.acquire().await?, id).await?;
    Ok(())
}

/// Opens one stored tenant password, so a wrong key shows here and not in the first job
/// that needs it; names what it opened (none if there is nothing stored yet).
async fn opens_a_stored_secret(ctx: &Ctx) -> anyhow::Result<Option<String>> {
    let Ok(pool) = ctx.pool().await else { return Ok(None) };
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('tenant_master.deployment') IS NOT NULL").fetch_one(&pool).await?;
    if !migrated {
        return Ok(None);
    }
    let slug: Option<String> =
        sqlx::query_scalar("SELECT slug FROM tenant_master.tenants WHERE role_password IS NOT NULL ORDER BY id DESC LIMIT 1")
            .fetch_optional(&pool)
            .await?;
    let Some(slug) = slug else { return Ok(None) };
    let mut conn = pool.acquire().await?;
    let tenant = tenant_master::tenants::get(&mut conn, &slug).await?;
    tenant_master::tenants::role_password(&mut conn, &ctx.config, &tenant).await?;
    Ok(Some(format!("the stored password of '{slug}'")))
}

/// Whether the server can give `workers` worker processes, a scheduler and a few
/// `tenantctl` runs the connections they may open at most (the README's formula). Tenant
/// sessions count too when tenants live on this same server, as with the default host.
async fn connection_budget(ctx: &Ctx, pool: &PgPool, workers: u32) -> anyhow::Result<Item> {
    use tenant_master::worker::{peak_control_plane_connections, peak_tenant_host_connections};
    let (max, reserved): (String, String) =
        sqlx::query_as("SELECT current_setting('max_connections'), current_setting('superuser_reserved_connections')")
            .fetch_one(pool)
            .await?;
    let available = max.parse::<u32>()?.saturating_sub(reserved.parse::<u32>()?);
    let (control, tenants) = (peak_control_plane_connections(&ctx.config), peak_tenant_host_connections(&ctx.config));
    const SCHEDULER: u32 = 4;
    const TENANTCTL: u32 = 2 * 3;
    const SPARE: u32 = 10;
    let need = workers * (control + tenants) + SCHEDULER + TENANTCTL;
    let detail = format!(
        "{workers} worker(s) x ({control} control plane + {tenants} tenant sessions) + {SCHEDULER} scheduler + {TENANTCTL} for tenantctl = {need} at most, of {available} the server gives (max_connections {max} - {reserved} reserved)"
    );
    Ok(match need {
        n if n > available => Item::new(
            "connections",
            false,
            format!("{detail}: raise max_connections, or lower worker.concurrency / workers_per_type, or run fewer workers"),
        ),
        // A default install (one worker, max_connections 100) peaks at 79 of 97: fine. What
        // deserves a warning is too little room left for anything else (psql, the app).
        n if available - n < SPARE => Item {
            warning: true,
            ..Item::new(
                "connections",
                true,
                format!(
                    "{detail}: fewer than {SPARE} left for anything else; raise max_connections or lower worker.tenant_jobs_per_process"
                ),
            )
        },
        _ => Item::new("connections", true, detail),
    })
}

/// Per enabled host: which databases every role, and so every tenant role, may connect to.
async fn reach(ctx: &Ctx, pool: &PgPool) -> anyhow::Result<Vec<Item>> {
    let names = tenant_master::hosts::names(pool, true).await?;
    let mut cp = pool.acquire().await?;
    let mut items = Vec::new();
    for host in names {
        let name = format!("reach:{host}");
        let open = match hosts::connect_admin(&mut cp, &ctx.config, &host).await {
            Ok(mut admin) => hosts::open_databases(&mut admin).await,
            Err(e) => Err(e),
        };
        items.push(match open {
            Ok(open) if open.is_empty() => Item::new(name, true, "tenant roles reach their own database only"),
            Ok(open) => Item {
                warning: true,
                ..Item::new(
                    name,
                    true,
                    format!(
                        "tenant roles can connect to {}: run `tenantctl host lockdown {host}` to close them (it lists them and asks)",
                        open.join(", ")
                    ),
                )
            },
            Err(e) => Item::new(name, false, e.to_string()),
        });
    }
    Ok(items)
}

/// Objects of one tenant's schema that reference another tenant's objects in a shared
/// database: the holder can make the other's drops and migrations fail (see catalog_deps).
async fn cross_tenant_references(ctx: &Ctx, pool: &PgPool) -> anyhow::Result<Item> {
    use std::collections::BTreeMap;
    let mut cp = pool.acquire().await?;
    let tenants = tenant_master::tenants::list_live(&mut cp, &[], None, None, None).await?;
    let mut by_database: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for t in tenants.into_iter().filter(|t| t.isolation == "schema") {
        by_database.entry((t.host, t.database)).or_default().push(t.schema);
    }
    let (mut found, mut unread) = (Vec::new(), Vec::new());
    for ((host, database), schemas) in by_database.into_iter().filter(|(_, schemas)| schemas.len() > 1) {
        let read = match hosts::connect(&mut cp, &ctx.config, &host, &database).await {
            Ok(mut db) => tenant_master::catalog_deps::between(&mut db, &schemas).await,
            Err(e) => Err(e),
        };
        match read {
            Ok(references) => found.extend(references),
            Err(e) => unread.push(format!("{database} on {host}: {e}")),
        }
    }
    let name = "cross_tenant";
    if !unread.is_empty() {
        return Ok(Item { warning: true, ..Item::new(name, true, format!("could not read: {}", unread.join("; "))) });
    }
    if found.is_empty() {
        return Ok(Item::new(name, true, "no tenant's objects reference another tenant's"));
    }
    let listed: Vec<String> = found
        .iter()
        .take(5)
        .map(|r| format!("{} (tenant '{}') -> {}", r.holder, tenant_master::catalog_deps::tenant_of(&r.holder_schema), r.target))
        .collect();
    let more = if found.len() > 5 { format!(" and {} more", found.len() - 5) } else { String::new() };
    let detail = format!(
        "{} reference(s) into another tenant's schema: {}{more}; the referenced objects cannot be dropped until the holder's are: drop them as an admin, or move either tenant to a dedicated database",
        found.len(),
        listed.join(", ")
    );
    Ok(Item { warning: true, ..Item::new(name, true, detail) })
}

fn dir_state(dir: &Path) -> String {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => format!("{} exists", dir.display()),
        Ok(_) => format!("{} is not a directory", dir.display()),
        Err(_) => format!("{} does not exist yet (created on first use)", dir.display()),
    }
}
