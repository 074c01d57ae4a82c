//! The admin panel in a real headless Chromium, against the real `tenantctl admin serve`,
//! the real worker and the real PostgreSQL server: what an admin does and sees, what a
//! viewer and a forged form cannot do, and what a password guesser meets.

use std::time::Duration;

use tenant_master_tests::{
    browser::{free_port, http, Browser},
    panel::{add_user, csrf, log_in, screenshots, PanelServer, DESKTOP, PHONE},
    stderr, TempDir, TestEnv,
};

const PASSWORD: &str = "correct horse battery staple";
const LONG: Duration = Duration::from_secs(180);

/// Creates and provisions `slug` through the CLI (a worker must be running).
fn create_tenant(env: &TestEnv, slug: &str) {
    let out = env.tenantctl(&[
        "tenant",
        "create",
        slug,
        "--product",
        "demo",
        "--owner-email",
        "owner@example.com",
        "--plan",
        "starter",
        "--wait",
        "--timeout",
        "3m",
    ]);
    assert!(out.status.success(), "tenant create: {}", stderr(&out));
}

/// Activity-log entries of the panel: (actor, action, origin).
async fn panel_audit(env: &TestEnv) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as("SELECT actor, action, origin FROM tenant_master.activity_log WHERE actor LIKE 'panel:%' ORDER BY id")
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

async fn jobs_of(env: &TestEnv, slug: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE tenant = $1").bind(slug).fetch_one(&env.pool).await.unwrap()
}

#[tokio::test]
async fn an_admin_runs_a_tenant_from_the_browser() {
    let env = TestEnv::new().await;
    let logs = TempDir::new("panel-admin");
    let mut worker = env.spawn_worker(&logs.path().join("worker.log"));
    add_user(&env, "alice", "admin", PASSWORD);
    let panel = PanelServer::start(&env);
    let browser = Browser::start(DESKTOP, 900);
    browser.show_on_failure(&logs.path().join("worker.log"));
    log_in(&browser, &panel, "alice", PASSWORD);

    // Create: the form, then the tenant's page follows provisioning until it is active.
    let slug = env.slug("acme");
    browser.goto(&panel.url("/tenants/new"));
    browser.fill("#slug", &slug);
    browser.fill("#name", "Acme Ltd");
    browser.fill("#owner_email", "owner@acme.example");
    browser.select("#plan", "business");
    screenshots(&browser, "new-tenant");
    browser.click("#create");
    browser.wait_text("#status", "active", LONG);
    assert_eq!(env.tenant_status(&slug).await.as_deref(), Some("active"));
    assert_eq!(env.registry(&slug).await.plan, "business");
    assert!(env.try_as_tenant(&slug).await.is_ok(), "an active tenant logs in");

    // Pause: the job's page follows it live; then the tenant is paused and cannot log in.
    browser.click("#pause");
    browser.wait_text("#status", "done", LONG);
    screenshots(&browser, "job");
    browser.goto(&panel.url(&format!("/tenants/{slug}")));
    browser.wait_text("#status", "paused", LONG);
    assert!(env.try_as_tenant(&slug).await.is_err(), "a paused tenant cannot log in");

    // Resume, then a backup taken on demand.
    browser.click("#resume");
    browser.wait_text("#status", "done", LONG);
    assert_eq!(env.tenant_status(&slug).await.as_deref(), Some("active"));
    assert!(env.try_as_tenant(&slug).await.is_ok(), "a resumed tenant logs in again");
    browser.goto(&panel.url(&format!("/tenants/{slug}")));
    browser.click("#backup");
    browser.wait_text("#status", "done", LONG);
    browser.goto(&panel.url(&format!("/tenants/{slug}")));
    browser.wait_text("#backups", "manual", Duration::from_secs(10));
    // Several actions at once (a double click, two admins): each is done and logged, none
    // starves the others of connections.
    let proof = csrf(&browser);
    let statuses = browser.post_many_from_page(&format!("/tenants/{slug}/backup"), &format!("csrf={proof}"), 8);
    assert_eq!(statuses, vec![0; 8], "every concurrent action was accepted (redirected)");
    let logged: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_master.activity_log WHERE action = 'admin.backup' AND origin = '127.0.0.1'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(logged, 9, "the first backup and the 8 at once, each logged with the address");
    assert!(browser.text("#history").contains("panel:alice"), "the tenant's history names the admin");
    screenshots(&browser, "tenant");
    assert!(browser.fits(PHONE), "the tenant page fits a phone without scrolling sideways");

    // A destructive action without the slug typed does nothing.
    browser.fill("#delete-confirm", "not-the-slug");
    browser.click("#delete");
    browser.wait_text("#error", "needs its slug typed", Duration::from_secs(10));
    assert_eq!(env.tenant_status(&slug).await.as_deref(), Some("active"));

    // The other pages, as an admin sees them.
    for (path, name, marker) in [
        ("/", "dashboard", "#queue"),
        ("/tenants", "tenants", "#tenants"),
        ("/jobs", "jobs", "#jobs"),
        ("/hosts", "hosts", "#hosts"),
        ("/schedules", "schedules", "#schedules"),
        ("/activity", "activity-all", "#activity"),
    ] {
        browser.goto(&panel.url(path));
        browser.find(marker);
        assert!(browser.fits(PHONE), "{path} fits a phone without scrolling sideways");
        screenshots(&browser, name);
    }
    browser.goto(&panel.url(&format!("/tenants?q={}", &slug[..6])));
    assert!(browser.text("#tenants").contains(&slug), "search by part of the slug finds it");
    browser.goto(&panel.url("/tenants?q=nobody-has-this"));
    assert!(!browser.text("#tenants").contains(&slug));

    // Every action is in the activity log with the admin as actor and the client's address.
    let audit = panel_audit(&env).await;
    for action in ["admin.login", "admin.tenant_create", "admin.pause", "admin.resume", "admin.backup"] {
        assert!(
            audit.iter().any(|(actor, a, origin)| actor == "panel:alice" && a == action && origin.as_deref() == Some("127.0.0.1")),
            "{action} by panel:alice from 127.0.0.1 in {audit:?}"
        );
    }
    let _ = worker.kill();
    let _ = worker.wait();
}

