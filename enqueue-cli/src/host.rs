//! `tenantctl key ...` and `tenantctl host ...`: the secret key and the hosts' reach.

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, process::ExitCode};

use tenant_master::{hosts, keys, secrets::SecretKey, Error};

use crate::{
    args::{HostCommand, KeyCommand},
    Ctx,
};

pub async fn key(ctx: &Ctx, cmd: KeyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCommand::Generate { file } => {
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
                    "re-sealed {} tenant password(s) under key {} ({} were already); the old key is no longer needed",
                    rotation.resealed, rotation.key_id, rotation.unchanged
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(ctx: &Ctx, cmd: HostCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        HostCommand::Lockdown { name, yes } => {
            if !yes {
                return Err(Error::Invalid(format!(
                    "host lockdown changes who may connect to databases of '{name}' that are not Tenant Master's: add --yes to confirm"
                ))
                .into());
            }
            let pool = ctx.pool().await?;
            let mut cp = pool.acquire().await?;
            let mut admin = hosts::connect_admin(&mut cp, &ctx.config, &name).await?;
            let closed = hosts::lock_down(&mut admin).await?;
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
        }
    }
    Ok(ExitCode::SUCCESS)
}
