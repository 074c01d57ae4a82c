//! Running PostgreSQL's client tools (`pg_dump`, `pg_restore`).
//!
//! Connection details go to the child through the environment (`PGHOST`, `PGPASSWORD`, ...),
//! never argv, where any user could read a password. The child is killed if the worker
//! dies, so an orphaned `pg_dump` never keeps writing after its job moved to another worker.

use std::{os::unix::fs::OpenOptionsExt, path::Path, process::Stdio};

use tokio::process::Command;

use crate::{
    config::redact_url,
    error::{Error, Result},
};

/// Where a tool should connect: a database on a host, from the host's admin URL.
#[derive(Clone)]
pub struct Target {
    env: Vec<(&'static str, String)>,
}

impl Target {
    /// Connection of `admin_url`, switched to `database`.
    pub fn new(admin_url: &str, database: &str) -> Result<Target> {
        let url =
            url::Url::parse(admin_url).map_err(|e| Error::Invalid(format!("database URL {} is not valid: {e}", redact_url(admin_url))))?;
        let decode =
            |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default();
        let mut env = vec![("PGDATABASE", database.to_owned()), ("PGHOST", url.host_str().unwrap_or("127.0.0.1").to_owned())];
        if let Some(port) = url.port() {
            env.push(("PGPORT", port.to_string()));
        }
        let user = match url.username() {
            "" => std::env::var("PGUSER").ok().or_else(crate::system::os_user),
            user => Some(decode(user)),
        };
        if let Some(user) = user {
            env.push(("PGUSER", user));
        }
        if let Some(password) = url.password() {
            env.push(("PGPASSWORD", decode(password)));
        }
        Ok(Target { env })
    }

    /// The same server and database, logged in as `user` with `password` instead.
    pub fn login_as(mut self, user: &str, password: &str) -> Target {
        self.env.retain(|(k, _)| !matches!(*k, "PGUSER" | "PGPASSWORD"));
        self.env.push(("PGUSER", user.to_owned()));
        self.env.push(("PGPASSWORD", password.to_owned()));
        self
    }

    /// Server settings for the tool's session (`PGOPTIONS`), e.g. its time limits.
    pub fn settings(mut self, settings: &[(&str, &str)]) -> Target {
        let options: Vec<String> = settings.iter().map(|(k, v)| format!("-c {k}={v}")).collect();
        self.env.retain(|(k, _)| *k != "PGOPTIONS");
        self.env.push(("PGOPTIONS", options.join(" ")));
        self
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_remove("PGSERVICE").envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // What pg_dump writes (a tenant's every row) is the owner's alone.
                libc::umask(0o077);
                Ok(())
            });
        }
        cmd
    }

    /// `pg_dump` of one schema, custom format, compressed, into `out`.
    pub async fn dump_schema(&self, schema: &str, out: &Path) -> Result<()> {
        let mut cmd = self.command("pg_dump");
        // A tenant holding a lock on one of its tables must not hold a heavy slot for hours.
        cmd.args(["--format=custom", "--compress=6", "--no-password", "--lock-wait-timeout=30s", "--schema"])
            .arg(schema)
            .arg("--file")
            .arg(out);
        run(cmd, "pg_dump").await.map(drop)
    }

    /// `pg_restore --single-transaction --exit-on-error` of `file` into the target database,
    /// whose schema `schema` exists already (made by an admin: the tenant's rights do not
    /// include CREATE SCHEMA), so the archive's own CREATE SCHEMA entry is left out.
    pub async fn restore_into_schema(&self, file: &Path, schema: &str) -> Result<()> {
        let toc = list_archive(file).await?;
        let list: String = toc.lines().filter(|line| !creates_schema(line, schema)).map(|l| format!("{l}\n")).collect();
        let list_file = std::env::temp_dir().join(format!("tenant-master-restore-{}-{}.list", std::process::id(), ulid::Ulid::generate()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&list_file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, list.as_bytes()))
            .map_err(|e| Error::Io { context: format!("failed to write {}", list_file.display()), source: e })?;
        let mut cmd = self.command("pg_restore");
        cmd.args(["--single-transaction", "--exit-on-error", "--no-password", "--use-list"]).arg(&list_file).arg("--dbname");
        cmd.arg(self.env.iter().find(|(k, _)| *k == "PGDATABASE").map(|(_, v)| v.as_str()).unwrap_or("postgres"));
        cmd.arg(file);
        let result = run(cmd, "pg_restore").await.map(drop);
        let _ = std::fs::remove_file(&list_file);
        result
    }
}

