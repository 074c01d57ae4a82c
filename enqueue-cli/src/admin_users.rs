//! `tenantctl admin user ...`: the panel's users, managed from the command line (the
//! password from the environment or stdin, asked twice on a terminal, never argv).

use std::{io::IsTerminal as _, process::ExitCode};

use sqlx::PgPool;
use tenant_master::{error::Context as _, Error, Result};
use tenant_master_panel::users::{check_name, check_role, hash, MIN_PASSWORD_CHARS, PASSWORD_ENV};

use crate::{args::AdminUserCommand, Ctx};

/// The password from the environment, else one line of stdin; on a terminal it is asked
/// twice (not echoed), so a typo does not become the password.
fn read_password() -> anyhow::Result<String> {
    let password = match std::env::var(PASSWORD_ENV) {
        Ok(p) => p,
        Err(_) if std::io::stdin().is_terminal() => {
            let first = read_line(Some("password (not shown): "))?;
            let again = read_line(Some("the same password again: "))?;
            if first != again {
                return Err(Error::Invalid("the two passwords differ: nothing was changed; run the command again".into()).into());
            }
            first
        }
        Err(_) => read_line(None)?,
    };
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::Invalid(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters: pipe it on stdin or set {PASSWORD_ENV}"
        ))
        .into());
    }
    Ok(password)
}

