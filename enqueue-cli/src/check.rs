//! `tenantctl check`: is everything in place to run? Exit 1 if something essential is not.

use std::{path::Path, process::ExitCode};

use serde::Serialize;
use tenant_master::{config::redact_url, pg_tools, products};

use crate::Ctx;

#[derive(Serialize)]
struct Item {
    name: &'static str,
    ok: bool,
    detail: String,
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut items = Vec::new();
    let config = &ctx.config;
    let mut server_major = None;
    match ctx.pool().await {
        Ok(pool) => {
            let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&pool).await?;
            let num: String = sqlx::query_scalar("SHOW server_version_num").fetch_one(&pool).await?;
            server_major = num.parse::<u32>().ok().map(|n| n / 10000);
            items.push(Item { name: "database", ok: true, detail: format!("{} (PostgreSQL {version})", redact_url(&config.database_url)) });
            let migrated: bool = sqlx::query_scalar("SELECT to_regclass('tenant_master.jobs') IS NOT NULL").fetch_one(&pool).await?;
            items.push(Item {
                name: "migrations",
                ok: migrated,
                detail: if migrated { "applied".into() } else { "missing: run `tenantctl migrate`".into() },
            });
        }
        Err(e) => items.push(Item { name: "database", ok: false, detail: e.to_string() }),
    }
    items.push(match products::load_all(&config.products_dir) {
        Ok(list) => Item {
            name: "products",
            ok: !list.is_empty(),
            detail: format!("{} in {}", list.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "), config.products_dir.display()),
        },
        Err(e) => Item { name: "products", ok: false, detail: e.to_string() },
    });
    for tool in ["pg_dump", "pg_restore"] {
        let found = pg_tools::major_version(tool).await;
        items.push(match (found, server_major) {
            (Ok(major), Some(server)) if major < server => Item {
                name: tool,
                ok: false,
                detail: format!("version {major} is older than the server ({server}): install the PostgreSQL {server} client tools"),
            },
            (Ok(major), _) => Item { name: tool, ok: true, detail: format!("version {major}") },
            (Err(e), _) => Item { name: tool, ok: false, detail: format!("{e} (backups need it)") },
        });
    }
    items.push(Item { name: "backup_dir", ok: true, detail: dir_state(&config.backup_dir) });
    items.push(Item {
        name: "mail",
        ok: true,
        detail: match std::env::var("SMTP_URL") {
            Ok(url) if !url.is_empty() => format!("SMTP {}", redact_url(&url)),
            _ => format!("no SMTP_URL: mail would be written to {}", config.mail_dir.display()),
        },
    });
    let all_ok = items.iter().all(|i| i.ok);
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "ok": all_ok, "checks": items }))?);
    } else {
        for i in &items {
            println!("{} {:<11} {}", if i.ok { "ok  " } else { "FAIL" }, i.name, i.detail);
        }
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn dir_state(dir: &Path) -> String {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => format!("{} exists", dir.display()),
        Ok(_) => format!("{} is not a directory", dir.display()),
        Err(_) => format!("{} does not exist yet (created on first use)", dir.display()),
    }
}