/// Whether a `pg_restore --list` line is the entry that creates schema `schema`
/// (`3; 2615 16385 SCHEMA - t_acme t_acme`).
fn creates_schema(line: &str, schema: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    matches!(words.as_slice(), [id, _, _, "SCHEMA", "-", name, ..] if id.ends_with(';') && *name == schema)
}

/// `pg_restore --list`: reads the whole archive's table of contents; fails on a damaged file.
pub async fn list_archive(file: &Path) -> Result<String> {
    let mut cmd = Command::new("pg_restore");
    cmd.arg("--list").arg(file).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    run(cmd, "pg_restore --list").await
}

/// The major version of a client tool (`pg_dump (PostgreSQL) 15.20` -> 15).
pub async fn major_version(tool: &str) -> Result<u32> {
    let mut cmd = Command::new(tool);
    cmd.arg("--version").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = run(cmd, tool).await?;
    parse_major(&out).ok_or_else(|| Error::fatal(format!("cannot read the version of {tool} from '{}'", out.trim())))
}

fn parse_major(version_line: &str) -> Option<u32> {
    version_line.split_whitespace().find_map(|w| w.split('.').next()?.parse().ok())
}

/// Refuses a `pg_dump`/`pg_restore` older than the server: it cannot dump it correctly.
/// The tools' versions are read once per process.
pub async fn ensure_tools_match(server_major: u32) -> Result<()> {
    static VERSIONS: tokio::sync::OnceCell<(u32, u32)> = tokio::sync::OnceCell::const_new();
    let (dump, restore) = *VERSIONS
        .get_or_try_init(|| async { Ok::<_, Error>((major_version("pg_dump").await?, major_version("pg_restore").await?)) })
        .await?;
    for (tool, major) in [("pg_dump", dump), ("pg_restore", restore)] {
        if major < server_major {
            return Err(Error::fatal(format!(
                "{tool} is version {major} but the server is {server_major}: install the PostgreSQL {server_major} client tools"
            )));
        }
    }
    Ok(())
}

async fn run(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.output().await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::fatal(format!("{what} is not installed (install the PostgreSQL client tools)")),
        _ => Error::Io { context: format!("failed to start {what}"), source: e },
    })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = stderr.lines().filter(|l| !l.trim().is_empty()).take(3).collect::<Vec<_>>().join(" / ");
    Err(Error::Tool { program: what.to_owned(), exit_code: out.status.code(), message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_major("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"), Some(15));
        assert_eq!(parse_major("pg_restore (PostgreSQL) 9.6.24"), Some(9));
    }

    #[test]
    fn only_the_schema_entry_is_left_out() {
        assert!(creates_schema("3; 2615 16385 SCHEMA - t_acme t_acme", "t_acme"));
        assert!(!creates_schema("3; 2615 16385 SCHEMA - t_acme2 t_acme2", "t_acme"));
        assert!(!creates_schema("215; 1259 16386 TABLE t_acme projects t_acme", "t_acme"));
        assert!(!creates_schema("4; 0 0 COMMENT - SCHEMA t_acme t_acme", "t_acme"));
        assert!(!creates_schema(";     SCHEMA - t_acme", "t_acme"));
    }

    #[test]
    fn secrets_go_to_the_environment() {
        let t = Target::new("postgres://admin:p%40ss@db.example:6543/postgres", "demo_acme").unwrap();
        let get = |k: &str| t.env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("PGPASSWORD").as_deref(), Some("p@ss"));
        assert_eq!(get("PGUSER").as_deref(), Some("admin"));
        assert_eq!(get("PGPORT").as_deref(), Some("6543"));
        assert_eq!(get("PGDATABASE").as_deref(), Some("demo_acme"));
    }
}
