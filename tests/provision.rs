//! ProvisionTenant: both isolation modes, isolation between tenants, crash after every
//! step, transactional and SQL enqueue.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tenant_master::{
    fault,
    jobs::provision_tenant::provision,
    tenants::{self, NewTenant},
    App,
};
use tenant_master_tests::{Footprint, TestEnv};

const LIMIT: Duration = Duration::from_secs(60);

fn new_tenant(slug: &str, plan: &str) -> NewTenant {
    NewTenant::parse(slug, "demo", plan, "owner@example.com", None, None).unwrap()
}

async fn credentials(env: &TestEnv, slug: &str) -> String {
    let mut conn = env.pool.acquire().await.unwrap();
    tenants::credentials_url(&mut conn, &env.config, slug).await.unwrap()
}

async fn all_active(env: &TestEnv, slugs: &[String]) -> bool {
    for slug in slugs {
        if env.tenant_status(slug).await.as_deref() != Some("active") {
            return false;
        }
    }
    true
}

fn sqlstate(err: &sqlx::Error) -> String {
    tenant_master::error::sqlstate(err).unwrap_or_else(|| format!("no SQLSTATE: {err}"))
}

#[tokio::test]
async fn tenants_see_their_own_schema_and_nothing_else() {
    let env = TestEnv::new().await;
    let (a, b, c) = (env.slug("alpha"), env.slug("beta"), env.slug("corp"));
    for (slug, plan) in [(&a, "starter"), (&b, "free"), (&c, "enterprise")] {
        tenant_master::jobs::provision_tenant::create_in_new_transaction(&env.pool, &env.config, &new_tenant(slug, plan), "test")
            .await
            .unwrap();
    }
    let all = [a.clone(), b.clone(), c.clone()];
    env.run_worker_until(LIMIT, || all_active(&env, &all)).await;

    // Tenant A works in its own tables, as its own role, with the password from the registry.
    let mut alpha = PgConnection::connect(&credentials(&env, &a).await).await.unwrap();
    sqlx::query("INSERT INTO projects (name) VALUES ('launch')").execute(&mut alpha).await.unwrap();
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM projects").fetch_all(&mut alpha).await.unwrap();
    assert_eq!(names, vec!["launch".to_owned()]);

    // B shares A's database but not A's schema.
    let mut beta = PgConnection::connect(&credentials(&env, &b).await).await.unwrap();
    let err = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM t_{a}.projects"))).execute(&mut beta).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "B reading A's table must be permission denied");
    let err = sqlx::query("SELECT * FROM tenant_master_meta.applied_migrations").execute(&mut beta).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "tenants cannot read the bookkeeping schema");
    let err = sqlx::query("CREATE TABLE public.squat (id int)").execute(&mut beta).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "tenants cannot create objects outside their schema");

    // C has a database of its own: A cannot connect to it, C cannot connect to the shared one.
    let c_url = credentials(&env, &c).await;
    let mut corp = PgConnection::connect(&c_url).await.unwrap();
    sqlx::query("INSERT INTO events (kind) VALUES ('signup')").execute(&mut corp).await.unwrap();
    let a_url = credentials(&env, &a).await;
    let a_into_c = tenant_master_tests::url_with_database(&a_url, &format!("{}demo__{c}", env.config.database_prefix));
    assert_eq!(sqlstate(&PgConnection::connect(&a_into_c).await.unwrap_err()), "42501");
    let c_into_shared = tenant_master_tests::url_with_database(&c_url, &format!("{}demo_shared", env.config.database_prefix));
    assert_eq!(sqlstate(&PgConnection::connect(&c_into_shared).await.unwrap_err()), "42501");
    // Nor can any tenant reach the control plane, where passwords live.
    let a_into_registry = tenant_master_tests::url_with_database(&a_url, env.config.database_url.rsplit('/').next().unwrap());
    assert_eq!(sqlstate(&PgConnection::connect(&a_into_registry).await.unwrap_err()), "42501");

    // The registry says what a user expects.
    let mut conn = env.pool.acquire().await.unwrap();
    let corp_row = tenants::get(&mut conn, &c).await.unwrap();
    assert_eq!((corp_row.isolation.as_str(), corp_row.schema.as_str()), ("database", format!("t_{c}").as_str()));
    let history: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM tenant_master.activity_log l JOIN tenant_master.tenants t ON t.id = l.tenant_id WHERE t.slug = $1 ORDER BY l.id",
    )
    .bind(&a)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    for step in
        ["tenant.create_requested", "provision.role", "provision.database", "provision.schema", "provision.migrations", "tenant.active"]
    {
        assert!(history.iter().any(|h| h == step), "activity log lacks {step}: {history:?}");
    }
}