#[tokio::test]
async fn failed_jobs_are_retried_by_filter_and_one_is_cancelled() {
    let env = TestEnv::new().await;
    let logs = TempDir::new("panel-jobs");
    let mut worker = env.spawn_worker(&logs.path().join("worker.log"));
    let (a, b) = (env.slug("alpha"), env.slug("beta"));
    create_tenant(&env, &a);
    create_tenant(&env, &b);
    let _ = worker.kill();
    let _ = worker.wait();

    // Backups fail for real: the worker's backup folder is a file. Retries are an hour apart.
    let broken = logs.path().join("backups");
    std::fs::write(&broken, "not a folder").unwrap();
    let broken_dir = broken.display().to_string();
    let mut worker = env.spawn_worker_with(
        &logs.path().join("worker2.log"),
        &[("TENANT_MASTER_BACKUP_DIR", &broken_dir), ("TENANT_MASTER_WORKER_RETRY_BASE_SECS", "3600")],
    );
    let out = env.tenantctl(&["backup", "create", &a, &b, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    tenant_master_tests::eventually(LONG, "both backups failed", || async {
        let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE type = 'BackupTenant' AND status = 'failed'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        failed == 2
    })
    .await;
    let _ = worker.kill();
    let _ = worker.wait();

    add_user(&env, "alice", "admin", PASSWORD);
    let panel = PanelServer::start(&env);
    let browser = Browser::start(DESKTOP, 900);
    log_in(&browser, &panel, "alice", PASSWORD);

    // The dashboard and the job list show the failures with their error.
    browser.goto(&panel.url("/jobs?status=failed"));
    let listed = browser.text("#jobs");
    assert!(listed.contains(&a) && listed.contains(&b), "{listed}");
    screenshots(&browser, "jobs-failed");

    // Cancel beta's backup from its page.
    browser.goto(&panel.url(&format!("/jobs?type=BackupTenant&tenant={b}")));
    browser.click("#jobs tbody a");
    browser.wait_text("#status", "failed", Duration::from_secs(10));
    assert!(!browser.text("#last-error").is_empty());
    browser.click("#cancel");
    browser.wait_text("#notice", "cancelled", Duration::from_secs(10));
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_master.jobs WHERE type = 'BackupTenant' AND tenant = $1 AND status <> 'cancelled'")
            .bind(&b)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(left, 0, "beta's backup job is cancelled (and stays listed as such)");

    // Fix the cause, then retry all that match the filter: the count comes first.
    std::fs::remove_file(&broken).unwrap();
    std::fs::create_dir(&broken).unwrap();
    browser.goto(&panel.url("/jobs"));
    browser.click("#retry-matching");
    browser.wait_text("#retry-count", "1 failed or dead job(s) match", Duration::from_secs(10));
    screenshots(&browser, "retry-matching");
    // An older job fails between the count and the confirmation: it was not counted, so
    // it is not retried unseen.
    let late: String = sqlx::query_scalar("SELECT id FROM tenant_master.jobs WHERE type = 'ProvisionTenant' AND tenant = $1")
        .bind(&a)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE apalis.jobs SET status = 'Failed', attempts = 1, last_result = '{\"Err\": \"late\"}' WHERE id = $1")
        .bind(&late)
        .execute(&env.pool)
        .await
        .unwrap();
    browser.click("#confirm-retry");
    browser.wait_text("#notice", "fresh attempt budget", Duration::from_secs(10));
    let late_status: String =
        sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE id = $1").bind(&late).fetch_one(&env.pool).await.unwrap();
    assert_eq!(late_status, "failed", "a job that failed after the count is left for the next look");
    sqlx::query("UPDATE apalis.jobs SET status = 'Done', last_result = '{\"Ok\": null}' WHERE id = $1")
        .bind(&late)
        .execute(&env.pool)
        .await
        .unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE type = 'BackupTenant' AND tenant = $1")
        .bind(&a)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(status, "pending");

    // With the folder fixed, the retried backup succeeds; its page shows it.
    let mut worker = env.spawn_worker_with(&logs.path().join("worker3.log"), &[("TENANT_MASTER_BACKUP_DIR", &broken_dir)]);
    browser.show_on_failure(&logs.path().join("worker3.log"));
    browser.goto(&panel.url(&format!("/jobs?type=BackupTenant&tenant={a}")));
    browser.click("#jobs tbody a");
    browser.wait_text("#status", "done", LONG);
    let files = std::fs::read_dir(&broken).unwrap().count();
    assert!(files > 0, "the backup file was written");
    // Its page lists both attempts: the one that failed on the folder, the one that worked.
    let attempts = browser.text("#job-attempts");
    assert!(attempts.contains("failed") && attempts.contains("done"), "{attempts}");
    assert!(attempts.contains("BackupTenant-"), "each attempt names its worker: {attempts}");
    screenshots(&browser, "job-attempts");
    let audit = panel_audit(&env).await;
    assert!(audit.iter().any(|(_, action, _)| action == "admin.job_cancel"), "{audit:?}");
    assert!(audit.iter().any(|(_, action, _)| action == "admin.jobs_retry_matching"), "{audit:?}");
    let _ = worker.kill();
    let _ = worker.wait();
}

/// A page on another origin that posts a form to the panel as soon as it loads: what a
/// malicious site an admin visits would do. Serves it on a port of its own.
fn attacker_site(target: String, fields: &[(&str, &str)]) -> u16 {
    let inputs: String = fields.iter().map(|(k, v)| format!("<input name={k} value=\"{v}\">")).collect();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            use std::io::{Read as _, Write as _};
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let html = format!(
                "<!doctype html><form id=f method=post action=\"{target}\">{inputs}</form>\
                 <script>document.getElementById('f').submit()</script>"
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    port
}

#[tokio::test]
async fn viewers_and_forged_forms_change_nothing() {
    let env = TestEnv::new().await;
    let logs = TempDir::new("panel-viewer");
    let mut worker = env.spawn_worker(&logs.path().join("worker.log"));
    let slug = env.slug("target");
    create_tenant(&env, &slug);
    add_user(&env, "alice", "admin", PASSWORD);
    add_user(&env, "victor", "viewer", PASSWORD);
    let panel = PanelServer::start(&env);
    let browser = Browser::start(DESKTOP, 900);
    let pause = format!("/tenants/{slug}/pause");
    let before = jobs_of(&env, &slug).await;

    // A viewer sees the tenant but no action; a POST with the viewer's own proof is refused.
    log_in(&browser, &panel, "victor", PASSWORD);
    browser.goto(&panel.url(&format!("/tenants/{slug}")));
    browser.wait_text("#status", "active", Duration::from_secs(10));
    assert!(!browser.exists("#actions") && !browser.exists("#pause"), "a viewer is offered no action");
    let proof = csrf(&browser);
    let status = browser.post_from_page(&pause, &format!("csrf={proof}"));
    assert_eq!(status, 403, "a viewer's POST is refused");
    browser.goto(&panel.url("/jobs"));
    assert!(!browser.exists("#retry-matching"));
    browser.goto(&panel.url("/tenants?q=%00"));
    browser.wait_text("#error", "cannot store", Duration::from_secs(10));
    browser.goto(&panel.url("/"));
    browser.click("#me + input + button");
    // The logout lands on the login page before the next page is opened, so its redirect
    // cannot arrive after (and replace) the hostile page's post on a slow machine.
    browser.find("#login");

    // A hostile page that logs the browser in as the attacker's own account (whose
    // actions would then be the victim's work under the attacker's name) is refused.
    let evil = attacker_site(panel.url("/login"), &[("user", "victor"), ("password", PASSWORD)]);
    browser.goto(&format!("http://127.0.0.1:{evil}/"));
    browser.wait_text("#error", "another site", Duration::from_secs(20));
    browser.goto(&panel.url("/"));
    browser.find("#login");

    // An admin's browser visits a hostile page on another port (same site: the
    // SameSite=Strict cookie is sent) that posts to the panel without the CSRF proof.
    log_in(&browser, &panel, "alice", PASSWORD);
    let evil = attacker_site(panel.url(&pause), &[("reason", "pwned")]);
    browser.goto(&format!("http://127.0.0.1:{evil}/"));
    browser.wait_text("#error", "another site", Duration::from_secs(20));
    // The same forged post from the panel's own origin, where only the proof is missing.
    browser.goto(&panel.url(&format!("/tenants/{slug}")));
    let status = browser.post_from_page(&pause, "reason=pwned");
    assert_eq!(status, 403, "a POST without the CSRF proof is refused");
    let status = browser.post_from_page(&pause, "reason=pwned&csrf=guessed");
    assert_eq!(status, 403, "a POST with a wrong proof is refused");
    let proof = csrf(&browser);
    let status = browser.post_from_page(&pause, &format!("reason=a%00b&csrf={proof}"));
    assert_eq!(status, 400, "a NUL byte in a reason is bad input, not a server fault");
    assert_eq!(jobs_of(&env, &slug).await, before, "no forged or viewer request enqueued anything");
    assert_eq!(env.tenant_status(&slug).await.as_deref(), Some("active"));

    // The control: the same POST with the session's proof goes through, so the refusals
    // above were the checks at work and not a broken request.
    let proof = csrf(&browser);
    let status = browser.post_from_page(&pause, &format!("reason=ok&csrf={proof}"));
    assert_eq!(status, 0, "a genuine form is accepted (a redirect)");
    assert_eq!(jobs_of(&env, &slug).await, before + 1);
    let audit = panel_audit(&env).await;
    assert_eq!(audit.iter().filter(|(_, action, _)| action == "admin.pause").count(), 1, "{audit:?}");
    assert!(audit.iter().all(|(actor, action, _)| actor != "panel:victor" || action == "admin.login"), "{audit:?}");
    let _ = worker.kill();
    let _ = worker.wait();
}

/// One login POST outside the browser; returns the status.
fn post_login(panel: &PanelServer, user: &str, password: &str) -> u16 {
    let body = format!("user={user}&password={}", password.replace(' ', "+"));
    http(panel.port, "POST", "/login", &[("Content-Type", "application/x-www-form-urlencoded")], body.as_bytes()).unwrap().0
}

#[tokio::test]
async fn wrong_passwords_are_refused_then_rate_limited() {
    let env = TestEnv::new().await;
    add_user(&env, "alice", "admin", PASSWORD);
    add_user(&env, "bob", "admin", PASSWORD);
    let panel = PanelServer::start(&env);
    let browser = Browser::start(DESKTOP, 900);

    browser.goto(&panel.url("/login"));
    browser.fill("#user", "alice");
    browser.fill("#password", "wrong password!");
    browser.click("#login");
    browser.wait_text("#error", "wrong user name or password", Duration::from_secs(10));
    assert!(!browser.exists("#me"), "not logged in");
    screenshots(&browser, "login-refused");
    // An unknown user reads the same: the panel does not say which names exist.
    assert_eq!(post_login(&panel, "mallory", "whatever it is"), 401);

    // Four more wrong guesses for alice; then even her right password is refused for now.
    for _ in 0..4 {
        assert_eq!(post_login(&panel, "alice", "still wrong!!"), 401);
    }
    log_in_refused(&browser, &panel, "alice", PASSWORD);
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.admin_sessions").fetch_one(&env.pool).await.unwrap();
    assert_eq!(sessions, 0, "no session was opened");
    // Alice herself, from another address, is not locked out by the guesser...
    assert_eq!(post_login_from("127.0.0.2", &panel, "alice", PASSWORD).await, 303);
    // An unknown name meets the same limit: the limits do not tell which names exist.
    for _ in 0..4 {
        assert_eq!(post_login(&panel, "mallory", "whatever it is"), 401);
    }
    assert_eq!(post_login(&panel, "mallory", "whatever it is"), 429);
    // ...nor is another user from the guesser's address...
    assert_eq!(post_login(&panel, "bob", PASSWORD), 303);
    // ...until the address itself has failed too often, over any names.
    for i in 0..14 {
        post_login(&panel, &format!("guess{i}"), "nope nope nope");
    }
    assert_eq!(post_login(&panel, "bob", PASSWORD), 429, "an address with 20 failures in 15 minutes is refused");
    let audit = panel_audit(&env).await;
    assert!(audit.iter().any(|(actor, action, origin)| actor == "panel:alice"
        && action == "admin.login_rate_limited"
        && origin.as_deref() == Some("127.0.0.1")));
    // 18 wrong passwords, each logged; and the first refusal of alice, of mallory and of
    // the address, mallory's and the address's under no user's name.
    assert_eq!(audit.iter().filter(|(_, action, _)| action == "admin.login_failed").count(), 18, "{audit:?}");
    assert_eq!(audit.iter().filter(|(_, action, _)| action == "admin.login_rate_limited").count(), 3, "{audit:?}");
    assert!(!audit.iter().any(|(actor, ..)| actor.contains("mallory") || actor.contains("guess")), "{audit:?}");
    // A guesser hammering on writes nothing more.
    let before = written_rows(&env).await;
    for _ in 0..10 {
        assert_eq!(post_login(&panel, "alice", "hammer hammer"), 429);
    }
    assert_eq!(written_rows(&env).await, before);
}

async fn written_rows(env: &TestEnv) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM tenant_master.admin_login_failures) + (SELECT count(*) FROM tenant_master.activity_log)",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap()
}

/// One login POST from source address `from` (any 127.x address reaches the loopback).
async fn post_login_from(from: &str, panel: &PanelServer, user: &str, password: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(format!("127.0.0.1:{}", panel.port).parse().unwrap()).await.unwrap();
    let body = format!("user={user}&password={}", password.replace(' ', "+"));
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        panel.port,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

fn log_in_refused(browser: &Browser, panel: &PanelServer, user: &str, password: &str) {
    browser.goto(&panel.url("/login"));
    browser.fill("#user", user);
    browser.fill("#password", password);
    browser.click("#login");
    browser.wait_text("#error", "too many failed logins", Duration::from_secs(10));
}

#[tokio::test]
async fn serve_refuses_without_an_admin_and_users_need_a_real_password() {
    let env = TestEnv::new().await;
    let port = free_port().to_string();
    let out = env.tenantctl(&["admin", "serve", "--listen", &format!("127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("tenantctl admin user add"), "{}", stderr(&out));
    let short = env
        .tenantctl_command(&["admin", "user", "add", "alice", "--role", "admin"])
        .env("TENANT_MASTER_ADMIN_PASSWORD", "short")
        .output()
        .unwrap();
    assert_eq!(short.status.code(), Some(2));
    let role = env
        .tenantctl_command(&["admin", "user", "add", "alice", "--role", "root"])
        .env("TENANT_MASTER_ADMIN_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_eq!(role.status.code(), Some(2));
    assert!(stderr(&role).contains("admin") && stderr(&role).contains("viewer"));
    add_user(&env, "alice", "admin", PASSWORD);
    let stored: String =
        sqlx::query_scalar("SELECT password_hash FROM tenant_master.admin_users WHERE name = 'alice'").fetch_one(&env.pool).await.unwrap();
    assert!(stored.starts_with("$argon2id$") && !stored.contains(PASSWORD), "only a hash is stored");
    let again = env
        .tenantctl_command(&["admin", "user", "add", "alice", "--role", "viewer"])
        .env("TENANT_MASTER_ADMIN_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("exists already"));
}

async fn projects(env: &TestEnv, slug: &str) -> i64 {
    let mut own = env.as_tenant(slug).await;
    sqlx::query_scalar("SELECT count(*) FROM projects").fetch_one(&mut own).await.unwrap()
}

#[tokio::test]
async fn restore_plan_and_delete_from_the_browser() {
    let env = TestEnv::new().await;
    let logs = TempDir::new("panel-restore");
    let mut worker = env.spawn_worker(&logs.path().join("worker.log"));
    let slug = env.slug("gamma");
    create_tenant(&env, &slug);
    env.add_projects(&slug, "kept", 3).await;
    add_user(&env, "alice", "admin", PASSWORD);
    let panel = PanelServer::start(&env);
    let browser = Browser::start(DESKTOP, 900);
    browser.show_on_failure(&logs.path().join("worker.log"));
    log_in(&browser, &panel, "alice", PASSWORD);
    let page = panel.url(&format!("/tenants/{slug}"));

    browser.goto(&page);
    browser.click("#backup");
    browser.wait_text("#status", "done", LONG);
    env.add_projects(&slug, "later", 4).await;
    assert_eq!(projects(&env, &slug).await, 7);

    // Restore: refused without the slug typed, then done with it, back to the 3 rows.
    browser.goto(&page);
    browser.click("#restore");
    browser.wait_text("#error", "needs its slug typed", Duration::from_secs(10));
    assert_eq!(projects(&env, &slug).await, 7, "nothing restored without the confirmation");
    browser.goto(&page);
    browser.fill("#restore-confirm", &slug);
    browser.click("#restore");
    browser.wait_text("h1", "RestoreTenant", Duration::from_secs(10));
    browser.wait_text("#status", "done", LONG);
    assert_eq!(projects(&env, &slug).await, 3, "the backup's rows are back");

    // A plan change within the isolation mode is immediate and kept in the plan history.
    browser.goto(&page);
    browser.select("#new-plan", "business");
    browser.click("#change-plan");
    browser.wait_text("#plan", "business", Duration::from_secs(10));
    assert_eq!(env.registry(&slug).await.plan, "business");

    // Delete, with the slug typed: the tenant's page follows it to the end.
    browser.fill("#delete-confirm", &slug);
    browser.click("#delete");
    browser.wait_text("h1", "DeleteTenant", Duration::from_secs(10));
    browser.wait_text("#status", "done", LONG);
    assert_eq!(env.tenant_status(&slug).await.as_deref(), Some("deleted"));
    let audit = panel_audit(&env).await;
    for action in ["admin.backup", "admin.restore", "admin.plan", "admin.delete"] {
        assert!(audit.iter().any(|(actor, a, _)| actor == "panel:alice" && a == action), "{action} in {audit:?}");
    }
    let _ = worker.kill();
    let _ = worker.wait();
}

/// Long lists page through, sort, and a filter's bulk cancel counts first; the dashboard
/// shows the live workers and its charts; the activity page filters by tenant.
#[tokio::test]
async fn lists_page_sort_and_cancel_in_bulk_and_the_dashboard_shows_workers() {
    let env = TestEnv::new().await;
    let logs = TempDir::new("panel-lists");
    let mut worker = env.spawn_worker(&logs.path().join("worker.log"));
    let (a, b) = (env.slug("north"), env.slug("south"));
    create_tenant(&env, &a);
    create_tenant(&env, &b);
    let out = env.tenantctl(&["backup", "create", &a, "--wait", "--timeout", "3m"]);
    assert!(out.status.success(), "backup create: {}", stderr(&out));
    // 250 jobs that wait an hour: more than five pages.
    for i in 0..250 {
        sqlx::query("SELECT tenant_master.enqueue('PruneJobs', $1, NULL, now() + interval '1 hour')")
            .bind(serde_json::json!({ "done_older_than_days": 7, "dead_older_than_days": 30, "n": i }))
            .execute(&env.pool)
            .await
            .unwrap();
    }
    add_user(&env, "alice", "admin", PASSWORD);
    let panel = PanelServer::start(&env);
    let browser = Browser::start(DESKTOP, 900);
    browser.show_on_failure(&logs.path().join("worker.log"));
    log_in(&browser, &panel, "alice", PASSWORD);

    // The dashboard: this worker process, its charts, and no benchmark job type.
    browser.goto(&panel.url("/"));
    let workers = browser.text("#workers");
    assert!(workers.contains(&worker.id().to_string()), "the worker's pid in {workers}");
    assert!(browser.exists("#chart-throughput rect") && browser.exists("#chart-tenants rect"));
    let legend = browser.text("#tenants-legend");
    assert!(legend.contains("demo, starter: 2"), "{legend}");
    assert!(!browser.text("#queue").contains("Noop"), "internal job types are hidden");
    let done: i64 = browser.text("#throughput").split_whitespace().next().unwrap().parse().unwrap();
    assert!(done >= 2, "the two provisionings (and their mails) are counted: {done}");
    screenshots(&browser, "dashboard-workers");

    // 250 pending prunes + what the tenants ran: page 1 of 6, the newest first.
    browser.goto(&panel.url("/jobs?type=PruneJobs"));
    assert!(browser.text(".pager").contains("1–50 of 250"), "{}", browser.text(".pager"));
    let first_page = browser.text("#jobs tbody");
    browser.click(".pager .next");
    browser.wait_text(".pager", "51–100 of 250", Duration::from_secs(10));
    assert_ne!(browser.text("#jobs tbody"), first_page);
    assert!(browser.url().contains("type=PruneJobs"), "the filter is kept: {}", browser.url());
    // Sorting by type over all jobs puts the ProvisionTenant rows after the PruneJobs ones
    // ascending, first descending.
    browser.goto(&panel.url("/jobs"));
    browser.click("#sort-type");
    browser.click("#sort-type");
    assert!(browser.url().contains("sort=type&dir=desc"), "{}", browser.url());
    let top = browser.text("#jobs tbody tr:first-child");
    assert!(top.starts_with("SendWelcomeMail") || top.starts_with("PruneJobs"), "{top}");

    // Bulk cancel of the prunes of the filter: the count first, then exactly those.
    browser.goto(&panel.url("/jobs?type=PruneJobs&status=pending"));
    browser.click("#cancel-matching");
    browser.wait_text("#cancel-count", "250 job(s)", Duration::from_secs(10));
    screenshots(&browser, "cancel-matching");
    browser.click("#confirm-cancel");
    browser.wait_text("#notice", "were cancelled", Duration::from_secs(60));
    let (cancelled, others): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE type = 'PruneJobs' AND status = 'cancelled'), count(*) FILTER (WHERE type <> 'PruneJobs' AND status = 'cancelled')
         FROM tenant_master.jobs",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!((cancelled, others), (250, 0));
    assert!(panel_audit(&env).await.iter().any(|(_, action, _)| action == "admin.jobs_cancel_matching"));

    // The activity page, filtered by one tenant: its steps only, none of the other's.
    browser.goto(&panel.url("/activity"));
    browser.fill("#filter-tenant", &a);
    browser.click("#filter");
    browser.wait_text("#activity", "tenant.active", Duration::from_secs(10));
    let shown = browser.text("#activity");
    assert!(shown.contains(&a) && !shown.contains(&b), "{shown}");
    screenshots(&browser, "activity");

    // A tenant's page: its history by day, each entry with its details.
    browser.goto(&panel.url(&format!("/tenants/{a}")));
    let history = browser.text("#history");
    assert!(history.contains("tenant.create_requested") && history.contains("job_id"), "{history}");
    screenshots(&browser, "tenant-history");
    // At 390 px each confirm field and its button share one line, inside the page.
    for (field, button) in [("#restore-confirm", "#restore"), ("#delete-confirm", "#delete")] {
        let same_line = browser.script_at(
            PHONE,
            &format!(
                "const i = document.querySelector('{field}').getBoundingClientRect(), b = document.querySelector('{button}').getBoundingClientRect();
                 return Math.abs(i.top - b.top) < 4 && b.right <= document.documentElement.clientWidth && i.width >= 80;"
            ),
        );
        assert_eq!(same_line, serde_json::json!(true), "{field} and {button} on one line at {PHONE} px");
    }
    assert!(browser.fits(PHONE), "the tenant page fits {PHONE} px");
    let _ = worker.kill();
    let _ = worker.wait();
}

/// A panel started as `tenantctl admin serve 2>&1 | head` keeps serving after its log
/// reader is gone (a closed pipe ends short commands, not the server), and a day it cannot
/// hold in an activity filter is a bad request, not a server error.
#[tokio::test(flavor = "multi_thread")]
async fn the_panel_outlives_its_log_reader_and_refuses_impossible_days() {
    let env = TestEnv::new().await;
    add_user(&env, "alice", "admin", PASSWORD);
    let mut panel = PanelServer::start_with_a_closed_log(&env);
    let browser = Browser::start(DESKTOP, 900);
    log_in(&browser, &panel, "alice", PASSWORD);

    browser.goto(&panel.url("/activity?since=-4713-01-01"));
    assert!(browser.text("body").contains("is not a day like"), "{}", browser.text("body"));

    // A request that fails on the server writes an error line into the closed pipe.
    sqlx::raw_sql("ALTER TABLE tenant_master.activity_log RENAME TO activity_log_away").execute(&env.pool).await.unwrap();
    browser.goto(&panel.url("/activity"));
    sqlx::raw_sql("ALTER TABLE tenant_master.activity_log_away RENAME TO activity_log").execute(&env.pool).await.unwrap();
    assert!(panel.is_running(), "the panel died writing its log into a closed pipe");
    browser.goto(&panel.url("/activity"));
    browser.find("#activity");
}
