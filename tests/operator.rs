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

/// An operator login ends with a job that timed out.
mod timed_out_jobs {
    use sqlx::{Connection, PgConnection};
    use std::time::Duration;
    use tenant_master::{
        jobs::cleanup::Cleanup,
        ops::access::{change_access, Change},
        queue,
    };
    use tenant_master_tests::{server_url, url_with_database, TestEnv};

    const LIMIT: Duration = Duration::from_secs(120);

    async fn job_status(env: &TestEnv, id: &str) -> String {
        sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE id = $1").bind(id).fetch_one(&env.pool).await.unwrap()
    }

    async fn can_log_in(env: &TestEnv, role: &str) -> bool {
        let mut server = env.admin("postgres").await;
        sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1").bind(role).fetch_one(&mut server).await.unwrap()
    }

    /// (5) Tenant code running in the operator's session (a trigger fired by Cleanup) sets the
    /// operator's password and then stalls the job past its time limit. The timeout drops the
    /// job's future before `tenant_session::scoped` can close the operator login, so the role
    /// keeps LOGIN and the session the tenant opened meanwhile outlives the job: a suspended
    /// tenant keeps reading and writing its data.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_operator_login_ends_with_a_job_that_timed_out() {
        let mut env = TestEnv::new().await;
        env.config.worker.timeouts.insert("Cleanup".into(), 4);
        env.config.worker.retry_base_secs = 3600;
        let app = env.app();
        let t = env.provisioned(&env.slug("stall"), "starter").await;
        let op = format!("{}__op", t.role);
        let mut own = env.as_tenant(&t.slug).await;
        sqlx::query("INSERT INTO events (kind, created_at) SELECT 'old', now() - interval '3 years' FROM generate_series(1, 5001)")
            .execute(&mut own)
            .await
            .unwrap();
        // First DELETE batch (5000 rows, commits): take over the operator's password. Second: stall.
        let function = format!(
            "CREATE FUNCTION evil_stall() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF pg_catalog.nextval('\"{}\".evil_calls') = 1 THEN
                 EXECUTE format('ALTER ROLE %I PASSWORD %L', current_user, 'owned-by-tenant');
               ELSE
                 PERFORM pg_sleep(20);
               END IF;
               RETURN NULL;
             END $$",
            t.schema
        );
        for sql in [
            "CREATE SEQUENCE evil_calls",
            function.as_str(),
            "CREATE TRIGGER evil_stall AFTER DELETE ON events FOR EACH STATEMENT EXECUTE FUNCTION evil_stall()",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut own).await.unwrap();
        }
        drop(own);
        change_access(&app, &t.slug, Change::Suspend, Some("unpaid"), "billing").await.unwrap();

        let job = {
            let mut conn = env.pool.acquire().await.unwrap();
            queue::enqueue(
                &mut conn,
                &Cleanup { slug: t.slug.clone(), older_than_days: 365, dry_run: false, backup_first: false, schedule: None, slot: None },
            )
            .await
            .unwrap()
        };
        // The tenant tries to log in as its operator while the job runs, with the password it
        // set. The operator has LOGIN only while our own sessions connect, with our password
        // set again each time, so on a server that checks passwords this never succeeds; the
        // test server trusts local connections, so a try that lands inside such a moment may.
        let url = url_with_database(&server_url(), &t.database).replacen("://", &format!("://{op}:owned-by-tenant@"), 1);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let sneak = tokio::spawn(async move {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(conn) = PgConnection::connect(&url).await {
                    return Some(conn);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        });
        env.run_worker_until(LIMIT, || async {
            let s = job_status(&env, &job).await;
            matches!(s.as_str(), "failed" | "dead")
        })
        .await;
        let last_error: Option<String> =
            sqlx::query_scalar("SELECT last_error FROM tenant_master.jobs WHERE id = $1").bind(&job).fetch_one(&env.pool).await.unwrap();
        eprintln!("cleanup job ended: {} {last_error:?}", job_status(&env, &job).await);
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sneaked = sneak.await.unwrap();

        let op_login = can_log_in(&env, &op).await;
        assert_eq!(env.tenant_status(&t.slug).await.as_deref(), Some("suspended"));
        assert!(!op_login, "after the timed-out job the operator role can log in");
        if let Some(mut sneaked) = sneaked {
            let read = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM \"{}\".projects", t.schema)))
                .fetch_one(&mut sneaked)
                .await;
            assert!(read.is_err(), "the suspended tenant's operator session outlived the timed-out job: {read:?}");
        }
    }
}