const STEPS: &[&str] = &[
    "provision:register",
    "provision:role",
    "provision:database",
    "provision:schema",
    "provision:migration:0001",
    "provision:migration:0002",
    "provision:activate",
];

#[tokio::test]
async fn a_crash_after_any_step_then_a_rerun_ends_like_one_clean_run() {
    let env = TestEnv::new().await;
    let app = App::new(env.config.clone(), env.pool.clone());
    for plan in ["starter", "enterprise"] {
        for (i, step) in STEPS.iter().enumerate() {
            let slug = env.slug(&format!("c{i}{}", &plan[..1]));
            let new = new_tenant(&slug, plan);
            fault::arm(&slug, step);
            let err = provision(&app, &new, "test").await.unwrap_err();
            assert!(err.to_string().contains(&format!("after step '{step}'")), "{err}");
            let expected_status = if *step == "provision:activate" { "active" } else { "provisioning" };
            assert_eq!(env.tenant_status(&slug).await.as_deref(), Some(expected_status), "after a crash at {step}");

            let tenant = provision(&app, &new, "test").await.unwrap();
            assert_eq!(tenant.status, "active");
            let again = provision(&app, &new, "test").await.unwrap();
            assert_eq!(again.status, "active", "a third run changes nothing");
            assert_eq!(
                env.footprint(&slug, &tenant.database).await,
                Footprint {
                    roles: 1,
                    schemas: 1,
                    migrations: vec![1, 2],
                    tables: vec!["events".into(), "projects".into(), "tasks".into()],
                },
                "{plan} tenant after a crash at {step}"
            );
            let url = {
                let mut conn = env.pool.acquire().await.unwrap();
                tenants::credentials_url(&mut conn, &env.config, &slug).await.unwrap()
            };
            let mut own = PgConnection::connect(&url).await.unwrap();
            sqlx::query("INSERT INTO projects (name) VALUES ('x')").execute(&mut own).await.unwrap();
        }
    }
}

#[tokio::test]
async fn enqueue_joins_the_callers_transaction() {
    let env = TestEnv::new().await;
    let slug = env.slug("txn");
    let mut tx = env.pool.begin().await.unwrap();
    tenant_master::jobs::provision_tenant::create(&mut tx, &env.config, &new_tenant(&slug, "starter"), "signup-service").await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(env.job_count().await, 0, "rolled back: no job");
    assert_eq!(env.tenant_status(&slug).await, None, "rolled back: no tenant");

    let mut tx = env.pool.begin().await.unwrap();
    let (_, job_id) =
        tenant_master::jobs::provision_tenant::create(&mut tx, &env.config, &new_tenant(&slug, "starter"), "signup-service").await.unwrap();
    tx.commit().await.unwrap();
    let queued: String =
        sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE id = $1").bind(&job_id).fetch_one(&env.pool).await.unwrap();
    assert_eq!(queued, "pending");

    let err = tenant_master::jobs::provision_tenant::create_in_new_transaction(&env.pool, &env.config, &new_tenant(&slug, "business"), "x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already taken"), "{err}");
    assert_eq!(env.job_count().await, 1, "a taken slug enqueues nothing");
}

#[tokio::test]
async fn other_languages_enqueue_with_one_sql_call() {
    let env = TestEnv::new().await;
    let slug = env.slug("sqlco");
    let payload = serde_json::json!({ "slug": slug, "product": "demo", "plan": "business", "owner_email": "ops@example.com" });
    let key = format!("provision:{slug}");
    let enqueue = || {
        sqlx::query_scalar::<_, String>("SELECT tenant_master.enqueue('ProvisionTenant', $1, $2)")
            .bind(payload.clone())
            .bind(key.clone())
            .fetch_one(&env.pool)
    };
    let first = enqueue().await.unwrap();
    let second = enqueue().await.unwrap();
    assert_eq!(first, second, "the same idempotency key returns the same job");
    assert_eq!(env.job_count().await, 1);
    let err = sqlx::query("SELECT tenant_master.enqueue('ProvisionTenantt', '{}')").execute(&env.pool).await.unwrap_err();
    assert!(err.to_string().contains("unknown job type"), "{err}");

    let all = [slug.clone()];
    env.run_worker_until(LIMIT, || all_active(&env, &all)).await;
    let status: String =
        sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE id = $1").bind(&first).fetch_one(&env.pool).await.unwrap();
    assert_eq!(status, "done");
}

