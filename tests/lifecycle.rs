//! Welcome mail through a real SMTP server on loopback; pause, suspend, resume and
//! delete with their effect in PostgreSQL; invalid transitions; the activity log.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tenant_master::{
    backups,
    ops::{
        access::{change_access, Change},
        delete::delete,
    },
    tenants::{self, NewTenant},
};
use tenant_master_tests::{smtp::SmtpServer, TestEnv};

const LIMIT: Duration = Duration::from_secs(90);

async fn job_status(env: &TestEnv, job_type: &str, slug: &str) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE type = $1 AND tenant = $2 ORDER BY id DESC LIMIT 1")
        .bind(job_type)
        .bind(slug)
        .fetch_optional(&env.pool)
        .await
        .unwrap()
}

fn sqlstate(err: &sqlx::Error) -> String {
    tenant_master::error::sqlstate(err).unwrap_or_else(|| format!("no SQLSTATE: {err}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_welcome_mail_arrives_once_with_the_right_content() {
    let smtp = SmtpServer::start().await;
    let mut env = TestEnv::new().await;
    env.config.mail.smtp_url = Some(smtp.url());
    let slug = env.slug("welcome");
    let new = NewTenant::parse(&slug, "demo", "starter", "owner@example.com", Some("Acme Rockets"), None).unwrap();
    tenant_master::jobs::provision_tenant::create_in_new_transaction(&env.pool, &env.config, &new, "test").await.unwrap();
    env.run_worker_until(LIMIT, || async { job_status(&env, "SendWelcomeMail", &slug).await.as_deref() == Some("done") }).await;

    let mail = smtp.received();
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(mail[0].to, vec!["owner@example.com".to_owned()]);
    assert!(mail[0].data.contains("Subject: Welcome to Acme Rockets"), "{}", mail[0].data);
    assert!(mail[0].data.contains(&format!("Sign in at https://{slug}.example.com")), "{}", mail[0].data);
    assert!(mail[0].data.contains(&format!("Message-ID: <welcome.{slug}.")), "{}", mail[0].data);
    assert!(mail[0].data.contains("text/plain") && mail[0].data.contains("text/html"));

    // The job again (a second job with another key): nothing more is sent.
    let again: String = sqlx::query_scalar("SELECT tenant_master.enqueue('SendWelcomeMail', $1, 'welcome-again')")
        .bind(serde_json::json!({ "slug": slug }))
        .fetch_one(&env.pool)
        .await
        .unwrap();
    env.run_worker_until(LIMIT, || async {
        let s: String =
            sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE id = $1").bind(&again).fetch_one(&env.pool).await.unwrap();
        s == "done"
    })
    .await;
    assert_eq!(smtp.received().len(), 1, "sent once, also when the job runs twice");
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.mail_log").fetch_one(&env.pool).await.unwrap();
    assert_eq!(logged, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_smtp_server_down_the_mail_job_retries_then_dies_and_the_tenant_stays_active() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut env = TestEnv::new().await;
    env.config.mail.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
    let tenant = env.provisioned(&env.slug("nosmtp"), "starter").await;
    // Two attempts instead of six keep the test short; the backoff between them is real.
    sqlx::query("UPDATE apalis.jobs SET max_attempts = 2 WHERE job_type = 'SendWelcomeMail'").execute(&env.pool).await.unwrap();
    env.run_worker_until(LIMIT, || async { job_status(&env, "SendWelcomeMail", &tenant.slug).await.as_deref() == Some("dead") }).await;
    let (attempts, error): (i32, String) =
        sqlx::query_as("SELECT attempts, last_error FROM tenant_master.jobs WHERE type = 'SendWelcomeMail'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(attempts, 2, "retried once after the backoff, then gave up");
    assert!(error.contains("SMTP server") && error.contains(&port.to_string()), "{error}");
    assert_eq!(env.tenant_status(&tenant.slug).await.as_deref(), Some("active"));
}

#[tokio::test]
async fn without_smtp_the_mail_is_written_to_a_file() {
    let env = TestEnv::new().await;
    let tenant = env.provisioned(&env.slug("eml"), "free").await;
    env.run_worker_until(LIMIT, || async { job_status(&env, "SendWelcomeMail", &tenant.slug).await.as_deref() == Some("done") }).await;
    let (transport, location): (String, String) =
        sqlx::query_as("SELECT transport, location FROM tenant_master.mail_log").fetch_one(&env.pool).await.unwrap();
    assert_eq!(transport, "file");
    let eml = std::fs::read_to_string(&location).unwrap();
    assert!(location.starts_with(&env.config.mail_dir.display().to_string()));
    assert!(eml.contains("To: owner@example.com") && eml.contains(&format!("https://{}.example.com", tenant.slug)));
}

#[tokio::test]
async fn pause_resume_and_delete_take_effect_in_postgres() {
    let env = TestEnv::new().await;
    let app = env.app();
    for plan in ["starter", "enterprise"] {
        let tenant = env.provisioned(&env.slug(&format!("life{}", &plan[..1])), plan).await;
        let url = {
            let mut conn = env.pool.acquire().await.unwrap();
            tenants::credentials_url(&mut conn, &env.config, &tenant.slug).await.unwrap()
        };
        let mut open = PgConnection::connect(&url).await.unwrap();
        sqlx::query("INSERT INTO projects (name) VALUES ('before-pause')").execute(&mut open).await.unwrap();

        change_access(&app, &tenant.slug, Change::Pause, Some("customer asked"), "alice").await.unwrap();
        assert!(sqlx::query("SELECT 1").execute(&mut open).await.is_err(), "{plan}: the open session was terminated");
        let refused = PgConnection::connect(&url).await.unwrap_err();
        assert_eq!(sqlstate(&refused), "28000", "{plan}: a paused tenant cannot log in: {refused}");
        assert_eq!(env.tenant_status(&tenant.slug).await.as_deref(), Some("paused"));

        change_access(&app, &tenant.slug, Change::Suspend, Some("unpaid"), "billing").await.unwrap();
        assert_eq!(sqlstate(&PgConnection::connect(&url).await.unwrap_err()), "28000");
        change_access(&app, &tenant.slug, Change::Resume, None, "alice").await.unwrap();
        let mut back = PgConnection::connect(&url).await.expect("a resumed tenant logs in");
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM projects").fetch_one(&mut back).await.unwrap();
        assert_eq!(rows, 1);
        drop(back);

        delete(&app, &tenant.slug, Some(tenant.id), &format!("job-delete-{plan}"), "alice").await.unwrap();
        assert!(PgConnection::connect(&url).await.is_err());
        let gone = env.footprint_after_delete(&tenant).await;
        assert_eq!(gone, (0, 0), "{plan}: role and schema/database gone");
        let row = {
            let mut conn = env.pool.acquire().await.unwrap();
            tenants::get(&mut conn, &tenant.slug).await.unwrap()
        };
        assert_eq!(row.status, "deleted");
        assert!(row.deleted_at.is_some());
        let mut conn = env.pool.acquire().await.unwrap();
        let kept = backups::list(&mut conn, tenant.id).await.unwrap();
        let pre_delete = kept.iter().find(|b| b.kind == "pre_delete").expect("a pre_delete backup");
        tenant_master::ops::backup::verify_file(pre_delete).await.expect("the pre_delete backup is verified and intact");
        // A rerun of the deletion changes nothing and does not fail.
        delete(&app, &tenant.slug, Some(tenant.id), &format!("job-delete-{plan}"), "alice").await.unwrap();
        // Its backups follow the retention for deleted tenants.
        assert_eq!(tenant_master::ops::prune::prune_deleted_tenant_backups(&env.pool, 30).await.unwrap(), 0, "kept for 30 days");
        sqlx::query("UPDATE tenant_master.tenants SET deleted_at = now() - interval '31 days' WHERE id = $1")
            .bind(tenant.id)
            .execute(&env.pool)
            .await
            .unwrap();
        assert_eq!(tenant_master::ops::prune::prune_deleted_tenant_backups(&env.pool, 30).await.unwrap(), kept.len() as i64);
        assert!(!std::path::Path::new(&pre_delete.file_path).exists());
        assert!(backups::list(&mut conn, tenant.id).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn invalid_transitions_are_refused_with_one_sentence() {
    let env = TestEnv::new().await;
    let slug = env.slug("trans");
    env.provisioned(&slug, "starter").await;
    let check = |args: &[&str], code: i32, message: &str| {
        let out = env.tenantctl(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    };
    // Already in the asked state is success: exit 0 and a sentence (issue 25).
    let already = |args: &[&str], message: &str| {
        let out = env.tenantctl(args);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {said}{}", String::from_utf8_lossy(&out.stderr));
        assert!(said.contains(message), "{args:?}: {said}");
    };
    already(&["tenant", "resume", &slug], "is active already: nothing to do");
    check(&["tenant", "delete", &slug], 2, "add --yes");
    check(&["tenant", "suspend", &slug], 2, "--reason");
    let jobs = env.job_count().await;
    check(&["tenant", "pause", &slug, "--actor", "alice"], 0, "");
    env.run_worker_until(LIMIT, || async { env.tenant_status(&slug).await.as_deref() == Some("paused") }).await;
    already(&["tenant", "pause", &slug], "is paused already: nothing to do");
    let first = env.tenantctl(&["tenant", "delete", &slug, "--yes", "--actor", "bob"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let delete_job = String::from_utf8_lossy(&first.stdout).split_whitespace().next().unwrap().to_owned();
    // Asked again while it runs: exit 0, the same job to follow, nothing new enqueued.
    let again = env.tenantctl(&["tenant", "delete", &slug, "--yes"]);
    assert_eq!(again.status.code(), Some(0), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stderr).contains(&format!("is being deleted already by job {delete_job}")));
    assert!(String::from_utf8_lossy(&again.stdout).starts_with(&delete_job));
    check(&["tenant", "resume", &slug], 1, "it is deleting");
    assert_eq!(env.job_count().await, jobs + 2, "refusals and repeats enqueue nothing");

    let shown: serde_json::Value = serde_json::from_slice(&env.tenantctl(&["tenant", "show", &slug, "--json"]).stdout).unwrap();
    let history = shown["recent_activity"].as_array().unwrap();
    let by = |action: &str| history.iter().find(|e| e["action"] == action).map(|e| e["actor"].as_str().unwrap().to_owned());
    assert_eq!(by("tenant.paused_requested").as_deref(), Some("alice"));
    assert_eq!(by("tenant.deleting").as_deref(), Some("bob"));
    assert!(history.iter().all(|e| !e["at"].is_null()));

    env.run_worker_until(LIMIT, || async { env.tenant_status(&slug).await.as_deref() == Some("deleted") }).await;
    already(&["tenant", "delete", &slug, "--yes"], "is deleted already: nothing to do");
    assert_eq!(env.job_count().await, jobs + 2, "a delete of a deleted tenant enqueues nothing");
}

/// A sign-up service retrying its request, or Terraform applying twice: the same
/// `tenant create` again succeeds and enqueues nothing; a different one is a conflict.
#[tokio::test]
async fn the_same_create_again_succeeds_and_enqueues_nothing() {
    let env = TestEnv::new().await;
    let slug = env.slug("twice");
    let args = ["tenant", "create", &slug, "--product", "demo", "--plan", "starter", "--owner-email", "o@example.com"];
    let first = env.tenantctl(&args);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let provisions = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tenant_master.jobs WHERE type = 'ProvisionTenant'")
            .fetch_one(&env.pool)
            .await
            .unwrap()
    };
    let again = env.tenantctl(&args);
    let said = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{said}");
    assert!(said.contains("already exists as asked (provisioning, plan starter): nothing new was enqueued"), "{said}");
    let job: String = sqlx::query_scalar("SELECT id FROM tenant_master.jobs WHERE type = 'ProvisionTenant' AND tenant = $1")
        .bind(&slug)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).starts_with(&job), "the provisioning job to follow");
    let json: serde_json::Value =
        serde_json::from_slice(&env.tenantctl(&[&args[..], &["--json"]].concat()).stdout).expect("one JSON value");
    assert_eq!(json, serde_json::json!({ "slug": slug, "status": "provisioning", "job_ids": [job], "changed": false }));
    // Once active, --wait returns at once with exit 0.
    env.run_worker_until(LIMIT, || async { env.tenant_status(&slug).await.as_deref() == Some("active") }).await;
    let waited = env.tenantctl(&[&args[..], &["--wait"]].concat());
    assert_eq!(waited.status.code(), Some(0), "{}", String::from_utf8_lossy(&waited.stderr));
    assert!(String::from_utf8_lossy(&waited.stderr).contains("(active, plan starter)"));
    // Another plan or owner is someone else's request for the slug: refused.
    for (flag, value) in [("--plan", "business"), ("--owner-email", "other@example.com")] {
        let mut other = args.to_vec();
        let at = other.iter().position(|a| *a == flag).unwrap();
        other[at + 1] = value;
        let out = env.tenantctl(&other);
        assert_eq!(out.status.code(), Some(1), "{other:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("already taken"));
    }
    assert_eq!(provisions().await, 1, "nothing enqueued by repeats or refusals");
}

/// Deletes cancelled, retried and run again: never half done, never the next tenant of the slug.
mod delete_reruns {
    use std::time::Duration;

    use tenant_master::fault;
    use tenant_master_tests::TestEnv;
    use tenant_master_tests::{stderr, stdout};

    const LIMIT: Duration = Duration::from_secs(120);

    async fn insert(env: &TestEnv, slug: &str, name: &str) {
        let mut own = env.as_tenant(slug).await;
        sqlx::query("INSERT INTO projects (name) VALUES ($1)").bind(name).execute(&mut own).await.unwrap();
    }

    async fn job_status(env: &TestEnv, id: &str) -> String {
        sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE id = $1").bind(id).fetch_one(&env.pool).await.unwrap()
    }

    async fn can_log_in(env: &TestEnv, role: &str) -> bool {
        let mut server = env.admin("postgres").await;
        sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1").bind(role).fetch_one(&mut server).await.unwrap()
    }

    /// (2) `jobs retry` resets attempts to 0, so a delete that already dropped the tenant's
    /// data can be cancelled afterwards: the tenant is declared active "and nothing of it was
    /// touched" while its schema is gone and its login is still held.
    #[tokio::test]
    async fn a_begun_delete_cannot_be_cancelled_even_after_jobs_retry() {
        let mut env = TestEnv::new().await;
        env.config.worker.retry_base_secs = 3600; // the failed attempt is not retried on its own
        let t = env.provisioned(&env.slug("halfdel"), "starter").await;
        insert(&env, &t.slug, "precious").await;
        let out = env.tenantctl(&["tenant", "delete", &t.slug, "--yes"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let id: String =
            sqlx::query_scalar("SELECT id FROM tenant_master.jobs WHERE type = 'DeleteTenant'").fetch_one(&env.pool).await.unwrap();
        // The worker stops right after dropping the data (as a crash or a failed DROP ROLE would).
        fault::arm(&t.slug, "delete:data");
        env.run_worker_until(LIMIT, || async { job_status(&env, &id).await == "failed" }).await;
        assert_eq!(env.footprint_after_delete(&t).await.1, 0, "the tenant's schema is dropped");

        // The admin retries it, then changes their mind before it runs.
        let out = env.tenantctl(&["jobs", "retry", &id]);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = env.tenantctl(&["jobs", "cancel", &id]);
        let said = format!("{}{}", stdout(&out), stderr(&out));
        let status = env.tenant_status(&t.slug).await;
        let login = can_log_in(&env, &t.role).await;
        assert!(
            !out.status.success(),
            "a delete that had dropped the data was cancelled: {said:?}; tenant now {status:?}, schema gone, role LOGIN={login}"
        );
    }

    /// (4) A delete job whose payload has no tenant_id (a producer enqueueing with SQL, as the
    /// payload docs allow, or a job queued before this change) finished and recorded its
    /// outcome; run again after the slug was taken by a new customer, it deletes the new
    /// tenant: the recorded outcome is looked up by (job_id, tenant id of the slug *now*).
    #[tokio::test]
    async fn a_finished_delete_run_again_never_deletes_the_next_tenant_with_that_slug() {
        let env = TestEnv::new().await;
        let first = env.provisioned(&env.slug("reborn"), "starter").await;
        let slug = first.slug.clone();
        let id: String = sqlx::query_scalar("SELECT tenant_master.enqueue('DeleteTenant', $1, 'delete:' || $2)")
            .bind(serde_json::json!({ "slug": slug, "actor": "billing-system" }))
            .bind(&slug)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        env.run_worker_until(LIMIT, || async { job_status(&env, &id).await == "done" }).await;
        assert_eq!(env.tenant_status(&slug).await.as_deref(), Some("deleted"));
        let outcomes: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.job_outcomes WHERE job_id = $1")
            .bind(&id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        assert_eq!(outcomes, 1, "the delete recorded its outcome");
        sqlx::query("UPDATE tenant_master.tenants SET deleted_at = now() - interval '31 days' WHERE id = $1")
            .bind(first.id)
            .execute(&env.pool)
            .await
            .unwrap();
        tenant_master::ops::prune::prune_deleted_tenant_backups(&env.pool, 30).await.unwrap();

        // A new customer takes the slug and writes.
        let second = env.provisioned(&slug, "starter").await;
        assert_ne!(second.id, first.id);
        insert(&env, &slug, "new customer's data").await;

        // The old job runs again (lost acknowledgement, `jobs retry`).
        sqlx::query("UPDATE apalis.jobs SET status = 'Killed' WHERE id = $1").bind(&id).execute(&env.pool).await.unwrap();
        let out = env.tenantctl(&["jobs", "retry", &id]);
        assert!(out.status.success(), "{}", stderr(&out));
        env.run_worker_until(LIMIT, || async { matches!(job_status(&env, &id).await.as_str(), "done" | "dead") }).await;
        assert_eq!(
            env.tenant_status(&slug).await.as_deref(),
            Some("active"),
            "the rerun of the old, finished delete job deleted the new customer's tenant"
        );
    }

    /// (6) A delete that only waited for a heavy slot (postponed at no attempt's cost, nothing
    /// touched) counts as "begun": `jobs cancel` refuses it and says it "cannot be cancelled
    /// part way", though the tenant is untouched. `attempts` is the wrong test in both
    /// directions (see test 2).
    #[tokio::test]
    async fn a_delete_that_only_waited_for_a_slot_can_be_cancelled() {
        let mut env = TestEnv::new().await;
        env.config.worker.heavy_jobs_per_host = 1;
        env.config.worker.heavy_slot_wait_secs = 1;
        env.config.worker.retry_base_secs = 1;
        let t = env.provisioned(&env.slug("waitdel"), "starter").await;
        let held = tenant_master::lock::HostSlot::acquire(&env.config, &t.host).await.unwrap();
        let out = env.tenantctl(&["tenant", "delete", &t.slug, "--yes"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let id: String =
            sqlx::query_scalar("SELECT id FROM tenant_master.jobs WHERE type = 'DeleteTenant'").fetch_one(&env.pool).await.unwrap();
        env.run_worker_until(LIMIT, || async {
            let attempts: i32 =
                sqlx::query_scalar("SELECT attempts FROM apalis.jobs WHERE id = $1").bind(&id).fetch_one(&env.pool).await.unwrap();
            attempts >= 1
        })
        .await;
        held.release().await;
        assert!(can_log_in(&env, &t.role).await, "nothing was touched: the tenant can still log in");
        let out = env.tenantctl(&["jobs", "cancel", &id]);
        assert!(out.status.success(), "a delete that never started could not be cancelled: {}", stderr(&out));
    }
}