/// One line of stdin; with a prompt (a terminal), not echoed.
fn read_line(prompt: Option<&str>) -> anyhow::Result<String> {
    let quiet = prompt.map(|prompt| {
        eprint!("{prompt}");
        no_echo::start()
    });
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    if let Some(guard) = quiet {
        drop(guard);
        eprintln!();
    }
    read.map_err(|e| anyhow::anyhow!("could not read the password from stdin: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

#[derive(serde::Serialize, sqlx::FromRow)]
struct UserRow {
    name: String,
    role: String,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

pub async fn run(ctx: &Ctx, cmd: AdminUserCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminUserCommand::Add { name, role } => add(ctx, &name, &role).await,
        AdminUserCommand::Password { name } => set_password(ctx, &name).await,
        AdminUserCommand::Remove { name } => remove(ctx, &name).await,
        AdminUserCommand::List => list_users(ctx).await,
    }
}

/// `admin user add`: the password asked for (twice on a terminal), stored as a hash.
async fn add(ctx: &Ctx, name: &str, role: &str) -> anyhow::Result<ExitCode> {
    check_name(name)?;
    check_role(role)?;
    let password = read_password()?;
    let hashed = tokio::task::spawn_blocking(move || hash(&password)).await?;
    let pool = ctx.pool().await?;
    let added = sqlx::query("INSERT INTO tenant_master.admin_users (name, role, password_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(name)
        .bind(role)
        .bind(&hashed)
        .execute(&pool)
        .await
        .context("failed to add the admin user")?;
    if added.rows_affected() == 0 {
        return Err(Error::Conflict(format!(
            "admin user '{name}' exists already: `tenantctl admin user password {name}` sets a new password"
        ))
        .into());
    }
    audit(&pool, "admin.user_added", serde_json::json!({ "user": name, "role": role })).await?;
    say(
        ctx,
        serde_json::json!({ "user": name, "role": role }),
        format!("added {role} '{name}': they can log in to `tenantctl admin serve` now"),
    );
    Ok(ExitCode::SUCCESS)
}

/// `admin user password`: a new password ends the user's sessions and forgets their
/// failed logins.
async fn set_password(ctx: &Ctx, name: &str) -> anyhow::Result<ExitCode> {
    check_name(name)?;
    let password = read_password()?;
    let hashed = tokio::task::spawn_blocking(move || hash(&password)).await?;
    let pool = ctx.pool().await?;
    let mut tx = pool.begin().await.context("failed to begin")?;
    let changed = sqlx::query("UPDATE tenant_master.admin_users SET password_hash = $2, updated_at = now() WHERE name = $1")
        .bind(name)
        .bind(&hashed)
        .execute(&mut *tx)
        .await
        .context("failed to set the password")?;
    if changed.rows_affected() == 0 {
        return Err(Error::NotFound(format!("there is no admin user '{name}': see `tenantctl admin user list`")).into());
    }
    // A new password logs out every session that knew the old one, and clears the
    // user's failed logins (what the refusal page tells a locked-out admin to do).
    sqlx::query("DELETE FROM tenant_master.admin_login_failures WHERE user_name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await
        .context("failed to clear the failed logins")?;
    sqlx::query("DELETE FROM tenant_master.admin_sessions WHERE user_name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await
        .context("failed to end the sessions")?;
    tx.commit().await.context("failed to commit")?;
    audit(&pool, "admin.user_password_set", serde_json::json!({ "user": name })).await?;
    say(
        ctx,
        serde_json::json!({ "user": name }),
        format!("set a new password for '{name}'; their open sessions were ended and their failed logins forgotten"),
    );
    Ok(ExitCode::SUCCESS)
}

async fn remove(ctx: &Ctx, name: &str) -> anyhow::Result<ExitCode> {
    check_name(name)?;
    let pool = ctx.pool().await?;
    let removed = sqlx::query("DELETE FROM tenant_master.admin_users WHERE name = $1")
        .bind(name)
        .execute(&pool)
        .await
        .context("failed to remove the admin user")?;
    if removed.rows_affected() == 0 {
        return Err(Error::NotFound(format!("there is no admin user '{name}': see `tenantctl admin user list`")).into());
    }
    audit(&pool, "admin.user_removed", serde_json::json!({ "user": name })).await?;
    say(ctx, serde_json::json!({ "user": name, "removed": true }), format!("removed '{name}' and ended their sessions"));
    Ok(ExitCode::SUCCESS)
}

async fn list_users(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let pool = ctx.pool().await?;
    let users: Vec<UserRow> = list(&pool).await?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&users)?);
    } else if users.is_empty() {
        println!("no admin users: add the first with `tenantctl admin user add NAME --role admin`");
    } else {
        println!("{:<24} {:<8} CREATED", "NAME", "ROLE");
        for u in users {
            println!("{:<24} {:<8} {}", u.name, u.role, u.created_at.format("%Y-%m-%d %H:%M"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(pool: &PgPool) -> Result<Vec<UserRow>> {
    sqlx::query_as("SELECT name, role, created_at, updated_at FROM tenant_master.admin_users ORDER BY name")
        .fetch_all(pool)
        .await
        .context("failed to list the admin users")
}

/// User management is an admin action too: logged with the OS user as actor.
async fn audit(pool: &PgPool, action: &str, details: serde_json::Value) -> Result<()> {
    let mut conn = pool.acquire().await.context("failed to connect")?;
    tenant_master::activity::record(&mut conn, &tenant_master::activity::default_actor(), None, action, details).await
}

fn say(ctx: &Ctx, json: serde_json::Value, text: String) {
    if ctx.json {
        println!("{json}");
    } else {
        println!("{text}");
    }
}

/// The terminal's echo off while a password is typed: back on when the guard drops, and
/// on Ctrl-C, Ctrl-\\, a hang-up or SIGTERM too (a handler restores it, then exits 130).
mod no_echo {
    use std::sync::OnceLock;

    static SAVED: OnceLock<libc::termios> = OnceLock::new();
    /// The signals that end a prompt: Ctrl-C, Ctrl-\, a closed terminal, kill.
    const SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTERM];

    extern "C" fn restore_and_exit(_: libc::c_int) {
        // Only async-signal-safe calls here.
        unsafe {
            if let Some(saved) = SAVED.get() {
                libc::tcsetattr(0, libc::TCSANOW, saved);
            }
            libc::write(2, b"\n".as_ptr().cast(), 1);
            libc::_exit(130);
        }
    }

    pub struct Guard(libc::termios);

    /// None when stdin is not a terminal whose settings can be read.
    pub fn start() -> Option<Guard> {
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return None;
            }
            let _ = SAVED.set(saved);
            let handler = restore_and_exit as extern "C" fn(libc::c_int) as libc::sighandler_t;
            for signal in SIGNALS {
                libc::signal(signal, handler);
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &quiet);
            Some(Guard(saved))
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &self.0);
                for signal in SIGNALS {
                    libc::signal(signal, libc::SIG_DFL);
                }
            }
        }
    }
}