#[tokio::test]
async fn a_bad_payload_fails_at_once_and_marks_nothing_active() {
    let env = TestEnv::new().await;
    let payload = serde_json::json!({ "slug": "Bad Slug", "product": "demo", "plan": "starter", "owner_email": "a@example.com" });
    let id: String =
        sqlx::query_scalar("SELECT tenant_master.enqueue('ProvisionTenant', $1)").bind(payload).fetch_one(&env.pool).await.unwrap();
    let dead = || async {
        let status: String =
            sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE id = $1").bind(&id).fetch_one(&env.pool).await.unwrap();
        status == "dead"
    };
    env.run_worker_until(LIMIT, dead).await;
    let (attempts, error): (i32, Option<String>) =
        sqlx::query_as("SELECT attempts, last_error FROM tenant_master.jobs WHERE id = $1").bind(&id).fetch_one(&env.pool).await.unwrap();
    assert_eq!(attempts, 1, "invalid input is not retried");
    // One sentence of ours, without the queue library's type name in front.
    assert!(error.as_deref().unwrap_or_default().starts_with("invalid slug"), "{error:?}");
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.tenants").fetch_one(&env.pool).await.unwrap();
    assert_eq!(tenants, 0);
}

/// A session on template1 (autovacuum, an admin's psql) makes CREATE DATABASE fail with
/// 55006 while it lasts: provisioning waits for it instead of failing the attempt.
#[tokio::test]
async fn a_busy_template1_delays_create_database_instead_of_failing() {
    let env = TestEnv::new().await;
    let database = format!("{}busy_template", env.config.database_prefix);
    let mut admin = env.admin("postgres").await;
    let holder = env.admin("template1").await;
    // The naive CREATE fails while template1 is held: the case is real.
    let err = tenant_master::db::ddl(&mut admin, "CREATE DATABASE %I", &[&database]).await.unwrap_err();
    assert_eq!(err.sqlstate().as_deref(), Some("55006"), "{err}");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        holder.close().await.unwrap();
    });
    assert!(tenant_master::db::create_database_if_missing(&mut admin, &database).await.unwrap(), "created once template1 was free");
    release.await.unwrap();
    tenant_master::db::ddl(&mut admin, "DROP DATABASE %I", &[&database]).await.unwrap();
}

/// An old provision job run again does not bring a deleted tenant back.
mod provision_reruns {
    use std::time::Duration;

    use tenant_master::ops::delete::delete;
    use tenant_master_tests::stderr;
    use tenant_master_tests::TestEnv;

    const LIMIT: Duration = Duration::from_secs(120);

    async fn job_status(env: &TestEnv, id: &str) -> String {
        sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE id = $1").bind(id).fetch_one(&env.pool).await.unwrap()
    }

    /// (3) A finished ProvisionTenant job run again (lost acknowledgement + `jobs retry`) after
    /// the tenant was deleted and its backups pruned re-creates the deleted tenant. Before
    /// this change it was refused ("tenant is deleted").
    #[tokio::test]
    async fn an_old_provision_job_run_again_does_not_bring_a_deleted_tenant_back() {
        let env = TestEnv::new().await;
        let slug = env.slug("ghost");
        let out = env.tenantctl(&["tenant", "create", &slug, "--product", "demo", "--plan", "starter", "--owner-email", "o@example.com"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let id: String =
            sqlx::query_scalar("SELECT id FROM tenant_master.jobs WHERE type = 'ProvisionTenant'").fetch_one(&env.pool).await.unwrap();
        env.run_worker_until(LIMIT, || async { job_status(&env, &id).await == "done" }).await;
        let old: i64 =
            sqlx::query_scalar("SELECT id FROM tenant_master.tenants WHERE slug = $1").bind(&slug).fetch_one(&env.pool).await.unwrap();
        delete(&env.app(), &slug, Some(old), "job-d", "admin").await.unwrap();
        sqlx::query("UPDATE tenant_master.tenants SET deleted_at = now() - interval '31 days' WHERE id = $1")
            .bind(old)
            .execute(&env.pool)
            .await
            .unwrap();
        tenant_master::ops::prune::prune_deleted_tenant_backups(&env.pool, 30).await.unwrap();

        // Weeks later: the job's acknowledgement had been lost; an admin retries dead jobs.
        sqlx::query("UPDATE apalis.jobs SET status = 'Killed' WHERE id = $1").bind(&id).execute(&env.pool).await.unwrap();
        let out = env.tenantctl(&["jobs", "retry", &id]);
        assert!(out.status.success(), "{}", stderr(&out));
        env.run_worker_until(LIMIT, || async { matches!(job_status(&env, &id).await.as_str(), "done" | "dead") }).await;
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, status FROM tenant_master.tenants WHERE slug = $1 ORDER BY id")
            .bind(&slug)
            .fetch_all(&env.pool)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "a rerun of the deleted tenant's provision job created a new tenant nobody asked for: {rows:?}");
    }
}
