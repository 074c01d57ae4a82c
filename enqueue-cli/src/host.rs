//! `tenantctl key ...` and `tenantctl host ...`: the secret key and the database hosts.

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, process::ExitCode};

use tenant_master::{hosts, keys, secrets::SecretKey, Error};

use crate::{
    args::{HostCommand, KeyCommand},
    Ctx,
};

pub async fn key(ctx: &Ctx, cmd: KeyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCommand::Generate { file } => {
            let file = match file.or_else(|| ctx.config.secret_key_file.clone()) {
                Some(file) => std::path::absolute(&file)?,
                None => return Err(Error::Invalid("no key file is configured: say where with --file PATH".into()).into()),
            };
            if let Some(folder) = file.parent() {
                tenant_master::private_files::create_dir(folder, false).await?;
            }
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .map_err(|e| Error::Invalid(format!("cannot create the key file {}: {e} (it must not exist yet)", file.display())))?;
            let text = SecretKey::generate();
            out.write_all(format!("{text}\n").as_bytes())?;
            out.sync_all()?;
            let id = SecretKey::parse(&text, "the new key")?.id().to_owned();
            println!(
                "wrote key {id} to {}; set TENANT_MASTER_SECRET_KEY_FILE={} for every Tenant Master process",
                file.display(),
                file.display()
            );
        }
        KeyCommand::Rotate => {
            let pool = ctx.pool().await?;
            let rotation = keys::rotate(&pool, &ctx.config).await?;
            if ctx.json {
                println!("{}", serde_json::to_string_pretty(&rotation)?);
            } else {
                println!(
                    "re-sealed {} tenant password(s) and host URL(s) under key {} ({} were already); the old key is no longer needed",
                    rotation.resealed, rotation.key_id, rotation.unchanged
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Lists what a lockdown changes and asks on a terminal; false without one or without a yes.
fn confirm(host: &str, open: &[String]) -> anyhow::Result<bool> {
    let mut lines = vec![format!("host lockdown takes CONNECT and TEMPORARY from PUBLIC on these databases of '{host}':")];
    lines.extend(open.iter().map(|database| format!("  {database}")));
    lines.push(
        "The admin role keeps CONNECT; any other role that relies on PUBLIC (another project's) must then be granted CONNECT by name."
            .to_owned(),
    );
    crate::confirm::ask(&lines, "Close them?")
}

/// The admin URL from `--admin-url-env VAR` or `--admin-url-file F`: never from argv.
fn admin_url(env: Option<String>, file: Option<std::path::PathBuf>) -> Result<String, Error> {
    let url = match (env, file) {
        (Some(var), _) => {
            std::env::var(&var).map_err(|_| Error::Invalid(format!("environment variable {var} is not set: put the admin URL in it")))?
        }
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| Error::Invalid(format!("cannot read the admin URL from {}: {e}", path.display())))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        (None, None) => return Err(Error::Invalid("say where the admin URL is: --admin-url-env VAR or --admin-url-file FILE".into())),
    };
    let url = url.trim().to_owned();
    if url.is_empty() {
        return Err(Error::Invalid("the admin URL is empty".into()));
    }
    Ok(url)
}

fn print_hosts(ctx: &Ctx, list: &[hosts::HostInfo]) -> anyhow::Result<()> {
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(list)?);
        return Ok(());
    }
    println!("{:<16} {:<8} {:>8} {:>9} {:<10} {:<10} PROBLEM", "NAME", "ENABLED", "TENANTS", "CAPACITY", "REACHABLE", "VERSION");
    for h in list {
        println!(
            "{:<16} {:<8} {:>8} {:>9} {:<10} {:<10} {}",
            h.name,
            if h.enabled { "yes" } else { "no" },
            h.tenants,
            h.capacity,
            if h.reachable { "yes" } else { "NO" },
            h.server_version.as_deref().unwrap_or("-"),
            h.problem.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, cmd: HostCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        HostCommand::Add { name, admin_url_env, admin_url_file, capacity } => {
            let url = admin_url(admin_url_env, admin_url_file)?;
            let pool = ctx.pool().await?;
            let added = hosts::add(&pool, &ctx.config, &name, &url, capacity).await?;
            if ctx.json {
                println!("{}", serde_json::to_string_pretty(&added)?);
            } else {
                println!(
                    "added host '{name}' (PostgreSQL {}, capacity {capacity}); its admin URL is stored sealed. Run `tenantctl host lockdown {name}` (it lists what it closes and asks) so tenant roles reach their own database only",
                    added.server_version.as_deref().unwrap_or("?")
                );
            }
        }
        HostCommand::List => {
            let pool = ctx.pool().await?;
            print_hosts(ctx, &hosts::list(&pool, &ctx.config, None).await?)?;
        }
        HostCommand::Check { name } => return check(ctx, &name).await,
        HostCommand::Disable { name } => {
            let pool = ctx.pool().await?;
            hosts::set_enabled(&pool, &name, false).await?;
            println!("host '{name}' takes no new tenants; its tenants stay (`tenantctl host enable {name}` undoes it)");
        }
        HostCommand::Enable { name } => {
            let pool = ctx.pool().await?;
            hosts::set_enabled(&pool, &name, true).await?;
            println!("host '{name}' takes new tenants again");
        }
        HostCommand::Lockdown { name, yes } => return lockdown(ctx, &name, yes).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// `host check`: reachable, healthy, and which databases tenant roles can still reach.
async fn check(ctx: &Ctx, name: &str) -> anyhow::Result<ExitCode> {
    let pool = ctx.pool().await?;
    let list = hosts::list(&pool, &ctx.config, Some(name)).await?;
    print_hosts(ctx, &list)?;
    let healthy = list.iter().all(|h| h.reachable && h.problem.is_none());
    if healthy && !ctx.json {
        let mut cp = pool.acquire().await?;
        let mut admin = hosts::connect_admin(&mut cp, &ctx.config, name).await?;
        let open = hosts::open_databases(&mut admin).await?;
        if open.is_empty() {
            println!("tenant roles reach their own database only");
        } else {
            println!("tenant roles can connect to {}: run `tenantctl host lockdown {name}` (it lists them and asks)", open.join(", "));
        }
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `host lockdown`: lists the databases every role may connect to, asks, and closes
/// exactly those.
async fn lockdown(ctx: &Ctx, name: &str, yes: bool) -> anyhow::Result<ExitCode> {
    let pool = ctx.pool().await?;
    let mut cp = pool.acquire().await?;
    let mut admin = hosts::connect_admin(&mut cp, &ctx.config, name).await?;
    // It changes grants on databases that may be other projects': say which, and ask.
    let open = hosts::open_databases(&mut admin).await?;
    if open.is_empty() {
        println!("host '{name}': no database is open to every role; nothing to change");
        return Ok(ExitCode::SUCCESS);
    }
    if !yes && !confirm(name, &open)? {
        return Err(Error::Invalid(format!(
            "nothing changed; host lockdown would take CONNECT and TEMPORARY from PUBLIC on {} of '{name}' (roles other than tenants that rely on PUBLIC must then be granted CONNECT by name): run it in a terminal to be asked, or add --yes",
            open.join(", ")
        ))
        .into());
    }
    let closed = hosts::lock_down(&mut admin, &open).await?;
    if ctx.json {
        println!("{}", serde_json::json!({ "host": name, "closed": closed }));
    } else if closed.is_empty() {
        println!("host '{name}': no database was open to every role");
    } else {
        println!(
            "host '{name}': closed {} to PUBLIC (the admin role keeps CONNECT; grant it by name to other roles that need it)",
            closed.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
