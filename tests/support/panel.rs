//! The admin panel as a user meets it: the real `tenantctl admin serve` process, its users
//! added with the real `tenantctl admin user add`, and a browser logged in to it.

use std::{
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

use super::{
    browser::{free_port, http, Browser},
    stderr, TestEnv,
};

/// Phone and desktop widths the screenshots are taken at.
pub const PHONE: u32 = 390;
/// See [`PHONE`].
pub const DESKTOP: u32 = 1280;

/// A running `tenantctl admin serve`, killed when dropped.
pub struct PanelServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl PanelServer {
    /// Starts the panel for `env` on a free port and waits until it answers.
    pub fn start(env: &TestEnv) -> PanelServer {
        PanelServer::start_logging_to(env, std::process::Stdio::null())
    }

    /// A panel whose log goes into a pipe nobody reads: closed as soon as it starts, as
    /// when the `| tee` or `| head` it was started with has gone.
    pub fn start_with_a_closed_log(env: &TestEnv) -> PanelServer {
        let mut panel = PanelServer::start_logging_to(env, std::process::Stdio::piped());
        drop(panel.child.stderr.take());
        panel
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn start_logging_to(env: &TestEnv, log: std::process::Stdio) -> PanelServer {
        let port = free_port();
        let mut cmd = env.tenantctl_command(&["admin", "serve", "--listen", &format!("127.0.0.1:{port}")]);
        cmd.stdout(std::process::Stdio::null()).stderr(log);
        super::die_with_test(&mut cmd);
        let mut child = cmd.spawn().expect("start tenantctl admin serve");
        let started = Instant::now();
        while http(port, "GET", "/login", &[], b"").is_err() {
            assert!(child.try_wait().unwrap().is_none(), "tenantctl admin serve exited");
            assert!(started.elapsed() < Duration::from_secs(20), "the panel did not start listening");
            std::thread::sleep(Duration::from_millis(100));
        }
        PanelServer { child, port }
    }

    /// The address of `path` on this panel.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for PanelServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds a panel user through the CLI, the password in the environment (never argv).
pub fn add_user(env: &TestEnv, name: &str, role: &str, password: &str) {
    let out = env
        .tenantctl_command(&["admin", "user", "add", name, "--role", role])
        .env("TENANT_MASTER_ADMIN_PASSWORD", password)
        .output()
        .unwrap();
    assert!(out.status.success(), "admin user add: {}", stderr(&out));
}

/// Logs `browser` in through the login form and waits for the dashboard.
pub fn log_in(browser: &Browser, panel: &PanelServer, user: &str, password: &str) {
    browser.goto(&panel.url("/login"));
    browser.fill("#user", user);
    browser.fill("#password", password);
    browser.click("#login");
    browser.wait_text("#me", user, Duration::from_secs(20));
}

/// The CSRF proof of the session on the current page (from its logout form, on every page).
pub fn csrf(browser: &Browser) -> String {
    let proof = browser.script("return document.querySelector('input[name=csrf]').value;", serde_json::json!([]));
    proof.as_str().expect("a CSRF proof on the page").to_owned()
}

/// Where screenshots go: `PANEL_SCREENSHOTS` if set (the README's come from
/// `PANEL_SCREENSHOTS=tests/screenshots`), else target/panel-screenshots.
pub fn screenshot_path(name: &str) -> PathBuf {
    let dir = std::env::var("PANEL_SCREENSHOTS").map(PathBuf::from).unwrap_or_else(|_| super::repo_root().join("target/panel-screenshots"));
    let dir = if dir.is_absolute() { dir } else { super::repo_root().join(dir) };
    dir.join(format!("{name}.png"))
}

/// Saves the current page at phone and desktop width, as `<name>-phone.png` and `<name>-desktop.png`.
pub fn screenshots(browser: &Browser, name: &str) {
    browser.screenshot(&screenshot_path(&format!("{name}-phone")), PHONE);
    browser.screenshot(&screenshot_path(&format!("{name}-desktop")), DESKTOP);
}
