//! A private PostgreSQL server for tests that must restart or stop a server: `initdb` into
//! a temporary folder, its own port and socket folder, removed (stopped at once) on drop.
//! Never the shared test server.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// A running private server.
pub struct PrivateServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    max_connections: u32,
    /// Extra `-c name=value` settings.
    settings: String,
}

impl PrivateServer {
    /// Creates and starts a server (trust authentication, a superuser named like the
    /// account running the tests), listening on 127.0.0.1 only.
    pub fn start() -> PrivateServer {
        PrivateServer::start_with(100)
    }

    /// [`PrivateServer::start`] with room for `max_connections` sessions.
    pub fn start_with(max_connections: u32) -> PrivateServer {
        PrivateServer::start_configured(max_connections, false)
    }

    /// A server as production runs one: every role but the superuser (the test's admin,
    /// still trusted) logs in over TCP with its password (scram-sha-256), and every
    /// connection is logged (`log_connections`; see [`PrivateServer::log`]).
    pub fn start_with_passwords() -> PrivateServer {
        PrivateServer::start_configured(100, true)
    }

    fn start_configured(max_connections: u32, passwords: bool) -> PrivateServer {
        let bin = bindir();
        let dir = std::env::temp_dir().join(format!("tm-pg-{}", super::random_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        if running_as_root() {
            // initdb refuses to run as root: the cluster belongs to the `postgres` account.
            let status = Command::new("chown").arg("postgres:postgres").arg(&dir).status().unwrap();
            assert!(status.success(), "chown of {} failed", dir.display());
        }
        let port = free_port();
        let settings = if passwords { " -c log_connections=on".to_owned() } else { String::new() };
        let server = PrivateServer { dir, bin, port, max_connections, settings };
        // The superuser has the name of the account running the tests, as on the shared server.
        let user = tenant_master::system::os_user().unwrap_or_else(|| "root".into());
        let data = server.data();
        server.run("initdb", &["-D", &data, "-A", "trust", "-U", &user, "-E", "UTF8", "--no-sync", "--no-instructions"]);
        if passwords {
            let hba = format!("local all all trust\nhost all {user} 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n");
            std::fs::write(Path::new(&data).join("pg_hba.conf"), hba).unwrap();
        }
        server.pg_ctl(&["start"]);
        server
    }

    /// The admin URL of this server (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://127.0.0.1:{}/postgres", self.port)
    }

    /// A fast restart, as a failover or a minor-version upgrade does: sessions are cut.
    pub fn restart(&self) {
        self.pg_ctl(&["restart", "-m", "fast"]);
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn pg_ctl(&self, action: &[&str]) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections={}{}",
            self.port,
            self.dir.display(),
            self.max_connections,
            self.settings
        );
        let log = self.dir.join("server.log").display().to_string();
        let data = self.data();
        let mut args = vec!["-D", &data, "-w", "-t", "60", "-l", &log, "-o", &options];
        args.extend_from_slice(action);
        self.run("pg_ctl", &args);
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut cmd = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd.args(args).current_dir(&self.dir).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let data = self.data();
        let program = self.bin.join("pg_ctl");
        let mut cmd = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let _ = cmd.args(["-D", &data, "-m", "immediate", "-w", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where `initdb` and `pg_ctl` live: `pg_config --bindir`, else the newest Debian folder.
fn bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return dir;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("initdb").is_file()).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().expect("initdb not found: install the PostgreSQL server package")
}

fn running_as_root() -> bool {
    Path::new("/proc/self").exists()
        && std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
