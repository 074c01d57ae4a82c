//! Operator experience (issue 15): what a new user meets at the command line. Every bad
//! value is one sentence and exit 2 with the valid choices; a server that is down is named
//! at once; an unmigrated database says to migrate; `--wait --timeout` stops waiting with
//! its own exit code and the command to follow the job; messages say what was done.

use std::time::{Duration, Instant};

use tenant_master_tests::{stderr, stdout, TestEnv};

/// One line on stderr, starting `error:`.
fn one_sentence(out: &std::process::Output) -> String {
    let err = stderr(out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("error returned from database") && !err.contains(" at line "), "no driver internals: {err}");
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_filter_values_are_bad_usage_with_the_valid_choices() {
    let env = TestEnv::new().await;
    for (args, expect) in [
        (vec!["tenant", "list", "--status", "bogus"], "use one of provisioning, active"),
        (vec!["tenant", "list", "--plan", "gold"], "choose one of free, starter"),
        (vec!["tenant", "list", "--product", "nope"], "unknown product 'nope': use one of demo"),
        (vec!["tenant", "migrate", "--all", "--host", "nowhere"], "unknown host 'nowhere': use one of default"),
        (vec!["jobs", "list", "--status", "bogus"], "use one of pending, running"),
        (vec!["jobs", "list", "--type", "Nope"], "unknown job type 'Nope': use one of "),
        (vec!["jobs", "retry", "--failed", "--type", "Bogus"], "unknown job type 'Bogus'"),
    ] {
        let out = env.tenantctl(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = one_sentence(&out);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    // Valid filters still answer, with what matches.
    let out = env.tenantctl(&["tenant", "list", "--status", "active", "--plan", "starter", "--product", "demo", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.tenantctl(&["jobs", "retry", "--failed", "--type", "BackupTenant"]);
    assert!(stdout(&out).contains("nothing was retried"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_is_down_or_not_set_up_says_so_at_once() {
    let env = TestEnv::new().await;
    let with_url = |url: &str| {
        let started = Instant::now();
        let out = env.tenantctl_command(&["tenant", "list"]).env("DATABASE_URL", url).output().unwrap();
        (out, started.elapsed())
    };
    let (out, took) = with_url("postgres://127.0.0.1:1/x");
    assert_eq!(out.status.code(), Some(1));
    let err = one_sentence(&out);
    assert!(err.contains("127.0.0.1:1") && err.to_lowercase().contains("connection refused"), "{err}");
    assert!(took < Duration::from_secs(3), "refused within seconds, not after the pool's timeout: {took:?}");

    let (out, _) = with_url("mysql://127.0.0.1/x");
    assert_eq!(out.status.code(), Some(2));
    assert!(one_sentence(&out).contains("must start with postgres://"));

    let unmigrated = TestEnv::unmigrated().await;
    let out = unmigrated.tenantctl(&["tenant", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(one_sentence(&out).contains("run `tenantctl migrate`"), "{}", stderr(&out));
    let out = unmigrated.tenantctl(&["jobs", "list"]);
    assert!(one_sentence(&out).contains("run `tenantctl migrate`"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_times_out_with_its_own_exit_code_and_says_how_to_follow() {
    let env = TestEnv::new().await;
    let slug = env.slug("waiter");
    // No worker runs: the job stays pending.
    let started = Instant::now();
    let out = env.tenantctl(&[
        "tenant",
        "create",
        &slug,
        "--product",
        "demo",
        "--plan",
        "starter",
        "--owner-email",
        "o@example.com",
        "--wait",
        "--timeout",
        "2s",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(15));
    let id: String =
        sqlx::query_scalar("SELECT id FROM tenant_master.jobs WHERE type = 'ProvisionTenant'").fetch_one(&env.pool).await.unwrap();
    assert!(stderr(&out).contains(&format!("tenantctl jobs show {id}")), "{}", stderr(&out));
    let status: String =
        sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE id = $1").bind(&id).fetch_one(&env.pool).await.unwrap();
    assert_eq!(status, "pending", "the job goes on");
    let out = env.tenantctl(&["tenant", "list", "--timeout", "2s"]);
    assert_eq!(out.status.code(), Some(2), "--timeout only where there is a --wait");
    let out = env.tenantctl(&["backup", "create", &slug, "--wait", "--timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("write e.g. 90s, 10m or 2h"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_say_what_was_done_and_what_a_url_can_do() {
    let env = TestEnv::new().await;
    let slug = env.slug("said");
    let out = env.tenantctl(&["tenant", "create", &slug, "--product", "demo", "--plan", "starter", "--owner-email", "o@example.com"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).starts_with("enqueued ProvisionTenant job ") && stdout(&out).contains("tenantctl tenant show"),
        "{}",
        stdout(&out)
    );

    let t = env.provisioned(&env.slug("paused"), "starter").await;
    let app = env.app();
    tenant_master::ops::access::change_access(&app, &t.slug, tenant_master::ops::access::Change::Pause, None, "test").await.unwrap();
    let out = env.tenantctl(&["tenant", "credentials", &t.slug]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("is paused: this URL cannot log in until `tenantctl tenant resume"), "{}", stderr(&out));
    let out = env.tenantctl(&["tenant", "credentials", &t.slug, "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["can_log_in"], false);

    let out = env.tenantctl(&["backup", "restore", &t.slug, "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--latest|--backup"), "both ways are named: {}", stderr(&out));
}
